"""The tools measured: barge itself (its server and its CLI, the only client) and the peers.

barge runs in two modes, each its own tool row: TLS (the default; the client pins the key the
server's banner shows, with `--fingerprint`, in a configuration folder of the run's own) and
`--plain` on both sides; a build from before TLS (no `--plain` flag) runs once, in clear text.

This module owns how each tool is installed-checked, started and driven: the command lines,
the private daemons (sshd, vsftpd, rsync, dufs) with their throw-away configs, and which
process is the client side and which the server side of a transfer, so every transfer returns a
`procs.Sample` (wall time and the CPU of each side). It does not decide what is measured, how
often, or in which order (that is `scenarios`), nor how results are shown (`report`).
Installing missing packages is `bench/run`'s job; here a missing tool only skips its peer.
"""

from __future__ import annotations

import getpass
import itertools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from procs import KiB, PROCS, Sample, TreeCpu, free_port, listening, log, proc_status, \
    reset_peak, wait_for

# ---------------------------------------------------------------------------------------------
# barge: the server, and the CLI as the client.

# How a barge binary is run. TLS: the default of a build that has `--plain` (the client gets the
# server's key with `--fingerprint`); PLAIN: `--plain` on both sides; LEGACY: a build from before
# TLS, which has no `--plain` flag and speaks clear text anyway.
TLS, PLAIN, LEGACY = "tls", "plain", "legacy"
# Settings a user's environment could carry into the servers or clients and change the mode or
# the state folder behind the benchmark's back.
_SCRUBBED = ("BARGE_PLAIN", "BARGE_STATE_DIR", "BARGE_HOST", "BARGE_PORT", "BARGE_ROOT")
_serial = itertools.count(1)


def modes(help_text: str, baseline: bool) -> list[tuple[str, str]]:
    """The report rows of one barge binary, (tool name, mode), from its `barge --help`: a build
    with `--plain` runs twice, TLS and plain; an older one, which has no such flag, runs once,
    as plain without the flag."""
    has_plain = "--plain" in help_text
    if baseline:
        if has_plain:
            return [("barge (baseline, TLS)", TLS), ("barge (baseline, plain)", PLAIN)]
        return [("barge (baseline)", LEGACY)]
    if has_plain:
        return [("barge (TLS)", TLS), ("barge (plain)", PLAIN)]
    return [("barge (plain)", LEGACY)]


def scrub_env() -> None:
    """Drops the settings of `_SCRUBBED` from this process's environment, so that neither the
    servers nor the clients started from it inherit them."""
    for k in _SCRUBBED:
        os.environ.pop(k, None)


def fingerprint_in(banner: str) -> str | None:
    """The key fingerprint in `barge serve`'s banner (`TLS on; the server's key is SHA256:...`),
    None if the banner has none (yet)."""
    for line in banner.splitlines():
        if line.startswith("TLS on"):
            for word in line.split():
                if word.startswith("SHA256:"):
                    return word.rstrip(".,;")
    return None


class BargeServer:
    """One `barge serve` on 127.0.0.1 with a port of its own, over `root`, in `mode`. A TLS
    server's key fingerprint is read from its banner; its clients use a configuration folder
    of their own (`client_config`, for the known_hosts file), so that no pin of an earlier
    server that had the same port can get in the way, and nothing of the user's is touched."""

    def __init__(self, bin_: Path, root: Path, logdir: Path, mode: str,
                 extra: list[str] | None = None):
        self.root = root
        self.mode = mode
        root.mkdir(parents=True, exist_ok=True)
        tag = f"{root.name}-{next(_serial)}"
        self.out = logdir / f"server-{tag}.out"
        self.err = logdir / f"server-{tag}.err"
        self.client_config = logdir / f"client-config-{tag}"
        self.client_config.mkdir(mode=0o700)
        cmd = [str(bin_), *(["--plain"] if mode == PLAIN else []), "serve", "--root", str(root),
               "--port", "0"]
        cmd += extra or []
        self.fingerprint: str | None = None
        with open(self.out, "wb") as o, open(self.err, "ab") as e:
            self.proc = PROCS.start(cmd, stdout=o, stderr=e)

        def ready():
            exited = self.proc.poll() is not None
            text = self.out.read_text()
            port = next((int(w.split(":")[1]) for w in text.split()
                         if w.startswith("127.0.0.1:")), None)
            # The mode's line follows the address line; wait for it too, and check it.
            if mode == TLS:
                self.fingerprint = fingerprint_in(text)
                ok = self.fingerprint is not None
            elif mode == PLAIN:
                ok = "Plain text" in text
            else:
                ok = True
            if port and ok:
                return port
            if exited:
                raise RuntimeError(f"barge serve exited: {self.err.read_text()[-800:]}")
            if port and ("TLS on" in text or "Plain text" in text):
                raise RuntimeError(f"barge serve runs in the wrong mode (want {mode}): "
                                   f"{text.strip()[:300]}")
            return None

        try:
            self.port = wait_for(ready, 30, "barge serve to listen")
        except BaseException:
            PROCS.stop(self.proc)
            raise
        self.cpu = TreeCpu(self.proc.pid)

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


class Barge:
    """One barge binary in one mode: `name` is its tool name in the report (see `modes`); the
    same binary is server and client. `variants` makes one per row a binary gives."""

    def __init__(self, name: str, bin_: Path, logs: Path, mode: str = TLS):
        self.name = name
        self.bin = str(bin_)
        self.logs = logs
        self.mode = mode
        probe = subprocess.run([self.bin, "put", "--help"], capture_output=True, timeout=30,
                               check=False)
        if probe.returncode != 0:
            raise RuntimeError(f"{bin_} has no `put` command: not a barge with a client")
        serve = subprocess.run([self.bin, "serve", "--help"], capture_output=True, text=True,
                               timeout=30, check=False).stdout
        # Builds before the per-address limit (default 64) have no such flag.
        self.per_ip_flag = "--max-connections-per-ip" in serve
        # Builds before the web gateway's own limits (16 per address) have no such flag.
        self.web_per_ip_flag = "--web-max-connections-per-ip" in serve

    @classmethod
    def variants(cls, bin_: Path, logs: Path, baseline: bool = False) -> list["Barge"]:
        """The rows of one binary: TLS and plain for a build with `--plain`, one legacy row
        for an older one (see `modes`)."""
        p = subprocess.run([str(bin_), "--help"], capture_output=True, text=True, timeout=30,
                           check=False)
        if p.returncode != 0:
            raise RuntimeError(f"{bin_} --help: exit {p.returncode}: {p.stderr.strip()[:300]}")
        return [cls(name, bin_, logs, mode) for name, mode in modes(p.stdout, baseline)]

    @property
    def note(self) -> str:
        return "the barge CLI; " + {
            TLS: "TLS 1.3, the server's key given with --fingerprint (from its banner)",
            PLAIN: "--plain on both sides (clear text)",
            LEGACY: "a build from before TLS (no --plain flag): clear text",
        }[self.mode]

    def server(self, root: Path, extra: list[str] | None = None) -> BargeServer:
        return BargeServer(Path(self.bin), root, self.logs, self.mode, extra)

    def limits(self, n: int) -> list[str]:
        """Server options that let `n` connections from this one address in at once."""
        out = ["--max-connections", str(n)]
        return out + (["--max-connections-per-ip", str(n)] if self.per_ip_flag else [])

    def web_limits(self, n: int) -> list[str]:
        """Server options that let `n` web connections from this one address in at once (empty
        for a build that cannot: its web rows then show what its fixed limits allow)."""
        if not self.web_per_ip_flag:
            return []
        return ["--web-max-connections", str(n), "--web-max-connections-per-ip", str(n)]

    def _cli(self, srv: BargeServer, *args: str) -> list[str]:
        # `env` execs barge in its own place, so the client's CPU (wait4) is barge's; every mode
        # goes through it, so all of them pay the same few hundred microseconds.
        env = ["env", f"XDG_CONFIG_HOME={srv.client_config}",
               f"XDG_CACHE_HOME={srv.client_config}/cache"]
        if self.mode == TLS:
            if not srv.fingerprint:
                raise RuntimeError("TLS server without a known fingerprint")
            sec = ["--fingerprint", srv.fingerprint]
        else:
            sec = ["--plain"] if self.mode == PLAIN else []
        return [*env, self.bin, "-q", *sec, "--port", str(srv.port), *args]

    def put(self, srv: BargeServer, src: Path, name: str) -> list[str]:
        return self._cli(srv, "put", str(src), "--as", name)

    def get(self, srv: BargeServer, ref: str, dest: Path) -> list[str]:
        return self._cli(srv, "get", ref, "-o", str(dest), "-f")

    def put_many(self, srv: BargeServer, paths: list[Path]) -> list[str]:
        return self._cli(srv, "put", *map(str, paths))

    def get_many(self, srv: BargeServer, names: list[str], outdir: Path) -> list[str]:
        return self._cli(srv, "get", "-o", str(outdir), "-f", *names)

    def rm(self, srv: BargeServer, ref: str) -> list[str]:
        return self._cli(srv, "rm", ref)

    def ls(self, srv: BargeServer) -> list[str]:
        return self._cli(srv, "ls")


# ---------------------------------------------------------------------------------------------
# The peers: each one is set up once and gives an upload and a download.


@dataclass
class Peer:
    """A reference tool. `up(src, dest)` and `down(src, dest)` make one transfer and return its
    `Sample`; `small_up(srcdir, destdir)` / `small_down` copy a folder of small files, if the
    tool can in one session."""

    name: str
    up: object
    down: object
    note: str = ""
    small_up: object = None
    small_down: object = None
    # A yardstick built for this benchmark rather than a tool people use: shown, not a target.
    yardstick: bool = False
    # Measured only by the web scenario (the HTTPS rows of the web servers).
    web_only: bool = False


class Peers:
    """The peers asked for (`want`: keys nc, socat, scp, vsftpd, rsync, dufs, miniserve; empty:
    all), each started once in `work`; the ones that cannot run are listed in `skipped`."""

    def __init__(self, work: Path, timeout: float, want: set[str]):
        self.work = work
        self.timeout = timeout
        self.skipped: dict[str, str] = {}
        self.list: list[Peer] = []
        self.user = getpass.getuser()
        self.ftp_root: Path | None = None
        builders = [
            ("nc", self._nc),
            ("socat", self._socat),
            ("scp", self._ssh),
            ("vsftpd+curl", self._ftp),
            ("rsync daemon", self._rsync),
            ("dufs+curl", self._dufs),
            ("miniserve+curl", self._miniserve),
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

    def _daemon(self, cmd: list[str], port: int, what: str, **kw) -> TreeCpu:
        """Starts a daemon, waits until it listens, and returns the meter of its CPU."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = PROCS.start(cmd, **kw)
        wait_for(lambda: listening(port) or p.poll() is not None, 10, what)
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited at start")
        return TreeCpu(p.pid)

    # Raw TCP: a listener (the server side) writing into a file, or sending a file; the transfer
    # ends when both sides have exited, so the file is complete.
    def _pair(self, listener: list[str], client: list[str], port: int, lin, lout, cin,
              cout) -> Sample:
        started = []
        try:
            lp = PROCS.start(listener, stdin=lin, stdout=lout, stderr=subprocess.DEVNULL)
            started.append(lp)
            wait_for(lambda: listening(port) or lp.poll() is not None, 10, "the listener")
            t0 = time.perf_counter()
            cp = PROCS.start(client, stdin=cin, stdout=cout, stderr=subprocess.DEVNULL)
            started.append(cp)
            deadline = time.monotonic() + self.timeout
            try:
                c_cpu = PROCS.reap(cp, deadline)
                s_cpu = PROCS.reap(lp, deadline)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{client[0]}: timed out") from None
            dt = time.perf_counter() - t0
            if cp.returncode or lp.returncode:
                raise RuntimeError(f"{client[0]}: exit {cp.returncode}/{lp.returncode}")
            return Sample(dt, c_cpu, s_cpu)
        finally:
            for p in started:
                PROCS.stop(p)

    def _nc(self) -> None:
        if not shutil.which("nc"):
            raise RuntimeError("nc not installed")
        dv = subprocess.DEVNULL

        def up(src: Path, dest: Path) -> Sample:
            port = free_port()
            with open(src, "rb") as i, open(dest, "wb") as o:
                return self._pair(["nc", "-l", "127.0.0.1", str(port)],
                                  ["nc", "-N", "127.0.0.1", str(port)], port, dv, o, i, dv)

        def down(src: Path, dest: Path) -> Sample:
            port = free_port()
            with open(src, "rb") as i, open(dest, "wb") as o:
                return self._pair(["nc", "-N", "-l", "127.0.0.1", str(port)],
                                  ["nc", "127.0.0.1", str(port)], port, i, dv, dv, o)

        self.list.append(Peer("nc", up, down, "OpenBSD nc into a file, no verification (raw TCP)"))

        # The same, verified the way barge verifies: md5sum at both ends, fed by `tee` while the
        # bytes pass, so hashing overlaps the transfer. What standard tools reach on this machine.
        sender = 'mkfifo "$1" && { md5sum < "$1" > "$2" & tee "$1" < "$3" | nc -N {addr}; wait; }'
        receiver = 'mkfifo "$1" && { md5sum < "$1" > "$2" & nc {addr} | tee "$1" > "$3"; wait; }'
        d = self.work / "ncmd5"
        d.mkdir()

        def verified(src: Path, dest: Path, up: bool) -> Sample:
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
            s = self._pair(listener, client, port, dv, dv, dv, dv)
            a, b = ((d / f).read_text().split()[0] for f in ("s.md5", "r.md5"))
            if a != b:
                raise RuntimeError("nc+md5sum: the two ends disagree")
            return s

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
        dv = subprocess.DEVNULL

        def up(src: Path, dest: Path) -> Sample:
            port = free_port()
            return self._pair(
                ["socat", *b, "-u", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                 f"CREATE:{dest}"],
                ["socat", *b, "-u", f"OPEN:{src}", f"TCP:127.0.0.1:{port}"],
                port, dv, dv, dv, dv,
            )

        def down(src: Path, dest: Path) -> Sample:
            port = free_port()
            return self._pair(
                ["socat", *b, "-u", f"OPEN:{src}",
                 f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"],
                ["socat", *b, "-u", f"TCP:127.0.0.1:{port}", f"CREATE:{dest}"],
                port, dv, dv, dv, dv,
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
        with open(d / "sshd.log", "wb") as errlog:
            try:
                srv = self._daemon([sshd, "-D", "-e", "-f", str(d / "sshd_config")], port, "sshd",
                                   stderr=errlog)
            except RuntimeError:
                raise RuntimeError(f"sshd: {(d / 'sshd.log').read_text()[-300:]}") from None
        opts = [
            "-F", "/dev/null", "-i", str(d / "client"), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "LogLevel=ERROR",
        ]
        remote = f"{self.user}@127.0.0.1"
        t = self.timeout
        PROCS.run(["ssh", *opts, "-p", str(port), remote, "true"], 30, "ssh login")
        scp = ["scp", "-q", *opts, "-P", str(port)]

        def sftp(batch: str) -> Sample:
            bf = d / "batch"
            bf.write_text(batch)
            return PROCS.run(["sftp", "-q", *opts, "-P", str(port), "-b", str(bf), remote],
                             t, "sftp", server=srv)

        cipher = "default cipher (chacha20-poly1305 in OpenSSH 9)"
        self.list.append(Peer(
            "scp",
            lambda s, de: PROCS.run([*scp, str(s), f"{remote}:{de}"], t, "scp", server=srv),
            lambda s, de: PROCS.run([*scp, f"{remote}:{s}", str(de)], t, "scp", server=srv),
            f"private sshd; {cipher}",
            lambda s, de: PROCS.run([*scp, "-r", str(s), f"{remote}:{de}"], t, "scp -r",
                                    server=srv),
            lambda s, de: PROCS.run([*scp, "-r", f"{remote}:{s}", str(de)], t, "scp -r",
                                    server=srv),
        ))
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
        with open(d / "vsftpd.log", "wb") as errlog:
            try:
                srv = self._daemon([vsftpd, str(d / "vsftpd.conf")], port, "vsftpd",
                                   stderr=errlog)
            except RuntimeError:
                raise RuntimeError(f"vsftpd: {(d / 'vsftpd.log').read_text()[-300:]}") from None
        base = f"ftp://127.0.0.1:{port}"
        t = self.timeout
        self.ftp_root = root
        probe = d / "probe"
        probe.write_bytes(b"x")
        PROCS.run(["curl", "-sS", "-T", str(probe), f"{base}/up/probe"], 30, "curl ftp probe")

        # Uploads land in <root>/up/<name>; downloads are served from <root>/pub.
        def up(src: Path, dest: Path) -> Sample:
            return PROCS.run(["curl", "-sS", "-T", str(src), f"{base}/up/{dest.name}"], t,
                             "curl", server=srv)

        def down(src: Path, dest: Path) -> Sample:
            return PROCS.run(["curl", "-sS", "-o", str(dest), f"{base}/pub/{src.name}"], t,
                             "curl", server=srv)

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
        srv = self._daemon(
            ["rsync", "--daemon", "--no-detach", f"--config={d}/rsyncd.conf", f"--port={port}",
             "--address=127.0.0.1", f"--log-file={d}/rsyncd.log"], port, "rsync daemon")
        base = f"rsync://127.0.0.1:{port}/bench"
        t = self.timeout

        def rel(p: Path) -> str:
            return str(p.relative_to(self.work))

        def run(*args: str) -> Sample:
            return PROCS.run(["rsync", *args], t, "rsync", server=srv)

        self.list.append(Peer(
            "rsync daemon",
            lambda s, de: run(str(s), f"{base}/{rel(de)}"),
            lambda s, de: run(f"{base}/{rel(s)}", str(de)),
            "rsync:// protocol; whole-file xxh128 checksum, not MD5",
            lambda s, de: run("-r", f"{s}/", f"{base}/{rel(de)}/"),
            lambda s, de: run("-r", f"{base}/{rel(s)}/", f"{de}/"),
        ))

    def _tls_files(self) -> list[str]:
        """A throw-away self-signed P-256 key and certificate (barge's own kind of key) for the
        web servers' HTTPS rows: `[cert, key]`."""
        d = self.work / "peer-tls"
        cert, key = d / "cert.pem", d / "key.pem"
        if not cert.exists():
            d.mkdir(exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
                            "-days", "2", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True, timeout=60)
        return [str(cert), str(key)]

    def _web_server(self, name: str, binary: str, cmd, upload, note: str) -> None:
        """A web server as two peers, plain HTTP and HTTPS (`web_only`), with curl as the
        client: `cmd(port, tls_args)` starts it, `upload(base, src, dest)` is curl's arguments
        for an upload."""
        found = shutil.which(binary) or shutil.which(str(Path.home() / f".cargo/bin/{binary}"))
        if not found:
            raise RuntimeError(f"{binary} not installed (optional: bench/run --with-dufs)")
        if not shutil.which("curl"):
            raise RuntimeError("curl not installed")
        t = self.timeout
        for tls in (False, True):
            port = free_port()
            tls_args = []
            if tls:
                cert, key = self._tls_files()
                tls_args = ["--tls-cert", cert, "--tls-key", key]
            srv = self._daemon(cmd(found, port, tls_args), port, binary)
            base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
            curl = ["curl", "-sSf"] + (["-k"] if tls else [])

            def rel(p: Path) -> str:
                return str(p.relative_to(self.work))

            def up(src: Path, dest: Path, base=base, srv=srv, curl=curl) -> Sample:
                return PROCS.run([*curl, *upload(base, src, rel(dest))], t, "curl", server=srv)

            def down(src: Path, dest: Path, base=base, srv=srv, curl=curl) -> Sample:
                return PROCS.run([*curl, "-o", str(dest), f"{base}/{rel(src)}"], t, "curl",
                                 server=srv)

            self.list.append(Peer(f"{name} (TLS)" if tls else name, up, down,
                                  note + ("; HTTPS, curl -k" if tls else ""), web_only=tls))

    def _dufs(self) -> None:
        self._web_server(
            "dufs+curl", "dufs",
            lambda exe, port, tls: [exe, "-A", "-b", "127.0.0.1", "-p", str(port), *tls,
                                    str(self.work)],
            lambda base, src, dest: ["-T", str(src), f"{base}/{dest}"],
            "HTTP PUT/GET, no verification")

    def _miniserve(self) -> None:
        # Uploads are multipart form posts (miniserve has no PUT), the part's file name is the
        # name stored; `-o overwrite` lets a run replace the file of the run before.
        self._web_server(
            "miniserve+curl", "miniserve",
            lambda exe, port, tls: [exe, "-i", "127.0.0.1", "-p", str(port), "-u", "-o",
                                    "overwrite", *tls, "--", str(self.work)],
            lambda base, src, dest: ["-o", "/dev/null", "-F",
                                     f"path=@{src};filename={Path(dest).name}",
                                     f"{base}/upload?path=/{Path(dest).parent}"],
            "HTTP multipart POST/GET, no verification")
