"""The technician tools' --help says what --backend simulated really simulates: every
device, the controller included (as LiveSource does and ``record --help`` says)."""

from __future__ import annotations

import pytest
from liftwatch.agent.cli import build_parser


@pytest.mark.parametrize("command", ["check", "monitor", "calibrate", "record"])
def test_backend_help_names_the_controller(command: str) -> None:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    backend = next(a for a in sub._actions if a.dest == "backend")
    assert "controller" in (backend.help or ""), backend.help
