"""``liftwatch check``'s judgement of the inputs: would this lift, left as it stands,
raise an event? A reversed ``active_low`` or a wrong pin reads as a perfectly good
level on the pin; what gives it away is the lift's state: mains "lost" on a lift that
runs, a safety circuit "open", a door "open" that the controller calls closed.

So check does not judge a pin alone. It feeds what it read (the inputs and the
controller's polls of the watch window) into the detectors' own
:class:`~liftwatch.signal.pipeline.Pipeline`, holds that state (the last poll repeated,
the inputs unchanged) for ``hold_s`` (long enough for the slowest rule a lift at rest
can break: ``outside_zone_s``, the entrapment timers) and lists the events that are
open at the end, each with the inputs that make it and the likely cause. No rule is
repeated here: only the explanation of an event is.

Beside the events, a few pictures a healthy lift at rest never shows, between the
inputs themselves and against the controller where both see the same thing: a
door-lock circuit made with the car door open, a door open outside the door zone, a
safety circuit, lock or inspection switch that the controller reads the other way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liftwatch.signal.pipeline import Pipeline

STEP_S = 0.1  # the pipeline's advance grid (it wants a call at least every 0.1 s)
HOLD_MARGIN_S = 1.0
#: what 1 and 0 mean on each input (trace-format.md)
MEANING: dict[str, tuple[str, str]] = {
    "door_closed": ("door closed", "door open"),
    "door_lock": ("lock circuit made", "lock circuit open"),
    "zone_up": ("in its zone", "out of its zone"),
    "zone_down": ("in its zone", "out of its zone"),
    "presence": ("person in the car", "car empty"),
    "alarm_button": ("alarm button pressed", "alarm button released"),
    "safety_ok": ("safety circuit made", "safety circuit open"),
    "mains_ok": ("mains on", "mains lost"),
    "inspection": ("inspection mode", "normal mode"),
    "run": ("running", "stopped"),
    "limit_top": ("top limit reached", "top limit clear"),
    "limit_bottom": ("bottom limit reached", "bottom limit clear"),
}
#: what the event says about the lift, in a technician's words
SAYS = {
    "power_loss": "the mains is off",
    "safety_circuit_open": "the safety circuit is open",
    "sensor_disagreement": "the sensors and the controller disagree",
    "stopped_outside_zone": "the car stands outside the door zone",
    "entrapment_level": "a person is shut in the car",
    "entrapment_nonlevel": "a person is shut in the car between floors",
    "alarm_button": "the alarm button is held",
    "overtravel_top": "the car is beyond the top landing",
    "overtravel_bottom": "the car is beyond the bottom landing",
}


@dataclass
class Finding:
    """One thing the lift at rest would report, or a picture it cannot show."""

    inputs: list[str]      # the inputs that make it ([]: the controller's side)
    text: str              # what and why, without the inputs' levels
    event: str = ""        # the event code the detectors would raise, if any


@dataclass
class Judgement:
    findings: list[Finding] = field(default_factory=list)
    hold_s: float = 0.0

    def for_input(self, name: str) -> list[Finding]:
        return [f for f in self.findings if name in f.inputs]

    def others(self) -> list[Finding]:
        return [f for f in self.findings if not f.inputs]


def hold_time(det: Any) -> float:
    """How long the read state is held: the slowest rule a lift at rest can break."""
    return max(det.outside_zone_s, det.entrap_level_s, det.entrap_nonlevel_s,
               det.disagree_s, det.power_loss_s, det.safety_s, det.overtravel_s,
               det.alarm_press_s) + HOLD_MARGIN_S


def judge(cfg: Any, records: list[tuple[float, str, Any]], t_end: float) -> Judgement:
    """Feed ``records`` (``di`` and ``ctl`` of the watch window, in time order) to the
    pipeline, hold the last state, and explain what it would report."""
    det = cfg.detection
    pipe = Pipeline(cfg.lift, det, accel_fs=None, lsb_per_g=None,
                    controller_present=bool(cfg.controller.enabled))
    raised: dict[str, dict[str, Any]] = {}

    def note(out: list[dict[str, Any]]) -> None:
        for rec in out:
            if rec.get("type") == "event" and rec.get("state") == "raised":
                raised[rec["code"]] = rec

    last_ctl = None
    for t, kind, data in records:
        if kind in ("di", "ctl"):
            note(pipe.feed(t, kind, data))
            if kind == "ctl" and data is not None:
                last_ctl = data
    hold = hold_time(det)
    poll = cfg.controller.poll_interval_s
    t, next_poll = t_end, t_end
    while t < t_end + hold:
        t = round(t + STEP_S, 6)
        if last_ctl is not None and t >= next_poll:
            note(pipe.feed(t, "ctl", last_ctl))   # the controller goes on answering
            next_poll = t + poll
        else:
            note(pipe.advance(t))
    j = Judgement(hold_s=hold)
    st = pipe.state
    for code in pipe.book.open:
        if code in SAYS:
            j.findings += _explain(code, raised.get(code, {}), st, cfg)
    j.findings += _pictures(st, last_ctl)
    return j


def _reading(st: Any, name: str) -> str:
    level = st.di.get(name)
    return f"{name} reads {level} ({MEANING[name][0 if level else 1]})"


def _explain(code: str, rec: dict[str, Any], st: Any, cfg: Any) -> list[Finding]:
    """The inputs that make ``code`` open, and what the technician should look at."""
    di = st.di
    ctl = st.ctl or {}
    says = f"the lift would raise {code} ({SAYS[code]})"
    if code == "power_loss":
        return [Finding(["mains_ok"], says, code)] if "mains_ok" in di else []
    if code == "safety_circuit_open":
        if st.src.get("safety") == "sen":
            return [Finding(["safety_ok"], says, code)]
        return [Finding([], f"{says}: the controller reports safety = 1 (open); if the "
                        "circuit is made, check the register map's safety field", code)]
    if code == "alarm_button" and "alarm_button" in di:
        return [Finding(["alarm_button"], says, code)]
    if code in ("entrapment_level", "entrapment_nonlevel"):
        who = "presence" if "presence" in di else "alarm_button"
        return [Finding([n for n in (who, "door_closed") if n in di],
                        f"{says}: if the car is empty, {who} is the one", code)]
    if code.startswith("overtravel_"):
        limit = "limit_top" if code.endswith("top") else "limit_bottom"
        if di.get(limit) == 1:
            return [Finding([limit], says, code)]
        return []
    zones = [n for n in ("zone_up", "zone_down") if n in di]
    if code == "stopped_outside_zone":
        if zones:
            return [Finding([n for n in zones if di[n] == 0] or zones,
                            f"{says}: a lift at rest stands level at a landing", code)]
        return [Finding([], f"{says}: the controller reports zone = 0 at rest", code)]
    # sensor_disagreement: on door, zone, motion
    out = []
    for what in (rec.get("detail") or {}).get("on", []):
        if what == "door" and "door_closed" in di:
            out.append(Finding(["door_closed"], f"{says} on the door: the controller "
                               f"reports door = {ctl.get('door')}", code))
        elif what == "zone" and zones:
            want = 1 if ctl.get("zone") else 0
            wrong = [n for n in zones if di[n] != want] or zones
            out.append(Finding(wrong, f"{says} on the door zone: the controller reports "
                               f"zone = {ctl.get('zone')}", code))
        elif what == "motion" and "run" in di:
            out.append(Finding(["run"], f"{says} on the motion: the controller reports "
                               f"run = {ctl.get('run')}", code))
    return out


def _pictures(st: Any, ctl: dict[str, Any] | None) -> list[Finding]:
    """What a healthy lift at rest never shows, between inputs and against the controller."""
    di, out = st.di, []
    if di.get("door_closed") == 0 and di.get("door_lock") == 1:
        out.append(Finding(["door_closed", "door_lock"], "door_closed reads open while "
                           "door_lock reads made: the lock circuit is only made with the "
                           "doors closed, so one of the two is wrong"))
    zones = [di[n] for n in ("zone_up", "zone_down") if n in di]
    if di.get("door_closed") == 0 and zones and not any(zones) and not di.get("run"):
        out.append(Finding(["door_closed", "zone_up", "zone_down"], "door_closed reads "
                           "open while both zone inputs read out of zone: a door opens "
                           "only in the door zone, so one of them is wrong"))
    if ctl:
        for name, key, made in (("safety_ok", "safety", 0), ("door_lock", "lock", 0)):
            if name in di and isinstance(ctl.get(key), int) and \
                    (di[name] == 1) != (ctl[key] == made):
                out.append(Finding([name], f"{_reading(st, name)} but the controller "
                                   f"reports {key} = {ctl[key]} "
                                   f"({'made' if ctl[key] == made else 'open'})"))
        if "inspection" in di and isinstance(ctl.get("mode"), int) and ctl["mode"] != 7 \
                and (di["inspection"] == 1) != (ctl["mode"] == 2):
            out.append(Finding(["inspection"], f"{_reading(st, 'inspection')} but the "
                               f"controller reports mode = {ctl['mode']}"))
    return out


def likely_cause(name: str, wiring: Any, level: int) -> str:
    """The technician's likely fix for an input that reads the wrong way."""
    meaning = MEANING.get(name, ("active", "inactive"))[0 if level else 1]
    return (f"likely cause: active_low reversed (set active_low = "
            f"{str(not wiring.active_low).lower()}) or the wrong pin (not {wiring.pin}); "
            f"if it really is so ({meaning}), put that right and check again")
