"""``liftwatch demo``: runs the repository's demo (hil_tests/demo.py) when the package is
installed from the repository, and says clearly what is missing when it is not."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
from conftest import REPO
from liftwatch.agent.cli import COMMANDS, main
from liftwatch.agent.tools import demo


def test_the_editable_install_finds_the_repositorys_demo() -> None:
    assert demo.demo_script() == REPO / "hil_tests" / "demo.py"


def test_demo_is_a_working_command_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert ei.value.code == 0 and "--quick" in out and "--workdir" in out


def test_it_runs_the_script_with_the_options_and_returns_its_status(tmp_path: Path) -> None:
    # a repository layout whose hil_tests/demo.py records how it was started
    (tmp_path / "agent").mkdir()
    (tmp_path / "hil_tests").mkdir()
    (tmp_path / "hil_tests" / "demo.py").write_text(
        "import os, sys\n"
        "open(os.path.join(os.path.dirname(__file__), 'argv'), 'w').write(' '.join("
        "sys.argv[1:]) + '|' + os.getcwd())\n"
        "sys.exit(3)\n")
    args = argparse.Namespace(quick=True, workdir=tmp_path / "w")
    assert demo.run(args, tmp_path / "agent") == 3
    argv, cwd = (tmp_path / "hil_tests" / "argv").read_text().split("|")
    assert argv == f"--quick --workdir {tmp_path / 'w'}" and Path(cwd) == tmp_path


def test_without_the_repository_it_says_where_the_demo_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agent").mkdir()
    args = argparse.Namespace(quick=False, workdir=None)
    assert demo.run(args, tmp_path / "agent") == 2
    err = capsys.readouterr().err
    assert "needs the source repository" in err and "scripts/demo" in err
    assert "not available in this build" not in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_listed_command_is_there(command: str) -> None:
    """Nothing --help lists answers "not available in this build"."""
    mod = importlib.import_module(COMMANDS[command][0])
    assert callable(mod.add_arguments) and callable(mod.run)
