"""Self-tests of the benchmark's own machinery: CPU accounting, verdicts, and `--help`.

Run with `python3 -m unittest discover -s bench` (a few seconds, no network, no barge build).
They check what the numbers rest on: that a child's CPU includes the processes it reaped, that
a daemon's per-connection child is counted once it has exited, that the verdicts compare the
right quantities, and that `bench/run --help` needs nothing installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import unittest
from argparse import Namespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from procs import PROCS, MiB, Sample, TreeCpu, tree, wait_for  # noqa: E402

HERE = Path(__file__).resolve().parent
# Burns about `s` CPU seconds in a fresh Python process.
BURN = "import time,sys\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\n"


def burn_cmd(s: float) -> list[str]:
    return [sys.executable, "-c", BURN.format(s=s)]


class CpuAccounting(unittest.TestCase):
    def test_a_childs_cpu_includes_the_grandchildren_it_reaped(self):
        # The shell does nothing itself; all the CPU is in the two children it waits for.
        b = " ".join(f"'{x}'" for x in burn_cmd(0.2))
        s = PROCS.run(["bash", "-c", f"{b} & {b}; wait"], 30, "burners")
        self.assertGreaterEqual(s.client_cpu, 0.35)
        self.assertLess(s.client_cpu, 1.5)
        self.assertIsNone(s.server_cpu)

    def test_a_daemons_per_connection_child_is_counted_once_it_exits(self):
        # A "daemon" that, like sshd, forks a worker per request and reaps it.
        fifo = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-test-{os.getpid()}.fifo"
        os.mkfifo(fifo)
        worker = " ".join(f"'{x}'" for x in burn_cmd(0.3))
        daemon = PROCS.start(["bash", "-c", f"read _ < '{fifo}'; {worker} & wait; sleep 30"])
        try:
            meter = TreeCpu(daemon.pid)
            time.sleep(0.2)
            meter.start()
            # The "request": the daemon forks its worker, which exits; stop() waits for that.
            with open(fifo, "w") as f:
                f.write("go\n")
            wait_for(lambda: len(tree(daemon.pid)) > 1, 10, "the worker")
            cpu = meter.stop(settle=10)
            self.assertGreaterEqual(cpu, 0.25)
            self.assertLess(cpu, 1.5)
        finally:
            PROCS.stop(daemon)
            fifo.unlink()

    def test_an_idle_server_costs_nothing(self):
        daemon = PROCS.start(["sleep", "30"])
        try:
            meter = TreeCpu(daemon.pid)
            meter.start()
            s = PROCS.run(burn_cmd(0.1), 30, "burn", server=meter)
            self.assertEqual(s.server_cpu, 0.0)
            self.assertGreaterEqual(s.client_cpu, 0.09)
        finally:
            PROCS.stop(daemon)

    def test_a_failing_command_raises_with_its_stderr(self):
        with self.assertRaisesRegex(RuntimeError, "exit 3: oops"):
            PROCS.run(["bash", "-c", "echo oops >&2; exit 3"], 30, "failing")

    def test_an_overrun_is_killed(self):
        t = time.monotonic()
        with self.assertRaisesRegex(RuntimeError, "timed out"):
            PROCS.run(["sleep", "30"], 0.3, "sleeper")
        self.assertLess(time.monotonic() - t, 5)


def args(**kw) -> Namespace:
    base = dict(sizes=[100 * MiB], small_files=10, list_files=10, clients=1,
                client_size=MiB, idle=1, disk_size=100 * MiB)
    base.update(kw)
    return Namespace(**base)


class Verdicts(unittest.TestCase):
    def results(self, md5_cpu: float, up: tuple[float, float], down: tuple[float, float]):
        res = report.Results()
        res.refs.update({"upload 100 MiB": "hash 100 MiB", "download 100 MiB": "hash 100 MiB"})
        res.row("hash 100 MiB", "md5sum").add(Sample(1.0, md5_cpu))
        res.row("upload 100 MiB", "barge").add(Sample(1.2, *up))
        res.row("download 100 MiB", "barge").add(Sample(1.0, *down))
        report.judge(res, args(), Namespace(list=[]))
        return {name: verdict for name, verdict, _ in res.targets}

    def test_cpu_targets_compare_each_side_with_md5sums_cpu(self):
        v = self.results(1.0, up=(1.0, 1.0), down=(1.0, 0.1))
        self.assertEqual(v["[issue 11] upload 100 MiB client+server CPU <= 2.1 x md5sum CPU"],
                         "PASS")
        self.assertEqual(v["[issue 11] upload 100 MiB server CPU <= 1.05 x md5sum CPU"], "PASS")
        self.assertEqual(v["[issue 11] download 100 MiB client CPU <= 1.1 x md5sum CPU"], "PASS")
        self.assertEqual(v["[issue 11] download 100 MiB server CPU <= 0.2 x md5sum CPU"], "PASS")
        v = self.results(1.0, up=(1.0, 1.2), down=(1.2, 0.3))
        self.assertEqual(v["[issue 11] upload 100 MiB client+server CPU <= 2.1 x md5sum CPU"],
                         "FAIL")
        self.assertEqual(v["[issue 11] upload 100 MiB server CPU <= 1.05 x md5sum CPU"], "FAIL")
        self.assertEqual(v["[issue 11] download 100 MiB client CPU <= 1.1 x md5sum CPU"], "FAIL")
        self.assertEqual(v["[issue 11] download 100 MiB server CPU <= 0.2 x md5sum CPU"], "FAIL")

    def test_disk_upload_is_judged_against_the_slower_of_md5sum_and_dd(self):
        for dd, want in ((1.0, "FAIL"), (2.0, "PASS")):
            res = report.Results()
            scen = "disk upload 100 MiB"
            res.row(scen, "md5sum").add(Sample(1.0, 1.0))
            res.row(scen, "dd conv=fsync").add(Sample(dd, 0.1))
            res.row(scen, "barge").add(Sample(2.0, 1.0, 1.0))
            report.judge(res, args(sizes=[]), Namespace(list=[]))
            got = {n: v for n, v, _ in res.targets}
            self.assertEqual(
                got["[issue 11] disk upload 100 MiB <= 1.25 x max(md5sum, dd conv=fsync)"], want)

    def test_the_table_shows_cpu_per_side_over_md5sum(self):
        res = report.Results()
        res.refs["upload 100 MiB"] = "hash 100 MiB"
        res.row("hash 100 MiB", "md5sum").add(Sample(1.0, 2.0))
        res.row("upload 100 MiB", "barge").add(Sample(1.0, 2.4, 2.6))
        res.row("upload 100 MiB", "barge (baseline)").add(Sample(1.5, 3.0, 3.0))
        t = report.table(res)
        self.assertIn("2.50 = 1.20 + 1.30", t)
        self.assertIn("3.00 = 1.50 + 1.50", t)
        self.assertIn("1.50 x", t)  # the baseline's time over the new build's


class Help(unittest.TestCase):
    def test_help_needs_no_cargo_and_no_peers(self):
        # Only the interpreter and coreutils on the PATH: nothing to build or install with.
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
        fake = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-test-bin-{os.getpid()}"
        fake.mkdir()
        try:
            # Shadow cargo and apt-get with commands that fail loudly if they are called.
            for tool in ("cargo", "apt-get"):
                (fake / tool).write_text("#!/bin/sh\necho CALLED >&2\nexit 99\n")
                (fake / tool).chmod(0o755)
            env["PATH"] = f"{fake}:{env['PATH']}"
            p = subprocess.run([str(HERE / "run"), "--help"], capture_output=True, text=True,
                               env=env, timeout=60, check=False)
        finally:
            for f in fake.iterdir():
                f.unlink()
            fake.rmdir()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--baseline-bin", p.stdout)
        self.assertNotIn("CALLED", p.stderr)


if __name__ == "__main__":
    unittest.main()
