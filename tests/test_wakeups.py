"""What keeps the live agent's wake-ups few: the shared grid, edge waits, thread names.

On a Pi-class core every wake-up costs more than the work it does (bench_footprint.py
prints wake-ups per thread); these tests hold the mechanisms that keep them few.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from liftwatch.agent import uplink as uplink_mod
from liftwatch.agent.messages import dumps, lane_of, topic
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.timebase import sleep_on_grid
from liftwatch.buffer.alarms import AlarmLedger
from liftwatch.buffer.outbox import Outbox
from liftwatch.drivers.pins import SimulatedPins
from liftwatch.drivers.simfeed import SimFeed, SimFeedReceiver
from liftwatch.drivers.threadname import name_native_thread
from uplink_helpers import Observer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hil_tests"))
from rig import merged_acc  # noqa: E402

pytestmark = pytest.mark.timeout(30)

needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(),
                                reason="no /proc on this system: wake-ups are counted there")


def sleeps(th: threading.Thread | None) -> int:
    """A thread's voluntary context switches so far: each is a sleep that a wake-up ends."""
    assert th is not None and th.native_id is not None
    status = Path(f"/proc/self/task/{th.native_id}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("voluntary_ctxt_switches"))


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


@needs_proc
def test_an_idle_simulation_feed_sleeps_until_a_datagram_or_the_stop(tmp_path: Path) -> None:
    pins = SimulatedPins({"D17": 0})
    pins.setup_input("D17", "none")
    rx = SimFeedReceiver(tmp_path, pins=pins)
    rx.start()
    try:
        time.sleep(0.2)
        before = sleeps(rx._thread)
        time.sleep(1.0)
        assert sleeps(rx._thread) - before <= 1  # polling with a 0.1 s timeout woke it 10x
        feed = SimFeed(tmp_path)
        feed.set_pins({"D17": 1})  # a datagram is still taken at once
        feed.close()
        deadline = time.monotonic() + 2.0
        while not pins.read("D17") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pins.read("D17") is True
    finally:
        t0 = time.monotonic()
        rx.stop()
    assert time.monotonic() - t0 < 0.5  # the stop wakes the blocked receive
    assert rx._thread is not None and not rx._thread.is_alive()
    assert rx.bad_messages == 0  # the stop's wake-up datagram is not taken as a message


class CountingOutbox(Outbox):
    """The real outbox, counting how often the uplink looks into it."""

    reads = 0

    def pending(self, limit: int, skip: Any = ()) -> list[Any]:
        self.reads += 1
        return super().pending(limit, skip)


@needs_proc
def test_an_idle_connected_uplink_neither_polls_the_outbox_nor_spins_its_network_thread(
        broker: Broker, tmp_path: Path) -> None:
    obs = Observer(broker.port)
    ob = CountingOutbox(tmp_path / "outbox", 1 << 20)
    s = UplinkSettings(broker="127.0.0.1", port=broker.port, tls=False)

    async def main() -> tuple[int, int, float]:
        u = uplink_mod.Uplink(s, "L1", ob)
        await u.start()
        assert await u.wait_connected(10)
        assert await u.flush(5)
        await asyncio.sleep(0.3)
        reads, net = ob.reads, sleeps(u._thread)
        await asyncio.sleep(2.0)
        reads, net = ob.reads - reads, sleeps(u._thread) - net
        # new items still go out at once: the runtime wakes the drain after storing
        ob.append(lane_of("event", {"sev": "alarm"}), topic("lift", "L1", "event"),
                  dumps({"code": "alarm_button", "sev": "alarm"}))
        t0 = time.monotonic()
        u.wake()
        while ob.stats()["lanes"]["alarm"]["depth"] and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        took = time.monotonic() - t0
        await u.stop(1.0)
        return reads, net, took

    reads, net, took = asyncio.run(asyncio.wait_for(main(), 25))
    ob.close()
    assert reads == 0          # the drain waits for a wake (backstop DRAIN_IDLE_S = 5 s)
    assert net <= 2 / uplink_mod.NET_LOOP_S + 2  # paho's select waits NET_LOOP_S at most
    assert took < 1.0
    assert obs.wait_for(lambda g: any(r.topic.endswith("/event") for r in g), 5)
