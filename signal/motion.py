"""Car motion from the terminal's accelerometer: speed, position, floor, ride figures.

The pipeline feeds raw accelerometer blocks, leveling-sensor edges, the run signal and
controller polls; :class:`MotionTracker` keeps the car's vertical speed and position and,
on a sensors-only terminal, the floor. The numeric path is the fixed-point chain
(:mod:`chain`: rotation into the car frame, decimation, the 10 Hz low-pass, Wk/Wd) and
the integer kernels of :mod:`dsp` (integrators, lsq slope via :mod:`ride`); the
gravity/bias level is an integer average of rest chunks (:class:`_RestLevel`).

How the estimate stays honest over a day of trips:

- **Orientation.** Lift acceleration is vertical, so the mean of the first quarter
  second gives the car's z axis before the chain sees a sample; rest windows refine it
  and re-estimate it when the terminal is moved (:mod:`orientation`).
- **Rest.** The analysis-rate signal is judged in 0.1 s chunks. A chunk is quiet when
  it is flat and its level is the gravity level; the car is at rest after
  ``rest_confirm_s`` of quiet chunks while the run signal (when known) is off, or,
  without one, while the integrated speed is small (cruise is quiet too). At rest the
  speed is zero: the integrator is cleared, and the gravity level learns from rest
  chunks only (two chunks late, so the onset of the next move never leaks into it;
  those two chunks are integrated when the move shows). Flat for 4 s at another level
  means zero acceleration at a moved level (start-up, temperature, a knock): the level
  follows, and a step no drive makes forces a rest.
- **Leveling zones.** Each landing's vane switches ``zone_up``/``zone_down`` at fixed
  car positions relative to that sill (the car is level while both are on). An edge
  is a position fix: nearest sill plus the edge's offset. The offsets start from
  :func:`default_zone_intervals` and are learned from the first ``LEARN_N`` departures
  (a car leaving a landing it stood level at passes its own vane's edges a few
  decimetres later, where the integrated distance is still exact), then held: the
  vanes do not move, the stops may (leveling wear), and a reference that kept learning
  from departures would follow them. They are kept across restarts with the baselines
  (:meth:`MotionTracker.edges_state`), for the same reason. Fixes also correct the
  speed drift, and at the stop the drift left is taken back out of the position since
  the last fix, which gives :meth:`MotionTracker.stop_position_error_mm`.
- **Controller.** When present, a level stop with a floor label anchors the position
  at that sill, and steady cruise speed pulls the integrated speed towards it.
- **Floor without a controller.** Each move is booked at its stop as a drift-corrected
  distance (re-integrated with the speed forced to zero at both rests) and a signed count
  of landing zones entered. At a level stop, the landings the car can be at are those
  reachable from the previous candidates by that count *and* that distance: an irregular
  building names itself within a few trips, a regular one when the car reaches an end.
  Once known, the count (checked against the fixed-up position, or the distance) moves
  the floor on; a contradiction makes it unknown again (``floor_resets``) rather than
  wrong. Trips between known landings calibrate the sensor's sensitivity
  (``distance_gain``), which then scales distances and the ride figures.

Times: every sample is placed at its own time (first sample of a block at ``t0``, then
every ``1/fs``), outputs shifted back by the chain's group delay; records may arrive
out of sample order (a FIFO block reaches past the next records), so edges are applied
at their own time, retroactively when their samples were already processed. Blocks are
checked and held as plain lists until ``chain_batch_s`` of samples are in, then converted
and run through the chain and the chunk decisions in one numpy pass (the per-chunk figures
for all chunks at once): speed lags the input by up to that much, as it did when the chain
itself held the samples back (the same batches: the same decisions at the same times).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from liftwatch.signal import dsp, leveling
from liftwatch.signal.chain import AccelChain, check_block, flat_rows
from liftwatch.signal.orientation import OrientationEstimator, check_rotation
from liftwatch.signal.ride import trip_figures
from liftwatch.signal.settings import LiftParams

G = 9.80665
Q24 = 1 << 24                      # the chain's acceleration format: Q24 g
MS2 = G / Q24                      # m/s² per word
V_SHIFT = 8                        # speed integrator output: 2**8 words of g·sample each
P_SHIFT = 8                        # position integrator output shift
TRACK_SHIFT = 7                    # rest level time constant 2**7 chunks (12.8 s)
CHUNK_S = 0.1                      # decision granularity
BOOT_S = 0.25                      # samples averaged for the first orientation
STARTUP_S = 0.3                    # first chain outputs ignored (filters settling)
RECENTRE_S = 4.0                   # flat this long: zero acceleration, the mean is gravity
RING_S = 150.0                     # analysis-rate history kept (a trip plus margin)
W_BATCH_S = 30.0                   # weighted vibration computed at least this often
PREROLL_S = 4.0                    # history kept while no trip is open
MOVES_N = 30                       # moves kept as evidence while the floor is unknown
GAIN_MIN_M = 3.0                   # trips at least this long calibrate the sensitivity
LEARN_N = 15                       # departures that learn a zone-edge offset
SENSORS = ("zone_up", "zone_down")


def default_zone_intervals(door_zone_m: float, sensor_gap_m: float = 0.08
                           ) -> dict[str, tuple[float, float]]:
    """Initial leveling-sensor geometry (car sill relative to the landing sill, m).

    Both sensors are on within ±door_zone_m/2 (LiftParams); ``zone_up`` sits higher on
    the car, so it meets a landing's vane ``sensor_gap_m`` earlier on the way up,
    ``zone_down`` that much earlier on the way down. Learned offsets replace these.
    """
    h = door_zone_m / 2
    return {"zone_up": (-h - sensor_gap_m, h), "zone_down": (-h, h + sensor_gap_m)}


def _peak(raw: Any) -> int:
    """Largest |count| of a block (flat list of ints or int array)."""
    if isinstance(raw, np.ndarray):
        return int(np.abs(raw).max())
    return max(max(raw), -min(raw))


class _RestLevel:
    """Gravity-plus-bias level of the vertical signal, learned from rest chunks only.

    An integer exponential average over 0.1 s chunk means, ``r += (mean - r) >> shift``
    with round-half-up: time constant 2**shift chunks (12.8 s at shift 7), so a long rest
    averages the noise away while a temperature drift is still followed. Chunk-level, not
    per sample: a rest costs one division per 0.1 s.
    """

    def __init__(self, initial: int, shift: int = TRACK_SHIFT) -> None:
        self.rest = int(initial)
        self.shift = shift

    def reset(self, v: int) -> None:
        self.rest = int(v)

    def feed(self, chunk: np.ndarray) -> None:
        self.feed_sum(int(chunk.sum()), int(chunk.size))

    def feed_sum(self, total: int, n: int) -> None:
        """One chunk given by its sum and sample count (the caller has them already)."""
        if n:
            mean = (2 * total + n) // (2 * n)
            d = mean - self.rest
            self.rest += (d + (1 << (self.shift - 1))) >> self.shift


@dataclass(slots=True)
class _Chunk:
    """0.1 s of analysis-rate samples and what motion made of them."""

    t: np.ndarray          # sample times (s)
    res: np.ndarray        # vertical acceleration minus gravity/bias, Q24 g (after gain)
    v: np.ndarray          # speed (m/s) as estimated live
    p: np.ndarray          # position (m) as estimated live
    wx: np.ndarray | None  # weighted vibration: filled in by _fill_w (trip figures only)
    wy: np.ndarray | None
    wz: np.ndarray | None
    rest: bool
    t_end: float           # t[-1] and t[0] as floats: the history is searched by them
    t_first: float


class MotionTracker:
    """Speed, position and floor of the car from its accelerometer (see module doc).

    Public state after each call: ``speed`` (m/s, up positive), ``position_m`` (car sill
    above the lowest landing; only meaningful while ``position_known``), ``t_last``,
    ``at_rest``, ``moving``, ``floor_index`` (landing index while stopped level, else
    None), ``gravity_g`` (gravity magnitude at the last rest), ``saturated`` (the last
    block reached full scale), ``silent_since`` (time just after the last sample
    received; None before any: now − silent_since is how long the sensor has been silent).
    """

    def __init__(self, lift: LiftParams, fs: float, lsb_per_g: float,
                 rotation: list[list[float]] | None = None, auto_orient: bool = True,
                 moving_speed: float = 0.05, fs_out: int = 200,
                 zone_intervals: dict[str, tuple[float, float]] | None = None,
                 full_scale_g: float = 2.0, rest_confirm_s: float = 0.5,
                 quiet_pp_ms2: float = 0.15, quiet_mean_ms2: float = 0.06,
                 rest_speed: float = 0.25, chain_batch_s: float = 2.0) -> None:
        if not (isinstance(fs, int | float) and math.isfinite(fs) and fs > 0):
            raise ValueError(f"accelerometer fs must be a positive number, found {fs!r}")
        if not (isinstance(lsb_per_g, int | float) and math.isfinite(lsb_per_g)
                and lsb_per_g > 0):
            raise ValueError(f"lsb_per_g must be a positive number, found {lsb_per_g!r}")
        heights = [float(h) for h in lift.landing_heights_m]
        if any(b <= a for a, b in zip(heights, heights[1:], strict=False)):
            raise ValueError("landing_heights_m must increase from the lowest landing up")
        self.lift = lift
        self.fs = float(fs)
        self.lsb_per_g = float(lsb_per_g)
        self.heights = np.asarray(heights, dtype=float)
        self.moving_speed = moving_speed
        fixed = rotation if rotation is not None else (None if auto_orient else np.eye(3).tolist())
        if fixed is not None:
            fixed = check_rotation(fixed)
        self.orient = OrientationEstimator(fixed=fixed)
        if not float(fs).is_integer() or int(fs) % fs_out:
            raise ValueError(f"accelerometer fs must be a whole multiple of {fs_out} Hz, "
                             f"found {fs!r}")
        self._fs_out_req = fs_out
        self._chain_batch = max(0, round(chain_batch_s * float(fs)))
        self._chain = self._new_chain()          # rotation set again once it is known
        self.fs_out = float(self._chain.fs_out)
        self._factor = self._chain.design.factor
        self._delay = float(self._chain.delay_s["a_z"])
        self._n_in = 0
        self._blocks_in: deque[tuple[int, float, int]] = deque()   # (first index, t0, n)
        self._waiting: list[Any] = []            # blocks held for the next chain batch
        self._waiting_n = 0
        self._raw_store = np.zeros((0, 3), dtype=np.int64)   # raw rows from _blocks_in[0]
        self._raw_base = 0                       # input index of _raw_store[0]
        self._raw_cum = np.zeros((3, 1), dtype=np.int64)   # per axis, prefix sums
        self._blk: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._chunk_n = max(1, round(CHUNK_S * self.fs_out))
        self._w_batch = round(W_BATCH_S * self.fs_out)
        self._v_lsb = (1 << V_SHIFT) * MS2 / self.fs_out          # m/s per speed word
        self._p_lsb = (1 << P_SHIFT) * self._v_lsb / self.fs_out   # m per position word
        self._iv = dsp.Integrator(V_SHIFT)
        self._ip = dsp.Integrator(P_SHIFT)
        self._tracker: _RestLevel | None = None
        self._full_scale = int(full_scale_g * self.lsb_per_g) - 1
        self._rest_confirm = rest_confirm_s
        self._quiet_pp = round(quiet_pp_ms2 / MS2)
        self._quiet_mean = round(quiet_mean_ms2 / MS2)
        self._rest_speed = rest_speed
        self._jump = round(0.3 / MS2)            # a gravity-level step no lift makes
        self._force_rest = False
        # Public state.
        self.speed = 0.0
        self.position_m = 0.0
        self.position_known = False
        self.t_last: float | None = None
        self.at_rest = False
        self.floor_index: int | None = None
        self._last_raw: Any = None               # the last block kept (its peak: saturated)
        self._last_peak: int | None = 0
        self.silent_since: float | None = None
        self.blocks = 0
        self.gaps = 0
        # Sample timing and chain bookkeeping.
        self._t_next_in: float | None = None     # expected time of the next input sample
        self._pending: list[np.ndarray] = []     # analysis samples not yet in a chunk
        self._pending_t: list[np.ndarray] = []
        self._ring: deque[_Chunk] = deque()
        # Chunks waiting for their weighted vibration (n, chunk; None: settling, dropped),
        # and outputs computed ahead of the chunks (the chain's tail not yet chunked).
        self._w_wait: deque[tuple[int, _Chunk | None]] = deque()
        self._w_buf = np.zeros((0, 3), dtype=np.int64)
        self._quiet_s = 0.0
        self.rest_since: float | None = None
        self._flat_s = 0.0
        self._flat_sum = 0
        self._flat_n = 0
        self._held: list[tuple[int, int]] = []   # rest chunks (sum, n) waiting for the tracker
        self._settle_until = -math.inf           # after a chain rebuild: outputs settling
        # Raw rest statistics for orientation and the gravity check.
        self._raw_sum = [0, 0, 0]                # integer sums: exact, cheap to add to
        self._raw_n = 0
        self._gravity_src: tuple[tuple[int, ...], int] | None = None
        self._gravity: float | None = None
        # Run signal and zone state.
        self._run: list[tuple[float, bool]] = []
        self._run_tmax = -math.inf               # latest time in _run (ever: an upper bound)
        self._zone: dict[str, int] = {}
        self._edges: list[tuple[float, str, int]] = []
        geom = zone_intervals or default_zone_intervals(lift.door_zone_m)
        self._geom_default = {k: (float(v[0]), float(v[1])) for k, v in geom.items()}
        self._learned: dict[tuple[str, int], deque[float]] = {
            (s, b): deque(maxlen=LEARN_N) for s in SENSORS for b in (0, 1)}
        self._median: dict[tuple[str, int], float] = {}   # of _learned, while unchanged
        # Trips and stops.
        self._trip_t0: float | None = None
        self._depart_p: float | None = None      # position of the level stop left last
        self._last_fix_t: float | None = None
        self._fixes_this_trip = 0
        self._stop_err_mm: float | None = None
        self._stop_unc_mm: float | None = None   # its expanded uncertainty (leveling.py)
        self._fix_edge: tuple[tuple[str, int], float] | None = None   # last fix: edge, speed
        self._rest_var = 0.0                     # low-passed a_z variance at rest (words²)
        self._moved = 0.0                        # drift-corrected travel since a level stop
        self._passes = 0                         # landings entered since a level stop (±)
        self._leave_dir = 0                      # direction the last level zone was left
        self._zs: dict[str, int] = {}            # sensor levels as edges are applied
        self._seg_t0: float | None = None        # end of the last rest
        self._learned_fix = False
        self.floor_resets = 0
        self._gain_obs: deque[float] = deque(maxlen=LEARN_N)
        self._moves: list[tuple[int, float]] = []   # (landings, raw distance) while unknown
        self._cands: set[int] | None = None      # floor candidates while unknown (None: all)
        self._ctl_prev: tuple[float, float] | None = None
        self.floor_fixes = 0
        self.fix_rejects = 0

    # ------------------------------------------------------------------ chain
    @property
    def leave_dir(self) -> int:
        """Which way the car left the last level zone by its own speed at the vane edge:
        +1 up, -1 down, 0 unknown or back in a zone (the fused state's direction evidence)."""
        return self._leave_dir

    def _new_chain(self) -> AccelChain:
        rot = self.orient.rotation if self.orient.known else None
        # The chain's cost is per call: on_acc hands it ``chain_batch_s`` of samples at a
        # time (the speed's latency), so the chain itself need not hold any back.
        # Wk/Wd are only read for trip figures: the chain queues them (defer_w) and
        # _fill_w runs them over up to W_BATCH_S at a time.
        return AccelChain(int(self.fs), self.lsb_per_g, rotation=rot, fs_out=self._fs_out_req,
                          min_block=0, defer_w=True)

    def rotation_matrix(self) -> list[list[float]]:
        """Current mounting estimate, car_from_sensor (for ``liftwatch calibrate``)."""
        return [list(r) for r in self.orient.rotation]

    # ------------------------------------------------------------------ inputs
    def on_acc(self, t0: float, block: Sequence[Sequence[int]]) -> None:
        """Raw counts ``[[x, y, z], ...]``, first sample at ``t0``, then every 1/fs.

        Raises ValueError for a malformed block before touching any state. A list of
        integer rows (a trace line, a FIFO read) is checked in plain Python and held as
        is; the numpy work runs once per ``chain_batch_s`` of samples (:meth:`_emit`).
        """
        if not (isinstance(t0, int | float) and math.isfinite(t0)):
            raise ValueError(f"acc block time must be a finite number, found {t0!r}")
        got = flat_rows(block)          # ValueError for counts beyond any 16-bit register
        if got is not None:             # a plain list of int rows, kept flat until a batch
            raw: Any = got[0]
            peak: int | None = got[1]           # None: fits 16 bits, worked out if asked
            n = len(raw) // 3
        else:                           # anything else: the full check
            try:
                arr = np.asarray(block) if isinstance(block, list) else None
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.dtype.kind not in "iu":
                arr = block
            raw = check_block(arr)      # ValueError for anything but rows of 3 integers
            if raw.shape[0] == 0:
                raise ValueError("acc block is empty")
            peak = int(np.abs(raw).max())
            n = raw.shape[0]
        # Overlap with samples already received (a repeated FIFO read): drop it.
        if self._t_next_in is not None:
            skip = round((self._t_next_in - t0) * self.fs)
            if skip >= n:
                return
            if skip > 0:
                raw = raw[3 * skip:] if isinstance(raw, list) else raw[skip:]
                t0 = t0 + skip / self.fs
                n -= skip
                peak = None
            elif skip < -1:
                self.gaps += 1
        self.blocks += 1
        self._last_raw = raw
        self._last_peak = peak
        self._blocks_in.append((self._n_in, t0, n))
        self._n_in += n
        self._t_next_in = t0 + n / self.fs
        self.silent_since = self._t_next_in
        self._waiting.append(raw)
        self._waiting_n += n
        if not self.orient.known:
            # Lift acceleration is vertical, so the mean of any stretch of samples points
            # along the car's z axis (rest only matters for the magnitude): a quarter of a
            # second fixes the rotation before the chain sees a sample.
            if self._waiting_n < BOOT_S * self.fs:
                return
            boot = self._convert()
            self.orient.update(boot.mean(axis=0), boot.shape[0] / self.fs)
            self._chain = self._new_chain()
            self._waiting, self._waiting_n = [boot], boot.shape[0]
        if self._waiting_n >= self._chain_batch:
            self._emit()

    def _convert(self) -> np.ndarray:
        """The held blocks as one (N, 3) int64 array (one numpy conversion per batch)."""
        blocks = self._waiting
        if len(blocks) == 1 and isinstance(blocks[0], np.ndarray):
            return blocks[0]
        if all(type(b) is list for b in blocks):
            flat: list[int] = []
            for b in blocks:
                flat += b
            return np.array(flat, dtype=np.int64).reshape(-1, 3)
        return np.concatenate([np.asarray(b, dtype=np.int64).reshape(-1, 3) for b in blocks])

    def _emit(self) -> None:
        """Run the held samples through the chain and the chunk decisions."""
        raw = self._convert()
        self._waiting, self._waiting_n = [], 0
        # The raw samples of the blocks still referred to, with prefix sums: the raw sum
        # of any rest chunk (orientation, gravity) is then two lookups.
        keep = self._blocks_in[0][0] - self._raw_base if self._blocks_in else 0
        store = np.concatenate([self._raw_store[keep:], raw])
        self._raw_base += keep
        self._raw_store = store
        # Axis-major: a window sum is then a gather along the last axis (np.take), which
        # costs a fraction of fancy indexing rows of an (N, 3) array.
        cum = np.zeros((3, store.shape[0] + 1), dtype=np.int64)
        np.cumsum(store.T, axis=1, out=cum[:, 1:])
        self._raw_cum = cum
        self._take(self._chain.process(raw))

    def flush(self) -> None:
        """Process what the chain still holds back (it batches for speed): the pipeline's
        finish and :meth:`end_trip` call it so that the latest samples count."""
        if self._waiting and self.orient.known:
            self._emit()
        self._take(self._chain.flush())

    def _take(self, out: Any) -> None:
        """Place chain outputs in time and run them through the chunk decisions."""
        a_z = np.asarray(out.a_z, dtype=np.int64)
        m = a_z.shape[0]
        if not m:
            return
        # Output i stands for input sample (first + i) * factor (counted from the first
        # input ever fed), delayed by the filters.
        k = (out.first + np.arange(m)) * self._factor
        blk = np.array(self._blocks_in)          # (first index, t0, n) rows, float64
        starts = blk[:, 0].astype(np.int64)      # indices < 2**53: exact as floats
        t0s = blk[:, 1]
        self._blk = (starts, t0s, blk[:, 2].astype(np.int64))
        j = np.clip(np.searchsorted(starts, k, side="right") - 1, 0, None)
        t_out = t0s[j] + (k - starts[j]) / self.fs - self._delay
        if self.t_last is None and not self._pending:
            # The chain starts settled on its first (noisy) sample: let it average first.
            self._settle_until = max(self._settle_until, float(t_out[0]) + STARTUP_S)
        self._pending.append(a_z)
        self._pending_t.append(t_out)
        self._run_chunks()
        if self._chain.w_queued >= self._w_batch:
            self._fill_w()
        # Keep the input blocks outputs may still refer to (the chain holds ~a second).
        last_k = int(k[-1])
        while len(self._blocks_in) > 1 and self._blocks_in[1][0] <= last_k - 4 * self.fs:
            self._blocks_in.popleft()

    def on_zone(self, t: float, zone_up: int | None, zone_down: int | None) -> None:
        """Leveling sensor levels at ``t`` (None: no such sensor); edges re-anchor position."""
        for name, lvl in (("zone_up", zone_up), ("zone_down", zone_down)):
            if lvl is None:
                continue
            lvl = 1 if lvl else 0
            prev = self._zone.get(name)
            self._zone[name] = lvl
            if prev is not None and prev != lvl:
                self._edges.append((float(t), name, lvl))
        self._apply_edges()

    def on_run(self, t: float, running: bool) -> None:
        """Run contactor or controller run: no rest while it is on."""
        self._run.append((float(t), bool(running)))
        self._run_tmax = max(self._run_tmax, float(t))
        if len(self._run) > 64:
            del self._run[:-32]

    def on_controller(self, t: float, ctl: dict | None) -> None:
        """One controller poll (None: failed): anchors floor and position, steadies speed."""
        if not isinstance(ctl, dict):
            return
        floor = ctl.get("floor")
        speed = ctl.get("speed")
        direction = ctl.get("dir")
        run = ctl.get("run")
        idx = self._label_index(floor)
        if (idx is not None and ctl.get("zone") == 1 and run == 0
                and isinstance(speed, int | float) and speed == 0 and self.at_rest):
            self._anchor(idx)
        if isinstance(speed, int | float) and math.isfinite(speed) and direction in (0, 1, 2):
            v_ctl = float(speed) * (1 if direction == 1 else -1 if direction == 2 else 0)
            prev = self._ctl_prev
            self._ctl_prev = (float(t), v_ctl)
            steady = prev is not None and abs(prev[1] - v_ctl) < 0.01 and t - prev[0] < 0.5
            if steady and abs(v_ctl) > 0.3 and not self.at_rest:
                got = self._at(t)
                if got is not None:
                    dv = 0.5 * (v_ctl - got[0])
                    self._shift(t, 0.0, dv)

    def _label_index(self, floor: Any) -> int | None:
        if floor is None:
            return None
        try:
            return self.lift.landings.index(str(floor))
        except ValueError:
            return None

    def _run_at(self, t: float) -> bool | None:
        """The run signal at ``t`` (None: no run signal reported up to then)."""
        i = bisect.bisect_right(self._run, (t, True))
        return self._run[i - 1][1] if i else None

    def _runs_at(self, ts: list[float]) -> list[bool | None]:
        """``_run_at`` of each time; in one go when no run change is as late as any of them
        (then each bisection would end past the last entry: its level holds for all)."""
        if not self._run:
            return [None] * len(ts)
        if ts and self._run_tmax <= min(ts):
            return [self._run[-1][1]] * len(ts)
        return [self._run_at(t) for t in ts]

    # ------------------------------------------------------------------ chunks
    def _run_chunks(self) -> None:
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        times = np.concatenate(self._pending_t) if len(self._pending_t) > 1 \
            else self._pending_t[0]
        n = self._chunk_n
        count = data.shape[0] // n
        full = count * n
        if count:
            # What each chunk's decisions need, for all chunks in a few numpy passes (a
            # numpy call on 20 samples costs as much as on 2000): level sums, flatness,
            # raw sums of the chunk's window, and the arrays its history record holds.
            az = data[:full].reshape(count, n)
            t2 = times[:full].reshape(count, n)
            totals = az.sum(axis=1).tolist()
            spans = (az.max(axis=1) - az.min(axis=1)).tolist()
            raw_sums, raw_ns = self._raw_window_sums(t2[:, 0], t2[:, -1])
            raw_sums = raw_sums.tolist()
            t_first, t_end = t2[:, 0].tolist(), t2[:, -1].tolist()
            zeros = np.zeros((count, n))          # rows: speeds of rest chunks
            pos = np.empty((count, n))            # rows: positions of rest chunks
            runs = self._runs_at(t_end)
            # Row views made in one pass each (indexing per chunk costs more).
            for i, (t, a, z, ps) in enumerate(zip(t2, az, zeros, pos, strict=True)):
                self._chunk(t, a, totals[i], spans[i], raw_sums[i], raw_ns[i],
                            z, ps, t_first[i], t_end[i], runs[i])
        self._pending = [data[full:]] if full < data.shape[0] else []
        self._pending_t = [times[full:]] if full < data.shape[0] else []
        self._apply_edges()

    def _raw_window_sums(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """Sum and count of the raw samples timed within [lo, hi] of each chunk (placed by
        their own block's time, as the chain places outputs), from the prefix sums."""
        starts, t0s, ns = self._blk
        fs = self.fs
        # Only the blocks that reach into the batch's span can hold samples of its
        # windows (a sample's margin either side for rounding): the others would add zeros.
        near = (t0s <= float(hi.max()) + 1 / fs) & (t0s + ns / fs >= float(lo.min()) - 1 / fs)
        if not near.all():
            starts, t0s, ns = starts[near], t0s[near], ns[near]
        i0 = np.maximum(np.ceil((lo[:, None] - t0s[None, :]) * fs), 0).astype(np.int64)
        i1 = np.minimum(np.floor((hi[:, None] - t0s[None, :]) * fs).astype(np.int64) + 1,
                        ns[None, :])
        ok = i1 > i0
        base = (starts - self._raw_base)[None, :]
        a = np.where(ok, base + i0, 0)
        b = np.where(ok, base + i1, 0)
        cum = self._raw_cum
        sums = (np.take(cum, b, axis=1) - np.take(cum, a, axis=1)).sum(axis=2).T
        return sums, np.where(ok, i1 - i0, 0).sum(axis=1).tolist()

    def _chunk(self, t: np.ndarray, az: np.ndarray, total: int, span: int,
               raw_sum: list[int], raw_n: int,
               zeros_f: np.ndarray, pos_f: np.ndarray, t_first: float, t_end: float,
               run: bool | None) -> None:
        """The decisions of one chunk: rest or motion, level, integration, history.

        ``_run_chunks`` works out for all chunks of a batch at once what numpy gives
        cheaply in bulk: level sum and span of ``az``, the raw window sum, the run signal
        at ``t_end``, rows to fill (``zeros_f``, ``pos_f``) for a rest chunk's history.
        """
        if t_end < self._settle_until:
            # A new chain's filters are still filling: nothing to learn or integrate.
            zeros = np.zeros(t.size, dtype=np.int64)
            self._ring.append(_Chunk(t, zeros, np.zeros(t.size), np.full(t.size, self.position_m),
                                     zeros, zeros, zeros, True, t_end, t_first))
            self._w_wait.append((t.size, None))    # its weighted outputs are dropped
            self.t_last = t_end
            return
        if self._tracker is None:
            self._tracker = _RestLevel(int(np.median(az)))
        res = az - self._tracker.rest
        n = az.size
        flat = span < self._quiet_pp
        dur = n / self.fs_out
        # A steady streak: flat chunks whose level stays where the streak began (a jerk
        # ramp is flat within 0.1 s, but its level walks away).
        steady = flat and (self._flat_n == 0 or 2 * abs(
            total * self._flat_n - self._flat_sum * n) < self._quiet_mean * self._flat_n * n)
        if steady:
            self._flat_s += dur
            self._flat_sum += total
            self._flat_n += n
        else:
            self._flat_s = dur if flat else 0.0
            self._flat_sum = total if flat else 0
            self._flat_n = n if flat else 0
        if self._flat_s >= RECENTRE_S:
            # Flat for longer than any lift accelerates: the acceleration is zero (a car
            # standing or cruising), so the mean is the gravity level. Follow it when it
            # moved (start-up, temperature, a knock) beyond what the rest tracker does.
            level = (2 * self._flat_sum + self._flat_n) // (2 * self._flat_n)
            jump = abs(level - self._tracker.rest)
            if jump * 3 >= self._quiet_mean:
                self._tracker.reset(level)
                res = az - self._tracker.rest
                self._held = []
            if jump >= self._jump or abs(self.speed) > 1.3 * self.lift.rated_speed:
                # A step no drive makes (the terminal was knocked or remounted), or a
                # speed no car reaches: what was integrated is not motion. Stand still.
                self._force_rest = True
            self._flat_s, self._flat_sum, self._flat_n = 0.0, 0, 0
        quiet = flat and abs(total - n * self._tracker.rest) < self._quiet_mean * n
        self._quiet_s = self._quiet_s + dur if (quiet and not run) else 0.0
        if self._force_rest and quiet:
            rest = True
            if not self.at_rest and self._depart_p is not None:
                # Nothing moved since the last rest: put the position back.
                self.position_m = self._depart_p
                self._ip.acc = round(self.position_m / self._p_lsb * (1 << P_SHIFT))
                self._seg_t0 = None
        elif run is None:
            # Cruise is quiet too: only a small speed (drift) may be taken for rest; a
            # larger one only after a long quiet spell (a long trip's drift).
            rest = self._quiet_s >= self._rest_confirm and (
                abs(self.speed) < self._rest_speed
                or (self._quiet_s >= RECENTRE_S
                    and abs(self.speed) < 0.3 * self.lift.rated_speed))
        else:
            rest = self._quiet_s >= self._rest_confirm and not run
        if rest and self.at_rest:
            self._held.append((total, n))
            if len(self._held) > 2:
                self._tracker.feed_sum(*self._held.pop(0))
        if rest:
            if not self.at_rest:
                self._enter_rest(t_first)
            v = zeros_f
            p = pos_f
            p.fill(self.position_m)
        else:
            if self.at_rest:
                self._leave_rest(t_first)
            v_w = self._iv.process(res)
            p_w = self._ip.process(v_w)
            v = v_w * self._v_lsb
            p = p_w * self._p_lsb
            self.speed = float(v[-1])
            self.position_m = float(p[-1])
        chunk = _Chunk(t, res, v, p, None, None, None, rest, t_end, t_first)
        self._ring.append(chunk)
        self._w_wait.append((t.size, chunk))
        if rest and self.at_rest:
            self._accumulate_raw(raw_sum, raw_n)
            # rest noise (leveling uncertainty): a slow average of each rest chunk's variance
            # (from the integer sum and sum of squares: np.var costs 4x as much per chunk)
            s, q = int(res.sum()), int(res.dot(res))
            var = (q - s * s / n) / n
            self._rest_var += (var - self._rest_var) / (8.0 if self._rest_var == 0.0 else 64.0)
        self.t_last = t_end
        self._prune()

    def _fill_w(self) -> None:
        """Run the weighted-vibration filters over what the chain queued and hand each
        waiting chunk its rows (outputs come in chunk order: chunk i takes the next n)."""
        new = self._chain.take_weighted()
        buf = new if not self._w_buf.shape[0] else np.concatenate([self._w_buf, new])
        pos = 0
        wait = self._w_wait
        while wait and pos + wait[0][0] <= buf.shape[0]:
            n, c = wait.popleft()
            if c is not None:
                c.wz, c.wx, c.wy = buf[pos:pos + n, 0], buf[pos:pos + n, 1], buf[pos:pos + n, 2]
            pos += n
        self._w_buf = buf[pos:]

    def _gravity_of(self, raw_sum: list[int], raw_n: int) -> None:
        """Note the rest window behind ``gravity_g`` (worked out when read: the pipeline
        looks once a second, rest chunks come ten times as often)."""
        self._gravity_src = (tuple(raw_sum), raw_n)
        self._gravity = None

    @property
    def gravity_g(self) -> float | None:
        """Gravity magnitude (g) over the latest rest window (None before any)."""
        if self._gravity is None and self._gravity_src is not None:
            s, n = self._gravity_src
            mean = np.array(s, dtype=np.float64) / n
            self._gravity = float(np.linalg.norm(mean) / self.lsb_per_g)
        return self._gravity

    @property
    def saturated(self) -> bool:
        """The last block kept reached full scale."""
        if self._last_peak is None:
            self._last_peak = _peak(self._last_raw)
        return self._last_peak >= self._full_scale

    @property
    def moving(self) -> bool:
        """True while the estimated speed exceeds ``moving_speed``."""
        return abs(self.speed) > self.moving_speed

    def _enter_rest(self, t: float) -> None:
        self.at_rest = True
        # when the car came to rest (rules read it): the start of the quiet spell that
        # confirmed the rest, not the decision rest_confirm_s later
        self.rest_since = t - max(0.0, self._quiet_s - CHUNK_S)
        self._force_rest = False
        if self._last_fix_t is not None and self._fixes_this_trip and len(self._ring) >= 2:
            # The car stands: the speed still measured is drift, and the same drift has
            # built up position error since the last vane fix. Take it back out. (Only
            # the last 0.2 s count: the start of the quiet spell may be the final creep.)
            tail = list(self._ring)[-2:]
            drift = float(np.concatenate([c.v for c in tail]).mean())
            self.position_m -= drift * max(0.0, float(tail[-1].t[-1]) - self._last_fix_t)
            self._ip.acc = round(self.position_m / self._p_lsb * (1 << P_SHIFT))
        self.speed = 0.0
        self._iv.acc = 0
        self._held = []
        if self._tracker is not None and self._gravity_src is None and self._ring:
            # First rest since start (or a rebuild): start the tracker at this rest's level.
            recent = [c.res for c in list(self._ring)[-3:]]
            self._tracker.reset(int(self._tracker.rest + np.median(np.concatenate(recent))))
        self._on_stop(t)

    def _leave_rest(self, t: float) -> None:
        self.at_rest = False
        self.floor_index = None
        # The onset of motion may hide in the last quiet chunks: integrate them now, and
        # count them as motion in the history (trip figures, travelled distance).
        start = 0
        for total, n in self._held:
            start += total - n * self._tracker.rest if self._tracker else 0
        self._iv.acc = start
        n_held = len(self._held)
        self._held = []
        chunks = list(self._ring)[-n_held:] if n_held else []
        for c in chunks:
            c.rest = False
        self._depart_p = self.position_m
        self._seg_t0 = float(chunks[0].t[0]) if chunks else t
        self._fixes_this_trip = 0
        self._learned_fix = False
        self._last_fix_t = None
        self._flush_raw()

    def _accumulate_raw(self, raw_sum: list[int], raw_n: int) -> None:
        """Add the raw samples of a rest chunk (their sum and count) to the orientation
        window."""
        if raw_n:
            s = self._raw_sum
            s[0] += raw_sum[0]
            s[1] += raw_sum[1]
            s[2] += raw_sum[2]
            self._raw_n += raw_n
        if self._raw_n >= 0.5 * self.fs:
            self._gravity_of(self._raw_sum, self._raw_n)
        if self._raw_n >= (10.0 if self.orient.known else 1.0) * self.fs:
            self._flush_raw()

    def _flush_raw(self) -> None:
        if self._raw_n < 0.5 * self.fs:
            self._raw_sum = [0, 0, 0]
            self._raw_n = 0
            return
        mean = np.array(self._raw_sum, dtype=np.float64) / self._raw_n
        self._gravity_of(self._raw_sum, self._raw_n)
        changed = self.orient.update(mean, self._raw_n / self.fs)
        self._raw_sum = [0, 0, 0]
        self._raw_n = 0
        if changed:
            self._rebuild_chain()

    def _rebuild_chain(self) -> None:
        """New rotation (found at rest): the chain's filters step to the new projection of
        gravity; their outputs settle for half a second, held as rest, then the bias
        tracker restarts on the new level."""
        self._chain.set_rotation(self.orient.rotation)
        self._tracker = None
        self._held = []
        t = self._t_next_in if self._t_next_in is not None else 0.0
        self._settle_until = t + 0.5 + self._delay

    def _prune(self) -> None:
        """Keep the history a trip or a move needs (at most RING_S), else a short pre-roll."""
        now = self.t_last or 0.0
        keep_from = now - PREROLL_S
        if self._trip_t0 is not None:
            keep_from = min(keep_from, self._trip_t0 - PREROLL_S)
        if not self.at_rest and self._seg_t0 is not None:
            keep_from = min(keep_from, self._seg_t0 - PREROLL_S)
        keep_from = max(keep_from, now - RING_S)
        while self._ring and self._ring[0].t_end < keep_from:
            self._ring.popleft()

    # ------------------------------------------------------------------ position fixes
    def _at(self, t: float) -> tuple[float, float] | None:
        """(speed, position) at time ``t`` from the history (None outside it)."""
        dt = 1 / self.fs_out
        for c in reversed(self._ring):
            if c.t_first <= t <= c.t_end + dt:
                return (float(np.interp(t, c.t, c.v)), float(np.interp(t, c.t, c.p)))
        return None

    def _shift(self, t: float, dp: float, dv: float) -> None:
        """Correct position by ``dp`` and speed by ``dv`` from time ``t`` on (retroactively)."""
        for c in reversed(self._ring):
            if c.t[-1] < t:
                break
            sel = c.t >= t
            c.p[sel] += dp + dv * (c.t[sel] - t)
            if not c.rest:
                c.v[sel] += dv
        if self.t_last is not None and self.t_last >= t:
            self.position_m += dp + dv * (self.t_last - t)
            if not self.at_rest:
                self.speed += dv
        else:
            self.position_m += dp
            if not self.at_rest:
                self.speed += dv
        self._iv.acc += round(dv / MS2 * self.fs_out)
        self._ip.acc = round(self.position_m / self._p_lsb * (1 << P_SHIFT))

    def _geom(self, sensor: str, bound: int) -> tuple[float, bool]:
        """Offset of a sensor's lower (0) or upper (1) edge, and whether it is learned."""
        obs = self._learned[(sensor, bound)]
        if len(obs) >= 3:
            med = self._median.get((sensor, bound))
            if med is None:      # worked out again only after a new observation
                med = self._median[(sensor, bound)] = float(np.median(obs))
            return med, True
        return self._geom_default[sensor][bound], False

    def edges_state(self) -> dict[str, list[float]]:
        """The learned zone-edge offsets (m), kept across restarts with the baselines: a
        restarted agent that learned them again would take a drifted stop for the sill."""
        return {f"{s}:{b}": [round(x, 5) for x in obs]
                for (s, b), obs in self._learned.items() if obs}

    def restore_edges(self, state: Any) -> None:
        """Take offsets saved by :meth:`edges_state`; an entry that is not a list of
        plausible offsets (within the 1 m a departure learns from) is learned again."""
        for (s, b), obs in self._learned.items():
            vals = state.get(f"{s}:{b}") if isinstance(state, dict) else None
            if isinstance(vals, list) and vals and all(
                    isinstance(x, int | float) and not isinstance(x, bool)
                    and math.isfinite(x) and abs(x) < 1.0 for x in vals):
                obs.clear()
                obs.extend(float(x) for x in vals[:LEARN_N])
                self._median.pop((s, b), None)

    def _apply_edges(self) -> None:
        if not self._edges or self.t_last is None:
            return
        due = [e for e in self._edges if e[0] <= self.t_last]
        if not due:
            return
        self._edges = [e for e in self._edges if e[0] > self.t_last]
        for t, name, lvl in sorted(due):
            self._edge(t, name, lvl)

    def _edge(self, t: float, name: str, lvl: int) -> None:
        was_level = all(self._zs.get(k) == 1 for k in SENSORS if k in self._zs)
        self._zs[name] = lvl
        is_level = all(self._zs.get(k) == 1 for k in SENSORS if k in self._zs)
        got = self._at(t)
        if got is None:
            return
        v, p = got
        if self.at_rest or abs(v) < 0.02:
            self._quiet_s = 0.0          # a vane edge means the car moves: no rest now
            return
        up = v > 0
        if was_level and not is_level:
            self._leave_dir = 1 if up else -1
        elif is_level and not was_level:
            # Entering a landing's level zone: the next landing if we left the last one
            # the same way, the same landing again if the car turned back.
            step = 1 if up else -1
            if self._leave_dir == step:
                self._passes += step
            self._leave_dir = 0
        bound = 0 if (lvl == 1) == up else 1          # 0: lower edge, 1: upper edge
        if (lvl == 0 and self._depart_p is not None and self._fixes_this_trip == 0
                and self.position_known and abs(p - self._depart_p) < 1.0):
            # Leaving the landing we stood level at: learn where this edge lies, from the
            # first LEARN_N departures only. The departure starts from the sill the stop
            # was anchored to, not from where the car really stood, so a window that kept
            # learning would absorb a slow drift of every stop (rope stretch, brake wear)
            # and the leveling error would read zero while the car drifts off the sill.
            j = int(np.argmin(np.abs(self.heights - self._depart_p)))
            obs = self._learned[(name, bound)]
            if len(obs) < LEARN_N:
                obs.append(p - self.heights[j])
                self._median.pop((name, bound), None)
            return
        if not self.position_known:
            return
        off, learned = self._geom(name, bound)
        j = int(np.argmin(np.abs(self.heights - (p - off))))
        err = p - (self.heights[j] + off)
        if abs(err) > self._fix_window():
            self.fix_rejects += 1
            return
        dv = 0.0
        if learned and self._last_fix_t is not None and t - self._last_fix_t >= 1.0:
            dv = -0.5 * err / (t - self._last_fix_t)
        self._shift(t, -err, dv)
        self._last_fix_t = t
        self._fix_edge = ((name, bound), v)
        self._fixes_this_trip += 1
        self._learned_fix = learned

    def _fix_window(self) -> float:
        gaps = np.diff(self.heights)
        return 0.4 * float(gaps.min()) if gaps.size else 1.0

    # ------------------------------------------------------------------ stops and floors
    def _level(self) -> bool:
        return bool(self._zone) and all(self._zone.get(s) == 1 for s in SENSORS
                                        if s in self._zone)

    def _on_stop(self, t: float) -> None:
        """The car came to rest: book the move; at a level stop, name the landing."""
        seg = self._segment_distance(self._seg_t0)
        self._moved += seg
        if self._seg_t0 is not None and self._depart_p is not None and not self._fixes_this_trip:
            # No vane fixed the position on the way: the drift-corrected move is better
            # than the live integral.
            self.position_m = self._depart_p + seg
            self._ip.acc = round(self.position_m / self._p_lsb * (1 << P_SHIFT))
        if not self._level() or self.heights.size == 0:
            self._stop_err_mm = None
            return
        moved_raw, passes = self._moved, self._passes
        self._moved, self._passes, self._leave_dir = 0.0, 0, 0
        n = self.heights.size
        h = self.heights
        moved = moved_raw * self.distance_gain
        tol = 0.15 + (0.008 if self._gain_known() else 0.025) * abs(moved)
        p = self.position_m
        if self.position_known and self._cands is not None and len(self._cands) == 1:
            i = next(iter(self._cands))
            j = i + passes
            fixed = self._fixes_this_trip > 0 and 0 <= j < n \
                and abs(p - h[j]) <= self._fix_window()
            if 0 <= j < n and (fixed or abs(h[j] - h[i] - moved) <= tol):
                if abs(h[j] - h[i]) >= GAIN_MIN_M and moved_raw * (h[j] - h[i]) > 0:
                    self._gain_obs.append(float((h[j] - h[i]) / moved_raw))
                self._stop_err_mm = ((p - h[j]) * 1000.0 if fixed and self._learned_fix
                                     else None)
                self._stop_unc_mm = self._stop_uncertainty(t) if self._stop_err_mm is not None \
                    else None
                self._anchor(j)
                return
            self.floor_resets += 1                 # the count and the distance disagree
            self._cands = None
        # Unknown: landings counted through and distance travelled must both fit, for
        # some landing the car may have left. Loose tolerance: never drop the truth.
        cands = set(range(n)) if self._cands is None else self._cands
        new = {i + passes for i in cands if 0 <= i + passes < n
               and abs(h[i + passes] - h[i] - moved) <= 2 * tol}
        if self._cands is None or not new:
            self._moves = []                   # evidence starts at this level stop
        else:
            self._moves.append((passes, moved_raw))
            del self._moves[:-MOVES_N]
        self._cands = new or None
        self._stop_err_mm = None
        best = self._best_fit(new) if len(new) > 1 else None
        if len(new) == 1:
            self._anchor(next(iter(new)))
        elif best is not None:
            self._anchor(best)
        else:
            self.position_known = False
            self.floor_index = None

    def _best_fit(self, cands: set[int]) -> int | None:
        """The landing the car is at if one hypothesis explains the moves clearly best.

        Each candidate fixes the landings of every move since the evidence started
        (the counts are exact); fitting one sensitivity per hypothesis (0.95–1.05) takes a
        sensor's gain error out, so what is left separates the hypotheses: the building's
        irregular floor heights. One must fit within the noise and beat all others by
        25 (a 5-sigma margin in normalised squared error).
        """
        moves = [mv for mv in self._moves if mv[0] != 0]
        if len(moves) < 2:
            return None
        h = self.heights
        steps = np.array([mv[0] for mv in moves])
        meas = np.array([mv[1] for mv in moves])
        back = np.cumsum(steps[::-1])[::-1]        # landings from each move's start to now
        scores = []
        for j in cands:
            starts = j - back
            ends = starts + steps
            if starts.min() < 0 or ends.max() >= h.size:
                continue
            true = h[ends] - h[starts]
            k = float(np.clip(true @ meas / (meas @ meas), 0.95, 1.05))
            sigma = 0.05 + 0.003 * np.abs(true)
            scores.append((float(np.sum(((true - k * meas) / sigma) ** 2)), j))
        if len(scores) < 2:
            return scores[0][1] if scores else None
        scores.sort()
        (r0, j0), (r1, _j1) = scores[0], scores[1]
        if r0 <= 3.0 * len(moves) + 6.0 and r1 - r0 >= 25.0:
            return j0
        return None

    @property
    def distance_gain(self) -> float:
        """Learned correction of the sensor's sensitivity (landing distances / measured)."""
        if not self._gain_known():
            return 1.0
        return min(1.1, max(0.9, float(np.median(self._gain_obs))))

    def _gain_known(self) -> bool:
        return len(self._gain_obs) >= 5

    def _segment_distance(self, t_from: float | None) -> float:
        """Signed distance moved since ``t_from`` (the last rest's end), drift-corrected:
        re-integrated from the stored acceleration, speed forced to zero at the stop."""
        if t_from is None:
            return 0.0
        chunks = [c for c in self._ring if c.t[-1] >= t_from - CHUNK_S]
        moving = [c for c in chunks if not c.rest]
        if not moving:
            return 0.0
        res = np.concatenate([c.res for c in moving])
        v_w = self._iv_offline(res)
        return float(dsp.Integrator(P_SHIFT).process(v_w)[-1]) * self._p_lsb

    def _iv_offline(self, res: np.ndarray) -> np.ndarray:
        """Speed words of a move from rest to rest, its drift removed linearly in time."""
        v_w = dsp.Integrator(V_SHIFT).process(res)
        n = v_w.size
        end = int(v_w[-1])
        ramp = (np.arange(n, dtype=np.int64) + 1) * end
        return v_w - (2 * ramp + n) // (2 * n)

    def _anchor(self, j: int) -> None:
        """The car stands level at landing ``j``: position is that sill."""
        self.floor_index = j
        self.position_known = True
        self._cands = {j}
        self.position_m = float(self.heights[j])
        self._ip.acc = round(self.position_m / self._p_lsb * (1 << P_SHIFT))
        self.floor_fixes += 1

    def _stop_uncertainty(self, t: float) -> float | None:
        """Expanded uncertainty (mm) of the stop position just booked (leveling.py)."""
        if self._fix_edge is None or self._last_fix_t is None:
            return None
        edge, v = self._fix_edge
        t_a = self._last_fix_t - self._seg_t0 if self._seg_t0 is not None else 0.0
        return leveling.stop_uncertainty_mm(
            leveling.noise_density(self._rest_var * MS2 * MS2), t - self._last_fix_t, t_a,
            list(self._learned[edge]), v)

    def stop_position_uncertainty_mm(self) -> float | None:
        """Expanded uncertainty (mm, about 95 %) of :meth:`stop_position_error_mm`."""
        return self._stop_unc_mm if self._stop_err_mm is not None else None

    def stop_position_error_mm(self) -> float | None:
        """Leveling error at the last stop (car sill minus landing sill, mm), when the
        sensors gave a position estimate on the way in (a zone-edge fix); else None."""
        return self._stop_err_mm

    # ------------------------------------------------------------------ trips
    def begin_trip(self, t: float) -> None:
        """A trip starts at ``t`` (the pipeline's decision: run on, or speed)."""
        self._trip_t0 = float(t)

    def end_trip(self, t: float) -> dict | None:
        """ISO 18738-1 figures of the trip since :meth:`begin_trip` (None without data).

        The window runs from the last rest sample before the start to the first rest
        sample after ``t`` when already received (speed-based starts and stops lag the
        motion); the speed is re-integrated over it and its drift removed, linearly in
        time over the moving span, so that it ends at zero (the car has stopped).
        """
        self.flush()
        t0 = self._trip_t0
        self._trip_t0 = None
        if t0 is None or not self._ring:
            return None
        self._fill_w()
        chunks = list(self._ring)
        times = np.concatenate([c.t for c in chunks])
        rest = np.concatenate([np.full(c.t.size, c.rest) for c in chunks])
        i0 = int(np.searchsorted(times, t0))
        i1 = int(np.searchsorted(times, t, side="right"))
        if i1 - i0 < 2:
            return None
        before = np.flatnonzero(rest[:i0])
        i0 = int(before[-1]) if before.size else i0
        after = np.flatnonzero(rest[i1:])
        i1 = i1 + int(after[0]) + 1 if after.size else i1
        res = np.concatenate([c.res for c in chunks])[i0:i1]
        wx, wy, wz = (np.concatenate([getattr(c, k) for c in chunks])[i0:i1]
                      for k in ("wx", "wy", "wz"))
        moving = np.flatnonzero(~rest[i0:i1])
        if moving.size == 0:
            return None
        res = res.copy()
        res[: moving[0]] = 0
        res[moving[-1] + 1:] = 0
        if self._gain_known():
            # The sensitivity learned from landing distances scales every figure.
            kq = round(self.distance_gain * (1 << 14))
            res, wx, wy, wz = (((x * kq) + (1 << 13)) >> 14 for x in (res, wx, wy, wz))
        v_w = dsp.Integrator(V_SHIFT).process(res)
        drift = np.zeros(v_w.size, dtype=np.int64)
        span = moving[-1] - moving[0] + 1
        ramp = (np.arange(span, dtype=np.int64) + 1) * int(v_w[moving[-1]])
        drift[moving[0]:moving[-1] + 1] = (2 * ramp + span) // (2 * span)
        drift[moving[-1] + 1:] = int(v_w[moving[-1]])
        v_w = v_w - drift
        vel = v_w * self._v_lsb
        dist = float(dsp.Integrator(P_SHIFT).process(v_w)[-1]) * self._p_lsb
        return trip_figures(self.fs_out, res, vel, wx, wy, wz, distance_m=abs(dist), scale=MS2)
