"""The alarm ledger: EN 81-28 repeats until the platform's ack, across restarts."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from liftwatch.buffer.alarms import (
    AlarmLedger,
    AlarmLedgerError,
    AlarmLedgerWriteError,
)

pytestmark = pytest.mark.timeout(60)
T0 = 1_764_126_000.0
TOPIC = "lift/L1/event"


def test_alarm_is_due_until_acked_with_repeat_counts(tmp_path: Path) -> None:
    led = AlarmLedger(tmp_path / "alarms.json")
    led.add("e1", TOPIC, b'{"eid":"e1"}', T0)
    assert [(e.eid, e.repeat, e.last_sent) for e in led.due(T0, 60)] == [("e1", 0, None)]
    assert led.mark_sent("e1", T0) is True
    assert led.due(T0 + 59.9, 60) == []
    due = led.due(T0 + 60, 60)
    assert [(e.eid, e.repeat, e.last_sent) for e in due] == [("e1", 1, T0)]
    led.mark_sent("e1", T0 + 60)
    assert led.get("e1").repeat == 2
    assert led.ack("e1") is True
    assert led.ack("e1") is False
    assert led.due(T0 + 1000, 60) == [] and len(led) == 0
    assert led.mark_sent("e1", T0) is False


def test_unacked_alarms_survive_a_restart_and_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "alarms.json"
    led = AlarmLedger(path)
    led.add("e1", TOPIC, b"\x00binary\xff", T0)
    led.add("e2", TOPIC, b"second", T0 + 5)
    led.mark_sent("e1", T0 + 1)
    led.ack("e2")
    # another process adds an alarm and is killed right after add() returned
    code = ("import os, signal, sys\n"
            "from liftwatch.buffer.alarms import AlarmLedger\n"
            "l = AlarmLedger(sys.argv[1]); l.add('e3', 'lift/L1/event', b'third', 2e9)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    again = AlarmLedger(path)
    assert [(e.eid, e.payload, e.repeat, e.last_sent) for e in again.entries()] == [
        ("e1", b"\x00binary\xff", 1, T0 + 1), ("e3", b"third", 0, None)]
    assert [e.eid for e in again.due(T0 + 61, 60)] == ["e1", "e3"]
    assert again.quarantined is None


def test_re_adding_an_eid_replaces_the_message_and_keeps_counts(tmp_path: Path) -> None:
    led = AlarmLedger(tmp_path / "a.json")
    led.add("e1", TOPIC, b"v1", T0)
    led.mark_sent("e1", T0)
    led.add("e1", TOPIC, b"v2", T0 + 30)
    e = led.get("e1")
    assert (e.payload, e.t_wall, e.repeat, e.last_sent) == (b"v2", T0, 1, T0)


def test_due_is_oldest_first_and_a_clock_step_back_makes_an_alarm_due(tmp_path: Path) -> None:
    led = AlarmLedger(tmp_path / "a.json")
    led.add("late", TOPIC, b"x", T0 + 10)
    led.add("early", TOPIC, b"y", T0)
    assert [e.eid for e in led.due(T0 + 10, 60)] == ["early", "late"]
    led.mark_sent("early", T0 + 20)
    led.mark_sent("late", T0 + 20)
    assert led.due(T0 + 30, 60) == []
    assert [e.eid for e in led.due(T0 - 3600, 60)] == ["early", "late"]  # NTP stepped back


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"alarms": {"1": {"eid": 1}}}',
                                     b'{"alarms": {"1": {"eid": "e", "topic": "t", "payload": '
                                     b'"!!", "t_wall": 1, "repeat": 0, "last_sent": null}}}',
                                     b"[1, 2]"])
def test_corrupt_ledger_is_quarantined_and_the_ledger_starts_empty(tmp_path: Path,
                                                                   content: bytes) -> None:
    path = tmp_path / "alarms.json"
    path.write_bytes(content)
    led = AlarmLedger(path)
    assert len(led) == 0 and led.quarantined
    assert (tmp_path / "quarantine" / led.quarantined).read_bytes() == content
    led.add("e1", TOPIC, b"x", T0)
    assert [e.eid for e in AlarmLedger(path).entries()] == ["e1"]


@pytest.mark.parametrize("args", [("", TOPIC, b"x", T0), (5, TOPIC, b"x", T0),
                                  ("e", "", b"x", T0), ("e", TOPIC, "str", T0),
                                  ("e", TOPIC, b"x", float("nan")), ("e", TOPIC, b"x", "now"),
                                  ("e", TOPIC, b"x", True)])
def test_bad_arguments_are_refused_and_change_nothing(tmp_path: Path, args) -> None:
    led = AlarmLedger(tmp_path / "a.json")
    with pytest.raises(AlarmLedgerError):
        led.add(*args)
    for bad in ((T0, 0), (T0, -1), (float("inf"), 60), (None, 60)):
        with pytest.raises(AlarmLedgerError):
            led.due(*bad)
    with pytest.raises(AlarmLedgerError):
        led.mark_sent("e", float("nan"))
    assert led.ack(None) is False and led.ack(123) is False
    assert len(led) == 0 and not (tmp_path / "a.json").exists()


def test_disk_full_is_reported_and_the_alarm_still_repeats(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    led = AlarmLedger(path)
    led.add("e0", TOPIC, b"saved", T0)

    def enospc(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(AlarmLedgerWriteError) as err:
        led.add("e1", TOPIC, b"unsaved", T0 + 1)
    assert err.value.errno == errno.ENOSPC
    assert [e.eid for e in led.due(T0 + 2, 60)] == ["e0", "e1"]  # still repeated
    assert [e.eid for e in AlarmLedger(path).entries()] == ["e0"]  # the file: old state
    monkeypatch.undo()
    led.mark_sent("e0", T0 + 3)  # the next good write stores everything
    assert [e.eid for e in AlarmLedger(path).entries()] == ["e0", "e1"]
