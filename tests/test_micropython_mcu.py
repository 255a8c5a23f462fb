"""The MCU profile (signal/mcu.py) on a real MicroPython 1.27, against its numpy twin.

MicroPython is the npm WebAssembly build (tests/micropython, installed by scripts/setup),
run under node: its small ints are 31-bit as on a 32-bit microcontroller. The profile runs
under ``micropython.heap_lock()``: any heap allocation, and so any value beyond the small
int range (a big int is a heap object), raises MemoryError there. Every output integer is
compared with ``mcu_numpy`` (one mismatch fails), and the heap the profile holds (code,
words, state) is held below 64 KB.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from liftwatch.signal import chain, mcu, mcu_coeffs, mcu_design, mcu_numpy

ROOT = Path(__file__).resolve().parents[1]
MPY_DIR = ROOT / "tests" / "micropython"
TRACE = ROOT / "hil_tests" / "traces" / "normal_day.jsonl.gz"
HEAP_LIMIT = 64 * 1024
COEFFS = mcu_design.coeffs_dict(mcu_coeffs)
TILT = [[0.995, 0.0, -0.0998], [0.0, 1.0, 0.0], [0.0998, 0.0, 0.995]]  # ~5.7 deg about y

PRELUDE = "import gc, micropython\ngc.collect()\nB0 = gc.mem_alloc()\n"

DRIVER = '''
def run(tag, data_text, fe):
    data = [int(v) for v in data_text.split(",")]
    n = len(data) // 3
    outs = [0] * (4 * (n // 2 + 1))
    push = fe.push
    out = fe.out
    k = 0
    i = 0
    err = "none"
    micropython.heap_lock()
    try:
        while i < n:
            j = 3 * i
            if push(data[j], data[j + 1], data[j + 2]):
                outs[k] = out[0]
                outs[k + 1] = out[1]
                outs[k + 2] = out[2]
                outs[k + 3] = out[3]
                k += 4
            i += 1
    except MemoryError:
        err = "MemoryError"
    except Exception:
        err = "exception"
    micropython.heap_unlock()
    print("RUN", tag, HEAP, err, i)
    for r in range(0, k, 4):
        print("OUT", tag, outs[r], outs[r + 1], outs[r + 2], outs[r + 3])
'''


def node_ready() -> None:
    """Fail (never skip) with the fix when node or the pinned MicroPython is missing."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed: run scripts/setup")
    if not (MPY_DIR / "node_modules" / "@micropython"
            / "micropython-webassembly-pyscript").is_dir():
        pytest.fail("MicroPython for node is not installed: run scripts/setup "
                    "(npm ci in tests/micropython)")


def trace_rows(start: int = 7200, count: int = 4000) -> np.ndarray:
    """Raw counts of the example trace around its first trip (start/stop, vibration)."""
    rows: list[list[int]] = []
    with gzip.open(TRACE, "rt") as f:
        for line in f:
            obj = json.loads(line)
            if "acc" in obj:
                rows += obj["acc"]
            if len(rows) >= start + count:
                break
    return np.asarray(rows[start:start + count], dtype=np.int64)


def full_scale_rows(count: int = 2000) -> np.ndarray:
    """+-32767-count clamped steps on all axes with noise: every clamp and bound at work."""
    rng = np.random.default_rng(21)
    steps = np.repeat(rng.integers(-1, 2, size=(count // 50, 3)) * 32767, 50, axis=0)
    noise = rng.integers(-3000, 3001, size=(count, 3))
    return np.clip(steps + noise, -32768, 32767)


def run_micropython(tmp_path: Path, runs: list[tuple[str, np.ndarray, list, dict]]) -> dict:
    """Run the profile on MicroPython for each (tag, rows, rot, coeffs); parse its output."""
    node_ready()
    prelude, setup, driver = (tmp_path / n for n in ("prelude.py", "setup.py", "driver.py"))
    prelude.write_text(PRELUDE)
    # What the heap holds for the profile: mcu's code, the words, one front-end's state
    # (measured before the driver and its data are compiled).
    setup.write_text(f"FE0 = FrontEnd({runs[0][3]!r}, {runs[0][2]!r})\ngc.collect()\n"
                     "HEAP = gc.mem_alloc() - B0\n")
    calls = "".join(f"run({tag!r}, {','.join(map(str, rows.ravel().tolist()))!r}, "
                    + ("FE0" if i == 0 else f"FrontEnd({coeffs!r}, {rot!r})") + ")\n"
                    for i, (tag, rows, rot, coeffs) in enumerate(runs))
    driver.write_text(DRIVER + calls)
    sources = [prelude, Path(mcu.__file__), setup, driver]
    res = subprocess.run(["node", str(MPY_DIR / "run.mjs"), "--heap", str(1 << 21),
                          *map(str, sources)], capture_output=True, text=True, timeout=120,
                         cwd=MPY_DIR)
    assert res.returncode == 0, res.stderr[-2000:]
    got: dict = {tag: {"outs": []} for tag, *_ in runs}
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts[0] == "RUN":
            got[parts[1]].update(heap=int(parts[2]), err=parts[3], pushed=int(parts[4]))
        elif parts[0] == "OUT":
            got[parts[1]]["outs"].append([int(v) for v in parts[2:]])
    return got


def test_mcu_profile_on_micropython_equals_numpy_twin(tmp_path: Path) -> None:
    """Trace rows (tilted mounting) and full-scale input: no allocation, no big int, and
    every integer equal to the numpy twin's; the profile's heap below 64 KB."""
    rot = chain.rotation_q14(TILT)
    runs = [("trace", trace_rows(), rot, COEFFS),
            ("fullscale", full_scale_rows(), None, COEFFS)]
    got = run_micropython(tmp_path, runs)
    for tag, rows, r, coeffs in runs:
        g = got[tag]
        assert g["err"] == "none", f"{tag}: {g['err']} after {g['pushed']} samples"
        assert g["pushed"] == len(rows)
        assert 0 < g["heap"] <= HEAP_LIMIT, f"{tag}: heap {g['heap']} B"
        print(f"{tag}: profile heap {g['heap']} B")
        twin = mcu_numpy.FrontEndNumpy(coeffs, r)
        want = np.concatenate([twin.process(rows[:777]), twin.process(rows[777:])])
        mp_out = np.asarray(g["outs"], dtype=np.int64)
        assert mp_out.shape == want.shape == ((len(rows) + 1) // 2, 4)
        bad = np.argwhere(mp_out != want)
        assert not len(bad), f"{tag}: {len(bad)} mismatches, first at {bad[0].tolist()}: " \
            f"{mp_out[tuple(bad[0])]} != {want[tuple(bad[0])]}"
    # the full-scale run really reached the clamps
    fs = np.asarray(got["fullscale"]["outs"])
    assert np.abs(fs[:, 0]).max() >= (COEFFS["SIG_LIMIT"] << COEFFS["A_SHIFT"]) - 8


def test_heap_lock_catches_a_value_beyond_small_ints(tmp_path: Path) -> None:
    """The check can fail: counts far beyond 16 bits make the rotation's products exceed
    2**30, and MicroPython raises MemoryError under heap_lock."""
    rows = np.array([[1 << 17, 1 << 17, 1 << 17]] * 4)
    got = run_micropython(tmp_path, [("big", rows, None, COEFFS)])
    assert got["big"]["err"] == "MemoryError"
