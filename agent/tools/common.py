"""What the technician tools (check, monitor, calibrate) share: config loading with a
readable report, and the live inputs built the way the config asks for them.

Each device follows its config (``inputs.backend`` / ``accel.backend`` = "simulated" fed
through ``sim_feed``; the controller is the real Modbus link) unless ``--backend`` forces
everything real or everything simulated, as in ``liftwatch record``
(:class:`~liftwatch.agent.live_source.LiveSource`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from liftwatch.agent.live_source import BACKENDS, LiveSource


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="terminal config file (TOML)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="override the config: real hardware, or every device simulated "
                   "(inputs, accelerometer, controller), driven by a rig or test through "
                   "the feed socket (--sim-dir)")
    p.add_argument("--sim-dir", default=None, metavar="DIR",
                   help="directory of the simulation feed socket (default: the config's "
                   "sim_feed)")


def load_config_reported(path: str | Path, prog: str) -> Any | None:
    """The config, or None after printing every problem (file, key, expected, found)."""
    from liftwatch.agent.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{prog}: the config has {len(exc.issues)} problem(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
    except OSError as exc:
        print(f"{prog}: cannot read the config: {exc}", file=sys.stderr)
    return None


def running_agent(cfg: Any) -> int | None:
    """The PID of the agent running on this config's data directory (it holds the
    outbox's lock), or None. A tool then attaches beside it without disturbing it."""
    from liftwatch.buffer.outbox import lock_holder

    return lock_holder(Path(cfg.storage.data_dir) / "outbox" / ".lock")


def make_source(cfg: Any, *, backend: str | None = None, sim_dir: str | Path | None = None,
                pins: Any | None = None, i2c: Any | None = None,
                controller: Any | None = None, sim_noise_lsb: float = 1.0,
                accel_retry_s: float | None = 5.0) -> LiveSource:
    """A LiveSource as the config (or an explicit ``backend``) asks; parts may be injected
    (tests hand in SimulatedPins with an absent pin, or a bus without the chip). Beside a
    running agent it is a second reader that does no harm (live_source.py)."""
    return LiveSource(cfg, backend=backend, sim_dir=sim_dir, pins=pins, i2c=i2c,
                      controller=controller, sim_noise_lsb=sim_noise_lsb,
                      accel_retry_s=accel_retry_s, attached_to=running_agent(cfg))


def link_name(cfg: Any) -> str:
    """Where the controller link goes, for a precise line when it does not answer."""
    c = cfg.controller
    if c.transport == "tcp":
        return f"Modbus TCP {c.host}:{c.tcp_port} unit {c.unit_id}"
    return f"Modbus RTU {c.port} {c.baudrate} {c.parity}{c.stopbits} unit {c.unit_id}"


def fmt_ctl(data: dict[str, Any] | None) -> str:
    if data is None:
        return "no answer"
    parts = []
    for k, v in data.items():
        parts.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
