"""The simulated controller backend and the link's argument checks (no I/O)."""

from __future__ import annotations

import pytest
from liftwatch.drivers.controller import ControllerLink, ModbusController, SimulatedController
from liftwatch.drivers.settings import ControllerSettings
from modbus_helpers import LANDINGS, VALUES, example_map, run


class FakeClock:
    """A settable monotonic clock, so link-lost timing is exact."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_simulated_controller_serves_what_was_set() -> None:
    sim = SimulatedController(VALUES)
    assert isinstance(sim, ControllerLink)
    assert run(sim.poll()) == VALUES
    sim.set(floor="B1", door=4)
    assert run(sim.poll()) == {**VALUES, "floor": "B1", "door": 4}


def test_simulated_controller_link_loss_and_recovery() -> None:
    clock = FakeClock()
    sim = SimulatedController(VALUES, link_lost_s=2.0, clock=clock)
    assert run(sim.poll()) is not None
    sim.answering = False
    clock.t += 1.99
    assert run(sim.poll()) is None
    assert sim.health()["state"] == "ok"
    clock.t += 0.01
    assert sim.health()["state"] == "lost"
    assert sim.health()["polls_failed"] == 1
    sim.answering = True
    assert run(sim.poll()) == VALUES
    assert sim.health()["state"] == "ok" and sim.health()["last_ok_age_s"] == 0.0


def test_simulated_controller_without_values_is_not_answering() -> None:
    clock = FakeClock()
    sim = SimulatedController(link_lost_s=1.0, clock=clock)
    assert run(sim.poll()) is None
    clock.t += 1.0
    assert sim.health()["state"] == "lost"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("door", 7, "door: expected an integer 0..6, found 7"),
    ("mode", True, "mode: expected an integer 0..7, found True"),
    ("speed", -0.5, "speed: expected a magnitude >= 0"),
    ("speed", float("nan"), "speed: expected a magnitude >= 0"),
    ("floor", 3, "floor: expected a landing label"),
    ("fault", -1, "fault: expected a code >= 0"),
    ("altitude", 1, "altitude: not a controller field"),
])
def test_simulated_controller_rejects_bad_values(field: str, value: object, message: str
                                                 ) -> None:
    sim = SimulatedController(VALUES)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        sim.set(**{field: value})
    assert run(sim.poll()) == VALUES  # nothing half-applied


def test_link_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="controller.host"):
        ModbusController(ControllerSettings(transport="tcp", host=""), example_map(), LANDINGS)
    with pytest.raises(ValueError, match="link_lost_s"):
        ModbusController(ControllerSettings(), example_map(), LANDINGS, link_lost_s=0)
    with pytest.raises(ValueError, match="link_lost_s"):
        SimulatedController(link_lost_s=float("inf"))
