"""``liftwatch demo``: the repository's demo (``scripts/demo``) from the installed command.

    liftwatch demo [--quick] [--workdir DIR]

The demo is a simulated lift playing its controller over Modbus RTU and its inputs
through the simulated backends, a local Mosquitto, the real agent and a console view of
what the platform receives. The lift simulator and the rig live in the source
repository (``hil_tests/``), not in the installed package: a terminal has no use for
them. So this command runs ``hil_tests/demo.py`` of the repository this package is
installed from (``scripts/setup`` makes such an editable install), with this
interpreter; installed from a wheel, it says where to get the demo and exits 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import liftwatch.agent

PROG = "liftwatch demo"


def demo_script(package_dir: Path | None = None) -> Path | None:
    """``hil_tests/demo.py`` beside the folder ``liftwatch.agent`` is loaded from (the
    repository's ``agent/`` in an editable install), or None."""
    here = package_dir or Path(liftwatch.agent.__file__).resolve().parent
    script = here.parent / "hil_tests" / "demo.py"
    return script if script.is_file() else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the short story (about 2 minutes)")
    p.add_argument("--workdir", type=Path, help="keep the demo's files (broker, rig, agent "
                   "data and log) here instead of a temporary folder")


def run(args: argparse.Namespace, package_dir: Path | None = None) -> int:
    script = demo_script(package_dir)
    if script is None:
        print(f"{PROG}: the demo needs the source repository (its lift simulator in "
              "hil_tests/ is not part of the installed package); clone liftwatch and run "
              "scripts/demo there", file=sys.stderr)
        return 2
    cmd = [sys.executable, str(script)]
    if args.quick:
        cmd.append("--quick")
    if args.workdir is not None:
        cmd += ["--workdir", str(args.workdir)]
    try:
        return subprocess.run(cmd, cwd=script.parent.parent, check=False).returncode
    except KeyboardInterrupt:
        return 130
