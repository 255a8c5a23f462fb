"""A technician pipes a command into ``head``: the output stops, with no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "hil_tests" / "traces" / "entrapment_between_floors.jsonl.gz"


def test_a_closed_pipe_ends_replay_without_a_traceback() -> None:
    p = subprocess.Popen([sys.executable, "-m", "liftwatch.agent.cli", "replay", str(TRACE),
                          "--format", "text", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # as `| head -1` does once it has its line
    err = p.stderr.read().decode()
    rc = p.wait(timeout=60)
    assert first.startswith(b"# "), first
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc in (0, 1), (rc, err)
