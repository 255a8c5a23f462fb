"""Digital inputs: debounce, polarity, timestamps, absent/failing inputs, pin backends, feed.

Debounce runs on the simulated backend with a simulated clock: the test calls
``poll(t)`` at the sample rate itself, so pulse widths are exact.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from liftwatch.drivers.inputs import Debouncer, DigitalInputs, debounce_samples
from liftwatch.drivers.pins import BlinkaPins, PinError, SimulatedPins
from liftwatch.drivers.settings import InputsSettings, InputWiring
from liftwatch.drivers.simchips import QueueSource, SimADXL345, SimClock
from liftwatch.drivers.simfeed import SimFeed, SimFeedError, SimFeedReceiver, parse_message

pytestmark = pytest.mark.timeout(60)

HZ = 200.0
P = 1 / HZ


def make(debounce_ms: float = 20.0, active_low: bool = False, hz: float = HZ,
         **extra: InputWiring) -> tuple[DigitalInputs, SimulatedPins]:
    pins = SimulatedPins({"D17": 0})
    wiring = {"door_closed": InputWiring(pin="D17", pull="none", active_low=active_low,
                                         debounce_ms=debounce_ms), **extra}
    inputs = DigitalInputs(wiring, InputsSettings(sample_hz=hz), pins)
    inputs.open()
    return inputs, pins


def run_pulse(inputs: DigitalInputs, pins: SimulatedPins, start_us: int, width_us: int,
              pin: str = "D17", total_us: int = 500_000) -> list[tuple[float, dict[str, int]]]:
    """Sample at HZ from t=0 with the pin high during [start, start+width), in whole µs
    so that no float rounding moves an edge across a sample."""
    out = []
    period_us = round(1e6 / HZ)
    for k in range(total_us // period_us):
        t_us = k * period_us
        pins.set_level(pin, start_us <= t_us < start_us + width_us)
        out.extend(inputs.poll(t_us / 1e6))
    return out


def test_debounce_samples() -> None:
    assert debounce_samples(20, 200) == 4
    assert debounce_samples(0, 200) == 1
    assert debounce_samples(21, 200) == 5
    with pytest.raises(ValueError, match="at least 1 sample"):
        Debouncer(0)


PERIOD_US = round(1e6 / HZ)


@settings(max_examples=60, deadline=None)
@given(phase=st.integers(min_value=0, max_value=PERIOD_US - 1),
       debounce_ms=st.sampled_from([5, 20, 50, 200]),
       extra_us=st.integers(min_value=0, max_value=50_000))
def test_pulse_of_the_configured_width_passes(phase: int, debounce_ms: int,
                                              extra_us: int) -> None:
    inputs, pins = make(debounce_ms)
    width = debounce_ms * 1000 + extra_us
    start = debounce_ms * 1000 + 100_000 + phase  # after the initial level is settled
    changes = run_pulse(inputs, pins, start, width, total_us=start + width + 400_000)
    assert changes[0] == (0.0, {"door_closed": 0})  # first emission: every input's level
    assert len(changes) == 3
    rise, fall = changes[1], changes[2]
    assert rise[1] == {"door_closed": 1} and fall[1] == {"door_closed": 0}
    # Timestamps: the first sample that saw each edge, within one period of it.
    assert start / 1e6 <= rise[0] + 1e-9 and rise[0] < (start + PERIOD_US) / 1e6
    assert (start + width) / 1e6 <= fall[0] + 1e-9
    assert fall[0] < (start + width + PERIOD_US) / 1e6


@settings(max_examples=60, deadline=None)
@given(phase=st.integers(min_value=0, max_value=PERIOD_US - 1),
       debounce_ms=st.sampled_from([10, 20, 50, 200]),
       short=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_pulse_shorter_than_debounce_minus_one_sample_is_rejected(
        phase: int, debounce_ms: int, short: float) -> None:
    inputs, pins = make(debounce_ms)
    width = int((debounce_ms * 1000 - PERIOD_US) * short)  # below debounce - one period
    start = debounce_ms * 1000 + 100_000 + phase
    changes = run_pulse(inputs, pins, start, width, total_us=start + 500_000)
    assert changes == [(0.0, {"door_closed": 0})]


def test_active_low_polarity_and_first_emission_names_every_input() -> None:
    inputs, pins = make(active_low=True, debounce_ms=20,
                        zone_up=InputWiring(pin="D22", pull="up"),
                        zone_down=InputWiring(pin="D23", pull="down"))
    pins.set_level("D17", 0)  # contact closed pulls the pin low: door closed = 1
    out = []
    for k in range(10):
        out.extend(inputs.poll(k * P))
    assert out == [(0.0, {"door_closed": 1, "zone_up": 1, "zone_down": 0})]
    assert inputs.levels() == {"door_closed": 1, "zone_up": 1, "zone_down": 0}
    pins.set_levels({"D17": 1, "D22": 0})
    for k in range(10, 20):
        out.extend(inputs.poll(k * P))
    assert out[1] == (10 * P, {"door_closed": 0, "zone_up": 0})


def test_absent_and_failing_inputs_are_reported_not_guessed() -> None:
    pins = SimulatedPins({"D17": 1})
    pins.remove("D99")
    wiring = {"door_closed": InputWiring(pin="D17"), "presence": InputWiring(pin="D99"),
              "alarm_button": InputWiring(pin="D25", pull="up", active_low=True)}
    inputs = DigitalInputs(wiring, InputsSettings(sample_hz=HZ), pins)
    inputs.open()
    pins.fail("D25", "line busy")
    out = []
    for k in range(10):
        out.extend(inputs.poll(k * P))
    assert out == [(0.0, {"door_closed": 1})]  # neither presence nor alarm is invented
    h = inputs.health()
    assert not h["ok"] and h["faulty"] == ["alarm_button", "presence"]
    assert h["inputs"]["presence"]["state"] == "absent"
    assert "D99 does not exist" in h["inputs"]["presence"]["error"]
    assert h["inputs"]["alarm_button"]["state"] == "failing"
    assert "line busy" in h["inputs"]["alarm_button"]["error"]
    assert h["inputs"]["door_closed"]["state"] == "ok"
    # The failing input comes back: it is emitted with its level, and health clears.
    pins.fail("D25", None)
    for k in range(10, 20):
        out.extend(inputs.poll(k * P))
    assert out[1] == (10 * P, {"alarm_button": 0})
    assert inputs.health()["faulty"] == ["presence"]


def test_bad_pull_is_refused_clearly() -> None:
    with pytest.raises(PinError, match="pull must be one of up, down, none"):
        SimulatedPins().setup_input("D17", "sideways")


def test_blinka_backend_without_gpio_reports_the_pin_absent() -> None:
    """This x86 machine has no Blinka GPIO pins: the real backend says so, per input."""
    inputs = DigitalInputs({"door_closed": InputWiring(pin="D17")}, InputsSettings(),
                           BlinkaPins())
    inputs.open()
    h = inputs.health()
    assert h["backend"] == "blinka" and h["faulty"] == ["door_closed"]
    assert h["inputs"]["door_closed"]["state"] == "absent"
    assert "D17" in h["inputs"]["door_closed"]["error"]
    assert inputs.poll(0.0) == []


class PolledPins(SimulatedPins):
    """Simulated pins without edge events, as Blinka's ``digitalio``: polled."""

    edges = False


@pytest.mark.parametrize("edges", [True, False], ids=["edge-wait", "polled"])
def test_run_thread_samples_on_the_monotonic_clock(edges: bool) -> None:
    pins = SimulatedPins({"D17": 0}) if edges else PolledPins({"D17": 0})
    inputs = DigitalInputs({"door_closed": InputWiring(pin="D17", debounce_ms=10)},
                           InputsSettings(sample_hz=500), pins)
    inputs.open()
    got: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()
    th = threading.Thread(target=inputs.run, args=(lambda t, d: got.append((t, d)), stop))
    t0 = time.monotonic()
    th.start()
    time.sleep(0.3)
    settled_samples = inputs.health()["samples"]
    t_edge = time.monotonic()
    pins.set_level("D17", 1)
    time.sleep(0.1)
    stop.set()
    inputs.wake()
    th.join(2)
    assert not th.is_alive()
    assert got[0][1] == {"door_closed": 0} and got[0][0] >= t0
    assert got[1][1] == {"door_closed": 1}
    assert t_edge <= got[1][0] < t_edge + 0.05
    if edges:  # steady contacts: asleep until the edge, then the debounce samples
        assert settled_samples <= 10
        assert 5 <= inputs.health()["samples"] <= 60
    else:  # polled at the sample rate throughout
        assert settled_samples > 100


def test_edge_wait_still_retries_a_failing_input_and_sees_it_heal() -> None:
    pins = SimulatedPins({"D17": 0, "D27": 1})
    wiring = {"door_closed": InputWiring(pin="D17", debounce_ms=10),
              "safety_ok": InputWiring(pin="D27", debounce_ms=10)}
    inputs = DigitalInputs(wiring, InputsSettings(sample_hz=500), pins)
    inputs.idle_check_s = 0.05
    inputs.open()
    got: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()
    th = threading.Thread(target=inputs.run, args=(lambda t, d: got.append((t, d)), stop))
    th.start()
    time.sleep(0.1)
    pins.fail("D27", "unplugged")
    time.sleep(0.2)
    assert inputs.health()["faulty"] == ["safety_ok"]
    assert inputs.settled()  # a failing input does not keep the thread awake
    pins.set_level("D27", 0)
    pins.fail("D27", None)
    time.sleep(0.2)
    stop.set()
    inputs.wake()
    th.join(2)
    assert inputs.health()["ok"]
    assert got[0][1] == {"door_closed": 0, "safety_ok": 1}
    assert got[-1][1] == {"safety_ok": 0}


def test_simfeed_drives_pins_and_accel_from_another_socket(tmp_path: Path) -> None:
    pins = SimulatedPins()
    pins.setup_input("D17", "none")
    pins.setup_input("D27", "up")
    source = QueueSource()
    chip = SimADXL345(source, SimClock())
    rx = SimFeedReceiver(tmp_path, pins, source, chip)
    rx.start()
    tx = SimFeed(tmp_path)
    try:
        wiring = {"door_closed": InputWiring(pin="D17"),
                  "door_lock": InputWiring(pin="D27", active_low=True)}
        tx.set_inputs({"door_closed": 1, "door_lock": 1}, wiring)
        tx.push_accel([[0.0, 0.0, 1.0 + i / 1000] for i in range(2500)])
        tx.chip_fault(frozen=True)
        tx.send({"pins": "nonsense"})
        tx._sock.sendto(b"\xff not json", str(rx.path))
        deadline = time.monotonic() + 5  # 5 good (the samples go in 3 datagrams), 2 bad
        while rx.messages + rx.bad_messages < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rx.messages == 5
        assert pins.read("D17") is True and pins.read("D27") is False
        assert source.pending() == 2500
        assert chip.frozen
        assert rx.bad_messages == 2 and "not a JSON object" in rx.last_error
        with pytest.raises(SimFeedError, match="not wired"):
            tx.set_inputs({"presence": 1}, wiring)
    finally:
        tx.close()
        rx.stop()
    with pytest.raises(SimFeedError, match="no simulated terminal listens"):
        SimFeed(tmp_path).set_pins({"D17": 1})


@pytest.mark.parametrize(("data", "reason"), [
    (b"[]", "must be a JSON object"),
    (b'{"pins": {"D17": 2}}', "pins must be an object of pin: 0|1"),
    (b'{"acc": [[0, 0]]}', "an acc sample must be"),
    (b'{"acc": [[0, 0, NaN]]}', "an acc sample must be"),
    (b'{"acc": [[0, 0, 1' + b"0" * 400 + b']]}', "an acc sample must be"),  # > float range
    (b'{"acc_hold": [0, 0, -1' + b"0" * 400 + b']}', "acc_hold must be"),
    (b'{"acc_hold": "up"}', "acc_hold must be"),
    (b'{"chip": {"frozen": 1}}', "chip.frozen must be true or false"),
    (b'{"door": 1}', "unknown keys"),
])
def test_bad_feed_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SimFeedError, match=reason):
        parse_message(data)


def test_feed_sets_the_simulated_controller_and_refuses_bad_fields(tmp_path: Path) -> None:
    from liftwatch.drivers.controller import SimulatedController

    ctl = SimulatedController()
    rx = SimFeedReceiver(tmp_path, controller=ctl)
    assert rx.handle(b'{"ctl": {"floor": "2", "door": 4}}')
    assert ctl.values == {"floor": "2", "door": 4} and ctl.answering
    assert not rx.handle(b'{"ctl": {"door": 9, "floor": "3"}}')  # whole message refused
    assert ctl.values == {"floor": "2", "door": 4}
    assert "door" in rx.last_error
    assert rx.handle(b'{"ctl": null}')
    assert not ctl.answering


def test_feed_unplugs_and_heals_an_input_from_another_process(tmp_path: Path) -> None:
    pins = SimulatedPins()
    pins.setup_input("D27", "up")
    rx = SimFeedReceiver(tmp_path, pins)
    assert rx.handle(b'{"pins_fault": {"D27": "wire cut"}}')
    with pytest.raises(PinError, match="wire cut"):
        pins.read("D27")
    assert rx.handle(b'{"pins_fault": {"D27": null}}')
    assert pins.read("D27") is True
    assert not rx.handle(b'{"pins_fault": {"D27": 3}}')
    assert "pins_fault must be" in rx.last_error
