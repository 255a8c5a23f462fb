"""A TCP relay in front of a real broker that counts what the broker is offered.

Used by the reconnect tests and bench/bench_fleet.py. Every TCP connection a client
opens is an *attempt* (timestamped); when the broker behind accepts the relay's own
connection, the client's CONNECT reaches it: a *connect* (timestamped). With the
broker down the client's connection is closed at once, as a refused one would be.
``flap=True`` makes a broker that accepts and drops: each connection is closed right
after the broker's first bytes (its CONNACK) have been passed on. ``refuse=(code,
reference)`` answers every CONNECT itself with an MQTT 5 CONNACK carrying that reason
code (and Server Reference, if not empty), as a cluster node that is busy (0x89) or
sends its clients elsewhere (0x9C, 0x9D) does, and closes.

It runs its own asyncio loop in a daemon thread: ``start()``, ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from mosquitto import free_port


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connack_v5(code: int, reference: str = "") -> bytes:
    """An MQTT 5 CONNACK with a reason code and an optional Server Reference (0x1C)."""
    props = b""
    if reference:
        ref = reference.encode()
        props = b"\x1c" + len(ref).to_bytes(2, "big") + ref
    body = bytes([0, code]) + _varint(len(props)) + props
    return b"\x20" + _varint(len(body)) + body


class ConnectProxy:
    """127.0.0.1:``port`` relayed to 127.0.0.1:``upstream``."""

    def __init__(self, upstream: int, *, flap: bool = False, port: int | None = None,
                 refuse: tuple[int, str] | None = None, v5: bool = True) -> None:
        self.upstream = upstream
        self.v5 = v5  # refuse with an MQTT 3.1.1 CONNACK (return code) when False
        self.flap = flap
        self.refuse = refuse
        self.port = port or free_port()
        self.attempts: list[float] = []  # monotonic time of each client connection
        self.connects: list[float] = []  # ... of each that reached the broker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> ConnectProxy:
        self._thread = threading.Thread(target=self._main, name="connect-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._client, "127.0.0.1", self.port, backlog=4096))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(self._loop)
            for t in tasks:
                t.cancel()
            if tasks:
                self._loop.run_until_complete(asyncio.wait(tasks))
            self._loop.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            await self._relay(cr, cw)
        except asyncio.CancelledError:  # the proxy stops: end quietly (asyncio's stream
            cw.close()                  # callback would log a cancelled task)

    async def _relay(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        if self.refuse is not None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.wait_for(cr.read(4096), 5)  # the CONNECT
                self.connects.append(time.monotonic())
                cw.write(connack_v5(*self.refuse) if self.v5 else bytes([0x20, 2, 0,
                                                                         self.refuse[0]]))
                await cw.drain()
            cw.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:  # broker down: the client sees its connection closed at once
            cw.close()
            return
        self.connects.append(time.monotonic())
        done = asyncio.Event()

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, cut: bool) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
                    if cut:  # the broker's CONNACK went through: drop the connection
                        break
            done.set()

        tasks = [asyncio.create_task(pipe(cr, uw, False)),
                 asyncio.create_task(pipe(ur, cw, self.flap))]
        try:
            await done.wait()
        finally:
            for t in tasks:
                t.cancel()
        for w in (cw, uw):
            with contextlib.suppress(OSError, RuntimeError):
                w.close()
