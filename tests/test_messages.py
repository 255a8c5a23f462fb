"""Uplink messages: envelope, ids across restarts, compact JSON, schemas, pcodes, tq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from liftwatch.agent import messages
from liftwatch.agent.messages import MessageFactory, dumps, lane_of, next_boot, topic
from liftwatch.agent.profiles import REPO_PROFILES, load_profile
from liftwatch.agent.timebase import (
    STA_UNSYNC,
    TIME_ERROR,
    ClockState,
    Timebase,
    Timex,
    is_synced,
    kernel_clock_state,
)
from uplink_helpers import validate

XYZ = {"x": 0.11, "y": 0.09, "z": 0.21}
TRIP = {"t": 80.1, "type": "trip", "from": "1", "to": "3", "t_start": 70.0, "t_end": 79.9,
        "distance_m": 6.2, "v_max": 1.74, "a_max": 0.81, "d_max": 0.79, "a95": 0.7,
        "d95": 0.69, "jerk_max": 1.05, "vib_pp_max": XYZ, "vib_pp_a95": XYZ}
STATS = {"period": "hour", "from": 1795658400000, "to": 1795662000000, "runs": 12,
         "run_s": 140.5, "distance_m": 90.3, "door_cycles": 14, "reopens": 1,
         "starts_by_floor": {"1": 5, "3": 7}, "events": {"door_slow": 1}}
HEALTH = {"uptime_s": 3600.0, "agent_version": "0.1.0", "cpu_temp_c": 48.2,
          "load": [0.1, 0.2, 0.1], "mem_mb": 41.0, "disk_free_mb": 1200.0,
          "state": "ok", "faults": [],
          "outbox": {"alarm": {"depth": 0, "bytes": 0, "oldest_age_s": None},
                     "event": {"depth": 2, "bytes": 400, "oldest_age_s": 3.5},
                     "record": {"depth": 0, "bytes": 0, "oldest_age_s": None},
                     "dropped": {"alarm": 0, "event": 0, "record": 0}, "quarantined": 0},
          "link": {"connected": True, "reconnects": 1, "rtt_ms": 12.0, "rssi_dbm": None},
          "ctl_link": {"state": "ok", "errors": 0}, "sensors": {"accel": "ok"},
          "clock": {"synced": True, "esterror_ms": 1.0}, "power": {"src": 0, "batt": 100}}


class FixedClock:
    def __init__(self, synced: bool) -> None:
        self.synced = synced

    def __call__(self) -> ClockState:
        return ClockState(self.synced, 0 if self.synced else TIME_ERROR,
                          0 if self.synced else STA_UNSYNC, 0, 0)


def make(profile: str | None = "shanghai", synced: bool = True) -> MessageFactory:
    prof = load_profile(REPO_PROFILES / "platforms" / f"{profile}.toml") if profile else None
    return MessageFactory("31100000000000000001", 3, Timebase(probe=FixedClock(synced)),
                          prof)


def ev(state: str = "raised", **kw: Any) -> dict[str, Any]:
    rec = {"t": 57.25, "type": "event", "code": "entrapment_nonlevel", "state": state,
           "id": "e7", "floor": "2", "sev": "alarm", "detail": {"stopped_s": 30.1}}
    if state == "cleared":
        rec["duration_s"] = 88.0
    rec.update(kw)
    return rec

#: a day's condition: one learned figure, one in trend, one still learning
CONDITION = {"restarts": 1, "figures": {
    "door_close_s": {"state": "trend", "ref_days": 7, "n": 180, "day": 3.6, "ref": 3.0,
                     "level": 3.55, "ratio": 1.183, "limit": 3.45},
    "vib_z": {"state": "normal", "ref_days": 7, "n": 250, "day": 0.25, "ref": 0.25,
              "level": 0.25, "ratio": 1.0, "limit": 0.3},
    "door_close_s@3": {"state": "learning", "ref_days": 2, "n": 12}}}


def test_every_message_kind_validates_against_its_schema() -> None:
    f = make()
    built = {
        "status": f.status({"mode": 1, "run": 0, "dir": 0, "floor": "3", "door": 2, "zone": 1,
                            "person": 0, "speed": 0.0, "safety": 0, "lock": 0, "overload": 0,
                            "src": "fused"}),
        "event": f.event(ev()),
        "trip": f.trip(TRIP),
        "stats": f.stats(STATS),
        "condition": f.condition(CONDITION, 1795478340000, 1795564740000),
        "health": f.health(HEALTH),
        "cmd_reply": f.cmd_reply("c1", True, {"eid": "e7"}),
    }
    for kind, msg in built.items():
        validate(kind, msg)
        assert msg["v"] == 1 and msg["tq"] == 1 and isinstance(msg["ts"], int)
    validate("event", f.event(ev("cleared"), repeat=2))
    validate("cmd_reply", f.cmd_reply(None, False, error="not valid JSON"))
    assert set(messages.KINDS) == set(built)


def test_a_replay_marks_every_message_and_stamps_it_on_the_traces_clock() -> None:
    f = make()
    live = f.event(ev())
    assert "replay" not in live and "replay" not in f.cmd_reply("c", True, 1)
    trace_now = [100.0]
    start_ms = 1795478340000
    f.replay_from(start_ms, lambda: trace_now[0])
    status = f.status({"mode": None, "run": 0, "dir": 0, "floor": "1", "door": 2,
                       "src": "sen"})
    built = {"status": status, "event": f.event(ev()), "trip": f.trip(TRIP),
             "stats": f.stats(STATS), "health": f.health(HEALTH),
             "cmd_reply": f.cmd_reply("c1", False, error="x")}
    for kind, msg in built.items():
        validate(kind, msg)
        assert msg["replay"] is True and msg["tq"] == 0, kind
    assert status["mode"] == messages.MODE_UNKNOWN  # no controller: "unknown", not null
    # events and trips at their decision's trace time, the others at the trace's now
    assert built["event"]["ts"] == start_ms + 57_250 and built["trip"]["ts"] == start_ms + 80_100
    assert built["status"]["ts"] == built["health"]["ts"] == start_ms + 100_000
    # a repeat is stamped when it is sent
    trace_now[0] = 160.0
    assert f.event(ev(), repeat=1)["ts"] == start_ms + 160_000
    # what outlives the run (journal, alarm ledger) is marked: a later live run that
    # repeats a replayed alarm still sends it marked
    kept = f.mark_replayed(ev())
    assert kept["replay"] is True and kept["ts"] == start_ms + 57_250
    later = make()
    assert later.event(kept, repeat=3)["replay"] is True
    validate("event", later.event(kept, repeat=3))
    # the schemas know the mark as true only
    with pytest.raises(jsonschema.ValidationError):
        validate("event", {**live, "replay": False})


def test_a_stop_between_floors_and_the_relevel_travel_in_the_trip_message() -> None:
    f = make()
    stall = f.trip({**TRIP, "to": "2", "level": False, "to_between": ["2", "3"],
                    "emergency_stop": True, "jerk_max": 24.9})
    rescue = f.trip({**TRIP, "from": "2", "to": "3", "from_between": ["2", "3"]})
    validate("trip", stall)
    validate("trip", rescue)
    assert (stall["to_between"], stall["emergency_stop"]) == (["2", "3"], True)
    assert rescue["from_between"] == ["2", "3"] and "emergency_stop" not in rescue
    for bad in ({**stall, "to_between": ["2"]}, {**stall, "emergency_stop": False}):
        with pytest.raises(jsonschema.ValidationError):
            validate("trip", bad)


def test_schemas_reject_what_the_spec_forbids() -> None:
    f = make()
    bad_event = f.event(ev())
    bad_event["state"] = "open"
    cleared_without_duration = f.event(ev("cleared"))
    del cleared_without_duration["duration_s"]
    bad_trip = f.trip(TRIP)
    del bad_trip["to"]
    reply_both = f.cmd_reply("c", True, 1)
    reply_both["error"] = "x"
    for kind, msg in (("event", bad_event), ("event", cleared_without_duration),
                      ("trip", bad_trip), ("cmd_reply", reply_both),
                      ("status", {**f.status({"mode": 9, "run": 0, "dir": 0, "floor": "1",
                                              "door": 2, "src": "ctl"})})):
        with pytest.raises(jsonschema.ValidationError):
            validate(kind, msg)


def test_event_fields_and_pcodes_from_the_platform_profile() -> None:
    f = make("shanghai")
    m = f.event(ev())
    assert (m["eid"], m["code"], m["pcode"], m["state"], m["sev"], m["floor"], m["repeat"]) == \
        ("e7", "entrapment_nonlevel", 8, "raised", "alarm", "2", 0)
    assert "duration_s" not in m and m["detail"] == {"stopped_s": 30.1}
    c = f.event(ev("cleared"))
    assert c["duration_s"] == 88.0 and c["eid"] == "e7"
    # no government code: the symbolic code only, pcode omitted
    ext = f.event(ev(code="sensor_disagreement", sev="warning"))
    assert "pcode" not in ext
    # mode changes are numbered per mode where the profile says so (Chongqing 40-47)
    cq = make("chongqing")
    mc = cq.event(ev(code="mode_change", sev="info", detail={"mode": 2, "from": 1}))
    assert mc["pcode"] == cq.profile.mode_pcode(2)  # type: ignore[union-attr]
    assert make(None).event(ev()).get("pcode") is None


def test_ids_are_unique_within_and_across_boots(tmp_path: Path) -> None:
    ids = set()
    for _ in range(3):
        boot = next_boot(tmp_path)
        f = MessageFactory("L1", boot, Timebase(probe=FixedClock(True)))
        for _ in range(50):
            ids.add(f.event(ev())["id"])
    assert len(ids) == 150
    assert (tmp_path / "boot").read_text().strip() == "3"
    assert sorted({i.split("-")[1] for i in ids}) == ["1", "2", "3"]


def test_corrupt_boot_file_is_replaced_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "boot").write_bytes(b"\x00garbage")
    assert next_boot(tmp_path) == 1
    assert next_boot(tmp_path) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".boot.")]


def test_compact_json_no_nan_and_utf8() -> None:
    f = make()
    m = f.trip({**TRIP, "a95": float("nan"), "from": "B1", "to": "十"})
    raw = dumps(m)
    assert b" " not in raw
    back = json.loads(raw)
    assert back["a95"] is None and back["to"] == "十"
    assert "十".encode() in raw
    validate("trip", back)


def test_topics_and_lanes() -> None:
    assert topic("lift", "L1", "cmd_reply") == "lift/L1/cmd/reply"
    assert topic("city", "L1", "event") == "city/L1/event"
    f = make()
    assert lane_of("event", f.event(ev())) == "alarm"
    assert lane_of("event", f.event(ev(sev="fault", code="overspeed"))) == "event"
    assert lane_of("trip", f.trip(TRIP)) == "record"
    with pytest.raises(ValueError):
        lane_of("status", {})
    for bad in ("", "a/b", "a+b", "a#"):
        with pytest.raises(ValueError):
            MessageFactory(bad, 1, Timebase())


def test_tq_follows_the_kernel_clock_state() -> None:
    assert not make(synced=False).event(ev())["tq"]
    assert make(synced=True).event(ev())["tq"] == 1
    # the decision rule of adjtimex(2) / ntp_gettime
    assert is_synced(0, 0) and is_synced(1, 0x2001)
    assert not is_synced(TIME_ERROR, 0) and not is_synced(0, STA_UNSYNC) and not is_synced(-1, 0)
    # the real kernel answers, read only; struct timex has the kernel's size on 64 bit
    import ctypes
    if ctypes.sizeof(ctypes.c_long) == 8:
        assert ctypes.sizeof(Timex) == 208
    st = kernel_clock_state()
    assert st.state >= 0 and st.synced == is_synced(st.state, st.status)


def test_ts_is_wall_time_of_the_monotonic_instant() -> None:
    tb = Timebase(probe=FixedClock(True), wall=lambda: 1000.0, mono=lambda: 50.0)
    assert tb.wall_ms() == 1_000_000
    assert tb.wall_ms(48.5) == 998_500  # an observation 1.5 s ago
    # a wall-clock step changes ts, never the monotonic order of observations
    assert tb.stamp(49.0) == (999_000, 1)


def test_health_body_from_the_parts_and_its_state() -> None:
    from liftwatch.agent.health import assess, machine, outbox_view, sensors_view
    ph = {"inputs": {"door_closed": {"level": 1, "changed_s": 3.0, "ok": True},
                     "presence": {"level": 0, "changed_s": 9e4, "ok": False}},
          "controller": {"ok": True, "last_valid_s": 0.2},
          "accel": {"ok": True, "issue": None, "last_block_s": 0.0, "gravity_g": 1.00481,
                    "saturated": False}, "rejected_records": 0}
    ob = {"lanes": {"alarm": {"depth": 0, "bytes": 0, "oldest_age_s": None},
                    "event": {"depth": 2, "bytes": 300, "oldest_age_s": 4.0},
                    "record": {"depth": 0, "bytes": 0, "oldest_age_s": None}},
          "dropped": {"alarm": 0, "event": 0, "record": 3}, "quarantined": ["x.seg"]}
    body = machine("/", 0.0)
    body.update({"outbox": outbox_view(ob), "link": {"connected": True, "reconnects": 0},
                 "ctl_link": ph["controller"], "sensors": sensors_view(ph),
                 "clock": {"synced": True}, "power": {"src": 0, "batt": 100}})
    body["state"], body["faults"] = assess(body, [], 0)
    assert body["sensors"] == {"inputs": 2, "faulty": ["presence"],
                               "accel": {"ok": True, "gravity_g": 1.005}}
    assert body["outbox"] == {"alarm": {"depth": 0},
                              "event": {"depth": 2, "bytes": 300, "oldest_age_s": 4.0},
                              "record": {"depth": 0}, "dropped": {"record": 3},
                              "quarantined": 1}
    assert (body["state"], body["faults"]) == ("degraded", ["sensor:presence"])
    validate("health", make().health(body))
    assert assess(body, ["tick"], 0)[0] == "fault"
    assert assess(body, [], 2)[1][0] == "disk_fault"


def test_ts_of_unsent_messages_is_corrected_when_the_clock_is_set() -> None:
    """A terminal without RTC boots in 1970; NTP then steps the clock. What is still to
    be sent gets the right time (and tq 1); what was made after the step is left as is;
    the monotonic clock never moved backwards meanwhile."""
    clock = {"wall": 1000.0, "mono": 50.0, "synced": False}
    tb = Timebase(probe=lambda: FixedClock(clock["synced"])(), probe_interval_s=0.0,
                  wall=lambda: clock["wall"], mono=lambda: clock["mono"])
    f = MessageFactory("L1", 4, tb)
    early = [dumps(f.event(ev())) for _ in range(3)]
    clock["wall"] += 5.0
    clock["mono"] += 5.0  # 5 s pass: no step
    early.append(dumps(f.trip(TRIP)))
    clock["wall"] += 1_795_000_000.0 + 2.0  # NTP sets the clock, 2 s later
    clock["mono"] += 2.0
    clock["synced"] = True
    late = dumps(f.event(ev("cleared")))
    other_boot = dumps(MessageFactory("L1", 3, tb).event(ev()))
    fixed = [json.loads(f.correct(p)) for p in early]
    for before, after in zip(early, fixed, strict=True):
        b = json.loads(before)
        assert b["tq"] == 0 and after["tq"] == 1
        assert after["ts"] - b["ts"] == 1_795_000_000_000
        assert after["id"] == b["id"]
    assert fixed[3]["ts"] - fixed[0]["ts"] == 5000
    # right time: the late message is 2 s after the last early one
    assert json.loads(late)["ts"] - fixed[3]["ts"] == 2000
    assert f.correct(late) == late and f.correct(other_boot) == other_boot
    validate("trip", fixed[3])
