"""scale/run's body: barge nodes on a real replicated S3 cluster, on loopback (issue 15).

It starts a 3-node Garage cluster (replication 3), a private PostgreSQL in a temp folder (the
shared catalog) and three `barge serve --storage s3://...` nodes, runs the scenarios below,
prints a report (also written to target/scale/), and stops everything it started, however it
ends. It reuses bench/procs.py (process groups, CPU accounting from wait4 and /proc, load) and
bench/peers.py (starting a barge server and reading its banner); it knows nothing of how Garage
or PostgreSQL were installed (scale/run does that).

Scenarios (each can be chosen with --only):
- clients: 3 nodes x 50 clients upload at once (client i through node i % 3), then download at
  once through another node; every byte verified (client exit codes, the MD5 ids in each
  node's listing, the MD5 of every downloaded file); aggregate throughput and CPU seconds.
- race: two nodes race for one name, several rounds: exactly one 226, one 409, and every
  node serves the winner's bytes.
- killnode: `kill -9` of a barge node mid-upload: nothing partial is listed by the others; an
  orphan blob (what a node killed between storing a blob and committing its row leaves) is
  swept by a node started with a short --sweep-grace; the name is free again.
- killgarage: `kill -9` of one Garage node while clients upload and download through all
  barge nodes: every transfer succeeds, nothing is lost; the node is restarted and rejoins.
- big: upload and download of one large file (1 GiB) through barge against OpenDAL's own PUT
  and GET of the same bytes to the same cluster (examples/s3_raw.rs: barge's operator, part
  size and concurrency), interleaved, medians and ratios (target >= 0.8).
- list: LIST of 100,000 names from the PostgreSQL catalog through a node (target < 1 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from peers import PLAIN, BargeServer  # noqa: E402
from procs import (  # noqa: E402
    GiB, MiB, PROCS, Busy, TreeCpu, free_port, human, listening, make_random_file, md5_file,
    parse_size, run_all, wait_for,
)

SCENARIOS = ["clients", "race", "killnode", "killgarage", "big", "list"]
REGION = "garage"
BUCKET = "barge"
PREFIX = "share"


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Report:
    """The lines of the report and the numbers behind them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.data: dict = {}
        self.failures: list[str] = []

    def say(self, line: str) -> None:
        log(line)
        self.lines.append(line)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  {'PASS' if ok else 'FAIL'}: {what}")
        if not ok:
            self.failures.append(what)


# -- Garage ------------------------------------------------------------------------------------


class Garage:
    """A Garage cluster on loopback: one process per node, each with its own folders, ports
    and configuration file, sharing one RPC secret."""

    def __init__(self, bin_: str, work: Path, nodes: int = 3):
        self.bin = bin_
        self.work = work
        self.secret = secrets.token_hex(32)
        self.nodes: list[dict] = []
        for i in range(nodes):
            d = work / f"garage{i}"
            (d / "meta").mkdir(parents=True)
            (d / "data").mkdir()
            node = {"dir": d, "rpc": free_port(), "s3": free_port(), "proc": None,
                    "cfg": d / "garage.toml"}
            node["cfg"].write_text(
                f'metadata_dir = "{d / "meta"}"\n'
                f'data_dir = "{d / "data"}"\n'
                'db_engine = "lmdb"\n'
                'replication_factor = 3\n'
                f'rpc_bind_addr = "127.0.0.1:{node["rpc"]}"\n'
                f'rpc_public_addr = "127.0.0.1:{node["rpc"]}"\n'
                f'rpc_secret = "{self.secret}"\n'
                '[s3_api]\n'
                f's3_region = "{REGION}"\n'
                f'api_bind_addr = "127.0.0.1:{node["s3"]}"\n'
                'root_domain = ".s3.garage.localhost"\n')
            node["cfg"].chmod(0o600)
            self.nodes.append(node)
        # The key barge uses (Garage's formats: GK + 24 hex digits, 64 hex digits).
        self.key_id = "GK" + secrets.token_hex(12)
        self.key_secret = secrets.token_hex(32)

    def endpoint(self, i: int) -> str:
        return f"http://127.0.0.1:{self.nodes[i]['s3']}"

    def start(self, i: int) -> None:
        n = self.nodes[i]
        out = open(n["dir"] / "log", "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "garage=warn"))
        n["proc"] = PROCS.start([self.bin, "-c", str(n["cfg"]), "server"], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
        out.close()
        wait_for(lambda: listening(n["s3"]) or self._dead(i), 60, f"garage node {i} to listen")
        if self._dead(i):
            raise RuntimeError(f"garage node {i} exited: "
                               f"{(n['dir'] / 'log').read_text()[-800:]}")

    def _dead(self, i: int) -> bool:
        p = self.nodes[i]["proc"]
        return p is not None and p.poll() is not None

    def kill(self, i: int) -> None:
        """`kill -9`: no chance to flush or say goodbye."""
        PROCS.stop(self.nodes[i]["proc"], sig=signal.SIGKILL)

    def cli(self, *args: str, node: int = 0, check: bool = True) -> str:
        p = subprocess.run([self.bin, "-c", str(self.nodes[node]["cfg"]), *args],
                           capture_output=True, text=True, timeout=120, check=False)
        if check and p.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: exit {p.returncode}: "
                               f"{(p.stderr or p.stdout).strip()[-600:]}")
        return p.stdout

    def setup(self) -> float:
        """Starts every node, joins them, applies a layout (one zone each, replication 3),
        and makes the bucket and barge's key. Returns the seconds it took."""
        t0 = time.perf_counter()
        for i in range(len(self.nodes)):
            self.start(i)
        ids = [self.cli("node", "id", "-q", node=i).strip().splitlines()[-1]
               for i in range(len(self.nodes))]
        for full in ids[1:]:
            wait_for(lambda full=full: self.cli("node", "connect", full, check=False) is not None
                     and self._connected(full), 60, "garage nodes to connect")
        for i, full in enumerate(ids):
            self.cli("layout", "assign", "-z", f"z{i}", "-c", "1GB", full.split("@")[0])
        self.cli("layout", "apply", "--version", "1")
        wait_for(self.healthy, 120, "the Garage cluster to be healthy", step=0.5)
        self.cli("key", "import", "--yes", "-n", "barge", self.key_id, self.key_secret)
        wait_for(lambda: self._try("bucket", "create", BUCKET), 60, "the bucket")
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", self.key_id)
        return time.perf_counter() - t0

    def _connected(self, full: str) -> bool:
        node_id = full.split("@")[0]
        return node_id[:16] in self.cli("status", check=False)

    def _try(self, *args: str) -> bool:
        try:
            self.cli(*args)
            return True
        except RuntimeError as e:
            return "already exists" in str(e)

    def healthy(self) -> bool:
        """`garage health` says HEALTHY: every node up, every partition fully replicated."""
        out = self.cli("health", check=False)
        words = out.split("Cluster health:", 1)[-1].split()
        return "Cluster health:" in out and bool(words) and words[0] == "HEALTHY"

    def pids(self) -> list[int]:
        return [n["proc"].pid for n in self.nodes if n["proc"] and n["proc"].poll() is None]

    def describe(self) -> str:
        version = self.cli("--version", check=False).strip() or "garage"
        return f"{version}: 3 nodes on loopback, replication 3"


class S3s:
    """The quick stand-in for Garage (`--engine s3s`): one s3s-fs server over a folder
    (examples/s3_fs.rs). No replication: `killgarage` is skipped."""

    def __init__(self, bin_: str, work: Path):
        self.bin = bin_
        self.dir = work / "s3s"
        (self.dir / BUCKET).mkdir(parents=True)
        self.port = free_port()
        self.key_id = "barge-scale"
        self.key_secret = secrets.token_hex(32)
        self.proc = None

    def setup(self) -> float:
        t0 = time.perf_counter()
        out = open(self.dir.parent / "s3s.log", "ab")
        self.proc = PROCS.start([self.bin, str(self.dir), str(self.port), self.key_id,
                                 self.key_secret], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_for(lambda: listening(self.port), 30, "s3s-fs to listen")
        return time.perf_counter() - t0

    def endpoint(self, _i: int) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        return "s3s-fs (one folder, no replication)"

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL programs in /usr/lib/postgresql (scale/run installs "
                           "them with apt-get as root)")
    return found[-1].parent


class Postgres:
    """A private PostgreSQL cluster in a temp folder, on a spare loopback port."""

    def __init__(self, work: Path):
        self.bin = pg_bin()
        self.dir = work / "pg"
        self.dir.mkdir()
        self.root = os.geteuid() == 0
        if self.root:
            # PostgreSQL refuses to run as root.
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.dir)], check=True)
        self.data = self.dir / "data"
        self.port = free_port()
        self.run("initdb", "-D", str(self.data), "-U", "barge", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                "-c max_connections=300")
        self.run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w",
                 "-t", "60", "start")
        self.started = True
        self.psql("CREATE DATABASE barge", db="postgres")
        self.url = f"postgres://barge@127.0.0.1:{self.port}/barge"

    def run(self, program: str, *args: str) -> str:
        cmd = [str(self.bin / program), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"{program}: exit {p.returncode}: {p.stderr.strip()[-600:]}")
        return p.stdout

    def psql(self, sql: str, db: str = "barge") -> str:
        p = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "barge", "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=600, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"psql: {p.stderr.strip()[-600:]}")
        return p.stdout.strip()

    def stop(self) -> None:
        if getattr(self, "started", False):
            try:
                self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                log(f"could not stop PostgreSQL: {e}")
            self.started = False


# -- barge -------------------------------------------------------------------------------------


class Raw:
    """A raw protocol connection (plain text) to a barge node, for what the CLI cannot show:
    two uploads of one name racing, an upload cut off mid-body, a timed LIST."""

    def __init__(self, port: int, timeout: float = 120.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = self.sock.makefile("rb", buffering=1 * MiB)
        greeting = self.line()
        if not greeting.startswith("220 "):
            raise RuntimeError(f"bad greeting {greeting!r}")

    def line(self) -> str:
        return self.r.readline(65536).decode(errors="replace").rstrip("\r\n")

    def cmd(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        return self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def listing(self) -> list[tuple[str, str, int]]:
        head = self.cmd("LIST_FILES")
        if not head.startswith("210 "):
            raise RuntimeError(f"LIST_FILES: {head!r}")
        out = []
        for _ in range(int(head.split()[1])):
            ident, rest = self.line().split(";", 1)
            name, size = rest.rsplit(";", 1)
            out.append((ident, name, int(size)))
        return out

    def download(self, name: str) -> bytes:
        head = self.cmd(f"DOWNLOAD {name}")
        if not head.startswith("213 "):
            raise RuntimeError(f"DOWNLOAD {name}: {head!r}")
        size = int(head.split()[1])
        data = self.r.read(size)
        if len(data) != size:
            raise RuntimeError(f"DOWNLOAD {name}: {len(data)} of {size} bytes")
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Cluster:
    """Everything one run starts: Garage, PostgreSQL, the barge nodes."""

    def __init__(self, a, work: Path, rep: Report):
        self.a = a
        self.work = work
        self.rep = rep
        self.logs = work / "logs"
        self.logs.mkdir()
        self.garage: Garage | S3s | None = None
        self.pg: Postgres | None = None
        self.nodes: list[BargeServer | None] = []
        self.client_env = dict(os.environ, XDG_CONFIG_HOME=str(work / "client-config"),
                               BARGE_LOG="barge=warn")
        (work / "client-config").mkdir(mode=0o700)

    def start(self) -> None:
        if self.a.engine == "garage":
            self.garage = Garage(self.a.garage_bin, self.work)
        else:
            self.garage = S3s(self.a.s3_fs, self.work)
        secs = self.garage.setup()
        self.rep.say(f"S3: {self.garage.describe()}, ready in {secs:.1f} s")
        t0 = time.perf_counter()
        self.pg = Postgres(self.work)
        self.rep.say(f"PostgreSQL: private cluster ({self.pg.bin.parent.name}) ready in "
                     f"{time.perf_counter() - t0:.1f} s")
        creds = self.work / "s3-credentials"
        creds.write_text(f"[default]\naws_access_key_id = {self.garage.key_id}\n"
                         f"aws_secret_access_key = {self.garage.key_secret}\n")
        creds.chmod(0o600)
        self.creds = creds
        for i in range(3):
            self.nodes.append(self.start_node(i))
        self.rep.say(f"barge: 3 nodes (--plain) on ports "
                     f"{', '.join(str(n.port) for n in self.nodes if n)}, catalog {self.pg.url}")

    def node_args(self, i: int, sweep_grace: int = 3600, sweep_every: int = 600) -> list[str]:
        # Barge nodes 0 and 2 talk to Garage node 0, node 1 to Garage node 1: Garage node 2
        # is the one `killgarage` stops, and no barge node loses its endpoint (in production
        # a load balancer in front of the S3 nodes does this).
        assert self.garage and self.pg
        return ["--host", "127.0.0.1",
                "--storage", f"s3://{BUCKET}/{PREFIX}",
                "--s3-endpoint", self.garage.endpoint(i % 2), "--s3-region", REGION,
                "--s3-credentials", str(self.creds), "--catalog", self.pg.url,
                "--state-dir", str(self.work / f"state{i}"),
                "--max-connections", "1024", "--max-connections-per-ip", "1024",
                "--sweep-grace", str(sweep_grace), "--sweep-every", str(sweep_every)]

    def start_node(self, i: int, **kw) -> BargeServer:
        return BargeServer(Path(self.a.barge), self.work / f"unused-root{i}", self.logs, PLAIN,
                           self.node_args(i, **kw))

    def barge_cli(self, node: BargeServer, *args: str) -> list[str]:
        return [self.a.barge, "-q", "--plain", "--port", str(node.port), *args]

    def raw_cmd(self, *args: str) -> tuple[list[str], dict]:
        assert self.garage
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.garage.key_id,
                   AWS_SECRET_ACCESS_KEY=self.garage.key_secret)
        return [self.a.s3_raw, "--endpoint", self.garage.endpoint(0), "--region", REGION,
                "--bucket", BUCKET, *args], env

    def live_nodes(self) -> list[BargeServer]:
        return [n for n in self.nodes if n is not None]

    def stop(self) -> None:
        for n in self.nodes:
            if n is not None:
                try:
                    n.stop()
                except Exception as e:  # noqa: BLE001
                    log(f"stopping a barge node: {e}")
        if self.pg:
            self.pg.stop()
        PROCS.stop_all()


# -- scenarios ---------------------------------------------------------------------------------


class Cpu:
    """CPU seconds of the barge nodes and of Garage (and PostgreSQL's processes are not
    children of ours: left out) between start() and stop()."""

    def __init__(self, c: Cluster):
        self.barge = [TreeCpu(n.pid) for n in c.live_nodes()]
        assert c.garage
        self.garage = [TreeCpu(p) for p in c.garage.pids()]

    def start(self) -> "Cpu":
        for t in self.barge + self.garage:
            t.start()
        return self

    def stop(self) -> tuple[float, float]:
        return (sum(t.stop(settle=0) for t in self.barge),
                sum(t.stop(settle=0) for t in self.garage))


def scen_clients(c: Cluster, rep: Report) -> None:
    a = c.a
    n_nodes = len(c.live_nodes())
    n = a.clients * n_nodes
    size = a.client_size
    rep.say(f"== clients: {n_nodes} nodes x {a.clients} clients, {human(size)} each, "
            "upload then download through another node")
    src_dir = a.tmp / "clients-src"
    out_dir = a.tmp / "clients-out"
    src_dir.mkdir()
    out_dir.mkdir()
    sums = {}
    for i in range(n):
        p = src_dir / f"c{i:03d}.bin"
        make_random_file(p, size)
        sums[p.name] = md5_file(p)
    nodes = c.live_nodes()
    up = [c.barge_cli(nodes[i % n_nodes], "put", str(src_dir / f"c{i:03d}.bin"), "--as",
                      f"clients/c{i:03d}.bin") for i in range(n)]
    down = [c.barge_cli(nodes[(i + 1) % n_nodes], "get", f"clients/c{i:03d}.bin", "-o",
                        str(out_dir / f"c{i:03d}.bin"), "-f") for i in range(n)]
    busy = Busy(PROCS)
    results = {}
    for what, cmds in (("upload", up), ("download", down)):
        cpu = Cpu(c).start()
        dt, client_cpu, failed = run_all(cmds, a.timeout, c.client_env)
        barge_cpu, garage_cpu = cpu.stop()
        rate = n * size / dt
        results[what] = {"seconds": dt, "bytes": n * size, "rate": rate,
                         "client_cpu": client_cpu, "barge_cpu": barge_cpu,
                         "garage_cpu": garage_cpu, "failed": len(failed)}
        rep.say(f"  {what}: {n} x {human(size)} in {dt:.2f} s = {human(rate)}/s aggregate; "
                f"CPU s: clients {client_cpu:.1f}, barge nodes {barge_cpu:.1f}, "
                f"S3 engine {garage_cpu:.1f}")
        rep.check(not failed, f"all {n} {what}s exit 0" + (f" ({failed[0]}: {failed[-1]})"
                                                           if failed else ""))
    for node in nodes:
        r = Raw(node.port)
        listed = {name: ident for ident, name, _ in r.listing() if name.startswith("clients/")}
        r.close()
        ok = len(listed) == n and all(listed.get(f"clients/{k}") == v for k, v in sums.items())
        rep.check(ok, f"node :{node.port} lists all {n} files with their MD5 ids")
    bad = [k for k, v in sums.items()
           if not (out_dir / k).exists() or md5_file(out_dir / k) != v]
    rep.check(not bad, f"every downloaded byte matches ({len(bad)} files differ)")
    rep.say(f"  machine: {busy.stop().describe()}")
    rep.data["clients"] = results
    shutil.rmtree(src_dir, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)


def scen_race(c: Cluster, rep: Report) -> None:
    rep.say("== race: two nodes, one name, both bodies sent at once")
    nodes = c.live_nodes()
    rounds = 5
    wins = []
    for rnd in range(rounds):
        name = f"race/r{rnd}.bin"
        bodies = [os.urandom(3 * MiB), os.urandom(3 * MiB)]
        conns = [Raw(nodes[0].port), Raw(nodes[1].port)]
        ready = [conn.cmd(f"UPLOAD {name};{len(b)}") for conn, b in zip(conns, bodies)]
        replies: list[str] = ["", ""]

        def send(k: int) -> None:
            conns[k].send(bodies[k])
            replies[k] = conns[k].line()

        ts = [threading.Thread(target=send, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = sorted(r[:3] for r in replies)
        winner = 0 if replies[0].startswith("226") else 1
        third = Raw(nodes[2].port)
        served = third.download(name)
        third.close()
        ok = codes == ["226", "409"] and served == bodies[winner] \
            and all(r.startswith("350") for r in ready)
        wins.append(ok)
        for conn in conns:
            conn.close()
        if not ok:
            rep.say(f"  round {rnd}: {ready} / {replies}")
    rep.check(all(wins), f"{sum(wins)} of {rounds} rounds: both 350, exactly one 226 and one "
                         "409, the third node serves the winner's bytes")


def scen_killnode(c: Cluster, rep: Report) -> None:
    rep.say("== killnode: kill -9 a barge node mid-upload")
    assert c.pg
    victim = c.nodes[0]
    assert victim is not None
    body = os.urandom(48 * MiB)
    conn = Raw(victim.port)
    ready = conn.cmd(f"UPLOAD killed/big.bin;{len(body)}")
    conn.send(body[:20 * MiB])
    time.sleep(1.0)
    PROCS.stop(victim.proc, sig=signal.SIGKILL)
    c.nodes[0] = None
    conn.close()
    rep.check(ready.startswith("350"), f"the upload had started ({ready[:40]})")
    listed = []
    for node in c.live_nodes():
        r = Raw(node.port)
        listed += [name for _, name, _ in r.listing() if name.startswith("killed/")]
        r.close()
    rep.check(not listed, f"nothing partial is listed by the other nodes ({listed})")
    pending = int(c.pg.psql("SELECT COUNT(*) FROM pending"))
    rep.say(f"  the killed upload's blob is still registered as in progress ({pending} pending "
            "row): its multipart parts never became an object, so there is nothing to sweep "
            "in the bucket (the S3 engine's lifecycle rule drops the parts)")
    # What a node killed after its blob was stored but before its row was committed leaves:
    # an object under blobs/ that no row points to. Made here with OpenDAL directly.
    orphan_src = c.a.tmp / "orphan.bin"
    orphan_src.write_bytes(os.urandom(1 * MiB))
    key = "blobs/" + secrets.token_hex(16)
    cmd, env = c.raw_cmd("--prefix", PREFIX, "put", str(orphan_src), key)
    PROCS.run(cmd, 120, "putting an orphan blob", env=env)
    # A node that sweeps every second with a 3 s grace replaces the killed one.
    t0 = time.perf_counter()
    c.nodes[0] = c.start_node(0, sweep_grace=3, sweep_every=1)
    cmd, env = c.raw_cmd("--prefix", PREFIX, "get", key, str(c.a.tmp / "orphan.out"))

    def gone() -> bool:
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=60, check=False)
        return p.returncode != 0 and b"NotFound" in p.stderr
    try:
        wait_for(gone, 60, "the orphan blob to be swept", step=0.5)
        swept = True
    except RuntimeError:
        swept = False
    rep.check(swept, f"the orphan blob is swept ({time.perf_counter() - t0:.1f} s after a node "
                     "with --sweep-grace 3 --sweep-every 1 started)")
    r = Raw(c.nodes[0].port)
    ok = r.cmd(f"UPLOAD killed/big.bin;{len(body)}").startswith("350")
    if ok:
        r.send(body)
        done = r.line()
        ok = done.startswith("226 ") and done[4:36] == hashlib.md5(body).hexdigest()
    r.close()
    rep.check(ok, "the name the killed node was writing is free: uploaded again in full")
    orphan_src.unlink()
    # Back to the usual sweep (one every second would cost the measurements that follow).
    c.nodes[0].stop()
    c.nodes[0] = c.start_node(0)


def scen_killgarage(c: Cluster, rep: Report) -> None:
    rep.say("== killgarage: kill -9 one Garage node while clients go on through all barge nodes")
    if not isinstance(c.garage, Garage):
        rep.say("  skipped: the S3 engine is not Garage (no replication)")
        return
    nodes = c.live_nodes()
    src_dir = c.a.tmp / "kg-src"
    out_dir = c.a.tmp / "kg-out"
    src_dir.mkdir()
    out_dir.mkdir()
    sums = {}
    # Files stored before the kill, read back during it.
    n = 10 * len(nodes)
    size = c.a.client_size
    for i in range(2 * n):
        p = src_dir / f"k{i:03d}.bin"
        make_random_file(p, size)
        sums[p.name] = md5_file(p)
    before = [c.barge_cli(nodes[i % len(nodes)], "put", str(src_dir / f"k{i:03d}.bin"), "--as",
                          f"kg/k{i:03d}.bin") for i in range(n)]
    _, _, failed = run_all(before, c.a.timeout, c.client_env)
    rep.check(not failed, f"{n} files stored before the kill")
    # During: half upload new files, half download the old ones, through every node.
    during = [c.barge_cli(nodes[i % len(nodes)], "put", str(src_dir / f"k{n + i:03d}.bin"),
                          "--as", f"kg/k{n + i:03d}.bin") for i in range(n)]
    during += [c.barge_cli(nodes[(i + 1) % len(nodes)], "get", f"kg/k{i:03d}.bin", "-o",
                           str(out_dir / f"k{i:03d}.bin"), "-f") for i in range(n)]
    killer = threading.Timer(0.3, lambda: c.garage.kill(2))
    killer.start()
    dt, _, failed = run_all(during, c.a.timeout, c.client_env)
    killer.join()
    rep.check(not failed, f"with Garage node 2 killed 0.3 s in: {n} uploads and {n} downloads "
                          f"through all barge nodes exit 0 ({dt:.1f} s)"
              + (f": {failed[0]}: {failed[-1]}" if failed else ""))
    # After, still one node down: everything reads back.
    after = [c.barge_cli(nodes[i % len(nodes)], "get", f"kg/k{i:03d}.bin", "-o",
                         str(out_dir / f"k{i:03d}.bin"), "-f") for i in range(2 * n)]
    _, _, failed = run_all(after, c.a.timeout, c.client_env)
    bad = [k for k, v in sums.items()
           if not (out_dir / k).exists() or md5_file(out_dir / k) != v]
    rep.check(not failed and not bad,
              f"with the node still down, all {2 * n} files read back intact ({len(bad)} differ)")
    t0 = time.perf_counter()
    c.garage.start(2)
    try:
        wait_for(lambda: c.garage.healthy(), 120, "Garage node 2 to rejoin", step=1.0)
        rejoined = True
    except RuntimeError:
        rejoined = False
    rep.check(rejoined, f"Garage node 2 restarted and rejoined in {time.perf_counter() - t0:.1f} s")
    for p in out_dir.iterdir():
        p.unlink()
    _, _, failed = run_all(after, c.a.timeout, c.client_env)
    bad = [k for k, v in sums.items()
           if not (out_dir / k).exists() or md5_file(out_dir / k) != v]
    rep.check(not failed and not bad, f"after the restart, all {2 * n} files read back intact")
    shutil.rmtree(src_dir, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)


def scen_big(c: Cluster, rep: Report) -> None:
    a = c.a
    size = a.big_size
    rep.say(f"== big: {human(size)} through barge vs OpenDAL's own PUT/GET (examples/s3_raw: "
            "barge's operator, part size, part concurrency), to the same cluster, "
            f"{a.runs} runs interleaved")
    src = a.tmp / "big.bin"
    make_random_file(src, size)
    want = md5_file(src)
    out = a.tmp / "big.out"
    node = c.live_nodes()[0]
    rows: dict[str, list[tuple[float, float, float, float]]] = {
        k: [] for k in ("raw put", "barge put", "raw get", "barge get")}
    busy = Busy(PROCS)
    for run in range(a.runs):
        key = f"big{run}.bin"
        steps = [
            ("raw put", *c.raw_cmd("put", str(src), key)),
            ("barge put", c.barge_cli(node, "put", str(src), "--as", f"big/{key}"), c.client_env),
            ("raw get", *c.raw_cmd("get", key, str(out))),
            ("barge get", c.barge_cli(node, "get", f"big/{key}", "-o", str(out), "-f"),
             c.client_env),
        ]
        for what, cmd, env in steps:
            cpu = Cpu(c).start()
            s = PROCS.run(cmd, a.timeout, what, env=env)
            barge_cpu, garage_cpu = cpu.stop()
            rows[what].append((s.wall, s.client_cpu or 0.0, barge_cpu, garage_cpu))
            if what.endswith("get"):
                got = md5_file(out)
                if got != want:
                    raise RuntimeError(f"{what}: MD5 {got}, want {want}")
                out.unlink()
        log(f"  run {run + 1}/{a.runs} done")
    res = {}
    for what, samples in rows.items():
        wall = statistics.median(s[0] for s in samples)
        res[what] = {"median_s": wall, "rate": size / wall,
                     "walls": [s[0] for s in samples],
                     "client_cpu": statistics.median(s[1] for s in samples),
                     "barge_cpu": statistics.median(s[2] for s in samples),
                     "garage_cpu": statistics.median(s[3] for s in samples)}
        rep.say(f"  {what:9}: median {wall:.2f} s = {human(size / wall)}/s "
                f"(runs {', '.join(f'{s[0]:.2f}' for s in samples)}); CPU s: client "
                f"{res[what]['client_cpu']:.2f}, barge node {res[what]['barge_cpu']:.2f}, "
                f"S3 engine {res[what]['garage_cpu']:.2f}")
    for way in ("put", "get"):
        ratio = res[f"raw {way}"]["median_s"] / res[f"barge {way}"]["median_s"]
        res[f"{way} ratio"] = ratio
        rep.check(ratio >= 0.8, f"barge {way} at {ratio:.2f}x OpenDAL's raw {way.upper()} "
                                "(target >= 0.8x)")
    rep.say(f"  machine: {busy.stop().describe()}")
    rep.data["big"] = res
    for run in range(a.runs):
        cmd, env = c.raw_cmd("rm", f"big{run}.bin")
        PROCS.run(cmd, 120, "rm", env=env)
        subprocess.run(c.barge_cli(node, "rm", f"big/big{run}.bin"), env=c.client_env,
                       capture_output=True, timeout=120, check=False)
    src.unlink()


def scen_list(c: Cluster, rep: Report) -> None:
    assert c.pg
    n = c.a.list_names
    rep.say(f"== list: LIST of {n:,} names from the PostgreSQL catalog, through a node")
    t0 = time.perf_counter()
    c.pg.psql(
        "INSERT INTO files (name, canon, blob, size, md5, created, modified, uploader) "
        "SELECT name, name, 'blobs/list' || i, i, md5(name), 0, 0, 'scale' FROM ("
        "  SELECT i, 'list/folder' || lpad((i % 1000)::text, 3, '0') || '/file-' "
        f"         || lpad(i::text, 6, '0') || '.bin' AS name FROM generate_series(1, {n}) i"
        ") t")
    rep.say(f"  {n:,} rows inserted in {time.perf_counter() - t0:.1f} s")
    node = c.live_nodes()[-1]
    times = []
    counts = set()
    for _ in range(5):
        r = Raw(node.port)
        t = time.perf_counter()
        entries = r.listing()
        times.append(time.perf_counter() - t)
        counts.add(sum(1 for _, name, _ in entries if name.startswith("list/")))
        r.close()
    med = statistics.median(times)
    rep.data["list"] = {"names": n, "median_s": med, "times": times}
    rep.check(counts == {n} and med < 1.0,
              f"LIST of {n:,} names: median {med:.3f} s of 5 "
              f"({', '.join(f'{t:.3f}' for t in times)}; target < 1 s)")
    c.pg.psql("DELETE FROM files WHERE uploader = 'scale'")


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        prog="scale/run",
        description="barge on a real replicated S3 cluster (Garage, 3 nodes) with a shared "
                    "PostgreSQL catalog and three barge nodes, all on loopback (issue 15). "
                    "scale/run installs what is missing (Garage with `cargo install garage "
                    "--locked` only when no binary is found; PostgreSQL with apt-get) and "
                    "builds barge; --help installs nothing.")
    p.add_argument("--barge", default=os.environ.get("BARGE_BIN", "target/release/barge"),
                   help="the barge binary (default: target/release/barge, built by scale/run)")
    p.add_argument("--s3-raw", default=os.environ.get(
        "S3_RAW_BIN", "target/release/examples/s3_raw"),
        help="the OpenDAL reference (examples/s3_raw.rs, built by scale/run)")
    p.add_argument("--garage-bin", default=os.environ.get("GARAGE_BIN", "garage"),
                   help="the garage binary (default: $GARAGE_BIN, else `garage` on PATH)")
    p.add_argument("--engine", choices=["garage", "s3s"], default="garage",
                   help="the S3 engine: garage (3 nodes, replication 3; the real test) or s3s "
                        "(examples/s3_fs.rs, one folder: a quick try of the scenarios)")
    p.add_argument("--s3-fs", default=os.environ.get("S3_FS_BIN", "target/debug/examples/s3_fs"),
                   help="the s3s-fs server of --engine s3s (built by scale/run)")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"scenarios to run, comma-separated (default: all: {','.join(SCENARIOS)})")
    p.add_argument("--clients", type=int, default=50, help="clients per barge node (50)")
    p.add_argument("--client-size", type=parse_size, default=parse_size("4M"),
                   help="bytes each client uploads and downloads (4M)")
    p.add_argument("--big-size", type=parse_size, default=parse_size("1G"),
                   help="the large file of `big` (1G)")
    p.add_argument("--runs", type=int, default=3, help="runs of `big` (3; medians)")
    p.add_argument("--list-names", type=int, default=100_000,
                   help="names in the catalog for `list` (100000)")
    p.add_argument("--timeout", type=float, default=900, help="seconds for any one step")
    p.add_argument("--tmp", default="/var/tmp",
                   help="where Garage's data and the run's files go (/var/tmp; needs about "
                        "4 x --big-size free)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (10 clients per node, 1M each, a 64M big file, 1 run, "
                        "10,000 names): a smoke run, numbers not comparable")
    p.add_argument("--out", default="target/scale/report.txt")
    p.add_argument("--json", default="target/scale/results.json")
    if "--quick" in argv:
        p.set_defaults(clients=10, client_size=parse_size("1M"), big_size=parse_size("64M"),
                       runs=1, list_names=10_000)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    rep = Report()
    work = Path(tempfile.mkdtemp(prefix="barge-scale-", dir=a.tmp))
    os.chmod(work, 0o755)  # PostgreSQL's user must reach its folder inside
    a.tmp = work / "files"
    a.tmp.mkdir()
    c = Cluster(a, work, rep)
    stopped = {"sig": None}

    def on_signal(sig, _frame):
        stopped["sig"] = sig
        raise KeyboardInterrupt

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    load0 = os.getloadavg()
    rep.say(f"scale/run {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: load average "
            f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} before; {os.cpu_count()} CPUs")
    status = 0
    try:
        c.start()
        for name in SCENARIOS:
            if name not in only:
                continue
            try:
                globals()[f"scen_{name}"](c, rep)
            except Exception as e:  # noqa: BLE001 - one scenario failing must not end the run
                rep.check(False, f"{name}: {e}")
    except KeyboardInterrupt:
        rep.say(f"interrupted ({stopped['sig'] or 'SIGINT'})")
        status = 130
    except Exception as e:  # noqa: BLE001
        rep.check(False, f"setup: {e}")
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    rep.say(f"load average {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} after")
    rep.say(f"{len(rep.failures)} failed check(s)" if rep.failures else "every check passed")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(rep.lines) + "\n")
    Path(a.json).write_text(json.dumps({"load_before": load0, "load_after": load1,
                                        "failures": rep.failures, **rep.data}, indent=1))
    print("\n".join(rep.lines))
    return status or (1 if rep.failures else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
