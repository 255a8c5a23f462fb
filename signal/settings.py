"""Parameters of the lift and of every detection rule, with the defaults of events.md.

Each module that needs settings declares them as a dataclass here or beside its
code (the mqtt-io model); ``liftwatch.agent.config`` builds the technician's TOML
schema, its validation and ``firmware_config/REFERENCE.md`` from these fields.

Field metadata keys: ``doc`` (meaning, for the reference), ``unit``, ``min`` /
``max`` (inclusive bounds), ``gt`` (exclusive lower bound), ``choices``,
``remote`` (may be changed by the platform's ``config_set``), ``secret``. A remote key
always has both ``min`` and ``max`` (its safe range, the same for the technician's
file and for ``config_set``), ``why`` (the reason for that range, in REFERENCE.md)
and ``weakens`` (``up`` or ``down``: the direction in which a change makes detection
or reporting weaker; such a change is reported as weakening in ``detection_changed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Why the remote keys' ranges are what they are (REFERENCE.md "Safe ranges"), by kind.
ALARM_WHY = ("gates an alarm (EN 81-28): beyond the maximum a trapped passenger or a press "
             "would wait too long or never be reported; below the minimum ordinary stops "
             "and touches raise false alarms")
FAULT_WHY = ("a fault timer: beyond the maximum the fault is reported too late to matter, "
             "below the minimum contact bounce and normal transients raise it")
CLEAR_WHY = ("clears a condition: too short clears it on a flicker, too long keeps a "
             "repaired fault open")
COUNT_WHY = ("a count of trips, cycles or responses: the rules keep that many in memory, "
             "so it is bounded to what a terminal holds and a lift shows in a few days")
LIMIT_WHY = "a physical limit: the range spans every lift and sensor the agent supports"


def _range(lo: float, hi: float, weakens: str, why: str, **extra: object) -> dict[str, object]:
    """Metadata of a remotely changeable key: inclusive range, which way weakens
    detection (``up``: a larger value reports later or less; ``down``: a smaller one)."""
    return {"min": lo, "max": hi, "weakens": weakens, "why": why, "remote": True, **extra}


def _timer(default: float, doc: str, lo: float, hi: float, weakens: str = "up",
           why: str = FAULT_WHY) -> float:
    return field(default=default, metadata={"doc": doc, "unit": "s",
                                            **_range(lo, hi, weakens, why)})


@dataclass(frozen=True)
class LiftParams:
    """The lift as the technician describes it: landings bottom to top."""

    landings: list[str] = field(
        default_factory=list,
        metadata={"doc": "Floor labels bottom to top, as the platform shows them."},
    )
    landing_heights_m: list[float] = field(
        default_factory=list,
        metadata={"doc": "Sill height of each landing above the lowest one.", "unit": "m"},
    )
    rated_speed: float = field(
        default=1.0, metadata={"doc": "Rated (contract) speed.", "unit": "m/s", "gt": 0,
                               # a bound for the arithmetic only: agent/plausibility.py
                               # judges the value (and offers m/min or mm/s)
                               "max": 10000}
    )
    door_zone_m: float = field(
        default=0.2,
        metadata={
            "doc": "Half-width of the leveling (door) zone: the car is level (both leveling "
            "sensors active) while its sill is within ±door_zone_m of the landing sill. "
            "Each sensor alone reaches a few cm further, zone_up below and zone_down above "
            "(measured on the example traces).",
            "unit": "m",
            "gt": 0,
            "max": 10000,   # arithmetic only: agent/plausibility.py judges it (mm?)
        },
    )


@dataclass(frozen=True)
class DetectionParams:
    """Every timer and threshold of events.md, with its default there."""

    moving_speed: float = field(
        default=0.05,
        metadata={"doc": "Speed above which the car counts as moving.", "unit": "m/s",
                  **_range(0.01, 0.3, "up", "below 0.01 m/s sensor noise keeps a standing "
                           "car moving (no stop, so no entrapment is ever seen); above "
                           "0.3 m/s a car creeping away from a landing counts as stopped")},
    )
    disagree_s: float = _timer(5.0, "Controller and sensors disagreeing this long raise "
                               "sensor_disagreement (and floor_position_lost for the floor).",
                               1, 120)
    agree_clear_s: float = _timer(5.0, "Agreement this long clears sensor_disagreement.",
                                  1, 120, "down", CLEAR_WHY)
    entrap_level_s: float = _timer(45.0, "Person in a car stopped level with the door closed "
                                   "this long: entrapment_level.", 10, 300, why=ALARM_WHY)
    entrap_nonlevel_s: float = _timer(30.0, "Person in a car stopped outside the door zone "
                                      "with the door closed this long: entrapment_nonlevel.",
                                      5, 180, why=ALARM_WHY)
    presence_clear_s: float = _timer(30.0, "No presence this long clears an entrapment.",
                                     5, 300, "down", "clears an entrapment: a still, silent "
                                     "passenger must not clear it within seconds")
    alarm_press_s: float = _timer(0.5, "Alarm button held this long: alarm_button.", 0.1, 3,
                                  why="the EN 81-28 press filter: a deliberate press lasts "
                                  "a second or two, so a longer filter misses genuine "
                                  "presses; under 0.1 s contact bounce raises it")
    alarm_hold_bypass_s: float = _timer(5.0, "Held this long, the button raises alarm_button "
                                        "even level with the door open (EN 81-28 filter "
                                        "bypass).", 1, 10,
                                        why="the hold that overrides the door-open filter: "
                                        "a passenger holds the button a few seconds, not a "
                                        "minute")
    outside_zone_s: float = _timer(45.0, "Empty car stopped outside the door zone this long: "
                                   "stopped_outside_zone.", 10, 300,
                                   why="gates the stopped-between-floors fault that precedes "
                                   "an entrapment: bounded like the entrapment timers")
    overtravel_s: float = _timer(5.0, "Stopped beyond a terminal landing this long: "
                                 "overtravel.", 1, 60)
    overspeed_ratio: float = field(
        default=1.15,
        metadata={"doc": "Overspeed threshold as a multiple of the rated speed.",
                  **_range(1.05, 1.4, "up", "EN 81-20 trips the governor from 1.15 × rated "
                           "speed; above 1.4 × an overspeed goes unreported until the "
                           "safety gear sets")},
    )
    overspeed_s: float = _timer(0.3, "Speed above the threshold this long: overspeed.", 0.1, 5)
    overspeed_clear_s: float = _timer(2.0, "Speed below rated this long clears overspeed.",
                                      0.5, 60, "down", CLEAR_WHY)
    contact_debounce_s: float = _timer(0.1, "Debounce of the door contact and door-lock circuit "
                                       "for door_open_while_moving and door_lock_circuit_open.",
                                       0.02, 1)
    ucm_distance: float = field(
        default=0.2,
        metadata={"doc": "Car movement with the door open beyond this distance is unintended "
                  "car movement (moving_with_door_open).", "unit": "m",
                  **_range(0.05, 1.0, "up", "EN 81-20 5.6.7 stops an unintended movement "
                           "within 1.2 m of the landing; below 0.05 m levelling creep "
                           "raises it")},
    )
    power_loss_s: float = _timer(2.0, "Mains lost this long: power_loss.", 0.5, 60)
    power_restore_s: float = _timer(2.0, "Mains back this long clears power_loss.", 0.5, 60,
                                    "down", CLEAR_WHY)
    safety_s: float = _timer(0.5, "Safety circuit open this long (outside inspection): "
                             "safety_circuit_open.", 0.1, 10)
    safety_clear_s: float = _timer(2.0, "Safety circuit made this long clears it.", 0.5, 60,
                                   "down", CLEAR_WHY)
    door_open_fault_s: float = _timer(15.0, "Door expected to open but not open within this: "
                                      "door_open_fault.", 5, 120)
    door_close_fault_s: float = _timer(20.0, "Door not closed this long after the first "
                                       "closing attempt at a stop: door_close_fault.", 5, 300)
    door_held_open_s: float = _timer(80.0, "Door held open at a stop this long: "
                                     "door_close_fault.", 10, 900)
    runtime_limit_s: float = _timer(45.0, "Continuous run this long: motor_runtime_exceeded.",
                                    10, 300, why="EN 81-20 5.9.2.7 limits a run to 45 s or "
                                    "the full travel plus 10 s; 300 s covers the tallest "
                                    "shafts")
    reopen_count: int = field(
        default=5,
        metadata={"doc": "Reopens at one stop without closing that raise door_reopen_repeated.",
                  **_range(2, 30, "up", COUNT_WHY)},
    )
    battery_low_pct: float = field(
        default=20.0,
        metadata={"doc": "On battery below this level: battery_low.", "unit": "%",
                  **_range(5, 80, "down", "below 5 % the battery is flat before it is "
                           "reported; the emergency alarm runs on it (EN 81-28: 1 h)")},
    )
    battery_clear_pct: float = field(
        default=30.0,
        metadata={"doc": "Battery above this level clears battery_low.", "unit": "%",
                  **_range(10, 100, "down", CLEAR_WHY)},
    )
    vib_limit_z: float = field(
        default=0.6,
        metadata={"doc": "A95 peak-to-peak vertical vibration limit (Wk weighted).",
                  "unit": "m/s²", **_range(0.1, 5, "up", LIMIT_WHY)},
    )
    vib_limit_xy: float = field(
        default=0.4,
        metadata={"doc": "A95 peak-to-peak horizontal vibration limit (Wd weighted).",
                  "unit": "m/s²", **_range(0.1, 5, "up", LIMIT_WHY)},
    )
    vib_min_rise: float = field(
        default=0.5,
        metadata={"doc": "vibration_abnormal against the learned baseline: the smallest rise "
                  "over the baseline's median called abnormal, as a fraction of that median "
                  "(0.5: +50 %; a doubling is +100 %), however small the learned spread.",
                  **_range(0, 5, "up", LIMIT_WHY)},
    )
    anomaly_k: float = field(
        default=4.0,
        metadata={"doc": "Robust deviations (scaled MAD) above the learned baseline that make "
                  "a trip or door cycle abnormal.",
                  **_range(1, 20, "up", "below 1 deviation every trip is abnormal; above "
                           "20 nothing short of a breakdown is")},
    )
    anomaly_window: int = field(
        default=5, metadata={"doc": "Last N trips/cycles/stops the anomaly rules look at.",
                             **_range(1, 50, "down", COUNT_WHY)},
    )
    anomaly_hits: int = field(
        default=3, metadata={"doc": "Abnormal ones among the last anomaly_window that raise.",
                             **_range(1, 50, "up", COUNT_WHY)},
    )
    normal_clear_count: int = field(
        default=5, metadata={"doc": "Consecutive normal trips/cycles/stops that clear an "
                             "anomaly warning.", **_range(1, 100, "down", COUNT_WHY)},
    )
    door_time_limit_s: float = _timer(4.0, "Door open or close time above this is slow.", 1, 30)
    leveling_tol_mm: float = field(
        default=10.0,
        metadata={"doc": "Stop position error beyond this is a leveling miss.", "unit": "mm",
                  **_range(2, 100, "up", "EN 81-20 5.12.1.1.4 allows ±20 mm at a stop; "
                           "below 2 mm is sensor noise")},
    )
    link_lost_s: float = _timer(5.0, "No valid controller response this long: "
                                "controller_link_lost.", 0.5, 120)
    link_ok_count: int = field(
        default=3, metadata={"doc": "Valid controller responses in a row that clear "
                             "controller_link_lost.", **_range(1, 100, "down", COUNT_WHY)},
    )
    stuck_trips: int = field(
        default=20, metadata={"doc": "Trips in which the other source saw an input change "
                              "while it did not: sensor_fault.",
                              **_range(5, 1000, "up", COUNT_WHY)},
    )
    sensor_ok_trips: int = field(
        default=5, metadata={"doc": "Trips of good behaviour that clear sensor_fault.",
                             **_range(1, 100, "down", COUNT_WHY)},
    )
    gravity_min_g: float = field(
        default=0.9, metadata={"doc": "Gravity magnitude at rest below this is implausible.",
                               "unit": "g", **_range(0.5, 0.99, "down", LIMIT_WHY)},
    )
    gravity_max_g: float = field(
        default=1.1, metadata={"doc": "Gravity magnitude at rest above this is implausible.",
                               "unit": "g", **_range(1.01, 1.5, "up", LIMIT_WHY)},
    )
    accel_silent_s: float = _timer(2.0, "No accelerometer samples this long: sensor_fault.",
                                   0.5, 60)
    alarm_repeat_s: float = _timer(60.0, "An unacknowledged alarm is repeated this often "
                                   "(EN 81-28).", 1, 300,
                                   why="EN 81-28 repeats an alarm until it is acknowledged: "
                                   "more than 5 minutes between repeats leaves a lost alarm "
                                   "unrepeated too long; under 1 s floods the platform")
    self_test_h: float = field(
        default=72.0, metadata={"doc": "Interval of the periodic self_test message (EN 81-28).",
                                "unit": "h",
                                **_range(1, 72, "up", "EN 81-28 wants a test call at least "
                                         "every 3 days (72 h)")},
    )
    max_per_day: int = field(
        default=20, metadata={"doc": "At most this many raises of one code a day; further "
                              "raises are only counted. Alarm-severity codes are never "
                              "capped (EN 81-28: every alarm reaches the platform).",
                              **_range(5, 1000, "down", "below 5 a day a recurring fault is "
                                       "silenced after its first raises")},
    )
    trust_door: str = field(
        default="sensors", metadata={"doc": "Source trusted for the door state.",
                                     "choices": ["sensors", "controller"]},
    )
    trust_zone: str = field(
        default="sensors", metadata={"doc": "Source trusted for the door zone.",
                                     "choices": ["sensors", "controller"]},
    )
    trust_floor: str = field(
        default="controller", metadata={"doc": "Source trusted for the floor.",
                                        "choices": ["sensors", "controller"]},
    )
    trust_mode: str = field(
        default="controller", metadata={"doc": "Source trusted for the service mode.",
                                        "choices": ["sensors", "controller"]},
    )
    # alarm_button_abuse (events.md): a pattern report for the command centre; it never
    # holds back an alarm_button raise
    abuse_presses: int = field(
        default=5, metadata={"doc": "Short alarm-button presses within abuse_window_s that "
                             "raise the alarm_button_abuse warning (each press that meets "
                             "alarm_press_s is still sent as alarm_button).",
                             **_range(2, 100, "up", "a pattern report only: it never holds "
                                      "back an alarm_button")},
    )
    abuse_window_s: float = field(
        default=600.0, metadata={"doc": "Window of alarm_button_abuse; the warning clears when "
                                 "no short press came for this long.", "unit": "s",
                                 **_range(60.0, 86400.0, "down", "a pattern report only: it "
                                          "never holds back an alarm_button")},
    )
    abuse_short_s: float = field(
        default=3.0, metadata={"doc": "A press released within this counts as short for "
                               "alarm_button_abuse; a longer hold clears the warning at once "
                               "(someone needs help).", "unit": "s",
                               **_range(0.5, 30.0, "down", "a pattern report only: it never "
                                        "holds back an alarm_button")},
    )


#: the event reporting a change of the settings detection and reporting run with
#: (docs/events.md): single shot, never capped, raised by the agent where it applies
#: a change (config_set, SIGHUP, a start with settings other than the last run's)
DETECTION_CHANGED = "detection_changed"


def change_record(t: float, eid: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The event record of a settings change; ``detail`` holds ``source``, ``cmd``,
    ``changes`` (key, old, new, weakens) and ``weakens`` (any change weakens)."""
    from liftwatch.signal.events import CATALOGUE

    return {"t": round(t, 3), "type": "event", "code": DETECTION_CHANGED, "state": "raised",
            "id": eid, "floor": None, "sev": CATALOGUE[DETECTION_CHANGED].severity,
            "detail": detail}
