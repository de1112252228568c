"""Processes and what they cost: starting, timing, CPU accounting, and how busy the machine is.

This module owns every process the benchmark starts (each in its own process group, all of them
stopped at the end, and only them) and the three measurements taken of them: wall time, the
user+sys CPU seconds of a short-lived child (from `os.wait4`, which includes the descendants it
reaped), and the CPU seconds of a long-running server's whole process tree (from /proc/<pid>/stat,
sampled before and after each run). It knows nothing about barge, the peers or the scenarios.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": KiB, "M": MiB, "G": GiB}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


@dataclass
class Sample:
    """One measured run: wall seconds, and user+sys CPU seconds of each side (None: not known,
    e.g. the client is this Python process, or a tool has no server)."""

    wall: float
    client_cpu: float | None = None
    server_cpu: float | None = None


# ---------------------------------------------------------------------------------------------
# CPU of a process tree from /proc: a long-running server is never reaped during a run, so its
# cost is read from its own counters. A daemon that forks per connection (sshd, vsftpd, rsync)
# puts a finished child's CPU into its own cutime/cstime once it has reaped it; summing
# utime+stime+cutime+cstime over every live process of the tree counts each exited process
# exactly once (in the live ancestor that reaped it).


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    # fields[0] is the state (field 3); utime is field 14, so fields[11..14] are 14..17.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def _scan() -> tuple[dict[int, list[int]], dict[int, int]]:
    """One pass over /proc: parent -> children, and pid -> CPU ticks."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st:
            children.setdefault(st[0], []).append(int(name))
            ticks[int(name)] = st[1]
    return children, ticks


def tree(root: int, scan=None) -> dict[int, int]:
    """Every live process (zombies too) under `root`, root included: pid -> CPU ticks."""
    children, ticks = scan or _scan()
    if root not in ticks:
        return {}
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in ticks and pid not in out:
            out[pid] = ticks[pid]
            todo.extend(children.get(pid, ()))
    return out


class TreeCpu:
    """User+sys CPU of a server's process tree between `start()` and `stop()`."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before: dict[int, int] = {}

    def start(self) -> None:
        self.before = tree(self.pid)

    def stop(self, settle: float = 5.0) -> float:
        """CPU seconds spent since `start()`. Waits (bounded) until the processes the run
        added to the tree (a per-connection child) are gone, so their CPU has been reaped
        into the daemon's counters."""
        deadline = time.monotonic() + settle
        while True:
            now = tree(self.pid)
            if set(now) <= set(self.before) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return (sum(now.values()) - sum(self.before.values())) / CLK_TCK


# ---------------------------------------------------------------------------------------------
# How busy the machine is: load average, and /proc/stat's share of idle time over an interval.


def _cpu_jiffies() -> dict[str, int]:
    """All CPUs' jiffies since boot, by kind."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, (int(x) for x in parts[:8])))


def _own_cpu(live: list[int]) -> float:
    """CPU seconds of this process, of every child it has reaped so far, and of the process
    trees under `live` (children still running, such as the peers' daemons)."""
    import resource

    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    scan = _scan()
    running = sum(sum(tree(pid, scan).values()) for pid in live) / CLK_TCK
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + running


class Busy:
    """The machine's load between `__init__` and `stop()`: load average at both ends, the
    share of idle CPU time, and an estimate of the share others used: CPU time charged to
    processes (user, nice, system) minus what this benchmark's processes used, running or
    reaped, plus the time the hypervisor stole. Interrupt time (loopback TCP is mostly
    softirq work) is charged to no process, so it is shown on its own."""

    def __init__(self, procs: "Procs") -> None:
        self.procs = procs
        self.load_before = os.getloadavg()
        self.j0 = _cpu_jiffies()
        self.own0 = _own_cpu(procs.pids())
        self.t0 = time.monotonic()
        self.load_after: tuple[float, float, float] | None = None
        self.idle_share = 0.0
        self.others_share = 0.0
        self.irq_share = 0.0

    def stop(self) -> "Busy":
        self.load_after = os.getloadavg()
        j1 = _cpu_jiffies()
        d = {k: j1[k] - self.j0[k] for k in j1}
        total = max(1, sum(d.values()))
        self.idle_share = (d["idle"] + d["iowait"]) / total
        self.irq_share = (d["irq"] + d["softirq"]) / total
        procs_s = (d["user"] + d["nice"] + d["system"]) / CLK_TCK
        own_s = _own_cpu(self.procs.pids()) - self.own0
        self.others_share = (max(0.0, procs_s - own_s) + d["steal"] / CLK_TCK) \
            / (total / CLK_TCK)
        return self

    def describe(self) -> str:
        a = self.load_after or os.getloadavg()
        return (f"load average {self.load_before[0]:.2f} / {self.load_before[1]:.2f} before, "
                f"{a[0]:.2f} / {a[1]:.2f} after (1 / 5 min); CPU idle "
                f"{self.idle_share:.0%}, interrupts {self.irq_share:.0%}, others (not this "
                f"benchmark) ~{self.others_share:.0%} of the time")

    def as_dict(self) -> dict:
        return {"load_before": self.load_before, "load_after": self.load_after,
                "idle_share": self.idle_share, "others_share": self.others_share,
                "irq_share": self.irq_share,
                "seconds": time.monotonic() - self.t0}


# ---------------------------------------------------------------------------------------------
# Processes: every one is registered, lives in its own process group, and is killed at the end.


class Procs:
    """The processes this run started, so that all of them can be stopped, and only them."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def pids(self) -> list[int]:
        return [p.pid for p in self.live if p.returncode is None]

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

    def reap(self, p: subprocess.Popen, deadline: float) -> float:
        """Waits for `p` until `deadline` (monotonic) and returns the user+sys CPU seconds of
        it and of the descendants it reaped (`wait4`). Kills it and raises on overrun; the
        exit code lands in `p.returncode` as with `Popen.wait`."""
        if p.returncode is not None:
            raise RuntimeError(f"pid {p.pid} was already reaped: its CPU is unknown")
        try:
            fd = os.pidfd_open(p.pid)
        except OSError:
            fd = None
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop(p, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(p.args, 0)
                if fd is not None:
                    select.select([fd], [], [], left)  # readable once the process has exited
                else:
                    time.sleep(min(left, 0.002))
        finally:
            if fd is not None:
                os.close(fd)
        p.returncode = os.waitstatus_to_exitcode(status)
        return ru.ru_utime + ru.ru_stime

    def run(self, cmd: list[str], timeout: float, what: str = "",
            server: TreeCpu | None = None, **kw) -> Sample:
        """Runs `cmd` to completion; returns its wall time, its CPU, and the CPU that `server`
        spent meanwhile. Raises if it fails or overruns."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        with tempfile.TemporaryFile() as err:
            # A file, not a pipe, so a chatty child never blocks and we need not read while
            # waiting for it.
            kw.setdefault("stderr", err)
            if server:
                server.start()
            t0 = time.perf_counter()
            p = self.start(cmd, **kw)
            try:
                cpu = self.reap(p, time.monotonic() + timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{what or cmd[0]}: timed out after {timeout:.0f} s") from None
            dt = time.perf_counter() - t0
            srv = server.stop() if server else None
            self.stop(p)
            if p.returncode != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip()[-800:]
                raise RuntimeError(f"{what or ' '.join(cmd[:3])}: exit {p.returncode}: {tail}")
        return Sample(dt, cpu, srv)


PROCS = Procs()


def run_all(cmds: list[list[str]], timeout: float, env: dict | None = None,
            stdout=subprocess.DEVNULL) -> tuple[float, float, list[str]]:
    """Starts every command at once and waits for them all (killing what is left at
    `timeout`): wall seconds, their CPU seconds, and the failures, one `exit N` or `timeout`
    per command that failed followed by the tail of their standard error (empty: none)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        ps = [PROCS.start(c, stdout=stdout, stderr=err, env=env) for c in cmds]
        deadline = time.monotonic() + timeout
        cpu, failed = 0.0, []
        for p in ps:
            try:
                cpu += PROCS.reap(p, deadline)
            except subprocess.TimeoutExpired:
                failed.append("timeout")
                continue
            if p.returncode:
                failed.append(f"exit {p.returncode}")
        dt = time.perf_counter() - t0
        for p in ps:
            PROCS.stop(p)
        if failed:
            err.seek(0)
            failed.append(err.read().decode(errors="replace").strip()[-400:])
    return dt, cpu, failed


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


# The kernel of these VMs reports memory to the hypervisor once it has stayed free this many
# milliseconds (0: at once); the hypervisor takes it back, and the next write into it pays for
# getting it again. Not a mainline parameter: where the file is missing there is nothing to do.
PAGE_REPORTING_DELAY = Path("/sys/module/page_reporting/parameters/min_free_ms")
# While the benchmark runs: 5 minutes (this kernel refuses 10 minutes).
PAGE_REPORTING_HELD_MS = 300_000


class PageReporting:
    """Holds off the hypervisor's taking back of free memory while the benchmark runs, and puts
    the setting back after (a `with` block; `note` says what was done, for the report).

    Measured here with the delay at 0 (this machine kind's setting): `dd` of 1 GiB of zeros into
    tmpfs cost 0.45 to 2.86 CPU s depending on what the hypervisor had taken back meanwhile
    (reported free memory went up by up to 412 MiB in the seconds before), which
    `warm_memory` cannot prevent once memory is reported as soon as it is free; with 300,000
    ms, 0.51 to 0.62 s in 11 of 12 runs. That cost falls on whichever tool writes a large
    file, by when the machine last freed memory, not by what the tool does, and it is larger
    than the targets' margins; `md5sum` and the other references read files already in memory
    and pay nothing of the kind. `--keep-page-reporting` measures with the machine's own
    setting. A run killed with SIGKILL cannot put it back: the report's first line gave the
    value to write back."""

    def __init__(self, keep: bool, path: Path = PAGE_REPORTING_DELAY,
                 held: int = PAGE_REPORTING_HELD_MS):
        self.keep, self.path, self.held = keep, path, held
        self.before: str | None = None
        self.changed = False
        self.note = "no free page reporting setting on this machine (nothing changed)"

    def __enter__(self) -> "PageReporting":
        try:
            self.before = self.path.read_text().strip()
        except OSError:
            return self
        if self.keep:
            self.note = f"free page reporting delay left at {self.before} ms (--keep-page-reporting)"
        elif self.before.isdigit() and int(self.before) >= self.held:
            self.note = f"free page reporting delay already {self.before} ms (nothing changed)"
        else:
            try:
                self.path.write_text(str(self.held))
                self.changed = True
                self.note = (f"free page reporting delay {self.before} ms -> {self.held} ms for "
                             "the run, put back after (memory freed by one step stays at hand "
                             "for the next)")
            except OSError as e:
                self.note = (f"free page reporting delay left at {self.before} ms (cannot "
                             f"change it: {e.strerror}): large writes cost what the hypervisor "
                             "took back")
        return self

    def __exit__(self, *_exc) -> None:
        if self.changed and self.before is not None:
            try:
                self.path.write_text(self.before)
            except OSError as e:
                log(f"warning: could not put back {self.path} = {self.before}: {e}")
            self.changed = False


def warm_memory(folder: Path, nbytes: int) -> None:
    """Writes `nbytes` of zeros into a file in `folder` (tmpfs) and deletes it: not a measured
    step, but what makes the next one write into memory the machine has at hand.

    On these VMs the kernel reports memory that stayed free for about 2 s to the hypervisor
    (virtio free page reporting), which takes it back; the next write into it pays for getting
    it again. Measured here: `dd` of 1 GiB into tmpfs cost 0.35 to 0.39 sys s right after a
    delete of as much, and 0.53 to 1.34 s after 5 to 10 s of rest. That cost falls on whichever
    tool writes first after a pause (the order of the tools rotates), not on the tool, and it is
    larger than what the upload targets measure (a server's CPU per byte). So every step that
    writes a large file runs right after this, tools and peers alike; `md5sum` and the other
    references read files already in memory and pay nothing of the kind."""
    path = folder / ".warm-memory"
    block = bytes(min(nbytes, 4 * MiB))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, block[:left])
    finally:
        os.close(fd)
        path.unlink()


def md5_file(path: Path) -> str:
    """The MD5 of a file, for checking what a tool wrote (not a measured step)."""
    import hashlib

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
