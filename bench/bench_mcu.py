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

With ``--qemu-firmware FIRMWARE.elf`` it also COUNTS Cortex-M3 instructions: the
firmware is MicroPython 1.27's own qemu port for the MPS2-AN385 board (Cortex-M3; built
from MicroPython's source with its ARM toolchain, which this repository does not carry),
run by Debian's ``qemu-system-arm -machine mps2-an385 -icount shift=0``. With icount at
shift 0 every instruction advances the virtual clock by exactly 1 ns and the board's
SysTick counts that clock, so ``time.ticks_us()`` around 500 pushes (under
``heap_lock``) gives instructions per input sample; a loop that only reads the same
samples is measured beside it and subtracted. The profile's source is sent through the
REPL in raw mode (docstrings stripped: the board's heap is 140 kB).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import time
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


QEMU_RUN = '''
import gc, micropython, time
gc.collect()
b0 = gc.mem_alloc()
fe = FrontEnd(COEFFS, ROT)
gc.collect()
heap = gc.mem_alloc() - b0
data = [int(v) for v in DATA.split(",")]
DATA = None
gc.collect()
n = len(data) // 3
def loop_only(data, n):
    i = 0
    s = 0
    while i < n:
        j = 3 * i
        s += data[j] + data[j + 1] + data[j + 2]
        i += 1
    return s
def pushes(fe, data, n):
    push = fe.push
    i = 0
    err = "none"
    t0 = time.ticks_us()
    micropython.heap_lock()
    try:
        while i < n:
            j = 3 * i
            push(data[j], data[j + 1], data[j + 2])
            i += 1
    except MemoryError:
        err = "MemoryError"
    micropython.heap_unlock()
    return err, time.ticks_diff(time.ticks_us(), t0)
gc.collect()
t0 = time.ticks_us()
loop_only(data, n)
loop_us = time.ticks_diff(time.ticks_us(), t0)
err, push_us = pushes(fe, data, n)
print("QEMU", n, heap, loop_us, push_us, err)
'''

def without_docstrings(source: str) -> str:
    """The same code without docstrings (less for the board's heap to compile)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body \
                and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def qemu_count(firmware: Path, rows: np.ndarray, rot: list[list[int]],
               timeout: float = 600.0) -> tuple[int, int, int, int, str]:
    """Run the profile on MicroPython's Cortex-M3 qemu build; returns (samples, heap,
    loop instructions, push instructions, error), counted on the icount clock."""
    code = (without_docstrings(Path(mcu.__file__).read_text())
            + f"\nCOEFFS = {COEFFS!r}\nROT = {rot!r}\n"
            + f"DATA = {','.join(map(str, rows.ravel().tolist()))!r}\n" + QEMU_RUN)
    proc = subprocess.Popen(
        ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
         "-semihosting", "-icount", "shift=0", "-serial", "stdio", "-kernel", str(firmware)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # the REPL's raw mode: Ctrl-A, the code, Ctrl-D; the answer is "OK", the output,
        # Ctrl-D, the error output, Ctrl-D
        proc.stdin.write(b"\r\x03\x03\x01")
        proc.stdin.flush()
        buf = b""
        deadline = time.monotonic() + 30
        while b"raw REPL; CTRL-B to exit\r\n>" not in buf:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no raw REPL from the firmware: {buf[-200:]!r}")
            buf += proc.stdout.read1(4096)
        for i in range(0, len(code), 256):   # the board's UART buffer is small
            proc.stdin.write(code[i:i + 256].encode())
            proc.stdin.flush()
            time.sleep(0.01)
        proc.stdin.write(b"\x04")
        proc.stdin.flush()
        out = b""
        deadline = time.monotonic() + timeout
        while out.count(b"\x04") < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the firmware did not finish: {out[-300:]!r}")
            out += proc.stdout.read1(4096)
    finally:
        proc.kill()
        proc.wait()
    text, err = out.split(b"\x04")[:2]
    line = next((ln for ln in text.decode(errors="replace").splitlines()
                 if "QEMU " in ln), None)
    if line is None:
        raise RuntimeError(f"the profile failed on the firmware: {err.decode(errors='replace')}")
    _tag, n, heap, loop_us, push_us, error = line[line.index("QEMU "):].split()
    # icount shift=0: one instruction is 1 ns of virtual time
    return int(n), int(heap), int(loop_us) * 1000, int(push_us) * 1000, error


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000, help="trace rows (400 Hz)")
    ap.add_argument("--chain-rows", type=int, default=2048,
                    help="trace rows for the chain kernels (slow: big ints)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each; the fastest counts (the machine may be shared)")
    ap.add_argument("--qemu-firmware", type=Path,
                    help="MicroPython 1.27's qemu MPS2-AN385 firmware.elf: count Cortex-M3 "
                         "instructions per sample under qemu -icount (see above)")
    ap.add_argument("--qemu-rows", type=int, default=500,
                    help="trace rows run under qemu (the board's heap is 140 kB)")
    args = ap.parse_args()
    rows = trace_rows(7200, args.rows)
    if args.qemu_firmware is not None:
        n, heap, loop_i, push_i, error = qemu_count(args.qemu_firmware,
                                                   trace_rows(7200, args.qemu_rows),
                                                   chain.rotation_q14(TILT))
        print(f"MCU profile on MicroPython 1.27, qemu mps2-an385 (Cortex-M3), -icount "
              f"shift=0, {n} trace rows (under heap_lock: "
              f"{'completed' if error == 'none' else error})")
        print(f"  instructions per input sample: {(push_i - loop_i) / n:,.0f} "
              f"({push_i / n:,.0f} with the loop that feeds it; target 100,000)")
        print(f"  front-end state on the heap:   {heap:,} B")
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
