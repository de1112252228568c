#!/usr/bin/env python3
"""The barge benchmark (issues 4, 9 and 11): barge against its peers, on loopback, in one run.

Run it through `bench/run`, which installs the peers and builds barge first. Every scenario runs
several times, interleaved with its references, and with barge in both of its modes, TLS (the
default) and `--plain`, as rows of their own. The table shows medians and ratios against
references measured in the same run (wall time, and user+sys CPU seconds of the client and the
server side against md5sum's CPU on the same bytes), because on a busy machine only those are
stable. The report's header says how busy the machine was.

Everything lives in one temporary folder on a tmpfs (`/dev/shm`): the source files, barge's
shared folder and every peer's destination, so no disk speed is measured, except in the `disk`
scenario, whose shared folder is on a real disk (`--disk-tmp`). Every process started here is in
its own process group and is killed at the end, every wait has a time limit, and the temporary
folders are removed, whatever happens (errors, Ctrl-C, SIGTERM).

This file owns the options and the run's life (set-up, the scenarios in turn, clean-up); the
work is in `procs` (processes and CPU), `peers` (the tools), `scenarios` (what is measured) and
`report` (verdicts, table, JSON).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = ("large", "disk", "small", "list", "concurrent", "idle", "web", "resume")


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line. Only the standard library is imported before this, so `--help` works
    on a machine with nothing installed or built."""
    ap = argparse.ArgumentParser(
        prog="bench/run", description=__doc__.split("\n\n")[0],
        epilog="Files: the report goes to target/bench/report.txt and the raw numbers to "
        "target/bench/results.json. Environment: BARGE_BIN=PATH benchmarks that binary instead "
        "of building target/release/barge.")
    ap.add_argument("--barge", type=Path, help="the barge binary (bench/run passes its build)")
    ap.add_argument("--baseline-bin", type=Path, metavar="PATH",
                    help="a second barge binary measured in the same run, interleaved with the "
                    "first, as its own rows (both its server and its client): \"barge "
                    "(baseline)\" for a build without --plain (run in clear text), else "
                    "\"barge (baseline, TLS)\" and \"barge (baseline, plain)\"")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: small sizes, 2 runs (numbers are not the real ones)")
    ap.add_argument("--runs", type=int, help="runs per scenario (default 5, --quick 2)")
    ap.add_argument("--sizes", help="large-file sizes, comma-separated (default 100M,1G; "
                    "--quick 10M,100M)")
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="scenarios to run, comma-separated from " + ",".join(SCENARIOS)
                    + " (default: all)")
    ap.add_argument("--peers", default="",
                    help="peers to set up, comma-separated from nc,socat,scp,vsftpd,rsync,dufs,miniserve "
                    "(default: all available)")
    ap.add_argument("--with-dufs", action="store_true",
                    help="bench/run installs dufs and miniserve (cargo install, a few minutes) "
                    "to add them as peers (the web scenario's references)")
    ap.add_argument("--disk-size", help="bytes uploaded in the disk scenario (default 1G, "
                    "--quick 32M)")
    ap.add_argument("--disk-tmp", default="/var/tmp",
                    help="where the disk scenario's folder goes: a real disk, not tmpfs "
                    "(default /var/tmp)")
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
    ap.add_argument("--keep-page-reporting", action="store_true",
                    help="leave the VM kernel's free page reporting delay as it is (by default "
                         "a run holds off the hypervisor's taking back of free memory, where "
                         "the machine has that setting and allows it, and puts it back after)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--out", type=Path, help="also write the printed report here")
    a = ap.parse_args(argv)
    if a.barge is None:
        ap.error("--barge is required (bench/run passes it)")
    from procs import MiB, parse_size

    q = a.quick
    a.runs = a.runs or (2 if q else 5)
    a.sizes = [parse_size(s) for s in (a.sizes or ("10M,100M" if q else "100M,1G")).split(",")]
    a.disk_size = parse_size(a.disk_size or ("32M" if q else "1G"))
    a.small_files = a.small_files or (1000 if q else 10_000)
    a.list_files = a.list_files or (10_000 if q else 100_000)
    a.clients = a.clients or (20 if q else 100)
    a.client_size = parse_size(a.client_size) if a.client_size else (MiB if q else 10 * MiB)
    a.idle = a.idle or 1000
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = set(a.only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s) {','.join(sorted(unknown))}; from {','.join(SCENARIOS)}")
    return a


def main() -> int:
    a = options()
    from peers import scrub_env
    from procs import PageReporting, log

    want_peers = {p.strip() for p in a.peers.split(",") if p.strip()}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + 2 * a.clients + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    # A BARGE_PLAIN, BARGE_HOST... of the caller's would change what the rows measure.
    scrub_env()
    with PageReporting(a.keep_page_reporting) as memory:
        log(memory.note)
        return run(a, want_peers, memory)


def run(a, want_peers: set[str], memory) -> int:
    import report
    from peers import Barge, Peers
    from procs import PROCS, Busy, log
    from scenarios import Bench, resume_and_folders

    started = time.perf_counter()
    busy = Busy(PROCS)
    work = Path(tempfile.mkdtemp(prefix="barge-bench-", dir=a.tmp))
    os.chmod(work, 0o755)
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True, text=True,
                        check=False).stdout.strip()
    if fs != "tmpfs":
        log(f"warning: {work} is on {fs}, not tmpfs: disk speed will be measured too")
    res = report.Results()
    peers = None
    try:
        logs = work / "logs"
        logs.mkdir()
        barges = Barge.variants(a.barge.resolve(), logs)
        if a.baseline_bin:
            barges += Barge.variants(a.baseline_bin.resolve(), logs, baseline=True)
        bench = Bench(a, barges, work, res)
        log(f"work folder {work} ({fs}); " + ", ".join(f"{b.name}: {b.bin}" for b in barges))
        need_peers = bool({"large", "small", "web"} & set(a.only))
        peers = Peers(work, a.timeout, want_peers if need_peers else {"none"})
        log("peers: " + ", ".join(p.name for p in peers.list))
        steps = {"large": lambda: bench.large(peers), "disk": bench.disk,
                 "small": lambda: bench.small(peers), "list": bench.listing,
                 "concurrent": bench.concurrent, "idle": bench.idle,
                 "web": lambda: bench.web(peers),
                 "resume": lambda: resume_and_folders(bench)}
        for name in SCENARIOS:
            if name not in a.only:
                continue
            try:
                bench.scenario(name, steps[name])
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - go on with the other scenarios
                log(f"scenario {name} failed: {e}")
                res.notes.append(f"scenario {name}: {e}")
        # Stop the peers' daemons first, so the busyness counts their CPU as ours.
        PROCS.stop_all()
        busy.stop()
        report.judge(res, a, peers)
        text = report.text(res, a, peers, busy, work, started, memory.note)
        print(text, flush=True)
        if a.out:
            a.out.write_text(text + "\n")
        if a.json:
            report.write_json(a.json, res, a, peers, busy, memory.note)
        return 1 if any(t[1] == "FAIL" for t in res.targets) else 0
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        return 130
    finally:
        PROCS.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
