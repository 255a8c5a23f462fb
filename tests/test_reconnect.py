"""The fleet's reconnect law (agent/reconnect.py): the law on its own, then one and
several real uplinks against a real Mosquitto behind a relay that flaps, refuses as
busy or redirects (tests/mqtt_proxy.py)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from liftwatch.agent.config import load_config
from liftwatch.agent.reconnect import (
    BUSY,
    SERVER_MOVED,
    USE_ANOTHER_SERVER,
    Backoff,
    Brokers,
    Law,
    parse_address,
)
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.uplink import Uplink, UplinkError
from liftwatch.buffer.outbox import Outbox
from mosquitto import free_port
from mqtt_proxy import ConnectProxy

LAW = Law()


def test_law_defaults_are_the_settings_defaults() -> None:
    assert Law.of(UplinkSettings(broker="b")) == LAW


def test_first_retry_after_a_stable_connection_is_spread_over_the_window() -> None:
    rng = random.Random(3)
    firsts = []
    for _ in range(4000):
        b = Backoff(LAW, rng)
        b.connected(0.0)
        b.dropped(LAW.stable_s + 1)
        firsts.append(b.delay())
    assert min(firsts) >= 0 and max(firsts) <= LAW.window_s
    in_first_second = sum(d < 1.0 for d in firsts) / len(firsts)
    assert in_first_second < 0.11  # 1/11: the issue wants at most 10 % of a fleet


def test_an_unsent_alarm_retries_at_once_then_on_the_short_doubling() -> None:
    b = Backoff(LAW, random.Random(1))
    b.connected(0.0)
    b.dropped(100.0)
    assert b.delay(urgent=True) == 0.0
    later = [b.delay(urgent=True) for _ in range(3)]
    assert all(d <= LAW.min_s * 2 ** (k + 1) for k, d in enumerate(later))


def test_the_back_off_resets_only_after_a_connection_stayed_up() -> None:
    b = Backoff(LAW, random.Random(2))
    t = 0.0
    for _ in range(6):  # accepted, dropped a second later: never stable
        b.connected(t)
        t += 1.0
        b.dropped(t)
        t += b.delay()
    assert b.attempt == 6
    b.connected(t)
    b.dropped(t + LAW.stable_s)
    assert b.attempt == 0


@pytest.mark.parametrize("code", sorted(BUSY))
def test_busy_and_rate_refusals_back_off_longer(code: int) -> None:
    rng = random.Random(code)
    for k in range(6):
        b, plain = Backoff(LAW, rng), Backoff(LAW, rng)
        b.attempt = plain.attempt = k
        cap = min(LAW.max_s, LAW.window_s * 2 ** (k + 1))
        d = b.delay(refused=code)
        assert cap / 2 <= d <= cap, (k, d)
        assert b.attempt == k + 2  # and the next one starts from there
        assert plain.delay() <= min(LAW.max_s, LAW.window_s * 2 ** k)


def test_every_wait_is_capped_by_max_s() -> None:
    law = Law(min_s=0.2, max_s=1.0, window_s=11.0, stable_s=30.0)  # the tests' settings
    b = Backoff(law, random.Random(5))
    assert all(b.delay(refused=c) <= 1.0 for c in [None, 0x89, None, 0x9F] * 5)


@pytest.mark.parametrize(("text", "want"), [
    ("node1", ("node1", 8883)), ("node1:1883", ("node1", 1883)),
    ("10.0.0.2:8884", ("10.0.0.2", 8884)), ("[fd00::1]:8883", ("fd00::1", 8883)),
])
def test_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_address(text, 8883) == want


@pytest.mark.parametrize("text", ["", "mqtts://node1", "node1:0", "node1:70000",
                                  "node1:port", "node1/x", "a b"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text, 8883)


def test_a_bad_brokers_entry_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UplinkError, match="brokers"):
        Uplink(UplinkSettings(broker="a", tls=False, brokers=["b:99999"]), "L", None)
    from test_config import the_issue, with_, write
    path = write(tmp_path, with_(uplink={"brokers": ["node2:8883", "mqtts://node3"]}))
    issue = the_issue(path, "uplink.brokers[1]")
    assert "mqtts://node3" in issue.found and "no scheme" in issue.hint
    assert load_config(write(tmp_path, with_(uplink={"brokers": ["node2:1883", "node3"]}),
                             "ok.toml")).uplink.brokers == ["node2:1883", "node3"]


def test_brokers_are_tried_in_an_order_shuffled_per_terminal() -> None:
    addrs = [("n1", 1), ("n2", 1), ("n3", 1)]
    firsts = {Brokers(addrs, random.Random(s)).current() for s in range(30)}
    assert firsts == set(addrs)  # a fleet spreads over the nodes
    ring = Brokers(addrs, random.Random(0))
    seen = []
    for _ in range(3):
        seen.append(ring.current())
        ring.failed()
    assert sorted(seen) == addrs  # every node is tried in turn


def test_redirects_once_and_for_good() -> None:
    ring = Brokers([("n1", 1)], random.Random(0))
    assert ring.redirect("n9:2", USE_ANOTHER_SERVER, 1) and ring.current() == ("n9", 2)
    ring.failed()
    assert ring.current() == ("n1", 1)  # 0x9C: that attempt only
    assert ring.redirect("n8", SERVER_MOVED, 1) and ring.current() == ("n8", 1)
    ring.failed()
    ring.failed()
    assert ("n8", 1) in ring.addresses  # 0x9D: one of the addresses from now on
    assert not ring.redirect("a:b:c", USE_ANOTHER_SERVER, 1)


# ---------------------------------------------------------------- real broker


def _settings(port: int, **kw: Any) -> UplinkSettings:
    base: dict[str, Any] = dict(broker="127.0.0.1", port=port, tls=False)
    base.update(kw)
    return UplinkSettings(**base)


#: the default law with every time divided by 10: a minute of it is 6 s
SCALE = 10.0
SCALED = dict(reconnect_min_s=1.0 / SCALE, reconnect_max_s=120.0 / SCALE,
              reconnect_window_s=11.0 / SCALE, reconnect_stable_s=30.0 / SCALE)


@pytest.mark.parametrize("protocol", ["mqtt5", "mqtt311"])
def test_a_broker_that_accepts_and_drops_sees_at_most_15_connects_a_minute(
        broker: Broker, tmp_path: Path, protocol: str) -> None:
    """Five terminals on the default law (its times scaled by 1/10, so the minute is
    6 s) against a real Mosquitto behind a relay that drops every connection right
    after its CONNACK: each is connected (and dropped) at most 15 times in the
    minute after the first drop; the old law (reset on every CONNACK) made 33 a
    minute. The broker kept the sessions: health says so."""
    proxy = ConnectProxy(broker.port, flap=True).start()

    async def main() -> list[Uplink]:
        ups = [Uplink(_settings(proxy.port, protocol=protocol, **SCALED), f"F{i}", None)
               for i in range(5)]
        for u in ups:
            await u.start()
        await asyncio.sleep(60.0 / SCALE + 0.5)
        for u in ups:
            await u.stop(flush_timeout=0)
        return ups

    try:
        ups = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        proxy.stop()
    counts = [u.stats.connects for u in ups]
    print("connects per terminal in the minute:", counts)
    assert all(2 <= c <= 15 for c in counts), counts
    assert len(proxy.connects) <= 5 * 16
    assert any(u.link_health().get("session_present") for u in ups)


@pytest.mark.parametrize(("protocol", "code", "said"), [
    ("mqtt5", 0x89, "server busy (0x89)"),
    ("mqtt311", 3, "server unavailable (0x88)"),  # 3.1.1's only "come back later"
])
def test_busy_refusal_is_reported_and_backed_off(broker: Broker, protocol: str, code: int,
                                                 said: str) -> None:
    proxy = ConnectProxy(broker.port, refuse=(code, ""), v5=protocol == "mqtt5").start()

    async def main() -> Uplink:
        u = Uplink(_settings(proxy.port, protocol=protocol, **SCALED), "B1", None)
        await u.start()
        await asyncio.sleep(3.0)
        await u.stop(flush_timeout=0)
        return u

    try:
        u = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        proxy.stop()
    assert u.link_health()["refused"] == said
    # attempt 0 at once, then waits of at least half of 2.2, 4.4, 8.8 s: at most 3 in 3 s
    assert 1 <= len(proxy.connects) <= 3, proxy.attempts


@pytest.mark.parametrize("code", [USE_ANOTHER_SERVER, SERVER_MOVED])
def test_use_another_server_is_followed_to_the_real_broker(broker: Broker, code: int) -> None:
    proxy = ConnectProxy(broker.port, refuse=(code, f"127.0.0.1:{broker.port}")).start()

    async def main() -> tuple[bool, dict[str, Any]]:
        u = Uplink(_settings(proxy.port, reconnect_min_s=0.1, reconnect_max_s=1.0), "R1", None)
        await u.start()
        ok = await u.wait_connected(10)
        health = u.link_health()
        await u.stop(flush_timeout=0)
        return ok, health

    try:
        ok, health = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        proxy.stop()
    assert ok and len(proxy.connects) == 1
    assert health["broker"] == f"127.0.0.1:{broker.port}"
    assert health["refused"].endswith(f"(0x{code:02X})")


def test_a_dead_node_in_the_list_is_passed_over(broker: Broker, tmp_path: Path) -> None:
    dead = free_port()

    async def main(seed: int) -> float:
        s = _settings(broker.port, brokers=[f"127.0.0.1:{dead}"], reconnect_min_s=0.1,
                      reconnect_max_s=0.5, reconnect_window_s=0.5)
        with Outbox(tmp_path / f"ob{seed}", 1 << 20) as ob:
            u = Uplink(s, f"D{seed}", ob, rng=random.Random(seed))
            t0 = time.monotonic()
            await u.start()
            assert await u.wait_connected(10)
            took = time.monotonic() - t0
            await u.stop(flush_timeout=0)
        return took

    for seed in range(4):  # whichever comes first in the shuffled order
        assert asyncio.run(main(seed)) < 5.0


def test_the_protocol_document_states_the_law_of_the_code() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "platform-protocol.md").read_text()
    s = UplinkSettings(broker="b")
    for key in ("reconnect_window_s", "reconnect_max_s", "reconnect_stable_s"):
        assert f"`{key}` = {getattr(s, key):g} s" in doc, key
    assert "## Fleet" in doc


def test_health_reports_the_link_fields_the_schema_names() -> None:
    u = Uplink(_settings(1883, brokers=["127.0.0.1:1884"]), "H1", None)
    u.session_present, u.last_refusal = True, "server busy (0x89)"
    link = u.link_health()
    assert link["session_present"] is True and link["refused"] == "server busy (0x89)"
    assert link["broker"] in ("127.0.0.1:1883", "127.0.0.1:1884")
    from liftwatch.agent import messages  # the link object as the health schema has it
    props = messages.schema("health")["properties"]["link"]["properties"]
    assert {"session_present", "refused", "broker"} <= set(props)


def test_a_terminal_holding_an_unsent_alarm_retries_at_once(tmp_path: Path) -> None:
    """The uplink asks its outbox: an alarm waiting there makes the first retry after a
    drop immediate; without one it is spread over the window."""
    with Outbox(tmp_path, 1 << 20) as ob:
        u = Uplink(_settings(1883), "A1", ob, rng=random.Random(7))
        ob.append("event", "lift/A1/event", b'{"id":"e"}')
        u._backoff.connected(time.monotonic() - 100.0)  # a connection up for long
        d_plain = u._next_delay(got_connack=True)
        ob.append("alarm", "lift/A1/event", b'{"id":"a"}')
        u._backoff.connected(time.monotonic() - 100.0)
        assert u._next_delay(got_connack=True) == 0.0
        assert 0.0 < d_plain <= LAW.window_s
