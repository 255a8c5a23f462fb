"""A lift simulator for the hardware-in-the-loop rig: one car, doors, passengers, faults.

It steps the physics at the accelerometer rate and produces what the terminal's
inputs would see, as records of trace-format.md: ``di`` changes of the leveling,
door, lock, presence, alarm, safety, mains and run contacts, a ``ctl`` snapshot at
every controller poll (what a register map decodes to), ``acc`` FIFO blocks of the
car accelerometer (ride vibration and sensor noise included, mounting tilt
optional) and ``pwr`` changes. The rig plays these over real interfaces (Modbus
server, simulated input and chip backends); tests can also write them to a trace.

Scenarios drive it with a few verbs (``trip``, ``door_cycle``, ``board``, ``press_alarm``,
``fault_stop``, ``cut_mains``, …); each verb advances simulated time and records the
*onset* of what it provokes, which the scenario suite scores the agent against.

The physics is :mod:`liftmodel`'s, shared with the detector tests' SynthLift and the
service's lift-days: jerk-limited S-curve trips (the profile the example traces
show); leveling vane geometry as measured on the example traces (docs/interfaces.md):
level while the sill is within ±door_zone_m, zone_up reaching `sensor_offset_m`
further below, zone_down further above; the accelerometer as mounted
(:class:`liftmodel.Sensor`); the controller's view. What is this module's own is the
stepping: each sample period the car's jerk, the door, the contacts and the chip's
FIFO advance, so the rig can play them over real interfaces as they happen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from liftmodel import (
    DOOR_CLOSED,
    DOOR_CLOSING,
    DOOR_HELD,
    DOOR_LOCKED,
    DOOR_OPEN,
    DOOR_OPENING,
    G,
    Sensor,
    Vanes,
    ctl_dir,
    ctl_view,
    rig_vibration,
    s_curve,
)

__all__ = ["DOOR_CLOSED", "DOOR_CLOSING", "DOOR_HELD", "DOOR_LOCKED", "DOOR_OPEN",
           "DOOR_OPENING", "G", "LiftSim", "Onset", "SimLift", "s_curve"]


@dataclass
class SimLift:
    """The building and the car: what a technician would write in the config."""

    landings: list[str] = field(default_factory=lambda: ["B1", "1", "2", "3", "4", "5"])
    heights: list[float] = field(default_factory=lambda: [0.0, 3.3, 6.4, 9.5, 12.6, 15.7])
    rated_speed: float = 1.6
    door_zone_m: float = 0.2
    accel: float = 0.8
    jerk: float = 1.0
    fs: int = 400
    lsb_per_g: int = 256
    block: int = 32
    poll_s: float = 0.2
    sensor_offset_m: float = 0.06
    door_open_s: float = 2.8
    door_close_s: float = 3.0
    noise_counts: float = 1.2
    vib_ms2: float = 0.05
    tilt_deg: float = 0.0
    controller: bool = True
    #: the terminal's accelerometer chip (the rig's config): adxl345 (one I2C read per
    #: FIFO sample) or lis3dh (the whole FIFO in one burst)
    chip: str = "adxl345"

    def header(self, lift_id: str = "31100000000000000099") -> dict[str, Any]:
        return {"trace": 1, "start": "2026-11-23T08:00:00Z",
                "lift": {"id": lift_id, "landings": self.landings,
                         "landing_heights_m": self.heights, "rated_speed": self.rated_speed,
                         "door_zone_m": self.door_zone_m},
                "accel": {"fs": self.fs, "lsb_per_g": self.lsb_per_g, "axes": "xyz"},
                "controller": {"present": self.controller}}

    def vanes(self) -> Vanes:
        return Vanes(tuple(self.heights), self.door_zone_m, self.sensor_offset_m)

    def sensor(self) -> Sensor:
        """The rig's chip: no bias or gain error, ``noise_counts`` on each axis, the
        mounting tilted ``tilt_deg`` about the car's y axis."""
        return Sensor.ideal(self.lsb_per_g, self.noise_counts, tilt_deg=(0.0, self.tilt_deg),
                            fs=self.fs, block=self.block)


@dataclass
class Onset:
    """When a scenario provoked a condition; the suite expects the agent's event after it."""

    what: str
    t: float


class LiftSim:
    """Step the lift and yield trace records; verbs script what happens."""

    def __init__(self, lift: SimLift | None = None, seed: int = 1, start_floor: int = 1) -> None:
        self.lift = lift or SimLift()
        self.rng = random.Random(seed)
        self.t = 0.0
        self.dt = 1.0 / self.lift.fs
        self.pos = self.lift.heights[start_floor]
        self.vel = 0.0
        self.acc = 0.0
        self.jerk = 0.0
        self.floor_label = self.lift.landings[start_floor]
        self.door = 0.0  # 0 closed .. 1 fully open
        self.door_motion = 0  # +1 opening, -1 closing
        self.door_jammed = False  # the operator drives the door but it does not move
        self.locked = True
        self.passengers = 0
        self.alarm = False
        self.safety_ok = True
        self.mains_ok = True
        self.battery = 100.0
        self.on_battery = False
        self.mode = 1
        self.run = False
        self.ctl_answers = True
        self._dir = 0
        self._overspeed = False
        self._above_rated = False
        self.onsets: list[Onset] = []
        self._di: dict[str, int] = {}
        #: the FIFO block filling: each sample's car-frame acceleration (m/s²) and its
        #: noise draws, rendered to counts by the chip model when the block is full
        self._acc_buf: list[tuple[float, float, float]] = []
        self._acc_noise: list[tuple[float, float, float]] = []
        self._acc_t0 = 0.0
        self._next_poll = 0.0
        self._out: list[tuple[float, str, Any]] = []
        self._vanes = self.lift.vanes()
        self._sensor = self.lift.sensor()
        self._rot = self._sensor.rotation()
        self._vib_phase = [self.rng.random() * 6.28 for _ in range(3)]
        self._emit_inputs(force=True)
        self._out.append((0.0, "pwr", {"src": 0, "batt": 100}))

    # ---------------------------------------------------------------- observation

    def _vane_state(self) -> tuple[bool, bool, int | None]:
        """zone_up, zone_down, and the landing whose level window holds the car."""
        idx, off = self._vanes.nearest(self.pos)
        up, down, level = self._vanes.levels(off)
        return bool(up), bool(down), (int(idx) if level else None)

    def level_index(self) -> int | None:
        """Landing whose level window (±door_zone_m) holds the car, else None."""
        return self._vane_state()[2]

    def inputs(self) -> dict[str, int]:
        """Levels of every digital input, named as in trace-format.md."""
        up, down, _ = self._vane_state()
        return {
            "door_closed": int(self.door <= 0.0),
            "door_lock": int(self.locked),
            "zone_up": int(up),
            "zone_down": int(down),
            "presence": int(self.passengers > 0),
            "alarm_button": int(self.alarm),
            "safety_ok": int(self.safety_ok),
            "mains_ok": int(self.mains_ok),
            "inspection": int(self.mode == 2),
            "run": int(self.run),
        }

    def door_state(self) -> int:
        if self.door_motion > 0:
            return DOOR_OPENING
        if self.door_motion < 0:
            return DOOR_CLOSING
        if self.door >= 1.0:
            return DOOR_OPEN
        if self.door <= 0.0:
            return DOOR_LOCKED if self.locked else DOOR_CLOSED
        return DOOR_HELD

    def controller_view(self) -> dict[str, Any]:
        """What the controller's registers say right now (trace-format.md fields)."""
        return ctl_view(mode=self.mode, run=int(self.run), direction=ctl_dir(self._dir, self.run),
                        floor=self.floor_label, door=self.door_state(),
                        zone=int(self.level_index() is not None), speed=self.vel,
                        safety=int(not self.safety_ok), lock=int(not self.locked))

    # ---------------------------------------------------------------- stepping

    def _emit_inputs(self, force: bool = False) -> None:
        now = self.inputs()
        changed = now if force else {k: v for k, v in now.items() if self._di.get(k) != v}
        if changed:
            self._out.append((round(self.t, 4), "di", changed))
            self._di.update(changed)

    def _accel_sample(self) -> None:
        """The car's acceleration now (ride vibration: full while moving, a tenth at rest)
        and the chip's noise draws for it, into the filling FIFO block."""
        lift = self.lift
        vib = lift.vib_ms2 if abs(self.vel) > 0.05 else lift.vib_ms2 * 0.1
        ax, ay, az = rig_vibration(self.t, vib, self._vib_phase)
        self._acc_buf.append((ax, ay, G + self.acc + az))
        gauss = self.rng.gauss
        self._acc_noise.append((gauss(0.0, 1.0), gauss(0.0, 1.0), gauss(0.0, 1.0)))

    def _acc_block(self) -> list[list[int]]:
        """The filled block as the chip's counts (tilt, noise, quantisation)."""
        counts = self._sensor.counts(np.asarray(self._acc_buf), np.asarray(self._acc_noise),
                                     rot=self._rot)
        self._acc_buf, self._acc_noise = [], []
        return counts.tolist()

    def step(self) -> None:
        """Advance one accelerometer sample period."""
        self.t += self.dt
        self.acc += self.jerk * self.dt
        self.vel += self.acc * self.dt
        self.pos += self.vel * self.dt
        if self.door_motion and not self.door_jammed:
            span = self.lift.door_open_s if self.door_motion > 0 else self.lift.door_close_s
            self.door = min(1.0, max(0.0, self.door + self.door_motion * self.dt / span))
            if self.door in (0.0, 1.0):
                self.door_motion = 0
        idx = self.level_index()
        if idx is not None:
            self.floor_label = self.lift.landings[idx]
        over = abs(self.vel) > 1.15 * self.lift.rated_speed
        if over and not self._overspeed:
            self.mark("overspeed")
        self._overspeed = over
        above = abs(self.vel) > self.lift.rated_speed
        if self._above_rated and not above:
            self.mark("below_rated")
        self._above_rated = above
        if self.on_battery:
            self.battery = max(0.0, self.battery - self.dt * 0.05)
        if not self._acc_buf:
            self._acc_t0 = self.t
        self._accel_sample()
        if len(self._acc_buf) >= self.lift.block:
            self._out.append((round(self._acc_t0, 4), "acc", self._acc_block()))
        if self.lift.controller and self.t >= self._next_poll:
            self._next_poll += self.lift.poll_s
            self._out.append((round(self.t, 4), "ctl",
                              self.controller_view() if self.ctl_answers else None))
        self._emit_inputs()

    def wait(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.step()

    def drain(self) -> list[tuple[float, str, Any]]:
        """Records produced so far, in time order (acc blocks stamped with their first sample)."""
        out, self._out = sorted(self._out, key=lambda r: r[0]), []
        if self._acc_buf:
            # an accelerometer block still filling starts at _acc_t0: hold back what
            # follows it, so the records stay in time order across drains
            keep = [r for r in out if r[0] >= self._acc_t0]
            out = [r for r in out if r[0] < self._acc_t0]
            self._out = keep
        return out

    def records(self) -> Iterator[tuple[float, str, Any]]:
        yield from self.drain()

    def mark(self, what: str) -> None:
        self.onsets.append(Onset(what, self.t))

    # ---------------------------------------------------------------- verbs

    def _move(self, segments: list[tuple[float, float]]) -> None:
        for duration, jerk in segments:
            self.jerk = jerk * self._dir
            self.wait(duration)
        self.jerk = 0.0
        self.acc = 0.0

    def trip(self, to: str, *, stop_after_s: float | None = None,
             speed: float | None = None, level_error_m: float = 0.0) -> None:
        """Run to landing ``to`` (doors must be closed); ``stop_after_s`` stalls the car;
        ``speed`` above the rated speed is a drive fault (overspeed); ``level_error_m``
        stops the car that far above (+) or below (-) the landing sill (leveling error)."""
        target = self.lift.heights[self.lift.landings.index(to)] + level_error_m
        distance = target - self.pos
        self._dir = 1 if distance > 0 else -1
        self.run = True
        self.mark("departed")
        self.wait(0.6)  # brake lift and start delay
        segments = s_curve(abs(distance), speed or self.lift.rated_speed, self.lift.accel,
                           self.lift.jerk)
        if stop_after_s is None:
            self._move(segments)
            self.vel = 0.0
            self.pos = target
        else:
            elapsed = 0.0
            for duration, jerk in segments:
                take = min(duration, stop_after_s - elapsed)
                if take <= 0:
                    break
                self.jerk = jerk * self._dir
                self.wait(take)
                elapsed += take
            self._emergency_stop()
        self.wait(0.5)
        self.run = False
        self.mark("stopped")

    def _emergency_stop(self) -> None:
        """Brake at about 1.5 m/s² with a short jerk-limited ramp, as a drive trip does."""
        decel = -1.5 * (1 if self.vel > 0 else -1)
        self.jerk = 0.0
        self.acc = decel
        while abs(self.vel) > abs(decel) * self.dt and self.vel * decel < 0:
            self.step()
        self.acc = 0.0
        self.vel = 0.0

    def open_door(self) -> None:
        self.wait(0.2)
        self.locked = False
        self.wait(0.12)
        self.door_motion = 1
        self.mark("door_opening")
        self.wait(self.lift.door_open_s + self.dt)

    def close_door(self, reopens: int = 0) -> None:
        for _ in range(reopens):
            self.door_motion = -1
            self.wait(self.lift.door_close_s * 0.4)
            self.door_motion = 1
            self.mark("reopen")
            self.wait(self.lift.door_open_s * 0.4 + self.dt)
            self.wait(1.0)
        self.door_motion = -1
        self.wait(self.lift.door_close_s + self.dt)
        self.wait(0.3)
        self.locked = True
        self.wait(0.1)

    def door_cycle(self, dwell_s: float = 4.0, reopens: int = 0, board: int = 0,
                   leave: int = 0) -> None:
        self.open_door()
        self.passengers = max(0, self.passengers - leave)
        self.wait(dwell_s / 2)
        self.passengers += board
        self.wait(dwell_s / 2)
        self.close_door(reopens)

    def service(self, to: str, board: int = 1, leave: int = 1, dwell_s: float = 4.0) -> None:
        """An ordinary call: passengers board, ride to ``to``, leave."""
        self.door_cycle(dwell_s=dwell_s, board=board)
        self.wait(1.0)
        self.trip(to)
        self.door_cycle(dwell_s=dwell_s, leave=leave)

    def press_alarm(self, hold_s: float) -> None:
        self.alarm = True
        self.mark("alarm_pressed")
        self.wait(hold_s)
        self.alarm = False

    def cut_mains(self, seconds: float, controller_silent: bool = True) -> None:
        self.mains_ok = False
        self.on_battery = True
        self._out.append((round(self.t, 4), "pwr", {"src": 1, "batt": round(self.battery)}))
        if controller_silent:
            self.ctl_answers = False
        self.mark("mains_lost")
        self.wait(seconds)
        self.mains_ok = True
        self.on_battery = False
        self.ctl_answers = True
        self._out.append((round(self.t, 4), "pwr", {"src": 0, "batt": round(self.battery)}))
        self.mark("mains_back")

    def open_safety(self, seconds: float) -> None:
        self.safety_ok = False
        self.mark("safety_open")
        self.wait(seconds)
        self.safety_ok = True
        self.mark("safety_made")

    def set_mode(self, mode: int) -> None:
        self.mode = mode
        self.mark(f"mode_{mode}")

    def controller_silent(self, seconds: float) -> None:
        self.ctl_answers = False
        self.mark("ctl_silent")
        self.wait(seconds)
        self.ctl_answers = True
        self.mark("ctl_back")

    def relevel(self, to: str) -> None:
        """Rescue: the car is moved to a landing at creep speed (0.3 m/s) with doors closed."""
        target = self.lift.heights[self.lift.landings.index(to)]
        self._dir = 1 if target > self.pos else -1
        self.run = True
        self.wait(0.5)
        segments = s_curve(abs(target - self.pos), 0.3, 0.3, 0.5)
        self._move(segments)
        self.vel = 0.0
        self.pos = target
        self.wait(0.5)
        self.run = False
        self.mark("relevelled")

    def stall(self, seconds: float) -> None:
        """The machine is driven but the car does not move (brake not lifting, traction
        loss, car jammed): the run signal is on for ``seconds``; onsets run_on, run_off."""
        self._dir = self._dir or 1
        self.run = True
        self.mark("run_on")
        self.wait(seconds)
        self.run = False
        self.mark("run_off")

    def drift(self, distance_m: float, speed: float = 0.15) -> None:
        """Unintended car movement: the car slides ``distance_m`` (signed) with the run
        signal off, then comes to rest; onsets drift_start and came_to_rest."""
        self._dir = 1 if distance_m > 0 else -1
        self.mark("drift_start")
        self._move(s_curve(abs(distance_m), speed, 0.3, 0.5))
        self.vel = 0.0
        self.mark("came_to_rest")

    def jam_door(self, seconds: float) -> None:
        """The door operator is told to open but the door does not move for ``seconds``
        (a jammed door: the controller shows opening, the contact stays closed), then it
        opens as usual; onset door_jammed."""
        self.wait(0.2)
        self.locked = False
        self.door_jammed = True
        self.door_motion = 1
        self.mark("door_jammed")
        self.wait(seconds)
        self.door_jammed = False
        self.wait(self.lift.door_open_s + self.dt)
