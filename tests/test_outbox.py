"""The durable outbox: priorities, order, acks, reopening, the bound, bad input, disk errors.

Everything runs on real files in a temporary directory; disk-full is fault injection
on the real write path (os.pwrite / os.fdatasync raising ENOSPC).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from liftwatch.buffer import outbox as outbox_mod
from liftwatch.buffer.outbox import LANES, Key, Outbox, OutboxError, OutboxWriteError
from liftwatch.buffer.segments import Segment, scan

pytestmark = pytest.mark.timeout(60)

EV, TRIP, STATS, HEALTH = "lift/L1/event", "lift/L1/trip", "lift/L1/stats", "lift/L1/health"


def body(n: int, size: int = 0) -> bytes:
    return json.dumps({"id": f"T-1-{n:04d}", "pad": "x" * size}, separators=(",", ":")).encode()


def fixed(topic: str, n: int) -> tuple[str, bytes]:
    """A (topic, payload) whose framed record size is the same for every topic."""
    return topic, body(n, 250 - len(topic) - len(body(n)))


FIXED_SIZE = len(outbox_mod.encode(0, 0.0, EV.encode(), fixed(EV, 0)[1]))


def payloads(items) -> list[bytes]:
    return [i.payload for i in items]


def drain(ob: Outbox) -> list:
    return ob.pending(1_000_000)


def test_lanes_drain_in_priority_order_and_fifo_within_a_lane(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        ob.append("record", TRIP, b"trip0")
        ob.append("event", EV, b"ev0")
        ob.append("record", STATS, b"stats0")
        ob.append("alarm", EV, b"alarm0")
        ob.append("record", HEALTH, b"health0")
        ob.append_many([("event", EV, b"ev1"), ("alarm", EV, b"alarm1"),
                        ("record", STATS, b"stats1")])
        items = drain(ob)
        assert payloads(items) == [b"alarm0", b"alarm1", b"ev0", b"ev1",
                                   b"trip0", b"stats0", b"health0", b"stats1"]
        assert [i.lane for i in items] == ["alarm"] * 2 + ["event"] * 2 + ["record"] * 4
        assert items[4].topic == TRIP and items[5].topic == STATS
        assert all(isinstance(i.created, float) and i.created > 1e9 for i in items)
        assert payloads(ob.pending(3)) == [b"alarm0", b"alarm1", b"ev0"]
        assert ob.pending(0) == []


def test_ack_releases_only_that_message_and_skip_leaves_out_in_flight(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        keys = ob.append_many([("event", EV, body(i)) for i in range(5)])
        assert len(set(keys)) == 5 and all(k.lane == "event" for k in keys)
        assert ob.ack(keys[2]) is True
        assert ob.ack(keys[2]) is False  # a second PUBACK for the same message
        assert ob.ack(Key("event", 999)) is False
        assert ob.ack(Key("alarm", keys[0].seq)) is False  # same number, other lane
        assert [i.key for i in drain(ob)] == [keys[0], keys[1], keys[3], keys[4]]
        assert [i.key for i in ob.pending(2, skip={keys[0], keys[3]})] == [keys[1], keys[4]]
        ob.ack(keys[0])
        ob.ack(keys[1])
        assert [i.key for i in drain(ob)] == [keys[3], keys[4]]
        assert ob.stats()["lanes"]["event"]["depth"] == 2


def test_reopen_after_close_resumes_exactly(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20, segment_bytes=4096) as ob:
        keys = ob.append_many([(LANES[i % 3], (STATS if i % 6 == 2 else EV), body(i, 50))
                               for i in range(300)])
        for k in keys[::3]:  # out-of-order acks across segments
            ob.ack(k)
        before = [(i.key, i.topic, i.payload, i.created) for i in drain(ob)]
        stats_before = ob.stats()
    with Outbox(tmp_path, 1 << 20, segment_bytes=4096) as ob:
        assert [(i.key, i.topic, i.payload, i.created) for i in drain(ob)] == before
        st = ob.stats()
        assert st["lanes"] == {k: {**v, "oldest_age_s": st["lanes"][k]["oldest_age_s"]}
                               for k, v in stats_before["lanes"].items()}
        new = ob.append("event", EV, b"after")
        assert new.seq > max(k.seq for k in keys if k.lane == "event")
        assert st["quarantined"] == [] and st["trimmed_bytes"] == 0


def test_released_segments_are_deleted_and_disk_use_follows_the_backlog(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20, segment_bytes=2048) as ob:
        keys = ob.append_many([("record", TRIP, body(i, 100)) for i in range(200)])
        n_files = len(list((tmp_path / "record").glob("*.seg")))
        assert n_files > 10
        for k in keys[:190]:
            ob.ack(k)
        # fully released segments go at once (cursors saved first), the rest stays
        left = list((tmp_path / "record").glob("*.seg"))
        assert 1 <= len(left) <= 3
        assert [i.key for i in drain(ob)] == keys[190:]
    with Outbox(tmp_path, 1 << 20, segment_bytes=2048) as ob:
        assert [i.key for i in drain(ob)] == keys[190:]


def _log_records(directory: Path) -> list[dict]:
    return outbox_mod.read_ack_log((directory / "acks.log").read_bytes())[0]


def _wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_acks_are_grouped_into_one_ack_log_append_and_snapshotted_on_flush(
        tmp_path: Path) -> None:
    ob = Outbox(tmp_path, 1 << 20, cursor_flush_s=1.0, ack_batch=1)
    keys = ob.append_many([("event", EV, body(i)) for i in range(5)])
    ob.ack_many([keys[0], keys[1]])
    ob.ack(keys[2])
    assert _log_records(tmp_path) == []  # not one write per ack: the flusher groups them
    assert _wait_for(lambda: _log_records(tmp_path))
    recs = _log_records(tmp_path)
    assert len(recs) == 1 and recs[0]["queues"]["event"]["head"] == keys[3].seq
    assert not (tmp_path / "cursors.json").exists()
    ob.flush()  # the snapshot: cursors.json written, the log emptied
    doc = json.loads((tmp_path / "cursors.json").read_bytes())
    assert doc["_default"]["1"]["queues"]["event"]["head"] == keys[3].seq
    assert _log_records(tmp_path) == []
    ob.ack(keys[4])
    ob.close()
    with Outbox(tmp_path, 1 << 20) as ob2:
        assert [i.key for i in drain(ob2)] == [keys[3]] and ob2.stats()["lost_records"] == 0


def test_slow_traffic_shares_each_ack_write_among_four_messages(tmp_path: Path) -> None:
    """One message at a time, each acked long before the next: the acks are written once
    four wait, so a message costs its append and a quarter of an ack write, and what a
    SIGKILL would re-send (the outbox's files as they are) is at most 3 acked messages."""
    live, dead = tmp_path / "live", tmp_path / "killed"
    ob = Outbox(live, 1 << 20, cursor_flush_s=0.02)
    keys = []
    for i in range(10):
        (key,) = ob.append_many([("event", EV, body(i))])
        keys.append(key)
        ob.ack(key)
        time.sleep(0.06)  # three times the flush delay: a write would have happened
    assert _wait_for(lambda: len(_log_records(live)) == 2)
    time.sleep(0.1)
    assert len(_log_records(live)) == 2  # after the 4th and the 8th ack, not one per ack
    shutil.copytree(live, dead)
    ob.close()
    with Outbox(dead, 1 << 20) as ob2:
        assert [i.key for i in drain(ob2)] == keys[8:]  # the 2 acks not yet written
        assert ob2.stats()["lost_records"] == 0


def test_a_torn_ack_log_record_is_ignored_and_cut(tmp_path: Path) -> None:
    """A crash during the flusher's write: the state before it is used (those acks are
    re-sent), the partial record is cut off and the log goes on. The files of a running
    outbox, copied as they are, are what a SIGKILL leaves."""
    live, dead = tmp_path / "live", tmp_path / "killed"
    ob = Outbox(live, 1 << 20, cursor_flush_s=0.05, ack_batch=1)
    keys = ob.append_many([("event", EV, body(i)) for i in range(4)])
    ob.ack(keys[0])
    assert _wait_for(lambda: len(_log_records(live)) == 1)
    good = (live / "acks.log").stat().st_size
    ob.ack(keys[1])
    assert _wait_for(lambda: len(_log_records(live)) == 2)
    shutil.copytree(live, dead)
    ob.close()
    size = (dead / "acks.log").stat().st_size
    os.truncate(dead / "acks.log", good + (size - good) // 2)
    with Outbox(dead, 1 << 20) as ob2:
        assert [i.key for i in drain(ob2)] == keys[1:]
        assert (dead / "acks.log").stat().st_size == good
        assert ob2.stats()["lost_records"] == 0
        ob2.ack(keys[1])
    with Outbox(dead, 1 << 20) as ob3:
        assert [i.key for i in drain(ob3)] == keys[2:]


def test_full_outbox_drops_trips_then_stats_then_events_never_alarms(tmp_path: Path) -> None:
    with Outbox(tmp_path, 20 * FIXED_SIZE + 10) as ob:
        for i in range(4):
            ob.append("record", *fixed(TRIP, i))
            ob.append("record", *fixed(STATS, 100 + i))
            ob.append("event", *fixed(EV, 200 + i))
        ob.append_many([("alarm", *fixed(EV, 300 + i)) for i in range(8)])
        assert ob.stats()["dropped"] == {"alarm": 0, "event": 0, "record": 0}
        # 20 fit; each further alarm drops: 4 trips, then 4 stats, then 4 events
        ids = []
        for i in range(14):
            ob.append("alarm", *fixed(EV, 400 + i))
            st = ob.stats()
            ids.append((st["dropped_kind"]["record"], st["dropped_kind"]["stats"],
                        st["dropped"]["event"]))
        assert ids[:12] == [(1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0),
                            (4, 1, 0), (4, 2, 0), (4, 3, 0), (4, 4, 0),
                            (4, 4, 1), (4, 4, 2), (4, 4, 3), (4, 4, 4)]
        st = ob.stats()
        assert st["dropped"] == {"alarm": 0, "event": 4, "record": 8}
        # full of alarms: two more alarms are still stored, over the bound
        assert st["lanes"]["alarm"]["depth"] == 22
        assert st["over_bound_bytes"] > 0
        assert [json.loads(i.payload)["id"] for i in drain(ob)] == \
            [f"T-1-{n:04d}" for n in [*range(300, 308), *range(400, 414)]]
    with Outbox(tmp_path, 20 * FIXED_SIZE + 10) as ob:  # the drop counts survive a restart
        assert ob.stats()["dropped"] == {"alarm": 0, "event": 4, "record": 8}


def test_oldest_goes_first_within_a_kind_and_a_new_trip_is_its_own_victim(tmp_path: Path) -> None:
    with Outbox(tmp_path, 5 * FIXED_SIZE) as ob:
        ob.append_many([("record", *fixed(TRIP, i)) for i in range(7)])
        assert [json.loads(i.payload)["id"] for i in drain(ob)] == \
            [f"T-1-{i:04d}" for i in range(2, 7)]
        ob.append_many([("event", *fixed(EV, 10 + i)) for i in range(5)])
        assert ob.stats()["lanes"]["record"]["depth"] == 0
        k = ob.append("record", *fixed(HEALTH, 20))  # only events queued: it goes itself
        assert k not in {i.key for i in drain(ob)}
        assert ob.ack(k) is False
        assert ob.stats()["dropped"] == {"alarm": 0, "event": 0, "record": 8}
        assert ob.stats()["lanes"]["event"]["depth"] == 5


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_on_fsync_is_reported_not_fatal_and_nothing_half_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ob = Outbox(tmp_path, 1 << 20)
    k0 = ob.append("event", EV, b"before")
    monkeypatch.setattr(os, "fdatasync", _enospc)
    with pytest.raises(OutboxWriteError) as err:
        ob.append("alarm", EV, b"lost")
    assert err.value.errno == errno.ENOSPC
    assert "not stored" in str(err.value)
    with pytest.raises(OutboxWriteError):
        ob.append_many([("event", EV, b"x"), ("record", TRIP, b"y")])
    st = ob.stats()
    assert st["write_errors"] == 2 and "ENOSPC" in st["last_error"]
    assert payloads(drain(ob)) == [b"before"]
    monkeypatch.undo()
    k1 = ob.append("event", EV, b"after")
    assert payloads(drain(ob)) == [b"before", b"after"]
    ob.close()
    with Outbox(tmp_path, 1 << 20) as ob2:
        assert [i.key for i in drain(ob2)] == [k0, k1]
        assert ob2.stats()["trimmed_bytes"] == 0  # the failed bytes were cut off at once


def test_disk_full_mid_write_cuts_the_partial_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ob = Outbox(tmp_path, 1 << 20)
    ob.append("event", EV, b"first")
    real_pwrite = os.pwrite

    def half_then_full(fd, data, off):
        if len(data) > 10:
            return real_pwrite(fd, bytes(data[:10]), off)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(OutboxWriteError):
        ob.append("event", EV, b"second" * 10)
    monkeypatch.undo()
    seg = next((tmp_path / "event").glob("*.seg"))
    size_after_error = seg.stat().st_size
    ob.append("event", EV, b"third")
    assert payloads(drain(ob)) == [b"first", b"third"]
    ob.close()
    assert size_after_error == len(outbox_mod.encode(0, 0.0, EV.encode(), b"first"))
    with Outbox(tmp_path, 1 << 20) as ob2:
        assert payloads(drain(ob2)) == [b"first", b"third"]


def test_disk_full_when_saving_cursors_keeps_acks_in_memory_and_data_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ob = Outbox(tmp_path, 1 << 20, segment_bytes=1024)
    keys = ob.append_many([("event", EV, body(i, 100)) for i in range(40)])
    monkeypatch.setattr(os, "fsync", _enospc)
    monkeypatch.setattr(os, "fdatasync", _enospc)  # the ack log's
    for k in keys[:30]:
        assert ob.ack(k) is True  # never raises into paho's thread
    st = ob.stats()
    assert st["write_errors"] >= 1 and "cursor" in st["last_error"]
    assert st["cursor_save_failing"]
    assert st["write_errors"] <= 2  # tried again by the flusher, not on every ack
    assert [i.key for i in drain(ob)] == keys[30:]
    monkeypatch.undo()
    ob.flush()  # space again: the state is saved and the released segments go
    assert not ob.stats()["cursor_save_failing"]
    assert len(list((tmp_path / "event").glob("*.seg"))) <= 3
    ob.close()
    with Outbox(tmp_path, 1 << 20, segment_bytes=1024) as ob2:
        assert [i.key for i in drain(ob2)] == keys[30:]


@pytest.mark.parametrize("args", [
    ("nolane", EV, b"x"), ("event", "", b"x"), ("event", EV, "text"), ("event", EV, None),
    ("event", 5, b"x"), ("event", "a\x00b", b"x"), (None, EV, b"x"),
    ("event", "t" * 70000, b"x"),
])
def test_bad_append_arguments_are_refused_and_store_nothing(tmp_path: Path, args) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        with pytest.raises(OutboxError):
            ob.append(*args)
        with pytest.raises(OutboxError):
            ob.append_many([("event", EV, b"ok"), args])  # all or nothing
        assert drain(ob) == []


def test_other_bad_calls_give_clear_errors(tmp_path: Path) -> None:
    for bad in (0, -5, 1.5, "10", True):
        with pytest.raises(OutboxError, match="max_bytes"):
            Outbox(tmp_path / "x", bad)
    ob = Outbox(tmp_path, 1 << 20)
    with pytest.raises(OutboxError, match="in use"):
        Outbox(tmp_path, 1 << 20)
    for bad in (-1, "3", None):
        with pytest.raises(OutboxError, match="limit"):
            ob.pending(bad)
    for bad in ("event", ("nolane", 1), (1, 2, 3), ("event", "1")):
        with pytest.raises(OutboxError, match="key"):
            ob.ack(bad)
    with pytest.raises(OutboxError, match="item"):
        ob.append_many([("event", EV)])
    assert ob.append_many([]) == []
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.append("event", EV, b"x")
    assert ob.ack(Key("event", 0)) is False  # late PUBACK after shutdown
    Outbox(tmp_path, 1 << 20).close()  # the directory lock went with close()


def test_corrupt_cursor_file_is_quarantined_and_everything_redelivered(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        keys = ob.append_many([("event", EV, body(i)) for i in range(3)])
        ob.ack(keys[0])
    (tmp_path / "cursors.json").write_bytes(b'{"_default": {"1": {"queues": {"ev')
    with Outbox(tmp_path, 1 << 20) as ob:
        assert [i.key for i in drain(ob)] == keys  # a duplicate, never a loss
        st = ob.stats()
        assert len(st["quarantined"]) == 1 and "cursors.json" in st["quarantined"][0]
    (tmp_path / "cursors.json").write_bytes(
        b'{"_default": {"1": {"queues": {"event": {"head": "zz"}}}}}')
    with Outbox(tmp_path, 1 << 20) as ob:
        assert [i.key for i in drain(ob)] == keys
        assert len(ob.stats()["quarantined"]) == 2


def test_foreign_file_in_a_queue_directory_is_quarantined(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        ob.append("event", EV, b"kept")
    (tmp_path / "event" / "notes.txt").write_text("hello")
    with Outbox(tmp_path, 1 << 20) as ob:
        assert payloads(drain(ob)) == [b"kept"]
        assert any("notes.txt" in n for n in ob.stats()["quarantined"])
        assert not (tmp_path / "event" / "notes.txt").exists()


def test_stats_report_depth_bytes_and_oldest_age(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_700_000_000.0]
    monkeypatch.setattr(outbox_mod.time, "time", lambda: clock[0])
    with Outbox(tmp_path, 1 << 20) as ob:
        ob.append("record", TRIP, b"a" * 100)
        clock[0] += 30
        ob.append("record", STATS, b"b" * 100)
        clock[0] += 12.5
        st = ob.stats()
        rec = st["lanes"]["record"]
        assert rec["depth"] == 2 and rec["oldest_age_s"] == 42.5
        assert rec["bytes"] == st["bytes"] == 2 * 100 + 26 + len(TRIP) + 26 + len(STATS)
        assert st["lanes"]["alarm"] == {"depth": 0, "bytes": 0, "oldest_age_s": None}


def test_acks_from_another_thread_while_appending(tmp_path: Path) -> None:
    """paho's network thread acks while the loop thread appends and reads."""
    ob = Outbox(tmp_path, 1 << 22, segment_bytes=8192, cursor_flush_s=0.01)
    acked: list[Key] = []
    handed: list[Key] = []
    cond = threading.Condition()
    done = threading.Event()

    def acker() -> None:
        while not done.is_set() or handed:
            with cond:
                cond.wait_for(lambda: handed or done.is_set(), timeout=0.5)
                batch, handed[:] = list(handed), []
            for k in batch:
                assert ob.ack(k)
                acked.append(k)

    t = threading.Thread(target=acker)
    t.start()
    in_flight: set[Key] = set()
    all_keys: list[Key] = []
    for i in range(300):
        all_keys += ob.append_many([(LANES[i % 3], EV, body(i, 30)), ("record", STATS, b"s")])
        items = ob.pending(20, skip=in_flight)
        with cond:
            for it in items:
                in_flight.add(it.key)
                handed.append(it.key)
            cond.notify()
    done.set()
    with cond:
        cond.notify()
    t.join(10)
    left = {i.key for i in drain(ob)}
    assert len(acked) == len(set(acked))
    assert left | set(acked) == set(all_keys) and not (left & set(acked))
    ob.close()
    with Outbox(tmp_path, 1 << 22, segment_bytes=8192) as ob2:
        assert {i.key for i in drain(ob2)} == left


def test_unreadable_segment_is_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20, segment_bytes=512) as ob:
        keys = ob.append_many([("event", EV, body(i, 100)) for i in range(12)])
    segs = sorted((tmp_path / "event").glob("*.seg"))
    bad = segs[1]
    bad_seqs = set(scan(bad.read_bytes(), int(bad.name[:16])).seqs)
    os.unlink(bad)
    bad.mkdir()  # reading it fails with EISDIR, as an I/O error would
    with Outbox(tmp_path, 1 << 20, segment_bytes=512) as ob:
        assert [i.key for i in drain(ob)] == [k for k in keys if k.seq not in bad_seqs]
        assert any(bad.name in n for n in ob.stats()["quarantined"])


def test_record_rotting_on_disk_after_open_is_skipped_counted_and_released(
        tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        keys = ob.append_many([("record", TRIP, b"trip-a"), ("record", STATS, b"stats-b"),
                               ("record", TRIP, b"trip-c")])
        seg = next((tmp_path / "record").glob("*.seg"))
        raw = bytearray(seg.read_bytes())
        raw[-1] ^= 0xFF  # the last byte of trip-c's payload flips
        seg.write_bytes(bytes(raw))
        assert payloads(drain(ob)) == [b"trip-a", b"stats-b"]
        st = ob.stats()
        assert st["corrupt_records"] == 1 and "CRC" in st["last_error"]
        assert payloads(drain(ob)) == [b"trip-a", b"stats-b"]  # released: not counted again
        assert ob.stats()["corrupt_records"] == 1
        assert ob.ack(keys[2]) is False


def test_segments_reopen_from_their_index_and_a_bad_index_means_a_scan(
        tmp_path: Path) -> None:
    def got(ob: Outbox) -> list:
        return [(i.key, i.payload, i.created) for i in drain(ob)]

    with Outbox(tmp_path, 1 << 20, segment_bytes=2048) as ob:
        keys = ob.append_many([(LANES[i % 3], EV, body(i, 60)) for i in range(120)])
        ob.ack_many(keys[:7])
        want = got(ob)
    idx = sorted((tmp_path / "event").glob("*.idx"))
    assert len(idx) >= 3  # full segments at once, the one being appended on close
    assert len(idx) == len(list((tmp_path / "event").glob("*.seg")))
    with Outbox(tmp_path, 1 << 20, segment_bytes=2048) as ob:
        assert got(ob) == want
        ob.append_many([("event", EV, b"after-%d" % i) for i in range(3)])
        want = got(ob)
        # killed here: the last segment's index covers only what it held at the opening
        shutil.copytree(tmp_path, tmp_path.parent / "killed")
    killed = tmp_path.parent / "killed"
    last = sorted((killed / "event").glob("*.seg"))[-1]
    with open(last, "ab") as fh:  # a torn append (a power cut's shape: never written)
        fh.write(b"\0" * 9)
    with Outbox(killed, 1 << 20, segment_bytes=2048) as ob:
        assert got(ob) == want  # the index, plus a scan of what came after it
        st = ob.stats()
        assert st["trimmed_bytes"] == 9 and st["lost_records"] == 0
    idx = sorted((tmp_path / "event").glob("*.idx"))
    idx[0].write_bytes(b"garbage")  # a torn or foreign index is only a cache miss
    idx[1].write_bytes(idx[1].read_bytes()[:-5])
    with Outbox(tmp_path, 1 << 20, segment_bytes=2048) as ob:
        assert got(ob) == want
        st = ob.stats()
        assert st["quarantined"] == [] and st["lost_records"] == 0
    seg = Segment.from_index(sorted((tmp_path / "event").glob("*.seg"))[0], 0)
    assert seg is not None  # the scan wrote a good index again
    seg.close()


def test_ack_many_releases_a_batch_and_refuses_bad_keys(tmp_path: Path) -> None:
    with Outbox(tmp_path, 1 << 20) as ob:
        keys = ob.append_many([("event", EV, body(i)) for i in range(6)])
        assert ob.ack_many([keys[4], keys[0], keys[1], keys[0], Key("event", 99)]) == 3
        assert [i.key for i in drain(ob)] == [keys[2], keys[3], keys[5]]
        with pytest.raises(OutboxError, match="key"):
            ob.ack_many([keys[2], ("nolane", 1)])
        assert [i.key for i in drain(ob)] == [keys[2], keys[3], keys[5]]  # all or nothing


def test_the_read_only_view_applies_the_ack_log(tmp_path: Path) -> None:
    """``liftwatch outbox`` while the agent runs: acks of the ack log (not yet in
    cursors.json) are not shown as waiting."""
    from liftwatch.agent.tools.outbox_view import snapshot

    ob = Outbox(tmp_path, 1 << 20, cursor_flush_s=0.05, ack_batch=1)
    keys = ob.append_many([("event", EV, body(i)) for i in range(5)])
    ob.ack_many(keys[:3])
    assert _wait_for(lambda: _log_records(tmp_path))
    snap = snapshot(tmp_path)
    assert [w.seq for w in snap.pending()] == [k.seq for k in keys[3:]]
    assert snap.stats()["lanes"]["event"]["depth"] == 2
    ob.close()
