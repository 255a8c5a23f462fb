"""ADXL345 (Analog Devices) at register level over a ``busio.I2C``-like bus.

Register facts (ADXL345 data sheet Rev. G; names as in Adafruit's adafruit_adxl34x):
DEVID 0x00 reads 0xE5; BW_RATE 0x2C rate code (0x0C 400 Hz, 0x0D 800 Hz, 0x0E 1600 Hz);
POWER_CTL 0x2D bit 3 Measure; INT_SOURCE 0x30 bit 0 Overrun; DATA_FORMAT 0x31 bit 3
FULL_RES, bits 1:0 range (±2/4/8/16 g); DATAX0..DATAZ1 0x32..0x37, little-endian two's
complement; FIFO_CTL 0x38 bits 7:6 mode (10 = stream); FIFO_STATUS 0x39 bits 5:0
entries. The FIFO holds 32 samples.

Full resolution keeps 3.9 mg/LSB (256 LSB/g) on every range; the count limits widen
with the range (10 bits at ±2 g … 13 bits at ±16 g), so saturation is at
±(256 × range_g) counts.

A FIFO entry is popped by one multi-byte read of all six data registers (the data
sheet requires reading them in one transaction), so the driver reads ``entries``
6-byte blocks per drain: at 1600 Hz and a 400 kHz bus that is about 0.3 ms a sample.
(The data sheet's 5 µs pause between two such reads is always met from Linux user space.)
"""

from __future__ import annotations

import struct
from typing import Any

from liftwatch.drivers.accel import Accelerometer, AccelError, Sample

DEVID = 0x00
DEVID_VALUE = 0xE5
BW_RATE = 0x2C
POWER_CTL = 0x2D
INT_SOURCE = 0x30
DATA_FORMAT = 0x31
DATAX0 = 0x32
FIFO_CTL = 0x38
FIFO_STATUS = 0x39

MEASURE = 0x08
FULL_RES = 0x08
OVERRUN = 0x01
FIFO_STREAM = 0x80
FIFO_BYPASS = 0x00
WATERMARK = 16

RATE_CODES = {400: 0x0C, 800: 0x0D, 1600: 0x0E}
RANGE_CODES = {2: 0, 4: 1, 8: 2, 16: 3}
LSB_PER_G = 256
_XYZ = struct.Struct("<3h")  # DATAX0…DATAZ1: little-endian two's complement


def decode_sample(raw: bytes) -> Sample:
    """Six data-register bytes to (x, y, z) counts."""
    return _XYZ.unpack_from(raw)  # type: ignore[return-value]


class ADXL345(Accelerometer):
    """ADXL345 in full resolution, FIFO in stream mode (see the module docstring)."""

    chip = "adxl345"
    fifo_depth = 32

    def __init__(self, i2c: Any, address: int = 0x53, rate_hz: int = 400,
                 range_g: int = 4) -> None:
        if rate_hz not in RATE_CODES:
            raise AccelError(f"ADXL345 rate must be one of {sorted(RATE_CODES)} Hz, "
                             f"found {rate_hz}")
        if range_g not in RANGE_CODES:
            raise AccelError(f"ADXL345 range must be one of {sorted(RANGE_CODES)} g, "
                             f"found {range_g}")
        super().__init__(i2c, address, rate_hz, range_g)
        self.fs = float(rate_hz)
        self.lsb_per_g = float(LSB_PER_G)
        half = LSB_PER_G * range_g
        self.limits = (-half, half - 1)

    def open(self) -> None:
        self._check_identity(DEVID, DEVID_VALUE, "DEVID")
        b = self.bus
        b.write_u8(POWER_CTL, 0)  # standby while configuring
        b.write_u8(BW_RATE, RATE_CODES[self.rate_hz])
        b.write_u8(DATA_FORMAT, FULL_RES | RANGE_CODES[self.range_g])
        b.write_u8(FIFO_CTL, FIFO_BYPASS)  # empties the FIFO
        b.write_u8(FIFO_CTL, FIFO_STREAM | WATERMARK)
        b.write_u8(POWER_CTL, MEASURE)
        got = (b.read_u8(BW_RATE) & 0x1F, b.read_u8(DATA_FORMAT) & 0x0B,
               b.read_u8(FIFO_CTL) & 0xC0)
        want = (RATE_CODES[self.rate_hz], FULL_RES | RANGE_CODES[self.range_g], FIFO_STREAM)
        if got != want:
            raise AccelError(f"ADXL345 at 0x{self.address:02X} did not take its set-up: "
                             f"BW_RATE/DATA_FORMAT/FIFO_CTL read {got}, wrote {want}")

    def read_fifo(self) -> tuple[list[Sample], bool]:
        overrun = bool(self.bus.read_u8(INT_SOURCE) & OVERRUN)
        entries = self.bus.read_u8(FIFO_STATUS) & 0x3F
        samples = [decode_sample(raw) for raw in self.bus.read_repeated(DATAX0, 6, entries)]
        return samples, overrun

    def close(self) -> None:
        self.bus.write_u8(POWER_CTL, 0)
