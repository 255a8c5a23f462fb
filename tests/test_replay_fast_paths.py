"""The replay speed-ups keep the behaviour: the cheap checks refuse what the full checks
refuse, batched and per-block paths give the same motion state, and the numpy DSP stays
bit-identical to the scalar kernels on long, varying blocks (issue 3/4 benchmark work)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from liftwatch.drivers.trace import TraceReader, parse_record
from liftwatch.signal import dsp
from liftwatch.signal import filter_design as fd
from liftwatch.signal import fixedpoint as fp
from liftwatch.signal.chain import RAW_LIMIT, ChainDesign, flat_rows
from liftwatch.signal.motion import MotionTracker
from liftwatch.signal.pipeline import Pipeline
from liftwatch.signal.settings import DetectionParams, LiftParams
from synth_motion import acc_blocks, trip_samples

pytestmark = pytest.mark.timeout(60)

LIFT = LiftParams(landings=["0", "1", "2", "3"], landing_heights_m=[0.0, 3.0, 6.0, 9.0],
                  rated_speed=1.6, door_zone_m=0.2)
FS = 400


def _state(m: MotionTracker) -> tuple:
    return (m.speed, m.position_m, m.at_rest, m.moving, m.floor_index, m.gravity_g,
            m.saturated, m.silent_since, m.t_last, m.blocks, m.gaps, m.rotation_matrix())


# ---------------------------------------------------------------- block checks


def test_flat_rows_takes_plain_int_rows_only() -> None:
    assert flat_rows([[1, -2, 3], [4, 5, -60]]) == ([1, -2, 3, 4, 5, -60], 60)
    for other in ([], [(1, 2, 3)], [[1, 2]], [[1, 2, 3, 4]], [[True, 1, 2]],
                  [[1.0, 2, 3]], [[np.int64(1), 2, 3]], np.zeros((2, 3), dtype=np.int64),
                  [[1, 2, 3], "abc"], "abc", None):
        assert flat_rows(other) is None      # left to check_block, which names the problem
    with pytest.raises(ValueError, match="beyond"):
        flat_rows([[0, 0, RAW_LIMIT + 1]])


@pytest.mark.parametrize("bad", [
    [], [[1, 2]], [[1, 2, 3], [4, 5]], [[1.5, 2, 3]], [["a", 2, 3]], [[0, 0, RAW_LIMIT + 1]],
    [[float("nan"), 0, 0]], [[0, 0, -RAW_LIMIT - 1]], "xyz", [[[1], 2, 3]],
])
def test_malformed_block_raises_and_leaves_state(bad: object) -> None:
    m = MotionTracker(LIFT, FS, 256)
    good = [[0, 0, 256]] * 32
    m.on_acc(0.0, good)
    before = (_state(m), m._waiting_n, len(m._blocks_in), m._t_next_in)
    with pytest.raises(ValueError):
        m.on_acc(0.08, bad)  # type: ignore[arg-type]
    assert (_state(m), m._waiting_n, len(m._blocks_in), m._t_next_in) == before
    m.on_acc(0.08, good)                     # and the next good block is taken
    assert m.blocks == 2


def test_list_and_array_blocks_give_the_same_motion() -> None:
    """The flat-list fast path and the numpy path (arrays, tuples) end in the same state
    after every block, through a whole trip."""
    _t, _p, _v, _a, counts = trip_samples(6.0, fs=FS, pre_s=3.0, post_s=3.0, seed=4)
    paths = [lambda b: b, lambda b: np.asarray(b, dtype=np.int64),
             lambda b: [tuple(r) for r in b]]
    ms = [MotionTracker(LIFT, FS, 256) for _ in paths]
    for t0, block in acc_blocks(0.0, counts, FS, block=32):
        for m, conv in zip(ms, paths, strict=True):
            m.on_acc(t0, conv(block))
        assert _state(ms[0]) == _state(ms[1]) == _state(ms[2])
    for m in ms:
        m.flush()
    assert _state(ms[0]) == _state(ms[1]) == _state(ms[2])
    assert ms[0].at_rest and ms[0].t_last is not None and ms[0].t_last > 10.0


def test_repeated_fifo_read_is_trimmed_on_the_list_path() -> None:
    m = MotionTracker(LIFT, FS, 256)
    m.on_acc(0.0, [[0, 0, 256]] * 32)
    # The next read repeats the last 8 samples; the repeated part holds a full-scale
    # spike, the new part does not: the spike is dropped with the overlap.
    again = [[0, 0, 511]] * 8 + [[0, 0, 256]] * 24
    m.on_acc(24 / FS, again)
    assert m._n_in == 32 + 24
    assert m.saturated is False
    m.on_acc(56 / FS, [[0, 0, 256]] * 31 + [[0, 0, -511]])
    assert m.saturated is True
    m.on_acc(88 / FS, [[0, 0, 256]] * 32)
    assert m.saturated is False


# ---------------------------------------------------------------- trace lines


@pytest.mark.parametrize(("obj", "message"), [
    ({"t": float("nan"), "acc": [[1, 2, 3]]}, "non-negative number"),
    ({"t": -1.0, "acc": [[1, 2, 3]]}, "non-negative number"),
    ({"t": True, "acc": [[1, 2, 3]]}, "non-negative number"),
    ({"t": 0.5, "acc": [[1, 2, 3]]}, "goes backwards"),
    ({"t": 2.0, "acc": [[True, 2, 3]]}, "three integers"),
    ({"t": 2.0, "acc": [[1.0, 2, 3]]}, "three integers"),
    ({"t": 2.0, "acc": [[1, 2]]}, "three integers"),
    ({"t": 2.0, "acc": []}, "non-empty"),
    ({"t": 2.0, "bogus": 1}, "exactly one"),
    ({"t": 2.0, "acc": [[1, 2, 3]], "di": {"run": 1}}, "exactly one"),
    ({"t": 2.0, "ctl": {"speed": float("inf")}}, "ctl speed"),
    ({"t": 2.0, "ctl": {"run": True}}, "ctl run"),
    ({"t": 2.0, "ctl": {"door": "open"}}, "ctl door"),
    ({"t": 2.0, "di": {"run": 2}}, "0 or 1"),
])
def test_parse_record_refuses_what_the_format_forbids(obj: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_record(obj, 1.0)
    with pytest.raises(ValueError, match=message):      # the reader's path, with the text
        parse_record(obj, 1.0, json.dumps(obj))


@pytest.mark.parametrize("block", [
    [[1, 2, 3]], [[0, 0, 32767], [-32768, 5, 6]], [[0, 0, RAW_LIMIT]], [[0, 0, 10 ** 6]],
    [[1, 2, 3], [4, 5, 6.0]], [[None, 2, 3]], [["1", 2, 3]], [[[1], 2, 3]],
])
def test_reader_text_path_checks_acc_blocks_as_the_full_check(block: list) -> None:
    """With the line at hand (no true/false in it, array('h') proves ints of 16 bits) a
    block is taken or refused exactly as without, with the same flat counts."""
    obj = {"t": 2.0, "acc": block}
    try:
        want = parse_record(obj, 1.0)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc).replace("[", r"\[")):
            parse_record(obj, 1.0, json.dumps(obj))
        return
    got = parse_record(obj, 1.0, json.dumps(obj))
    assert got == want and got.data.flat == want.data.flat

    def chain_check(data: list) -> object:
        try:
            return flat_rows(data)
        except ValueError as exc:            # beyond RAW_LIMIT: the chain refuses it
            return str(exc)

    assert chain_check(got.data) == chain_check(want.data)


def test_parse_record_accepts_the_common_and_the_unusual_lines() -> None:
    assert parse_record({"t": 1, "acc": [[1, 2, 3]]}, 0.0) == (1.0, "acc", [[1, 2, 3]])
    rec = parse_record({"t": 1.5, "ctl": {"floor": 3, "speed": 0.5, "x": "free"}}, 1.5)
    assert rec.data == {"floor": "3", "speed": 0.5, "x": "free"}
    rec = parse_record({"t": 2.0, "note": "kept", "pwr": {"src": 1, "batt": 80}}, 0.0)
    assert rec.kind == "pwr"


def test_reader_reports_bad_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    lines = ['{"trace": 1}', '{"t": 0.1, "acc": [[1, 2, 3]]}', "", "   ",
             '{"t": 0.2, "acc": [[1, 2, 3]]} trailing', '{"t": 0.3, "acc": [[1, 2, false]]}',
             '  {"t": 0.4, "di": {"run": 1}}  ', "{not json", '{"t": 0.5, "pwr": {"src": 0}}']
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    r = TraceReader(path, on_error=lambda e: None)
    recs = list(r)
    assert [x.t for x in recs] == [0.1, 0.4, 0.5]
    assert [e.line for e in r.errors] == [5, 6, 8]
    assert "Extra data" in r.errors[0].reason and "three integers" in r.errors[1].reason


# ---------------------------------------------------------------- DSP bit identity


def test_per_channel_bank_equals_scalar_on_long_varying_blocks() -> None:
    """Blocks longer than M (several recursive steps) and more than 16 distinct lengths
    (the tiled-coefficient cache is rebuilt) still give the scalar kernels' integers."""
    d = ChainDesign(400, 200, 256.0)
    specs = [d.lp, d.wk, d.wd, d.wd]
    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(1, 1100, size=40)]
    x = rng.integers(-(1 << 27), 1 << 27, size=(sum(lengths), 4))
    x[sum(lengths) // 2:] *= 4                 # up to the saturation range of the format
    bank = dsp.LookaheadCascade(specs, per_channel=True)
    bank.reset([5, 6, 7, 8])
    out, pos = [], 0
    for n in lengths:
        out.append(bank.process(x[pos:pos + n]))
        pos += n
    y = np.concatenate(out)
    for c, sp in enumerate(specs):
        k = fp.LookaheadCascade(sp)
        k.reset(c + 5)
        assert k.process(x[:, c].tolist()) == y[:, c].tolist()


@pytest.mark.parametrize("channels", [None, 3])
def test_decimator_window_equals_scalar(channels: int | None) -> None:
    words, frac = fd.quantize_taps(fd.decimator_taps(400, 200), 0.7)
    rng = np.random.default_rng(3)
    lengths = [int(n) for n in rng.integers(1, 900, size=25)]
    shape = (sum(lengths),) if channels is None else (sum(lengths), channels)
    x = rng.integers(fp.SIG_MIN, fp.SIG_MAX, size=shape)
    b = dsp.FirDecimator(words, frac, 2, channels=channels)
    out, pos = [], 0
    for n in lengths:
        out.append(b.process(x[pos:pos + n]))
        pos += n
    y = np.concatenate(out)
    cols = [x] if channels is None else [x[:, c] for c in range(channels)]
    for c, col in enumerate(cols):
        a = fp.FirDecimator(words, frac, 2)
        ref = a.process(col.tolist())
        assert ref == (y if channels is None else y[:, c]).tolist()


# ---------------------------------------------------------------- pipeline


def test_pipeline_drops_bad_controller_fields_and_keeps_the_rest() -> None:
    p = Pipeline(LIFT, DetectionParams(), accel_fs=None, lsb_per_g=None,
                 controller_present=True)
    p.feed(0.0, "ctl", {"mode": 1, "run": 0, "floor": 2, "speed": float("nan"),
                        "door": True, "zone": 1.0})
    assert p.rejected == 2
    assert p.state.ctl is not None
    assert p.state.ctl.get("floor") == "2" and p.state.ctl.get("zone") == 1.0
    assert "speed" not in p.state.ctl and "door" not in p.state.ctl
    assert json.dumps(p.status())             # still a complete status


# ---------------------------------------------------------------- one check, deferred Wk/Wd


def test_a_block_the_reader_checked_is_not_walked_again_and_still_range_checked() -> None:
    rec = parse_record({"t": 1.0, "acc": [[1, -2, 300], [4, 5, -60]]}, 0.0)
    assert rec.data == [[1, -2, 300], [4, 5, -60]]           # still the block, as parsed
    flat, peak = flat_rows(rec.data)
    assert flat is rec.data.flat and peak is None             # the reader's work, taken as is
    edge = parse_record({"t": 1.0, "acc": [[0, 0, RAW_LIMIT]]}, 0.0)
    assert flat_rows(edge.data) == ([0, 0, RAW_LIMIT], RAW_LIMIT)    # past 16 bits: exact
    bad = parse_record({"t": 1.0, "acc": [[0, 0, RAW_LIMIT + 1]]}, 0.0)
    with pytest.raises(ValueError, match="beyond"):
        flat_rows(bad.data)                                   # the range is the chain's check
    m = MotionTracker(LIFT, FS, 256)                          # saturation from the lazy peak
    m.on_acc(0.0, parse_record({"t": 0.0, "acc": [[0, 0, 256]] * 32}, 0.0).data)
    assert m.saturated is False
    m.on_acc(32 / FS, parse_record({"t": 0.1, "acc": [[0, 0, 256]] * 31 + [[0, 0, -511]]},
                                   0.0).data)
    assert m.saturated is True
    p = Pipeline(LIFT, DetectionParams(), accel_fs=FS, lsb_per_g=256, controller_present=False)
    p.feed(0.0, "acc", bad.data)
    assert p.rejected == 1 and "beyond" in p.last_rejection   # refused once, saying why


def test_reader_blocks_plain_lists_and_tuple_rows_replay_the_same(tmp_path: Path) -> None:
    """The whole replay output (events, trips with their vibration figures, doors) is the
    same whether acc blocks come checked by the reader, as plain lists (the chain checks
    them) or as rows of tuples (the numpy check): the single check changes nothing."""
    trace = Path(__file__).resolve().parents[1] / "hil_tests" / "traces" \
        / "entrapment_between_floors.jsonl.gz"
    from liftwatch.agent.replay import build_pipeline

    def run(conv) -> list[str]:
        r = TraceReader(trace)
        p = build_pipeline(r.header, None)
        out: list[dict] = []
        t = 0.0
        for rec in r:
            data = conv(rec.data) if rec.kind == "acc" else rec.data
            out += p.advance(rec.t)
            out += p.feed(rec.t, rec.kind, data)
            t = rec.t
        out += p.finish(t)
        return [json.dumps(o, sort_keys=True) for o in out]

    checked = run(lambda d: d)
    assert any('"type": "trip"' in line and '"vib_pp_max"' in line for line in checked)
    assert run(lambda d: [list(row) for row in d]) == checked
    assert run(lambda d: [tuple(row) for row in d]) == checked


def test_deferred_weighting_gives_the_four_channel_chains_integers() -> None:
    """defer_w: a_z at once, Wk/Wd later in one long run: the same integers as the chain
    that runs all four channels per call, across a rotation change and odd block lengths."""
    from liftwatch.signal.chain import AccelChain

    rng = np.random.default_rng(15)
    now = AccelChain(400, 256.0)
    later = AccelChain(400, 256.0, defer_w=True)
    az_now, az_later, w_now, w_later = [], [], [], []
    for i, n in enumerate(int(v) for v in rng.integers(1, 1300, size=30)):
        block = rng.integers(-700, 700, size=(n, 3)) + [0, 0, 256]
        if i == 12:
            rot = [[1.0, 0.0, 0.0], [0.0, 0.8, -0.6], [0.0, 0.6, 0.8]]
            now.set_rotation(rot)
            later.set_rotation(rot)
        a, b = now.process(block), later.process(block)
        assert b.first == a.first and len(b.w_z) == 0
        az_now.append(a.a_z)
        az_later.append(b.a_z)
        w_now.append(np.stack([a.w_z, a.w_x, a.w_y], axis=1))
        if i % 7 == 3:                     # taken now and then, as the tracker does
            w_later.append(later.take_weighted())
    w_later.append(later.take_weighted())
    assert np.array_equal(np.concatenate(az_now), np.concatenate(az_later))
    assert np.array_equal(np.concatenate(w_now), np.concatenate(w_later))
    assert later.take_weighted().shape == (0, 3)


def test_raw_window_sums_equal_the_sum_over_every_block() -> None:
    """The window sums (nearby blocks only, axis-major prefix sums) equal the plain sum
    over every held block, with repeated FIFO reads and a gap among the blocks."""
    _t, _p, _v, _a, counts = trip_samples(4.0, fs=FS, pre_s=2.0, post_s=2.0, seed=9)
    m = MotionTracker(LIFT, FS, 256)
    t0 = 0.0
    for i, (t_blk, block) in enumerate(acc_blocks(0.0, counts, FS, block=37)):
        if i == 20:
            t0 += 0.3                                          # a gap
        m.on_acc(t_blk + t0, block)
        if i % 9 == 4:
            m.on_acc(t_blk + t0 + 5 / FS, block[5:])           # a repeated read
    starts, t0s, ns = m._blk
    store = m._raw_store
    lo = np.linspace(float(t0s[0]) - 0.2, float(t0s[-1]) + 0.1, 41)
    hi = lo + 0.095
    sums, counts_n = m._raw_window_sums(lo, hi)
    for c in range(lo.size):
        want, got_n = np.zeros(3, dtype=np.int64), 0
        for s, b0, n in zip(starts.tolist(), t0s.tolist(), ns.tolist(), strict=True):
            i0 = max(int(np.ceil((lo[c] - b0) * FS)), 0)
            i1 = min(int(np.floor((hi[c] - b0) * FS)) + 1, n)
            if i1 > i0:
                rows = store[s - m._raw_base + i0:s - m._raw_base + i1]
                want += rows.sum(axis=0)
                got_n += i1 - i0
        assert sums[c].tolist() == want.tolist() and counts_n[c] == got_n
