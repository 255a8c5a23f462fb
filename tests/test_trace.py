"""Trace reader and writer (trace-format.md): round trip, example traces, malformed lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from liftwatch.drivers.trace import Record, TraceError, TraceHeader, TraceReader, TraceWriter

HEADER = {"trace": 1, "start": "2026-11-23T08:00:00Z",
          "lift": {"id": "L1", "landings": ["1", "2"], "landing_heights_m": [0.0, 3.0],
                   "rated_speed": 1.0, "door_zone_m": 0.2},
          "accel": {"fs": 400, "lsb_per_g": 256, "axes": "xyz"}}


def write_lines(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    records = [Record(0.0, "di", {"door_closed": 1, "run": 0}),
               Record(0.0, "ctl", {"mode": 1, "run": 0, "floor": "1", "door": 2}),
               Record(0.0, "acc", [[1, -2, 256], [0, 0, 255]]),
               Record(0.5, "ctl", None),
               Record(1.25, "pwr", {"src": 1, "batt": 80})]
    header = TraceHeader(start="2026-11-23T08:00:00Z", lift=HEADER["lift"],
                         accel=HEADER["accel"], controller_present=True)
    with TraceWriter(tmp_path / name, header) as w:
        for r in records:
            w.write_record(r)
    reader = TraceReader(tmp_path / name)
    assert reader.header.lift == HEADER["lift"]
    assert reader.header.accel == HEADER["accel"]
    assert list(reader) == records
    assert reader.bad_lines == 0


def test_example_traces_read_without_errors(example_traces: Path) -> None:
    paths = sorted(example_traces.glob("*.jsonl.gz"))
    assert len(paths) == 3
    for path in paths:
        reader = TraceReader(path)
        kinds = {r.kind for r in reader}
        assert reader.bad_lines == 0, path
        assert {"di", "acc", "pwr"} <= kinds
        if reader.header.controller_present:
            assert "ctl" in kinds
    only = TraceReader(example_traces / "sensor_only_entrapment_level.jsonl.gz")
    assert only.header.controller_present is False


BAD_LINES = [
    ("not json at all", "line 3"),
    ('{"t": 1.0}', "exactly one of"),
    ('{"t": 1.0, "di": {"run": 2}}', "0 or 1"),
    ('{"t": 1.0, "di": {"run": true}}', "0 or 1"),
    ('{"t": -1, "ctl": null}', "non-negative"),
    ('{"t": "x", "ctl": null}', "number"),
    ('{"t": 1.0, "acc": [[1, 2]]}', "three integers"),
    ('{"t": 1.0, "acc": [[1, 2, 3.5]]}', "three integers"),
    ('{"t": 1.0, "pwr": {"src": 3}}', "src"),
    ('{"t": 1.0, "ctl": {"speed": "fast"}}', "speed"),
    ('{"t": 1.0, "di": {"run": 1}, "ctl": null}', "exactly one of"),
    ('[1, 2, 3]', "object"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_malformed_line_reported_with_number_and_skipped(tmp_path: Path, bad: str,
                                                         reason: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps(HEADER), '{"t": 0.0, "di": {"run": 0}}', bad, '{"t": 2.0, "di": {"run": 1}}'])
    seen: list[TraceError] = []
    reader = TraceReader(path, on_error=seen.append)
    records = list(reader)
    assert [r.t for r in records] == [0.0, 2.0]
    assert reader.bad_lines == 1
    assert seen[0].line == 3
    assert reason in str(seen[0])


def test_time_going_backwards_is_a_bad_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps(HEADER), '{"t": 5.0, "di": {"run": 0}}', '{"t": 4.0, "di": {"run": 1}}',
        '{"t": 6.0, "di": {"run": 1}}'])
    reader = TraceReader(path, on_error=lambda e: None)
    assert [r.t for r in reader] == [5.0, 6.0]
    assert reader.errors[0].line == 3 and "backwards" in reader.errors[0].reason


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [
        json.dumps({**HEADER, "future": {"x": 1}}), '{"t": 0.0, "di": {"run": 0}, "note": "x"}'])
    reader = TraceReader(path)
    assert list(reader) == [Record(0.0, "di", {"run": 0})]
    assert reader.header.extra == {"future": {"x": 1}}


def test_bad_header_is_a_clear_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", ['{"trace": 2}', '{"t": 0.0, "di": {"run": 0}}'])
    with pytest.raises(TraceError, match="line 1"):
        TraceReader(path)


def test_truncated_gzip_ends_the_trace_and_is_reported(tmp_path: Path) -> None:
    lines = [json.dumps(HEADER)] + [f'{{"t": {i}.0, "di": {{"run": {i % 2}}}}}'
                                    for i in range(2000)]
    path = write_lines(tmp_path / "t.jsonl.gz", lines)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    reader = TraceReader(path, on_error=lambda e: None)
    records = list(reader)
    assert 0 < len(records) < 2000
    assert reader.bad_lines == 1 and "unreadable" in reader.errors[0].reason
