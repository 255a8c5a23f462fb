"""MQTT uplink to the city platform (platform-protocol.md), on paho-mqtt 2.x.

Threads and loops. paho's network I/O runs in one thread of ours (``_net_main``),
not in ``loop_start()``: paho's own reconnect waits a fixed doubling delay, and a
city's terminals must not reconnect in lock step after a broker restart. Ours follows
the fleet's reconnect law of :mod:`liftwatch.agent.reconnect` (the first retry after
a drop spread over ``reconnect_window_s``, doubling after, reset only after a
connection stayed up ``reconnect_stable_s``, longer after busy refusals, redirects
followed, ``broker`` and ``brokers`` tried in a shuffled order). Every paho
callback only hands its event to the asyncio loop with ``call_soon_threadsafe``; all
state below is touched by the loop thread alone, so it needs no locks and a PUBACK
can never be matched before its publish was recorded. Only the network thread writes
the socket: ``publish()`` from the loop thread just queues the packet (paho's
``on_socket_register_write`` hook is set), so packets leave in the order they were
published.

A new paho ``Client`` is made for every connection. paho would otherwise re-send
its own queue of unacknowledged messages on reconnect, ahead of anything else;
instead the in-flight window is forgotten on disconnect and refilled from the outbox,
whose ``pending()`` puts alarms first. The broker keeps our session (clean start off,
session expiry from config) so QoS 1 commands sent while we were away still arrive.
A message whose PUBACK was lost is sent again: a duplicate with the same ``id``,
which the platform de-duplicates on.

Delivery. ``event``/``trip``/``stats``/``health`` are in the outbox before they get
here (write before send); the drain task keeps at most ``inflight_max`` of them
awaiting PUBACK and acks each in the outbox on a PUBACK with a success reason code.
Outbox calls run on one worker thread (``executor``), shared with the runtime's
appends so they never run concurrently and never block the loop on an fsync.
``status`` is QoS 0 and latest-value: only the newest is kept, sent at most every
``status_min_interval_s``, and (re)sent when the connection comes up. ``online`` is
``1`` retained QoS 1 on connect; the will is ``0`` retained QoS 1; a clean stop
publishes ``0`` itself (a normal DISCONNECT suppresses the will).

Bytes. Over MQTT 5 the uplink uses topic aliases when the broker grants them (its
CONNACK's Topic Alias Maximum): a topic's name goes once per connection, then a
2-byte alias. Terminals pay for their mobile data; see bench/bench_uplink.py.

Security. TLS (1.2 or newer, server certificate and host name verified against
``ca_file`` or the system CAs) unless ``tls = false``, which is warned about at every
start. Mutual TLS with ``cert_file``/``key_file``; username/password from the
credentials file. Passwords and key paths are never logged. A failed handshake or a
refused client certificate is logged as one line saying so, not as a traceback.

Downlink size. Over MQTT 5 the CONNECT advertises a Maximum Packet Size of
``commands.MAX_PACKET`` (64 KiB): the broker does not send a larger packet at all.
MQTT 3.1.1 has no such property, and paho reads a whole packet into memory before it
hands it on (a 250 MB command once took the agent to 905 MB). :class:`_BoundedClient`
looks at a packet's remaining length as soon as paho has decoded it: a larger packet is
read in 64 KiB pieces of which only its first ``MAX_PACKET`` bytes are kept, then
handled as usual (PUBACK'd, so never re-delivered) with its real size passed on, and
the command is refused with a reply naming it (commands.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from liftwatch.agent.commands import MAX_PACKET, Downlink
from liftwatch.agent.messages import topic
from liftwatch.agent.reconnect import (
    BUSY,
    SERVER_MOVED,
    USE_ANOTHER_SERVER,
    Backoff,
    Brokers,
    Law,
    backoff_delay,
    parse_address,
)
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.tls import UplinkError, make_tls_context
from liftwatch.drivers.threadname import name_native_thread
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

#: paho's network loop sleeps in select() this long at most: a publish from the loop
#: thread wakes it through paho's own socket pair, so this only paces keepalive checks
#: and how soon the thread sees a stop while no connection is up.
NET_LOOP_S = 1.0
#: The drain runs when woken (new items, PUBACKs, connect, a refusal's retry time);
#: without a wake it looks at the outbox this often anyway, as a backstop.
DRAIN_IDLE_S = 5.0
#: A message the broker refused (PUBACK reason >= 0x80) is offered again after this.
REFUSED_RETRY_S = 30.0


class OutboxLike(Protocol):
    """The part of ``liftwatch.buffer.outbox.Outbox`` the uplink drains."""

    def pending(self, limit: int, skip: Any = ...) -> list[Any]: ...

    def ack(self, key: Any) -> None: ...

    def ack_many(self, keys: Any) -> Any: ...


def _network_thread_writes(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """paho's "socket wants writing" hook: set, so that publish() leaves writing to loop()."""


__all__ = ["Uplink", "UplinkError", "backoff_delay", "broker_addresses"]


def broker_addresses(settings: UplinkSettings) -> list[tuple[str, int]]:
    """``broker``:``port`` and every entry of ``brokers`` (UplinkError if one is bad)."""
    out = [(settings.broker, settings.port)]
    for text in settings.brokers:
        try:
            out.append(parse_address(text, settings.port))
        except ValueError as exc:
            raise UplinkError(f"uplink.brokers: {exc}") from None
    return out


class _FirstError(logging.Handler):
    """Keeps the first error paho reports during a connection attempt: its cause."""

    def __init__(self, uplink: Uplink) -> None:
        super().__init__(logging.ERROR)
        self.uplink = uplink

    def emit(self, record: logging.LogRecord) -> None:
        if self.uplink._last_error is None:
            self.uplink._last_error = record.getMessage()


#: how much of an oversized packet is read from the socket at a time
DISCARD_CHUNK = 64 * 1024


class _HeadOnly(bytearray):
    """The buffer paho reads an oversized packet into: it keeps the first ``cap`` bytes
    and discards the rest (paho appends each piece with ``+=``)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def __iadd__(self, data: Any) -> _HeadOnly:  # type: ignore[override]
        room = self.cap - len(self)
        if room > 0:
            self.extend(memoryview(data)[:room])
        return self


class _BoundedClient(mqtt.Client):
    """paho's client, holding at most ``MAX_PACKET`` bytes of any one incoming packet.

    paho 2.x reads a packet in ``_packet_read``: the fixed header, the remaining length
    (decoded into ``_in_packet["remaining_length"]``), then ``_sock_recv(to_process)``
    until the whole body is in ``_in_packet["packet"]``. Every read goes through
    ``_sock_recv``, so that is where the decoded length is checked: for a larger packet
    the buffer is swapped for a :class:`_HeadOnly` and each read asks for at most
    ``DISCARD_CHUNK`` bytes (a ``recv(250 MB)`` alone allocates 250 MB). ``oversized``
    is the real size of the packet being handled (0 for one within the limit); the
    ``on_message`` callback reads it.
    """

    oversized = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        ip = self._in_packet
        if ip["have_remaining"] and ip["remaining_length"] > MAX_PACKET:
            if not isinstance(ip["packet"], _HeadOnly):
                ip["packet"] = _HeadOnly(MAX_PACKET)
                self.oversized = ip["remaining_length"]
            bufsize = min(bufsize, DISCARD_CHUNK)
        elif ip["command"] and not ip["have_remaining"]:
            self.oversized = 0  # a new packet's header is being read
        return super()._sock_recv(bufsize)


@dataclass
class LinkStats:
    """Counters for the health message's ``link``."""

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    puback_refused: int = 0
    status_sent: int = 0
    status_replaced: int = 0
    commands_received: int = 0
    commands_dropped: int = 0
    rtt_ms: float | None = None


class Uplink:
    """One terminal's MQTT session with the platform broker.

    Use from inside a running asyncio loop: ``await start()``, ``wake()`` after outbox
    appends, ``offer_status(payload)``, ``publish_reply(payload)``, ``await stop()``.
    ``on_command(payload)`` is called in the loop thread for each downlink command, the
    payload a :class:`Downlink` (bytes with the real ``size`` and the ``retained`` flag).
    """

    def __init__(self, settings: UplinkSettings, lift_id: str, outbox: OutboxLike | None, *,
                 username: str | None = None, password: str | None = None,
                 on_command: Callable[[Downlink], None] | None = None,
                 executor: Executor | None = None, rng: random.Random | None = None,
                 connect_timeout_s: float = 10.0, use_topic_alias: bool = True,
                 rewrite: Callable[[bytes], bytes] | None = None,
                 replay: bool = False) -> None:
        self.settings = settings
        self.lift_id = lift_id
        self.outbox = outbox
        self.on_command = on_command
        # A re-run from a trace is not the lift's terminal: with the terminal's client id
        # the broker would hand it the terminal's session and disconnect the terminal,
        # and its online 1/0 (and will) would overwrite the terminal's retained state.
        self.client_id = f"lw-{lift_id}-replay" if replay else f"lw-{lift_id}"
        self.t_online = topic(settings.topic_prefix, lift_id,
                              "replay_online" if replay else "online")
        self.t_status = topic(settings.topic_prefix, lift_id, "status")
        self.t_cmd = topic(settings.topic_prefix, lift_id, "cmd")
        self.t_reply = topic(settings.topic_prefix, lift_id, "cmd_reply")
        self._username = username
        self._password = password
        self._rng = rng or random.Random()
        self._connect_timeout = connect_timeout_s
        self.use_topic_alias = use_topic_alias
        #: applied to a stored payload as it is published (MessageFactory.correct: the
        #: ts of messages made before the clock was set)
        self.rewrite = rewrite
        self._tls = make_tls_context(settings) if settings.tls else None
        # the reconnect law's state and the broker ring: the network thread's alone
        self._backoff = Backoff(Law.of(settings), self._rng)
        self._brokers = Brokers(broker_addresses(settings), self._rng)
        self._address = self._brokers.current()  # of the connection under way
        self._refused: tuple[int, str] | None = None  # this attempt's refusal or DISCONNECT
        self._reference: str | None = None  # its Server Reference (0x9C/0x9D)
        #: the last refusal of a connection (CONNACK >= 0x80, or a broker's DISCONNECT
        #: with a reason), for health: "server busy (0x89)". Written by the network
        #: thread (as _address is), only read elsewhere: one reference, no lock needed.
        self.last_refusal: str | None = None
        self.session_present: bool | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            1, thread_name_prefix="lw-outbox", initializer=name_native_thread)
        self.stats = LinkStats()
        # loop-thread state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._gen = 0
        self.connected = False
        self._connected_evt: asyncio.Event | None = None
        self._wake_evt: asyncio.Event | None = None
        self._inflight: dict[int, tuple[Any, float]] = {}  # mid -> (outbox key, sent mono)
        self._retry_after: dict[Any, float] = {}  # key -> mono, after a refused PUBACK
        self._ack_batch: list[Any] = []
        self._acking: set[Any] = set()  # acked by the broker, release in the outbox under way
        self._status: bytes | None = None
        self._status_last = -float("inf")
        self._status_handle: asyncio.TimerHandle | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._closing = False
        self._online0_mid: int | None = None
        self._alias_max = 0  # topic aliases the broker granted (MQTT 5 CONNACK)
        self._aliases: dict[str, Properties] = {}
        self._online0_evt: asyncio.Event | None = None
        # network thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._logged_error: str | None = None
        # paho's errors (why a connection failed) are caught here; its debug chatter is
        # never formatted (an ``on_log`` callback would format every packet's line)
        self._paho_log = logging.Logger("liftwatch.paho", logging.ERROR)
        self._paho_log.propagate = False
        self._paho_log.addHandler(_FirstError(self))

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected_evt = asyncio.Event()
        self._wake_evt = asyncio.Event()
        if self._tls is None:
            log.warning("uplink.tls is false: MQTT to %s:%d is NOT encrypted; messages and "
                        "credentials can be read on the network", self.settings.broker,
                        self.settings.port)
        self._drain_task = asyncio.create_task(self._drain(), name="uplink-drain")
        self._thread = threading.Thread(target=self._net_main, name="lw-mqtt", daemon=True)
        self._thread.start()

    async def wait_connected(self, timeout: float) -> bool:
        assert self._connected_evt is not None
        try:
            await asyncio.wait_for(self._connected_evt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected and not self._inflight and not self._ack_batch:
                items = await self._io(self._pending, 1, set())
                if not items:
                    return True
            self.wake()
            await asyncio.sleep(0.02)
        return False

    async def stop(self, flush_timeout: float = 5.0) -> bool:
        """Drain what can be drained within ``flush_timeout``, publish online 0, close.

        Takes at most ``flush_timeout`` + 1.8 s. Returns True when the outbox was empty
        at the end; what is left stays in the outbox and goes out after the next start.
        """
        flushed = await self.flush(flush_timeout) if self.outbox is not None else True
        self._closing = True
        await self._flush_acks()
        if self.connected and self._client is not None:
            self._online0_evt = asyncio.Event()
            info = self._client.publish(self.t_online, b"0", qos=1, retain=True)
            self._online0_mid = info.mid
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._online0_evt.wait(), 0.8)
            self._client.disconnect()
        self._stop.set()
        if self._thread is not None:
            # the network thread leaves within one loop(NET_LOOP_S); a connect() blocked
            # on an unreachable broker is left behind (daemon thread), not waited for
            await asyncio.to_thread(self._thread.join, NET_LOOP_S + 0.2)
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        if self._status_handle is not None:
            self._status_handle.cancel()
        await self._flush_acks()
        if self._own_executor:
            self._executor.shutdown(wait=True)  # type: ignore[attr-defined]
        self.connected = False
        return flushed

    # ------------------------------------------------------------------ API
    def wake(self) -> None:
        """New items in the outbox: drain now rather than at the next poll."""
        if self._wake_evt is not None:
            self._wake_evt.set()

    def offer_status(self, payload: bytes) -> None:
        """Latest-value status: replaces any unsent one; rate limited; QoS 0."""
        if self._status is not None:
            self.stats.status_replaced += 1
        self._status = payload
        self._schedule_status()

    def publish_reply(self, payload: bytes) -> bool:
        """A command reply, QoS 1, not through the outbox (the platform re-asks)."""
        if not self.connected or self._client is None:
            return False
        info = self._publish(self._client, self.t_reply, payload, 1)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_unstored(self, topic_: str, payload: bytes) -> bool:
        """A message the outbox could not store (disk full), QoS 1, once, not tracked:
        the runtime keeps it and stores it when the disk takes it again (then it goes
        out again from the outbox, a duplicate with the same ``id``). False if offline."""
        if not self.connected or self._client is None:
            return False
        return self._publish(self._client, topic_, payload, 1).rc == \
            MQTTErrorCode.MQTT_ERR_SUCCESS

    def link_health(self) -> dict[str, Any]:
        """The ``link`` object of the health message: with ``session_present`` (did the
        broker still hold our session at the last connect: false means QoS 1 commands
        sent meanwhile are lost), the last ``refused`` reason, and the ``broker`` in use
        when there is more than one to choose from."""
        s = self.stats
        out: dict[str, Any] = {"connected": self.connected, "reconnects": s.reconnects}
        if self.session_present is not None:
            out["session_present"] = self.session_present
        if self.last_refusal:
            out["refused"] = self.last_refusal
        if len(self._brokers.addresses) > 1 or self._address != self._brokers.addresses[0]:
            out["broker"] = f"{self._address[0]}:{self._address[1]}"
        if s.rtt_ms is not None:
            out["rtt_ms"] = round(s.rtt_ms, 1)
        for k, v in (("connect_failures", s.connect_failures), ("inflight", len(self._inflight)),
                     ("puback_refused", s.puback_refused),
                     ("commands_dropped", s.commands_dropped)):
            if v:
                out[k] = v
        return out

    def _publish(self, client: mqtt.Client, topic_: str, payload: bytes,
                 qos: int) -> mqtt.MQTTMessageInfo:
        """Publish with an MQTT 5 topic alias when the broker grants them: after the
        first message on a topic, the topic name (about 30 bytes) is not sent again on
        this connection. Aliases are per connection; a new client starts afresh."""
        if self._alias_max <= 0:
            return client.publish(topic_, payload, qos=qos)
        props = self._aliases.get(topic_)
        if props is not None:
            return client.publish("", payload, qos=qos, properties=props)
        if len(self._aliases) < self._alias_max:
            # the Properties object is built once per topic: building it per message
            # costs more than the rest of a publish
            props = Properties(PacketTypes.PUBLISH)
            props.TopicAlias = len(self._aliases) + 1
            self._aliases[topic_] = props
            return client.publish(topic_, payload, qos=qos, properties=props)
        return client.publish(topic_, payload, qos=qos)

    # ------------------------------------------------------------------ outbox I/O
    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _pending(self, limit: int, skip: set[Any]) -> list[Any]:
        assert self.outbox is not None
        return self.outbox.pending(limit, skip)

    def _ack_and_pending(self, acks: list[Any], limit: int, skip: set[Any]) -> list[Any]:
        """On the outbox thread: release what the broker acked, then read what is next."""
        try:
            self._ack_many(acks)
        except Exception:
            log.exception("outbox ack failed; the messages will be sent again")
        return self._pending(limit, skip)

    def _ack_many(self, keys: list[Any]) -> None:
        assert self.outbox is not None
        if keys:
            self.outbox.ack_many(keys)  # one lock for the batch of PUBACKs

    async def _flush_acks(self) -> None:
        if self._ack_batch:
            keys, self._ack_batch = self._ack_batch, []
            self._acking.update(keys)
            try:
                await self._io(self._ack_many, keys)
            except Exception:
                log.exception("outbox ack failed; the messages will be sent again")
            finally:
                self._acking.difference_update(keys)

    async def _drain(self) -> None:
        assert self._wake_evt is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_evt.wait(), DRAIN_IDLE_S)
            self._wake_evt.clear()
            try:
                await self._fill_window()
                await self._flush_acks()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("uplink drain step failed; retrying")
                await asyncio.sleep(1.0)

    async def _fill_window(self) -> None:
        if self.outbox is None or self._closing:
            return
        # refill when half the window is free (or it is empty): fewer, larger pending()
        # calls, each of which has to step over the keys still in flight
        low = max(1, self.settings.inflight_max // 2)
        while self.connected and self._client is not None:
            room = self.settings.inflight_max - len(self._inflight)
            if room <= 0 or (room < low and self._inflight):
                return
            now = time.monotonic()
            self._retry_after = {k: t for k, t in self._retry_after.items() if t > now}
            skip = ({k for k, _ in self._inflight.values()} | set(self._retry_after)
                    | self._acking)
            # the acks received so far go in the same trip to the outbox thread
            acks, self._ack_batch = self._ack_batch, []
            self._acking.update(acks)
            gen = self._gen
            try:
                items = await self._io(self._ack_and_pending, acks, room, skip)
            finally:
                self._acking.difference_update(acks)
            if not items or gen != self._gen or not self.connected:
                return
            client = self._client
            for it in items:
                payload = it.payload
                if self.rewrite is not None:
                    try:
                        payload = self.rewrite(payload)
                    except Exception:
                        log.exception("payload rewrite failed; sent as stored")
                info = self._publish(client, it.topic, payload, 1)
                if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    log.warning("publish on %s failed: %s", it.topic, mqtt.error_string(info.rc))
                    return
                self._inflight[info.mid] = (it.key, time.monotonic())
                self.stats.published += 1
                if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                    return
            if len(items) < room:
                return

    # ------------------------------------------------------------------ status
    def _schedule_status(self) -> None:
        assert self._loop is not None
        if self._status is None or not self.connected or self._status_handle is not None:
            return
        wait = self._status_last + self.settings.status_min_interval_s - time.monotonic()
        self._status_handle = self._loop.call_later(max(0.0, wait), self._send_status)

    def _send_status(self) -> None:
        self._status_handle = None
        if self._status is None or not self.connected or self._client is None:
            return
        info = self._publish(self._client, self.t_status, self._status, 0)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._status = None
            self._status_last = time.monotonic()
            self.stats.status_sent += 1

    # ------------------------------------------------------------------ loop-thread events
    def _ev_connected(self, gen: int, client: mqtt.Client, alias_max: int,
                      session_present: bool) -> None:
        if gen != self._gen:
            return
        self.session_present = session_present
        self._alias_max = min(int(alias_max or 0), 32) if self.use_topic_alias else 0
        self._aliases = {}
        assert self._connected_evt is not None
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        self._client = client
        self.connected = True
        self._inflight.clear()
        self._connected_evt.set()
        log.info("connected to %s:%d as %s (session %s)", *self._address, self.client_id,
                 "present" if session_present else "new")
        client.subscribe(self.t_cmd, qos=1)
        client.publish(self.t_online, b"1", qos=1, retain=True)
        self._schedule_status()
        self.wake()

    def _ev_disconnected(self, gen: int, reason: str) -> None:
        if gen != self._gen:
            return
        was = self.connected
        self.connected = False
        self._client = None
        assert self._connected_evt is not None
        self._connected_evt.clear()
        # What was in flight goes out again from the outbox after the reconnect.
        self._inflight.clear()
        if self._status_handle is not None:
            self._status_handle.cancel()
            self._status_handle = None
        if was and not self._closing:
            log.warning("disconnected from broker: %s", reason)

    def _ev_publish(self, gen: int, mid: int, ok: bool, reason: str) -> None:
        if gen != self._gen:
            return
        if mid == self._online0_mid and self._online0_evt is not None:
            self._online0_evt.set()
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # online "1", a reply, or a message of an old connection
        key, sent = entry
        rtt = (time.monotonic() - sent) * 1000.0
        prev = self.stats.rtt_ms
        self.stats.rtt_ms = rtt if prev is None else 0.9 * prev + 0.1 * rtt
        if ok:
            self.stats.acked += 1
            self._ack_batch.append(key)
        else:
            self.stats.puback_refused += 1
            self._retry_after[key] = time.monotonic() + REFUSED_RETRY_S
            assert self._loop is not None
            self._loop.call_later(REFUSED_RETRY_S + 0.01, self.wake)
            log.warning("broker refused a message (%s); it stays in the outbox", reason)
        self.wake()

    def _ev_message(self, topic_: str, payload: bytes, size: int, retained: bool) -> None:
        if topic_ != self.t_cmd:
            return
        self.stats.commands_received += 1
        if self.on_command is not None:
            try:
                self.on_command(Downlink(payload, size, retained))
            except Exception:
                log.exception("command hand-off failed")

    # ------------------------------------------------------------------ network thread
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing
                loop.call_soon_threadsafe(fn, *args)

    def _make_client(self, gen: int) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "mqtt5"
        client = _BoundedClient(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False, reconnect_on_failure=False)
        client.max_inflight_messages_set(s.inflight_max)
        client.max_queued_messages_set(0)
        client.connect_timeout = self._connect_timeout
        client.will_set(self.t_online, b"0", qos=1, retain=True)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)

        def on_connect(c: mqtt.Client, _u: Any, flags: Any, rc: Any, props: Any) -> None:
            if rc.is_failure:
                self._last_error = f"broker refused the connection: {rc}"
                self._note_refusal(rc, props)
                return
            alias_max = getattr(props, "TopicAliasMaximum", 0) if v5 else 0
            self._post(self._ev_connected, gen, c, alias_max,
                       bool(getattr(flags, "session_present", False)))

        def on_disconnect(_c: mqtt.Client, _u: Any, flags: Any, rc: Any, props: Any) -> None:
            if getattr(flags, "is_disconnect_packet_from_server", False) and \
                    getattr(rc, "is_failure", False):
                self._note_refusal(rc, props)  # busy, moved, ...: the law looks at it
            self._post(self._ev_disconnected, gen, str(rc))

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
            ok = not getattr(rc, "is_failure", False)
            self._post(self._ev_publish, gen, mid, ok, str(rc))

        def on_message(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            payload = bytes(msg.payload)
            size = len(payload)
            if getattr(c, "oversized", 0):  # the packet's size less its headers kept
                size = c.oversized - (MAX_PACKET - len(payload))
            self._post(self._ev_message, msg.topic, payload, size, bool(msg.retain))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        # Only the network thread may write the socket. Without a loop_start() thread,
        # paho's publish() would otherwise write its packet queue from the calling (loop)
        # thread while loop() writes it from ours: each thread pops a packet, and one
        # preempted between its pop and its send lets the other's later packet go first
        # (a lane-order break, seen once as 'e14' before 'e13'; with partial writes even
        # interleaved bytes). With this callback set, publish() only queues the packet and
        # wakes loop() through paho's socket pair; the callback itself has nothing to do.
        client.on_socket_register_write = _network_thread_writes
        client.enable_logger(self._paho_log)
        return client

    def _connect_props(self) -> Properties | None:
        if self.settings.protocol != "mqtt5":
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.settings.session_expiry_s)
        props.MaximumPacketSize = MAX_PACKET  # the broker sends nothing larger
        return props

    def _note_refusal(self, rc: Any, props: Any) -> None:
        """Network thread: a refused CONNACK or a broker's DISCONNECT with a reason."""
        code = int(getattr(rc, "value", 0x80))
        self._refused = code, str(rc)
        ref = getattr(props, "ServerReference", None) if props is not None else None
        self._reference = ref if code in (USE_ANOTHER_SERVER, SERVER_MOVED) and ref else None
        self.last_refusal = f"{str(rc).lower()} (0x{code:02X})"

    def _alarm_waiting(self) -> bool:
        """An alarm is in the outbox, unsent: its terminal may retry at once."""
        if self.outbox is None:
            return False
        try:
            items = self.outbox.pending(1)
        except Exception:
            return False
        return bool(items) and getattr(items[0], "lane", None) == "alarm"

    def _next_delay(self, got_connack: bool) -> float:
        """Network thread, after a connection (attempt) ended: the reconnect law's wait,
        and which broker is next."""
        now = time.monotonic()
        if got_connack:
            self._backoff.dropped(now)
            self._brokers.connected()
        refused = self._refused
        code = refused[0] if refused else None
        if self._reference and code is not None and \
                self._brokers.redirect(self._reference, code, self.settings.port):
            host, port = self._brokers.current()
            log.warning("broker %s:%d says %s: next connect to %s:%d", *self._address,
                        refused[1] if refused else "?", host, port)
            # not a failure: a short spread only (the broker may move a crowd at once)
            return self._rng.uniform(0.0, min(self.settings.reconnect_min_s,
                                              self.settings.reconnect_max_s))
        self._brokers.failed()
        urgent = self._alarm_waiting() if code not in BUSY else False
        return self._backoff.delay(refused=code, urgent=urgent)

    def _report_failure(self, kind: str, what: str) -> None:
        """One clear ERROR line per kind of failure (not one per retry, no traceback);
        repeats of the same kind go to debug until a connection succeeds."""
        self.stats.connect_failures += 1
        if kind != self._logged_error:
            log.error("%s (%s:%d, client id %s)", what, *self._address, self.client_id)
            self._logged_error = kind
        else:
            log.debug("still failing: %s", what)

    def _closed_before_connack(self) -> tuple[str, str]:
        err = (self._last_error or "").replace("failed to receive on socket: ", "")
        if self._tls is not None and ("SSL" in err or "EOF occurred" in err or "alert" in err):
            if self.settings.cert_file:
                return ("tls-client-cert", "TLS: the broker closed the connection after the "
                        f"handshake: it refused this terminal's client certificate ({err})")
            return ("tls-closed", "TLS: the broker closed the connection after the handshake "
                    f"(does it require a client certificate?) ({err})")
        if err.startswith("broker refused"):
            return "refused", err
        return "closed", f"the broker closed the connection before CONNACK ({err or 'no reason'})"

    def _net_main(self) -> None:
        name_native_thread()
        gen = 0
        s = self.settings
        while not self._stop.is_set():
            gen += 1
            self._post(self._set_gen, gen)
            client = self._make_client(gen)
            self._last_error = None
            self._refused = self._reference = None
            self._address = host, port = self._brokers.current()
            got_connack = False
            try:
                if s.protocol == "mqtt5":
                    client.connect(host, port, s.keepalive_s, clean_start=False,
                                   properties=self._connect_props())
                else:
                    client.connect(host, port, s.keepalive_s)
            except ssl.SSLCertVerificationError as exc:
                self._report_failure("tls-untrusted", "TLS: the broker's certificate is not "
                                     f"trusted: {exc.verify_message}")
            except ssl.SSLError as exc:
                self._report_failure("tls-handshake", "TLS handshake with the broker failed: "
                                     f"{exc.reason or exc}")
            except OSError as exc:
                self._report_failure("unreachable",
                                     f"cannot reach the broker: {exc.strerror or exc}")
            else:
                while not self._stop.is_set() or client.is_connected():
                    rc = client.loop(NET_LOOP_S)
                    if client.is_connected() and not got_connack:
                        got_connack = True
                        self._backoff.connected(time.monotonic())
                        self._logged_error = None
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                if self._stop.is_set():
                    for _ in range(10):  # let a DISCONNECT queued by stop() go out
                        if client.loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                            break
                if not got_connack and not self._stop.is_set():
                    self._report_failure(*self._closed_before_connack())
                with contextlib.suppress(Exception):
                    client.socket() and client.disconnect()
            self._post(self._ev_disconnected, gen, "connection closed")
            if self._stop.is_set():
                break
            delay = self._next_delay(got_connack)
            log.debug("reconnecting in %.2f s", delay)
            self._stop.wait(delay)

    def _set_gen(self, gen: int) -> None:
        """A new connection attempt: events of older clients are ignored from now on."""
        self._gen = gen
