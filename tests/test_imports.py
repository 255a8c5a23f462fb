"""Who may import whom (docs/architecture.md): the table there, held by the source.

Every ``import`` of every module is read with ``ast`` (nothing is executed), so a rule
broken in a branch that the tests never run is still caught.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import REPO

FOLDERS = {"signal": "liftwatch.signal", "drivers": "liftwatch.drivers",
           "buffer": "liftwatch.buffer", "agent": "liftwatch.agent"}
#: third-party packages each lower folder may import (architecture.md "may import");
#: a lower folder imports no other folder of the project (arrows point down the table)
THIRD_PARTY = {
    "signal": {"numpy"},
    "drivers": {"serial", "pymodbus", "board", "digitalio", "busio", "adafruit_blinka",
                "numpy"},
    "buffer": {"tinydb"},
}
#: the daemon's internals: the technician's tools never import them
DAEMON = {"runtime", "storing", "remote_config", "uplink", "commands", "health", "diskfault",
          "sdnotify", "messages", "reconnect", "override"}


def modules() -> list[tuple[str, str, Path]]:
    out = []
    for folder, pkg in FOLDERS.items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = f.relative_to(REPO / folder).with_suffix("").parts
            out.append((folder, ".".join((pkg, *parts)), f))
    return out


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # "from liftwatch.agent import runtime" names the module in the alias
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}


@pytest.mark.parametrize("folder", ["signal", "drivers", "buffer"])
def test_a_lower_folder_imports_itself_and_its_own_packages_only(folder: str) -> None:
    own = FOLDERS[folder]
    bad = {}
    for f_folder, mod, path in modules():
        if f_folder != folder:
            continue
        wrong = {n for n in imports(path)
                 if not (n == own or n.startswith(own + ".")
                         or n.split(".")[0] in THIRD_PARTY[folder])}
        if wrong:
            bad[mod] = sorted(wrong)
    assert not bad, f"{folder}/ may import only itself and {sorted(THIRD_PARTY[folder])}: {bad}"


def test_the_tools_never_import_the_daemons_internals() -> None:
    bad = {}
    for _folder, mod, path in modules():
        if not mod.startswith("liftwatch.agent.tools."):
            continue
        wrong = {n for n in imports(path)
                 if n.startswith("liftwatch.agent.") and n.split(".")[2] in DAEMON}
        if wrong:
            bad[mod] = sorted(wrong)
    assert not bad, f"a technician tool imports the daemon's internals: {bad}"


def test_the_daemon_never_imports_a_tool() -> None:
    bad = {}
    for _folder, mod, path in modules():
        if not mod.startswith("liftwatch.agent.") or mod.startswith("liftwatch.agent.tools"):
            continue
        if mod == "liftwatch.agent.cli":
            continue   # the command line dispatches to both, by name, when asked
        wrong = {n for n in imports(path) if n.startswith("liftwatch.agent.tools")}
        if wrong:
            bad[mod] = sorted(wrong)
    assert not bad, f"the daemon imports a technician tool: {bad}"


def test_the_rules_see_what_they_judge() -> None:
    """The walk finds the modules and their imports (a rule over nothing passes)."""
    mods = {mod for _f, mod, _p in modules()}
    assert {"liftwatch.signal.pipeline", "liftwatch.agent.runtime",
            "liftwatch.agent.tools.check", "liftwatch.buffer.outbox"} <= mods
    runtime = REPO / "agent" / "runtime.py"
    assert "liftwatch.signal.pipeline" in imports(runtime)
