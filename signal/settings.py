"""Parameters of the lift and of every detection rule, with the defaults of events.md.

Each module that needs settings declares them as a dataclass here or beside its
code (the mqtt-io model); ``liftwatch.agent.config`` builds the technician's TOML
schema, its validation and ``firmware_config/REFERENCE.md`` from these fields.

Field metadata keys: ``doc`` (meaning, for the reference), ``unit``, ``min`` /
``max`` (inclusive bounds), ``gt`` (exclusive lower bound), ``choices``,
``remote`` (may be changed by the platform's ``config_set``), ``secret``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _timer(default: float, doc: str) -> float:
    return field(default=default, metadata={"doc": doc, "unit": "s", "gt": 0, "remote": True})


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
        default=1.0, metadata={"doc": "Rated (contract) speed.", "unit": "m/s", "gt": 0}
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
        },
    )


@dataclass(frozen=True)
class DetectionParams:
    """Every timer and threshold of events.md, with its default there."""

    moving_speed: float = field(
        default=0.05,
        metadata={"doc": "Speed above which the car counts as moving.", "unit": "m/s",
                  "gt": 0, "remote": True},
    )
    disagree_s: float = _timer(5.0, "Controller and sensors disagreeing this long raise "
                               "sensor_disagreement (and floor_position_lost for the floor).")
    agree_clear_s: float = _timer(5.0, "Agreement this long clears sensor_disagreement.")
    entrap_level_s: float = _timer(45.0, "Person in a car stopped level with the door closed "
                                   "this long: entrapment_level.")
    entrap_nonlevel_s: float = _timer(30.0, "Person in a car stopped outside the door zone "
                                      "with the door closed this long: entrapment_nonlevel.")
    presence_clear_s: float = _timer(30.0, "No presence this long clears an entrapment.")
    alarm_press_s: float = _timer(0.5, "Alarm button held this long: alarm_button.")
    alarm_hold_bypass_s: float = _timer(5.0, "Held this long, the button raises alarm_button "
                                        "even level with the door open (EN 81-28 filter bypass).")
    outside_zone_s: float = _timer(45.0, "Empty car stopped outside the door zone this long: "
                                   "stopped_outside_zone.")
    overtravel_s: float = _timer(5.0, "Stopped beyond a terminal landing this long: overtravel.")
    overspeed_ratio: float = field(
        default=1.15,
        metadata={"doc": "Overspeed threshold as a multiple of the rated speed.", "gt": 1.0,
                  "remote": True},
    )
    overspeed_s: float = _timer(0.3, "Speed above the threshold this long: overspeed.")
    overspeed_clear_s: float = _timer(2.0, "Speed below rated this long clears overspeed.")
    contact_debounce_s: float = _timer(0.1, "Debounce of the door contact and door-lock circuit "
                                       "for door_open_while_moving and door_lock_circuit_open.")
    ucm_distance: float = field(
        default=0.2,
        metadata={"doc": "Car movement with the door open beyond this distance is unintended "
                  "car movement (moving_with_door_open).", "unit": "m", "gt": 0, "remote": True},
    )
    power_loss_s: float = _timer(2.0, "Mains lost this long: power_loss.")
    power_restore_s: float = _timer(2.0, "Mains back this long clears power_loss.")
    safety_s: float = _timer(0.5, "Safety circuit open this long (outside inspection): "
                             "safety_circuit_open.")
    safety_clear_s: float = _timer(2.0, "Safety circuit made this long clears it.")
    door_open_fault_s: float = _timer(15.0, "Door expected to open but not open within this: "
                                      "door_open_fault.")
    door_close_fault_s: float = _timer(20.0, "Door not closed this long after the first "
                                       "closing attempt at a stop: door_close_fault.")
    door_held_open_s: float = _timer(80.0, "Door held open at a stop this long: "
                                     "door_close_fault.")
    runtime_limit_s: float = _timer(45.0, "Continuous run this long: motor_runtime_exceeded.")
    reopen_count: int = field(
        default=5,
        metadata={"doc": "Reopens at one stop without closing that raise door_reopen_repeated.",
                  "min": 1, "remote": True},
    )
    battery_low_pct: float = field(
        default=20.0,
        metadata={"doc": "On battery below this level: battery_low.", "unit": "%", "min": 0,
                  "max": 100, "remote": True},
    )
    battery_clear_pct: float = field(
        default=30.0,
        metadata={"doc": "Battery above this level clears battery_low.", "unit": "%", "min": 0,
                  "max": 100, "remote": True},
    )
    vib_limit_z: float = field(
        default=0.6,
        metadata={"doc": "A95 peak-to-peak vertical vibration limit (Wk weighted).",
                  "unit": "m/s²", "gt": 0, "remote": True},
    )
    vib_limit_xy: float = field(
        default=0.4,
        metadata={"doc": "A95 peak-to-peak horizontal vibration limit (Wd weighted).",
                  "unit": "m/s²", "gt": 0, "remote": True},
    )
    vib_min_rise: float = field(
        default=0.5,
        metadata={"doc": "vibration_abnormal against the learned baseline: the smallest rise "
                  "over the baseline's median called abnormal, as a fraction of that median "
                  "(0.5: +50 %; a doubling is +100 %), however small the learned spread.",
                  "min": 0, "remote": True},
    )
    anomaly_k: float = field(
        default=4.0,
        metadata={"doc": "Robust deviations (scaled MAD) above the learned baseline that make "
                  "a trip or door cycle abnormal.", "gt": 0, "remote": True},
    )
    anomaly_window: int = field(
        default=5, metadata={"doc": "Last N trips/cycles/stops the anomaly rules look at.",
                             "min": 1, "remote": True},
    )
    anomaly_hits: int = field(
        default=3, metadata={"doc": "Abnormal ones among the last anomaly_window that raise.",
                             "min": 1, "remote": True},
    )
    normal_clear_count: int = field(
        default=5, metadata={"doc": "Consecutive normal trips/cycles/stops that clear an "
                             "anomaly warning.", "min": 1, "remote": True},
    )
    door_time_limit_s: float = _timer(4.0, "Door open or close time above this is slow.")
    leveling_tol_mm: float = field(
        default=10.0,
        metadata={"doc": "Stop position error beyond this is a leveling miss.", "unit": "mm",
                  "gt": 0, "remote": True},
    )
    link_lost_s: float = _timer(5.0, "No valid controller response this long: "
                                "controller_link_lost.")
    link_ok_count: int = field(
        default=3, metadata={"doc": "Valid controller responses in a row that clear "
                             "controller_link_lost.", "min": 1, "remote": True},
    )
    stuck_trips: int = field(
        default=20, metadata={"doc": "Trips in which the other source saw an input change "
                              "while it did not: sensor_fault.", "min": 1, "remote": True},
    )
    sensor_ok_trips: int = field(
        default=5, metadata={"doc": "Trips of good behaviour that clear sensor_fault.",
                             "min": 1, "remote": True},
    )
    gravity_min_g: float = field(
        default=0.9, metadata={"doc": "Gravity magnitude at rest below this is implausible.",
                               "unit": "g", "gt": 0, "remote": True},
    )
    gravity_max_g: float = field(
        default=1.1, metadata={"doc": "Gravity magnitude at rest above this is implausible.",
                               "unit": "g", "gt": 0, "remote": True},
    )
    accel_silent_s: float = _timer(2.0, "No accelerometer samples this long: sensor_fault.")
    alarm_repeat_s: float = _timer(60.0, "An unacknowledged alarm is repeated this often "
                                   "(EN 81-28).")
    self_test_h: float = field(
        default=72.0, metadata={"doc": "Interval of the periodic self_test message (EN 81-28).",
                                "unit": "h", "gt": 0, "remote": True},
    )
    max_per_day: int = field(
        default=20, metadata={"doc": "At most this many raises of one code a day; further "
                              "raises are only counted. Alarm-severity codes are never "
                              "capped (EN 81-28: every alarm reaches the platform).",
                              "min": 1, "remote": True},
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
                             "min": 2, "max": 100, "remote": True},
    )
    abuse_window_s: float = field(
        default=600.0, metadata={"doc": "Window of alarm_button_abuse; the warning clears when "
                                 "no short press came for this long.", "unit": "s",
                                 "min": 60.0, "max": 86400.0, "remote": True},
    )
    abuse_short_s: float = field(
        default=3.0, metadata={"doc": "A press released within this counts as short for "
                               "alarm_button_abuse; a longer hold clears the warning at once "
                               "(someone needs help).", "unit": "s", "min": 0.5,
                               "max": 30.0, "remote": True},
    )
