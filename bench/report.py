"""What a run found, and how it is shown: result rows, the verdicts on the targets, the table,
the printed report and the JSON file.

This module owns the numbers' meaning after they are taken: medians, the ratios against
references measured in the same run (wall time and CPU against `md5sum`, a peer's time against
barge's), TLS against `--plain`, and the PASS/FAIL lines of issues 4, 9 and 11: issue 9's speed
targets are for TLS and judge the `barge (TLS)` rows; issues 4 and 11 set theirs before TLS
existed and judge the `barge (plain)` rows. It starts no process and measures nothing;
`scenarios` fills a `Results`, `main` asks for the text and the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import GiB, MiB, Busy, Sample, human

RSS_LIMIT = 64 * MiB
# The rows of the build under test (`peers.modes` names them): TLS, its default, and `--plain`.
BARGE_TLS = "barge (TLS)"
BARGE_PLAIN = "barge (plain)"
# The floor of a verified download to a file, measured beside the judged (plain) rows: that
# build's download with its bytes thrown away, and the same bytes written to a new file.
FLOOR_OF = BARGE_PLAIN
FLOOR_NO_FILE = "barge (plain) get -o - (no file)"
FLOOR_WRITE = "dd into a new tmpfs file"
# The yardsticks a scenario's tools are measured against; they get no time/barge ratio.
REFERENCES = ("md5sum", "dd conv=fsync")


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Row:
    """One tool in one scenario: a value per run (wall seconds, and CPU seconds of each side)."""

    scenario: str
    tool: str
    times: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    work: float = 0.0  # bytes (or files) moved per run, for the rate
    unit: str = "MiB/s"
    peaks: list[int] = field(default_factory=list)
    note: str = ""  # about the tool, printed once per tool
    detail: str = ""  # about this measurement, printed with its scenario
    extra: dict = field(default_factory=dict)

    def add(self, s: Sample) -> None:
        self.times.append(s.wall)
        if s.client_cpu is not None:
            self.client_cpu.append(s.client_cpu)
        if s.server_cpu is not None:
            self.server_cpu.append(s.server_cpu)

    @property
    def median(self) -> float | None:
        return median(self.times)

    @property
    def c_cpu(self) -> float | None:
        return median(self.client_cpu)

    @property
    def s_cpu(self) -> float | None:
        return median(self.server_cpu)

    @property
    def cpus(self) -> list[float]:
        """Client + server CPU of each run (either side alone if the other is unknown)."""
        if self.client_cpu and self.server_cpu and len(self.client_cpu) == len(self.server_cpu):
            return [c + s for c, s in zip(self.client_cpu, self.server_cpu)]
        return self.client_cpu or self.server_cpu

    @property
    def cpu(self) -> float | None:
        """Median of client + server CPU per run ([`cpus`])."""
        return median(self.cpus)

    def rate(self) -> str:
        m = self.median
        if not m or not self.work:
            return ""
        per = self.work / m
        return f"{per / MiB:.0f} MiB/s" if self.unit == "MiB/s" else f"{per:,.0f} {self.unit}"


class Results:
    """Every row of a run, the scenario each scenario's `md5sum` reference is in, the failures
    met on the way, the machine's busyness per scenario, and the verdicts."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.refs: dict[str, str] = {}  # scenario -> the scenario holding its md5sum row
        self.notes: list[str] = []
        self.busy: dict[str, Busy] = {}
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

    def md5(self, scenario: str) -> Row | None:
        """The `md5sum` row of the same bytes as `scenario`, if one was measured."""
        return self.find(self.refs.get(scenario, scenario), "md5sum")

    def target(self, name: str, ok: bool | None, detail: str) -> None:
        self.targets.append((name, "n/a" if ok is None else ("PASS" if ok else "FAIL"), detail))


# ---------------------------------------------------------------------------------------------
# The verdicts


def _wall(res: Results, name: str, row: Row | None, ref: Row | None, limit: float,
          ref_name: str = "md5sum") -> None:
    if row and ref:
        ratio = row.median / ref.median
        res.target(name, ratio <= limit,
                   f"{ratio:.2f} x ({row.median:.2f} s vs {ref_name} {ref.median:.2f} s)")
    else:
        res.target(name, None, "not measured")


def _cpu(res: Results, name: str, values: list[float], md5: Row | None, limit: float,
         also: str = "") -> None:
    """Judges the median of `values` (CPU seconds per run) against md5sum's median CPU, and
    shows both ranges: on a shared machine the runs of one build spread by more than 10 %.
    `also` is appended to the detail."""
    ref = md5.c_cpu if md5 else None
    value = median(values)
    if value is None or not ref:
        res.target(name, None, "not measured")
        return
    ratio = value / ref
    spread = ""
    if len(values) > 1 and md5 and len(md5.client_cpu) > 1:
        spread = (f"; runs {min(values):.2f}-{max(values):.2f} vs "
                  f"{min(md5.client_cpu):.2f}-{max(md5.client_cpu):.2f}")
    res.target(name, ratio <= limit,
               f"{ratio:.2f} x ({value:.2f} CPU s vs {ref:.2f} CPU s{spread}){also}")


def receive_floor(res: Results, label: str, md5: Row | None) -> str:
    """The floor of the CPU of a verified transfer's receiving side in this run, as a note for
    its verdicts (the download's client, the upload's server: each takes the bytes from the
    socket, hashes them and writes them into a new tmpfs file): the judged build's download
    without the file (the socket and MD5) plus `dd` writing the file, against md5sum (empty if
    not measured)."""
    scen = f"download floor {label}"
    no_file, write = res.find(scen, FLOOR_NO_FILE), res.find(scen, FLOOR_WRITE)
    if not (no_file and write and no_file.c_cpu and write.c_cpu and md5 and md5.c_cpu):
        return ""
    floor = no_file.c_cpu + write.c_cpu
    return (f"; floor {floor / md5.c_cpu:.2f} x = without the file {no_file.c_cpu:.2f} + "
            f"writing the file {write.c_cpu:.2f} CPU s")


def judge(res: Results, a, peers) -> None:
    """Turns the rows into the PASS/FAIL lines of issues 4 and 11 (on the `barge (plain)` rows)
    and of issue 9 (on the `barge (TLS)` rows); a baseline is shown in the table, not judged."""
    _judge_plain(res, a, peers)
    _judge_tls(res, a)
    judge_resume(res)
    judge_web(res, a)


def judge_resume(res: Results) -> None:
    """Issue 12's speed targets, on the first barge row of the `resume` scenario: `put -r` of
    nested small files at >= 80 % of the flat rate, and a 1 GiB upload resumed at 50 % in
    <= 0.6x the time of a full one."""
    tree = [r for r in res.rows if r.scenario == "put -r 10,000 x 1 KiB nested"]
    for t in tree:
        flat = res.find("put 10,000 x 1 KiB flat", t.tool)
        if t.median and flat and flat.median:
            ratio = flat.median / t.median
            res.target(f"[issue 12] put -r nested >= 80% of flat rate ({t.tool})", ratio >= 0.8,
                       f"{ratio:.0%} ({t.median:.2f} s vs {flat.median:.2f} s flat)")
    for r in [r for r in res.rows if r.scenario == "1 GiB upload, resumed at 50%"
              and "baseline" not in r.tool]:
        full = res.find("1 GiB upload, full", r.tool)
        if r.median and full and full.median:
            ratio = r.median / full.median
            res.target(f"[issue 12] resume at 50% <= 0.6x full upload ({r.tool})", ratio <= 0.6,
                       f"{ratio:.2f}x ({r.median:.2f} s vs {full.median:.2f} s full)")


def judge_web(res: Results, a) -> None:
    """Issue 14's speed targets for the web gateway (curl as the client): a large download at
    least as fast as every other web server in the run (plain HTTP against their plain rows,
    HTTPS against their HTTPS rows), an upload at most 1.3x `md5sum`, and `--clients` parallel
    downloads under 64 MiB of server RSS; each for both of barge's rows."""
    label = human(max(a.sizes)) if a.sizes else ""
    p14 = "[issue 14] "
    md5 = res.find(f"hash {label}", "md5sum")
    down_s, up_s = f"web download {label}", f"web upload {label}"
    peers = [r for r in res.rows if r.scenario == down_s and not r.tool.startswith("barge")]
    for tool in (f"{BARGE_PLAIN} web", f"{BARGE_TLS} web"):
        # Like against like: the plain-HTTP row against the web servers' plain rows, the HTTPS
        # row against their `(TLS)` rows.
        tls = tool.startswith(BARGE_TLS)
        others = [r for r in peers if r.tool.endswith("(TLS)") == tls]
        down = res.find(down_s, tool)
        if down and down.median:
            if others:
                slower = [o.tool for o in others if o.median and o.median < down.median]
                res.target(f"{p14}{tool}: download {label} >= every web peer", not slower,
                           ", ".join(f"{o.tool} {o.median / down.median:.2f} x"
                                     for o in others if o.median) + " (peer time / barge's)")
            else:
                res.target(f"{p14}{tool}: download {label} >= every web peer", None,
                           "no web peer (bench/run --with-dufs)")
        up = res.find(up_s, tool)
        if up:
            _wall(res, f"{p14}{tool}: upload {label} <= 1.3 x md5sum", up, md5, 1.3)
        par = next((r for r in res.rows if r.tool == tool and r.peaks
                    and r.scenario.startswith(f"{a.clients} parallel web downloads")), None)
        if par:
            pk = max(par.peaks)
            res.target(f"{p14}{tool}: {a.clients} parallel web downloads: server peak RSS "
                       "< 64 MiB", pk < 64 * MiB, human(pk))


def _judge_plain(res: Results, a, peers) -> None:
    """Issues 4 and 11, set before TLS: the `barge (plain)` rows."""
    tool = BARGE_PLAIN
    p4 = "[plain] "
    label = human(max(a.sizes)) if a.sizes else ""
    md5 = res.find(f"hash {label}", "md5sum")
    up = res.find(f"upload {label}", tool)
    down = res.find(f"download {label}", tool)
    if up or down:
        _wall(res, f"{p4}upload {label} <= 1.3 x md5sum", up, md5, 1.3)
        _wall(res, f"{p4}download {label} <= 1.2 x md5sum", down, md5, 1.2)
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
        res.target(f"{p4}{what} {label} ahead of every peer", not behind if detail else None,
                   ("behind " + ", ".join(behind) + "; " if behind else "")
                   + "peer/barge: " + ", ".join(detail))
        scp = res.find(f"{what} {label}", "scp")
        if scp:
            f = scp.median / row.median
            res.target(f"{p4}{what} {label} >= 4 x faster than scp", f >= 4,
                       f"{f:.2f} x ({scp.median:.2f} s vs {row.median:.2f} s)")
    n = a.small_files
    sm_up = res.find(f"{n:,} x 1 KiB upload", tool)
    sm_down = res.find(f"{n:,} x 1 KiB download", tool)
    if sm_up:
        rate = n / sm_up.median
        res.target(f"{p4}>= 5,000 files/s (1 KiB uploads, one connection)", rate >= 5000,
                   f"{rate:,.0f} files/s")
    scen_list = f"LIST {a.list_files:,} files"
    lst = res.find(scen_list, f"{tool}: LIST (raw socket)")
    if lst:
        res.target(f"{p4}LIST of {a.list_files:,} files < 1 s", lst.median < 1.0,
                   f"{lst.median * 1000:.0f} ms warm; {human(lst.extra.get('bytes', 0))}")
    for scen in (f"{a.clients} clients x {human(a.client_size)} upload",
                 f"{a.clients} clients x {human(a.client_size)} download",
                 f"{a.idle:,} idle connections"):
        r = next((r for r in res.rows if r.scenario == scen and r.tool == tool and r.peaks),
                 None)
        if r:
            pk = max(r.peaks)
            res.target(f"{p4}peak RSS < 64 MiB: {scen}", pk < RSS_LIMIT, human(pk))
    if len(a.sizes) >= 2:
        small, big = min(a.sizes), max(a.sizes)
        for what in ("upload", "download"):
            ra = res.find(f"{what} {human(small)}", tool)
            rb = res.find(f"{what} {human(big)}", tool)
            if ra and rb and ra.peaks and rb.peaks:
                pa, pb = max(ra.peaks), max(rb.peaks)
                # Allow a little allocator noise, nothing that scales with the size.
                res.target(f"{p4}RSS flat with file size ({what})", pb <= pa * 1.15 + 4 * MiB,
                           f"{human(pa)} at {human(small)}, {human(pb)} at {human(big)}")

    # Issue 11: CPU per side against md5sum's CPU on the same bytes, which a neighbour taking
    # a core does not move the way it moves wall time.
    i11 = "[issue 11, plain] "
    if up:
        _cpu(res, f"{i11}upload {label} client+server CPU <= 2.1 x md5sum CPU", up.cpus, md5,
             2.1)
        _cpu(res, f"{i11}upload {label} server CPU <= 1.05 x md5sum CPU", up.server_cpu, md5,
             1.05, receive_floor(res, label, md5))
    if down:
        _cpu(res, f"{i11}download {label} client CPU <= 1.1 x md5sum CPU", down.client_cpu, md5,
             1.1, receive_floor(res, label, md5))
        _cpu(res, f"{i11}download {label} server CPU <= 0.2 x md5sum CPU", down.server_cpu, md5,
             0.2)
        _wall(res, f"{i11}download {label} <= 1.1 x md5sum", down, md5, 1.1)
    disk_scen = f"disk upload {human(a.disk_size)}"
    disk = res.find(disk_scen, tool)
    if disk:
        d_md5 = res.find(disk_scen, "md5sum")
        d_dd = res.find(disk_scen, "dd conv=fsync")
        ref = max((r for r in (d_md5, d_dd) if r), key=lambda r: r.median, default=None)
        _wall(res, f"{i11}disk upload {human(a.disk_size)} <= 1.25 x max(md5sum, dd conv=fsync)",
              disk, ref, 1.25, ref.tool if ref else "")
    rsync_d = [("upload", sm_up), ("download", sm_down)]
    for what, row in rsync_d:
        rs = res.find(f"{n:,} x 1 KiB {what}", "rsync daemon")
        if row and rs:
            res.target(f"{i11}{n:,} x 1 KiB {what} >= rsync daemon's files/s",
                       row.median <= rs.median,
                       f"{n / row.median:,.0f} vs {n / rs.median:,.0f} files/s")
    if lst:
        res.target(f"{i11}LIST of {a.list_files:,} files < 0.25 s warm", lst.median < 0.25,
                   f"{lst.median * 1000:.0f} ms")
        if lst.peaks:
            res.target(f"{i11}LIST of {a.list_files:,} files: server peak RSS < 32 MiB",
                       max(lst.peaks) < 32 * MiB, human(max(lst.peaks)))
    slow = next((r for r in res.rows if r.scenario == scen_list and r.peaks
                 and r.tool.startswith(f"{tool}: ") and r.tool.endswith(" slow LISTs at once")),
                None)
    if slow:
        res.target(f"{i11}LIST of {a.list_files:,} files, {slow.extra.get('readers', '?')} "
                   "slow readers at once: server peak RSS < 64 MiB",
                   max(slow.peaks) < 64 * MiB, f"{human(max(slow.peaks))}; "
                   f"{human(slow.extra.get('rss_after_close', 0))} after they closed")


def _judge_tls(res: Results, a) -> None:
    """Issue 9's speed targets, set for TLS: the `barge (TLS)` rows."""
    p9 = "[issue 9, TLS] "
    label = human(max(a.sizes)) if a.sizes else ""
    md5 = res.find(f"hash {label}", "md5sum")
    up = res.find(f"upload {label}", BARGE_TLS)
    down = res.find(f"download {label}", BARGE_TLS)
    if up or down:
        _wall(res, f"{p9}upload {label} <= 1.45 x md5sum", up, md5, 1.45)
        _wall(res, f"{p9}download {label} <= 1.15 x md5sum", down, md5, 1.15)
    for what, row in (("upload", up), ("download", down)):
        if not row:
            continue
        for peer in ("scp", "sftp"):
            name = f"{p9}{what} {label} >= 1.3 x faster than {peer}"
            pr = res.find(f"{what} {label}", peer)
            if not pr:
                res.target(name, None, "not measured")
                continue
            f = pr.median / row.median
            res.target(name, f >= 1.3, f"{f:.2f} x ({pr.median:.2f} s vs {row.median:.2f} s)")
    n = a.small_files
    for what in ("upload", "download"):
        row = res.find(f"{n:,} x 1 KiB {what}", BARGE_TLS)
        if row:
            rate = n / row.median
            res.target(f"{p9}>= 10,000 files/s (1 KiB {what}s, one connection)",
                       rate >= 10_000, f"{rate:,.0f} files/s")
    r = next((r for r in res.rows if r.scenario == f"{a.idle:,} idle connections"
              and r.tool == BARGE_TLS and r.peaks), None)
    if r:
        pk = max(r.peaks)
        # Connections that never got their greeting cost the server nothing: they do not count.
        lost = r.extra.get("refused", 0)
        res.target(f"{p9}{a.idle:,} idle TLS connections: server peak RSS < 64 MiB",
                   pk < RSS_LIMIT and not lost,
                   human(pk) + (f"; but {lost} of {a.idle:,} were refused or failed" if lost
                                else f"; all {a.idle:,} open, handshake done, greeting read"))


def tls_vs_plain(res: Results) -> list[str]:
    """One line per scenario measured both ways: what TLS costs over `--plain`, in wall time
    and in CPU of each side (medians of the same run)."""
    out = []
    for t in res.rows:
        if t.tool != BARGE_TLS or not t.times:
            continue
        p = res.find(t.scenario, BARGE_PLAIN)
        if not p:
            continue
        line = f"{t.scenario}: TLS {t.median / p.median:.2f} x plain's time"
        if t.c_cpu is not None and p.c_cpu:
            line += f", client CPU {t.c_cpu / p.c_cpu:.2f} x"
        if t.s_cpu is not None and p.s_cpu:
            line += f", server CPU {t.s_cpu / p.s_cpu:.2f} x"
        if t.peaks and p.peaks:
            line += f", server peak RSS {human(max(t.peaks))} vs {human(max(p.peaks))}"
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# Printing


def _secs(x: float | None) -> str:
    return "" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.2f}")


def _cpu_cell(r: Row, md5: Row | None) -> str:
    """`c+s = c + s` as multiples of md5sum's CPU on the same bytes."""
    ref = md5.c_cpu if md5 else None
    if not ref or r.cpu is None:
        return ""
    if r.c_cpu is not None and r.s_cpu is not None:
        return f"{r.cpu / ref:.2f} = {r.c_cpu / ref:.2f} + {r.s_cpu / ref:.2f}"
    return f"{r.cpu / ref:.2f}"


def table(res: Results) -> str:
    head = ["scenario", "tool", "median", "min-max", "rate", "vs md5sum", "time/barge",
            "client CPU s", "server CPU s", "CPU/md5sum c+s = c + s", "server peak RSS"]
    lines = []
    # time/barge is against barge's default, TLS; against plain where TLS was not measured.
    barge_by_scen = {r.scenario: r for r in res.rows if r.tool == BARGE_PLAIN and r.times}
    barge_by_scen.update({r.scenario: r for r in res.rows if r.tool == BARGE_TLS and r.times})
    for r in res.rows:
        if not r.times:
            continue
        m = r.median
        md5 = res.md5(r.scenario)
        b = barge_by_scen.get(r.scenario)
        lines.append([
            r.scenario, r.tool,
            f"{m:.3f} s" if m < 10 else f"{m:.2f} s",
            f"{min(r.times):.2f}-{max(r.times):.2f}" if len(r.times) > 1 else "",
            r.rate() if r.unit != "B" else "",
            f"{m / md5.median:.2f} x" if md5 and md5.median else "",
            f"{m / b.median:.2f} x" if b and r is not b and r.tool not in REFERENCES else "",
            _secs(r.c_cpu), _secs(r.s_cpu), _cpu_cell(r, md5),
            human(max(r.peaks)) if r.peaks else "",
        ])
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(out)


def text(res: Results, a, peers, busy: Busy, work: Path, started: float,
         memory: str = "") -> str:
    """The printed report: header (machine and how busy it was), table, notes, targets."""
    out = []
    base = f"; baseline: {a.baseline_bin}" if a.baseline_bin else ""
    out.append(f"barge benchmark: {a.runs} runs per scenario, medians; client: the barge CLI{base}")
    out.append(f"machine: {os.cpu_count()} cores, {platform.machine()}, "
               f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB)} GiB, "
               f"kernel {platform.release()}; files and shared folders on tmpfs ({work}), "
               f"except the disk scenario ({a.disk_tmp}); loopback only")
    out.append(f"busy: {busy.describe()}")
    if memory:
        out.append(f"memory: {memory}")
    out.append("rate: bytes or files per second of wall time; vs md5sum: time / md5sum's time on "
               "the same bytes; time/barge: a tool's time / barge (TLS)'s time (above 1: barge is "
               "faster; barge (plain)'s where TLS was not measured); CPU s: user+sys seconds of "
               "the client process(es) and of the server process(es); CPU/md5sum: those over "
               "md5sum's CPU on the same bytes")
    out.append("")
    out.append(table(res))
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
    for name, b in res.busy.items():
        notes.append(f"- while {name} ran: {b.describe()}")
    if notes:
        out.append("notes:")
        out.extend(notes)
    if peers and peers.skipped:
        out.append("peers skipped: " + "; ".join(f"{k}: {v}" for k, v in peers.skipped.items()))
    cost = tls_vs_plain(res)
    if cost:
        out.append("TLS against --plain (medians, same run):")
        out.extend(f"- {c}" for c in cost)
    if res.notes:
        out.append("failures:")
        out.extend(f"- {n}" for n in res.notes)
    out.append("")
    out.append("targets: [issue 9, TLS] judge the barge (TLS) rows; [plain] (issue 4) and "
               "[issue 11, plain], set before TLS, the barge (plain) rows")
    w = max((len(t[0]) for t in res.targets), default=10)
    for name, verdict, detail in res.targets:
        out.append(f"  {verdict:4}  {name.ljust(w)}  {detail}")
    out.append("")
    out.append(f"total time {time.perf_counter() - started:.0f} s")
    return "\n".join(out)


def write_json(path: Path, res: Results, a, peers, busy: Busy, memory: str = "") -> None:
    rows = []
    for r in res.rows:
        d = dict(r.__dict__)
        d.update(median=r.median, client_cpu_median=r.c_cpu, server_cpu_median=r.s_cpu,
                 cpu_median=r.cpu)
        rows.append(d)
    path.write_text(json.dumps({
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": busy.as_dict(), "memory": memory,
        "busy_per_scenario": {k: b.as_dict() for k, b in res.busy.items()},
        "rows": rows, "refs": res.refs,
        "targets": res.targets, "notes": res.notes,
        "skipped": peers.skipped if peers else {},
    }, indent=1, default=str))
