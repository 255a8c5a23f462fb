"""LIS3DH (STMicroelectronics) at register level over a ``busio.I2C``-like bus.

Register facts (LIS3DH data sheet DocID17530; names as in Adafruit's adafruit_lis3dh):
WHO_AM_I 0x0F reads 0x33; CTRL_REG1 0x20 ODR in bits 7:4, LPen bit 3, Z/Y/X enable bits
2:0; CTRL_REG4 0x23 BDU bit 7, FS bits 5:4 (±2/4/8/16 g), HR bit 3; CTRL_REG5 0x24
FIFO_EN bit 6; OUT_X_L 0x28 … OUT_Z_H 0x2D, little-endian, left-justified; FIFO_CTRL_REG
0x2E FM bits 7:6 (10 = stream); FIFO_SRC_REG 0x2F OVRN_FIFO bit 6, EMPTY bit 5, FSS bits
4:0. The sub-address's bit 7 (0x80) turns on auto-increment for multi-byte reads, and
with the FIFO on the pointer wraps from OUT_Z_H back to OUT_X_L, so the whole FIFO is
read in one burst of ``6 × n`` bytes from 0xA8.

**Rates.** The LIS3DH has no 800 Hz rate. The configured rate maps to:

| rate_hz | ODR code | actual fs | mode | resolution |
|---|---|---|---|---|
| 400  | 0111 | 400 Hz   | high resolution | 12 bit |
| 800  | 1001 | 1344 Hz  | high resolution | 12 bit (next rate up: same bandwidth and bits) |
| 1600 | 1000 | 1600 Hz  | low power (the only mode with this rate) | 8 bit |

``fs`` (and the trace header) gives the actual rate, so timestamps stay right.

**Scaling.** High resolution: 1, 2, 4, 12 mg/digit at ±2, 4, 8, 16 g (12-bit counts,
the 16-bit word shifted right by 4). Low power: 16, 32, 64, 192 mg/digit (8-bit counts,
shifted right by 8). ``lsb_per_g`` is 1000 / (mg/digit).

**FIFO level.** FSS counts 0…31 stored samples; a full FIFO whose oldest slot has been
overwritten also sets OVRN_FIFO, and the driver then reads all 32 and reports the
overrun (samples were lost).
"""

from __future__ import annotations

import struct
from typing import Any

from liftwatch.drivers.accel import Accelerometer, AccelError, Sample

WHO_AM_I = 0x0F
WHO_AM_I_VALUE = 0x33
CTRL_REG1 = 0x20
CTRL_REG4 = 0x23
CTRL_REG5 = 0x24
OUT_X_L = 0x28
FIFO_CTRL_REG = 0x2E
FIFO_SRC_REG = 0x2F

AUTO_INCREMENT = 0x80
XYZ_ENABLE = 0x07
LPEN = 0x08
BDU = 0x80
HR = 0x08
FIFO_EN = 0x40
FM_BYPASS = 0x00
FM_STREAM = 0x80
OVRN_FIFO = 0x40
EMPTY = 0x20

#: rate_hz -> (ODR code, actual Hz, low-power mode)
RATES: dict[int, tuple[int, float, bool]] = {
    400: (0b0111, 400.0, False),
    800: (0b1001, 1344.0, False),
    1600: (0b1000, 1600.0, True),
}
RANGE_CODES = {2: 0, 4: 1, 8: 2, 16: 3}
#: mg per digit in high-resolution mode; low power is 16 times coarser
MG_PER_DIGIT_HR = {2: 1.0, 4: 2.0, 8: 4.0, 16: 12.0}


class LIS3DH(Accelerometer):
    """LIS3DH with its FIFO in stream mode (see the module docstring)."""

    chip = "lis3dh"
    fifo_depth = 32

    def __init__(self, i2c: Any, address: int = 0x18, rate_hz: int = 400,
                 range_g: int = 4) -> None:
        if rate_hz not in RATES:
            raise AccelError(f"LIS3DH rate must be one of {sorted(RATES)} Hz, found {rate_hz}")
        if range_g not in RANGE_CODES:
            raise AccelError(f"LIS3DH range must be one of {sorted(RANGE_CODES)} g, "
                             f"found {range_g}")
        super().__init__(i2c, address, rate_hz, range_g)
        self.odr, self.fs, self.low_power = RATES[rate_hz]
        self.shift = 8 if self.low_power else 4
        mg = MG_PER_DIGIT_HR[range_g] * (16 if self.low_power else 1)
        self.lsb_per_g = 1000.0 / mg
        bits = 16 - self.shift
        self.limits = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)

    def open(self) -> None:
        self._check_identity(WHO_AM_I, WHO_AM_I_VALUE, "WHO_AM_I")
        b = self.bus
        ctrl1 = (self.odr << 4) | (LPEN if self.low_power else 0) | XYZ_ENABLE
        ctrl4 = BDU | (RANGE_CODES[self.range_g] << 4) | (0 if self.low_power else HR)
        b.write_u8(CTRL_REG1, ctrl1)
        b.write_u8(CTRL_REG4, ctrl4)
        b.write_u8(CTRL_REG5, FIFO_EN)
        b.write_u8(FIFO_CTRL_REG, FM_BYPASS)  # bypass empties the FIFO
        b.write_u8(FIFO_CTRL_REG, FM_STREAM)
        got = (b.read_u8(CTRL_REG1), b.read_u8(CTRL_REG4), b.read_u8(CTRL_REG5) & FIFO_EN,
               b.read_u8(FIFO_CTRL_REG) & 0xC0)
        want = (ctrl1, ctrl4, FIFO_EN, FM_STREAM)
        if got != want:
            raise AccelError(f"LIS3DH at 0x{self.address:02X} did not take its set-up: "
                             f"CTRL_REG1/4/5/FIFO_CTRL_REG read {got}, wrote {want}")

    def read_fifo(self) -> tuple[list[Sample], bool]:
        src = self.bus.read_u8(FIFO_SRC_REG)
        overrun = bool(src & OVRN_FIFO)
        n = 32 if overrun else (0 if src & EMPTY else src & 0x1F)
        if not n:
            return [], overrun
        raw = self.bus.read(OUT_X_L | AUTO_INCREMENT, 6 * n)
        sh = self.shift
        out: list[Sample] = [(x >> sh, y >> sh, z >> sh)
                             for x, y, z in struct.iter_unpack("<3h", raw)]
        return out, overrun

    def close(self) -> None:
        self.bus.write_u8(CTRL_REG1, 0)  # power-down mode
