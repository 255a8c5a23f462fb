"""The pipeline: samples in, events / trips / door cycles out (docs/interfaces.md).

``feed`` takes one sample record, ``advance`` lets timers run up to ``t`` (the
caller calls it at least every 0.1 s between records), ``finish`` ends the input.
The same object runs live (monotonic seconds) and in replay (trace seconds); it
never reads a clock of its own, so a wall-clock step cannot move a timer.

Cost per record is O(1): accelerometer blocks go to the MotionTracker and only wake
the rules when motion matters (no run signal, a door standing open, a speed check);
``advance`` does nothing until the earliest rule deadline.

With an accelerometer, a trip record is completed once the MotionTracker has booked
the stop (at most ``TRIP_SETTLE_S`` after it): on a sensors-only terminal that is when
the arrival floor and the leveling error are known. Its ``t`` is that decision time;
``t_end`` is the stop. A failure inside the tracker drops the tracker (reported in
``health()``), never the detection: entrapment works from inputs and controller alone.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from liftwatch.signal.baselines import Baselines
from liftwatch.signal.detectors import Detectors
from liftwatch.signal.doors import DoorTracker
from liftwatch.signal.events import EventBook
from liftwatch.signal.settings import DetectionParams, LiftParams
from liftwatch.signal.state import DOOR_CLOSED_STATES, LiftState
from liftwatch.signal.stats import Stats
from liftwatch.signal.trends import DAY_S, Trends
from liftwatch.signal.trips import TripTracker

#: di inputs that have a controller counterpart: a stuck input is one that never
#: changes over trips in which the controller saw its counterpart change.
STUCK_PAIRS = (("door_closed", "door"), ("zone_up", "zone"), ("zone_down", "zone"),
               ("run", "run"))
ACCEL_CHECK_S = 1.0
#: longest wait after a stop for the motion tracker to book it (floor, leveling error)
TRIP_SETTLE_S = 3.0


def _motion_available() -> bool:
    try:
        import liftwatch.signal.motion  # noqa: F401
    except ImportError:
        return False
    return True


def _make_motion(lift: LiftParams, fs: float, lsb_per_g: float,
                 rotation: list[list[float]] | None, moving_speed: float) -> Any:
    from liftwatch.signal.motion import MotionTracker
    return MotionTracker(lift, fs, lsb_per_g, rotation=rotation, auto_orient=rotation is None,
                         moving_speed=moving_speed)


class Pipeline:
    """Lift state, door cycles, trips, detectors, baselines and statistics of one lift."""

    def __init__(self, lift: LiftParams, detection: DetectionParams, *,
                 accel_fs: float | None, lsb_per_g: float | None, controller_present: bool,
                 rotation: list[list[float]] | None = None, event_id_prefix: str = "",
                 baselines: dict[str, Any] | None = None) -> None:
        self.lift = lift
        self.det = detection
        self.controller_present = controller_present
        self.motion: Any = None
        if accel_fs and _motion_available():
            self.motion = _make_motion(lift, float(accel_fs), float(lsb_per_g or 256),
                                       rotation, detection.moving_speed)
        self.state = LiftState(lift, detection, controller_present=controller_present)
        self.state.motion = self.motion
        edges = baselines.get("zone_edges") if isinstance(baselines, dict) else None
        #: the vanes' edge offsets to save while no tracker holds them (none, or given up)
        self._zone_edges: dict[str, Any] = edges if isinstance(edges, dict) else {}
        if self.motion is not None:
            self.motion.restore_edges(self._zone_edges)
        self.book = EventBook(detection.max_per_day, event_id_prefix)
        self.doors = DoorTracker(min_open_s=detection.contact_debounce_s)
        self.trips = TripTracker(lift, self.motion)
        self.book.between = lambda: (self.trips.standing_between(self.state.val["floor"])
                                     if self.state.val["in_zone"] is False else None)
        self.baselines = Baselines(baselines)
        self.rules = Detectors(lift, detection, self.book, self.state, self.doors,
                               controller_present=controller_present,
                               has_accel=bool(accel_fs), baselines=self.baselines)
        self.stats = Stats(self.book)
        stored = baselines.get("trends") if isinstance(baselines, dict) else None
        self.trends = Trends(stored if isinstance(stored, dict) else None)
        self._started = False
        self._t = 0.0
        self._last_ctl: dict[str, Any] | None = None
        self._ctl_view: dict[str, Any] = {}
        self._ctl_view_changed: dict[str, float] = {}
        self._window_start = 0.0          # start of the current stuck-input window
        self._stuck: dict[str, int] = {}
        self._next_accel_check = 0.0
        self._pending_trip: tuple[dict[str, Any], float] | None = None
        self._stop_err: float | None = None
        self._stop_unc: float | None = None       # its expanded uncertainty (mm)
        self._motion_rest: tuple[bool, float | None] = (False, None)   # tracker's rest, since
        self.motion_error = ""            # why the motion tracker was given up, if it was
        self.rejected = 0                 # records refused as malformed
        self.last_rejection = ""

    # ------------------------------------------------------------------ input
    def _begin(self, t: float) -> None:
        self._started = True
        self._t = t
        st = self.state
        st.t0 = st.t = st.ctl_seen_t = t
        for k in st.since:
            st.since[k] = t
        st.door_closed_stable_since = t
        self.rules.next_self_test = t + self.det.self_test_h * 3600.0
        self.rules.sup_end = -math.inf
        self._window_start = t

    def _reject(self, why: str) -> list[dict[str, Any]]:
        self.rejected += 1
        self.last_rejection = why
        return []

    def feed(self, t: float, kind: str, data: Any) -> list[dict[str, Any]]:
        """One sample record (trace-format.md); returns the records decided at ``t``.

        A malformed record is refused (counted in ``rejected``, reason in
        ``last_rejection``) without touching the state; a time going backwards is
        refused the same way, so the timers stay monotonic.
        """
        if not isinstance(t, int | float) or not math.isfinite(t):
            return self._reject(f"bad time {t!r}")
        t = float(t)
        if not self._started:
            self._begin(t)
        if t < self._t - 1e-9:
            return self._reject(f"time goes backwards ({t} after {self._t})")
        out: list[dict[str, Any]] = []
        if t > self._t:
            out += self.advance(t)
        self._t = t
        out += self._trend_day(t)
        if kind == "acc":
            return out + self._on_acc(t, data)
        if kind == "di":
            if not isinstance(data, dict) or not all(
                    isinstance(k, str) and v in (0, 1) and not isinstance(v, float)
                    for k, v in data.items()):
                return out + self._reject(f"di must map input names to 0|1, found {data!r}")
            data = {k: int(v) for k, v in data.items()}
            self.state.on_di(t, data)
            if "zone_up" in data or "zone_down" in data:
                self._motion_call("on_zone", t, self.state.di.get("zone_up"),
                                  self.state.di.get("zone_down"))
            if "run" in data:
                self._motion_call("on_run", t, bool(data["run"]))
        elif kind == "ctl":
            if data is not None and not isinstance(data, dict):
                return out + self._reject(f"ctl must be an object or null, found {data!r}")
            if data is not None:
                data = self._clean_ctl(data)
            self.state.on_ctl(t, data)
            if data is not None:
                self._track_ctl_view(t, data)
                self._motion_call("on_controller", t, data)
                if (data == self._last_ctl and self.state.ctl_valid_run > self.det.link_ok_count
                        and t < self._deadline()):
                    return out          # nothing new: the next deadline still holds
            self._last_ctl = data
        elif kind == "pwr":
            if not isinstance(data, dict) or data.get("src") not in (0, 1):
                return out + self._reject(f"pwr must be {{src: 0|1, batt}}, found {data!r}")
            self.state.on_pwr(t, data)
        else:
            return out + self._reject(f"unknown record kind {kind!r}")
        return out + self._step(t)

    def _clean_ctl(self, data: dict[str, Any]) -> dict[str, Any]:
        """Drop fields of the wrong type (a garbled register) instead of the whole poll."""
        clean: dict[str, Any] = {}
        isfinite = math.isfinite
        for k, v in data.items():
            tv = type(v)               # plain numbers first: a poll every tenth of a second
            if (tv is int or (tv is float and isfinite(v))) and k != "floor":
                clean[k] = v
            elif k == "floor":
                clean[k] = str(v) if isinstance(v, int | str) and not isinstance(v, bool) else None
            elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                clean[k] = v
            else:
                self.rejected += 1
                self.last_rejection = f"ctl {k} must be a number, found {v!r}"
        return clean

    def _track_ctl_view(self, t: float, data: dict[str, Any]) -> None:
        door = data.get("door")
        view = {"door": None if door is None or not 1 <= door <= 6
                else door in DOOR_CLOSED_STATES,
                "zone": data.get("zone"), "run": data.get("run")}
        for k, v in view.items():
            if v is not None and self._ctl_view.get(k) is not None and self._ctl_view[k] != v:
                self._ctl_view_changed[k] = t
            if v is not None:
                self._ctl_view[k] = v

    def _on_acc(self, t: float, data: Any) -> list[dict[str, Any]]:
        # cheap shape check here (O(1)); the accel chain checks every sample's values
        if (not isinstance(data, list) or not data or not isinstance(data[0], list | tuple)
                or len(data[0]) != 3 or len(data[-1]) != 3):
            return self._reject("acc must be a non-empty list of [x, y, z] counts")
        if not self.rules.has_accel:
            return []
        self.rules.on_acc(t)
        wake = self.rules.sensor_issues.get("accel") == "silent"
        if self.motion is None:
            return self._step(t) if wake or t >= self._deadline() else []
        try:
            self.motion.on_acc(t, data)
        except (TypeError, ValueError) as exc:
            return self._reject(f"acc block refused: {exc}")
        except Exception as exc:  # noqa: BLE001 - the lift first: go on without the tracker
            self._drop_motion(exc)
            return self._step(t)
        if self._pending_trip is not None and self.motion.at_rest:
            wake = True      # the tracker has booked the stop: floor and leveling known
        if t >= self._next_accel_check:
            self._next_accel_check = t + ACCEL_CHECK_S
            wake = self._check_accel() or wake
        st = self.state
        fl = self.motion.floor_index
        floor = (self.lift.landings[fl] if fl is not None and 0 <= fl < len(self.lift.landings)
                 else None)
        if floor != st.motion_floor:
            st.motion_floor = floor
            wake = True
        if not st.has_run_signal() and bool(self.motion.moving) != bool(st.val["moving"]):
            wake = True
        rest = (bool(self.motion.at_rest), getattr(self.motion, "rest_since", None))
        if rest != self._motion_rest:
            self._motion_rest = rest
            wake = True      # the car itself started or came to rest (rules: car_rest)
        if (self.rules.ucm_armed and st.val["in_zone"] is None) or (
                st.val["moving"] and not st.ctl_fresh(t)):
            wake = True      # the accelerometer is the source for UCM distance / speed
        if wake or t >= self._deadline():
            return self._step(t)
        return []

    def _drop_motion(self, exc: BaseException) -> None:
        """A failure inside the motion tracker must not stop entrapment detection: the
        pipeline goes on from inputs and controller, and health() reports the error."""
        self.motion_error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            self._zone_edges = self.motion.edges_state()   # the reference outlives it
        self.motion = self.state.motion = self.trips.motion = None
        self.state.motion_floor = None

    def _motion_call(self, name: str, *args: Any) -> None:
        if self.motion is None:
            return
        try:
            getattr(self.motion, name)(*args)
        except Exception as exc:  # noqa: BLE001 - see _drop_motion
            self._drop_motion(exc)

    def _check_accel(self) -> bool:
        """Saturation and implausible gravity at rest: accelerometer sensor faults."""
        m, det, issues = self.motion, self.det, self.rules.sensor_issues
        before = issues.get("accel")
        problem = None
        if getattr(m, "saturated", False):
            problem = "saturated"
        elif getattr(m, "at_rest", False):
            g = getattr(m, "gravity_g", None)
            if isinstance(g, int | float) and not det.gravity_min_g <= g <= det.gravity_max_g:
                problem = f"gravity {g:.2f} g at rest"
        if problem:
            issues["accel"] = problem
        elif before is not None and before != "silent":
            del issues["accel"]
        return issues.get("accel") != before

    # ------------------------------------------------------------------ time
    def _deadline(self) -> float:
        d = self.rules.next_deadline
        dd = self.doors.deadline()
        if self._pending_trip is not None:
            d = min(d, self._pending_trip[1])
        return d if dd is None else min(d, dd)

    def advance(self, t: float) -> list[dict[str, Any]]:
        """Let timers run up to ``t``: rules whose deadline has come are decided now."""
        if not self._started:
            self._begin(t)
        if t < self._t:
            return []
        self._t = t
        out: list[dict[str, Any]] = []
        out += self._trend_day(t)
        if t >= self._deadline():
            out += self._step(t)
        return out

    def _trend_day(self, t: float) -> list[dict[str, Any]]:
        """Close the wear-trend day when a day of the pipeline's clock has passed."""
        if self.trends.day_start is None or t - self.trends.day_start >= DAY_S:
            return self._trend_events(t, self.trends.tick(t))
        return []

    def _trend_events(self, t: float, reqs: list[tuple[str, str, dict[str, Any]]]
                      ) -> list[dict[str, Any]]:
        """The wear-trend module's verdicts (signal/trends.py) through the EventBook."""
        out: list[dict[str, Any]] = []
        for action, code, detail in reqs:
            if action == "raise":
                out += self.book.raise_(t, code, None, detail)
            else:
                out += self.book.clear(t, code, None, detail or None)
        return out

    def _feed_trends_trip(self, rec: dict[str, Any]) -> None:
        if self.rules.suppressed():
            return      # inspection / fire service runs are not the lift's service
        self.trends.on_trip(rec, self._stop_err if rec.get("level") is not False else None,
                            learn_vib=not self.book.is_open("vibration_abnormal"),
                            learn_level=not self.book.is_open("leveling_drift"))

    def _feed_trends_door(self, rec: dict[str, Any]) -> None:
        if not self.rules.suppressed():
            self.trends.on_door(rec, learn=not self.book.is_open("door_slow"))

    def maintenance_done(self, t: float) -> list[dict[str, Any]]:
        """A maintenance visit restored the lift: the wear references are learned again
        (downlink ``maintenance_done``, ``liftwatch maintenance --done``)."""
        return self._trend_events(t, self.trends.restart())

    def _step(self, t: float) -> list[dict[str, Any]]:
        st = self.state
        changed = st.update(t)
        out: list[dict[str, Any]] = []
        trip_rec = None
        if self._pending_trip is not None and (
                t >= self._pending_trip[1] or ("moving" in changed and st.val["moving"])
                or (self.motion is not None and self.motion.at_rest)):
            trip_rec = self._settle_trip()
        if "moving" in changed:
            if st.val["moving"]:
                self._check_stuck(t)
                self.trips.start(t, st.val["floor"], st.val["in_zone"])
                self.rules.on_trip_start(t)
            else:
                rec = self.trips.stop(t, st.val["floor"], st.last_dir, st.val["in_zone"])
                if rec is not None and self.motion is not None:
                    # the tracker books a stop once the car is at rest: wait for it
                    self._pending_trip = (rec, t + TRIP_SETTLE_S)
                else:
                    trip_rec, self._stop_err, self._stop_unc = rec, None, None
        door_recs = self.doors.update(
            t, contact_closed=st.sensor_door_closed(),
            lock_made=None if "door_lock" not in st.di else st.di["door_lock"] == 1,
            ctl_door=st.ctl_door_state() if st.ctl_fresh(t) else None,
            floor=st.val["floor"], moving=bool(st.val["moving"]))
        if self.trips.failed is not None:
            self._drop_motion(self.trips.failed)
            self.trips.failed = None
        out += self.rules.evaluate(t)
        if trip_rec is not None:
            out.append(trip_rec)
            self.stats.on_trip(trip_rec)
            out += self.rules.on_trip(t, trip_rec, self._stop_err, self._stop_unc)
            self._feed_trends_trip(trip_rec)
        for rec in door_recs:
            out.append(rec)
            self.stats.on_door(rec)
            out += self.rules.on_door(t, rec)
            self._feed_trends_door(rec)
        return out

    def _settle_trip(self) -> dict[str, Any]:
        """The held trip record, completed with what the tracker learnt at the stop: the
        arrival floor (sensors-only terminals) and the leveling error."""
        assert self._pending_trip is not None
        rec = self._pending_trip[0]
        self._pending_trip = None
        st = self.state
        self._stop_err = self._stop_unc = None
        if self.motion is not None:
            if st.src.get("floor") != "ctl" and st.motion_floor is not None:
                rec["to"] = st.motion_floor
            # only an estimate booked at a rest after this trip began is this stop's (the
            # next run may start before the tracker, deciding in batches, saw this rest)
            rest_t = getattr(self.motion, "rest_since", None)
            booked = (bool(self.motion.at_rest) and isinstance(rest_t, float)
                      and rest_t >= rec["t_start"])
            try:
                if booked:
                    self._stop_err = self.motion.stop_position_error_mm()
                    self._stop_unc = self.motion.stop_position_uncertainty_mm()
            except Exception as exc:  # noqa: BLE001 - see _drop_motion
                self._drop_motion(exc)
        rec["t"] = round(max(rec["t"], self._t), 3)
        return rec

    def _check_stuck(self, t: float) -> None:
        """At each trip start: did each input change since the last one, as the controller's did?"""
        st, issues = self.state, self.rules.sensor_issues
        for name, view in STUCK_PAIRS:
            if name not in st.di:
                continue
            ctl_changed = self._ctl_view_changed.get(view, -math.inf) >= self._window_start
            di_changed = st.di_changed.get(name, -math.inf) > self._window_start
            if di_changed:
                self._stuck[name] = 0
                if issues.get(name) == "stuck":
                    del issues[name]
            elif ctl_changed:
                self._stuck[name] = self._stuck.get(name, 0) + 1
                if self._stuck[name] >= self.det.stuck_trips:
                    issues[name] = "stuck"
        self._window_start = t
        st.distrust = {k for k, v in issues.items() if v == "stuck"}

    def finish(self, t: float) -> list[dict[str, Any]]:
        """End of input: decide due timers, close an open trip and a closed door cycle."""
        out = self.advance(t)
        st = self.state
        if self._pending_trip is not None:
            rec = self._settle_trip()
            out.append(rec)
            self.stats.on_trip(rec)
            out += self.rules.on_trip(t, rec, self._stop_err, self._stop_unc)
            self._feed_trends_trip(rec)
        rec = self.trips.stop(t, st.val["floor"], st.last_dir, st.val["in_zone"],
                              complete=False)
        if rec is not None:
            out.append(rec)
            self.stats.on_trip(rec)
        for d in self.doors.finish(t):
            out.append(d)
            self.stats.on_door(d)
        return out

    def controller_blocks(self, t: float, failing: list[dict[str, Any]]
                          ) -> list[dict[str, Any]]:
        """``controller_block_failed`` from the link driver's verdict on its register
        blocks (only the driver sees the bus; a trace holds the decoded values, so a
        replay does not repeat this event): raised with ``failing`` as detail, cleared
        when none fails."""
        code = "controller_block_failed"
        if failing:
            return self.book.raise_(t, code, self.state.val["floor"], {"blocks": failing})
        return self.book.clear(t, code)

    def self_test(self, t: float) -> list[dict[str, Any]]:
        """On-demand self test (downlink ``self_test``)."""
        return self.rules.self_test(t)

    # ------------------------------------------------------------------ views
    def baselines_state(self) -> dict[str, Any]:
        """The learned state kept across restarts: baselines, wear references and the
        leveling vanes' edge offsets (the stop-position reference, signal/motion.py)."""
        edges = self.motion.edges_state() if self.motion is not None else self._zone_edges
        return {**self.baselines.state(), "trends": self.trends.state(), "zone_edges": edges}

    @property
    def stop_error_mm(self) -> tuple[float | None, float | None]:
        """Leveling error (mm, car sill minus landing sill) and its expanded uncertainty at
        the stop of the trip output last; None when the sensors gave no estimate."""
        return self._stop_err, self._stop_unc

    def status(self) -> dict[str, Any]:
        """The status message fields of platform-protocol.md, codes of trace-format.md."""
        st, v = self.state, self.state.val
        ctl = st.ctl or {}
        door = st.ctl_door_state() if st.src.get("door") == "ctl" else None
        if door is None and v["door_closed"] is not None:
            door = 2 if v["door_closed"] else 4
        speed = st.speed(self._t)
        return {"mode": v["mode"], "run": int(bool(v["moving"])), "dir": v["direction"] or 0,
                "floor": v["floor"], "door": door or 0,
                "zone": None if v["in_zone"] is None else int(v["in_zone"]),
                "person": None if v["presence"] is None else int(v["presence"]),
                "speed": None if speed is None else round(speed, 2),
                "safety": None if v["safety_open"] is None else int(v["safety_open"]),
                "lock": None if v["lock_open"] is None else int(v["lock_open"]),
                "overload": ctl.get("overload"), "src": st.source_label()}

    def health(self) -> dict[str, Any]:
        """Each input's health and the accelerometer's, for the health message."""
        st, issues = self.state, self.rules.sensor_issues
        inputs = {name: {"level": lvl, "changed_s": round(self._t - st.di_changed[name], 1)
                         if name in st.di_changed else None,
                         "ok": issues.get(name) is None}
                  for name, lvl in st.di.items()}
        out: dict[str, Any] = {"inputs": inputs, "rejected_records": self.rejected}
        conf = self.rules.confidence()
        if conf:
            out["confidence"] = conf      # rules that cannot judge with these estimates
        if self.controller_present:
            out["controller"] = {"ok": st.ctl_fresh(self._t),
                                 "last_valid_s": None if st.ctl_t is None
                                 else round(self._t - st.ctl_t, 1)}
        if self.motion_error:
            out["accel"] = {"ok": False, "issue": "motion tracker failed",
                            "error": self.motion_error}
        if self.motion is not None:
            m = self.motion
            last = self.rules.last_acc_t
            out["accel"] = {"ok": "accel" not in issues, "issue": issues.get("accel"),
                            "last_block_s": None if last is None else round(self._t - last, 2),
                            "gravity_g": getattr(m, "gravity_g", None),
                            "saturated": bool(getattr(m, "saturated", False))}
        return out
