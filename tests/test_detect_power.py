"""Power, battery, safety circuit, controller link, modes, self test, sensor health."""

from __future__ import annotations

import pytest
from liftwatch.signal.pipeline import TRIP_SETTLE_S, Pipeline
from liftwatch.signal.settings import DetectionParams
from synthlift import SynthLift, cleared, events, raised, run_records

pytestmark = pytest.mark.timeout(60)


def on_time(out, code: str, t_cond: float, timer: float) -> dict:
    (r,) = raised(out, code)
    assert t_cond + timer <= r["t"] <= t_cond + timer + 1.0, (r, t_cond + timer)
    return r


# ---------------------------------------------------------------- power_loss
def test_power_loss_on_time_and_clears_after_2s_back() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(mains_ok=0)
    lost = lift.t
    lift.idle(5).set(mains_ok=1)
    back = lift.t
    lift.idle(3)
    out = lift.run()
    on_time(out, "power_loss", lost, 2.0)
    (c,) = cleared(out, "power_loss")
    assert back + 2.0 <= c["t"] <= back + 3.0


def test_power_loss_near_miss_and_from_pwr_record() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(mains_ok=0).idle(1.9).set(mains_ok=1).idle(5)
    assert not events(lift.run(), "power_loss")
    lift = SynthLift(sources="controller", inputs=())      # no mains input: pwr supervision
    lift.idle(1).power(1, 90)
    lost = lift.t
    lift.idle(3).power(0, 90).idle(3)
    on_time(lift.run(), "power_loss", lost, 2.0)


# ---------------------------------------------------------------- battery_low
def test_battery_low_raise_near_miss_and_clear() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).power(1, 25).idle(2)
    assert not events(lift.run(), "battery_low")
    lift.power(1, 19)
    low = lift.t
    lift.idle(2).power(1, 28).idle(2)
    out = lift.run()
    on_time(out, "battery_low", low, 0.0)
    assert not cleared(out, "battery_low")               # 28 % is not yet above 30 %
    lift.power(1, 31).idle(1)
    assert cleared(lift.run(), "battery_low")


# ---------------------------------------------------------------- safety circuit
@pytest.mark.parametrize("sources", ["both", "controller"])
def test_safety_circuit_open_on_time_and_clears(sources: str) -> None:
    lift = SynthLift(sources=sources)
    lift.idle(1).set(safety_ok=0)
    opened = lift.t
    lift.idle(3).set(safety_ok=1)
    made = lift.t
    lift.idle(3)
    out = lift.run()
    on_time(out, "safety_circuit_open", opened, 0.5)
    (c,) = cleared(out, "safety_circuit_open")
    assert made + 2.0 <= c["t"] <= made + 3.0


def test_safety_circuit_near_miss_and_inspection() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1).set(safety_ok=0).idle(0.4).set(safety_ok=1).idle(3)
    assert not events(lift.run(), "safety_circuit_open")
    lift = SynthLift(sources="both")
    lift.idle(1).set(inspection=1).idle(1).set(safety_ok=0).idle(10).set(safety_ok=1)
    lift.idle(3).set(inspection=0).idle(5)
    out = lift.run()
    assert not events(out, "safety_circuit_open")
    assert [e["detail"] for e in raised(out, "mode_change")] == [{"from": 1, "to": 2},
                                                                 {"from": 2, "to": 1}]


# ---------------------------------------------------------------- controller link
def test_controller_link_lost_on_time_and_clears_after_three_valid() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1.1).link("null")
    last_valid = 1.0
    lift.idle(8).link("ok")
    back = lift.t
    lift.idle(2)
    out = lift.run()
    on_time(out, "controller_link_lost", last_valid, 5.0)
    (c,) = cleared(out, "controller_link_lost")
    first_ok = round(back / 0.2 + 0.4999) * 0.2
    assert c["t"] == pytest.approx(first_ok + 0.4, abs=0.01)      # the third valid poll


def test_controller_link_absent_and_near_miss() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1.1).link("absent").idle(6).link("ok").idle(2)
    on_time(lift.run(), "controller_link_lost", 1.0, 5.0)
    lift = SynthLift(sources="both")
    lift.idle(1.1).link("null").idle(4.5).link("ok").idle(3)
    assert not events(lift.run(), "controller_link_lost")


def test_no_link_event_on_sensors_only_terminal() -> None:
    lift = SynthLift(sources="sensors")
    lift.idle(30)
    assert not events(lift.run())


# ---------------------------------------------------------------- mode_change
def test_mode_change_single_shot_and_suppression_in_fire_mode() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1.05).ctl_set(mode=3)           # fire return
    lift.idle(1).set(safety_ok=0).idle(5)
    out = lift.run()
    (m,) = raised(out, "mode_change")
    assert m["t"] == pytest.approx(1.2) and m["detail"] == {"from": 1, "to": 3}
    assert m["sev"] == "info"
    assert not cleared(out, "mode_change")
    assert not events(out, "safety_circuit_open")


def test_no_mode_change_for_first_observed_mode() -> None:
    lift = SynthLift(sources="controller")
    lift.ctl_set(mode=2).idle(3)
    assert not events(lift.run(), "mode_change")


# ---------------------------------------------------------------- self_test
def test_self_test_every_72h_and_on_demand() -> None:
    lift = SynthLift(sources="sensors")
    p = Pipeline(lift.lift_params(), DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=False)
    out = p.feed(0.0, "di", {"door_closed": 1, "zone_up": 1, "zone_down": 1})
    assert not out
    assert p.advance(72 * 3600 - 1) == []
    (r,) = p.advance(72 * 3600 + 0.05)
    assert r["code"] == "self_test" and r["detail"] == {"periodic": True}
    (d,) = p.self_test(72 * 3600 + 10)
    assert d["detail"] == {"periodic": False}
    assert p.advance(2 * 72 * 3600 - 1) == []
    assert p.advance(2 * 72 * 3600 + 0.2)[0]["code"] == "self_test"


# ---------------------------------------------------------------- sensor_disagreement
def test_sensor_disagreement_on_time_and_clears() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1.05).ctl_set(zone=0)
    t0 = 1.2
    lift.idle(7).ctl_set(zone=1)
    agree = lift.t
    lift.idle(7)
    out = lift.run()
    r = on_time(out, "sensor_disagreement", t0, 5.0)
    assert r["detail"] == {"on": ["zone"]}
    (c,) = cleared(out, "sensor_disagreement")
    assert agree + 5.0 <= c["t"] <= agree + 6.0


def test_sensor_disagreement_near_miss_and_normal_trips() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1.05).ctl_set(zone=0).idle(4.5).ctl_set(zone=1).idle(7)
    lift.trip("4").idle(1).door_cycle().idle(1).trip("B1").idle(2)
    assert not events(lift.run())


# ---------------------------------------------------------------- sensor_fault
def _trips(lift: SynthLift, n: int) -> None:
    for k in range(n):
        lift.trip("3" if k % 2 == 0 else "1").idle(1)


def test_sensor_fault_stuck_zone_input_and_recovery() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    lift.stuck.add("zone_down")            # its contact never changes again
    _trips(lift, 20)
    before = lift.t
    _trips(lift, 1)                        # the 21st trip start ends the 20th window
    out = lift.run()
    r = raised(out, "sensor_fault")[0]
    assert r["detail"] == {"zone_down": "stuck"}
    assert r["t"] == pytest.approx(before)      # decided at the 21st trip's start
    lift.stuck.clear()
    _trips(lift, 7)
    out = lift.run()
    assert cleared(out, "sensor_fault")


def test_sensor_fault_near_miss_nineteen_trips() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1)
    lift.stuck.add("zone_down")
    _trips(lift, 19)
    assert not events(lift.run(), "sensor_fault")


def test_sensor_fault_accelerometer_silent_and_back() -> None:
    lift = SynthLift(sources="sensors")
    p = Pipeline(lift.lift_params(), DetectionParams(), accel_fs=400, lsb_per_g=256,
                 controller_present=False)
    lift.idle(5)
    out = run_records(lift.records(), lift.header(), 5.0, pipeline=p)
    r = on_time(out, "sensor_fault", 0.0, 2.0)
    assert r["detail"] == {"accel": "silent"}
    assert p.health()["accel"]["ok"] is False


def test_link_loss_keeps_the_controllers_last_mode() -> None:
    lift = SynthLift(sources="both")
    lift.idle(1.05).ctl_set(mode=2).idle(2).link("absent").idle(10).link("ok").idle(2)
    lift.set(safety_ok=0).idle(3)          # still in inspection: suppressed
    out = lift.run()
    assert [e["detail"] for e in raised(out, "mode_change")] == [{"from": 1, "to": 2}]
    assert raised(out, "controller_link_lost")
    assert not events(out, "safety_circuit_open")


def test_sensor_fault_accelerometer_gap_raises_and_five_good_trips_clear() -> None:
    lift = SynthLift(sources="both", accel=True, seed=4)
    lift.idle(4)
    ends = []
    for k in range(6):
        lift.trip("4" if k % 2 == 0 else "1")
        ends.append(lift.t)
        lift.idle(2)
    recs = [r for r in lift.records() if not (r.kind == "acc" and 1.0 <= r.t < 6.0)]
    out = run_records(recs, lift.header(), lift.t)
    r = on_time(out, "sensor_fault", 0.9, 2.0)          # last block before the gap at 0.9 s
    assert r["detail"] == {"accel": "silent"}
    (c,) = cleared(out, "sensor_fault")
    assert ends[4] <= c["t"] <= ends[4] + TRIP_SETTLE_S   # the 5th trip with samples again


def test_sensor_fault_accelerometer_implausible_gravity() -> None:
    lift = SynthLift(sources="both", accel=True, seed=4, lsb_per_g=310)
    lift.idle(6)
    hdr = lift.header()
    hdr.accel["lsb_per_g"] = 256                 # wrong range setting: 1.21 g at rest
    out = run_records(lift.records(), hdr, lift.t)
    (r,) = raised(out, "sensor_fault")
    assert "gravity" in r["detail"]["accel"] and r["t"] <= 3.0
    lift = SynthLift(sources="both", accel=True, seed=4)
    lift.idle(6)
    assert not events(lift.run(), "sensor_fault")       # near miss: a correct range


def test_stuck_door_contact_is_replaced_by_the_controller_view() -> None:
    # a door contact stuck "closed" would hide open doors: once it is found stuck the
    # controller's door state is used, so a passenger at an open door is not "entrapped"
    lift = SynthLift(sources="both")
    lift.idle(1)
    lift.stuck.add("door_closed")
    for k in range(21):
        lift.door_cycle(dwell_s=1).trip("3" if k % 2 == 0 else "1").idle(1)
    lift.open_door().set(presence=1).idle(60).close_door().idle(2)
    out = lift.run()
    assert raised(out, "sensor_fault")[0]["detail"] == {"door_closed": "stuck"}
    assert not events(out, "entrapment_level")


def test_link_lost_mid_run_does_not_run_for_ever() -> None:
    lift = SynthLift(sources="controller")
    lift.idle(1).set(run=1).ctl_set(run=1, dir=1).idle(2).link("absent").idle(60)
    out = lift.run()
    assert raised(out, "controller_link_lost")
    assert not events(out, "motor_runtime_exceeded")
