"""What keeps the live agent's wake-ups few: the shared grid, edge waits, thread names.

On a Pi-class core every wake-up costs more than the work it does (bench_footprint.py
prints wake-ups per thread); these tests hold the mechanisms that keep them few.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest
from liftwatch.agent.timebase import sleep_on_grid
from liftwatch.buffer.alarms import AlarmLedger
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.threadname import name_native_thread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hil_tests"))
from rig import merged_acc  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def test_sleepers_on_the_grid_wake_at_its_multiples_together() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        woke: list[float] = []

        async def sleeper(period: float) -> None:
            await sleep_on_grid(period)
            woke.append(loop.time())

        await asyncio.gather(sleeper(0.1), sleeper(0.1), sleeper(0.2))
        return woke

    woke = asyncio.run(main())
    assert len(woke) == 3
    for t in woke:  # each woke just after a grid point, not a full period after start
        assert (t % 0.1) < 0.03 or (t % 0.1) > 0.099
    assert abs(woke[0] - woke[1]) < 0.005  # the two 0.1 s sleepers shared one wake-up


def test_simulated_pins_wake_an_edge_wait_on_a_change_only() -> None:
    pins = SimulatedPins({"D17": 0})
    assert pins.wait_change(0.01) is False
    pins.set_level("D17", 0)  # no change: no wake-up
    assert pins.wait_change(0.01) is False
    got: list[bool] = []
    th = threading.Thread(target=lambda: got.append(pins.wait_change(5.0)))
    th.start()
    pins.set_level("D17", 1)
    th.join(2)
    assert got == [True]
    pins.interrupt()  # stopping: wakes a waiter without a change
    assert pins.wait_change(5.0) is True


def test_threads_carry_their_name_into_the_kernel() -> None:
    if not Path("/proc/self/task").exists():
        pytest.skip("no /proc on this system: thread names are Linux only")
    seen: list[str] = []

    def body() -> None:
        name_native_thread()
        tid = threading.get_native_id()
        seen.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())

    th = threading.Thread(target=body, name="live-accel-long-name")
    th.start()
    th.join(2)
    assert seen == ["live-accel-long"]  # the kernel keeps 15 bytes


def test_alarm_ledger_pending_counts_unacknowledged_alarms(tmp_path: Path) -> None:
    ledger = AlarmLedger(tmp_path / "alarms.json")
    assert ledger.pending == 0
    ledger.add("1-1", "t/event", b"{}", 1000.0)
    assert ledger.pending == 1
    ledger.ack("1-1")
    assert ledger.pending == 0


def test_rig_merges_accelerometer_blocks_and_keeps_the_other_records_in_order() -> None:
    recs = [(0.0, "acc", [[1, 0, 0]] * 32), (0.05, "di", {"a": 1}),
            (0.08, "acc", [[2, 0, 0]] * 32), (0.2, "ctl", {"run": 1}),
            (0.24, "acc", [[3, 0, 0]] * 32), (0.32, "acc", [[4, 0, 0]] * 32),
            (0.4, "di", {"a": 0})]
    out = list(merged_acc(iter(recs), ahead_s=0.25))
    assert [(t, k) for t, k, _ in out] == [(0.0, "acc"), (0.05, "di"), (0.2, "ctl"),
                                           (0.32, "acc"), (0.4, "di")]
    assert [s[0] for s in out[0][2]] == [1] * 32 + [2] * 32 + [3] * 32
    assert len(out[3][2]) == 32
