"""The fused lift state: one view of the lift built from the controller and the sensors.

Each quantity (door, zone, run, floor, mode, safety, lock, mains) can come from the
terminal's own inputs, from the controller's registers, or both. The rules read only
this fused view, so the same rule works on a sensors-only retrofit terminal, a
controller-only terminal and a terminal with both. Which source wins when both are
there is configured per quantity (``trust_*`` of DetectionParams, defaults of
events.md: sensors for door and zone, controller for floor and mode); when the
trusted source is missing or its link is down the other one is used.

An input that ``sensor_fault`` found stuck is replaced by the controller's view while
it stays stuck (``distrust``). The controller's last valid poll is kept when the link
drops: a stuck car stays a stuck car while the link is down, so entrapment timing goes
on with the last known controller view (and ``controller_link_lost`` says it is stale);
only after ``link_lost_s`` do the sensors take over what the controller was trusted for.

Times are the caller's clock (trace time, or monotonic seconds live), never wall time.
"""

from __future__ import annotations

from typing import Any

from liftwatch.signal.settings import DetectionParams, LiftParams

#: Controller door states (trace-format.md) meaning the door is closed.
DOOR_CLOSED_STATES = (2, 5)
#: Controller door states meaning the door is known and not closed.
DOOR_OPEN_STATES = (1, 3, 4, 6)
#: Service modes, trace-format.md.
MODE_NORMAL, MODE_INSPECTION = 1, 2
#: The controller's speed below this fraction of moving_speed means the car is at rest
#: (not merely slow: the last 0.4 s of a creep to a stop is below moving_speed).
REST_SPEED_RATIO = 0.2
#: Both leveling sensors dropping within this of a zone exit still tell its direction
#: by their order.
ZONE_EXIT_WINDOW_S = 10.0


class LiftState:
    """Inputs as last seen, and the fused quantities with the time each last changed.

    ``update(t)`` recomputes the fused view after an input changed and returns the
    names of the fused quantities that changed, so that door/trip trackers and rules
    only react to real transitions.
    """

    FUSED = ("moving", "door_closed", "in_zone", "floor", "mode", "presence", "alarm",
             "safety_open", "lock_open", "mains_lost", "on_battery", "direction")

    def __init__(self, lift: LiftParams, det: DetectionParams, *, controller_present: bool,
                 t0: float = 0.0) -> None:
        self.lift = lift
        self.det = det
        self.controller_present = controller_present
        self.landings = list(lift.landings)
        self.di: dict[str, int] = {}
        self.di_changed: dict[str, float] = {}
        self.ctl: dict[str, Any] | None = None   # last valid poll (kept when the link drops)
        self.ctl_t: float | None = None           # time of the last valid poll
        self.ctl_valid_run = 0                    # valid polls in a row
        self.ctl_seen_t: float = t0               # start of the link-lost timer
        self.pwr: dict[str, Any] | None = None
        self.motion: Any = None                   # MotionTracker when an accelerometer is there
        self.motion_floor: str | None = None
        self.t = t0
        self.t0 = t0
        # fused values and the time each took its value
        self.val: dict[str, Any] = dict.fromkeys(self.FUSED)
        self.since: dict[str, float] = dict.fromkeys(self.FUSED, t0)
        self.val["moving"] = False
        self.last_dir = 0                 # direction of the last run: 1 up, 2 down
        self.ctl_mode_last: int | None = None   # the controller's last known mode
        #: evidence of how the car left the door zone (None while in it): _on_zone_change
        self.zone_exit: dict[str, Any] | None = None
        self.floor_at_stop: str | None = None
        self.alarm_pressed_in_car = False  # presence inferred from the button (no PIR)
        #: since when the door is closed, a contact blip shorter than the debounce ignored
        self.door_closed_stable_since = t0
        self._door_open_at: float | None = None
        self.presence_since_close: float | None = None
        self._presence_before_open: float | None = None
        self.src = {"door": "", "zone": "", "run": "", "floor": "", "mode": ""}
        #: inputs found stuck: the controller's view replaces them while they are
        self.distrust: set[str] = set()

    # ------------------------------------------------------------------ inputs
    def on_di(self, t: float, data: dict[str, int]) -> None:
        for k, v in data.items():
            if self.di.get(k) != v:
                self.di_changed[k] = t
            self.di[k] = v
        self.t = t

    def on_ctl(self, t: float, data: dict[str, Any] | None) -> None:
        self.t = t
        if data is None:
            self.ctl_valid_run = 0
            return
        self.ctl = data
        self.ctl_t = t
        if data.get("mode") is not None:
            self.ctl_mode_last = int(data["mode"])
        self.ctl_valid_run += 1

    def on_pwr(self, t: float, data: dict[str, Any]) -> None:
        self.pwr = data
        self.t = t

    # ------------------------------------------------------------------ sources
    def ctl_fresh(self, t: float) -> bool:
        """The controller answered validly within link_lost_s."""
        return (self.ctl is not None and self.ctl_t is not None
                and t - self.ctl_t < self.det.link_lost_s)

    def _pick(self, trust: str, sen: Any, ctl: Any, fresh: bool, key: str) -> Any:
        """The trusted source's value; the other when it is missing; stale controller last."""
        if trust == "controller" and ctl is not None and fresh:
            self.src[key] = "ctl"
            return ctl
        if sen is not None:
            self.src[key] = "sen"
            return sen
        if ctl is not None:
            self.src[key] = "ctl"
            return ctl
        self.src[key] = ""
        return None

    def sensor_door_closed(self) -> bool | None:
        v = self.di.get("door_closed")
        return None if v is None else v == 1

    def ctl_door_state(self) -> int | None:
        """The controller's door state 1..6, or None when unknown or no controller."""
        if self.ctl is None:
            return None
        d = self.ctl.get("door")
        return int(d) if isinstance(d, int | float) and 1 <= d <= 6 else None

    def ctl_door_closed(self) -> bool | None:
        d = self.ctl_door_state()
        return None if d is None else d in DOOR_CLOSED_STATES

    def sensor_in_zone(self) -> bool | None:
        up, down = self.di.get("zone_up"), self.di.get("zone_down")
        if up is None and down is None:
            return None
        return bool((up if up is not None else 1) and (down if down is not None else 1))

    def ctl_in_zone(self) -> bool | None:
        z = None if self.ctl is None else self.ctl.get("zone")
        return None if z is None else bool(z)

    def sensor_run(self) -> bool | None:
        v = self.di.get("run")
        return None if v is None else v == 1

    def ctl_run(self) -> bool | None:
        v = None if self.ctl is None else self.ctl.get("run")
        return None if v is None else bool(v)

    def run_command(self, t: float) -> bool | None:
        """The run command as any source gives it: the run contactor input or the
        controller's running flag (fresh polls only). True when either is on, False when
        the known ones are off, None when the lift has no run signal at all.

        Unlike the fused ``moving`` (which trusts one source), a machine driven by either
        source is a run: the motor runtime limiter must see a stall that the other source
        or the car's motion does not show.
        """
        a = self.sensor_run()
        b = self.ctl_run() if self.ctl_fresh(t) else None
        if a is None and b is None:
            return None
        return bool(a) or bool(b)

    def car_rest(self, t: float) -> tuple[bool | None, float | None]:
        """Is the car itself at rest, whatever the run signal says, and since when if the
        source knows: the controller's speed when fresh (below ``REST_SPEED_RATIO`` of
        moving_speed: True; above moving_speed: False; between: None, undecided), else
        the accelerometer tracker's rest decision and the time the car came to rest by
        it; (None, None) without either source."""
        if self.ctl_fresh(t) and isinstance((self.ctl or {}).get("speed"), int | float):
            speed = abs(float(self.ctl["speed"]))  # type: ignore[index]
            if speed <= REST_SPEED_RATIO * self.det.moving_speed:
                return True, None
            # between the two: slowing to a stop, or a speed register that never reads 0
            return (None if speed <= self.det.moving_speed else False), None
        if self.motion is not None:
            at_rest = bool(self.motion.at_rest)
            return at_rest, getattr(self.motion, "rest_since", None) if at_rest else None
        return None, None

    def has_run_signal(self) -> bool:
        return "run" in self.di or (self.ctl is not None and "run" in self.ctl)

    def ctl_floor(self) -> str | None:
        f = None if self.ctl is None else self.ctl.get("floor")
        return f if isinstance(f, str) and f in self.landings else None

    def speed(self, t: float) -> float | None:
        """Speed magnitude: the controller's when fresh, else the accelerometer's estimate."""
        if self.ctl_fresh(t) and isinstance(self.ctl.get("speed"), int | float):  # type: ignore[union-attr]
            return abs(float(self.ctl["speed"]))  # type: ignore[index]
        if self.motion is not None:
            return abs(float(self.motion.speed))
        return None

    # ------------------------------------------------------------------ fusion
    def update(self, t: float) -> set[str]:
        """Recompute the fused view at ``t``; return the names that changed."""
        self.t = t
        det = self.det
        fresh = self.ctl_fresh(t)
        new: dict[str, Any] = {}
        # motion: the run signal when there is one (contactor first), else speed
        # a stale controller "running" is not carried over a lost link (the car does not
        # run for ever because the link dropped mid-trip): the run is then unknown
        run = self._pick("sensors", self.sensor_run(), self.ctl_run() if fresh else None,
                         fresh, "run")
        if run is not None:
            moving = run
        elif self.motion is not None:
            moving = bool(self.motion.moving)
            self.src["run"] = "sen"
        else:
            sp = self.speed(t)
            moving = sp is not None and sp > det.moving_speed
        new["moving"] = bool(moving)
        # an input found stuck (sensor_fault) is not trusted while the other source has a view
        sen_door = self.sensor_door_closed()
        if "door_closed" in self.distrust and self.ctl_door_closed() is not None:
            sen_door = None
        sen_zone = self.sensor_in_zone()
        if self.distrust & {"zone_up", "zone_down"} and self.ctl_in_zone() is not None:
            sen_zone = None
        new["door_closed"] = self._pick(det.trust_door, sen_door, self.ctl_door_closed(),
                                        fresh, "door")
        new["in_zone"] = self._pick(det.trust_zone, sen_zone, self.ctl_in_zone(), fresh, "zone")
        new["floor"] = self._pick(det.trust_floor, self.motion_floor, self.ctl_floor(), fresh,
                                  "floor") or self.val["floor"]
        sen_mode = None
        if "inspection" in self.di:
            sen_mode = MODE_INSPECTION if self.di["inspection"] else MODE_NORMAL
        ctl_mode = None if self.ctl is None else self.ctl.get("mode")
        ctl_mode = None if ctl_mode is None else int(ctl_mode)
        if ctl_mode is None and self.ctl is not None and "mode" not in self.ctl:
            # the poll came without the mode (its register block failed: the driver
            # leaves a failed block's fields out): the last mode the controller gave
            # stands, as over a lost link; a lift in inspection does not turn "normal"
            # because one block stopped answering
            ctl_mode = self.ctl_mode_last
        if (det.trust_mode == "controller" and not fresh and ctl_mode is not None
                and sen_mode != MODE_INSPECTION):
            # link lost: the last mode the controller gave stands (a lift in maintenance
            # does not turn "normal" because its link dropped), unless the inspection
            # switch says otherwise
            new["mode"] = ctl_mode
            self.src["mode"] = "ctl"
        else:
            new["mode"] = self._pick(det.trust_mode, sen_mode, ctl_mode, fresh, "mode")
        # direction: the controller's while it runs, else the accelerometer's sign
        direction = 0
        if new["moving"]:
            cd = None if (self.ctl is None or not fresh) else self.ctl.get("dir")
            if cd in (1, 2):
                direction = int(cd)
            elif self.motion is not None and abs(self.motion.speed) > det.moving_speed:
                direction = 1 if self.motion.speed > 0 else 2
            else:
                direction = self.val["direction"] or 0
        new["direction"] = direction
        if direction:
            self.last_dir = direction
        pres = self.di.get("presence")
        alarm = self.di.get("alarm_button")
        new["alarm"] = None if alarm is None else alarm == 1
        if new["alarm"]:
            self.alarm_pressed_in_car = True
        if new["door_closed"] is False:
            self.alarm_pressed_in_car = False
        new["presence"] = (pres == 1) if pres is not None else (
            True if self.alarm_pressed_in_car else None)
        s_safe = self.di.get("safety_ok")
        c_safe = None if self.ctl is None else self.ctl.get("safety")
        new["safety_open"] = self._pick("sensors", None if s_safe is None else s_safe == 0,
                                        None if c_safe is None else c_safe == 1, fresh, "safety")
        s_lock = self.di.get("door_lock")
        c_lock = None if self.ctl is None else self.ctl.get("lock")
        new["lock_open"] = self._pick("sensors", None if s_lock is None else s_lock == 0,
                                      None if c_lock is None else c_lock == 1, fresh, "lock")
        mains = self.di.get("mains_ok")
        on_batt = None if self.pwr is None else self.pwr.get("src") == 1
        new["on_battery"] = on_batt
        if mains is not None:
            new["mains_lost"] = mains == 0
        else:
            new["mains_lost"] = on_batt
        changed = set()
        for k, v in new.items():
            if v != self.val[k]:
                changed.add(k)
                self.val[k] = v
                self.since[k] = t
        # first sight of a person since the door closed: a person cannot board a closed
        # car, so presence appearing later (a PIR blip in a parked car) starts its own timer
        if "door_closed" in changed:
            if new["door_closed"] is False:
                self._door_open_at = t
                self._presence_before_open = self.presence_since_close
                self.presence_since_close = None
            elif new["door_closed"] is True:
                if (self._door_open_at is not None
                        and t - self._door_open_at < det.contact_debounce_s):
                    self.presence_since_close = self._presence_before_open   # a blip
                else:
                    self.door_closed_stable_since = t
        # (presence inferred from the alarm button proves the person was there all along)
        if new["door_closed"] is True and pres == 1 and self.presence_since_close is None:
            self.presence_since_close = t
        if "moving" in changed and not new["moving"]:
            self.floor_at_stop = new["floor"]
        if "in_zone" in changed:
            self._on_zone_change(t, new["in_zone"], fresh, run)
        return changed

    # ------------------------------------------------------------------ zone exit
    def _on_zone_change(self, t: float, in_zone: Any, fresh: bool, run: Any) -> None:
        """Keep the evidence of which way the car left the door zone.

        Taken at the exit, when it is there to see: which leveling sensor is still
        active (``zone_up`` reaches below the level window, ``zone_down`` above, so the
        one left on is the side the car went to) and the controller's direction; the
        accelerometer's direction is asked later (:meth:`exit_direction`), since the
        tracker decides in batches. A car that creeps off a landing with no run command
        (an unintended movement) may leave it either way, whatever the last run did.
        """
        if in_zone is not False:
            self.zone_exit = None
            return
        up, down = self.di.get("zone_up"), self.di.get("zone_down")
        sen = 0
        if up == 1 and down == 0:
            sen = 2
        elif down == 1 and up == 0:
            sen = 1
        elif up == 0 and down == 0:
            # both dropped: the later drop was the sensor that stayed on longer
            tu, td = self.di_changed.get("zone_up"), self.di_changed.get("zone_down")
            if tu is not None and td is not None and tu != td \
                    and t - min(tu, td) <= ZONE_EXIT_WINDOW_S:
                sen = 2 if tu > td else 1
        cd = None if (self.ctl is None or not fresh) else self.ctl.get("dir")
        self.zone_exit = {"t": t, "sen": sen, "ctl": int(cd) if cd in (1, 2) else 0,
                          "run": bool(run), "last_dir": self.last_dir}

    def exit_direction(self) -> int:
        """Which way the car left the door zone it was last in: 1 up, 2 down, 0 unknown.

        All the evidence, most direct first: the order of the leveling sensors' edges,
        the controller's direction, the accelerometer's direction at the zone edge, and
        last, for a car that left the zone *during a run*, that run's direction. A car
        that crept off with no run command and no other evidence is unknown: it may have
        gone either way."""
        ex = self.zone_exit
        if ex is None:
            return 0
        if ex["sen"]:
            return ex["sen"]
        if ex["ctl"]:
            return ex["ctl"]
        leave = getattr(self.motion, "leave_dir", 0) if self.motion is not None else 0
        if leave:
            return 1 if leave > 0 else 2
        return ex["last_dir"] if ex["run"] else 0

    # ------------------------------------------------------------------ views
    def __getattr__(self, name: str) -> Any:
        # fused values as attributes: state.moving, state.door_closed, ...
        val = self.__dict__.get("val")
        if val is not None and name in val:
            return val[name]
        raise AttributeError(name)

    def level(self) -> bool:
        """Stopped in a door zone."""
        return not self.val["moving"] and self.val["in_zone"] is not False

    def source_label(self) -> str:
        """``ctl``, ``sen`` or ``fused`` for the status message's ``src``."""
        used = {v for v in self.src.values() if v}
        if used == {"ctl"}:
            return "ctl"
        if used == {"sen"}:
            return "sen"
        return "fused"
