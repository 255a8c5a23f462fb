"""Every rule of the events.md catalogue, on the fused lift state.

The rules are evaluated when an input changed and when a timer falls due: each
rule whose condition holds but whose timer has not run out yet registers its
deadline in ``next_deadline``, so the pipeline's ``advance(t)`` does nothing between
deadlines (no per-sample work). All times are the caller's monotonic/trace clock.

Choices beyond the letter of events.md (each a documented default):

- A suppressible rule whose condition began during a suppressing mode counts its
  timer from the end of that mode: returning from inspection with the car parked
  out of zone gives the lift ``outside_zone_s`` to relevel before it is a fault.
- ``door_lock_circuit_open`` ignores the door zone, like ``door_open_while_moving``:
  the lock opening while the car levels in the zone is the normal advance opening.
- Without a presence input, presence is inferred from the alarm button: a press
  since the door last opened means a person is in the car.
- An invalid controller floor must persist ``FLOOR_INVALID_S`` (one corrupted poll
  is not a lost position).
- Entrapment timers ignore door-contact blips shorter than ``contact_debounce_s``, and
  a presence input that first sees someone *after* the door closed (nobody can board
  a closed car: a PIR blip in a parked car) starts the timer from that first sight.
- ``alarm_button_abuse`` counts short presses (released within ``abuse_short_s``) made
  while no entrapment is open and no suppressing mode is on (a technician testing the
  button in inspection is no prank); a longer hold or an entrapment clears it at once.
  It only reports the pattern: every press that meets ``alarm_press_s`` is still sent.
- The accelerometer's speed is judged for ``overspeed`` only during a run (at rest the
  speed is zero by definition), and the ``ucm_distance`` criterion of
  ``moving_with_door_open`` is used only without zone inputs (leaving the zone comes
  first whenever they exist; the tracker may re-anchor its position at rest).
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

from liftwatch.signal.baselines import MIN_N, AnomalyWindow, Baselines
from liftwatch.signal.chain import STANDARD_GRAVITY
from liftwatch.signal.doors import DoorTracker
from liftwatch.signal.events import CATALOGUE, SUPPRESSING_MODES, EventBook
from liftwatch.signal.settings import DetectionParams, LiftParams
from liftwatch.signal.state import LiftState

FLOOR_INVALID_S = 0.5
#: a controller speed between rest and moving_speed this long counts as rest (see
#: _rest_since)
SLOW_REST_S = 2.0
#: door_slow: the smallest rise over the learned door time called slow. A door time read
#: from controller polls is uncertain by a poll (0.2 s typical) at each end.
DOOR_MIN_RISE_S = 0.5
#: stops whose position uncertainty decides whether leveling_drift can judge
LEVEL_UNC_N = 20
INF = math.inf


class Detectors:
    """The catalogue's rules; ``evaluate(t)`` returns the event records decided at ``t``."""

    def __init__(self, lift: LiftParams, det: DetectionParams, book: EventBook,
                 state: LiftState, doors: DoorTracker, *, controller_present: bool,
                 has_accel: bool, baselines: Baselines) -> None:
        self.lift = lift
        self.det = det
        self.book = book
        self.st = state
        self.doors = doors
        self.controller_present = controller_present
        self.has_accel = has_accel
        self.baselines = baselines
        self.next_deadline = INF
        self._since: dict[str, float] = {}
        self.sup_end = -INF            # when the last suppressing mode ended
        self._suppressed = False
        self._mode_seen: int | None = None
        self.run_index = 0             # trips started so far
        self.run_door_closed_at_start = True
        self.dowm_run = -1             # run in which door_open_while_moving was raised
        self.ucm_armed = False
        self.ucm_pos: float | None = None
        self.last_acc_t: float | None = None
        self.sensor_issues: dict[str, str] = {}
        self.sensor_ok_trips = 0
        self.next_self_test = state.t0 + det.self_test_h * 3600.0
        n, h, c = det.anomaly_window, det.anomaly_hits, det.normal_clear_count
        self.vib_win = AnomalyWindow(n, h, c)
        self.door_win = AnomalyWindow(n, h, c)
        self.level_wins: dict[str, AnomalyWindow] = {}
        self.drift_landing: str | None = None
        self._first_closing: float | None = None   # door_close_fault: see _door_faults
        #: expanded uncertainty of the last stop-position estimates (leveling_drift)
        self.level_unc: deque[float] = deque(maxlen=LEVEL_UNC_N)
        #: alarm_button_abuse: start of the press in progress, ends of recent short presses
        self._press_start: float | None = None
        self._short_presses: deque[float] = deque()

    # ------------------------------------------------------------------ helpers
    def _due(self, start: float, delay: float, t: float) -> bool:
        due = start + delay
        if t >= due - 1e-9:
            return True
        if due < self.next_deadline:
            self.next_deadline = due
        return False

    def _hold(self, key: str, cond: bool, t: float) -> float | None:
        """Since when ``cond`` has held at every evaluation (None when false now)."""
        if cond:
            return self._since.setdefault(key, t)
        self._since.pop(key, None)
        return None

    def _rest_since(self, t: float, stop_t: float) -> float | None:
        """Since when the car is stopped *and at rest*: the later of the stop (run signal
        off) and the car's own motion (controller speed, accelerometer) ending; None while
        the car still moves. Without a motion source the stop alone counts; a speed that
        stays between rest and moving_speed (a register that never reads 0) counts as rest
        after ``SLOW_REST_S``, from when it fell below moving_speed."""
        still, since = self.st.car_rest(t)
        s = self._hold("car_not_moving", still is not False, t)
        r = self._hold("car_rest", still is True, t)
        if s is None:
            return None
        if r is not None:
            # the tracker knows when the car came to rest: better than the time the rule
            # first saw it (the tracker decides in batches)
            return max(stop_t, r if since is None else since)
        if self.st.ctl_fresh(t) and still is None and (self.st.ctl or {}).get("speed") is not None:
            return max(stop_t, s) if self._due(s, SLOW_REST_S, t) else None
        return max(stop_t, s)

    def _held(self, key: str, cond: bool, delay: float, t: float) -> bool:
        s = self._hold(key, cond, t)
        return s is not None and self._due(s, delay, t)

    def _start(self, code: str, start: float) -> float:
        """Timer start of a rule: suppressible rules count from the end of suppression."""
        return max(start, self.sup_end) if CATALOGUE[code].suppressible else start

    def _raise(self, t: float, code: str, detail: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
        if self._suppressed and CATALOGUE[code].suppressible:
            return []
        return self.book.raise_(t, code, self.st.val["floor"], detail)

    def _clear(self, t: float, code: str) -> list[dict[str, Any]]:
        if not self.book.is_open(code):
            return []
        return self.book.clear(t, code, self.st.val["floor"])

    def suppressed(self) -> bool:
        return self._suppressed

    # ------------------------------------------------------------------ hooks
    def on_trip_start(self, t: float) -> None:
        self.run_index += 1
        self.run_door_closed_at_start = self.st.val["door_closed"] is not False

    def on_acc(self, t: float) -> None:
        self.last_acc_t = t

    # ------------------------------------------------------------------ rules
    def evaluate(self, t: float) -> list[dict[str, Any]]:
        self.next_deadline = INF
        st, v = self.st, self.st.val
        out: list[dict[str, Any]] = []
        # --- mode and suppression
        sup = (v["mode"] in SUPPRESSING_MODES) or st.di.get("inspection") == 1
        if self._suppressed and not sup:
            self.sup_end = t
        self._suppressed = sup
        mode = v["mode"]
        if mode is not None:
            if self._mode_seen is not None and mode != self._mode_seen:
                out += self.book.raise_(t, "mode_change", v["floor"],
                                        {"from": self._mode_seen, "to": mode})
            self._mode_seen = mode
        moving = bool(v["moving"])
        stopped = not moving
        stop_t = st.since["moving"]
        door_closed = v["door_closed"]
        in_zone = v["in_zone"]
        presence = v["presence"]
        out += self._entrapment(t, stopped, stop_t, door_closed, in_zone, presence)
        out += self._alarm(t, stopped, door_closed, in_zone)
        out += self._zone_rules(t, stopped, stop_t, in_zone, presence)
        out += self._speed(t)
        out += self._door_motion(t, moving, door_closed, in_zone)
        out += self._power_safety(t)
        out += self._door_faults(t, stopped, door_closed, in_zone)
        out += self._runtime_floor(t, moving)
        out += self._link(t)
        out += self._sensors(t)
        if t >= self.next_self_test - 1e-9:
            out += self.self_test(t, periodic=True)
        self.next_deadline = min(self.next_deadline, self.next_self_test)
        return out

    def self_test(self, t: float, periodic: bool = False) -> list[dict[str, Any]]:
        """Raise ``self_test`` now (periodic every self_test_h, or on demand)."""
        if periodic:
            self.next_self_test = t + self.det.self_test_h * 3600.0
        return self.book.raise_(t, "self_test", self.st.val["floor"],
                                {"periodic": periodic})

    def _entrapment(self, t: float, stopped: bool, stop_t: float, door_closed: Any,
                    in_zone: Any, presence: Any) -> list[dict[str, Any]]:
        det, st, out = self.det, self.st, []
        lvl_open = self.book.is_open("entrapment_level")
        non_open = self.book.is_open("entrapment_nonlevel")
        if stopped and door_closed is True and presence is True:
            start = max(stop_t, st.door_closed_stable_since,
                        st.presence_since_close or st.door_closed_stable_since)
            rest = self._rest_since(t, stop_t)
            if in_zone is False and not lvl_open:
                if rest is not None and self._due(max(start, rest, st.since["in_zone"]),
                                                  det.entrap_nonlevel_s, t):
                    out += self._raise(t, "entrapment_nonlevel",
                                       {"stopped_s": round(t - stop_t, 1), "level": False})
            elif (in_zone is not False and not non_open
                  and self._due(start, det.entrap_level_s, t)):
                out += self._raise(t, "entrapment_level",
                                   {"stopped_s": round(t - stop_t, 1), "level": True})
        for code in ("entrapment_level", "entrapment_nonlevel"):
            if not self.book.is_open(code):
                continue
            if door_closed is False or presence is not True and self._due(st.since["presence"],
                                                    det.presence_clear_s, t):
                out += self._clear(t, code)
        return out

    def _alarm(self, t: float, stopped: bool, door_closed: Any, in_zone: Any
               ) -> list[dict[str, Any]]:
        det, st = self.det, self.st
        out = self._abuse(t)
        if st.val["alarm"]:
            start = st.since["alarm"]
            exempt = stopped and in_zone is True and door_closed is False
            if (not exempt and self._due(start, det.alarm_press_s, t)) or (
                    exempt and self._due(start, det.alarm_hold_bypass_s, t)):
                return out + self._raise(t, "alarm_button", {"held_s": round(t - start, 2),
                                                             "bypass": exempt})
            return out
        if (self.book.is_open("alarm_button") and not self.book.is_open("entrapment_level")
                and not self.book.is_open("entrapment_nonlevel")):
            return out + self._clear(t, "alarm_button")
        return out

    def _abuse(self, t: float) -> list[dict[str, Any]]:
        """alarm_button_abuse: many short presses reported as a pattern (never a filter)."""
        det, st, out = self.det, self.st, []
        entrapped = (self.book.is_open("entrapment_level")
                     or self.book.is_open("entrapment_nonlevel"))
        pressed = bool(st.val["alarm"])
        if pressed and self._press_start is None:
            self._press_start = st.since["alarm"]
        elif not pressed and self._press_start is not None:
            end = st.since["alarm"]
            if end - self._press_start <= det.abuse_short_s and not entrapped \
                    and not self._suppressed:
                self._short_presses.append(end)
            self._press_start = None
        presses = self._short_presses
        while presses and t - presses[0] >= det.abuse_window_s:
            presses.popleft()
        genuine = entrapped or (pressed and self._press_start is not None
                                and t - self._press_start > det.abuse_short_s)
        if genuine:
            presses.clear()
        if self.book.is_open("alarm_button_abuse"):
            if genuine or not presses:
                out += self._clear(t, "alarm_button_abuse")
        elif len(presses) >= det.abuse_presses:
            out += self._raise(t, "alarm_button_abuse",
                               {"presses": len(presses), "window_s": det.abuse_window_s})
        if pressed and self._press_start is not None:   # a hold becomes genuine then
            self._due(self._press_start, det.abuse_short_s + 1e-3, t)
        if presses:
            self._due(presses[0], det.abuse_window_s, t)
        return out

    def _beyond(self, top: bool, stopped: bool, in_zone: Any) -> bool:
        st = self.st
        limit = st.di.get("limit_top" if top else "limit_bottom") == 1
        if not stopped:
            return False
        if limit:
            return True
        if in_zone is not False or not self.lift.landings:
            return False
        end = self.lift.landings[-1] if top else self.lift.landings[0]
        # beyond the terminal landing only if the car left its zone toward the end of the
        # shaft: a car creeping off the top landing downward is below it, not overtravel
        return st.val["floor"] == end and st.exit_direction() == (1 if top else 2)

    def _zone_rules(self, t: float, stopped: bool, stop_t: float, in_zone: Any,
                    presence: Any) -> list[dict[str, Any]]:
        det, out = self.det, []
        beyond = False
        for top, code in ((True, "overtravel_top"), (False, "overtravel_bottom")):
            cond = self._beyond(top, stopped, in_zone)
            beyond = beyond or cond
            if cond and self._due(self._start(code, stop_t), det.overtravel_s, t):
                out += self._raise(t, code, {"limit": self.st.di.get(
                    "limit_top" if top else "limit_bottom")})
            elif in_zone is True and not cond:
                out += self._clear(t, code)
        code = "stopped_outside_zone"
        rest = self._rest_since(t, stop_t)
        if (stopped and in_zone is False and presence is not True and not beyond
                and rest is not None and not self.book.is_open("entrapment_nonlevel")):
            # the car at rest outside the zone: counted from the later of the stop, the
            # car leaving the zone and the car coming to rest (after an unintended
            # movement the car slides on with the run signal off)
            start = max(rest, self.st.since["in_zone"])
            if self._due(self._start(code, start), det.outside_zone_s, t):
                out += self._raise(t, code, {"stopped_s": round(t - stop_t, 1)})
        elif in_zone is True:
            out += self._clear(t, code)
        return out

    def _speed(self, t: float) -> list[dict[str, Any]]:
        det = self.det
        sp = self.st.speed(t)
        if sp is None:
            return []
        if not self.st.ctl_fresh(t) and not self.st.val["moving"]:
            # the accelerometer's speed estimate is only judged during a run: at rest
            # the speed is zero by definition and any figure there is estimator noise
            sp = 0.0
        limit = det.overspeed_ratio * self.lift.rated_speed
        if self._held("overspeed", sp > limit, det.overspeed_s, t):
            return self._raise(t, "overspeed", {"speed": round(sp, 3), "limit": round(limit, 3)})
        if self.book.is_open("overspeed") and self._held(
                "overspeed_ok", sp < self.lift.rated_speed, det.overspeed_clear_s, t):
            return self._clear(t, "overspeed")
        return []

    def _door_motion(self, t: float, moving: bool, door_closed: Any, in_zone: Any
                     ) -> list[dict[str, Any]]:
        det, st, out = self.det, self.st, []
        m = st.motion
        # door_open_while_moving: the door opens during a run that started closed
        cond = (moving and door_closed is False and in_zone is not True
                and self.run_door_closed_at_start)
        if self._held("dowm", cond, det.contact_debounce_s, t):
            got = self._raise(t, "door_open_while_moving", {"run": self.run_index})
            if got:
                self.dowm_run = self.run_index
            out += got
        elif not moving and door_closed is True:
            out += self._clear(t, "door_open_while_moving")
        # moving_with_door_open: unintended car movement from a landing with the door open
        if door_closed is True:
            self.ucm_armed = False
            self.ucm_pos = None
        elif not moving and in_zone is True and door_closed is False and not self.ucm_armed:
            self.ucm_armed = True
            self.ucm_pos = float(m.position_m) if m is not None else None
        moved = False
        if self.ucm_armed and door_closed is False:
            moved = in_zone is False
            if m is not None and in_zone is None:   # no zone input: the distance criterion
                # distance counts only while the tracker sees motion: at rest it may
                # re-anchor its position to the sill, which is not car movement
                if not m.moving or self.ucm_pos is None:
                    self.ucm_pos = float(m.position_m)
                moved = moved or abs(float(m.position_m) - self.ucm_pos) > det.ucm_distance
        cond = moved and self.dowm_run != self.run_index
        if self._held("ucm", cond, det.contact_debounce_s, t):
            out += self._raise(t, "moving_with_door_open", {"in_zone": in_zone})
        elif not moving and door_closed is True:
            out += self._clear(t, "moving_with_door_open")
        # door_lock_circuit_open while moving (outside the zone: see module doc)
        lock_open = st.val["lock_open"]
        cond = moving and lock_open is True and in_zone is not True
        if self._held("lock", cond, det.contact_debounce_s, t):
            out += self._raise(t, "door_lock_circuit_open", {"run": self.run_index})
        elif not moving and lock_open is False:
            out += self._clear(t, "door_lock_circuit_open")
        return out

    def _power_safety(self, t: float) -> list[dict[str, Any]]:
        det, st, out = self.det, self.st, []
        lost = st.val["mains_lost"]
        if lost is True and self._due(self._start("power_loss", st.since["mains_lost"]),
                                      det.power_loss_s, t):
            out += self._raise(t, "power_loss", {"battery": (st.pwr or {}).get("batt")})
        elif lost is False and self.book.is_open("power_loss") and self._due(
                st.since["mains_lost"], det.power_restore_s, t):
            out += self._clear(t, "power_loss")
        pwr = st.pwr or {}
        batt = pwr.get("batt")
        if st.val["on_battery"] and isinstance(batt, int | float) and batt < det.battery_low_pct:
            out += self._raise(t, "battery_low", {"batt": batt})
        elif not st.val["on_battery"] or (isinstance(batt, int | float)
                                          and batt > det.battery_clear_pct):
            out += self._clear(t, "battery_low")
        so = st.val["safety_open"]
        code = "safety_circuit_open"
        if so is True and self._due(self._start(code, st.since["safety_open"]), det.safety_s, t):
            out += self._raise(t, code, {"source": st.src.get("safety")})
        elif so is False and self.book.is_open(code) and self._due(
                st.since["safety_open"], det.safety_clear_s, t):
            out += self._clear(t, code)
        return out

    def _door_faults(self, t: float, stopped: bool, door_closed: Any, in_zone: Any
                     ) -> list[dict[str, Any]]:
        det, out, c = self.det, [], self.doors.cycle
        code = "door_open_fault"
        op = self.doors.opening_since
        if stopped and in_zone is not False and op is not None:
            if self._due(self._start(code, op), det.door_open_fault_s, t):
                out += self._raise(t, code, {"opening_s": round(t - op, 1)})
        elif self.book.is_open(code) and self.st.ctl_door_state() == 4:
            out += self._clear(t, code)
        # door_close_fault: both timers count within the door's current open spell (the
        # fused door view not closed), never from the cycle's first command: a door told
        # to open long before it could (a jammed door, an entrapment) is not "held open"
        code = "door_close_fault"
        if door_closed is not False:
            self._first_closing = None
        if door_closed is True:
            out += self._clear(t, code)
        elif c is not None and door_closed is False:
            open_at = self.st.since["door_closed"]
            if self._first_closing is None and self.st.ctl_fresh(t) and (
                    self.st.ctl_door_state() in (1, 6)):
                self._first_closing = t          # first closing attempt of this spell
            fc = self._first_closing
            if fc is not None and self._due(self._start(code, fc), det.door_close_fault_s, t):
                out += self._raise(t, code, {"closing_s": round(t - fc, 1)})
            elif stopped and self._due(self._start(code, open_at), det.door_held_open_s, t):
                out += self._raise(t, code, {"held_open_s": round(t - open_at, 1)})
        code = "door_reopen_repeated"
        if c is not None and stopped and c.reopens >= det.reopen_count:
            out += self._raise(t, code, {"reopens": c.reopens})
        elif not stopped:
            out += self._clear(t, code)
        return out

    def _runtime_floor(self, t: float, moving: bool) -> list[dict[str, Any]]:
        det, st, out = self.det, self.st, []
        # the run command (contactor or controller flag, either), not the car's motion:
        # a stalled car, a slipping rope or a brake that does not lift keeps it on
        code = "motor_runtime_exceeded"
        run = st.run_command(t)
        if run is None:          # no run signal at all: the estimated motion stands in
            run = moving
        since = self._hold("run_cmd", run, t)
        if since is not None and self._due(self._start(code, since), det.runtime_limit_s, t):
            out += self._raise(t, code, {"run_s": round(t - since, 1)})
        elif since is None:
            out += self._clear(t, code)
        code = "floor_position_lost"
        invalid = disagree = False
        if st.ctl_fresh(t) and st.ctl is not None and "floor" in st.ctl and self.lift.landings:
            invalid = st.ctl_floor() is None
            disagree = (not moving and st.val["in_zone"] is True
                        and st.motion_floor is not None
                        and st.ctl_floor() is not None and st.motion_floor != st.ctl_floor())
        a = self._held("floor_invalid", invalid, FLOOR_INVALID_S, t)
        b = self._held("floor_disagree", disagree, det.disagree_s, t)
        if a or b:
            out += self._raise(t, code, {"ctl_floor": (st.ctl or {}).get("floor"),
                                         "own_floor": st.motion_floor})
        elif not invalid and not disagree:
            out += self._clear(t, code)
        return out

    def _link(self, t: float) -> list[dict[str, Any]]:
        if not self.controller_present:
            return []
        st = self.st
        last = st.ctl_t if st.ctl_t is not None else st.t0
        code = "controller_link_lost"
        if self._due(last, self.det.link_lost_s, t):
            return self._raise(t, code, {"last_valid_s": round(t - last, 1)})
        if st.ctl_valid_run >= self.det.link_ok_count:
            return self._clear(t, code)
        return []

    def _sensors(self, t: float) -> list[dict[str, Any]]:
        det, st, out = self.det, self.st, []
        # accelerometer silence is a timer; other issues are set by the pipeline
        if self.has_accel:
            last = self.last_acc_t if self.last_acc_t is not None else st.t0
            if self._due(last, det.accel_silent_s, t):
                self.sensor_issues["accel"] = "silent"
            elif self.sensor_issues.get("accel") == "silent":
                del self.sensor_issues["accel"]
        if self.sensor_issues:
            self.sensor_ok_trips = 0
            out += self._raise(t, "sensor_fault", dict(self.sensor_issues))
        # disagreement between the sources on door, zone and motion
        fresh = st.ctl_fresh(t)
        diff: list[str] = []
        if fresh:
            for name, a, b in (("door", st.sensor_door_closed(), st.ctl_door_closed()),
                               ("zone", st.sensor_in_zone(), st.ctl_in_zone()),
                               ("motion", st.sensor_run(), st.ctl_run())):
                if a is not None and b is not None and a != b:
                    diff.append(name)
        code = "sensor_disagreement"
        if self._held("disagree", bool(diff), det.disagree_s, t):
            out += self._raise(t, code, {"on": diff})
        elif self.book.is_open(code) and self._held("agree", not diff, det.agree_clear_s, t):
            out += self._clear(t, code)
        if diff:
            self._since.pop("agree", None)
        return out

    # ------------------------------------------------------------------ per trip / cycle
    def on_trip(self, t: float, rec: dict[str, Any], stop_error_mm: float | None,
                stop_uncertainty_mm: float | None = None) -> list[dict[str, Any]]:
        """Anomaly rules on a finished trip: vibration, leveling, sensor-fault recovery.

        ``stop_uncertainty_mm`` is the expanded uncertainty of ``stop_error_mm`` (None: an
        exact figure); a stop is out of tolerance only when the error *minus* it exceeds
        ``leveling_tol_mm``."""
        det, out = self.det, []
        if not self.sensor_issues:
            self.sensor_ok_trips += 1
            if self.sensor_ok_trips >= det.sensor_ok_trips:
                out += self._clear(t, "sensor_fault")
        if self._suppressed:
            return out
        vib = rec.get("vib_pp_a95")
        vib = {a: x for a, x in vib.items() if isinstance(x, int | float)} \
            if isinstance(vib, dict) else {}
        if vib:          # z is absent on trips too short for a constant-speed region
            learn = not self.book.is_open("vibration_abnormal")
            d = rec.get("dir") or "?"
            abnormal = (vib.get("z", 0.0) > det.vib_limit_z
                        or max(vib.get("x", 0.0), vib.get("y", 0.0)) > det.vib_limit_xy)
            pair = f"{rec.get('from')}>{rec.get('to')}"
            res = self._vib_resolution()
            for a in vib:
                # the most specific baseline that is ready: the landing pair's (a long
                # express run and a one-floor hop vibrate differently), else the
                # direction's, else the whole lift's (usable after MIN_N trips in all)
                chain = [self.baselines.get(f"vib:{d}:{pair}:{a}"),
                         self.baselines.get(f"vib:{d}:{a}"), self.baselines.get(f"vib:{a}")]
                b = next((x for x in chain if x.ready()), chain[-1])
                if b.ready():
                    med = b.centre_spread()[0]
                    # the learned spread of a few regular trips is tiny: a rise must also
                    # exceed vib_min_rise of the median and the sensor's resolution
                    rise = max(det.vib_min_rise * abs(med), det.anomaly_k * res)
                    abnormal = abnormal or b.is_anomalous(vib[a], det.anomaly_k, rise)
                if learn:
                    for x in chain:
                        x.learn(vib[a])
            self.vib_win.add(abnormal)
            if self.vib_win.should_raise():
                out += self._raise(t, "vibration_abnormal", {"vib_pp_a95": vib})
            elif self.vib_win.should_clear():
                out += self._clear(t, "vibration_abnormal")
        if rec.get("from") and rec.get("to") and isinstance(rec.get("duration_s"), float):
            self.baselines.get(f"dur:{rec['from']}>{rec['to']}").learn(rec["duration_s"])
        landing = rec.get("to")
        if stop_error_mm is not None and landing is not None and rec.get("level") is not False:
            w = self.level_wins.setdefault(landing, AnomalyWindow(
                det.anomaly_window, det.anomaly_hits, det.normal_clear_count))
            unc = max(0.0, float(stop_uncertainty_mm or 0.0))
            self.level_unc.append(unc)
            w.add(abs(stop_error_mm) - unc > det.leveling_tol_mm)
            if w.should_raise() and not self.book.is_open("leveling_drift"):
                self.drift_landing = landing
                detail = {"landing": landing, "error_mm": round(float(stop_error_mm), 1)}
                if stop_uncertainty_mm is not None:
                    detail["uncertainty_mm"] = round(unc, 1)
                out += self._raise(t, "leveling_drift", detail)
            elif landing == self.drift_landing and w.should_clear():
                out += self._clear(t, "leveling_drift")
        return out

    def _vib_resolution(self) -> float:
        """The accelerometer's resolution as a vibration figure's standard uncertainty:
        one count (m/s²) over √12, the rms of the quantisation error; 0 when unknown."""
        lsb = getattr(self.st.motion, "lsb_per_g", None)
        if not isinstance(lsb, int | float) or lsb <= 0:
            return 0.0
        return STANDARD_GRAVITY / float(lsb) / math.sqrt(12.0)

    def confidence(self) -> dict[str, Any]:
        """Rules whose estimates cannot support a judgement now (for ``health``).

        ``leveling_drift``: the median expanded uncertainty of the recent stop-position
        estimates against the tolerance: above it, an error between the tolerance and the
        tolerance plus the uncertainty cannot be seen (only larger ones are raised).
        ``vibration_abnormal``: while the lift's own baseline is still being learned only
        the absolute limits apply.
        """
        out: dict[str, Any] = {}
        tol = self.det.leveling_tol_mm
        if self.level_unc:
            u = float(median(self.level_unc))
            entry: dict[str, Any] = {"cannot_judge": u > tol, "uncertainty_mm": round(u, 1),
                                     "tolerance_mm": tol, "stops": len(self.level_unc)}
            if u > tol:   # (health goes out every 5 min on a metered link: short)
                entry["reason"] = (f"stop position ±{u:.0f} mm > {tol:g} mm tolerance "
                                   f"(accelerometer resolution/noise): only errors beyond "
                                   f"{tol + u:.0f} mm are raised")
            out["leveling_drift"] = entry
        if self.has_accel:
            b = self.baselines.by_key.get("vib:z")
            n = 0 if b is None else len(b.values)
            if n < MIN_N:
                out["vibration_abnormal"] = {
                    "cannot_judge": True, "trips": n,
                    "reason": f"learning the lift's baseline ({n} of {MIN_N} trips): "
                              f"absolute limits only"}
        return out

    def on_door(self, t: float, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """door_slow on a finished door cycle with measured open/close times."""
        det = self.det
        times = {k: rec.get(k) for k in ("open_s", "close_s")}
        times = {k: v for k, v in times.items() if isinstance(v, int | float)}
        if not times or self._suppressed:
            return []
        learn = not self.book.is_open("door_slow")
        abnormal = False
        for k, v in times.items():
            b = self.baselines.get(f"door:{rec.get('floor')}:{k}")
            abnormal = (abnormal or v > det.door_time_limit_s
                        or b.is_anomalous(v, det.anomaly_k, DOOR_MIN_RISE_S))
            if learn:
                b.learn(v)
        self.door_win.add(abnormal)
        if self.door_win.should_raise():
            return self._raise(t, "door_slow", times)
        if self.door_win.should_clear():
            return self._clear(t, "door_slow")
        return []
