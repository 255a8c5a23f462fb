"""Outbox and journal figures: the outbox beside SQLite WAL, durable append rate, disk bytes
per message byte, ack/pending cost.

Run from the repository root::

    .venv/bin/python bench/bench_outbox.py [--dir DIR] [--quick]

First, in the same run, the outbox beside the queue one would write with stdlib sqlite3
(WAL, synchronous=FULL, an index on (lane, id)): drain CPU per message (take 100, ack
100), reopening with 100,000 pending (open, depth/bytes/oldest by lane, first 100), and
the agent's steady state (append one message durably, take, ack) back to back, at 20/s
and at 2/s with CPU, bytes written (/proc/self/io write_bytes) and fsync/fdatasync and
write calls per message (counted by strace in a child when strace is installed).
Targets (issue 15): drain CPU and reopen within 1.5x of SQLite's; at most 1.3 disk
writes (fsync'd writes) a message while acks are durable within 1 s.

Targets (issue 6): >= 2,000 durable appends/s with group commit, the rate at 100,000
queued within 1.5x of the rate at 1,000; <= 8 bytes written to disk per message byte
(``write_bytes`` of /proc/self/io: bytes this process caused to be written, counted per
dirtied page). Use a directory on the disk under test (default: a temporary directory
beside the system's temp dir; tmpfs would count nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from liftwatch.buffer.journal import EventJournal
from liftwatch.buffer.outbox import Outbox

TOPIC = "lift/31010100000000001234/event"
BATCH = 100


def write_bytes() -> int:
    """Bytes this process has caused to be written to storage so far."""
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def message(n: int) -> bytes:
    """A ~250-byte event message like the agent sends."""
    return json.dumps({
        "v": 1, "id": f"LW1234-7-{n}", "ts": 1764126000000 + n, "tq": 1, "eid": f"LW1234-7-e{n}",
        "code": "door_reopen_repeated", "pcode": 20, "state": "raised", "sev": "fault",
        "floor": 3, "repeat": 0, "detail": {"reopens": 5, "floor": 3, "door_s": 41.2,
                                            "src": "fused"}}, separators=(",", ":")).encode()


def prefill(ob: Outbox, n: int, start: int = 0) -> None:
    for i in range(start, start + n, 1000):
        ob.append_many([("event", TOPIC, message(j)) for j in range(i, min(i + 1000, start + n))])


def measure_appends(ob: Outbox, count: int, batch: int, start: int) -> tuple[float, float, float]:
    """Durable appends/s, CPU microseconds per append and disk bytes per message byte."""
    msgs = [("event", TOPIC, message(start + i)) for i in range(count)]
    size = sum(len(t) + len(p) for _l, t, p in msgs)
    w0, c0, t0 = write_bytes(), time.process_time(), time.perf_counter()
    for i in range(0, count, batch):
        ob.append_many(msgs[i:i + batch])
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return count / dt, cpu / count * 1e6, (write_bytes() - w0) / size


def bench_backlogs(root: Path, backlogs: tuple[int, ...], quick: bool) -> list[dict]:
    """Append rates with different backlogs, measured in alternating rounds.

    fdatasync latency on a shared disk drifts with whatever else runs, so the
    outboxes take turns (median of the rounds) rather than being measured one
    after the other.
    """
    rounds = 3 if quick else 7
    n_group, n_single = (2_000, 100) if quick else (5_000, 300)
    obs, next_n = {}, {}
    for q in backlogs:
        obs[q] = Outbox(root / f"ob{q}", 256 << 20)
        prefill(obs[q], q)
        next_n[q] = q
    os.sync()
    res: dict[int, dict[str, list[float]]] = {q: {} for q in backlogs}
    for _ in range(rounds):
        for q in backlogs:
            for name, n, batch in (("group", n_group, BATCH), ("single", n_single, 1)):
                rate, cpu_us, amp = measure_appends(obs[q], n, batch, next_n[q])
                next_n[q] += n
                for it in obs[q].pending(n):  # back to the same backlog for the next turn
                    obs[q].ack(it.key)
                for k, v in ((name + "_rate", rate), (name + "_cpu_us", cpu_us),
                             (name + "_amp", amp)):
                    res[q].setdefault(k, []).append(v)
    rows = []
    for q in backlogs:
        ob = obs[q]
        # pending/ack cost at this backlog (the uplink's loop: take 100 in flight, ack them)
        t_pend, t_ack = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            items = ob.pending(100, skip=set())
            t_pend.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for it in items:
                ob.ack(it.key)
            t_ack.append((time.perf_counter() - t0) / max(1, len(items)))
        ob.close()
        t0 = time.perf_counter()
        Outbox(root / f"ob{q}", 256 << 20).close()
        t_open = time.perf_counter() - t0
        shutil.rmtree(root / f"ob{q}")
        row = {k: statistics.median(v) for k, v in res[q].items()}
        row.update(queued=q, pending100_ms=statistics.median(t_pend) * 1e3,
                   ack_us=statistics.median(t_ack) * 1e6, open_s=t_open)
        rows.append(row)
    return rows


def bench_cycle(root: Path, count: int) -> tuple[float, float]:
    """Steady state: append in batches, publish, ack, cursors saved, segments deleted."""
    d = root / "cycle"
    ob = Outbox(d, 64 << 20, cursor_flush_s=1.0)
    msgs = [("event", TOPIC, message(i)) for i in range(count)]
    size = sum(len(t) + len(p) for _l, t, p in msgs)
    w0, t0 = write_bytes(), time.perf_counter()
    for i in range(0, count, BATCH):
        ob.append_many(msgs[i:i + BATCH])
        for it in ob.pending(BATCH):
            ob.ack(it.key)
    ob.close()
    dt = time.perf_counter() - t0
    amp = (write_bytes() - w0) / size
    shutil.rmtree(d)
    return count / dt, amp


# ---------------------------------------------------------------- outbox beside SQLite WAL
#
# The same work on the outbox and on the queue one would otherwise write with the
# standard library: SQLite in WAL mode with synchronous=FULL (a commit is durable when
# it returns, as an outbox append is), one table, an index on (lane, id). Figures are
# CPU time (time.process_time: user + system of this process), so that a loaded machine
# distorts them less than wall time; the ratio of the two in the same run is the figure.

SQLITE_SCHEMA = ("CREATE TABLE q (id INTEGER PRIMARY KEY, lane INTEGER NOT NULL, "
                 "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)",
                 "CREATE INDEX q_lane ON q (lane, id)")


class SqliteQueue:
    """The reference: an outbox on stdlib sqlite3, WAL, synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if not self.db.execute("SELECT name FROM sqlite_master WHERE name='q'").fetchone():
            for stmt in SQLITE_SCHEMA:
                self.db.execute(stmt)

    def append_many(self, items: list[tuple[str, str, bytes]]) -> None:
        now = time.time()
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO q (lane, topic, payload, created) VALUES (?, ?, ?, ?)",
                            [(LANE_NO[lane], t, p, now) for lane, t, p in items])
        self.db.execute("COMMIT")

    def pending(self, limit: int) -> list[tuple]:
        return self.db.execute("SELECT id, lane, topic, payload, created FROM q "
                               "ORDER BY lane, id LIMIT ?", (limit,)).fetchall()

    def ack_many(self, ids: list[int]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM q WHERE id = ?", [(i,) for i in ids])
        self.db.execute("COMMIT")

    def stats(self) -> list[tuple]:
        """What Outbox.stats() tells: depth, bytes and oldest message by lane."""
        return self.db.execute("SELECT lane, count(*), sum(length(payload)), min(created) "
                               "FROM q GROUP BY lane").fetchall()

    def close(self) -> None:
        self.db.close()


LANE_NO = {"alarm": 0, "event": 1, "record": 2}


class OutboxQueue:
    """The outbox behind the same four calls."""

    def __init__(self, path: Path) -> None:
        self.ob = Outbox(path, 256 << 20)

    def append_many(self, items: list[tuple[str, str, bytes]]) -> None:
        self.ob.append_many(items)

    def pending(self, limit: int) -> list:
        return self.ob.pending(limit)

    def ack_many(self, keys: list) -> None:
        self.ob.ack_many(keys)

    def stats(self) -> dict:
        return self.ob.stats()

    def close(self) -> None:
        self.ob.close()


KINDS = {"outbox": OutboxQueue, "sqlite": SqliteQueue}


def _key(kind: str, row: object) -> object:
    return row.key if kind == "outbox" else row[0]  # type: ignore[attr-defined]


def _fill(q: SqliteQueue | OutboxQueue, n: int) -> None:
    for i in range(0, n, 1000):
        q.append_many([("event", TOPIC, message(j)) for j in range(i, min(i + 1000, n))])


def compare_drain_and_reopen(root: Path, backlog: int, rounds: int) -> dict[str, dict]:
    """Reopen with ``backlog`` pending (open + depth/bytes/oldest by lane + the first 100
    to send), then drain as the uplink does (take 100, publish, ack the 100)."""
    res: dict[str, dict[str, list[float]]] = {k: {"open_cpu": [], "open_wall": [],
                                                  "drain_cpu": [], "bare_cpu": []}
                                              for k in KINDS}
    for kind, cls in KINDS.items():
        path = root / f"cmp-{kind}" if kind == "outbox" else root / "cmp.db"
        q = cls(path)
        _fill(q, backlog)
        q.close()
    os.sync()
    for _ in range(rounds):  # the two take turns: drift on a shared machine hits both
        for kind, cls in KINDS.items():
            path = root / f"cmp-{kind}" if kind == "outbox" else root / "cmp.db"
            c0, t0 = time.process_time(), time.perf_counter()
            q = cls(path)
            q.stats()
            first = q.pending(100)
            res[kind]["open_cpu"].append(time.process_time() - c0)
            res[kind]["open_wall"].append(time.perf_counter() - t0)
            assert len(first) == 100
            q.close()
            c0 = time.process_time()  # without the figures by lane
            q = cls(path)
            q.pending(100)
            res[kind]["bare_cpu"].append(time.process_time() - c0)
            q.close()
    for kind, cls in KINDS.items():
        path = root / f"cmp-{kind}" if kind == "outbox" else root / "cmp.db"
        q = cls(path)
        n = 0
        c0 = time.process_time()
        while n < backlog // 2:
            rows = q.pending(100)
            q.ack_many([_key(kind, r) for r in rows])
            n += len(rows)
        res[kind]["drain_cpu"].append((time.process_time() - c0) / n)
        q.close()
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}


def cycle_workload(kind: str, directory: Path, n: int, rate: float) -> tuple[float, float]:
    """Appends one message at a time (each durable), the uplink takes and acks what is
    pending after each append: the agent's steady state. ``rate`` > 0 paces the appends
    (messages a second). Returns (CPU us per message, disk bytes written per message)."""
    q = KINDS[kind](directory / ("ob" if kind == "outbox" else "q.db"))
    w0, c0, t0 = write_bytes(), time.process_time(), time.perf_counter()
    if n == 0:
        q.close()
        return 0.0, 0.0
    for i in range(n):
        q.append_many([("event", TOPIC, message(i))])
        rows = q.pending(100)
        q.ack_many([_key(kind, r) for r in rows])
        if rate:
            time.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
    q.close()
    return (time.process_time() - c0) / n * 1e6, (write_bytes() - w0) / n


def _strace_cycle(strace: str, kind: str, root: Path, n: int,
                  rate: float) -> tuple[dict[str, int], float] | None:
    d = Path(tempfile.mkdtemp(prefix=f"sys-{kind}-", dir=root))
    out = d / "strace.txt"
    cmd = [strace, "-f", "-qq", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync,write,pwrite64",
           sys.executable, __file__, "--child-cycle", kind, str(d), str(n), str(rate)]
    try:
        child = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if child.returncode != 0:
            return None
        calls: dict[str, int] = {}
        for line in out.read_text().splitlines():
            parts = line.split()  # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "write", "pwrite64"):
                calls[parts[-1]] = int(parts[3])
        return calls, float(child.stdout.split()[1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def syscalls_per_message(kind: str, root: Path, n: int, rate: float) -> dict[str, float] | None:
    """fsync/fdatasync and write calls per message of :func:`cycle_workload`, counted by
    strace in a child process (SQLite's calls are made in C: only the kernel sees them),
    less those of a run with no message (opening, closing, the interpreter's own)."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    full = _strace_cycle(strace, kind, root, n, rate)
    base = _strace_cycle(strace, kind, root, 0, rate)
    if full is None or base is None:
        return None

    def per_msg(*names: str) -> float:
        return sum(full[0].get(k, 0) - base[0].get(k, 0) for k in names) / n

    return {"syncs": per_msg("fsync", "fdatasync"), "writes": per_msg("write", "pwrite64")}


def print_comparison(root: Path, quick: bool) -> None:
    backlog = 20_000 if quick else 100_000
    print(f"-- outbox beside SQLite WAL (synchronous=FULL), same run; CPU = process time "
          f"(user+sys); {backlog:,} pending for reopen/drain")
    r = compare_drain_and_reopen(root, backlog, 3 if quick else 5)
    o, s = r["outbox"], r["sqlite"]
    print(f"{'':32}{'outbox':>12}{'sqlite WAL':>12}{'ratio':>8}  (target <= 1.5)")
    print(f"{'drain (pending 100 + ack) CPU':32}{o['drain_cpu'] * 1e6:>9.1f} us"
          f"{s['drain_cpu'] * 1e6:>9.1f} us{o['drain_cpu'] / s['drain_cpu']:>8.2f}")
    print(f"{'reopen + stats + first 100, CPU':32}{o['open_cpu'] * 1e3:>9.1f} ms"
          f"{s['open_cpu'] * 1e3:>9.1f} ms{o['open_cpu'] / s['open_cpu']:>8.2f}")
    print(f"{'   same, wall (noisy under load)':32}{o['open_wall'] * 1e3:>9.1f} ms"
          f"{s['open_wall'] * 1e3:>9.1f} ms{o['open_wall'] / s['open_wall']:>8.2f}")
    print(f"{'reopen + first 100 only, CPU':32}{o['bare_cpu'] * 1e3:>9.1f} ms"
          f"{s['bare_cpu'] * 1e3:>9.1f} ms{o['bare_cpu'] / s['bare_cpu']:>8.2f}  (SQLite "
          "skips the figures by lane; the outbox has them from its opening)")
    runs = ((300, 0.0), (40, 20.0), (8, 2.0)) if quick else \
        ((2_000, 0.0), (200, 20.0), (30, 2.0))
    for m, rate in runs:
        label = f"steady cycle, {m} msgs " + (f"at {rate:g}/s" if rate else "back to back")
        row = {}
        for kind in KINDS:
            d = Path(tempfile.mkdtemp(prefix=f"cyc-{kind}-", dir=root))
            cpu, wb = cycle_workload(kind, d, m, rate)
            shutil.rmtree(d, ignore_errors=True)
            row[kind] = (cpu, wb, syscalls_per_message(kind, root, m, rate))
        print(f"{label}: append 1 (durable), take, ack")
        for kind, (cpu, wb, sc) in row.items():
            sys_txt = (f"{sc['syncs']:.2f} fsync/msg, {sc['writes']:.2f} write calls/msg"
                       if sc else "syscalls n/a (no strace)")
            print(f"  {kind:>10}: CPU {cpu:>6.0f} us/msg, {wb / 1024:>5.1f} KiB written/msg, "
                  f"{sys_txt}")
    print("  (the outbox: one fdatasync an append, plus one ack-log fdatasync within a second"
          " once 4 acks wait; SQLite: a WAL commit for the insert and one for the delete)")


def bench_journal(root: Path, n: int) -> dict:
    d = root / "journal"
    j = EventJournal(d, max_events=10_000)
    ev = json.loads(message(0))
    for i in range(10_000):  # fill to the bound without timing (generations rotate)
        j.add({**ev, "id": f"x-{i}"})
    w0, t0 = write_bytes(), time.perf_counter()
    for i in range(n):
        j.add({**ev, "id": f"y-{i}"})
    dt = time.perf_counter() - t0
    amp = (write_bytes() - w0) / (n * len(message(0)))
    t0 = time.perf_counter()
    got = j.query(code="door_reopen_repeated", limit=50)
    t_query = time.perf_counter() - t0
    assert len(got) == 50
    j.close()
    shutil.rmtree(d)
    return {"rate": n / dt, "amp": amp, "query_ms": t_query * 1e3}


def bench_tinydb_default(root: Path) -> tuple[float, float]:
    """Reference: TinyDB's own JSONStorage (rewrites the file per insert, no fsync) at an
    empty table and at 6,000 records: why messages do not go through it."""
    from tinydb import TinyDB

    rates = []
    for backlog in (0, 6_000):
        path = root / f"tinydb{backlog}.json"
        db = TinyDB(path)
        if backlog:
            db.insert_multiple({"topic": TOPIC, "payload": message(i).decode()}
                               for i in range(backlog))
        n = 200 if not backlog else 20
        t0 = time.perf_counter()
        for i in range(n):
            db.insert({"topic": TOPIC, "payload": message(i).decode()})
        rates.append(n / (time.perf_counter() - t0))
        db.close()
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to put the test outboxes")
    ap.add_argument("--quick", action="store_true", help="fewer messages (smoke run)")
    ap.add_argument("--child-cycle", nargs=4, metavar=("KIND", "DIR", "N", "RATE"),
                    help=argparse.SUPPRESS)  # the strace'd child of syscalls_per_message
    args = ap.parse_args()
    if args.child_cycle:
        kind, d, n, rate = args.child_cycle
        cpu, wb = cycle_workload(kind, Path(d), int(n), float(rate))
        print(cpu, wb)
        return
    root = Path(tempfile.mkdtemp(prefix="lw-bench-", dir=args.dir))
    try:
        print(f"outbox bench in {root}; message {len(message(0))} B payload + {len(TOPIC)} B "
              f"topic; group commit = append_many of {BATCH}")
        print_comparison(root, args.quick)
        rows = bench_backlogs(root, (1_000, 100_000), args.quick)
        for r in rows:
            print(f"queued {r['queued']:>7,}: group commit {r['group_rate']:>7,.0f} appends/s "
                  f"(CPU {r['group_cpu_us']:.0f} us/msg, {r['group_amp']:.2f} disk B/msg B) | "
                  f"single {r['single_rate']:>5,.0f}/s (CPU {r['single_cpu_us']:.0f} us/msg, "
                  f"{r['single_amp']:.2f} disk B/msg B)")
            print(f"{'':17}pending(100) {r['pending100_ms']:.2f} ms | ack {r['ack_us']:.1f} us"
                  f" | reopen (scan + index) {r['open_s']:.2f} s")
        ratio = rows[0]["group_rate"] / rows[1]["group_rate"]
        print(f"group-commit rate at 1,000 / at 100,000 queued: {ratio:.2f}x (target <= 1.5x); "
              f"min rate {min(r['group_rate'] for r in rows):,.0f}/s (target >= 2,000/s)")
        rate, amp = bench_cycle(root, 5_000 if args.quick else 20_000)
        print(f"append+pending+ack cycle: {rate:,.0f} msgs/s, {amp:.2f} disk B/msg B "
              "(target <= 8x)")
        jr = bench_journal(root, 200 if args.quick else 1_000)
        print(f"event journal at 10,000 events: {jr['rate']:,.0f} inserts/s, {jr['amp']:.1f} "
              f"disk B/event B, query(code, limit=50) {jr['query_ms']:.1f} ms")
        empty, full = bench_tinydb_default(root)
        print(f"reference, TinyDB default JSONStorage (no fsync): {empty:,.0f} inserts/s empty, "
              f"{full:,.0f} inserts/s at 6,000 records")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
