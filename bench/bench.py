#!/usr/bin/env python3
"""The barge benchmark (issue 4): barge against its peers, on loopback, in one run.

Run it through `bench/run`, which installs the peers and builds barge first. Every scenario runs
several times, interleaved with its references, and the table shows medians and ratios against
references measured in the same run, because on a busy machine only those ratios are stable.

Everything lives in one temporary folder on a tmpfs (`/dev/shm`): the source files, barge's
shared folder and every peer's destination, so no disk speed is measured. Every process started
here is in its own process group and is killed at the end, every wait has a time limit, and the
temporary folder is removed, whatever happens (errors, Ctrl-C, SIGTERM).

`bench.py _client ...` is a tiny stand-in client speaking PROTOCOL.md by hand (hashlib MD5),
used only when the `barge` binary has no client commands yet.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT = 64 * MiB


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


# ---------------------------------------------------------------------------------------------
# Processes: every one is registered, lives in its own process group, and is killed at the end.


class Procs:
    """The processes this run started, so that all of them can be stopped, and only them."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, cmd: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
        else:
            # The leader is gone; make sure nothing it left in its group survives.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(self.live):
            try:
                self.stop(p, grace=2.0)
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log(f"could not stop pid {p.pid}: {e}")

    def run(self, cmd: list[str], timeout: float, what: str = "", **kw) -> float:
        """Runs `cmd` to completion and returns its wall time; raises if it fails or overruns."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        t0 = time.perf_counter()
        p = self.start(cmd, **kw)
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p, signal.SIGKILL)
            raise RuntimeError(f"{what or cmd[0]}: timed out after {timeout:.0f} s") from None
        dt = time.perf_counter() - t0
        self.stop(p)
        if p.returncode != 0:
            tail = (err or b"").decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{what or ' '.join(cmd[:3])}: exit {p.returncode}: {tail}")
        return dt


PROCS = Procs()


def wait_for(pred, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, without connecting (a connect would be taken
    as the one session by `nc -l`)."""
    want = f":{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1].endswith(want) and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) * KiB
    return out


def reset_peak(pid: int) -> None:
    """Resets VmHWM to the current RSS (writing 5 to clear_refs, Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def make_random_file(path: Path, size: int) -> None:
    block = os.urandom(min(size, 64 * MiB))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            # Vary each block a little so no two blocks of the file are the same.
            f.write(os.urandom(16) + block[16:n] if n > 16 else block[:n])
            left -= n


# ---------------------------------------------------------------------------------------------
# A minimal protocol client (PROTOCOL.md), for control operations and as the stand-in client.


class Conn:
    def __init__(self, port: int, timeout: float = 120.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = self.sock.makefile("rb", buffering=1 * MiB)
        greeting = self.line()
        if not greeting.startswith("220 "):
            raise RuntimeError(f"bad greeting: {greeting!r}")

    def line(self) -> str:
        raw = self.r.readline(16384)
        if not raw.endswith(b"\n"):
            raise RuntimeError("connection closed by the server")
        return raw[:-1].decode()

    def cmd(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        return self.line()

    def close(self) -> None:
        try:
            self.sock.sendall(b"DISCONNECT\n")
            self.line()
        except (OSError, RuntimeError):
            pass
        self.sock.close()

    def listing(self) -> tuple[int, int, int, dict[str, str]]:
        """LIST_FILES: (entries, pending, bytes received, name -> id)."""
        self.sock.sendall(b"LIST_FILES\n")
        head = self.r.readline(16384)
        if not head.startswith(b"210 "):
            raise RuntimeError(f"LIST_FILES: {head!r}")
        n = int(head.split()[1])
        total = len(head)
        ids = {}
        for _ in range(n):
            line = self.r.readline(16384)
            total += len(line)
            ident, _, rest = line[:-1].decode().partition(";")
            ids[rest.rpartition(";")[0]] = ident
        pending = 0
        text = head.decode()
        if "more being indexed" in text:
            pending = int(text.split("(")[1].split()[0])
        return n, pending, total, ids

    def upload(self, path: Path, name: str) -> str:
        size = path.stat().st_size
        reply = self.cmd(f"UPLOAD {name};{size}")
        if not reply.startswith("350"):
            raise RuntimeError(f"UPLOAD {name}: {reply}")
        h = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 * MiB):
                h.update(chunk)
                self.sock.sendall(chunk)
        reply = self.line()
        if not reply.startswith("226 ") or reply.split()[1] != h.hexdigest():
            raise RuntimeError(f"upload of {name} not verified: {reply}")
        return h.hexdigest()

    def download(self, ref: str, dest: Path) -> str:
        reply = self.cmd(f"DOWNLOAD {ref}")
        return self._body(reply, dest)

    def _body(self, reply: str, dest: Path) -> str:
        if not reply.startswith("213 "):
            raise RuntimeError(f"DOWNLOAD: {reply}")
        _, size, ident, _ = reply.split(" ", 3)
        left = int(size)
        h = hashlib.md5()
        buf = bytearray(1 * MiB)
        view = memoryview(buf)
        with open(dest, "wb") as f:
            while left:
                n = self.r.readinto(view[: min(left, len(buf))])
                if not n:
                    raise RuntimeError("connection closed mid-body")
                h.update(view[:n])
                f.write(view[:n])
                left -= n
        if h.hexdigest() != ident:
            raise RuntimeError(f"download of {ref_or(reply)} not verified")
        return ident

    def put_many(self, paths: list[Path]) -> None:
        """Pipelined `PUT`s: a thread sends while this one reads the replies."""
        sums: list[str] = []
        err: list[BaseException] = []

        def send() -> None:
            try:
                for p in paths:
                    data = p.read_bytes()
                    sums.append(hashlib.md5(data).hexdigest())
                    self.sock.sendall(f"PUT {p.name};{len(data)}\n".encode() + data)
            except BaseException as e:  # noqa: BLE001 - reported by the reader
                err.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        for i in range(len(paths)):
            reply = self.line()
            if not reply.startswith("226 "):
                raise RuntimeError(f"PUT {paths[i].name}: {reply}")
            while len(sums) <= i and not err:
                time.sleep(0.0001)
            if err:
                raise RuntimeError(f"sending: {err[0]}")
            if reply.split()[1] != sums[i]:
                raise RuntimeError(f"PUT {paths[i].name} not verified")
        t.join(timeout=60)

    def get_many(self, names: list[str], outdir: Path) -> None:
        """Pipelined `DOWNLOAD`s."""

        def send() -> None:
            self.sock.sendall(b"".join(f"DOWNLOAD {n}\n".encode() for n in names))

        t = threading.Thread(target=send, daemon=True)
        t.start()
        for n in names:
            self._body(self.line(), outdir / n)
        t.join(timeout=60)


def ref_or(reply: str) -> str:
    return reply.split(" ", 3)[-1]


def stand_in_client(argv: list[str]) -> int:
    """`bench.py _client PORT put SRC NAME | get REF DEST | put-many FILE... | get-many OUT NAME...`"""
    port, op, args = int(argv[0]), argv[1], argv[2:]
    c = Conn(port)
    if op == "put":
        c.upload(Path(args[0]), args[1])
    elif op == "get":
        c.download(args[0], Path(args[1]))
    elif op == "put-many":
        c.put_many([Path(a) for a in args])
    elif op == "get-many":
        c.get_many(args[1:], Path(args[0]))
    else:
        raise SystemExit(f"unknown op {op}")
    c.close()
    return 0


# ---------------------------------------------------------------------------------------------
# barge: the server, and the client (the real CLI, or the stand-in).


class BargeServer:
    def __init__(self, bin_: Path, root: Path, logdir: Path, extra: list[str] | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.out = logdir / f"server-{root.name}.out"
        self.err = logdir / f"server-{root.name}.err"
        cmd = [str(bin_), "serve", "--root", str(root), "--port", "0"]
        cmd += extra or []
        with open(self.out, "wb") as o, open(self.err, "ab") as e:
            self.proc = PROCS.start(cmd, stdout=o, stderr=e)

        def addr():
            if self.proc.poll() is not None:
                raise RuntimeError(f"barge serve exited: {self.err.read_text()[-800:]}")
            text = self.out.read_text()
            for word in text.split():
                if word.startswith("127.0.0.1:"):
                    return int(word.split(":")[1])
            return None

        self.port = wait_for(addr, 30, "barge serve to listen")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak(self) -> int:
        return proc_status(self.pid)["VmHWM"]

    def rss(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def reset_peak(self) -> None:
        reset_peak(self.pid)

    def stop(self) -> None:
        PROCS.stop(self.proc, grace=15.0)


class BargeClient:
    """Command lines for the client side: the real `barge` CLI when it has client commands,
    the stand-in otherwise."""

    def __init__(self, bin_: Path):
        self.bin = str(bin_)
        probe = subprocess.run(
            [self.bin, "put", "--help"], capture_output=True, timeout=30, check=False
        )
        self.real = probe.returncode == 0
        self.kind = "barge CLI" if self.real else "stand-in Python client (no `barge put` yet)"

    def _py(self, port: int, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "_client", str(port), *args]

    def put(self, port: int, src: Path, name: str) -> list[str]:
        if self.real:
            return [self.bin, "-q", "--port", str(port), "put", str(src), "--as", name]
        return self._py(port, "put", str(src), name)

    def get(self, port: int, ref: str, dest: Path) -> list[str]:
        if self.real:
            return [self.bin, "-q", "--port", str(port), "get", ref, "-o", str(dest), "-f"]
        return self._py(port, "get", ref, str(dest))

    def put_many(self, port: int, paths: list[Path]) -> list[str]:
        if self.real:
            return [self.bin, "-q", "--port", str(port), "put", *map(str, paths)]
        return self._py(port, "put-many", *map(str, paths))

    def get_many(self, port: int, names: list[str], outdir: Path) -> list[str]:
        if self.real:
            return [self.bin, "-q", "--port", str(port), "get", "-o", str(outdir), "-f", *names]
        return self._py(port, "get-many", str(outdir), *names)

    def ls(self, port: int) -> list[str] | None:
        if self.real:
            return [self.bin, "-q", "--port", str(port), "ls"]
        return None


# ---------------------------------------------------------------------------------------------
# The peers: each one is set up once and gives an upload and a download command.


@dataclass
class Peer:
    """A reference tool. `up(src, run)` and `down(run, dest)` return the wall time of one
    transfer; the file lands where `landed(run)` says (for the size check)."""

    name: str
    up: object
    down: object
    note: str = ""
    small_up: object = None
    small_down: object = None
    # A yardstick built for this benchmark rather than a tool people use: shown, not a target.
    yardstick: bool = False


class Peers:
    def __init__(self, work: Path, timeout: float, want: set[str]):
        self.work = work
        self.timeout = timeout
        self.skipped: dict[str, str] = {}
        self.list: list[Peer] = []
        self.user = getpass.getuser()
        builders = [
            ("nc", self._nc),
            ("socat", self._socat),
            ("scp", self._ssh),
            ("vsftpd+curl", self._ftp),
            ("rsync daemon", self._rsync),
            ("dufs+curl", self._dufs),
        ]
        for name, build in builders:
            key = name.split()[0].split("+")[0]
            if want and key not in want:
                continue
            try:
                build()
            except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
                self.skipped[name] = str(e).strip().splitlines()[0][:200] if str(e) else repr(e)
                log(f"peer {name} skipped: {self.skipped[name]}")

    # Raw TCP: a listener writing into a file, or sending a file; the transfer ends when both
    # sides have exited, so the file is complete.
    def _pair(self, listener: list[str], client: list[str], port: int, lin, lout, cin, cout):
        started = []
        try:
            lp = PROCS.start(listener, stdin=lin, stdout=lout, stderr=subprocess.DEVNULL)
            started.append(lp)
            wait_for(lambda: listening(port) or lp.poll() is not None, 10, "the listener")
            t0 = time.perf_counter()
            cp = PROCS.start(client, stdin=cin, stdout=cout, stderr=subprocess.DEVNULL)
            started.append(cp)
            try:
                cp.wait(timeout=self.timeout)
                lp.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{client[0]}: timed out") from None
            dt = time.perf_counter() - t0
            if cp.returncode or lp.returncode:
                raise RuntimeError(f"{client[0]}: exit {cp.returncode}/{lp.returncode}")
            return dt
        finally:
            for p in started:
                PROCS.stop(p)

    def _nc(self) -> None:
        if not shutil.which("nc"):
            raise RuntimeError("nc not installed")

        def up(src: Path, dest: Path) -> float:
            port = free_port()
            with open(src, "rb") as i, open(dest, "wb") as o:
                return self._pair(
                    ["nc", "-l", "127.0.0.1", str(port)],
                    ["nc", "-N", "127.0.0.1", str(port)],
                    port, subprocess.DEVNULL, o, i, subprocess.DEVNULL,
                )

        def down(src: Path, dest: Path) -> float:
            port = free_port()
            with open(src, "rb") as i, open(dest, "wb") as o:
                return self._pair(
                    ["nc", "-N", "-l", "127.0.0.1", str(port)],
                    ["nc", "127.0.0.1", str(port)],
                    port, i, subprocess.DEVNULL, subprocess.DEVNULL, o,
                )

        self.list.append(Peer("nc", up, down, "OpenBSD nc into a file, no verification (raw TCP)"))

        # The same, verified the way barge verifies: md5sum at both ends, fed by `tee` while the
        # bytes pass, so hashing overlaps the transfer. What standard tools reach on this machine.
        sender = 'mkfifo "$1" && { md5sum < "$1" > "$2" & tee "$1" < "$3" | nc -N {addr}; wait; }'
        receiver = 'mkfifo "$1" && { md5sum < "$1" > "$2" & nc {addr} | tee "$1" > "$3"; wait; }'
        d = self.work / "ncmd5"
        d.mkdir()

        def verified(src: Path, dest: Path, up: bool) -> float:
            port = free_port()
            for f in ("s.fifo", "r.fifo", "s.md5", "r.md5"):
                (d / f).unlink(missing_ok=True)
            send = ["bash", "-c", sender.replace("{addr}", ("-l " if not up else "")
                                                  + f"127.0.0.1 {port}"),
                    "_", str(d / "s.fifo"), str(d / "s.md5"), str(src)]
            recv = ["bash", "-c", receiver.replace("{addr}", ("-l " if up else "")
                                                    + f"127.0.0.1 {port}"),
                    "_", str(d / "r.fifo"), str(d / "r.md5"), str(dest)]
            listener, client = (recv, send) if up else (send, recv)
            dv = subprocess.DEVNULL
            dt = self._pair(listener, client, port, dv, dv, dv, dv)
            a, b = ((d / f).read_text().split()[0] for f in ("s.md5", "r.md5"))
            if a != b:
                raise RuntimeError("nc+md5sum: the two ends disagree")
            return dt

        self.list.append(Peer(
            "nc+md5sum both ends",
            lambda s, de: verified(s, de, True), lambda s, de: verified(s, de, False),
            "nc with md5sum at both ends (tee), in parallel with the transfer: a yardstick of "
            "what a verified transfer can reach here, not a target", yardstick=True,
        ))

    def _socat(self) -> None:
        if not shutil.which("socat"):
            raise RuntimeError("socat not installed")
        b = ["-b", str(128 * KiB)]

        def up(src: Path, dest: Path) -> float:
            port = free_port()
            return self._pair(
                ["socat", *b, "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                 f"CREATE:{dest}"],
                ["socat", *b, "-u", f"OPEN:{src}", f"TCP:127.0.0.1:{port}"],
                port, subprocess.DEVNULL, subprocess.DEVNULL,
                subprocess.DEVNULL, subprocess.DEVNULL,
            )

        def down(src: Path, dest: Path) -> float:
            port = free_port()
            return self._pair(
                ["socat", *b, "-u", f"OPEN:{src}",
                 f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"],
                ["socat", *b, "-u", f"TCP:127.0.0.1:{port}", f"CREATE:{dest}"],
                port, subprocess.DEVNULL, subprocess.DEVNULL,
                subprocess.DEVNULL, subprocess.DEVNULL,
            )

        self.list.append(Peer("socat", up, down, "128 KiB blocks, no verification"))

    def _ssh(self) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd) or not shutil.which("scp"):
            raise RuntimeError("openssh-server/openssh-client not installed")
        d = self.work / "ssh"
        d.mkdir(mode=0o700)
        for key in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                check=True, timeout=30, stdin=subprocess.DEVNULL,
            )
        shutil.copy(d / "client.pub", d / "authorized_keys")
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd = PROCS.start(
            [sshd, "-D", "-e", "-f", str(d / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"),
        )
        wait_for(lambda: listening(port) or self.sshd.poll() is not None, 10, "sshd")
        if self.sshd.poll() is not None:
            raise RuntimeError(f"sshd: {(d / 'sshd.log').read_text()[-300:]}")
        opts = [
            "-F", "/dev/null", "-i", str(d / "client"), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "LogLevel=ERROR",
        ]
        remote = f"{self.user}@127.0.0.1"
        t = self.timeout
        PROCS.run(["ssh", *opts, "-p", str(port), remote, "true"], 30, "ssh login")

        def scp_up(src, dest):
            return PROCS.run(["scp", "-q", *opts, "-P", str(port), str(src), f"{remote}:{dest}"],
                             t, "scp")

        def scp_down(src, dest):
            return PROCS.run(["scp", "-q", *opts, "-P", str(port), f"{remote}:{src}", str(dest)],
                             t, "scp")

        def sftp(batch: str):
            bf = d / "batch"
            bf.write_text(batch)
            return PROCS.run(["sftp", "-q", *opts, "-P", str(port), "-b", str(bf), remote],
                             t, "sftp")

        def scp_small_up(srcdir: Path, destdir: Path):
            return PROCS.run(["scp", "-q", "-r", *opts, "-P", str(port), str(srcdir),
                              f"{remote}:{destdir}"], t, "scp -r")

        def scp_small_down(srcdir: Path, destdir: Path):
            return PROCS.run(["scp", "-q", "-r", *opts, "-P", str(port),
                              f"{remote}:{srcdir}", str(destdir)], t, "scp -r")

        cipher = "default cipher (chacha20-poly1305 in OpenSSH 9)"
        self.list.append(Peer("scp", scp_up, scp_down, f"private sshd; {cipher}",
                              scp_small_up, scp_small_down))
        self.list.append(Peer(
            "sftp",
            lambda s, de: sftp(f"put {s} {de}\n"),
            lambda s, de: sftp(f"get {s} {de}\n"),
            "same sshd, batch mode",
            lambda s, de: sftp(f"put -r {s} {de}\n"),
            lambda s, de: sftp(f"get -r {s} {de}\n"),
        ))

    def _ftp(self) -> None:
        vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        if not os.path.exists(vsftpd) or not shutil.which("curl"):
            raise RuntimeError("vsftpd/curl not installed")
        if os.geteuid() != 0:
            raise RuntimeError("vsftpd needs root")
        import pwd

        ftp = pwd.getpwnam("ftp")
        d = self.work / "ftp"
        root = d / "root"
        (root / "up").mkdir(parents=True)
        (d / "empty").mkdir()
        os.chmod(root, 0o755)
        os.chown(root / "up", ftp.pw_uid, ftp.pw_gid)
        port = free_port()
        pasv = free_port()
        (d / "vsftpd.conf").write_text(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\n"
            "background=NO\nanonymous_enable=YES\nlocal_enable=NO\nwrite_enable=YES\n"
            "anon_upload_enable=YES\nanon_mkdir_write_enable=YES\nanon_other_write_enable=YES\n"
            f"anon_root={root}\nno_anon_password=YES\nanon_umask=022\nftp_username=ftp\n"
            f"pasv_enable=YES\npasv_address=127.0.0.1\npasv_min_port={pasv}\n"
            f"pasv_max_port={pasv}\nseccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n"
            f"secure_chroot_dir={d / 'empty'}\nxferlog_enable=NO\nconnect_from_port_20=NO\n"
            "max_per_ip=0\nmax_clients=0\nanon_max_rate=0\n"
        )
        self.ftpd = PROCS.start([vsftpd, str(d / "vsftpd.conf")], stdout=subprocess.DEVNULL,
                                stderr=open(d / "vsftpd.log", "wb"))
        wait_for(lambda: listening(port) or self.ftpd.poll() is not None, 10, "vsftpd")
        if self.ftpd.poll() is not None:
            raise RuntimeError(f"vsftpd: {(d / 'vsftpd.log').read_text()[-300:]}")
        base = f"ftp://127.0.0.1:{port}"
        t = self.timeout
        self.ftp_root = root
        probe = d / "probe"
        probe.write_bytes(b"x")
        PROCS.run(["curl", "-sS", "-T", str(probe), f"{base}/up/probe"], 30, "curl ftp probe")

        # Uploads land in <root>/up/<name>; downloads are served from <root>/pub.
        def up(src: Path, dest: Path) -> float:
            return PROCS.run(["curl", "-sS", "-T", str(src), f"{base}/up/{dest.name}"], t, "curl")

        def down(src: Path, dest: Path) -> float:
            return PROCS.run(["curl", "-sS", "-o", str(dest), f"{base}/pub/{src.name}"], t,
                             "curl")

        self.list.append(Peer("vsftpd+curl", up, down, "anonymous FTP, passive, no verification"))

    def _rsync(self) -> None:
        if not shutil.which("rsync"):
            raise RuntimeError("rsync not installed")
        d = self.work / "rsync"
        (d / "mod").mkdir(parents=True)
        port = free_port()
        (d / "rsyncd.conf").write_text(
            f"pid file = {d}/rsyncd.pid\nuse chroot = no\nnumeric ids = yes\n"
            f"[bench]\npath = {self.work}\nread only = no\n"
            + (f"uid = {os.getuid()}\ngid = {os.getgid()}\n" if os.geteuid() == 0 else "")
        )
        self.rsyncd = PROCS.start(
            ["rsync", "--daemon", "--no-detach", f"--config={d}/rsyncd.conf", f"--port={port}",
             "--address=127.0.0.1", f"--log-file={d}/rsyncd.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: listening(port) or self.rsyncd.poll() is not None, 10, "rsync daemon")
        if self.rsyncd.poll() is not None:
            raise RuntimeError("rsync daemon exited")
        base = f"rsync://127.0.0.1:{port}/bench"
        t = self.timeout

        def rel(p: Path) -> str:
            return str(p.relative_to(self.work))

        def up(src: Path, dest: Path) -> float:
            return PROCS.run(["rsync", str(src), f"{base}/{rel(dest)}"], t, "rsync")

        def down(src: Path, dest: Path) -> float:
            return PROCS.run(["rsync", f"{base}/{rel(src)}", str(dest)], t, "rsync")

        def small_up(srcdir: Path, destdir: Path) -> float:
            return PROCS.run(["rsync", "-r", f"{srcdir}/", f"{base}/{rel(destdir)}/"], t,
                             "rsync -r")

        def small_down(srcdir: Path, destdir: Path) -> float:
            return PROCS.run(["rsync", "-r", f"{base}/{rel(srcdir)}/", f"{destdir}/"], t,
                             "rsync -r")

        self.list.append(Peer("rsync daemon", up, down, "rsync:// protocol; whole-file xxh128 checksum, not MD5",
                              small_up, small_down))

    def _dufs(self) -> None:
        dufs = shutil.which("dufs") or shutil.which(str(Path.home() / ".cargo/bin/dufs"))
        if not dufs:
            raise RuntimeError("dufs not installed (optional: cargo install dufs)")
        d = self.work / "dufs"
        d.mkdir()
        port = free_port()
        self.dufsd = PROCS.start([dufs, "-A", "-b", "127.0.0.1", "-p", str(port), str(self.work)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(port) or self.dufsd.poll() is not None, 10, "dufs")
        base = f"http://127.0.0.1:{port}"
        t = self.timeout

        def rel(p: Path) -> str:
            return str(p.relative_to(self.work))

        def up(src: Path, dest: Path) -> float:
            return PROCS.run(["curl", "-sSf", "-T", str(src), f"{base}/{rel(dest)}"], t, "curl")

        def down(src: Path, dest: Path) -> float:
            return PROCS.run(["curl", "-sSf", "-o", str(dest), f"{base}/{rel(src)}"], t, "curl")

        self.list.append(Peer("dufs+curl", up, down, "HTTP PUT/GET, no verification"))


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    scenario: str
    tool: str
    times: list[float] = field(default_factory=list)
    work: float = 0.0  # bytes (or files) moved per run, for the rate
    unit: str = "MiB/s"
    peaks: list[int] = field(default_factory=list)
    note: str = ""  # about the tool, printed once per tool
    detail: str = ""  # about this measurement, printed with its scenario
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def rate(self) -> str:
        m = self.median
        if not m or not self.work:
            return ""
        per = self.work / m
        return f"{per / MiB:.0f} MiB/s" if self.unit == "MiB/s" else f"{per:,.0f} {self.unit}"


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.targets: list[tuple[str, str, str]] = []  # (target, PASS/FAIL/n/a, detail)

    def row(self, scenario: str, tool: str, **kw) -> Row:
        for r in self.rows:
            if r.scenario == scenario and r.tool == tool:
                return r
        r = Row(scenario, tool, **kw)
        self.rows.append(r)
        return r

    def find(self, scenario: str, tool: str) -> Row | None:
        for r in self.rows:
            if r.scenario == scenario and r.tool == tool and r.times:
                return r
        return None

    def target(self, name: str, ok: bool | None, detail: str) -> None:
        self.targets.append((name, "n/a" if ok is None else ("PASS" if ok else "FAIL"), detail))


# ---------------------------------------------------------------------------------------------
# The scenarios


class Bench:
    def __init__(self, args, barge: Path, work: Path):
        self.a = args
        self.barge = barge
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.client = BargeClient(barge)
        self.res = Results()
        self.timeout = args.timeout
        self.serial = 0

    def server(self, tag: str, extra: list[str] | None = None, root: Path | None = None):
        self.serial += 1
        root = root or self.work / f"shared-{tag}-{self.serial}"
        return BargeServer(self.barge, root, self.logs, extra)

    def timed(self, cmd: list[str], what: str) -> float:
        return PROCS.run(cmd, self.timeout, what)

    def control(self, port: int) -> Conn:
        return Conn(port)

    # -- large files ---------------------------------------------------------------------------
    def large(self, peers: Peers) -> None:
        for size in self.a.sizes:
            self._large(size, peers)

    def _large(self, size: int, peers: Peers) -> None:
        label = human(size)
        log(f"large: {label}, {self.a.runs} runs")
        d = self.work / f"large-{size}"
        d.mkdir()
        src = d / "src.bin"
        make_random_file(src, size)
        want = md5_file(src)
        srv = self.server(f"large{size}")
        # The file that barge downloads, put there through the protocol so it is indexed.
        c = self.control(srv.port)
        c.upload(src, "dl.bin")
        c.close()
        if hasattr(peers, "ftp_root"):
            (peers.ftp_root / "pub").mkdir(exist_ok=True)
            shutil.copy(src, peers.ftp_root / "pub" / src.name)
        up_s, down_s = f"upload {label}", f"download {label}"
        r_md5 = self.res.row(f"hash {label}", "md5sum", work=size, note="the limit")
        r_up = self.res.row(up_s, "barge", work=size, note=self.client.kind)
        r_down = self.res.row(down_s, "barge", work=size, note=self.client.kind)
        for p in peers.list:
            self.res.row(up_s, p.name, work=size, note=p.note)
            self.res.row(down_s, p.name, work=size, note=p.note)
        dest = d / "dest.bin"

        def check(path: Path, tool: str, first: bool) -> None:
            got = path.stat().st_size
            if got != size:
                raise RuntimeError(f"{tool}: {path} has {got} bytes, want {size}")
            if first and md5_file(path) != want:
                raise RuntimeError(f"{tool}: {path} differs from the source")

        def barge_up(run: int) -> None:
            name = f"up-{run}.bin"
            srv.reset_peak()
            r_up.times.append(self.timed(self.client.put(srv.port, src, name), "barge put"))
            r_up.peaks.append(srv.peak())
            stored = srv.root / name
            check(stored, "barge put", run == 0)
            c = self.control(srv.port)
            reply = c.cmd(f"DELETE {name}")
            c.close()
            if not reply.startswith("250"):
                raise RuntimeError(f"DELETE {name}: {reply}")

        def barge_down(run: int) -> None:
            srv.reset_peak()
            r_down.times.append(self.timed(self.client.get(srv.port, "dl.bin", dest),
                                           "barge get"))
            r_down.peaks.append(srv.peak())
            check(dest, "barge get", run == 0)
            dest.unlink()

        def peer_task(p: Peer, run: int, up: bool) -> None:
            row = self.res.row(up_s if up else down_s, p.name)
            if up:
                target = (peers.ftp_root / "up" / "x.bin") if p.name.startswith("vsftpd") \
                    else dest
                row.times.append(p.up(src, target))
            else:
                target = dest
                row.times.append(p.down(src, dest))
            check(target, p.name, run == 0)
            target.unlink()

        for run in range(self.a.runs):
            order = [("md5sum", lambda run=run: r_md5.times.append(
                self.timed(["md5sum", str(src)], "md5sum")))]
            order.append(("barge up", lambda run=run: barge_up(run)))
            order.append(("barge down", lambda run=run: barge_down(run)))
            for p in peers.list:
                order.append((f"{p.name} up", lambda p=p, run=run: peer_task(p, run, True)))
                order.append((f"{p.name} down", lambda p=p, run=run: peer_task(p, run, False)))
            # Rotate the order each run so slow drifts of the machine hit every tool alike.
            k = run % len(order)
            for what, fn in order[k:] + order[:k]:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - one tool failing must not end the run
                    log(f"{what} ({label}, run {run + 1}) failed: {e}")
                    self.res.notes.append(f"{what} {label} run {run + 1}: {e}")
            log(f"  run {run + 1}/{self.a.runs} done")
        srv.stop()
        shutil.rmtree(srv.root, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
        if hasattr(peers, "ftp_root"):
            shutil.rmtree(peers.ftp_root / "pub", ignore_errors=True)

    # -- many small files ----------------------------------------------------------------------
    def small(self, peers: Peers) -> None:
        n = self.a.small_files
        log(f"small: {n} files of 1 KiB, {self.a.runs} runs")
        d = self.work / "small"
        srcdir = d / "src"
        srcdir.mkdir(parents=True)
        paths = []
        for i in range(n):
            p = srcdir / f"f{i:06d}.bin"
            p.write_bytes(os.urandom(KiB))
            paths.append(p)
        names = [p.name for p in paths]
        up_s, down_s = f"{n:,} x 1 KiB upload", f"{n:,} x 1 KiB download"
        r_up = self.res.row(up_s, "barge", work=n, unit="files/s", note="one connection")
        r_down = self.res.row(down_s, "barge", work=n, unit="files/s", note="one connection")
        small_peers = [p for p in peers.list if p.small_up]
        for run in range(self.a.runs):
            srv = self.server("small")
            try:
                srv.reset_peak()
                r_up.times.append(self.timed(self.client.put_many(srv.port, paths),
                                             "barge put (many)"))
                r_up.peaks.append(srv.peak())
                stored = sum(1 for _ in srv.root.iterdir()) - 1  # minus .barge
                if stored != n:
                    raise RuntimeError(f"barge put: {stored} files stored, want {n}")
                out = d / "out"
                out.mkdir()
                srv.reset_peak()
                r_down.times.append(self.timed(self.client.get_many(srv.port, names, out),
                                               "barge get (many)"))
                r_down.peaks.append(srv.peak())
                got = sum(1 for _ in out.iterdir())
                if got != n:
                    raise RuntimeError(f"barge get: {got} files saved, want {n}")
                shutil.rmtree(out)
            except Exception as e:  # noqa: BLE001
                log(f"barge small files run {run + 1} failed: {e}")
                self.res.notes.append(f"barge small files run {run + 1}: {e}")
            finally:
                srv.stop()
                shutil.rmtree(srv.root, ignore_errors=True)
            for p in small_peers:
                ru = self.res.row(up_s, p.name, work=n, unit="files/s", note=p.note)
                rd = self.res.row(down_s, p.name, work=n, unit="files/s", note=p.note)
                remote = d / "remote"
                back = d / "back"
                try:
                    ru.times.append(p.small_up(srcdir, remote))
                    if sum(1 for _ in remote.iterdir()) != n:
                        raise RuntimeError("wrong file count after upload")
                    back.mkdir()
                    rd.times.append(p.small_down(remote, back))
                    if sum(1 for _ in back.rglob("*.bin")) != n:
                        raise RuntimeError("wrong file count after download")
                except Exception as e:  # noqa: BLE001
                    log(f"{p.name} small files run {run + 1} failed: {e}")
                    self.res.notes.append(f"{p.name} small files run {run + 1}: {e}")
                finally:
                    shutil.rmtree(remote, ignore_errors=True)
                    shutil.rmtree(back, ignore_errors=True)
            log(f"  run {run + 1}/{self.a.runs} done")
        shutil.rmtree(d, ignore_errors=True)

    # -- LIST_FILES on a big folder ------------------------------------------------------------
    def listing(self) -> None:
        n = self.a.list_files
        log(f"list: {n} files generated on disk, then indexed by the server")
        root = self.work / "shared-list"
        per = 1000
        for i in range(n):
            sub = root / f"d{i // per:04d}"
            if i % per == 0:
                sub.mkdir(parents=True)
            (sub / f"file-{i:07d}.txt").write_bytes(f"file {i}\n".encode())
        scen = f"LIST {n:,} files"
        t0 = time.perf_counter()
        srv = self.server("list", root=root)
        start = time.perf_counter() - t0
        c = self.control(srv.port)
        t1 = time.perf_counter()
        entries, pending, nbytes, _ = c.listing()
        first = time.perf_counter() - t1
        r_first = self.res.row(scen, "barge: first LIST after start", times=[first],
                               work=nbytes, unit="B",
                               detail=f"{entries:,} listed, {pending:,} pending; {human(nbytes)}")
        r_first.extra = {"entries": entries, "pending": pending, "bytes": nbytes}
        # Wait until every file is indexed (bounded), counting the time from the server's start.
        deadline = time.monotonic() + self.a.index_timeout
        polls = 0
        while (entries < n) and time.monotonic() < deadline:
            time.sleep(0.25)
            entries, pending, nbytes, _ = c.listing()
            polls += 1
        full = time.perf_counter() - t0
        self.res.row(scen, "barge: start to fully listed", times=[full],
                     detail=f"{entries:,} of {n:,} listed after {polls} polls; server start "
                     f"{start * 1000:.0f} ms")
        if entries < n:
            self.res.notes.append(f"LIST: only {entries} of {n} files indexed after "
                                  f"{self.a.index_timeout} s")
        warm = self.res.row(scen, "barge: LIST (raw socket)", work=nbytes, unit="B",
                            detail=f"{human(nbytes)} per listing")
        warm.extra = {"bytes": nbytes, "entries": entries}
        srv.reset_peak()
        for _ in range(self.a.runs):
            t = time.perf_counter()
            e2, _, b2, _ = c.listing()
            warm.times.append(time.perf_counter() - t)
            if e2 != entries:
                self.res.notes.append(f"LIST: {e2} entries, earlier {entries}")
        warm.peaks.append(srv.peak())
        c.close()
        ls = self.client.ls(srv.port)
        if ls:
            r_ls = self.res.row(scen, "barge ls (CLI, to /dev/null)", note="connect+list+print")
            for _ in range(self.a.runs):
                r_ls.times.append(self.timed(ls, "barge ls"))
        srv.stop()
        # Restart on the same folder: the id index is on disk, so nothing is rehashed.
        srv = self.server("list", root=root)
        c = self.control(srv.port)
        t = time.perf_counter()
        e3, p3, _, _ = c.listing()
        self.res.row(scen, "barge: first LIST after restart", times=[time.perf_counter() - t],
                     detail=f"{e3:,} listed, {p3:,} pending (index kept in .barge)")
        c.close()
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)

    # -- many clients at once ------------------------------------------------------------------
    def concurrent(self) -> None:
        n, size = self.a.clients, self.a.client_size
        log(f"concurrent: {n} clients x {human(size)}, {self.a.runs} runs")
        d = self.work / "conc"
        d.mkdir()
        src = d / "src.bin"
        make_random_file(src, size)
        scen_up = f"{n} clients x {human(size)} upload"
        scen_down = f"{n} clients x {human(size)} download"
        r_up = self.res.row(scen_up, "barge", work=n * size, note="aggregate")
        r_down = self.res.row(scen_down, "barge", work=n * size, note="aggregate")
        for run in range(self.a.runs):
            srv = self.server("conc", ["--max-connections", str(max(512, 2 * n))])
            try:
                for scen_row, cmds in (
                    (r_up, [self.client.put(srv.port, src, f"c{i:04d}.bin") for i in range(n)]),
                    (r_down, [self.client.get(srv.port, f"c{i:04d}.bin", d / f"o{i:04d}.bin")
                              for i in range(n)]),
                ):
                    srv.reset_peak()
                    t0 = time.perf_counter()
                    ps = [PROCS.start(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                          for c in cmds]
                    failed = []
                    deadline = time.monotonic() + self.timeout
                    for p in ps:
                        try:
                            _, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            failed.append("timeout")
                            continue
                        if p.returncode:
                            failed.append(err.decode(errors="replace").strip()[-200:])
                    dt = time.perf_counter() - t0
                    for p in ps:
                        PROCS.stop(p)
                    scen_row.peaks.append(srv.peak())
                    if failed:
                        raise RuntimeError(f"{len(failed)} of {n} clients failed: {failed[0]}")
                    scen_row.times.append(dt)
                stored = sum(1 for p in srv.root.glob("c*.bin") if p.stat().st_size == size)
                got = sum(1 for p in d.glob("o*.bin") if p.stat().st_size == size)
                if stored != n or got != n:
                    raise RuntimeError(f"{stored} stored, {got} downloaded, want {n}")
            except Exception as e:  # noqa: BLE001
                log(f"concurrent run {run + 1} failed: {e}")
                self.res.notes.append(f"concurrent run {run + 1}: {e}")
            finally:
                srv.stop()
                shutil.rmtree(srv.root, ignore_errors=True)
                for p in d.glob("o*.bin"):
                    p.unlink()
            log(f"  run {run + 1}/{self.a.runs} done")
        shutil.rmtree(d, ignore_errors=True)

    # -- idle connections ----------------------------------------------------------------------
    def idle(self) -> None:
        n = self.a.idle
        log(f"idle: {n} connections")
        srv = self.server("idle", ["--max-connections", str(n + 100)])
        socks = []
        try:
            time.sleep(0.5)
            before = srv.rss()
            srv.reset_peak()
            t0 = time.perf_counter()
            slow = 0
            for _ in range(n):
                t1 = time.perf_counter()
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                socks.append(s)
                # A connect this slow waited for a SYN retransmit: the listen queue overflowed.
                slow += time.perf_counter() - t1 > 0.5
            busy = 0
            for s in socks:
                buf = b""
                while not buf.endswith(b"\n") and len(buf) < 1000:
                    chunk = s.recv(1000)
                    if not chunk:
                        break
                    buf += chunk
                if not buf.startswith(b"220 "):
                    busy += 1
            opened = time.perf_counter() - t0
            time.sleep(1.0)
            rss, peak = srv.rss(), srv.peak()
            row = self.res.row(f"{n:,} idle connections", "barge", unit="B", times=[opened],
                               detail=f"RSS {human(before)} before, {human(rss)} with them open; "
                               f"+{(rss - before) / n / KiB:.1f} KiB per connection; time = "
                               "opening them all back to back, then reading each greeting"
                               + (f"; {slow} connects waited > 0.5 s (a SYN retransmit: the "
                                  "listen queue overflowed)" if slow else "")
                               + (f"; {busy} refused" if busy else ""))
            row.peaks.append(peak)
            row.extra = {"rss_before": before, "rss": rss, "refused": busy, "slow": slow}
            row.note = f"served with --max-connections {n + 100} (the default is lower)"
        finally:
            for s in socks:
                s.close()
            srv.stop()
            shutil.rmtree(srv.root, ignore_errors=True)

    # -- the verdicts --------------------------------------------------------------------------
    def judge(self, peers: Peers) -> None:
        res = self.res
        label = human(max(self.a.sizes))
        md5 = res.find(f"hash {label}", "md5sum")
        up = res.find(f"upload {label}", "barge")
        down = res.find(f"download {label}", "barge")
        for what, row, limit in (("upload", up, 1.3), ("download", down, 1.2)):
            if row and md5:
                ratio = row.median / md5.median
                res.target(f"{what} {label} <= {limit} x md5sum", ratio <= limit,
                           f"{ratio:.2f} x ({row.median:.2f} s vs {md5.median:.2f} s)")
            else:
                res.target(f"{what} {label} <= {limit} x md5sum", None, "not measured")
        for what, row in (("upload", up), ("download", down)):
            if not row:
                continue
            behind = []
            detail = []
            for p in peers.list:
                pr = res.find(f"{what} {label}", p.name)
                if pr and p.yardstick:
                    detail.append(f"({p.name} {pr.median / row.median:.2f}x)")
                elif pr:
                    detail.append(f"{p.name} {pr.median / row.median:.2f}x")
                    if pr.median <= row.median:
                        behind.append(p.name)
            res.target(f"{what} {label} ahead of every peer", not behind if detail else None,
                       ("behind " + ", ".join(behind) + "; " if behind else "")
                       + "peer/barge: " + ", ".join(detail))
            scp = res.find(f"{what} {label}", "scp")
            if scp:
                f = scp.median / row.median
                res.target(f"{what} {label} >= 4 x faster than scp", f >= 4,
                           f"{f:.2f} x ({scp.median:.2f} s vs {row.median:.2f} s)")
        n = self.a.small_files
        sm = res.find(f"{n:,} x 1 KiB upload", "barge")
        if sm:
            rate = n / sm.median
            res.target(">= 5,000 files/s (1 KiB uploads, one connection)", rate >= 5000,
                       f"{rate:,.0f} files/s")
        lst = res.find(f"LIST {self.a.list_files:,} files", "barge: LIST (raw socket)")
        if lst:
            res.target(f"LIST of {self.a.list_files:,} files < 1 s", lst.median < 1.0,
                       f"{lst.median * 1000:.0f} ms warm; {human(lst.extra.get('bytes', 0))}")
        for scen in (f"{self.a.clients} clients x {human(self.a.client_size)} upload",
                     f"{self.a.clients} clients x {human(self.a.client_size)} download",
                     f"{self.a.idle:,} idle connections"):
            r = next((r for r in res.rows if r.scenario == scen and r.peaks), None)
            if r:
                pk = max(r.peaks)
                res.target(f"peak RSS < 64 MiB: {scen}", pk < RSS_LIMIT, human(pk))
        if len(self.a.sizes) >= 2:
            small, big = min(self.a.sizes), max(self.a.sizes)
            for what in ("upload", "download"):
                a = res.find(f"{what} {human(small)}", "barge")
                b = res.find(f"{what} {human(big)}", "barge")
                if a and b and a.peaks and b.peaks:
                    pa, pb = max(a.peaks), max(b.peaks)
                    # Allow a little allocator noise, nothing that scales with the size.
                    res.target(f"RSS flat with file size ({what})", pb <= pa * 1.15 + 4 * MiB,
                               f"{human(pa)} at {human(small)}, {human(pb)} at {human(big)}")


# ---------------------------------------------------------------------------------------------
# Printing


def table(res: Results, ref_for: dict[str, Row]) -> str:
    head = ["scenario", "tool", "median", "min-max", "rate", "vs md5sum", "time/barge",
            "server peak RSS"]
    lines = []
    barge_by_scen = {r.scenario: r for r in res.rows if r.tool == "barge" and r.times}
    for r in res.rows:
        if not r.times:
            continue
        m = r.median
        md5 = ref_for.get(r.scenario)
        b = barge_by_scen.get(r.scenario)
        lines.append([
            r.scenario, r.tool,
            f"{m:.3f} s" if m < 10 else f"{m:.2f} s",
            f"{min(r.times):.2f}-{max(r.times):.2f}" if len(r.times) > 1 else "",
            r.rate() if r.unit != "B" else "",
            f"{m / md5.median:.2f} x" if md5 and md5.median else "",
            f"{m / b.median:.2f} x" if b and r is not b else "",
            human(max(r.peaks)) if r.peaks else "",
        ])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(out)


def report(bench: Bench, peers: Peers, started: float) -> str:
    res = bench.res
    ref_for = {}
    for r in res.rows:
        if r.tool == "md5sum" and r.times:
            label = r.scenario.removeprefix("hash ")
            for s in (f"hash {label}", f"upload {label}", f"download {label}"):
                ref_for[s] = r
    out = []
    out.append(f"barge benchmark: {bench.a.runs} runs per scenario, medians; "
               f"client: {bench.client.kind}")
    out.append(f"machine: {os.cpu_count()} cores, {platform.machine()}, "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB)} GiB, "
               f"kernel {platform.release()}; files and shared folders on tmpfs "
               f"({bench.work}); loopback only")
    out.append("rate: bytes or files per second of wall time; vs md5sum: time / md5sum's time; "
               "time/barge: a peer's time / barge's time (above 1: barge is faster)")
    out.append("")
    out.append(table(res, ref_for))
    out.append("")
    notes, seen = [], set()
    for r in res.rows:
        if not (r.note and r.times) or (r.tool, r.note) in seen:
            continue
        seen.add((r.tool, r.note))
        notes.append(f"- {r.tool}: {r.note}")
    for r in res.rows:
        if r.detail and r.times:
            notes.append(f"- {r.scenario} / {r.tool}: {r.detail}")
    if notes:
        out.append("notes:")
        out.extend(notes)
    if peers.skipped:
        out.append("peers skipped: " + "; ".join(f"{k}: {v}" for k, v in peers.skipped.items()))
    if res.notes:
        out.append("failures:")
        out.extend(f"- {n}" for n in res.notes)
    out.append("")
    out.append("targets:")
    w = max((len(t[0]) for t in res.targets), default=10)
    for name, verdict, detail in res.targets:
        out.append(f"  {verdict:4}  {name.ljust(w)}  {detail}")
    out.append("")
    out.append(f"total time {time.perf_counter() - started:.0f} s")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": KiB, "M": MiB, "G": GiB}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        return stand_in_client(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--barge", required=True, type=Path, help="the barge binary (release)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: small sizes, 2 runs (numbers are not the real ones)")
    ap.add_argument("--runs", type=int, help="runs per scenario (default 5, --quick 2)")
    ap.add_argument("--sizes", help="large-file sizes, comma-separated (default 100M,1G)")
    ap.add_argument("--only", default="large,small,list,concurrent,idle",
                    help="scenarios to run, comma-separated (default: all)")
    ap.add_argument("--peers", default="",
                    help="peers to set up, comma-separated from nc,socat,scp,vsftpd,rsync,dufs "
                    "(default: all available)")
    ap.add_argument("--small-files", type=int, help="number of 1 KiB files (default 10000)")
    ap.add_argument("--list-files", type=int, help="files in the listed folder (default 100000)")
    ap.add_argument("--clients", type=int, help="concurrent clients (default 100)")
    ap.add_argument("--client-size", help="bytes per concurrent client (default 10M)")
    ap.add_argument("--idle", type=int, help="idle connections (default 1000)")
    ap.add_argument("--timeout", type=float, default=600,
                    help="time limit of any one command, seconds")
    ap.add_argument("--index-timeout", type=float, default=300,
                    help="how long to wait for the server to index the listed folder")
    ap.add_argument("--tmp", default="/dev/shm", help="where the temporary folder goes (tmpfs)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--out", type=Path, help="also write the printed report here")
    a = ap.parse_args()
    q = a.quick
    a.runs = a.runs or (2 if q else 5)
    a.sizes = [parse_size(s) for s in (a.sizes or ("10M,100M" if q else "100M,1G")).split(",")]
    a.small_files = a.small_files or (1000 if q else 10_000)
    a.list_files = a.list_files or (10_000 if q else 100_000)
    a.clients = a.clients or (20 if q else 100)
    a.client_size = parse_size(a.client_size) if a.client_size else (MiB if q else 10 * MiB)
    a.idle = a.idle or 1000
    only = set(a.only.split(","))
    want_peers = {p.strip() for p in a.peers.split(",") if p.strip()}

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + 2 * a.clients + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="barge-bench-", dir=a.tmp))
    os.chmod(work, 0o755)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True, text=True,
                        check=False).stdout.strip()
    if fs != "tmpfs":
        log(f"warning: {work} is on {fs}, not tmpfs: disk speed will be measured too")
    bench = None
    peers = None
    try:
        bench = Bench(a, a.barge.resolve(), work)
        log(f"work folder {work} ({fs}); client: {bench.client.kind}")
        peers = Peers(work, a.timeout, want_peers) if "large" in only or "small" in only \
            else Peers(work, a.timeout, {"none"})
        log("peers: " + ", ".join(p.name for p in peers.list))
        steps = [("large", lambda: bench.large(peers)), ("small", lambda: bench.small(peers)),
                 ("list", bench.listing), ("concurrent", bench.concurrent),
                 ("idle", bench.idle)]
        for name, fn in steps:
            if name in only:
                try:
                    fn()
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - go on with the other scenarios
                    log(f"scenario {name} failed: {e}")
                    bench.res.notes.append(f"scenario {name}: {e}")
        bench.judge(peers)
        text = report(bench, peers, started)
        print(text, flush=True)
        if a.out:
            a.out.write_text(text + "\n")
        if a.json:
            a.json.write_text(json.dumps({
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                "rows": [r.__dict__ for r in bench.res.rows],
                "targets": bench.res.targets, "notes": bench.res.notes,
                "skipped": peers.skipped,
            }, indent=1, default=str))
        return 1 if any(t[1] == "FAIL" for t in bench.res.targets) else 0
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        return 130
    finally:
        PROCS.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
