"""Simulated accelerometer chips behind the ``busio.I2C`` interface.

So that the real register-level drivers (:mod:`~liftwatch.drivers.adxl345`,
:mod:`~liftwatch.drivers.lis3dh`) run unchanged in the tests and on the HIL rig, these
models implement the chips' register files and FIFOs, not the drivers' calls:

- :class:`SimI2C` is the bus: ``try_lock``/``unlock``/``scan``/``writeto``/
  ``readfrom_into``/``writeto_then_readfrom`` as in Blinka's ``busio.I2C``; an address
  with no chip raises ``OSError(EREMOTEIO)`` as Linux does on a NACK.
- :class:`SimADXL345` and :class:`SimLIS3DH` sample a *source* (acceleration in g
  per sample index) at the output data rate their registers select, on a *clock*
  (:class:`SimClock` in the tests, so 60 s of samples take no 60 s; ``time.monotonic``
  live). Samples are produced lazily at each bus transaction for the time elapsed,
  quantised to the chip's resolution and clipped at its range (saturation), and go
  through a 32-level FIFO with the chip's bypass/FIFO/stream behaviour and overrun flag.
  ``noise_lsb`` adds Gaussian noise of that many counts (rms), as a real sensor has: a
  perfectly constant output is what the stuck-output check looks for.
- Faults for the tests: :meth:`SimChip.freeze` (the chip stops producing samples),
  :meth:`SimChip.fail_io` (every transaction fails), ``identity=`` (a wrong chip).
"""

from __future__ import annotations

import errno
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

G3 = tuple[float, float, float]
_XYZ = struct.Struct("<3h")  # ADXL345 DATAX0…DATAZ1
#: FIFO mode by the two mode bits both chips use (FIFO_CTL / FIFO_CTRL_REG bits 7..6)
FIFO_MODES = ("bypass", "fifo", "stream", "stream")
Source = Callable[[int, float], G3]  # (sample index, sample time) -> acceleration in g


class SimClock:
    """A clock the test advances by hand (thread-safe); call it like ``time.monotonic``."""

    def __init__(self, start: float = 1000.0) -> None:
        self._t = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._t

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._t += dt
            return self._t


def at_rest(_index: int, _t: float) -> G3:
    """A car at rest with the sensor level: +1 g on z."""
    return (0.0, 0.0, 1.0)


class QueueSource:
    """Samples pushed by another party (the simulation feed), one per chip sample.

    When the queue runs dry the last value is held (a car keeps doing what it did);
    pushes beyond ``max_samples`` waiting are refused and counted, never silently
    dropped from the middle.
    """

    def __init__(self, rest: G3 = (0.0, 0.0, 1.0), max_samples: int = 200_000) -> None:
        self._q: deque[G3] = deque()
        self._last = rest
        self.max_samples = max_samples
        self.refused = 0
        self.consumed = 0
        self._lock = threading.Lock()

    def push(self, samples: list[G3]) -> int:
        """Queue samples; returns how many were accepted."""
        with self._lock:
            room = max(0, self.max_samples - len(self._q))
            take = samples[:room]
            self._q.extend(take)
            self.refused += len(samples) - len(take)
            return len(take)

    def hold(self, value: G3) -> None:
        """Drop what is queued and hold ``value`` from now on."""
        with self._lock:
            self._q.clear()
            self._last = value

    def pending(self) -> int:
        return len(self._q)

    def __call__(self, _index: int, _t: float) -> G3:
        with self._lock:
            if self._q:
                self._last = self._q.popleft()
                self.consumed += 1
            return self._last


class SimChip:
    """Register file, sample clock and 32-level FIFO shared by the chip models."""

    kind = "?"
    fifo_depth = 32
    identity_register = 0x00
    identity_value = 0x00

    def __init__(self, source: Source = at_rest, clock: Callable[[], float] = time.monotonic,
                 address: int = 0x53, identity: int | None = None, noise_lsb: float = 0.0,
                 seed: int = 0) -> None:
        self.source = source
        self.noise_lsb = noise_lsb
        self._rng = np.random.default_rng(seed)
        self._noise: list[int] = []  # whole counts, drawn in batches (one numpy call)
        self.clock = clock
        self.address = address
        self.regs = bytearray(256)
        self.fifo: deque[tuple[int, int, int]] = deque()
        self.latest: tuple[int, int, int] = (0, 0, 0)
        self.overrun = False
        self.frozen = False
        self.io_error: str | None = None
        self.index = 0  # samples produced since power-up (the source's index)
        self.lost = 0  # samples overwritten or never stored because the FIFO was full
        self._ptr = 0
        self._rate: float | None = None
        self._t_start = 0.0
        self._produced = 0  # since _t_start
        self._reset_registers()
        if identity is not None:
            self.regs[self.identity_register] = identity

    # -- chip specifics -----------------------------------------------------------------
    def _reset_registers(self) -> None:
        raise NotImplementedError

    def rate(self) -> float | None:
        """Output data rate the registers select, or None when not measuring."""
        raise NotImplementedError

    def fifo_mode(self) -> str:
        """bypass, fifo or stream."""
        raise NotImplementedError

    def read_register(self, reg: int) -> int:
        raise NotImplementedError

    # -- test controls ----------------------------------------------------------------
    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) producing samples, as a hung chip does."""
        self.step()
        self.frozen = frozen

    def power_cycle(self) -> None:
        """Lose power and come back: registers reset (standby), FIFO empty."""
        ident = self.regs[self.identity_register]
        self.regs = bytearray(256)
        self._reset_registers()
        self.regs[self.identity_register] = ident
        self.fifo.clear()
        self.overrun = False
        self._config_changed()

    def fail_io(self, reason: str | None = "remote I/O error") -> None:
        """Make every bus transaction fail (``None``: work again)."""
        self.io_error = reason

    # -- sampling -----------------------------------------------------------------------
    def _config_changed(self) -> None:
        rate = self.rate()
        if rate != self._rate:
            self._rate = rate
            self._t_start = self.clock()
            self._produced = 0
        if self.fifo_mode() == "bypass":
            self.fifo.clear()
            self.overrun = False

    def step(self) -> None:
        """Produce the samples due since the last step."""
        if self._rate is None:
            return
        now = self.clock()
        due = math.floor((now - self._t_start) * self._rate + 1e-9)
        new = due - self._produced
        if new <= 0:
            return
        first = self._produced
        self._produced = due
        if self.frozen:
            return
        mode = self.fifo_mode()
        depth = self.fifo_depth
        skip = 0
        if mode == "stream":
            skip = max(0, new - depth)  # these would be overwritten anyway
        elif mode == "fifo":
            skip = 0
        elif mode == "bypass":
            skip = new - 1
        if skip:
            self.index += skip
            if mode == "stream":
                self.lost += skip
                self.overrun = True
        # quantised, clipped, noise added and clipped again, inline: this runs for every
        # sample the chip makes
        lsb, lo, hi = self.scale()[:3]
        noise = self._noise if self.noise_lsb else None
        source, fifo, t0, rate = self.source, self.fifo, self._t_start, self._rate
        for k in range(first + skip, due):
            gx, gy, gz = source(self.index, t0 + (k + 1) / rate)
            x, y, z = round(gx * lsb), round(gy * lsb), round(gz * lsb)
            x, y, z = min(max(x, lo), hi), min(max(y, lo), hi), min(max(z, lo), hi)
            if noise is not None:
                if len(noise) < 3:
                    self._draw_noise()
                x = min(max(x + noise.pop(), lo), hi)
                y = min(max(y + noise.pop(), lo), hi)
                z = min(max(z + noise.pop(), lo), hi)
            s = (x, y, z)
            self.index += 1
            self.latest = s
            if mode == "bypass":
                continue
            if len(fifo) >= depth:
                self.overrun = True
                self.lost += 1
                if mode == "fifo":
                    continue  # FIFO mode stops collecting when full
                fifo.popleft()
            fifo.append(s)

    def _draw_noise(self) -> None:
        self._noise.extend(np.rint(self._rng.normal(0.0, self.noise_lsb, 3 * 1024))
                           .astype(int).tolist())

    def scale(self) -> tuple[Any, ...]:
        """(counts per g, min, max, ...) for the current register settings."""
        raise NotImplementedError

    def _current(self) -> tuple[int, int, int]:
        return self.fifo[0] if self.fifo else self.latest

    def _take(self) -> tuple[int, int, int]:
        """The sample the data registers show, popped from the FIFO (a data read does that;
        in bypass mode the FIFO is empty: a write that selects it clears it)."""
        fifo = self.fifo
        if not fifo:
            return self.latest
        self.latest = s = fifo.popleft()
        self.overrun = False
        return s

    # -- bus side ----------------------------------------------------------------------
    def _check_io(self) -> None:
        if self.io_error is not None:
            raise OSError(errno.EREMOTEIO, f"[Errno {errno.EREMOTEIO}] {self.io_error}")

    def i2c_write(self, data: bytes) -> None:
        self._check_io()
        self.step()
        self._write(data)

    def i2c_read(self, n: int) -> bytes:
        self._check_io()
        self.step()
        return self._read_bytes(n)

    def i2c_transfer(self, data: bytes, n: int) -> bytes:
        """A write then a read in one transaction (repeated start): one step of the clock.

        The drivers' FIFO read is one of these per sample (400 a second live)."""
        if self.io_error is not None:
            self._check_io()
        self.step()
        if len(data) == 1:  # the register address alone
            self._set_pointer(data[0])
        else:
            self._write(data)
        return self._read_bytes(n)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._set_pointer(data[0])
        for b in data[1:]:
            self._write_register(self._ptr, b)
            self._advance_pointer()
        if len(data) > 1:
            self._config_changed()

    def _set_pointer(self, sub: int) -> None:
        self._ptr = sub

    def _advance_pointer(self) -> None:
        self._ptr = (self._ptr + 1) & 0xFF

    def _write_register(self, reg: int, value: int) -> None:
        self.regs[reg] = value

    def _read_bytes(self, n: int) -> bytes:
        out = bytearray()
        for _ in range(n):
            out.append(self.read_register(self._ptr))
            self._advance_pointer()
        return bytes(out)


class SimADXL345(SimChip):
    """ADXL345 model: DEVID, BW_RATE, POWER_CTL, DATA_FORMAT, FIFO_CTL/STATUS, INT_SOURCE."""

    kind = "adxl345"
    identity_register = 0x00
    identity_value = 0xE5
    RATES = {0x0A: 100.0, 0x0B: 200.0, 0x0C: 400.0, 0x0D: 800.0, 0x0E: 1600.0, 0x0F: 3200.0}
    READ_ONLY = {0x00, 0x30, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x39}

    def __init__(self, source: Source = at_rest, clock: Callable[[], float] = time.monotonic,
                 address: int = 0x53, identity: int | None = None, noise_lsb: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(source, clock, address, identity, noise_lsb, seed)
        self._data_read = False

    def _reset_registers(self) -> None:
        self.regs[0x00] = self.identity_value
        self.regs[0x2C] = 0x0A
        self.regs[0x30] = 0x02

    def rate(self) -> float | None:
        if not self.regs[0x2D] & 0x08:
            return None
        return self.RATES.get(self.regs[0x2C] & 0x0F)

    def fifo_mode(self) -> str:
        return FIFO_MODES[self.regs[0x38] >> 6]

    def scale(self) -> tuple[float, int, int]:
        """(counts per g, min, max) for the current DATA_FORMAT."""
        fmt = self.regs[0x31]
        range_g = 2 << (fmt & 0x03)
        if fmt & 0x08:  # full resolution: 3.9 mg/LSB, more bits on wider ranges
            half = 256 * range_g
            return 256.0, -half, half - 1
        return 512.0 / (2 * range_g), -512, 511

    def _write_register(self, reg: int, value: int) -> None:
        if reg not in self.READ_ONLY:
            self.regs[reg] = value

    def read_register(self, reg: int) -> int:
        if 0x32 <= reg <= 0x37:
            self._data_read = True
            s = self._current()
            word = s[(reg - 0x32) // 2] & 0xFFFF
            return word & 0xFF if reg % 2 == 0 else word >> 8
        if reg == 0x30:  # INT_SOURCE: DATA_READY, watermark, overrun
            wm = self.regs[0x38] & 0x1F
            return ((0x80 if self.fifo else 0) | (0x02 if len(self.fifo) >= max(wm, 1) else 0)
                    | (0x01 if self.overrun else 0))
        if reg == 0x39:
            return min(len(self.fifo), 0x3F)
        return self.regs[reg]

    def _read_bytes(self, n: int) -> bytes:
        # One multi-byte read of the data registers pops one FIFO entry (data sheet).
        if n == 6 and self._ptr == 0x32:  # the drivers' read, without a call per byte
            self._ptr = 0x38
            return _XYZ.pack(*self._take())
        self._data_read = False
        out = super()._read_bytes(n)
        if self._data_read:
            self._take()
        return out


class SimLIS3DH(SimChip):
    """LIS3DH model: WHO_AM_I, CTRL_REG1/4/5, FIFO_CTRL_REG/FIFO_SRC_REG, OUT_X_L…OUT_Z_H."""

    kind = "lis3dh"
    identity_register = 0x0F
    identity_value = 0x33
    ODR = {1: 1.0, 2: 10.0, 3: 25.0, 4: 50.0, 5: 100.0, 6: 200.0, 7: 400.0}
    READ_ONLY = {0x0F, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2F}

    def __init__(self, source: Source = at_rest, clock: Callable[[], float] = time.monotonic,
                 address: int = 0x18, identity: int | None = None, noise_lsb: float = 0.0,
                 seed: int = 0) -> None:
        super().__init__(source, clock, address, identity, noise_lsb, seed)
        self._auto_inc = False

    def _reset_registers(self) -> None:
        self.regs[0x0F] = self.identity_value
        self.regs[0x20] = 0x07

    def low_power(self) -> bool:
        return bool(self.regs[0x20] & 0x08)

    def rate(self) -> float | None:
        odr = self.regs[0x20] >> 4
        if odr == 8:
            return 1600.0 if self.low_power() else None
        if odr == 9:
            return 5376.0 if self.low_power() else 1344.0
        return self.ODR.get(odr)

    def fifo_mode(self) -> str:
        if not self.regs[0x24] & 0x40:
            return "bypass"
        return FIFO_MODES[self.regs[0x2E] >> 6]

    def scale(self) -> tuple[float, int, int, int]:
        """(counts per g, min, max, bits) for the current mode and full scale."""
        range_g = 2 << ((self.regs[0x23] >> 4) & 0x03)
        mg = {2: 1.0, 4: 2.0, 8: 4.0, 16: 12.0}[range_g]
        if self.low_power():
            bits, mg = 8, mg * 16
        elif self.regs[0x23] & 0x08:
            bits = 12
        else:
            bits, mg = 10, mg * 4
        half = 1 << (bits - 1)
        return 1000.0 / mg, -half, half - 1, bits

    def _read_bytes(self, n: int) -> bytes:
        # The drivers' FIFO burst (auto-increment from OUT_X_L, whole samples), without
        # a call per byte; the pointer wraps back to OUT_X_L after each sample.
        if (self._ptr == 0x28 and self._auto_inc and n and n % 6 == 0
                and self.fifo_mode() != "bypass"):
            shift = 16 - self.scale()[3]
            out = bytearray()
            for _ in range(n // 6):
                x, y, z = self._take()
                out += struct.pack("<3H", (x << shift) & 0xFFFF, (y << shift) & 0xFFFF,
                                   (z << shift) & 0xFFFF)
            return bytes(out)
        return super()._read_bytes(n)

    def _set_pointer(self, sub: int) -> None:
        self._auto_inc = bool(sub & 0x80)
        self._ptr = sub & 0x7F

    def _advance_pointer(self) -> None:
        if not self._auto_inc:
            return
        if self._ptr == 0x2D and self.fifo_mode() != "bypass":
            self._ptr = 0x28  # with the FIFO on the pointer wraps to OUT_X_L
        else:
            self._ptr = (self._ptr + 1) & 0x7F

    def _write_register(self, reg: int, value: int) -> None:
        if reg not in self.READ_ONLY:
            self.regs[reg] = value

    def read_register(self, reg: int) -> int:
        if 0x28 <= reg <= 0x2D:
            *_, bits = self.scale()
            s = self._current()
            word = (s[(reg - 0x28) // 2] << (16 - bits)) & 0xFFFF  # left-justified
            value = word & 0xFF if reg % 2 == 0 else word >> 8
            if reg == 0x2D:
                self._take()
            return value
        if reg == 0x2F:  # FIFO_SRC_REG: WTM, OVRN_FIFO, EMPTY, FSS
            n = len(self.fifo)
            fth = self.regs[0x2E] & 0x1F
            return ((0x80 if fth and n >= fth else 0) | (0x40 if self.overrun else 0)
                    | (0x20 if n == 0 else 0) | min(n, 31))
        return self.regs[reg]


class SimI2C:
    """A ``busio.I2C``-like bus carrying simulated chips (by 7-bit address)."""

    def __init__(self, *chips: SimChip) -> None:
        self.chips: dict[int, SimChip] = {c.address: c for c in chips}
        self._lock = threading.Lock()
        self.transactions = 0

    def add(self, chip: SimChip) -> None:
        self.chips[chip.address] = chip

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def deinit(self) -> None:
        self.chips.clear()

    def _chip(self, address: int) -> SimChip:
        chip = self.chips.get(address)
        if chip is None:
            raise OSError(errno.EREMOTEIO, f"no device answers at I2C address 0x{address:02X}")
        self.transactions += 1
        return chip

    def scan(self) -> list[int]:
        return sorted(a for a, c in self.chips.items() if c.io_error is None)

    def writeto(self, address: int, buffer: Any, *, start: int = 0,
                end: int | None = None) -> None:
        self._chip(address).i2c_write(bytes(buffer[start:end]))

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0,
                      end: int | None = None) -> None:
        end = len(buffer) if end is None else end
        buffer[start:end] = self._chip(address).i2c_read(end - start)

    def writeto_then_readfrom(self, address: int, buffer_out: Any, buffer_in: Any, *,
                              out_start: int = 0, out_end: int | None = None,
                              in_start: int = 0, in_end: int | None = None) -> None:
        in_end = len(buffer_in) if in_end is None else in_end
        out = buffer_out if type(buffer_out) is bytes and out_start == 0 and out_end is None \
            else bytes(buffer_out[out_start:out_end])
        buffer_in[in_start:in_end] = self._chip(address).i2c_transfer(out, in_end - in_start)


def make_sim_chip(kind: str, source: Source = at_rest,
                  clock: Callable[[], float] = time.monotonic,
                  address: int | None = None, noise_lsb: float = 0.0) -> SimChip:
    """A simulated chip of ``kind`` (adxl345 or lis3dh)."""
    if kind == "adxl345":
        return SimADXL345(source, clock, 0x53 if address is None else address,
                          noise_lsb=noise_lsb)
    if kind == "lis3dh":
        return SimLIS3DH(source, clock, 0x18 if address is None else address,
                         noise_lsb=noise_lsb)
    raise ValueError(f"no simulated chip {kind!r}: adxl345 or lis3dh")
