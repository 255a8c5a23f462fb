"""Settings of the terminal's inputs: digital-input wiring, accelerometer, controller link.

Declared here, beside the drivers that use them (the mqtt-io model); the agent's
config loader builds the technician's TOML schema from these dataclasses. Metadata
keys are those documented in ``liftwatch.signal.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Input names of trace-format.md, in the order the reference lists them.
INPUT_NAMES = (
    "door_closed", "door_lock", "zone_up", "zone_down", "presence", "alarm_button",
    "safety_ok", "mains_ok", "inspection", "run", "limit_top", "limit_bottom",
)


@dataclass(frozen=True)
class InputWiring:
    """How one digital input is wired to the terminal."""

    pin: str = field(metadata={"doc": "Blinka pin name on the terminal, e.g. \"D17\"."})
    pull: str = field(
        default="none", metadata={"doc": "Internal pull resistor.",
                                  "choices": ["up", "down", "none"]},
    )
    active_low: bool = field(
        default=False,
        metadata={"doc": "True when the contact reads 0 on the pin for the input's active "
                  "state (1 in trace-format.md)."},
    )
    debounce_ms: float = field(
        default=20.0, metadata={"doc": "A level must be stable this long to count.",
                                "unit": "ms", "min": 0, "max": 10_000},
    )


@dataclass(frozen=True)
class InputsSettings:
    """Sampling of the digital inputs; the wiring of each is a table [inputs.NAME]."""

    sample_hz: float = field(
        default=200.0, metadata={"doc": "Rate at which the inputs are sampled.", "unit": "Hz",
                                 "gt": 0, "max": 2000},
    )
    backend: str = field(
        default="blinka",
        metadata={"doc": "blinka: the terminal's GPIO through Blinka; simulated: pins driven "
                  "by another process through sim_feed (HIL rig, tests, demo).",
                  "choices": ["blinka", "simulated"]},
    )
    sim_feed: str = field(
        default="", metadata={"doc": "Feed of the simulated backend (backend = simulated)."}
    )


@dataclass(frozen=True)
class AccelSettings:
    """The car accelerometer on the terminal's I2C bus."""

    chip: str = field(
        default="none", metadata={"doc": "Accelerometer chip, or none for a terminal "
                                  "without one.", "choices": ["adxl345", "lis3dh", "none"]},
    )
    backend: str = field(
        default="blinka",
        metadata={"doc": "blinka: the chip on the terminal's I2C bus; simulated: a chip model "
                  "fed through sim_feed (HIL rig, tests, demo).",
                  "choices": ["blinka", "simulated"]},
    )
    sim_feed: str = field(
        default="", metadata={"doc": "Feed of the simulated chip (backend = simulated)."}
    )
    i2c_bus: int = field(default=1, metadata={"doc": "I2C bus number.", "min": 0,
                                              "max": 255})
    address: int = field(
        default=0x53, metadata={"doc": "7-bit I2C address (ADXL345: 0x53 or 0x1D; LIS3DH: "
                                "0x18 or 0x19).", "min": 0x03, "max": 0x77},
    )
    rate_hz: int = field(
        default=400, metadata={"doc": "Output data rate.", "unit": "Hz",
                               "choices": [400, 800, 1600]},
    )
    range_g: int = field(
        default=4, metadata={"doc": "Full-scale range.", "unit": "g", "choices": [2, 4, 8, 16]},
    )
    orientation: str = field(
        default="auto",
        metadata={"doc": "auto: estimate the mounting from rest periods; fixed: use rotation.",
                  "choices": ["auto", "fixed"]},
    )
    rotation: list[list[float]] = field(
        default_factory=lambda: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        metadata={"doc": "3×3 matrix turning sensor axes into car axes (x front-back, y side, "
                  "z up); used when orientation = \"fixed\". Written by liftwatch calibrate."},
    )


@dataclass(frozen=True)
class ControllerSettings:
    """The link to the lift controller (Modbus RTU on RS-485/RS-232, or Modbus TCP)."""

    enabled: bool = field(
        default=False, metadata={"doc": "False for a sensors-only retrofit terminal."}
    )
    transport: str = field(
        default="rtu", metadata={"doc": "Modbus transport.", "choices": ["rtu", "tcp"]}
    )
    port: str = field(default="/dev/ttyUSB0", metadata={"doc": "Serial device (RTU)."})
    baudrate: int = field(
        default=19200, metadata={"doc": "Serial speed (RTU).", "unit": "bit/s",
                                 "choices": [1200, 2400, 4800, 9600, 19200, 38400, 57600,
                                             115200]},
    )
    parity: str = field(default="E", metadata={"doc": "Serial parity (RTU).",
                                               "choices": ["N", "E", "O"]})
    stopbits: int = field(default=1, metadata={"doc": "Serial stop bits (RTU).",
                                               "choices": [1, 2]})
    host: str = field(default="", metadata={"doc": "Controller address (TCP)."})
    tcp_port: int = field(default=502, metadata={"doc": "Controller port (TCP).", "min": 1,
                                                 "max": 65535})
    unit_id: int = field(default=1, metadata={"doc": "Modbus unit (slave) id.", "min": 0,
                                              "max": 247})
    timeout_s: float = field(
        default=0.5, metadata={"doc": "Per-request timeout; on RTU at least the time the "
                               "request and its answer take on the wire plus turnaround_ms "
                               "(slow baud rates, long blocks).", "unit": "s", "gt": 0,
                               "max": 60},
    )
    turnaround_ms: float = field(
        default=50.0, metadata={"doc": "Time the controller takes to start answering (RTU), "
                                "added to the wire time of a request for its timeout.",
                                "unit": "ms", "min": 0, "max": 5000},
    )
    retries: int = field(default=2, metadata={"doc": "Retries of a failed request.", "min": 0,
                                               "max": 10})
    poll_interval_s: float = field(
        default=0.2, metadata={"doc": "Interval between polls of the register map.",
                               "unit": "s", "gt": 0, "max": 60},
    )
    frame_gap_ms: float = field(
        default=5.0, metadata={"doc": "Silence kept between frames on a shared RS-485 bus.",
                               "unit": "ms", "min": 0, "max": 1000},
    )
    backoff_max_s: float = field(
        default=30.0, metadata={"doc": "Longest wait between reconnect attempts.", "unit": "s",
                                "gt": 0, "max": 3600},
    )
    register_map: str = field(
        default="example",
        metadata={"doc": "Register-map profile: a file firmware_config/controllers/NAME.toml."},
    )
