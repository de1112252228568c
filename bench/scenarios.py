"""What is measured: the scenarios, each run several times and interleaved with its references.

This module owns the workloads (large files, a disk-backed upload, many small files, a big
listing, many clients at once, idle connections), the order in which tools take turns, the
checks that each tool really moved the bytes, and the clean-up of what each run wrote. It fills
a `report.Results`; it does not judge or print it. Every barge scenario runs once per barge
row (`peers.modes`: TLS and plain, and a baseline's), the rows taking turns. The barge CLI is the
only client of barge transfers here; the exceptions are the raw-socket `LIST` probe, which times
the server's listing without any client's cost and reads no more of the dialogue than the
listing's line count, and the idle connections, which only connect (and shake hands, for TLS)
and read the greeting.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from peers import PLAIN, TLS, Barge, BargeServer, Peer, Peers
from procs import (
    KiB, MiB, PROCS, Busy, Sample, human, log, make_random_file, md5_file, run_all, warm_memory,
)
from report import FLOOR_NO_FILE, FLOOR_OF, FLOOR_WRITE, Results, Row


def tls_context() -> ssl.SSLContext:
    """A TLS 1.3 client context for the benchmark's own raw connections (the listing probe, the
    idle connections), offering ALPN `barge/1` as PROTOCOL.md 1.1 asks. It checks no
    certificate: these connections go to a server this run started on 127.0.0.1 and measure
    its cost, not its identity (the barge CLI, which pins the key, does the transfers)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["barge/1"])
    return ctx


def connect(srv: BargeServer, timeout: float, ctx: ssl.SSLContext | None = None) -> socket.socket:
    """A connection to `srv` on 127.0.0.1, inside TLS (handshake done) if the server runs TLS."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    if srv.mode != TLS:
        return sock
    try:
        return (ctx or tls_context()).wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


# Connections in the listing scenario's "slow readers" case (issue 11: peak RSS < 64 MiB).
SLOW_READERS = 20

# Downloads per run of each web server in the web scenario, each a sample of its row.
WEB_DOWN_REPEAT = 3


def settle_rss(srv: BargeServer, limit: float = 10.0) -> tuple[float, int]:
    """Waits until the server's RSS has held still for a second (at most `limit` seconds);
    returns the wait and that RSS."""
    t0 = time.monotonic()
    last, still = srv.rss(), 0
    while still < 4 and time.monotonic() - t0 < limit:
        time.sleep(0.25)
        now = srv.rss()
        still = still + 1 if now == last else 0
        last = now
    return time.monotonic() - t0, last


class ListProbe:
    """`LIST_FILES` on a raw socket (inside TLS for a TLS server): the server's listing time and
    size, with no client work. Only the first word of the `210` line (the count of lines that
    follow) is read."""

    def __init__(self, srv: BargeServer, timeout: float = 120.0):
        self.sock = connect(srv, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = self.sock.makefile("rb", buffering=1 * MiB)
        greeting = self.r.readline(16384)
        if not greeting.startswith(b"220 "):
            raise RuntimeError(f"bad greeting: {greeting!r}")

    def listing(self) -> tuple[int, int]:
        """(entries, bytes received)."""
        self.sock.sendall(b"LIST_FILES\n")
        head = self.r.readline(16384)
        if not head.startswith(b"210 "):
            raise RuntimeError(f"LIST_FILES: {head!r}")
        n = int(head.split()[1])
        total = len(head)
        for _ in range(n):
            line = self.r.readline(16384)
            if not line.endswith(b"\n"):
                raise RuntimeError("connection closed mid-listing")
            total += len(line)
        return n, total

    def close(self) -> None:
        self.sock.close()


class Bench:
    """The scenarios of one run. `barges` are the rows under test, one per binary and mode
    ("barge (TLS)", "barge (plain)", and "barge (baseline)" with `--baseline-bin`); they take
    turns in every barge scenario."""

    def __init__(self, args, barges: list[Barge], work: Path, res: Results):
        self.a = args
        self.barges = barges
        self.work = work
        self.res = res
        self.timeout = args.timeout
        self.serial = 0

    def server(self, b: Barge, tag: str, extra: list[str] | None = None,
               root: Path | None = None) -> BargeServer:
        self.serial += 1
        root = root or self.work / f"shared-{tag}-{self.serial}"
        return b.server(root, extra)

    def timed(self, cmd: list[str], what: str, server: BargeServer | None = None,
              **kw) -> Sample:
        return PROCS.run(cmd, self.timeout, what, server=server.cpu if server else None, **kw)

    def attempt(self, what: str, fn, warm: int = 0) -> None:
        """Runs one measured step; a failing tool is noted and the run goes on. A step that
        writes a large file gives `warm`, about the bytes it writes: it starts right after
        as many bytes were written and deleted (`warm_memory`)."""
        try:
            if warm:
                warm_memory(self.work, warm)
            fn()
        except Exception as e:  # noqa: BLE001 - one tool failing must not end the run
            log(f"{what} failed: {e}")
            self.res.notes.append(f"{what}: {e}")

    def scenario(self, name: str, fn) -> None:
        """Runs a scenario, noting how busy the machine was meanwhile."""
        busy = Busy(PROCS)
        try:
            fn()
        finally:
            self.res.busy[name] = busy.stop()

    def md5sum(self, row: Row, files: list[str], cwd: Path | None = None) -> None:
        row.add(self.timed(["md5sum", *files], "md5sum", cwd=cwd))

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
        hash_s, up_s, down_s = f"hash {label}", f"upload {label}", f"download {label}"
        self.res.refs.update({up_s: hash_s, down_s: hash_s})
        r_md5 = self.res.row(hash_s, "md5sum", work=size, note="the limit")
        # What a verified download to a file cannot go below, measured in the same runs: the
        # judged build's download with its bytes thrown away (MD5 and the socket, no file), and
        # `dd` putting as many bytes into a new file on the same tmpfs (the file, nothing else).
        floor_s = f"download floor {label}"
        self.res.refs[floor_s] = hash_s
        judged = next((b for b in self.barges if b.name == FLOOR_OF), None)
        if judged:
            self.res.row(floor_s, FLOOR_NO_FILE, work=size,
                         note="the judged build's `get -o -` to /dev/null: its download "
                              "without the file")
            self.res.row(floor_s, FLOOR_WRITE, work=size,
                         note="`dd if=/dev/zero bs=1M` into a new file on the tmpfs: writing "
                              "the bytes, nothing else")
        servers = {}
        try:
            for b in self.barges:
                srv = servers[b.name] = self.server(b, f"large{size}")
                # The file that barge downloads, put there by barge so it is indexed.
                self.timed(b.put(srv, src, "dl.bin"), "barge put dl.bin")
                self.res.row(up_s, b.name, work=size, note=b.note)
                self.res.row(down_s, b.name, work=size, note=b.note)
            if peers.ftp_root:
                (peers.ftp_root / "pub").mkdir(exist_ok=True)
                shutil.copy(src, peers.ftp_root / "pub" / src.name)
            for p in [p for p in peers.list if not p.web_only]:
                self.res.row(up_s, p.name, work=size, note=p.note)
                self.res.row(down_s, p.name, work=size, note=p.note)
            dest = d / "dest.bin"

            def check(path: Path, tool: str, first: bool) -> None:
                got = path.stat().st_size
                if got != size:
                    raise RuntimeError(f"{tool}: {path} has {got} bytes, want {size}")
                if first and md5_file(path) != want:
                    raise RuntimeError(f"{tool}: {path} differs from the source")

            def barge_up(b: Barge, run: int) -> None:
                srv = servers[b.name]
                name = f"up-{run}.bin"
                row = self.res.row(up_s, b.name)
                srv.reset_peak()
                row.add(self.timed(b.put(srv, src, name), "barge put", srv))
                row.peaks.append(srv.peak())
                check(srv.root / name, "barge put", run == 0)
                # Freed now, so the next run writes into memory the kernel has just freed
                # rather than pages it must first take from elsewhere.
                self.timed(b.rm(srv, name), "barge rm")

            def barge_down(b: Barge, run: int) -> None:
                srv = servers[b.name]
                row = self.res.row(down_s, b.name)
                srv.reset_peak()
                row.add(self.timed(b.get(srv, "dl.bin", dest), "barge get", srv))
                row.peaks.append(srv.peak())
                check(dest, "barge get", run == 0)
                dest.unlink()

            def floor_no_file(b: Barge) -> None:
                self.res.row(floor_s, FLOOR_NO_FILE).add(
                    self.timed(b._cli(servers[b.name], "get", "dl.bin", "-o", "-"),
                               "barge get -o -"))

            def floor_write() -> None:
                cmd = ["dd", "if=/dev/zero", f"of={dest}", "bs=1M", f"count={size // MiB}",
                       "status=none"]
                self.res.row(floor_s, FLOOR_WRITE).add(self.timed(cmd, "dd into tmpfs"))
                dest.unlink()

            def peer_task(p: Peer, run: int, up: bool) -> None:
                row = self.res.row(up_s if up else down_s, p.name)
                if up:
                    target = (peers.ftp_root / "up" / "x.bin") if p.name.startswith("vsftpd") \
                        else dest
                    row.add(p.up(src, target))
                else:
                    target = dest
                    row.add(p.down(src, dest))
                check(target, p.name, run == 0)
                target.unlink()

            for run in range(self.a.runs):
                order = [("md5sum", lambda: self.md5sum(r_md5, [str(src)]))]
                for b in self.barges:
                    order.append((f"{b.name} up", lambda b=b, run=run: barge_up(b, run)))
                    order.append((f"{b.name} down", lambda b=b, run=run: barge_down(b, run)))
                if judged:
                    order.append(("floor: no file", lambda: floor_no_file(judged)))
                    order.append(("floor: dd", floor_write))
                for p in [p for p in peers.list if not p.web_only]:
                    order.append((f"{p.name} up", lambda p=p, run=run: peer_task(p, run, True)))
                    order.append((f"{p.name} down",
                                  lambda p=p, run=run: peer_task(p, run, False)))
                # Rotate the order each run so slow drifts of the machine hit every tool alike.
                k = run % len(order)
                for what, fn in order[k:] + order[:k]:
                    self.attempt(f"{what} {label} run {run + 1}", fn, warm=size)
                log(f"  run {run + 1}/{self.a.runs} done")
        finally:
            for srv in servers.values():
                srv.stop()
                shutil.rmtree(srv.root, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)
            if peers.ftp_root:
                shutil.rmtree(peers.ftp_root / "pub", ignore_errors=True)

    # -- an upload onto a real disk ------------------------------------------------------------
    def disk(self) -> None:
        """barge's upload into a shared folder on a disk (not tmpfs), beside `dd conv=fsync` of
        the same bytes to the same disk and `md5sum`: a verified, flushed upload cannot beat
        the slower of those two, and should overlap them."""
        size = self.a.disk_size
        label = human(size)
        scen = f"disk upload {label}"
        log(f"disk: {label} into {self.a.disk_tmp}, {self.a.runs} runs")
        # The source stays on tmpfs: only the writing side touches the disk.
        src = self.work / "disk-src.bin"
        make_random_file(src, size)
        want = md5_file(src)
        disk = Path(tempfile.mkdtemp(prefix="barge-bench-disk-", dir=self.a.disk_tmp))
        servers: dict[str, BargeServer] = {}
        try:
            fs = subprocess.run(["stat", "-f", "-c", "%T", str(disk)], capture_output=True,
                                text=True, check=False).stdout.strip()
            if fs == "tmpfs":
                self.res.notes.append(f"disk: {disk} is on tmpfs; no disk was measured")
            r_md5 = self.res.row(scen, "md5sum", work=size, note="the limit")
            r_dd = self.res.row(scen, "dd conv=fsync", work=size,
                                note="dd bs=1M conv=fsync from tmpfs to the disk folder",
                                detail=f"{disk} ({fs})")
            for b in self.barges:
                servers[b.name] = self.server(b, "disk", root=disk / f"shared-{len(servers)}")
                self.res.row(scen, b.name, work=size, note=b.note)
            out = disk / "dd.bin"

            def dd() -> None:
                r_dd.add(self.timed(["dd", f"if={src}", f"of={out}", "bs=1M", "conv=fsync",
                                     "status=none"], "dd"))
                if out.stat().st_size != size:
                    raise RuntimeError(f"dd wrote {out.stat().st_size} bytes, want {size}")
                out.unlink()

            def barge_up(b: Barge, run: int) -> None:
                srv = servers[b.name]
                row = self.res.row(scen, b.name)
                name = f"up-{run}.bin"
                srv.reset_peak()
                row.add(self.timed(b.put(srv, src, name), "barge put", srv))
                row.peaks.append(srv.peak())
                stored = srv.root / name
                if stored.stat().st_size != size or (run == 0 and md5_file(stored) != want):
                    raise RuntimeError(f"barge put: {stored} differs from the source")
                self.timed(b.rm(srv, name), "barge rm")

            for run in range(self.a.runs):
                order = [("md5sum", lambda: self.md5sum(r_md5, [str(src)])), ("dd", dd)]
                order += [(b.name, lambda b=b, run=run: barge_up(b, run)) for b in self.barges]
                k = run % len(order)
                for what, fn in order[k:] + order[:k]:
                    self.attempt(f"{what} {scen} run {run + 1}", fn, warm=size)
                log(f"  run {run + 1}/{self.a.runs} done")
        finally:
            for srv in servers.values():
                srv.stop()
            shutil.rmtree(disk, ignore_errors=True)
            src.unlink(missing_ok=True)

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
        hash_s = f"hash {n:,} x 1 KiB"
        up_s, down_s = f"{n:,} x 1 KiB upload", f"{n:,} x 1 KiB download"
        self.res.refs.update({up_s: hash_s, down_s: hash_s})
        r_md5 = self.res.row(hash_s, "md5sum", work=n, unit="files/s",
                             note="the limit")
        small_peers = [p for p in peers.list if p.small_up]

        def barge_run(b: Barge, run: int) -> None:
            r_up = self.res.row(up_s, b.name, work=n, unit="files/s", note="one connection")
            r_down = self.res.row(down_s, b.name, work=n, unit="files/s", note="one connection")
            srv = self.server(b, "small")
            try:
                srv.reset_peak()
                r_up.add(self.timed(b.put_many(srv, paths), "barge put (many)", srv))
                r_up.peaks.append(srv.peak())
                stored = sum(1 for p in srv.root.iterdir() if p.name != ".barge")
                if stored != n:
                    raise RuntimeError(f"barge put: {stored} files stored, want {n}")
                out = d / "out"
                out.mkdir()
                srv.reset_peak()
                r_down.add(self.timed(b.get_many(srv, names, out), "barge get (many)", srv))
                r_down.peaks.append(srv.peak())
                got = sum(1 for _ in out.iterdir())
                if got != n:
                    raise RuntimeError(f"barge get: {got} files saved, want {n}")
            finally:
                srv.stop()
                shutil.rmtree(srv.root, ignore_errors=True)
                shutil.rmtree(d / "out", ignore_errors=True)

        def peer_run(p: Peer) -> None:
            ru = self.res.row(up_s, p.name, work=n, unit="files/s", note=p.note)
            rd = self.res.row(down_s, p.name, work=n, unit="files/s", note=p.note)
            remote = d / "remote"
            back = d / "back"
            try:
                ru.add(p.small_up(srcdir, remote))
                if sum(1 for _ in remote.iterdir()) != n:
                    raise RuntimeError("wrong file count after upload")
                back.mkdir()
                rd.add(p.small_down(remote, back))
                if sum(1 for _ in back.rglob("*.bin")) != n:
                    raise RuntimeError("wrong file count after download")
            finally:
                shutil.rmtree(remote, ignore_errors=True)
                shutil.rmtree(back, ignore_errors=True)

        for run in range(self.a.runs):
            order = [("md5sum", lambda: self.md5sum(r_md5, names, cwd=srcdir))]
            order += [(b.name, lambda b=b, run=run: barge_run(b, run)) for b in self.barges]
            order += [(p.name, lambda p=p: peer_run(p)) for p in small_peers]
            k = run % len(order)
            for what, fn in order[k:] + order[:k]:
                self.attempt(f"{what} small files run {run + 1}", fn)
            log(f"  run {run + 1}/{self.a.runs} done")
        shutil.rmtree(d, ignore_errors=True)

    # -- LIST_FILES on a big folder ------------------------------------------------------------
    def listing(self) -> None:
        n = self.a.list_files
        log(f"list: {n} files generated on disk, then indexed by the server")
        scen = f"LIST {n:,} files"
        for b in self.barges:
            root = self.work / "shared-list"
            per = 1000
            for i in range(n):
                sub = root / f"d{i // per:04d}"
                if i % per == 0:
                    sub.mkdir(parents=True)
                (sub / f"file-{i:07d}.txt").write_bytes(f"file {i}\n".encode())
            try:
                self._listing(b, scen, root, n)
            finally:
                shutil.rmtree(root, ignore_errors=True)

    def _listing(self, b: Barge, scen: str, root: Path, n: int) -> None:
        t0 = time.perf_counter()
        srv = self.server(b, "list", root=root)
        try:
            start = time.perf_counter() - t0
            c = ListProbe(srv)
            t1 = time.perf_counter()
            entries, nbytes = c.listing()
            first = time.perf_counter() - t1
            # We made the n files, so what is not listed yet is pending.
            r_first = self.res.row(scen, f"{b.name}: first LIST after start", times=[first],
                                   work=nbytes, unit="B",
                                   detail=f"{entries:,} listed, {n - entries:,} pending; "
                                   f"{human(nbytes)}")
            r_first.extra = {"entries": entries, "pending": n - entries, "bytes": nbytes}
            # Wait until every file is indexed (bounded), counting from the server's start.
            deadline = time.monotonic() + self.a.index_timeout
            polls = 0
            while entries < n and time.monotonic() < deadline:
                time.sleep(0.25)
                entries, nbytes = c.listing()
                polls += 1
            full = time.perf_counter() - t0
            self.res.row(scen, f"{b.name}: start to fully listed", times=[full],
                         detail=f"{entries:,} of {n:,} listed after {polls} polls; server start "
                         f"{start * 1000:.0f} ms")
            if entries < n:
                self.res.notes.append(f"LIST ({b.name}): only {entries} of {n} files indexed "
                                      f"after {self.a.index_timeout} s")
            # The first indexing's tail (its last commits, memory given back a second after
            # it) is not the listing's cost: measure from a server that has settled.
            settled, rss = settle_rss(srv)
            warm = self.res.row(scen, f"{b.name}: LIST (raw socket)", work=nbytes, unit="B",
                                detail=f"{human(nbytes)} per listing; client CPU is this "
                                "Python process, not shown; measured once the server's RSS "
                                f"held still ({human(rss)}, {settled:.1f} s after fully listed)")
            warm.extra = {"bytes": nbytes, "entries": entries}
            srv.reset_peak()
            for _ in range(self.a.runs):
                srv.cpu.start()
                t = time.perf_counter()
                e2, _ = c.listing()
                dt = time.perf_counter() - t
                warm.add(Sample(dt, None, srv.cpu.stop()))
                if e2 != entries:
                    self.res.notes.append(f"LIST ({b.name}): {e2} entries, earlier {entries}")
            warm.peaks.append(srv.peak())
            c.close()
            self.attempt(f"{b.name} slow listings",
                         lambda: self._slow_listings(b, scen, srv, entries))
            r_ls = self.res.row(scen, f"{b.name} ls (CLI, to /dev/null)",
                                note="connect+list+print")
            for _ in range(self.a.runs):
                r_ls.add(self.timed(b.ls(srv), "barge ls", srv))
        finally:
            srv.stop()
        # Restart on the same folder: the id index is on disk, so nothing is rehashed.
        srv = self.server(b, "list", root=root)
        try:
            c = ListProbe(srv)
            t = time.perf_counter()
            e3, _ = c.listing()
            self.res.row(scen, f"{b.name}: first LIST after restart",
                         times=[time.perf_counter() - t],
                         detail=f"{e3:,} listed, {n - e3:,} pending (index kept in .barge)")
            c.close()
        finally:
            srv.stop()

    def _slow_listings(self, b: Barge, scen: str, srv: BargeServer, entries: int,
                       readers: int = SLOW_READERS) -> None:
        """`readers` connections send `LIST_FILES` at once, read nothing for a second, then
        read slowly (at most 64 KiB per connection every 20 ms, a few MiB/s each): the server's
        peak RSS while it serves them (issue 11: < 64 MiB), that each got the whole listing,
        and the server's RSS once they closed (issue 10 item 4: memory given back)."""
        row = self.res.row(scen, f"{b.name}: {readers} slow LISTs at once",
                           note="server peak RSS while serving them")
        probes = [ListProbe(srv) for _ in range(readers)]
        try:
            srv.reset_peak()
            srv.cpu.start()
            t = time.perf_counter()
            for p in probes:
                p.sock.sendall(b"LIST_FILES\n")
            time.sleep(1.0)
            # Per connection: bytes of an unfinished line, lines still due (None: header not
            # read yet).
            partial = [b""] * readers
            due: list[int | None] = [None] * readers
            active = set(range(readers))
            while active:
                for i in sorted(active):
                    data = probes[i].sock.recv(64 * KiB)
                    if not data:
                        raise RuntimeError("connection closed mid-listing")
                    lines = (partial[i] + data).split(b"\n")
                    partial[i] = lines.pop()
                    for line in lines:
                        if due[i] is None:
                            if not line.startswith(b"210 "):
                                raise RuntimeError(f"LIST_FILES: {line[:80]!r}")
                            due[i] = int(line.split()[1])
                        else:
                            due[i] -= 1
                    if due[i] == 0:
                        active.discard(i)
                        if partial[i]:
                            raise RuntimeError("bytes after the listing")
                time.sleep(0.02)
            dt = time.perf_counter() - t
            row.add(Sample(dt, None, srv.cpu.stop()))
            row.peaks.append(srv.peak())
        finally:
            for p in probes:
                p.close()
        time.sleep(1.0)
        after = srv.rss()
        row.extra = {"readers": readers, "rss_after_close": after}
        row.detail = (f"{readers} x {entries:,} entries, each whole; server RSS "
                      f"{human(after)} after they closed")

    # -- many clients at once ------------------------------------------------------------------
    def concurrent(self) -> None:
        n, size = self.a.clients, self.a.client_size
        log(f"concurrent: {n} clients x {human(size)}, {self.a.runs} runs")
        d = self.work / "conc"
        d.mkdir()
        src = d / "src.bin"
        make_random_file(src, size)
        hash_s = f"hash {n} x {human(size)}"
        scen_up = f"{n} clients x {human(size)} upload"
        scen_down = f"{n} clients x {human(size)} download"
        self.res.refs.update({scen_up: hash_s, scen_down: hash_s})
        r_md5 = self.res.row(hash_s, "md5sum", work=n * size,
                             note="the limit", detail=f"one md5sum of the file {n} times")
        for run in range(self.a.runs):
            self.attempt(f"md5sum concurrent run {run + 1}",
                         lambda: self.md5sum(r_md5, [str(src)] * n))
            for b in self.barges:
                self.attempt(f"{b.name} concurrent run {run + 1}",
                             lambda b=b: self._concurrent(b, src, d, scen_up, scen_down),
                             warm=n * size)
            log(f"  run {run + 1}/{self.a.runs} done")
        shutil.rmtree(d, ignore_errors=True)

    def _concurrent(self, b: Barge, src: Path, d: Path, scen_up: str, scen_down: str) -> None:
        n, size = self.a.clients, self.a.client_size
        r_up = self.res.row(scen_up, b.name, work=n * size, note="aggregate")
        r_down = self.res.row(scen_down, b.name, work=n * size, note="aggregate")
        srv = self.server(b, "conc", b.limits(max(512, 2 * n)))
        try:
            for scen_row, cmds in (
                (r_up, [b.put(srv, src, f"c{i:04d}.bin") for i in range(n)]),
                (r_down, [b.get(srv, f"c{i:04d}.bin", d / f"o{i:04d}.bin")
                          for i in range(n)]),
            ):
                srv.reset_peak()
                srv.cpu.start()
                dt, cpu, failed = run_all(cmds, self.timeout)
                s_cpu = srv.cpu.stop()
                scen_row.peaks.append(srv.peak())
                if failed:
                    raise RuntimeError(f"{len(failed) - 1} of {n} clients failed: {failed[0]}: "
                                       f"{failed[-1][-200:]}")
                scen_row.add(Sample(dt, cpu, s_cpu))
            stored = sum(1 for p in srv.root.glob("c*.bin") if p.stat().st_size == size)
            got = sum(1 for p in d.glob("o*.bin") if p.stat().st_size == size)
            if stored != n or got != n:
                raise RuntimeError(f"{stored} stored, {got} downloaded, want {n}")
        finally:
            srv.stop()
            shutil.rmtree(srv.root, ignore_errors=True)
            for p in d.glob("o*.bin"):
                p.unlink()

    # -- idle connections ----------------------------------------------------------------------
    def idle(self) -> None:
        n = self.a.idle
        log(f"idle: {n} connections")
        for b in self.barges:
            self.attempt(f"{b.name} idle", lambda b=b: self._idle(b, n))

    def _idle(self, b: Barge, n: int) -> None:
        srv = self.server(b, "idle", b.limits(n + 100))
        socks = []
        ctx = tls_context()
        try:
            time.sleep(0.5)
            before = srv.rss()
            srv.reset_peak()
            srv.cpu.start()
            t0 = time.perf_counter()
            slow = 0
            failed = 0
            for _ in range(n):
                t1 = time.perf_counter()
                try:
                    # A TLS connection is counted once its handshake is done.
                    socks.append(connect(srv, 30, ctx))
                except OSError:  # ssl.SSLError too: a connection refused or a handshake cut
                    failed += 1
                # A connect this slow waited for a SYN retransmit: the listen queue overflowed.
                slow += time.perf_counter() - t1 > 0.5
            busy = failed
            for s in socks:
                buf = b""
                try:
                    while not buf.endswith(b"\n") and len(buf) < 1000:
                        chunk = s.recv(1000)
                        if not chunk:
                            break
                        buf += chunk
                except OSError:
                    pass
                if not buf.startswith(b"220 "):
                    busy += 1
            opened = time.perf_counter() - t0
            s_cpu = srv.cpu.stop()
            time.sleep(1.0)
            rss, peak = srv.rss(), srv.peak()
            row = self.res.row(f"{n:,} idle connections", b.name, unit="B",
                               detail=f"RSS {human(before)} before, {human(rss)} with them open; "
                               f"+{(rss - before) / n / KiB:.1f} KiB per connection; time = "
                               "opening them all back to back"
                               + (" (each with its TLS handshake)" if srv.mode == TLS else "")
                               + ", then reading each greeting"
                               + (f"; {slow} connects waited > 0.5 s (a SYN retransmit: the "
                                  "listen queue overflowed)" if slow else "")
                               + (f"; {busy} refused or failed" if busy else ""))
            row.add(Sample(opened, None, s_cpu))
            row.peaks.append(peak)
            row.extra = {"rss_before": before, "rss": rss, "refused": busy, "slow": slow,
                         "open": len(socks) - (busy - failed), "tls": srv.mode == TLS}
            row.note = f"served with {' '.join(b.limits(n + 100))} (the defaults are lower)"
        finally:
            for s in socks:
                s.close()
            srv.stop()
            shutil.rmtree(srv.root, ignore_errors=True)

    # -- the web gateway (issue 14) --------------------------------------------------------------
    def web(self, peers: Peers) -> None:
        """barge's web gateway (`serve --web`) with curl as the client: one large file down
        (`WEB_DOWN_REPEAT` times a run, back to back, each a sample: a download takes about a
        second, where the machine's swings are as large as the gaps between the servers) and
        up over HTTPS (plain HTTP for the plain row), beside `md5sum` of the same file and the
        web servers among the peers (dufs+curl and miniserve+curl, when installed with
        --with-dufs), which move the same bytes over plain HTTP without any verification.
        barge's upload is verified by the server's MD5 in its answer (compared here on the first
        run, as the page does). Then `--clients` (100) curl downloads from one address at once,
        for the gateway's peak memory (`web_parallel`)."""
        size = self.a.sizes[-1]
        label = human(size)
        log(f"web: {label}, {self.a.runs} runs")
        d = self.work / f"web-{size}"
        d.mkdir()
        src = d / "src.bin"
        make_random_file(src, size)
        want = md5_file(src)
        hash_s, up_s, down_s = f"hash {label}", f"web upload {label}", f"web download {label}"
        self.res.refs.update({up_s: hash_s, down_s: hash_s})
        r_md5 = self.res.row(hash_s, "md5sum", work=size, note="the limit")
        webs = [p for p in peers.list if p.name.startswith(("dufs", "miniserve"))]
        barges = [b for b in self.barges if b.mode in (TLS, PLAIN)]
        servers: dict[str, tuple[BargeServer, str]] = {}
        dest = d / "dest.bin"
        try:
            for b in barges:
                srv = self.server(b, "web",
                                  ["--web", "0", *b.web_limits(self.a.clients + 16)])
                url, deadline = None, time.monotonic() + 30
                while url is None and time.monotonic() < deadline:
                    text = srv.out.read_text()
                    url = next((w for w in text.split() if w.startswith(("https://", "http://"))
                                and ":" in w.split("//", 1)[1]), None)
                    time.sleep(0.05)
                if not url:
                    raise RuntimeError(f"{b.name}: no web address in the banner: {text[:300]}")
                servers[b.name] = (srv, url.rstrip("/"))
                self.timed(b.put(srv, src, "dl.bin"), "barge put dl.bin")
                note = "curl over " + ("HTTPS (-k; barge's own key)" if b.mode == TLS
                                       else "plain HTTP")
                self.res.row(up_s, f"{b.name} web", work=size, note=note)
                self.res.row(down_s, f"{b.name} web", work=size, note=note)
            for p in webs:
                self.res.row(up_s, p.name, work=size, note=p.note)
                self.res.row(down_s, p.name, work=size, note=p.note)

            def check(path: Path, tool: str, first: bool) -> None:
                got = path.stat().st_size
                if got != size:
                    raise RuntimeError(f"{tool}: {path} has {got} bytes, want {size}")
                if first and md5_file(path) != want:
                    raise RuntimeError(f"{tool}: {path} differs from the source")

            def barge_down(name: str, run: int) -> None:
                srv, base = servers[name]
                row = self.res.row(down_s, f"{name} web")
                srv.reset_peak()
                for k in range(WEB_DOWN_REPEAT):
                    row.add(self.timed(["curl", "-sSfk", "-o", str(dest),
                                        f"{base}/files/dl.bin"], "curl web download", srv))
                    check(dest, f"{name} web download", run == 0 and k == 0)
                    dest.unlink()
                row.peaks.append(srv.peak())

            def barge_up(name: str, run: int) -> None:
                srv, base = servers[name]
                row = self.res.row(up_s, f"{name} web")
                answer = d / "answer.json"
                srv.reset_peak()
                row.add(self.timed(["curl", "-sSfk", "-o", str(answer), "-T", str(src),
                                    f"{base}/files/up-{run}.bin"], "curl web upload", srv))
                row.peaks.append(srv.peak())
                check(srv.root / f"up-{run}.bin", f"{name} web upload", run == 0)
                if run == 0 and want not in answer.read_text():
                    raise RuntimeError(f"{name} web upload: the answer lacks the MD5 {want}")
                (srv.root / f"up-{run}.bin").unlink()

            def peer_task(p: Peer, run: int, up: bool) -> None:
                row = self.res.row(up_s if up else down_s, p.name)
                for k in range(1 if up else WEB_DOWN_REPEAT):
                    row.add(p.up(src, dest) if up else p.down(src, dest))
                    check(dest, p.name, run == 0 and k == 0)
                    dest.unlink()

            for run in range(self.a.runs):
                order = [("md5sum", lambda: self.md5sum(r_md5, [str(src)]))]
                for name in servers:
                    order.append((f"{name} web down", lambda n=name, r=run: barge_down(n, r)))
                    order.append((f"{name} web up", lambda n=name, r=run: barge_up(n, r)))
                for p in webs:
                    order.append((f"{p.name} down", lambda p=p, r=run: peer_task(p, r, False)))
                    order.append((f"{p.name} up", lambda p=p, r=run: peer_task(p, r, True)))
                # Rotate the order each run so slow drifts of the machine hit every tool alike.
                k = run % len(order)
                for what, fn in order[k:] + order[:k]:
                    self.attempt(f"{what} {label} run {run + 1}", fn, warm=size)
                log(f"  run {run + 1}/{self.a.runs} done")
            for b in barges:
                if b.name in servers:
                    self.attempt(f"{b.name} parallel web downloads",
                                 lambda b=b: self.web_parallel(b, *servers[b.name], d))
        finally:
            for srv, _ in servers.values():
                srv.stop()
                shutil.rmtree(srv.root, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)

    def web_parallel(self, b: Barge, srv: BargeServer, base: str, d: Path) -> None:
        """`--clients` curl downloads of one file from one address at once, `--runs` times:
        the wall time, both sides' CPU and the gateway's peak RSS (issue 14: under 64 MiB for
        100). The file is 4 x `--client-size` (40 MiB by default), so the downloads overlap."""
        n, size = self.a.clients, 4 * self.a.client_size
        src = d / "par.bin"
        make_random_file(src, size)
        self.timed(b.put(srv, src, "par.bin"), "barge put par.bin")
        src.unlink()
        row = self.res.row(f"{n} parallel web downloads x {human(size)}", f"{b.name} web",
                           work=n * size, note="aggregate; curl to /dev/null, sizes checked")
        cmd = ["curl", "-sSfk", "-o", "/dev/null", "-w", "%{size_download}\n",
               f"{base}/files/par.bin"]
        for run in range(self.a.runs):
            srv.reset_peak()
            with tempfile.TemporaryFile() as out:
                srv.cpu.start()
                dt, cpu, failed = run_all([cmd] * n, self.timeout, stdout=out)
                s_cpu = srv.cpu.stop()
                row.peaks.append(srv.peak())
                out.seek(0)
                whole = out.read().decode().split().count(str(size))
            if failed or whole != n:
                raise RuntimeError(f"{max(len(failed) - 1, 0)} of {n} downloads failed, {whole} "
                                   f"whole: {failed[:1]} {failed[-1:]}")
            row.add(Sample(dt, cpu, s_cpu))
            log(f"  {b.name}: {n} parallel web downloads, run {run + 1}/{self.a.runs}: "
                f"{dt:.2f} s, peak {human(row.peaks[-1])}")

# -- resume and folders (issue 12) --------------------------------------------------------------
# Kept apart from the scenarios above (other work edits them): one function, its own rows, and
# its targets in `report.judge_resume`.
TREE_SCENARIO = "put -r 10,000 x 1 KiB nested"
FLAT_SCENARIO = "put 10,000 x 1 KiB flat"
FULL_SCENARIO = "1 GiB upload, full"
RESUMED_SCENARIO = "1 GiB upload, resumed at 50%"


def resume_and_folders(bench: Bench) -> None:
    """`put -r` of 10,000 x 1 KiB files in nested folders against the same files flat (issue
    12: at least 80 % of the flat rate), and an upload of 1 GiB resumed at 50 % against a full
    one (at most 0.6x the time). The half is made by the client's test hook
    (`BARGE_TEST_KILL_AT`): the client kills itself there, untimed; the rerun is timed."""
    from procs import GiB

    b = bench.barges[0]
    d = bench.work / "resume"
    tree = d / "tree"
    flat = d / "flat"
    n = 10_000
    paths = []
    for i in range(n):
        sub = tree / f"a{i % 10}" / f"b{(i // 10) % 10}" / f"c{(i // 100) % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"f{i:05d}.bin"
        data = os.urandom(KiB)
        p.write_bytes(data)
        flat.mkdir(parents=True, exist_ok=True)
        q = flat / f"f{i:05d}.bin"
        q.write_bytes(data)
        paths.append(q)
    big = d / "big.bin"
    make_random_file(big, GiB)
    half = GiB // 2
    r_tree = bench.res.row(TREE_SCENARIO, b.name, work=n, unit="files/s", note="one connection")
    r_flat = bench.res.row(FLAT_SCENARIO, b.name, work=n, unit="files/s", note="one connection")
    # The 1 GiB rows for the build under test and, with --baseline-bin, the baseline's first
    # mode too, taking turns: before and after in the same run.
    big_rows = [b] + [x for x in bench.barges if "baseline" in x.name][:1]
    r_full = {x.name: bench.res.row(FULL_SCENARIO, x.name, work=GiB) for x in big_rows}
    r_res = {x.name: bench.res.row(RESUMED_SCENARIO, x.name, work=GiB - half) for x in big_rows}
    for run in range(bench.a.runs):
        log(f"resume: run {run + 1} of {bench.a.runs}")
        srv = bench.server(b, "resume")
        try:
            r_flat.add(bench.timed(b.put_many(srv, paths), "barge put (flat)", srv))
            r_tree.add(bench.timed(b._cli(srv, "put", "-r", str(tree)), "barge put -r", srv))
        finally:
            srv.stop()
            shutil.rmtree(srv.root, ignore_errors=True)
        for x in big_rows:
            _resume_once(bench, x, big, half, r_full[x.name], r_res[x.name])
    for r in r_res.values():
        r.detail = f"from byte {half:,}; same server, same file as the full upload"


def _resume_once(bench: Bench, b, big: Path, half: int, r_full, r_res) -> None:
    """One full upload of `big`, one cut at `half` (untimed), and the timed resume. The client's
    MD5 cache is emptied before the cut: what the resume finds there is what the interrupted
    upload itself left, as for a user."""
    from procs import GiB
    srv = bench.server(b, "resume")
    try:
        r_full.add(bench.timed(b.put(srv, big, "full.bin"), "barge put (full)", srv))
        shutil.rmtree(srv.client_config / "cache", ignore_errors=True)
        cut = b.put(srv, big, "resumed.bin")
        cut.insert(1, f"BARGE_TEST_KILL_AT={half}")
        subprocess.run(cut, capture_output=True, timeout=bench.timeout, check=False)
        partial = srv.root / ".barge" / "partial"
        last, deadline = -1, time.monotonic() + 60
        while time.monotonic() < deadline:
            now = sum(p.stat().st_size for p in partial.glob("*.part")) if partial.exists() else 0
            if now == last and now > 0:
                break
            last = now
            time.sleep(0.3)
        if not 0 < last <= half + 4 * MiB:
            raise RuntimeError(f"the interrupted upload kept {last} bytes, want about {half}")
        r_res.add(bench.timed(b.put(srv, big, "resumed.bin"), "barge put (resumed)", srv))
        stored = (srv.root / "resumed.bin").stat().st_size
        if stored != GiB:
            raise RuntimeError(f"resumed upload stored {stored} bytes, want {GiB}")
    finally:
        srv.stop()
        shutil.rmtree(srv.root, ignore_errors=True)
