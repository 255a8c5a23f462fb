"""The package layout of the design card, and the `signal` name trap of architecture.md."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_signal_folder_never_shadows_stdlib_signal() -> None:
    assert not (REPO / "signal" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import asyncio, signal; print(signal.SIGTERM.name)"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SIGTERM"


def test_pytest_collects_from_repository_root() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_layout.py"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_signal_folder_never_shadows_stdlib_signal" in out.stdout


def test_subpackages_import_from_their_folders() -> None:
    import liftwatch.agent
    import liftwatch.buffer
    import liftwatch.drivers
    import liftwatch.signal.settings

    for mod, folder in ((liftwatch.agent, "agent"), (liftwatch.buffer, "buffer"),
                        (liftwatch.drivers, "drivers"), (liftwatch.signal.settings, "signal")):
        assert (REPO / folder) in __import__("pathlib").Path(mod.__file__).resolve().parents


def test_console_script_help() -> None:
    out = subprocess.run([sys.executable, "-m", "liftwatch.agent.cli", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "replay" in out.stdout
