"""Accelerometer drivers against the simulated chips: the real register code runs here.

The simulated clock drives 60 s of samples in well under a second of wall time; the
source is a known sequence so a lost, duplicated or mis-scaled sample is caught.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from liftwatch.drivers.accel import (
    OVERRUN_WARY_S,
    READ_MARGIN_S,
    AccelBlock,
    AccelError,
    AccelIdentityError,
    AccelReader,
    make_accelerometer,
    open_blinka_i2c,
)
from liftwatch.drivers.adxl345 import ADXL345
from liftwatch.drivers.lis3dh import LIS3DH
from liftwatch.drivers.settings import AccelSettings
from liftwatch.drivers.simchips import SimADXL345, SimClock, SimI2C, SimLIS3DH

pytestmark = pytest.mark.timeout(60)

CHIPS = {
    "adxl345": (SimADXL345, ADXL345, 0x53),
    "lis3dh": (SimLIS3DH, LIS3DH, 0x18),
}


def known_counts(k: int, limit: int) -> tuple[int, int, int]:
    """A sequence where every sample differs from its neighbours and stays in range."""
    span = limit // 2
    return ((k * 7) % span - span // 2, (k * 13 + 5) % span - span // 2,
            (k * 3 + 1) % span)


def setup(kind: str, rate: int = 800, range_g: int = 4, source=None, clock=None):
    sim_cls, drv_cls, addr = CHIPS[kind]
    clock = clock or SimClock()
    drv = drv_cls(None, addr, rate, range_g)
    lsb, limit = drv.lsb_per_g, drv.limits[1]

    def seq(k: int, _t: float) -> tuple[float, float, float]:
        return tuple(c / lsb for c in known_counts(k, limit))  # type: ignore[return-value]

    chip = sim_cls(source or seq, clock, addr)
    bus = SimI2C(chip)
    drv.bus.i2c = bus
    reader = AccelReader(drv, clock)
    return clock, chip, bus, drv, reader


def drain(reader: AccelReader, clock: SimClock, seconds: float, rng: random.Random,
          step=(0.005, 0.018)) -> list[AccelBlock]:
    blocks = []
    end = clock() + seconds
    while clock() < end:
        clock.advance(rng.uniform(*step))
        b = reader.read()
        if b is not None:
            blocks.append(b)
    return blocks


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_sixty_seconds_at_800hz_no_lost_or_duplicated_sample(kind: str) -> None:
    clock, chip, _, drv, reader = setup(kind, rate=800)
    reader.open()
    t0 = clock()
    blocks = drain(reader, clock, 60.0, random.Random(1))
    fs = drv.fs
    assert fs == (800.0 if kind == "adxl345" else 1344.0)  # LIS3DH: next rate up
    samples = [s for b in blocks for s in b.samples]
    # Every sample the chip produced was read, in order, exactly once.
    assert chip.lost == 0
    assert len(samples) == chip.index
    assert len(samples) >= int(60 * fs) - 32
    lsb, limit = drv.lsb_per_g, drv.limits[1]
    assert samples == [list(known_counts(k, limit)) for k in range(len(samples))]
    # Timestamps from the count: sample k at t0 + (k + 1)/fs, whatever the read times.
    for b in blocks:
        assert b.t == pytest.approx(t0 + (b.index + 1) / fs, abs=1e-6)
        assert not b.gap
    h = reader.health()
    assert h["state"] == "ok" and h["overruns"] == 0 and h["resyncs"] == 0
    assert h["samples"] == len(samples)
    # Scaling: counts / lsb_per_g gives back the g the chip was shaken with.
    assert samples[10][2] / lsb == pytest.approx(known_counts(10, limit)[2] / lsb)


@pytest.mark.parametrize(("kind", "rate", "range_g", "lsb", "limits"), [
    ("adxl345", 400, 2, 256, (-512, 511)),
    ("adxl345", 1600, 16, 256, (-4096, 4095)),
    ("lis3dh", 400, 2, 1000, (-2048, 2047)),
    ("lis3dh", 400, 16, 1000 / 12, (-2048, 2047)),
    ("lis3dh", 1600, 4, 1000 / 32, (-128, 127)),
])
def test_range_and_rate_set_up_and_scaling(kind, rate, range_g, lsb, limits) -> None:
    one_g = (0.0, 0.5, 1.0)
    clock, chip, _, drv, reader = setup(kind, rate, range_g, source=lambda k, t: one_g)
    reader.open()
    assert drv.lsb_per_g == pytest.approx(lsb)
    assert drv.limits == limits
    assert chip.rate() == drv.fs
    clock.advance(0.02)
    block = reader.read()
    assert block is not None
    for s in block.samples:
        assert [c / drv.lsb_per_g for c in s] == pytest.approx(one_g, abs=1.01 / lsb)
    assert reader.header() == {"fs": drv.fs, "lsb_per_g": drv.lsb_per_g, "axes": "xyz"}


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_saturation_is_reported(kind: str) -> None:
    clock, _, _, drv, reader = setup(kind, 400, 2, source=lambda k, t: (0.0, 0.0, 5.0))
    reader.open()
    clock.advance(0.05)
    block = reader.read()
    assert block is not None
    assert all(s[2] == drv.limits[1] for s in block.samples)
    h = reader.health()
    assert h["state"] == "saturated"
    assert h["saturated_samples"] == len(block.samples)


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_frozen_chip_is_reported_silent_and_recovers(kind: str) -> None:
    clock, chip, _, _, reader = setup(kind, 800)
    reader.open()
    drain(reader, clock, 0.5, random.Random(2))
    assert reader.health()["state"] == "ok"
    chip.freeze()
    drain(reader, clock, 1.5, random.Random(3))
    h = reader.health()
    assert h["state"] == "silent" and h["last_sample_age_s"] >= 1.0
    chip.freeze(False)
    blocks = drain(reader, clock, 0.2, random.Random(4))
    assert blocks and reader.health()["state"] == "ok"
    assert blocks[0].gap  # the frozen stretch was resynchronised, not papered over


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_i2c_errors_are_counted_and_survived(kind: str) -> None:
    clock, chip, _, _, reader = setup(kind, 400)
    reader.open()
    drain(reader, clock, 0.2, random.Random(5))
    chip.fail_io("remote I/O error")
    assert drain(reader, clock, 0.2, random.Random(6)) == []
    h = reader.health()
    assert h["state"] == "failing" and h["i2c_errors"] >= 3
    assert "remote I/O error" in h["error"]
    chip.fail_io(None)
    blocks = drain(reader, clock, 0.2, random.Random(7))
    assert blocks and blocks[0].gap and reader.health()["state"] == "ok"


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_stuck_output_is_reported(kind: str) -> None:
    clock, _, _, _, reader = setup(kind, 400, source=lambda k, t: (0.01, 0.02, 1.0))
    reader.stuck_s = 1.0
    reader.open()
    drain(reader, clock, 0.5, random.Random(8))
    assert reader.health()["state"] == "ok"
    drain(reader, clock, 1.0, random.Random(9))
    h = reader.health()
    assert h["state"] == "stuck" and h["stuck_episodes"] == 1


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_fifo_overrun_is_a_dropout_with_resync(kind: str) -> None:
    clock, chip, _, drv, reader = setup(kind, 1600)
    reader.open()
    drain(reader, clock, 0.1, random.Random(10))
    half_fifo_s = min(0.1, 32 / drv.fs / 2)
    assert reader.read_interval_s == pytest.approx(half_fifo_s)
    clock.advance(0.1)  # 160 samples at 1600 Hz: the 32-level FIFO overflows
    block = reader.read()
    assert block is not None and block.gap and len(block.samples) == 32
    assert chip.lost > 0
    h = reader.health()
    assert h["overruns"] == 1 and h["resyncs"] == 1
    assert reader.read_interval_s == pytest.approx(half_fifo_s / 2)  # more margin for a while
    # After the resync the newest sample sits at the read time.
    assert block.t + 31 / drv.fs == pytest.approx(clock())
    clock.advance(OVERRUN_WARY_S - 1.0)
    assert reader.read_interval_s == pytest.approx(half_fifo_s / 2)
    clock.advance(1.0)  # a minute without overruns: back to half-FIFO reads
    assert reader.read_interval_s == pytest.approx(half_fifo_s)


@pytest.mark.parametrize(("rate", "every_s"), [(400, 0.06), (800, 0.02), (1600, 0.01)])
def test_reads_leave_the_margin_before_an_overrun_and_at_least_half_the_fifo(
        rate: int, every_s: float) -> None:
    _, _, _, drv, reader = setup("adxl345", rate)
    assert reader.read_interval_s == pytest.approx(every_s)
    fifo_s = 32 / drv.fs
    assert fifo_s - reader.read_interval_s >= min(READ_MARGIN_S, fifo_s / 2) - 1e-9


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_wrong_identity_is_refused(kind: str) -> None:
    sim_cls, drv_cls, addr = CHIPS[kind]
    chip = sim_cls(clock=SimClock(), address=addr, identity=0x42)
    drv = drv_cls(SimI2C(chip), addr, 400, 4)
    with pytest.raises(AccelIdentityError, match=r"reads 0x42, expected 0x(E5|33)"):
        AccelReader(drv).open()


def test_absent_chip_is_a_clear_error_and_reported() -> None:
    drv = make_accelerometer(SimI2C(), AccelSettings(chip="adxl345", address=0x53))
    reader = AccelReader(drv, SimClock())
    with pytest.raises(AccelError, match="no answer from an adxl345 at I2C address 0x53"):
        reader.open()
    h = reader.health()
    assert h["state"] == "absent" and "0x53" in h["error"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(AccelError, match="ADXL345 rate must be one of"):
        ADXL345(SimI2C(), 0x53, 3200, 4)
    with pytest.raises(AccelError, match="LIS3DH range must be one of"):
        LIS3DH(SimI2C(), 0x18, 400, 3)
    with pytest.raises(AccelError, match="adxl345 or lis3dh"):
        make_accelerometer(SimI2C(), AccelSettings(chip="none"))


def test_oscillator_drift_is_resynchronised() -> None:
    """A chip running 2 % fast: count-based times would run ahead of the clock."""
    clock, chip, _, drv, reader = setup("adxl345", 400)
    reader.open()
    chip._rate = 408.0  # the oscillator, not the register, sets the real rate
    rng = random.Random(11)
    blocks = []
    for _ in range(500):
        clock.advance(rng.uniform(0.005, 0.015))
        b = reader.read()
        if b is None:
            continue
        # No sample is ever stamped after the moment it was read.
        assert b.t + (len(b.samples) - 1) / drv.fs <= clock() + 1e-9
        blocks.append(b)
    assert reader.health()["resyncs"] >= 1
    assert [b.t for b in blocks] == sorted(b.t for b in blocks)
    assert sum(len(b.samples) for b in blocks) == chip.index  # drift loses nothing


@pytest.mark.parametrize("kind", ["adxl345", "lis3dh"])
def test_power_cycled_chip_is_set_up_again(kind: str) -> None:
    """A brown-out resets the chip to standby: the reader notices the silence and
    repeats the set-up, and samples flow again with a resynchronised time base."""
    clock, chip, _, drv, reader = setup(kind, 800)
    reader.open()
    rng = random.Random(12)

    def steps(seconds: float) -> list[AccelBlock]:
        out = []
        end = clock() + seconds
        while clock() < end:
            clock.advance(rng.uniform(0.005, 0.015))
            b = reader.step()
            if b is not None:
                out.append(b)
        return out

    steps(0.3)
    chip.fail_io("unplugged")
    steps(0.2)
    assert reader.health()["state"] == "failing"
    chip.fail_io(None)
    chip.power_cycle()
    assert chip.rate() is None  # standby: no samples until set up again
    blocks = steps(2.0)
    h = reader.health()
    assert h["reopens"] >= 1 and h["state"] == "ok" and h["error"] == ""
    assert blocks and blocks[0].gap
    assert chip.rate() == drv.fs


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("fifo_ctl, kept, lost", [(0x80, range(8, 40), 8),  # stream
                                                  (0x40, range(0, 32), 8),  # FIFO
                                                  (0x00, range(0), 0)])     # bypass
def test_the_simulated_fifo_keeps_what_the_data_sheet_says(fifo_ctl: int, kept: range,
                                                           lost: int, steps: int) -> None:
    """40 samples into a 32-level FIFO: stream mode keeps the newest, FIFO mode the
    oldest, both flag the overrun; bypass keeps none, and the data registers show the
    newest sample."""
    clock = SimClock()
    chip = SimADXL345(lambda i, _t: (i / 256, 0.0, 1.0), clock)
    bus = SimI2C(chip)
    for reg, value in ((0x31, 0x08), (0x38, fifo_ctl), (0x2C, 0x0C), (0x2D, 0x08)):
        bus.writeto(0x53, bytes([reg, value]))  # full resolution, FIFO mode, 400 Hz, measure
    for _ in range(steps):
        clock.advance(40 / 400 / steps)
        chip.step()
    assert [s[0] for s in chip.fifo] == list(kept)
    assert (chip.lost, chip.overrun, chip.latest[0]) == (lost, lost > 0, 39)
    assert chip.index == 40


def test_missing_i2c_bus_is_named_not_blinkas_import_error(tmp_path: Path) -> None:
    """On a PC Blinka fails with "cannot import name 'i2cPorts'": say which bus is missing."""
    with pytest.raises(AccelError) as info:
        open_blinka_i2c(1, dev_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"no I2C bus 1 on this machine: {tmp_path / 'i2c-1'} does not exist (")
    assert "Blinka" in msg and "raspi-config nonint do_i2c 0" in msg
    assert "i2cPorts" not in msg
