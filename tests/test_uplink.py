"""The MQTT uplink against a real Mosquitto: session, online/will, status, outbox drain,
broker outage, TLS and mutual TLS (certificates made here with openssl)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from liftwatch.agent import uplink as uplink_mod
from liftwatch.agent.messages import MessageFactory, dumps, lane_of, topic
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.timebase import Timebase
from liftwatch.agent.tls import UplinkError
from liftwatch.agent.uplink import Uplink, backoff_delay
from liftwatch.buffer.outbox import Outbox
from uplink_helpers import (
    AUTOSAVE_CONF,
    Observer,
    make_certs,
    tls_listener_conf,
    validate,
    wait_saved,
)

LIFT = "L1"


def settings(broker: Broker, **kw: Any) -> UplinkSettings:
    base: dict[str, Any] = dict(broker="127.0.0.1", port=broker.port, tls=False,
                                reconnect_min_s=0.2, reconnect_max_s=1.0)
    base.update(kw)
    return UplinkSettings(**base)


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def saving_broker(tmp_path: Path) -> Any:
    """A broker that autosaves every second, so a subscriber's session survives SIGKILL."""
    b = Broker(workdir=tmp_path, extra_conf=AUTOSAVE_CONF)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


def factory() -> MessageFactory:
    return MessageFactory(LIFT, 1, Timebase())


def event_rec(n: int, sev: str = "fault", code: str = "door_open_fault",
              state: str = "raised") -> dict[str, Any]:
    rec = {"t": float(n), "type": "event", "code": code, "state": state, "id": f"e{n}",
           "floor": "3", "sev": sev, "detail": {"n": n}}
    if state == "cleared":
        rec["duration_s"] = 1.5
    return rec


def trip_rec(n: int) -> dict[str, Any]:
    xyz = {"x": 0.1, "y": 0.1, "z": 0.2}
    return {"t": float(n), "type": "trip", "from": "1", "to": "3", "t_start": float(n),
            "t_end": n + 9.5, "distance_m": 6.2, "v_max": 1.7, "a_max": 0.8, "d_max": 0.8,
            "a95": 0.7, "d95": 0.7, "jerk_max": 1.1, "vib_pp_max": xyz, "vib_pp_a95": xyz}


def store(ob: Outbox, f: MessageFactory, kind: str, msg: dict[str, Any]) -> None:
    ob.append(lane_of(kind, msg), topic("lift", LIFT, kind), dumps(msg))


@pytest.mark.timeout(60)
def test_full_jitter_backoff_is_spread_and_capped() -> None:
    rng = random.Random(7)
    for attempt, cap in ((0, 1.0), (1, 2.0), (3, 8.0), (10, 120.0), (60, 120.0)):
        xs = [backoff_delay(attempt, 1.0, 120.0, rng) for _ in range(2000)]
        assert min(xs) >= 0 and max(xs) <= cap
        # full jitter: uniform over [0, cap], so mean cap/2 and values spread over the range
        assert abs(sum(xs) / len(xs) - cap / 2) < cap * 0.05
        assert min(xs) < cap * 0.05 and max(xs) > cap * 0.95


@pytest.mark.timeout(60)
def test_online_retained_session_and_clean_stop(broker: Broker,
                                                caplog: pytest.LogCaptureFixture) -> None:
    obs = Observer(broker.port)
    got_cmds: list[bytes] = []

    async def main() -> None:
        caplog.set_level(logging.WARNING, logger="liftwatch.agent.uplink")
        u = Uplink(settings(broker), LIFT, None, on_command=got_cmds.append)
        await u.start()
        assert await u.wait_connected(10)
        assert obs.wait_for(lambda g: any(r.topic == "lift/L1/online" and r.payload == b"1"
                                          for r in g))
        assert await u.stop(1.0)
        # plaintext is warned about at every start
        assert any("NOT encrypted" in r.getMessage() for r in caplog.records)
        # persistent session: a command sent while the agent is away reaches it later
        obs.publish("lift/L1/cmd", b'{"id":"c1","op":"snapshot"}')
        u2 = Uplink(settings(broker), LIFT, None, on_command=got_cmds.append)
        await u2.start()
        assert await u2.wait_connected(10)
        for _ in range(100):
            if got_cmds:
                break
            await asyncio.sleep(0.05)
        await u2.stop(1.0)

    run(main())
    assert got_cmds == [b'{"id":"c1","op":"snapshot"}']
    online = [r for r in obs.on("online")]
    assert [r.payload for r in online] == [b"1", b"0", b"1", b"0"]
    # the retained value a newcomer sees is the last one: 0 after a clean stop
    late = Observer(broker.port, client_id="late")
    assert late.wait_for(lambda g: any(r.topic.endswith("/online") for r in g))
    assert [(r.payload, r.retain) for r in late.on("online")] == [(b"0", True)]
    obs.close()
    late.close()


@pytest.mark.timeout(60)
def test_status_is_latest_value_and_rate_limited(saving_broker: Broker) -> None:
    broker = saving_broker
    obs = Observer(broker.port)
    subscribed = time.time()
    f = factory()

    async def main() -> None:
        u = Uplink(settings(broker, status_min_interval_s=0.5), LIFT, None)
        await u.start()
        assert await u.wait_connected(10)
        for i in range(20):  # a burst: at most one per 0.5 s goes out, the newest last
            u.offer_status(dumps(f.status({"mode": 1, "run": 0, "dir": 0, "floor": str(i),
                                           "door": 2, "src": "fused"})))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.6)
        await asyncio.to_thread(wait_saved, broker.workdir, subscribed)
        broker.stop()
        await asyncio.sleep(0.3)
        for i in (100, 101, 102):  # offline: only the newest is kept
            u.offer_status(dumps(f.status({"mode": 1, "run": 0, "dir": 0, "floor": str(i),
                                           "door": 2, "src": "fused"})))
        broker.start()
        assert await u.wait_connected(10)
        await asyncio.sleep(0.5)
        await u.stop(1.0)

    run(main())
    assert obs.wait_for(lambda g: any(b'"floor":"102"' in r.payload for r in g), 5)
    floors = [r.json()["floor"] for r in obs.on("status")]
    for r in obs.on("status"):
        validate("status", r.json())
    before = [x for x in floors if int(x) < 100]
    assert 1 <= len(before) <= 3 and before[-1] == "19"
    assert [x for x in floors if int(x) >= 100] == ["102"]
    obs.close()


@pytest.mark.timeout(60)
def test_outbox_drains_in_lane_order_and_acks_only_on_puback(broker: Broker,
                                                              tmp_path: Path) -> None:
    obs = Observer(broker.port)
    ob = Outbox(tmp_path / "outbox", 8 << 20)
    f = factory()
    for n in range(30):
        store(ob, f, "trip", f.trip(trip_rec(n)))
        store(ob, f, "event", f.event(event_rec(n)))
    store(ob, f, "event", f.event(event_rec(99, sev="alarm", code="entrapment_level")))

    async def main() -> None:
        u = Uplink(settings(broker, inflight_max=5), LIFT, ob)
        await u.start()
        assert await u.wait_connected(10)
        assert await u.flush(20)
        await u.stop(1.0)

    run(main())
    assert sum(s["depth"] for s in ob.stats()["lanes"].values()) == 0
    ob.close()
    assert obs.wait_for(lambda g: len([r for r in g if r.topic.endswith(("/event", "/trip"))])
                        >= 61, 5)
    msgs = [r.json() for r in obs.got if r.topic.endswith(("/event", "/trip"))]
    assert len(msgs) == 61
    assert msgs[0]["code"] == "entrapment_level"  # alarms overtake
    ev = [m["eid"] for m in msgs if "eid" in m and m["sev"] != "alarm"]
    assert ev == [f"e{n}" for n in range(30)]
    trips = [m["t_start"] for m in msgs if "t_start" in m]
    assert trips == [float(n) for n in range(30)]


@pytest.mark.realtime(65)
@pytest.mark.timeout(120)
def test_broker_killed_60s_while_producing_everything_arrives(tmp_path: Path) -> None:
    """The Done-when outage: 60 s without broker while events, trips and an alarm are
    produced; after the restart all arrive, lane order kept, the alarm first, duplicates
    only with the same id."""
    broker = Broker(workdir=tmp_path, extra_conf=AUTOSAVE_CONF)
    broker.start()
    obs = Observer(broker.port)
    subscribed = time.time()
    ob = Outbox(tmp_path / "outbox", 8 << 20)
    f = factory()
    # the Done-when's 60 s; LIFTWATCH_OUTAGE_S shortens it for a quick local run
    outage_s = float(os.environ.get("LIFTWATCH_OUTAGE_S", "60"))
    produced: list[dict[str, Any]] = []

    def produce(kind: str, msg: dict[str, Any]) -> None:
        produced.append(msg)
        store(ob, f, kind, msg)

    async def main() -> None:
        u = Uplink(settings(broker, reconnect_min_s=0.5, reconnect_max_s=4.0), LIFT, ob)
        await u.start()
        assert await u.wait_connected(10)
        for n in range(5):  # before the outage
            produce("trip", f.trip(trip_rec(n)))
            u.wake()
        await asyncio.to_thread(wait_saved, broker.workdir, subscribed)
        broker.stop()
        t_end = asyncio.get_running_loop().time() + outage_s
        n = 100
        while asyncio.get_running_loop().time() < t_end:
            produce("event", f.event(event_rec(n)))
            produce("trip", f.trip(trip_rec(n)))
            if n == 103:  # mid-outage, after some events and trips
                produce("event", f.event(event_rec(n, sev="alarm", code="entrapment_nonlevel")))
            u.wake()
            n += 1
            await asyncio.sleep(2.0)
        broker.start()
        assert await u.wait_connected(15)
        assert await u.flush(20)
        await u.stop(1.0)

    run(main(), timeout=outage_s + 50)
    ob.close()
    assert obs.wait_for(lambda g: len([r for r in g if r.topic.endswith(("/event", "/trip"))])
                        >= len(produced), timeout=10)
    got = [r for r in obs.got if r.topic.endswith(("/event", "/trip"))]
    by_id: dict[str, bytes] = {}
    for r in got:
        m = r.json()
        validate("event" if r.topic.endswith("/event") else "trip", m)
        assert by_id.setdefault(m["id"], r.payload) == r.payload  # duplicates: same id, same bytes
    assert set(by_id) == {m["id"] for m in produced}
    # after the restart the alarm is the first message from the outage to arrive
    outage_ids = {m["id"] for m in produced[5:]}
    after = [r.json() for r in got if r.json()["id"] in outage_ids]
    assert after[0]["code"] == "entrapment_nonlevel"
    # order within each lane (first arrival of each id)
    seen: list[str] = []
    for m in (r.json() for r in got):
        if m["id"] not in seen:
            seen.append(m["id"])
    for pred in (lambda m: "eid" in m and m["sev"] != "alarm", lambda m: "t_start" in m):
        want = [m["id"] for m in produced if pred(m)]
        assert [i for i in seen if i in set(want)] == want
    obs.close()
    broker.stop()


@pytest.mark.timeout(60)
def test_mutual_tls_connects_and_wrong_certificate_is_refused_with_one_clear_line(
        tmp_path: Path, certs: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker(workdir=tmp_path, extra_conf=tls_listener_conf(certs))
    broker.start()
    try:
        good = settings(broker, tls=True, ca_file=str(certs / "ca.crt"),
                        cert_file=str(certs / "client.crt"), key_file=str(certs / "client.key"))
        wrong = settings(broker, tls=True, ca_file=str(certs / "ca.crt"),
                         cert_file=str(certs / "wrong.crt"), key_file=str(certs / "wrong.key"),
                         reconnect_min_s=0.1, reconnect_max_s=0.2)

        async def main() -> None:
            caplog.set_level(logging.INFO, logger="liftwatch.agent.uplink")
            u = Uplink(good, LIFT, None)
            await u.start()
            assert await u.wait_connected(10)
            assert u.connected
            await u.stop(1.0)
            caplog.clear()
            w = Uplink(wrong, LIFT, None)
            await w.start()
            assert not await w.wait_connected(2.0)
            await w.stop(0.1)
            assert w.stats.connect_failures >= 3

        run(main())
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors  # one line, not one per retry, no traceback
        assert "client certificate" in errors[0] and "127.0.0.1" in errors[0]
        assert not any(r.exc_info for r in caplog.records)
        assert "wrong.key" not in caplog.text  # key paths are secrets
    finally:
        broker.stop()


@pytest.mark.timeout(60)
def test_untrusted_broker_certificate_is_refused(tmp_path: Path, certs: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker(workdir=tmp_path, extra_conf=tls_listener_conf(certs, False))
    broker.start()
    try:
        s = settings(broker, tls=True, ca_file=str(certs / "rogue.crt"))

        async def main() -> None:
            u = Uplink(s, LIFT, None)
            await u.start()
            assert not await u.wait_connected(1.5)
            await u.stop(0.1)

        run(main())
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "certificate is not trusted" in errors[0], errors
    finally:
        broker.stop()


def test_unusable_client_key_is_a_clear_error(certs: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    s = UplinkSettings(broker="127.0.0.1", cert_file=str(certs / "client.crt"),
                       key_file=str(bad), ca_file=str(certs / "ca.crt"))
    with pytest.raises(UplinkError, match="client certificate") as ei:
        Uplink(s, LIFT, None)
    assert "not a key" not in str(ei.value)
    with pytest.raises(UplinkError, match="go together"):
        Uplink(UplinkSettings(broker="x", cert_file=str(certs / "client.crt")), LIFT, None)


@pytest.mark.timeout(60)
def test_username_password_over_tls_and_mqtt311(tmp_path: Path, certs: Path) -> None:
    import subprocess
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "terminal1", "s3cret!"],
                   check=True, capture_output=True, timeout=30)
    conf = tls_listener_conf(certs, False).replace("allow_anonymous true", "")
    broker = Broker(workdir=tmp_path, extra_conf=conf + f"password_file {pw}\n"
                    "allow_anonymous false\n")
    broker.start()
    try:
        async def attempt(password: str, protocol: str) -> bool:
            s = settings(broker, tls=True, ca_file=str(certs / "ca.crt"), protocol=protocol)
            u = Uplink(s, LIFT, None, username="terminal1", password=password)
            await u.start()
            ok = await u.wait_connected(3)
            await u.stop(0.1)
            return ok

        assert run(attempt("s3cret!", "mqtt5"))
        assert run(attempt("s3cret!", "mqtt311"))
        assert not run(attempt("wrong", "mqtt5"))
    finally:
        broker.stop()


def test_cmd_reply_topic_and_payload(broker: Broker) -> None:
    obs = Observer(broker.port)
    f = factory()

    async def main() -> None:
        u = Uplink(settings(broker), LIFT, None)
        await u.start()
        assert await u.wait_connected(10)
        assert u.publish_reply(dumps(f.cmd_reply("c9", True, {"x": 1})))
        await asyncio.sleep(0.3)
        await u.stop(1.0)

    run(main())
    assert obs.wait_for(lambda g: any(x.topic.endswith("/cmd/reply") for x in g), 5)
    r = obs.on("cmd/reply")
    assert len(r) == 1 and json.loads(r[0].payload)["id"] == "c9"
    validate("cmd_reply", r[0].json())
    obs.close()


@pytest.mark.timeout(60)
def test_stored_messages_go_out_with_ts_corrected_after_a_clock_step(
        broker: Broker, tmp_path: Path) -> None:
    from liftwatch.agent.timebase import ClockState
    clock = {"wall": 1000.0, "synced": False}
    tb = Timebase(probe=lambda: ClockState(clock["synced"], 0, 0, 0, 0), probe_interval_s=0,
                  wall=lambda: clock["wall"] + time.monotonic())
    f = MessageFactory(LIFT, 1, tb)
    ob = Outbox(tmp_path / "outbox", 1 << 20)
    for n in range(3):
        store(ob, f, "event", f.event(event_rec(n)))
    clock["wall"] += 1.7e9  # NTP sets the clock before the link comes up
    clock["synced"] = True
    store(ob, f, "trip", f.trip(trip_rec(9)))
    obs = Observer(broker.port)

    async def main() -> None:
        u = Uplink(settings(broker), LIFT, ob, rewrite=f.correct)
        await u.start()
        assert await u.wait_connected(10)
        assert await u.flush(10)
        await u.stop(1.0)

    run(main())
    ob.close()
    assert obs.wait_for(lambda g: len([r for r in g if r.topic.endswith(("/event", "/trip"))])
                        == 4, 5)
    msgs = [r.json() for r in obs.got if r.topic.endswith(("/event", "/trip"))]
    assert all(m["tq"] == 1 for m in msgs)
    now_ms = (clock["wall"] + time.monotonic()) * 1000
    assert all(abs(m["ts"] - now_ms) < 60_000 for m in msgs)  # all on the set clock
    obs.close()


@pytest.mark.timeout(60)
def test_a_message_the_broker_refuses_stays_and_goes_out_when_it_is_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PUBACK with a failure reason (here 0x87, not authorised by the broker's ACL)
    leaves the message in the outbox; it is offered again at its retry time, without any
    other wake-up of the drain, and goes out once the broker takes it."""
    monkeypatch.setattr(uplink_mod, "REFUSED_RETRY_S", 1.0)
    monkeypatch.setattr(uplink_mod, "DRAIN_IDLE_S", 30.0)  # so only the retry timer helps
    acl = tmp_path / "acl"
    allowed = "topic read lift/#\n" + "".join(
        f"topic write lift/{LIFT}/{t}\n" for t in ("online", "status", "event", "reply"))
    acl.write_text(allowed)
    b = Broker(workdir=tmp_path, extra_conf=f"acl_file {acl}\n")
    b.start()
    try:
        obs = Observer(b.port)
        ob = Outbox(tmp_path / "outbox", 1 << 20)
        f = factory()
        store(ob, f, "trip", f.trip(trip_rec(1)))

        async def main() -> tuple[int, int, float]:
            u = Uplink(settings(b, protocol="mqtt5"), LIFT, ob)
            await u.start()
            assert await u.wait_connected(10)
            t0 = time.monotonic()
            while u.stats.puback_refused == 0 and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.05)
            refused = u.stats.puback_refused
            depth = ob.stats()["lanes"]["record"]["depth"]
            acl.write_text(allowed + f"topic write lift/{LIFT}/trip\n")
            assert b.proc is not None
            b.proc.send_signal(signal.SIGHUP)  # Mosquitto reads its ACL file again
            while ob.stats()["lanes"]["record"]["depth"] and time.monotonic() - t0 < 15:
                await asyncio.sleep(0.05)  # no flush(): it would wake the drain itself
            took = time.monotonic() - t0
            await u.stop(1.0)
            return refused, depth, took

        refused, depth, took = run(main())
        assert refused >= 1 and depth == 1  # refused, and kept
        assert ob.stats()["lanes"]["record"]["depth"] == 0
        assert took < 5.0  # offered again at its retry time (1 s), acked
        ob.close()
        assert obs.wait_for(lambda g: any(r.topic.endswith("/trip") for r in g), 5)
    finally:
        b.stop()


@pytest.mark.timeout(60)
def test_publishes_reach_the_broker_in_outbox_order_when_the_network_thread_is_preempted(
        broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause of a once-seen 'e14' != 'e13' under load: without a loop_start() thread,
    paho's publish() writes its packet queue itself, so the loop thread and our network
    thread could each pop a packet and send them in the opposite order when the network
    thread lost the CPU between the two. That preemption is made to happen here: the
    network thread pauses (GIL released) just before each real socket write."""
    real_send = mqtt.Client._sock_send

    def preempted_send(self: mqtt.Client, buf: bytes) -> int:
        if threading.current_thread().name == "lw-mqtt":
            time.sleep(0.0005)
        return real_send(self, buf)

    monkeypatch.setattr(mqtt.Client, "_sock_send", preempted_send)
    obs = Observer(broker.port)
    ob = Outbox(tmp_path / "outbox", 8 << 20)
    n = 600
    ob.append_many([("event", "lift/L1/event", b'{"n":%d}' % i) for i in range(n)])

    async def main() -> None:
        u = Uplink(settings(broker, inflight_max=32), LIFT, ob)
        await u.start()
        assert await u.wait_connected(10)
        assert await u.flush(30)
        await u.stop(1.0)

    run(main())
    ob.close()
    assert obs.wait_for(lambda g: len([r for r in g if r.topic.endswith("/event")]) >= n, 10)
    got = [r.json()["n"] for r in obs.on("event")]
    obs.close()
    assert got == list(range(n))
