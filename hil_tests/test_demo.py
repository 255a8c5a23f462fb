"""The demo (the README's main command) runs from a clean state in its short mode and shows
the entrapment reaching the platform view (issue 7), and tells the truth of the stalled
trip: where the car stopped, the emergency stop, the rescue, the speed while moving and
which alarm the command centre acknowledges (issue 13)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo import clock_text, command_text, live_line, trip_text

HERE = Path(__file__).resolve().parent


def run_on_a_terminal(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` with its output on a pseudo-terminal, as a user at a console sees it
    (the demo draws its live status line only there); returns (status, output) with the
    live line's redraws as separate lines."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        rc = p.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return rc, text.replace("\x1b[2K", "").replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.realtime(140)
@pytest.mark.timeout(280)
def test_demo_quick_mode_shows_the_entrapment_at_the_platform(tmp_path: Path) -> None:
    rc, text = run_on_a_terminal([sys.executable, str(HERE / "demo.py"), "--quick",
                                  "--workdir", str(tmp_path)], timeout=270)
    assert rc == 0, text[-3000:]
    assert "terminal online" in text
    assert "ALARM   entrapment_nonlevel raised" in text
    assert "entrapment_nonlevel cleared" in text
    assert "trip  " in text and "v_max" in text
    assert "The entrapment reached the platform view" in text
    assert "scenario demo story: PASS" in text
    # the stalled trip tells the truth (issue 13): stopped between two landings, an
    # emergency stop whose figures are not ride quality, and the rescue from there
    stall = re.search(r"trip  \S+ → stopped between (\S+) and (\S+) .*EMERGENCY STOP: "
                      r"d_max [0-9.]+ m/s²  jerk [0-9.]+ m/s³ \(a fault stop", text)
    assert stall, text
    lo, hi = stall.groups()
    assert f"entrapment_nonlevel raised between {lo} and {hi}" in text
    assert re.search(rf"trip  between {lo} and {hi} → ({lo}|{hi})  ", text), text
    assert "command centre acknowledges the entrapment_nonlevel alarm (eid " in text
    assert "command centre acknowledges the alarm_button alarm (eid " in text
    # the live line follows the car: its speed while moving, at rated speed at times
    speeds = [float(v) for v in re.findall(r"floor \S+ [↑↓] +([0-9.]+) m/s", text)]
    assert speeds and max(speeds) >= 1.5, speeds
    assert f"stopped outside a door zone, between {lo} and {hi}" in text


def test_the_console_reads_a_stall_the_rescue_and_the_acknowledgement() -> None:
    stall = {"from": "3", "to": "4", "level": False, "to_between": ["4", "5"],
             "emergency_stop": True, "distance_m": 5.0, "v_max": 1.6, "a_max": 0.86,
             "d_max": 6.1, "jerk_max": 24.89, "vib_pp_max": {"x": 0.1, "y": 0.1, "z": 0.75}}
    text = trip_text(stall)
    assert text.startswith("trip  3 → stopped between 4 and 5  ")
    assert "EMERGENCY STOP: d_max 6.10 m/s²  jerk 24.89 m/s³ (a fault stop" in text
    assert "a_max" not in text
    rescue = {"from": "4", "to": "5", "from_between": ["4", "5"], "distance_m": 1.2,
              "v_max": 0.31, "a_max": 0.35, "jerk_max": 0.52, "vib_pp_max": {"z": 0.16}}
    assert trip_text(rescue).startswith("trip  between 4 and 5 → 5  ")
    ack = {"id": "ack-1-1", "op": "ack", "args": {"eid": "1-1"}}
    assert command_text(ack, {"1-1": "entrapment_nonlevel"}) == \
        "command centre acknowledges the entrapment_nonlevel alarm (eid 1-1)"
    moving = {"run": 1, "dir": 1, "floor": "3", "speed": 1.6, "door": 5, "src": "fused"}
    assert "floor 3 ↑ 1.60 m/s" in live_line(moving)
    stopped = {**moving, "run": 0, "dir": 0, "speed": 0.0, "zone": 0, "floor": "4"}
    assert "stopped outside a door zone, between 4 and 5" in live_line(stopped, ["4", "5"])
    assert "m/s" not in live_line(stopped)


def test_the_story_clock_reads_times_before_the_start_as_negative() -> None:
    """The terminal's online message arrives just before the story starts: 00:00.0 or
    -00:00.2, not -1:59.8 (the demo printed "-1:60.0 terminal online")."""
    assert clock_text(-0.04) == "00:00.0"
    assert clock_text(-0.2) == "-00:00.2"
    assert clock_text(-61.5) == "-01:01.5"
    assert clock_text(0.0) == "00:00.0"
    assert clock_text(59.96) == "01:00.0"
    assert clock_text(82.2) == "01:22.2"
