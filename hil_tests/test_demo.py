"""The demo (the README's main command) runs from a clean state in its short mode and shows
the entrapment reaching the platform view (issue 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.realtime(140)
@pytest.mark.timeout(280)
def test_demo_quick_mode_shows_the_entrapment_at_the_platform(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(HERE / "demo.py"), "--quick",
                          "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=270, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "terminal online" in text
    assert "ALARM   entrapment_nonlevel raised" in text
    assert ">> command centre: ack" in text
    assert "entrapment_nonlevel cleared" in text
    assert "trip  " in text and "v_max" in text
    assert "The entrapment reached the platform view" in text
    assert "scenario demo story: PASS" in text
