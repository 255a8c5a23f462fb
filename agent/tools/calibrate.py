"""``liftwatch calibrate``: record how the terminal is mounted, with the car at rest.

    liftwatch calibrate --config FILE [--seconds S] [--dry-run] [--backend ...] [--sim-dir DIR]

Reads the accelerometer for ``--seconds`` through the agent's own drivers, checks that
the car was still (every axis steadier than ``STILL_STD_G``) and that gravity is
plausible (``detection.gravity_min_g`` .. ``gravity_max_g``), then computes the
car_from_sensor rotation with :func:`liftwatch.signal.orientation.rotation_from_gravity`
(z = the measured "up"; the horizontal axes follow the sensor's x, see that module) and
shows it. A terminal without an accelerometer, or whose accelerometer the running agent
reads (stop it first: opening the chip here would re-program it under the agent), is
refused at once, saying so. Unless ``--dry-run``, it writes ``accel.orientation = "fixed"`` and
``accel.rotation`` into the config: only those lines of the ``[accel]`` table change
(comments and layout stay), the result is validated before it replaces the file, the
old file is kept as ``FILE.bak``, and the new one is written to a temporary file,
fsync'd and renamed over the old one with its owner, group and mode kept, so a power cut
leaves either the old or the new config. The installed config is root's (deploy/INSTALL.md):
run calibrate with sudo there. The running agent picks it up on
``systemctl reload liftwatch``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liftwatch.agent.tools.common import add_source_arguments, load_config_reported, make_source

DEFAULT_SECONDS = 5.0
OPEN_WAIT_S = 3.0  # for the chip's first answer (a simulated one: milliseconds)
STILL_STD_G = 0.02  # per axis: more and the car (or the box) was moving
HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
KEY = re.compile(r"^\s*(orientation|rotation)\s*=")


class CalibrationError(RuntimeError):
    """The measurement cannot give a mounting (car moving, no chip, implausible gravity)."""


@dataclass
class Calibration:
    gravity_g: list[float]  # mean of the samples, sensor axes, in g
    magnitude_g: float
    std_g: list[float]
    tilt_deg: float  # between the sensor's z axis and up
    rotation: list[list[float]]
    samples: int


def compute(samples: list[list[int]], lsb_per_g: float, gravity_min_g: float,
            gravity_max_g: float) -> Calibration:
    """The mounting from samples taken at rest; CalibrationError when they are not."""
    import numpy as np
    from liftwatch.signal.orientation import angle_deg, check_rotation, rotation_from_gravity

    if len(samples) < 50 or not lsb_per_g:
        raise CalibrationError(f"only {len(samples)} accelerometer samples: is the chip "
                               "answering?")
    g = np.asarray(samples, dtype=float) / lsb_per_g
    mean = g.mean(axis=0)
    std = g.std(axis=0)
    mag = float(np.linalg.norm(mean))
    if float(std.max()) > STILL_STD_G:
        raise CalibrationError(
            f"the car was not still: the axes vary by {', '.join(f'{s * 1000:.0f}' for s in std)}"
            f" mg rms (at most {STILL_STD_G * 1000:.0f} mg); repeat with the car parked, "
            "doors closed, nobody on the roof moving")
    if not gravity_min_g <= mag <= gravity_max_g:
        raise CalibrationError(
            f"gravity measures {mag:.3f} g, expected {gravity_min_g:g}..{gravity_max_g:g} g: "
            "check accel.range_g and the chip")
    rotation = check_rotation(rotation_from_gravity(mean.tolist()))
    rotation = [[round(v, 4) + 0.0 for v in row] for row in rotation]  # no -0.0
    return Calibration([float(v) for v in mean], mag, [float(v) for v in std],
                       angle_deg(mean.tolist(), [0.0, 0.0, 1.0]), rotation, len(samples))


async def measure(cfg: Any, seconds: float, announce: Callable[[], None] | None = None,
                  **source_kw: Any) -> tuple[list[list[int]], dict[str, Any]]:
    """Accelerometer samples over ``seconds`` and the sensor's health at the end.

    The chip is opened once, first: a terminal without an accelerometer (no I2C bus, no
    chip at the address) or one the running agent reads is refused at once, saying so,
    instead of waiting out the measurement. ``announce`` is called when it measures."""
    from liftwatch.agent.tools.check import observe

    a = cfg.accel
    where = f"{a.chip} on I2C bus {a.i2c_bus} address 0x{a.address:02X}"
    source = make_source(cfg, accel_retry_s=None, **source_kw)
    await source.start()
    reader = source.accel
    deadline = time.monotonic() + OPEN_WAIT_S
    while reader is not None and not reader.opened and not reader.open_error \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if reader is None or not reader.opened:
        await source.close()
        if "accel" in source.skipped:
            raise CalibrationError(f"accelerometer {where} {source.skipped['accel']}")
        why = reader.open_error if reader is not None and reader.open_error \
            else f"no answer within {OPEN_WAIT_S:g} s"
        raise CalibrationError(f"no accelerometer: {where} cannot be opened: {why}")
    if announce is not None:
        announce()
    obs = await observe(source, seconds)
    return obs.acc_samples, obs.health.get("accel", {})


# ---------------------------------------------------------------- writing the config

def rotation_toml(rotation: list[list[float]]) -> str:
    rows = ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in rotation)
    return f"rotation = [{rows}]"


def edit_accel_table(text: str, rotation: list[list[float]]) -> str:
    """The config text with [accel] orientation and rotation set; nothing else changes."""
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    new = [f'orientation = "fixed"{newline}', rotation_toml(rotation) + newline]
    start = next((i for i, ln in enumerate(lines)
                  if (m := HEADER.match(ln)) and m.group(1).strip() == "accel"), None)
    if start is None:
        tail = "" if not lines or lines[-1].endswith(("\n", "\r\n")) else newline
        return text + tail + newline + f"[accel]{newline}" + "".join(new)
    end = next((i for i in range(start + 1, len(lines)) if HEADER.match(lines[i])), len(lines))
    body: list[str] = []
    i = start + 1
    while i < end:
        line = lines[i]
        if KEY.match(line):
            depth = _bracket_depth(line)
            i += 1
            while depth > 0 and i < end:  # a rotation written over several lines
                depth += _bracket_depth(lines[i])
                i += 1
            continue
        body.append(line)
        i += 1
    last = max((j for j, ln in enumerate(body) if ln.strip() and not ln.lstrip().startswith("#")),
               default=-1)
    if last >= 0 and not body[last].endswith(("\n", "\r\n")):
        body[last] += newline
    body[last + 1:last + 1] = new
    return "".join(lines[:start + 1] + body + lines[end:])


def _bracket_depth(line: str) -> int:
    code = line.split("#", 1)[0]
    return code.count("[") - code.count("]")


def _same_apart_from_rotation(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        accel = dict(d.get("accel", {}))
        accel.pop("orientation", None)
        accel.pop("rotation", None)
        d["accel"] = accel
        return d

    return strip(old) == strip(new)


def new_config_text(path: Path, rotation: list[list[float]]) -> str:
    """The edited config, checked: it parses, validates and differs only where meant."""
    from liftwatch.agent.config import validate_dict

    text = path.read_text(encoding="utf-8")
    old = tomllib.loads(text)
    new_text = edit_accel_table(text, rotation)
    try:
        new = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"editing {path} would break it ({exc}): not written") from exc
    if (new.get("accel", {}).get("orientation") != "fixed"
            or new["accel"].get("rotation") != rotation
            or not _same_apart_from_rotation(old, new)):
        raise CalibrationError(f"{path}: the [accel] table could not be edited in place "
                               "(is it written with dotted keys?): not written")
    issues = validate_dict(new, path)
    if issues:
        raise CalibrationError(f"{path}: the edited config does not validate: "
                               + "; ".join(str(i) for i in issues))
    return new_text


def write_atomically(path: Path, text: str, backup: bool = True) -> Path | None:
    """Replace ``path`` by ``text`` (temp + fsync + rename, owner, group and mode kept);
    the old file is kept as ``path.bak``, written the same way. Returns the backup's path.

    A user who cannot give the new file the old one's owner and group (only root can give
    a file away) gets PermissionError and nothing changes: the installed config must stay
    root:liftwatch 0640, unwritable by the service (deploy/INSTALL.md).
    """
    st = path.stat()
    bak = None
    if backup:
        bak = path.with_name(path.name + ".bak")
        _replace(bak, path.read_bytes(), st)
    _replace(path, text.encode("utf-8"), st)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return bak


def _replace(path: Path, data: bytes, like: os.stat_result) -> None:
    """Write ``data`` to a temporary file beside ``path`` with ``like``'s owner, group and
    mode, fsync it and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchown(fh.fileno(), like.st_uid, like.st_gid)  # before the mode: chown
            os.fchmod(fh.fileno(), like.st_mode & 0o7777)     # may clear setuid/setgid
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def report(cal: Calibration) -> str:
    g, s = cal.gravity_g, cal.std_g
    rows = "\n".join("    [" + ", ".join(f"{v:+.4f}" for v in row) + "]" for row in cal.rotation)
    return (f"gravity (sensor axes): ({g[0]:+.4f}, {g[1]:+.4f}, {g[2]:+.4f}) g, "
            f"|g| = {cal.magnitude_g:.4f} g over {cal.samples} samples\n"
            f"stillness: {s[0] * 1000:.1f} / {s[1] * 1000:.1f} / {s[2] * 1000:.1f} mg rms "
            f"(x / y / z)\n"
            f"sensor z axis is {cal.tilt_deg:.1f} deg from vertical\n"
            f"rotation sensor -> car (rows: car x, y, z in sensor axes):\n{rows}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, metavar="S",
                   help=f"how long to measure at rest (default {DEFAULT_SECONDS:g})")
    p.add_argument("--dry-run", action="store_true",
                   help="show the mounting and the config lines, write nothing")


def run(args: argparse.Namespace, **source_kw: Any) -> int:
    prog = "liftwatch calibrate"
    if not (math.isfinite(args.seconds) and 1.0 <= args.seconds <= 600):
        print(f"{prog}: --seconds must be 1..600, found {args.seconds}", file=sys.stderr)
        return 2
    cfg = load_config_reported(args.config, prog)
    if cfg is None:
        return 2
    if cfg.accel.chip == "none":
        print(f"{prog}: accel.chip = \"none\" in {args.config}: no accelerometer to calibrate",
              file=sys.stderr)
        return 2
    def announce() -> None:
        print(f"{prog}: measuring for {args.seconds:g} s; keep the car parked and still ...",
              flush=True)

    try:
        samples, health = asyncio.run(measure(cfg, args.seconds, announce,
                                              backend=args.backend, sim_dir=args.sim_dir,
                                              **source_kw))
        if health.get("state") in ("absent", "failing"):
            raise CalibrationError(f"accelerometer {cfg.accel.chip} {health['state']}: "
                                   f"{health.get('error')}")
        cal = compute(samples, float(health.get("lsb_per_g") or 0.0),
                      cfg.detection.gravity_min_g, cfg.detection.gravity_max_g)
    except CalibrationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(report(cal))
    path = Path(args.config)
    try:
        text = new_config_text(path, cal.rotation)
    except CalibrationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(f"\n[accel] lines for {path}:\n  orientation = \"fixed\"\n"
          f"  {rotation_toml(cal.rotation)}")
    if args.dry_run:
        print("(dry run: nothing written)")
        return 0
    try:
        bak = write_atomically(path, text)
    except OSError as exc:
        hint = (" (it and its folder are root's on an installed terminal: run calibrate "
                "with sudo)" if isinstance(exc, PermissionError) else "")
        print(f"{prog}: cannot write {path}: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 1
    print(f"written to {path} (previous version kept as {bak}); apply with "
          "`systemctl reload liftwatch`")
    return 0
