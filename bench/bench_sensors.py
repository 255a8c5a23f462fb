"""Cost of the terminal's own sensors: accelerometer FIFO draining and input sampling.

    .venv/bin/python bench/bench_sensors.py

Prints, per chip and rate, the CPU time that 60 s of samples cost (driver + reader +
the simulated chip behind the bus, so an upper bound for the driver alone), the I2C
transactions per second the driver makes, and the peak Python memory of the loop; and
the CPU time of one DigitalInputs sample of 12 inputs. Figures, not pass/fail.
"""

from __future__ import annotations

import time
import tracemalloc

from liftwatch.drivers.accel import AccelReader
from liftwatch.drivers.adxl345 import ADXL345
from liftwatch.drivers.inputs import DigitalInputs
from liftwatch.drivers.lis3dh import LIS3DH
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.settings import INPUT_NAMES, InputsSettings, InputWiring
from liftwatch.drivers.simchips import SimADXL345, SimClock, SimI2C, SimLIS3DH

SECONDS = 60.0


def bench_accel(kind: str, rate: int) -> None:
    clock = SimClock()
    sim = (SimADXL345 if kind == "adxl345" else SimLIS3DH)(clock=clock, noise_lsb=1.0)
    bus = SimI2C(sim)
    drv = (ADXL345 if kind == "adxl345" else LIS3DH)(bus, sim.address, rate, 4)
    reader = AccelReader(drv, clock)
    reader.open()
    interval = reader.read_interval_s
    steps = int(SECONDS / interval)

    def loop(count: int) -> int:
        n = 0
        for _ in range(count):
            clock.advance(interval)
            block = reader.read()
            if block is not None:
                n += len(block.samples)
        return n

    t_cpu = time.process_time()
    n = loop(steps)
    cpu = time.process_time() - t_cpu
    transactions = bus.transactions
    tracemalloc.start()  # memory on a further 5 s (tracemalloc slows the loop down)
    loop(int(5 / interval))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    h = reader.health()
    print(f"{kind:8s} {rate:5d} Hz (fs {drv.fs:6.0f}): {n:6d} samples in {SECONDS:.0f} s "
          f"simulated, CPU {cpu * 1000 / SECONDS:6.1f} ms per second of data "
          f"({cpu / n * 1e6:5.1f} us/sample), read every {interval * 1000:.1f} ms, "
          f"{transactions / SECONDS:6.0f} I2C transactions/s, lost {sim.lost}, "
          f"overruns {h['overruns']}, peak {peak / 1024:.0f} KiB while reading")


def bench_inputs() -> None:
    pins = SimulatedPins()
    wiring = {name: InputWiring(pin=f"D{i + 2}", pull="up", active_low=True)
              for i, name in enumerate(INPUT_NAMES)}
    inputs = DigitalInputs(wiring, InputsSettings(sample_hz=200), pins)
    inputs.open()
    polls = 20_000
    t_cpu = time.process_time()
    for k in range(polls):
        if k % 50 == 0:
            pins.set_level("D2", (k // 50) % 2)
        inputs.poll(k / 200)
    cpu = time.process_time() - t_cpu
    per = cpu / polls
    print(f"inputs: {len(wiring)} inputs, {per * 1e6:.1f} us per sample of all inputs: "
          f"{per * 200 * 100:.2f} % of one core at 200 Hz")


def main() -> None:
    for kind in ("adxl345", "lis3dh"):
        for rate in (400, 800, 1600):
            bench_accel(kind, rate)
    bench_inputs()


if __name__ == "__main__":
    main()
