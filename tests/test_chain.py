"""AccelChain (numpy) and AccelChainScalar (pure kernels): identical outputs, >= 70 dB against
the float64 chain on synthetic signals and the example traces, saturation on full scale,
clear errors for bad input without losing state, timing bookkeeping and rotation changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dsp_reference import (
    G,
    first_trip_end,
    float_chain,
    lift_counts,
    ser_db,
    trace_counts,
    trip_accel,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from liftwatch.signal import fixedpoint as fp
from liftwatch.signal.chain import (
    AccelChain,
    AccelChainScalar,
    ChainOut,
    from_ms2,
    rotation_q14,
    to_ms2,
)

OUTS = ("a_z", "w_z", "w_x", "w_y")
TILT = 5.0


def car_from_sensor(tilt_deg: float) -> list[list[float]]:
    """The rotation undoing lift_counts' mounting tilt."""
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    return [[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]]


def run(chain: AccelChain | AccelChainScalar, counts: np.ndarray, cuts: list[int]
        ) -> dict[str, np.ndarray]:
    """Feed counts cut at ``cuts`` (any lengths), flush, and join the outputs."""
    pos = sorted({min(max(c, 0), len(counts)) for c in cuts} | {0, len(counts)})
    outs = [chain.process(counts[a:b]) for a, b in zip(pos[:-1], pos[1:], strict=True)]
    outs.append(chain.flush())
    firsts = [o.first for o in outs]
    assert firsts == sorted(firsts)
    joined = {k: np.concatenate([getattr(o, k) for o in outs]) for k in OUTS}
    assert len({len(v) for v in joined.values()}) == 1
    return joined


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for k in OUTS:
        assert a[k].dtype == np.int64 and b[k].dtype == np.int64
        assert np.array_equal(a[k], b[k]), k


# ---------------------------------------------------------------- two paths, one answer


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(0, 2400), max_size=6), st.lists(st.integers(0, 2400), max_size=3),
       st.sampled_from([0, 1, 37, 400]), st.sampled_from([200, 400, 800]))
@pytest.mark.timeout(120)
def test_numpy_and_scalar_chains_identical_for_any_blocking(
        cuts_a: list[int], cuts_b: list[int], min_block: int, fs: int) -> None:
    counts = lift_counts(6.0, fs=fs, seed=1, tilt_deg=TILT)
    rot = car_from_sensor(TILT)
    a = run(AccelChain(fs, 256.0, rot, min_block=min_block), counts, cuts_a)
    b = run(AccelChainScalar(fs, 256.0, rot, min_block=400), counts, cuts_b)
    assert_same(a, b)
    assert len(a["a_z"]) == len(counts) * 200 // fs


@pytest.mark.parametrize("name", ["normal_day", "entrapment_between_floors"])
@pytest.mark.timeout(120)
def test_identical_on_example_traces(name: str) -> None:
    """Simulated lift signals with ride vibration and sensor noise (the first trips of the
    example traces, where their ground truth places them)."""
    counts, fs, lsb = trace_counts(f"{name}.jsonl.gz", first_trip_end(name))
    counts = counts[-16 * fs:]  # the last 16 s: a trip and its run-up
    a = run(AccelChain(fs, lsb), counts, list(range(0, len(counts), 32)))
    b = run(AccelChainScalar(fs, lsb), counts, [len(counts) // 3])
    assert_same(a, b)
    assert np.ptp(to_ms2(a["a_z"])) > 0.5  # the excerpt really holds a trip


# ---------------------------------------------------------------- accuracy


def assert_70db(counts: np.ndarray, fs: int, lsb: float, rot: list[list[float]] | None
                ) -> dict[str, float]:
    got = run(AccelChain(fs, lsb, rot), counts, [len(counts) // 2])
    ref = float_chain(counts, fs, lsb, rot)
    sers = {k: ser_db(ref[k], to_ms2(got[k])) for k in OUTS}
    assert min(sers.values()) >= 70.0, sers
    return sers


@pytest.mark.parametrize("fs", [400, 800, 1600])
def test_chain_within_70db_of_float_on_a_tilted_synthetic_trip(fs: int) -> None:
    assert_70db(lift_counts(16.0, fs=fs, seed=2, tilt_deg=TILT), fs, 256.0,
                car_from_sensor(TILT))


@pytest.mark.parametrize("name", ["normal_day.jsonl.gz", "entrapment_between_floors.jsonl.gz",
                                  "sensor_only_entrapment_level.jsonl.gz"])
def test_chain_within_70db_of_float_on_example_traces(name: str) -> None:
    counts, fs, lsb = trace_counts(name, 60.0)
    assert_70db(counts, fs, lsb, None)


def test_rest_reads_gravity_and_no_vibration() -> None:
    chain = AccelChain(400, 256.0)
    out = chain.process(np.tile([[0, 0, 256]], (800, 1)))
    assert len(out) == 400
    assert np.abs(to_ms2(out.a_z) - G).max() < 1e-4
    for k in ("w_z", "w_x", "w_y"):
        assert np.abs(getattr(out, k)).max() <= 1


def test_vertical_acceleration_follows_the_trip() -> None:
    """1 m/s^2 plateaus of the synthetic trip appear in a_z minus gravity."""
    counts = lift_counts(12.0, seed=4)
    chain = AccelChain(400, 256.0)
    a = to_ms2(run(chain, counts, [])["a_z"]) - G
    prof = np.zeros(len(a))
    trip = trip_accel(9.9, 2.0, 1.0, 1.0, 200)
    lag = round(chain.delay_s["a_z"] * 200)
    prof[300 + lag:300 + lag + len(trip)] = trip[: len(a) - 300 - lag]
    for plateau in (prof > 0.999, prof < -0.999):  # vibration rides on the plateaus
        assert plateau.sum() > 100
        assert abs(np.median(a[plateau] - prof[plateau])) < 0.02
    assert np.abs(a[:200]).max() < 0.2  # at rest before the trip: gravity removed exactly


# ---------------------------------------------------------------- saturation


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    """+-32768 counts at 256 counts/g is +-128 g: beyond the +-32 g Q24 range."""
    sq = np.where((np.arange(4000) // 100) % 2 == 0, 32768, -32768)
    counts = np.stack([sq, -sq, sq], axis=1)
    for chain in (AccelChain(400, 256.0), AccelChainScalar(400, 256.0)):
        out = chain.process(counts)
        for k in OUTS:
            v = getattr(out, k)
            assert v.max() <= fp.SIG_MAX and v.min() >= fp.SIG_MIN
        assert out.a_z.max() == fp.SIG_MAX and out.a_z.min() < 0.99 * fp.SIG_MIN
        # no wrap: while the input is high (after the filters' delay) a_z is high
        hi = (np.arange(len(out)) * 2 - 60) % 200 < 60
        assert (out.a_z[hi][5:] > 0).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [
    [[0, 0, float("nan")]], [[0, 0.5, 256]], [[0, 0]], [[0, 0, 256, 1]], [["a", 0, 0]],
    [[0, 0, 40000]], np.array([[0, 0, 1 << 40]]), "abc", [[0, 0, float("inf")]], 5,
])
def test_bad_blocks_raise_and_keep_the_state(bad: object) -> None:
    counts = lift_counts(4.0, seed=5)
    good = AccelChain(400, 256.0, min_block=0)
    hit = AccelChain(400, 256.0, min_block=0)
    a1 = good.process(counts[:700])
    b1 = hit.process(counts[:700])
    with pytest.raises(ValueError, match="accelerometer"):
        hit.process(bad)
    a2 = good.process(counts[700:])
    b2 = hit.process(counts[700:])
    for k in OUTS:
        assert np.array_equal(getattr(a1, k), getattr(b1, k))
        assert np.array_equal(getattr(a2, k), getattr(b2, k))
    assert a2.first == b2.first


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"fs_in": 300}, "multiple"), ({"fs_in": 0}, "fs_in"), ({"fs_in": 400.0}, "fs_in"),
    ({"fs_out": 100}, "fs_out"), ({"lsb_per_g": 0.0}, "lsb_per_g"),
    ({"lsb_per_g": float("nan")}, "lsb_per_g"), ({"rotation": [[1, 0], [0, 1]]}, "rotation"),
    ({"rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]}, "rotation"),
    ({"rotation": [[float("nan")] * 3] * 3}, "rotation"), ({"min_block": -1}, "min_block"),
])
def test_bad_settings_raise_clearly(kwargs: dict, match: str) -> None:
    args = {"fs_in": 400, "lsb_per_g": 256.0} | kwargs
    with pytest.raises(ValueError, match=match):
        AccelChain(**args)


# ---------------------------------------------------------------- timing and rotation


def test_batching_and_output_indexing() -> None:
    unbatched = AccelChain(400, 256.0)  # default: every call returns what its block completes
    assert len(unbatched.process(np.tile([[0, 0, 256]], (33, 1)))) == 17
    assert unbatched.process(np.tile([[0, 0, 256]], (33, 1))).first == 17
    chain = AccelChain(400, 256.0, min_block=400)  # 1 s of input per numpy run
    counts = lift_counts(3.0, seed=6)
    out0 = chain.process(counts[:300])
    assert len(out0) == 0 and out0.first == 0
    out1 = chain.process(counts[300:500])
    assert out1.first == 0 and len(out1) == 250
    out2 = chain.process(counts[500:510])
    assert len(out2) == 0 and out2.first == 250
    out3 = chain.flush()
    assert out3.first == 250 and len(out3) == 5
    assert out3.t_offset == pytest.approx(1.25)
    assert np.allclose(out3.times(10.0), 10.0 + (250 + np.arange(5)) / 200.0)


def test_group_delay_of_a_z_is_as_reported() -> None:
    """A 0.5 Hz vertical sine comes out of a_z late by delay_s['a_z']."""
    fs = 400
    t = np.arange(20 * fs) / fs
    z = np.round(256 + 50 * np.sin(2 * np.pi * 0.5 * t)).astype(np.int64)
    counts = np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1)
    chain = AccelChain(fs, 256.0)
    a = to_ms2(run(chain, counts, [])["a_z"])[2000:]  # settled
    to = np.arange(2000, 2000 + len(a)) / 200.0
    # fit the phase of the output sine: delay = -phase / (2 pi f)
    c = np.cos(2 * np.pi * 0.5 * to)
    s = np.sin(2 * np.pi * 0.5 * to)
    coef = np.linalg.lstsq(np.stack([s, c, np.ones_like(s)], 1), a, rcond=None)[0]
    delay = -math.atan2(coef[1], coef[0]) / (2 * np.pi * 0.5)
    assert delay == pytest.approx(chain.delay_s["a_z"], abs=0.002)
    assert 0.05 < chain.delay_s["a_z"] < 0.2
    assert set(chain.delay_s) == set(OUTS)


def test_set_rotation_moves_gravity_to_the_car_z_axis() -> None:
    """A sensor lying on its side (gravity on its y axis): once the rotation says so, the
    chain's a_z reads 1 g; pending samples keep the old rotation."""
    counts = np.tile([[0, 256, 0]], (1200, 1))
    side = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    results = []
    for chain in (AccelChain(400, 256.0, min_block=400),
                  AccelChainScalar(400, 256.0, min_block=400)):
        first = chain.process(counts[:300])  # held back: less than min_block
        assert len(first) == 0
        chain.set_rotation(side)  # processes the 300 held samples with the old rotation
        rest = chain.process(counts[300:])  # their outputs come first, then the new ones
        tail = chain.flush()
        a_z = np.concatenate([rest.a_z, tail.a_z])
        assert len(a_z) == 600 and rest.first == 0
        assert abs(to_ms2(a_z[:150])).max() < 1e-3  # old rotation: nothing on z
        assert abs(to_ms2(a_z[-50:]) - G).max() < 1e-3  # new one: gravity on z
        results.append(a_z)
    assert np.array_equal(results[0], results[1])


def test_unit_conversions() -> None:
    assert from_ms2(G) == fp.G_ONE
    assert to_ms2(fp.G_ONE) == pytest.approx(G)
    assert ChainOut.to_ms2(np.asarray([fp.G_ONE // 2]))[0] == pytest.approx(G / 2)
    assert rotation_q14(None)[2] == [0, 0, fp.Q14_ONE]
