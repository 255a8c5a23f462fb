"""What the attack tests share: the real agent (``liftwatch run`` as a child process) on a
piece of the entrapment trace that starts just before the genuine alarm press, against
a real Mosquitto, and the check that the alarm reached the broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from make_traces import PRESS_S
from test_runtime_trace import cut_trace, entrapment_example, liftwatch
from uplink_helpers import LIFT, Observer, write_config

CMD = f"lift/{LIFT}/cmd"
#: the cut starts 2 s before the genuine press; 60 s of trace (the agent is stopped
#: before its end by the tests that need it running)
PRESS_AT = 2.0


def press_trace(d: Path) -> Path:
    dst = d / "press.jsonl"
    if not dst.exists():
        cut_trace(entrapment_example(), dst, PRESS_S - PRESS_AT, PRESS_S - PRESS_AT + 60.0,
                  start="2026-11-23T10:00:00Z")
    return dst


def attack_config(d: Path, port: int, extra: str = "", **uplink: Any) -> Path:
    """The terminal config of the tests: alarms repeated every second (so a test sees
    them repeat, and stop once acknowledged)."""
    cfg = write_config(d, port, **uplink)
    cfg.write_text(cfg.read_text() + "\n[detection]\nalarm_repeat_s = 1.0\n" + extra)
    return cfg


class AgentRun:
    """``liftwatch run --allow-root`` (CI runs as root; the lift is a trace) as a child
    process; its stderr is collected line by line."""

    def __init__(self, cfg: Path, trace: Path, speed: float = 1.0, drain_s: float = 5.0,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            liftwatch("run", "--config", str(cfg), "--trace", str(trace), "--other-lift",
                      "--speed", str(speed), "--drain-s", str(drain_s), *args),
            stderr=subprocess.PIPE, text=True, errors="replace",
            env=dict(os.environ, **(env or {})))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def peak_rss_kb(self) -> int:
        """The child's peak resident set so far (VmHWM), in kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/PID/status")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5)
        return rc

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def alarms(obs: Observer, code: str = "alarm_button") -> list[dict[str, Any]]:
    """The raised events of ``code`` the broker delivered (first sends and repeats)."""
    out = []
    for m in obs.on("event"):
        body = json.loads(m.payload)
        if body.get("code") == code and body.get("state") == "raised":
            out.append(body)
    return out


def wait_alarm(obs: Observer, timeout: float = 20.0) -> dict[str, Any]:
    """The genuine press's alarm as the platform received it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = alarms(obs)
        if got:
            return got[0]
        time.sleep(0.05)
    raise AssertionError("the genuine alarm press never reached the broker")


def replies(obs: Observer) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in obs.on("reply")]


def wait_replies(obs: Observer, pred: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = replies(obs)
        if pred(got):
            return got
        time.sleep(0.05)
    raise AssertionError(f"replies not as expected: {replies(obs)[-5:]}")
