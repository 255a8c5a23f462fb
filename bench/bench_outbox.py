"""Outbox and journal figures: durable append rate, disk bytes per message byte, ack/pending cost.

Run from the repository root::

    .venv/bin/python bench/bench_outbox.py [--dir DIR] [--quick]

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
import statistics
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
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lw-bench-", dir=args.dir))
    try:
        print(f"outbox bench in {root}; message {len(message(0))} B payload + {len(TOPIC)} B "
              f"topic; group commit = append_many of {BATCH}")
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
