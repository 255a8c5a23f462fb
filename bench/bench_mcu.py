"""The MCU profile (signal/mcu.py) on a real MicroPython 1.27: speed, heap, largest value.

Run: ``.venv/bin/python bench/bench_mcu.py [--rows N]`` (needs scripts/setup's node and
tests/micropython). Prints, for N rows of the example trace (400 Hz, tilted mounting):

* the MicroPython (npm WebAssembly build under node) time per input sample of the MCU
  profile and of the Pi chain's scalar kernels (``fixedpoint``: FIR decimators and
  look-ahead cascades in 32-sample blocks, as the issue measured them), their ratio, and
  the Cortex-M3 instructions per input sample that ratio implies from the issue's qemu
  measurement of the chain (490,000): an ESTIMATE, not a qemu count (see below);
* CPython bytecodes per input sample of the profile (interpreter-independent work count;
  MicroPython compiles this code to about as many bytecodes);
* the profile's heap (gc.mem_alloc: its code, words and one front-end's state) and whether
  the run completed under ``micropython.heap_lock()`` (no allocation, no big int);
* the largest |intermediate| of the profile (numpy twin's record) on the trace and on
  full-scale clamped input, against the 2**30 small-int limit.

Not measured here: instructions on a Cortex-M3 build of MicroPython under qemu
(``qemu-system-arm -M mps2-an385 -icount shift=0`` with ``-d exec`` or the ``insn``
plugin counting instructions, ports/qemu of MicroPython 1.27 built with
``BOARD=MPS2_AN385``, running this file): that needs MicroPython's source and an ARM
toolchain, which this bench does not fetch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from liftwatch.signal import chain, fixedpoint, mcu, mcu_numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_micropython_mcu import (  # noqa: E402  (the tests' inputs and MicroPython runner)
    COEFFS,
    MPY_DIR,
    TILT,
    full_scale_rows,
    trace_rows,
)

CHAIN_M3_INSTR_PER_SAMPLE = 490_000  # issue 21: qemu Cortex-M3, MicroPython 1.27, -icount

PROFILE_RUN = '''
import gc, micropython, time
gc.collect()
B0 = gc.mem_alloc()
'''

PROFILE_MAIN = '''
def main():
    # locals only: a new global under heap_lock would grow the globals dict
    fe = FE
    heap = HEAP
    data = [int(v) for v in DATA.split(",")]
    n = len(data) // 3
    push = fe.push
    ticks = time.ticks_us
    err = "none"
    i = 0
    t0 = 0
    t1 = 0
    micropython.heap_lock()
    try:
        t0 = ticks()
        while i < n:
            j = 3 * i
            push(data[j], data[j + 1], data[j + 2])
            i += 1
        t1 = ticks()
    except MemoryError:
        err = "MemoryError"
    except Exception:
        err = "exception"
    micropython.heap_unlock()
    print("PROFILE", time.ticks_diff(t1, t0), n, heap, err)


main()
'''

CHAIN_MAIN = '''
rows = [int(v) for v in DATA.split(",")]
rows = [[rows[3 * i], rows[3 * i + 1], rows[3 * i + 2]] for i in range(len(rows) // 3)]
decs = [FirDecimator(TAPS, TAPS_FRAC, 2) for _ in range(3)]
cascs = [LookaheadCascade(s) for s in (LP, WK, WD, WD)]
rot0 = rotate_q14(rows[:1], ROT, 0)[0]
for a in range(3):
    decs[a].reset(rot0[a])
dec0 = [sat(rshift_round(sum(TAPS) * v, TAPS_FRAC)) for v in rot0]
for c, a in zip(cascs, (2, 2, 0, 1)):
    c.reset(dec0[a])
gc.collect()
t0 = time.ticks_us()
for b in range(0, len(rows), 32):
    rot = rotate_q14(rows[b:b + 32], ROT, 0)
    cols = [decs[a].process([r[a] for r in rot]) for a in range(3)]
    outs = [c.process(cols[a]) for c, a in zip(cascs, (2, 2, 0, 1))]
t1 = time.ticks_us()
print("CHAIN", time.ticks_diff(t1, t0), len(rows))
'''


def run_node(files: list[Path]) -> str:
    res = subprocess.run(["node", str(MPY_DIR / "run.mjs"), "--heap", str(8 << 20),
                          *map(str, files)], capture_output=True, text=True, timeout=300)
    if res.returncode:
        raise SystemExit(f"MicroPython run failed (scripts/setup installs it):\n"
                         f"{res.stderr[-2000:]}")
    return res.stdout


def cpython_bytecodes(rows: np.ndarray, rot: list[list[int]]) -> float:
    """CPython opcodes executed per input sample by ``FrontEnd.push`` (sys.settrace)."""
    fe = mcu.FrontEnd(COEFFS, rot)
    fe.push(*rows[0].tolist())
    count = [0]

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        frame.f_trace_opcodes = True
        if event == "opcode":
            count[0] += 1
        return tracer

    data = rows[1:].tolist()
    sys.settrace(tracer)
    try:
        for x, y, z in data:
            fe.push(x, y, z)
    finally:
        sys.settrace(None)
    return count[0] / len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000, help="trace rows (400 Hz)")
    ap.add_argument("--chain-rows", type=int, default=2048,
                    help="trace rows for the chain kernels (slow: big ints)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each; the fastest counts (the machine may be shared)")
    args = ap.parse_args()
    rows = trace_rows(7200, args.rows)
    rot14 = chain.rotation_q14(TILT)
    data = ",".join(map(str, rows.ravel().tolist()))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "pre.py").write_text(PROFILE_RUN)
        # the heap the profile holds: mcu's code, the words, one front-end (before the data)
        (t / "words.py").write_text(f"COEFFS = {COEFFS!r}\nROT = {rot14!r}\n"
                                    "FE = FrontEnd(COEFFS, ROT)\ngc.collect()\n"
                                    "HEAP = gc.mem_alloc() - B0\n")
        (t / "main.py").write_text(f"DATA = {data!r}\n" + PROFILE_MAIN)
        runs = []
        for _ in range(args.repeat):
            out = run_node([t / "pre.py", Path(mcu.__file__), t / "words.py", t / "main.py"])
            runs.append(out.split("PROFILE")[1].split()[:4])
        us, n, heap, err = min(runs, key=lambda r: int(r[0]))
        d = chain.ChainDesign(400, 200, 256.0)
        (t / "chain.py").write_text(
            "import gc, time\n"
            f"TAPS = {d.taps!r}\nTAPS_FRAC = {d.taps_frac!r}\nLP = {d.lp!r}\n"
            f"WK = {d.wk!r}\nWD = {d.wd!r}\nROT = {rot14!r}\n"
            f"DATA = {','.join(map(str, rows[:args.chain_rows].ravel().tolist()))!r}\n"
            + CHAIN_MAIN)
        cruns = [run_node([Path(fixedpoint.__file__), t / "chain.py"]).split()[-2:]
                 for _ in range(args.repeat)]
        cus, cn = min(cruns, key=lambda r: int(r[0]))
    us_profile = int(us) / int(n)
    us_chain = int(cus) / int(cn)
    ratio = us_chain / us_profile
    twin = mcu_numpy.FrontEndNumpy(COEFFS, rot14)
    twin.process(rows)
    peak_trace = max(twin.peaks.values())
    twin_fs = mcu_numpy.FrontEndNumpy(COEFFS)
    twin_fs.process(full_scale_rows(4000))
    peak_fs = max(twin_fs.peaks.values())
    bc = cpython_bytecodes(rows[:2001], rot14)
    print(f"MCU profile on MicroPython 1.27 (WebAssembly, node), {n} trace rows at 400 Hz")
    print(f"  time per input sample:        {us_profile:8.1f} us   (under heap_lock: "
          f"{'completed' if err == 'none' else err})")
    print(f"  chain kernels (fixedpoint):   {us_chain:8.1f} us   ({ratio:.1f}x the profile)")
    print(f"  Cortex-M3 instructions/sample, ESTIMATE from that ratio and the issue's "
          f"{CHAIN_M3_INSTR_PER_SAMPLE:,} for the chain: "
          f"{CHAIN_M3_INSTR_PER_SAMPLE / ratio:,.0f} (target 100,000; not a qemu count)")
    print(f"  CPython bytecodes per input sample: {bc:,.0f}")
    print(f"  heap (code + words + state):  {int(heap):,} B (target 65,536)")
    print(f"  largest |intermediate|: trace {peak_trace:,} (2**{np.log2(peak_trace):.2f}), "
          f"full scale {peak_fs:,} (2**{np.log2(peak_fs):.2f}); limit 2**30")
    print(f"  per-stage peaks (full scale): {twin_fs.peaks}")


if __name__ == "__main__":
    main()
