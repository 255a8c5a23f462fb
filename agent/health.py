"""The terminal's self-diagnosis: the body of the ``health`` message.

Figures come from the machine itself (``/proc``, ``/sys``, ``os``), the pipeline
(sensors, controller link), the outbox and the uplink. :func:`assess` reduces them
to a ``state`` (ok, degraded, fault) with the list of ``faults``; the runtime sends
``health`` every ``health_s`` and whenever that state or list changes, so the
platform hears about a stalled loop or a full disk without waiting 5 minutes.
"""

from __future__ import annotations

import os
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    AGENT_VERSION = metadata.version("liftwatch")
except metadata.PackageNotFoundError:  # running from a source tree
    AGENT_VERSION = "0+unknown"

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
#: below this much free space in the data directory the terminal is degraded
DISK_LOW_MB = 50.0


def cpu_temp_c() -> float | None:
    """SoC temperature (Raspberry Pi: thermal_zone0); None where there is none."""
    try:
        return round(int(THERMAL.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def rss_mb() -> float | None:
    """Resident memory of this process (VmRSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_free_mb(path: str | Path) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 1048576.0, 1)
    except OSError:
        return None


def _some(d: dict[str, Any]) -> dict[str, Any]:
    """Leave out what is null, zero or false: health goes out 288 times a day over a
    metered mobile link, and absent means "nothing to report"."""
    return {k: v for k, v in d.items() if v not in (None, 0, False, [], {}) or k == "depth"}


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """A driver's health dict without its empty entries (recursively one level)."""
    return {k: (_some(v) if isinstance(v, dict) else v) for k, v in _some(d).items()}


def outbox_view(stats: dict[str, Any]) -> dict[str, Any]:
    """``outbox`` of the health message from ``Outbox.stats()``: depth by lane, with
    bytes and oldest age when something waits; drops, quarantined files and stored
    messages found missing from disk (``lost``) if any."""
    out: dict[str, Any] = {lane: _some(dict(v)) for lane, v in stats.get("lanes", {}).items()}
    dropped = {k: v for k, v in (stats.get("dropped") or {}).items() if v}
    if dropped:
        out["dropped"] = dropped
    q = stats.get("quarantined", [])
    n = len(q) if isinstance(q, list) else int(q or 0)
    if n:
        out["quarantined"] = n
    lost = int(stats.get("lost_records") or 0)
    if lost:  # stored messages missing from disk (a lost stretch, not a torn append)
        out["lost"] = lost
    return out


def disk_view(fault: dict[str, Any] | None, unstored: int, dropped: int) -> dict[str, Any] | None:
    """``disk`` of the health message: the disk fault under way (``error`` errno name,
    ``since`` UTC ms, ``count`` failed writes, ``parts`` hit), the messages waiting in
    memory for the disk (``unstored``) and those dropped from memory since the start
    (``dropped``, never alarms). None when there is nothing to report."""
    out = dict(fault or {})
    if fault or unstored:
        out["unstored"] = unstored
    if dropped:
        out["dropped"] = dropped
    return out or None


def sensors_view(pipeline_health: dict[str, Any]) -> dict[str, Any]:
    """``sensors`` from ``Pipeline.health()``: how many inputs are wired, the ones found
    faulty by name (every other one is healthy), the accelerometer's state; the
    controller goes to ``ctl_link``. Input levels are in ``status`` already.

    ``confidence`` (events.md, "Rule by rule") names the rules whose estimates cannot
    support a judgement now (``cannot_judge``, ``reason``, ``uncertainty_mm``): it is
    information for the technician, not a fault, so it never degrades the state."""
    out: dict[str, Any] = {}
    inputs = pipeline_health.get("inputs") or {}
    out["inputs"] = len(inputs)
    faulty = sorted(k for k, v in inputs.items() if isinstance(v, dict) and v.get("ok") is False)
    if faulty:
        out["faulty"] = faulty
    acc = pipeline_health.get("accel")
    if isinstance(acc, dict):
        a = _some({k: v for k, v in acc.items() if k != "last_block_s"})
        a["ok"] = bool(acc.get("ok"))
        if isinstance(a.get("gravity_g"), float):
            a["gravity_g"] = round(a["gravity_g"], 3)
        out["accel"] = a
    for k, v in pipeline_health.items():
        if k not in ("inputs", "accel", "controller") and v not in (None, 0, {}, []):
            out[k] = v
    return out


#: What ``ctl_link`` carries of the link driver's health (platform-protocol.md).
CTL_LINK_KEYS = ("connected", "polls", "polls_ok", "polls_partial", "polls_failed",
                 "polls_skipped", "requests", "timeouts", "crc_errors", "framing_errors",
                 "exceptions", "exception_codes", "busy_retries", "mismatched",
                 "late_answers", "duplicates", "echoes", "idle_bytes", "drained_bytes",
                 "resyncs", "reconnects", "peer_closed", "timeout_s", "decode_errors",
                 "blocks_failing", "blocks", "units")


def ctl_link_view(pipeline_ctl: dict[str, Any] | None, driver: dict[str, Any] | None
                  ) -> dict[str, Any] | None:
    """``ctl_link``: the pipeline's ``ok`` and ``last_valid_s`` with the link driver's
    counts since the start (zeros left out), its failing blocks and backed-off units."""
    if pipeline_ctl is None:
        return None
    out = dict(pipeline_ctl)
    if driver:
        out.update(_some({k: driver[k] for k in CTL_LINK_KEYS if k in driver}))
        if isinstance(out.get("blocks"), dict):  # per block: its non-zero counts only
            out["blocks"] = {name: _some(b) if isinstance(b, dict) else b
                             for name, b in out["blocks"].items()}
    return out


def assess(body: dict[str, Any], stalled: list[str], write_errors: int) -> tuple[str, list[str]]:
    """(state, faults): fault when a loop stalls or the data directory refuses writes
    (``write_errors``: failed writes of the disk fault under way, 0 when there is none);
    degraded for a lost controller link, a sensor issue, little disk or an
    unsynchronised clock."""
    faults: list[str] = [f"loop_stalled:{name}" for name in stalled]
    sensors = body.get("sensors") or {}
    if write_errors:
        faults.append("disk_fault")
    degraded: list[str] = []
    ctl = body.get("ctl_link")
    if isinstance(ctl, dict) and ctl.get("ok") is False:
        degraded.append("ctl_link_lost")
    if isinstance(ctl, dict):
        degraded += [f"ctl_block:{b.get('block')}" for b in ctl.get("blocks_failing") or []
                     if isinstance(b, dict)]
    degraded += [f"sensor:{name}" for name in sensors.get("faulty", [])]
    accel = sensors.get("accel")
    if isinstance(accel, dict) and accel.get("ok") is False:
        degraded.append("sensor:accel")
    free = body.get("disk_free_mb")
    if free is not None and free < DISK_LOW_MB:
        degraded.append("disk_low")
    if not (body.get("clock") or {}).get("synced", True):
        degraded.append("clock_unsynced")
    state = "fault" if faults else "degraded" if degraded else "ok"
    return state, faults + degraded


def machine(data_dir: str | Path, started_mono: float) -> dict[str, Any]:
    """The machine's part of the health body."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    out = {"uptime_s": round(time.monotonic() - started_mono, 1),
           "agent_version": AGENT_VERSION, "cpu_temp_c": cpu_temp_c(), "load": load,
           "mem_mb": rss_mb(), "disk_free_mb": disk_free_mb(data_dir)}
    if out["cpu_temp_c"] is None:  # not a Pi (no thermal zone): nothing to report
        del out["cpu_temp_c"]
    return out
