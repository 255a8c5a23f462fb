"""``liftwatch check``: the commissioning self-test a technician runs on the car roof.

    liftwatch check --config FILE [--watch S] [--backend real|simulated] [--sim-dir DIR]

Prints one row per check (name, PASS / WARN / FAIL, detail) and exits 0 when nothing
failed, 1 otherwise (2: the config could not be read at all). The inputs are read
through the same drivers the agent runs (:mod:`liftwatch.agent.live_source`) for
``--watch`` seconds, so what passes here is what the agent will see; the broker check
makes a real MQTT connection with the configured TLS files and credentials.

Verdicts that are not obvious:

- an input that did not change during the window still passes (a door need not move
  in three seconds); its level and "changed"/"no change" are shown so the technician
  can operate the contact and watch it; an input whose pin is absent or fails is FAIL;
- the lift is judged as it stands, by the detectors' own rules
  (:mod:`liftwatch.agent.tools.idle_check`): an input whose level would make the lift raise
  an event at rest (mains lost, safety circuit open, sensors against the controller,
  car out of zone, someone shut in), or that shows a picture no lift at rest shows,
  FAILs with the likely cause (``active_low`` reversed, wrong pin). Run check with the
  car at rest, level at a landing;
- devices are named as what they are: a serial port absent or not permitted (the group
  to join), an I2C bus absent or not permitted, an accelerometer silent at its address
  (with the addresses that answer); each TLS and credentials file is checked readable,
  and when check runs as root, readable by the service user too;
- an unsynchronised clock is WARN, not FAIL: the agent is built to run so (messages
  carry ``tq`` = 0 and are corrected when NTP answers), but the technician should fix
  NTP before leaving;
- ``uplink.tls = false`` is WARN even when the broker answers;
- beside a running agent (it holds the outbox's lock) check never disturbs it
  (live_source.py): a real device only one process may use (GPIO, the I2C
  accelerometer, a Modbus RTU link) is not read, a WARN row naming the agent's PID in
  place of its rows; simulated devices are read through a tap of the feed.

The drivers' own warnings are held back while it watches (the table says the same);
``-v`` shows them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import socket
import ssl
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liftwatch.agent.tools import idle_check
from liftwatch.agent.tools.common import (
    add_source_arguments,
    fmt_ctl,
    link_name,
    load_config_reported,
    make_source,
)

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
DEFAULT_WATCH_S = 3.0
RATE_TOLERANCE = 0.10  # measured vs configured sample rate
WARMUP_S = 0.5  # before the sample-rate measurement starts (FIFO set-up, first reads)
STILL_STD_G = 0.05  # above: the car was moving, the gravity figure is not a rest value
DISK_MARGIN_MB = 50.0  # journal, baselines, logs beside the outbox bound
OLD_BACKLOG_S = 3600.0


@dataclass
class Row:
    name: str
    status: str
    detail: str


@dataclass
class Observed:
    """What the watch window saw on the live inputs."""

    first_levels: dict[str, int] = field(default_factory=dict)
    levels: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    ctl_polls: int = 0
    ctl_answers: int = 0
    ctl_last: dict[str, Any] | None = None
    acc_samples: list[list[int]] = field(default_factory=list)
    rate_hz: float | None = None
    health: dict[str, Any] = field(default_factory=dict)
    identity: str = ""
    #: the ``di`` and ``ctl`` records in order, for the detectors' judgement (idle_check)
    records: list[tuple[float, str, Any]] = field(default_factory=list)
    t_end: float = 0.0


# ---------------------------------------------------------------- the watch window

async def observe(source: Any, watch_s: float, clock: Callable[[], float] = time.monotonic
                  ) -> Observed:
    """Run ``source`` (a LiveSource) for ``watch_s`` seconds and collect what it gave."""
    obs = Observed()
    await source.start()
    t0 = clock()
    rate_start: tuple[float, int] | None = None

    def accel_samples() -> int:
        acc = source.accel
        return acc.health()["samples"] if acc is not None else 0

    async def stopper() -> None:
        nonlocal rate_start
        await asyncio.sleep(min(WARMUP_S, watch_s / 4))
        rate_start = (clock(), accel_samples())
        await asyncio.sleep(max(0.0, watch_s - (clock() - t0)))
        if source.accel is not None and rate_start is not None:
            dt = clock() - rate_start[0]
            n = accel_samples() - rate_start[1]
            obs.rate_hz = n / dt if dt > 0 and n > 0 else 0.0
        obs.identity = await asyncio.to_thread(_read_identity, source.accel)
        obs.health = source.health()
        source.stop()

    task = asyncio.create_task(stopper())
    try:
        async for rec in source:
            if rec.kind in ("di", "ctl"):
                obs.records.append((rec.t, rec.kind, rec.data))
            obs.t_end = max(obs.t_end, rec.t)
            if rec.kind == "di":
                for name, level in rec.data.items():
                    if name not in obs.first_levels:
                        obs.first_levels[name] = level
                    elif level != obs.levels.get(name):
                        obs.changes[name] = obs.changes.get(name, 0) + 1
                    obs.levels[name] = level
            elif rec.kind == "ctl":
                obs.ctl_polls += 1
                if rec.data is not None:
                    obs.ctl_answers += 1
                    obs.ctl_last = rec.data
            elif rec.kind == "acc":
                obs.acc_samples.extend(rec.data)
        await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()
    return obs


def _read_identity(reader: Any) -> str:
    """The chip's identity register, read now (the chip may have gone since it opened)."""
    if reader is None or not reader.opened:
        return ""
    chip = reader.chip
    if chip.chip == "adxl345":
        from liftwatch.drivers.adxl345 import DEVID as reg
        name = "DEVID"
    else:
        from liftwatch.drivers.lis3dh import WHO_AM_I as reg
        name = "WHO_AM_I"
    try:
        return f"{name} 0x{chip.bus.read_u8(reg):02X}"
    except OSError as exc:
        return f"{name} unreadable: {exc}"


# ---------------------------------------------------------------- verdicts

def input_rows(cfg: Any, obs: Observed, watch_s: float) -> list[Row]:
    """One row per input: its level, and FAIL when the lift left as it stands would raise
    an event because of it, or shows a picture no lift at rest shows (idle_check)."""
    health = obs.health.get("inputs", {}).get("inputs", {})
    verdict = idle_check.judge(cfg, obs.records, max(obs.t_end, watch_s))
    failing = {name for name in cfg.inputs
               if health.get(name, {}).get("state") in ("absent", "failing")}
    # an input that fails on its own (absent, failing, never read) explains any picture
    # it takes part in: its last level is not the lift's, so its partners are not blamed
    broken = failing | {name for name in cfg.inputs if name not in obs.levels}
    rows = []
    for name, wiring in cfg.inputs.items():
        h = health.get(name, {})
        where = f"pin {wiring.pin}"
        if name in failing:
            rows.append(Row(f"input {name}", FAIL, f"{where} {h['state']}: {h.get('error')}"))
            continue
        if name not in obs.levels:
            rows.append(Row(f"input {name}", FAIL, f"{where}: no level read in {watch_s:g} s"))
            continue
        level = obs.levels[name]
        n = obs.changes.get(name, 0)
        moved = f"changed {n}x" if n else "no change"
        meaning = idle_check.MEANING.get(name, ("active", "inactive"))[0 if level else 1]
        detail = f"{where}: {level} ({meaning}), {moved} in {watch_s:g} s"
        found = [f for f in verdict.for_input(name) if not broken & set(f.inputs)]
        if found:
            rows.append(Row(f"input {name}", FAIL, f"{detail}; at rest "
                            + "; ".join(f.text for f in found) + "; "
                            + idle_check.likely_cause(name, wiring, level)))
        else:
            rows.append(Row(f"input {name}", PASS, detail))
    rows += [Row("lift state", FAIL, f.text) for f in verdict.others()]
    return rows


#: where a terminal's serial ports usually are, for "which ports exist here?"
SERIAL_GLOBS = ("ttyUSB*", "ttyACM*", "ttyAMA*", "ttyS[0-9]", "serial[0-9]")


def serial_port_row(cfg: Any, dev: Path = Path("/dev")) -> Row | None:
    """The controller's serial device as what it is: absent, not a serial device, or not
    permitted (with the group to join); None without an RTU link."""
    from liftwatch.drivers.accel import not_permitted

    c = cfg.controller
    if not c.enabled or c.transport != "rtu":
        return None
    port = Path(c.port)
    if not port.exists():
        present = sorted({str(p) for g in SERIAL_GLOBS for p in dev.glob(g)})
        there = f"serial ports here: {', '.join(present)}" if present else \
            "no serial port exists here"
        return Row("serial port", FAIL, f"controller.port {port} does not exist ({there}): "
                   "plug in the RS-485 adapter, or on a Raspberry Pi enable the UART "
                   "(`raspi-config nonint do_serial_hw 0`, then reboot), and set "
                   "controller.port to the port the controller is wired to")
    if not stat.S_ISCHR(port.stat().st_mode):
        return Row("serial port", FAIL, f"controller.port {port} is not a serial device")
    if not os.access(port, os.R_OK | os.W_OK):
        return Row("serial port", FAIL, f"controller.port {not_permitted(port)}")
    return Row("serial port", PASS, f"{port}: present, readable and writable")


def controller_rows(cfg: Any, obs: Observed) -> list[Row]:
    """The link, one row per register block of the map (a block that never gave data
    FAILs with its likely cause: a link where only some registers answer is not a
    working link), the line's error counts, the values read."""
    if not cfg.controller.enabled:
        return [Row("controller link", PASS, "none configured (sensors-only terminal)")]
    where = link_name(cfg)
    ctl_health = obs.health.get("controller", {})
    blocks = _block_rows(ctl_health, cfg.controller.unit_id)
    if obs.ctl_answers == 0:
        return [Row("controller link", FAIL, f"{where}: no answer to {obs.ctl_polls} polls"
                    + _link_why(ctl_health, obs.health.get("poll_errors", 0)))] + blocks
    partial = ctl_health.get("polls_partial", 0)
    status = PASS if obs.ctl_answers == obs.ctl_polls and not partial else WARN
    detail = f"{where}: {obs.ctl_answers}/{obs.ctl_polls} polls answered"
    if partial:
        detail += f", {partial} of them incomplete (a block failed)"
    return ([Row("controller link", status, detail)] + blocks
            + [_line_row(ctl_health), Row("controller values", PASS, fmt_ctl(obs.ctl_last))])


#: Likely cause of a block's Modbus exception, for the technician.
_EXCEPTION_CAUSES = {
    1: "the controller does not serve this table: check table/function in the register map",
    2: "wrong register map, or address base (0/1-based: the map's addresses off by one), "
       "or wrong unit id",
    3: "the controller refuses this length: lower max_registers/max_gap in the map",
    4: "the controller reports a device failure",
    10: "the gateway has no path to this unit: check the unit id and the gateway",
    11: "the gateway's RS-485 side does not answer: check the unit id and that wiring",
}


def _block_rows(h: dict[str, Any], main_unit: int) -> list[Row]:
    """One row per register block: PASS when it gave data every time, FAIL with the
    likely cause when it never did, WARN in between."""
    from liftwatch.drivers.modbus_bus import EXCEPTION_NAMES

    rows = []
    for name, b in (h.get("blocks") or {}).items():
        fields = ", ".join(b.get("fields") or [])
        answers = int(b.get("answers", 0))
        exc = {int(k): v for k, v in (b.get("exceptions") or {}).items()}
        failures = (b.get("timeouts", 0) + sum(exc.values()) + b.get("crc_errors", 0)
                    + b.get("framing_errors", 0) + b.get("skipped", 0))
        label = f"controller block {name}"
        if not failures:
            rows.append(Row(label, PASS, f"{fields}: {answers}/{answers} answered"))
            continue
        if exc:
            code = max(exc, key=exc.__getitem__)
            why = (f"exception {code:02d} ({EXCEPTION_NAMES.get(code, 'unknown')}) in "
                   f"{exc[code]} reads: {_EXCEPTION_CAUSES.get(code, 'see the vendor manual')}")
        elif b.get("timeouts") or b.get("skipped"):
            unit = int(name[1:].split("/", 1)[0]) if name.startswith("u") else main_unit
            why = (f"unit {unit} does not answer: check its unit id and wiring"
                   if unit != main_unit else "no answer: check wiring, baud rate, parity and "
                   "unit id")
        elif b.get("crc_errors"):
            why = "answers with bad CRCs: check baud rate, parity, termination and grounding"
        else:
            why = "truncated or ambiguous answers: check termination and noise"
        status = FAIL if answers == 0 else WARN
        rows.append(Row(label, status, f"{fields}: {answers}/{answers + failures} answered; "
                        f"{why}; these fields are unknown while it fails"))
    return rows


def _line_row(h: dict[str, Any]) -> Row:
    """The line's own trouble: late or foreign answers, bad frames, noise."""
    parts = []
    for key, label in (("late_answers", "late answers drained"),
                       ("mismatched", "foreign or ambiguous answers discarded"),
                       ("duplicates", "duplicated frames"), ("crc_errors", "CRC errors"),
                       ("framing_errors", "framing errors"), ("timeouts", "timeouts"),
                       ("busy_retries", "busy (06) retries"), ("resyncs", "resyncs"),
                       ("reconnects", "reconnects")):
        if h.get(key):
            parts.append(f"{h[key]} {label}")
    notes = []
    if h.get("idle_bytes"):
        notes.append(f"{h['idle_bytes']} idle bytes skipped (transceiver turnaround)")
    if h.get("echoes"):
        notes.append(f"{h['echoes']} request echoes skipped (adapter echo)")
    timeout = h.get("timeout_s")
    if not parts:
        return Row("controller line", PASS, "clean" + (f" ({'; '.join(notes)})" if notes
                                                      else ""))
    hint = ""
    if h.get("late_answers"):
        hint = f"; the controller answers after the timeout: raise timeout_s (now {timeout} s)"
    elif h.get("crc_errors") or h.get("mismatched"):
        hint = "; check termination, grounding and that no other master is on the line"
    return Row("controller line", WARN, ", ".join(parts + notes) + hint)


def _link_why(h: dict[str, Any], poll_errors: int) -> str:
    """Why a link does not answer, from the driver's counters (connected? timeouts? ...)."""
    if not h:
        return ""
    parts = []
    if "connected" in h:
        parts.append("connected" if h["connected"] else "not connected")
    for key, label in (("timeouts", "timeouts"), ("crc_errors", "CRC errors"),
                       ("framing_errors", "framing errors"), ("exceptions", "Modbus exceptions"),
                       ("decode_errors", "decode errors")):
        if h.get(key):
            parts.append(f"{h[key]} {label}")
    if h.get("last_decode_error"):
        parts.append(f"last decode error: {h['last_decode_error']}")
    if poll_errors:
        parts.append(f"{poll_errors} poll errors")
    return f" ({', '.join(parts)})" if parts else ""


def accel_rows(cfg: Any, obs: Observed) -> list[Row]:
    a = cfg.accel
    if a.chip == "none":
        return [Row("accelerometer", PASS, "none configured")]
    where = f"{a.chip} on I2C bus {a.i2c_bus} address 0x{a.address:02X}"
    h = obs.health.get("accel", {})
    state = h.get("state", "absent")
    if state in ("absent", "failing") or not obs.identity or "unreadable" in obs.identity:
        why = h.get("error") or obs.identity or "no answer"
        return [Row("accel identity", FAIL, f"{where} {state}: {why}")]
    rows = [Row("accel identity", PASS, f"{where}: {obs.identity}")]
    fs = float(h.get("fs") or 0.0)
    rate = obs.rate_hz or 0.0
    if fs and abs(rate - fs) <= RATE_TOLERANCE * fs:
        rows.append(Row("accel rate", PASS, f"{rate:.0f} Hz measured, {fs:g} Hz configured "
                        f"(rate_hz = {a.rate_hz})"))
    else:
        rows.append(Row("accel rate", FAIL, f"{rate:.0f} Hz measured, {fs:g} Hz configured "
                        f"(rate_hz = {a.rate_hz}, tolerance {RATE_TOLERANCE:.0%}); "
                        f"state {state}, overruns {h.get('overruns', 0)}"))
    rows.append(gravity_row(cfg, obs.acc_samples, float(h.get("lsb_per_g") or 0.0), state))
    return rows


def gravity_row(cfg: Any, samples: list[list[int]], lsb_per_g: float, state: str) -> Row:
    lo, hi = cfg.detection.gravity_min_g, cfg.detection.gravity_max_g
    if not samples or not lsb_per_g:
        return Row("accel gravity", FAIL, f"no samples ({state})")
    n = len(samples)
    mean = [sum(s[i] for s in samples) / n / lsb_per_g for i in range(3)]
    mags = [math.sqrt(sum(c * c for c in s)) / lsb_per_g for s in samples]
    mag = math.sqrt(sum(c * c for c in mean))
    m_avg = sum(mags) / n
    std = math.sqrt(sum((m - m_avg) ** 2 for m in mags) / n)
    detail = (f"|g| = {mag:.3f} g (expected {lo:g}..{hi:g} at rest), "
              f"mean ({mean[0]:+.3f}, {mean[1]:+.3f}, {mean[2]:+.3f}) g, "
              f"noise {std * 1000:.1f} mg rms over {n} samples")
    if not lo <= mag <= hi:
        return Row("accel gravity", FAIL, detail)
    if std > STILL_STD_G:
        return Row("accel gravity", WARN, detail + " (car moving? repeat at rest)")
    if state != "ok":
        return Row("accel gravity", WARN, detail + f" (sensor state {state})")
    return Row("accel gravity", PASS, detail)


# ---------------------------------------------------------------- broker, clock, disk

def secret_rows(cfg: Any) -> list[Row]:
    """Each TLS and credentials file the config names: readable by this user (the config
    load already refused it otherwise) and, for a check run as root, by the service user
    too, which root's own reading would hide."""
    from liftwatch.agent.credentials import TLS_KEYS, access_problem, service_user_problem

    up, rows = cfg.uplink, []
    for key in (*TLS_KEYS, "credentials_file"):
        value = getattr(up, key)
        if not value:
            continue
        path = Path(value)
        name = f"file uplink.{key}"
        if not path.is_file():
            rows.append(Row(name, FAIL, f"{path} does not exist"))
            continue
        problem = access_problem(path) or (service_user_problem(path) if os.geteuid() == 0
                                           else None)
        rows.append(Row(name, FAIL, problem) if problem else Row(name, PASS, f"{path}: readable"))
    return rows


def broker_row(cfg: Any, timeout_s: float = 5.0) -> Row:
    """A real MQTT connection with the configured TLS and credentials, then disconnect."""
    import paho.mqtt.client as mqtt
    from liftwatch.agent.config import ConfigError, load_credentials
    from liftwatch.agent.tls import UplinkError, make_tls_context
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    up = cfg.uplink
    where = f"{up.broker}:{up.port}"
    try:
        tls = make_tls_context(up) if up.tls else None
        creds = load_credentials(up.credentials_file) if up.credentials_file else None
    except (UplinkError, ConfigError) as exc:
        return Row("broker", FAIL, f"{where}: {exc}")
    v5 = up.protocol == "mqtt5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"lw-{cfg.terminal.lift_id}-check-{os.getpid()}",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else
                         MQTTProtocolVersion.MQTTv311, reconnect_on_failure=False)
    client.connect_timeout = timeout_s
    if tls is not None:
        client.tls_set_context(tls)
    if creds is not None:
        client.username_pw_set(*creds)
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.setdefault("closed", str(rc))
        done.set()

    def on_log(_c: Any, _u: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            result.setdefault("error", text.replace("failed to receive on socket: ", ""))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_log = on_log
    t0 = time.monotonic()
    try:
        client.connect(up.broker, up.port, keepalive=max(10, up.keepalive_s))
    except ssl.SSLCertVerificationError as exc:
        return Row("broker", FAIL, f"{where}: TLS: the broker's certificate is not trusted "
                   f"({exc.verify_message})")
    except ssl.SSLError as exc:
        return Row("broker", FAIL, f"{where}: TLS handshake failed ({exc.reason or exc})")
    except socket.gaierror as exc:
        return Row("broker", FAIL, f"{where}: host name not resolved ({exc.strerror})")
    except ConnectionRefusedError:
        return Row("broker", FAIL, f"{where}: connection refused (broker down or wrong port)")
    except TimeoutError:
        return Row("broker", FAIL, f"{where}: no answer within {timeout_s:g} s")
    except OSError as exc:
        return Row("broker", FAIL, f"{where}: {exc.strerror or exc}")
    sock = client.socket()
    tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        with contextlib.suppress(Exception):  # best effort: we are leaving anyway
            client.disconnect()
        client.loop_stop()
    dt = time.monotonic() - t0
    rc = result.get("rc")
    if rc is None:
        why = result.get("error") or result.get("closed")
        if not why:
            return Row("broker", FAIL, f"{where}: no CONNACK within {timeout_s:g} s")
        hint = ""
        if tls is not None:
            hint = ("; the broker closed the TLS connection: does it accept "
                    "this terminal's client certificate (uplink.cert_file)?" if up.cert_file
                    else "; the broker closed the TLS connection: does it require a client "
                    "certificate (uplink.cert_file, uplink.key_file)?")
        return Row("broker", FAIL, f"{where}: closed before CONNACK ({why}){hint}")
    if rc.is_failure:
        return Row("broker", FAIL, f"{where}: connection refused by the broker: {rc}")
    if tls_version is None:
        return Row("broker", WARN, f"{where}: connected in {dt:.2f} s WITHOUT TLS "
                   "(uplink.tls = false)")
    return Row("broker", PASS, f"{where}: connected over {tls_version} in {dt:.2f} s")


def clock_row(probe: Callable[[], Any] | None = None) -> Row:
    from liftwatch.agent.timebase import kernel_clock_state

    st = (probe or kernel_clock_state)()
    if st.state < 0:
        return Row("clock", WARN, "kernel clock state unavailable (adjtimex): messages "
                   "will carry tq = 0")
    if st.synced:
        return Row("clock", PASS, f"synchronised (estimated error {st.esterror_us} us)")
    return Row("clock", WARN, "NOT synchronised (adjtimex: no NTP discipline): messages carry "
               "tq = 0 until it is; check chrony / systemd-timesyncd and the network")


def disk_row(cfg: Any) -> Row:
    data = Path(cfg.storage.data_dir)
    note = ""
    where = data
    if not data.is_dir():
        if data.exists():
            return Row("disk", FAIL, f"storage.data_dir {data} is not a directory")
        # Before the first start it may not exist: systemd's StateDirectory= creates it.
        where = next((p for p in data.parents if p.is_dir()), Path("/"))
        note = f" (does not exist yet: created when the service starts; measured on {where})"
    elif not os.access(data, os.W_OK | os.X_OK):
        return Row("disk", FAIL, f"storage.data_dir {data} is not writable by this user "
                   f"(uid {os.getuid()})")
    usage = shutil.disk_usage(where)
    free_mb = usage.free / 1e6
    need = cfg.storage.outbox_max_mb + DISK_MARGIN_MB
    detail = (f"{data}: {free_mb:.0f} MB free of {usage.total / 1e6:.0f} MB; needs "
              f"{need:.0f} MB (outbox_max_mb {cfg.storage.outbox_max_mb:g} + {DISK_MARGIN_MB:g})"
              + note)
    if free_mb < need:
        return Row("disk", FAIL, detail)
    return Row("disk", WARN if note else PASS, detail)


def outbox_row(cfg: Any) -> Row:
    from liftwatch.agent.tools.outbox_view import OutboxViewError, outbox_stats

    try:
        st, source = outbox_stats(Path(cfg.storage.data_dir) / "outbox")
    except OutboxViewError as exc:
        return Row("outbox", FAIL, str(exc))
    if st is None:
        return Row("outbox", PASS, "empty (not created yet)")
    lanes = st["lanes"]
    parts = []
    oldest = 0.0
    for lane, s in lanes.items():
        parts.append(f"{lane} {s['depth']}")
        oldest = max(oldest, s["oldest_age_s"] or 0.0)
    detail = ", ".join(parts) + f" waiting ({st['bytes']} B)"
    if oldest:
        detail += f", oldest {oldest:.0f} s"
    warn = []
    if any(st["dropped"].values()):
        warn.append("dropped " + ", ".join(f"{k} {v}" for k, v in st["dropped"].items() if v))
    if st["quarantined"]:
        warn.append(f"{len(st['quarantined'])} quarantined file(s)")
    if oldest > OLD_BACKLOG_S:
        warn.append("backlog older than 1 h")
    if source != "outbox":
        detail += f" [{source}]"
    if warn:
        return Row("outbox", WARN, detail + "; " + "; ".join(warn))
    return Row("outbox", PASS, detail)


# ---------------------------------------------------------------- the whole check

async def run_checks(cfg: Any, *, watch_s: float = DEFAULT_WATCH_S, backend: str | None = None,
                     sim_dir: str | Path | None = None, pins: Any | None = None,
                     i2c: Any | None = None, controller: Any | None = None,
                     clock_probe: Callable[[], Any] | None = None,
                     broker_timeout_s: float = 5.0) -> list[Row]:
    """Every check on a loaded config; the inputs are watched while the broker is tried."""
    rows = [Row("config", PASS, f"{cfg.path}: valid ({len(cfg.inputs)} inputs, accelerometer "
                f"{cfg.accel.chip}, controller {'on' if cfg.controller.enabled else 'off'})")]
    rows += [Row("config", WARN, w) for w in cfg.warnings]
    broker_task = asyncio.create_task(asyncio.to_thread(broker_row, cfg, broker_timeout_s))
    try:
        source = make_source(cfg, backend=backend, sim_dir=sim_dir, pins=pins, i2c=i2c,
                             controller=controller, accel_retry_s=None)
        obs = await observe(source, watch_s)
    except Exception as exc:  # a driver that cannot even be built is a failed check
        rows.append(Row("inputs", FAIL, f"the terminal's inputs could not be opened: "
                        f"{type(exc).__name__}: {exc}"))
    else:
        # the serial port is judged only when the real Modbus link uses it (a simulated
        # or injected controller opens no port)
        port = serial_port_row(cfg) if backend != "simulated" and controller is None \
            else None
        rows += [port] if port is not None else []
        # beside a running agent, a device only one process may use is not read (and
        # not judged): live_source.py
        skipped = obs.health.get("skipped", {})
        for device, name, check_rows in (
                ("controller", "controller link", lambda: controller_rows(cfg, obs)),
                ("inputs", "inputs", lambda: input_rows(cfg, obs, watch_s)),
                ("accel", "accelerometer", lambda: accel_rows(cfg, obs))):
            rows += [Row(name, WARN, skipped[device])] if device in skipped else check_rows()
        for where, feed in (obs.health.get("feed") or {}).items():
            if feed.get("bad_messages"):
                rows.append(Row("simulation feed", WARN, f"{where}: {feed['bad_messages']} "
                                f"message(s) refused: {feed['last_error']}"))
    rows += secret_rows(cfg)
    rows.append(await broker_task)
    rows.append(clock_row(clock_probe))
    rows.append(disk_row(cfg))
    rows.append(outbox_row(cfg))
    return rows


class TableSays(logging.Filter):
    """Holds back the drivers' warnings while check watches: each device's health is a
    row of the table, and the same words logged beside it read as a second list of
    problems. Errors (a thread that died) still show; ``-v`` shows everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.name.startswith(
            ("liftwatch.drivers.", "liftwatch.agent.live_source"))


def format_table(rows: list[Row], color: bool = False) -> str:
    width = max(len(r.name) for r in rows)
    paint = {PASS: "\x1b[32m", WARN: "\x1b[33m", FAIL: "\x1b[31;1m"}
    out = []
    for r in rows:
        status = f"{paint[r.status]}{r.status}\x1b[0m" if color else r.status
        out.append(f"{r.name:<{width}}  {status}  {r.detail}")
    return "\n".join(out)


def verdict(rows: list[Row]) -> int:
    return 1 if any(r.status == FAIL for r in rows) else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--watch", type=float, default=DEFAULT_WATCH_S, metavar="S",
                   help=f"seconds to watch the inputs (default {DEFAULT_WATCH_S:g}); operate "
                   "contacts meanwhile to see them change")
    p.add_argument("--broker-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for the broker (default 5)")


def run(args: argparse.Namespace) -> int:
    if not (args.watch > 0 and math.isfinite(args.watch)):
        print(f"liftwatch check: --watch must be > 0 s, found {args.watch}", file=sys.stderr)
        return 2
    cfg = load_config_reported(args.config, "liftwatch check")
    if cfg is None:
        print(format_table([Row("config", FAIL, f"{args.config}: see the problems above")]))
        return 1
    quiet = TableSays()
    if not getattr(args, "verbose", 0):
        for handler in logging.getLogger().handlers:
            handler.addFilter(quiet)
    try:
        rows = asyncio.run(run_checks(cfg, watch_s=args.watch, backend=args.backend,
                                      sim_dir=args.sim_dir,
                                      broker_timeout_s=args.broker_timeout))
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(quiet)
    print(format_table(rows, color=sys.stdout.isatty()))
    failed = sum(r.status == FAIL for r in rows)
    print(f"\n{'FAIL' if failed else 'PASS'}: {failed} check(s) failed, "
          f"{sum(r.status == WARN for r in rows)} warning(s)")
    return verdict(rows)
