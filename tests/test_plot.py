"""``liftwatch plot``: a trip of the normal_day example trace drawn to a PNG."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from liftwatch.agent.cli import main
from liftwatch.agent.tools import plot
from liftwatch.drivers.trace import TraceHeader, TraceReader, TraceWriter
from make_traces import truth

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
NORMAL_DAY = REPO / "hil_tests" / "traces" / "normal_day.jsonl.gz"
#: What the simulator did in normal_day: its first trip is the one drawn.
FIRST, SECOND = truth("normal_day")["trips"][:2]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def first_minute(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """normal_day up to half-way between its first and second trip (one whole trip, under
    a minute), so the tests stay fast."""
    out = tmp_path_factory.mktemp("plot") / "minute.jsonl.gz"
    cut = (FIRST["t_stop"] + SECOND["t_run"]) / 2
    with TraceReader(NORMAL_DAY) as reader, TraceWriter(out, reader.header) as writer:
        for rec in reader:
            if rec.t > cut:
                break
            writer.write_record(rec)
    return out


class Result:
    def __init__(self, returncode: int, out: str, err: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``liftwatch plot ARGS`` in this process (the CLI entry point, argparse included)."""
    def call(*args: str) -> Result:
        try:
            code = main(["plot", *args])
        except SystemExit as exc:  # argparse refusing an argument
            code = int(exc.code or 0)
        got = capsys.readouterr()
        return Result(code, got.out, got.err)
    return call


def test_png_of_a_trip_has_the_asked_size_and_is_drawn(first_minute: Path, tmp_path: Path,
                                                       cli) -> None:
    import matplotlib.image as mpimg

    out = tmp_path / "trip1.png"
    r = cli(str(first_minute), "--trip", "1", "--out", str(out), "--size", "1200x900")
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 20_000
    assert png_size(out) == (1200, 900)
    img = mpimg.imread(out)
    assert img.shape[:2] == (900, 1200)
    ink = (img[..., :3].mean(axis=2) < 0.5).mean()  # share of dark pixels: curves, text
    assert 0.005 < ink < 0.5
    assert f"trip 1 ({FIRST['from']} -> {FIRST['to']}" in r.stdout


def test_a_jpg_name_gives_a_jpeg_and_another_extension_is_refused(first_minute: Path,
                                                                   tmp_path: Path, cli) -> None:
    from PIL import Image

    out = tmp_path / "trip1.jpg"
    r = cli(str(first_minute), "--trip", "1", "--out", str(out), "--size", "400x300")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG's SOI marker, not a PNG
    with Image.open(out) as img:
        assert (img.format, img.size) == ("JPEG", (400, 300))
    for name in ("trip1.gif", "trip1"):
        r = cli(str(first_minute), "--trip", "1", "--out", str(tmp_path / name))
        assert r.returncode == 2 and not (tmp_path / name).exists()
        assert "the extension must be .png, .jpg, .jpeg (PNG or JPEG)" in r.stderr


def test_curves_agree_with_the_pipelines_iso_figures(first_minute: Path) -> None:
    trip, records, accel = plot.find_trip(first_minute, 1)
    s = plot.trip_series(trip, records, accel, None, 1)
    with TraceReader(first_minute) as r:
        h = dict(zip(r.header.lift["landings"], r.header.lift["landing_heights_m"], strict=True))
    down = h[FIRST["to"]] < h[FIRST["from"]]
    assert down  # the script's first trip, 7 -> B1: the sign convention is checked
    assert trip["dir"] == "down" and s.speed.min() < 0  # up positive: this trip goes down
    assert np.abs(s.speed).max() == pytest.approx(trip["v_max"], rel=0.03)
    assert s.acc.max() == pytest.approx(trip["a_max"], rel=0.15)
    assert -s.acc.min() == pytest.approx(trip["d_max"], rel=0.15)
    duration = trip["t_end"] - trip["t_start"]
    assert s.t[0] < 0 < duration < s.t[-1]  # rest on both sides of the trip is drawn
    at_rest_after = s.t > duration + 0.5
    assert np.abs(s.speed[at_rest_after]).max() < 0.05  # integration drift removed
    assert len(s.t_wz) and len(s.w_x) == len(s.w_y) == len(s.t_wxy)


def test_a_trip_the_trace_does_not_have_is_a_clear_error(first_minute: Path, tmp_path: Path,
                                                         cli) -> None:
    out = tmp_path / "none.png"
    r = cli(str(first_minute), "--trip", "2", "--out", str(out))
    assert r.returncode == 1 and not out.exists()
    assert "trip 2 asked for, the trace has 1" in r.stderr
    r = cli(str(first_minute), "--trip", "0", "--out", str(out))
    assert r.returncode == 1 and "--trip counts from 1" in r.stderr
    r = cli(str(first_minute), "--trip", "1", "--out", str(out), "--size", "big")
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr
    r = cli(str(tmp_path / "missing.jsonl"), "--trip", "1", "--out", str(out))
    assert r.returncode == 1 and "No such file" in r.stderr


def test_trace_without_accelerometer_is_refused(tmp_path: Path, cli) -> None:
    trace = tmp_path / "noacc.jsonl"
    header = TraceHeader(start="2026-01-01T00:00:00Z",
                         lift={"id": "x", "landings": ["1", "2"],
                               "landing_heights_m": [0.0, 3.0]})
    with TraceWriter(trace, header) as w:
        w.write(0.0, "di", {"door_closed": 1})
    r = cli(str(trace), "--trip", "1", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 1 and "has no accelerometer" in r.stderr


def test_without_matplotlib_it_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from liftwatch.agent.cli import main\n"
            f"sys.exit(main(['plot', 'x.jsonl', '--trip', '1', '--out', "
            f"{str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 2
    assert "pip install 'liftwatch[plot]'" in r.stderr
