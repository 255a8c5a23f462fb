"""The event journal: the last N events, cheap inserts, queries, export, damaged files."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from liftwatch.buffer.journal import EventJournal, JournalError

pytestmark = pytest.mark.timeout(60)


def ev(n: int, code: str = "door_reopen_repeated", ts: int | None = None) -> dict:
    e = {"t": float(n), "type": "event", "id": f"LW-1-{n}", "code": code, "state": "raised",
         "sev": "fault", "detail": {"n": n}}
    if ts is not None:
        e["ts"] = ts
    return e


def test_keeps_the_last_n_events_across_generations_and_restarts(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, max_events=100, generation_size=10)
    for i in range(257):
        j.add(ev(i, ts=1000 + i))
    kept = j.query()
    assert [e["id"] for e in kept] == [f"LW-1-{i}" for i in range(157, 257)]
    # files stay bounded: inserts only ever rewrite the newest small generation
    gens = sorted(tmp_path.glob("gen-*.json"))
    assert len(gens) <= 100 // 10 + 1
    assert max(len(json.loads(g.read_bytes())["events"]) for g in gens) == 10
    j.close()
    j2 = EventJournal(tmp_path, max_events=100, generation_size=10)
    assert j2.query() == kept
    j2.add(ev(999))
    assert j2.query()[-1]["id"] == "LW-1-999" and len(j2) == 100


def test_query_by_code_since_and_limit(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, max_events=100)
    for i in range(30):
        j.add(ev(i, code="entrapment_level" if i % 3 == 0 else "door_fault", ts=10_000 + i))
    assert [e["id"] for e in j.query(code="entrapment_level")] == \
        [f"LW-1-{i}" for i in range(0, 30, 3)]
    assert [e["id"] for e in j.query(since=10_025)] == [f"LW-1-{i}" for i in range(25, 30)]
    assert [e["id"] for e in j.query(code="door_fault", since=10_020, limit=3)] == \
        ["LW-1-26", "LW-1-28", "LW-1-29"]  # the newest three
    assert j.query(limit=0) == [] and len(j.query(limit=1000)) == 30
    assert j.query(code="nope") == []


def test_ts_is_stamped_when_missing_and_records_are_copies(tmp_path: Path) -> None:
    j = EventJournal(tmp_path)
    rec = ev(1)
    j.add(rec)
    rec["detail"]["n"] = 99  # the caller changing its dict afterwards changes nothing
    got = j.query()[0]
    assert got["detail"]["n"] == 1 and isinstance(got["ts"], int) and got["ts"] > 1.7e12
    got["code"] = "x"
    assert j.query()[0]["code"] == "door_reopen_repeated"


def test_export_jsonl(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, max_events=100)
    for i in range(5):
        j.add(ev(i, ts=i))
    buf = io.StringIO()
    assert j.export_jsonl(buf) == 5
    lines = buf.getvalue().splitlines()
    assert [json.loads(ln) for ln in lines] == j.query()
    assert all(" " not in ln for ln in lines)


@pytest.mark.parametrize("bad", [[1, 2], "event", None, {"code": 5}, {"ts": "yesterday"},
                                 {"x": float("nan")}, {"x": object()}, {"x": "y" * 70_000},
                                 {"ts": True}])
def test_bad_events_are_refused_and_change_nothing(tmp_path: Path, bad) -> None:
    j = EventJournal(tmp_path)
    j.add(ev(0, ts=5))
    with pytest.raises(JournalError):
        j.add(bad)
    assert [e["id"] for e in j.query()] == ["LW-1-0"]


def test_bad_arguments(tmp_path: Path) -> None:
    for bad in (0, -1, "10", True):
        with pytest.raises(JournalError, match="max_events"):
            EventJournal(tmp_path / "x", max_events=bad)
    j = EventJournal(tmp_path)
    for kw in ({"code": 3}, {"since": "x"}, {"limit": -1}, {"limit": 1.5}):
        with pytest.raises(JournalError):
            j.query(**kw)
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.add(ev(0))


def test_damaged_generation_is_quarantined_and_the_rest_still_read(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, max_events=100, generation_size=10)
    for i in range(35):
        j.add(ev(i, ts=i))
    j.close()
    gens = sorted(tmp_path.glob("gen-*.json"))
    gens[1].write_bytes(gens[1].read_bytes()[:57])  # torn by something else than us
    gens[-1].write_bytes(b"\x00\x00garbage")  # the active one
    j = EventJournal(tmp_path, max_events=100, generation_size=10)
    ids = [e["id"] for e in j.query()]
    assert ids == [f"LW-1-{i}" for i in [*range(0, 10), *range(20, 30)]]
    assert len(j.quarantined) == 2
    assert len(list((tmp_path / "quarantine").iterdir())) == 2
    j.add(ev(100, ts=100))
    assert j.query()[-1]["id"] == "LW-1-100"


def test_events_whose_add_returned_survive_sigkill(tmp_path: Path) -> None:
    code = ("import os, sys\n"
            "from liftwatch.buffer.journal import EventJournal\n"
            "j = EventJournal(sys.argv[1], generation_size=10)\n"
            "os.write(1, b'ready\\n')\n"
            "n = 0\n"
            "while True:\n"
            "    j.add({'id': '%s-%d' % (sys.argv[2], n), 'code': 'door_fault', 'ts': n})\n"
            "    os.write(1, b'%d\\n' % n)\n"
            "    n += 1\n")
    rnd = random.Random(5)
    returned: list[str] = []
    for run in range(5):
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"r{run}"],
                                stdout=subprocess.PIPE)
        out = b""
        while b"ready\n" not in out:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk
            out += chunk
        time.sleep(rnd.uniform(0.02, 0.2))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        lines = (out + rest).decode().split("\n")[:-1]
        returned += [f"r{run}-{ln}" for ln in lines if ln != "ready"]
        ids = [e["id"] for e in EventJournal(tmp_path, generation_size=10).query()]
        assert [i for i in ids if i in set(returned)] == returned  # all there, in order
    assert len(returned) > 20
