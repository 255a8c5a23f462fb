"""Uplink figures: drain rate to a local Mosquitto at QoS 1, and bytes uploaded per day.

    .venv/bin/python bench/bench_uplink.py [--messages 20000] [--inflight 20 100] [--repeat 3]
                                           [--trace hil_tests/traces/normal_day.jsonl.gz]

1. Drain rate (target >= 1,500 messages/s): an outbox filled with N event messages of
   real size is drained by :class:`~liftwatch.agent.uplink.Uplink` to a Mosquitto on
   loopback, QoS 1, each message acked in the outbox on its PUBACK; timed from the
   CONNACK to the empty outbox.
2. Bytes per day for a lift doing 300 trips (target <= 1 MB). The day's messages are
   built by the agent's own code with real payloads: the pipeline runs over a trace of
   service (``--trace``, by default the normal_day example) and every status it would
   send (on change, at most 1/s, plus a heartbeat every 60 s), every trip and event, is
   scaled to 300 trips; plus 24 hourly and 1 daily stats, a health every 300 s, and the
   self test every 72 h. All of them are then sent through the real uplink over TLS 1.3
   to a local Mosquitto through a byte-counting TCP relay, which measures what the
   terminal uploads above TCP: MQTT framing, TLS records, the handshake with
   certificates, keep-alive pings. TCP/IP headers are added as an estimate (one segment
   per message, 52 bytes IPv4 + TCP with timestamps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from liftwatch.agent.health import assess, machine, outbox_view, sensors_view
from liftwatch.agent.messages import MessageFactory, dumps, lane_of, topic
from liftwatch.agent.replay import build_pipeline
from liftwatch.agent.runtime import status_change_key
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.timebase import Timebase
from liftwatch.agent.uplink import Uplink
from liftwatch.buffer.outbox import Outbox
from liftwatch.drivers.trace import TraceReader
from liftwatch.signal.settings import DetectionParams

REPO = Path(__file__).resolve().parent.parent
LIFT = "31107090271413924705"
TRIPS_PER_DAY = 300
DAY_S = 86400.0


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(work: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / f"m{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                    f"max_queued_messages 1000000\nmax_inflight_messages 0\n{extra}")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def make_certs(d: Path) -> None:
    def o(*a: str) -> None:
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    o("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    o("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench-ca", "-days", "2",
      "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        o("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        o("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext)
        o("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")


class CountingRelay:
    """TCP relay counting bytes each way (terminal -> broker is the upload)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await r.read(65536):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(r, bw, True), self._pipe(br, w, False))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def sample_event(f: MessageFactory, n: int) -> bytes:
    return dumps(f.event({"t": float(n), "type": "event", "code": "door_close_fault",
                          "state": "raised", "id": f"1-{n}", "floor": "12", "sev": "fault",
                          "detail": {"door_s": 20.4, "attempts": 1}}))


async def drain_rate(work: Path, n: int, inflight: int, port: int) -> float:
    f = MessageFactory(LIFT, 1, Timebase())
    ob = Outbox(work / f"outbox-{inflight}", 256 << 20)
    t_event = topic("lift", LIFT, "event")
    batch = [("event", t_event, sample_event(f, i)) for i in range(n)]
    for i in range(0, n, 1000):
        ob.append_many(batch[i:i + 1000])
    s = UplinkSettings(broker="127.0.0.1", port=port, tls=False, inflight_max=inflight)
    u = Uplink(s, LIFT, ob)
    await u.start()
    if not await u.wait_connected(10):
        raise SystemExit("no connection to the local broker")
    t0 = time.perf_counter()
    ok = await u.flush(300)
    dt = time.perf_counter() - t0
    await u.stop(1)
    left = sum(v["depth"] for v in ob.stats()["lanes"].values())
    ob.close()
    if not ok or left:
        raise SystemExit(f"drain incomplete: {left} left")
    return n / dt


def day_messages(trace: Path) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The messages of one day (kind, payload) built from a recorded day of service."""
    f = MessageFactory(LIFT, 1, Timebase())
    out: dict[str, list[bytes]] = {"status": [], "event": [], "trip": [], "stats": [],
                                   "health": []}
    t0 = time.perf_counter()
    with TraceReader(trace) as r:
        p = build_pipeline(r.header, None, id_prefix="1-")
        last_status: tuple[Any, ...] | None = None
        last_sent = -1e9
        pending: dict[str, Any] | None = None
        next_tick, t, trips = 0.1, 0.0, 0

        def tick(now: float) -> None:
            nonlocal last_status, last_sent, pending
            st = p.status()
            key = status_change_key(st)
            if key != last_status:
                last_status, pending = key, st
            if pending is not None and now - last_sent >= 1.0:
                out["status"].append(dumps(f.status(pending)))
                last_sent, pending = now, None
            elif now - last_sent >= 60.0:
                out["status"].append(dumps(f.status(st)))
                last_sent = now

        def take(recs: list[dict[str, Any]]) -> None:
            nonlocal trips
            for x in recs:
                if x["type"] == "event":
                    out["event"].append(dumps(f.event(x)))
                elif x["type"] == "trip":
                    trips += 1
                    out["trip"].append(dumps(f.trip(x)))

        for rec in r:
            while next_tick <= rec.t:
                take(p.advance(next_tick))
                tick(next_tick)
                next_tick = round(next_tick + 0.1, 6)
            t = rec.t
            take(p.feed(rec.t, rec.kind, rec.data))
        take(p.finish(t))
        span = t
        stats_hour = dumps(f.stats(p.stats.close_period("hour", 0, 3_600_000)))
        stats_day = dumps(f.stats(p.stats.close_period("day", 0, 86_400_000)))
        health_body = machine(REPO, time.monotonic() - 3600)
        health_body.update({
            "outbox": outbox_view({"lanes": {ln: {"depth": 0, "bytes": 0, "oldest_age_s": None}
                                             for ln in ("alarm", "event", "record")},
                                   "dropped": {"alarm": 0, "event": 0, "record": 0},
                                   "quarantined": []}),
            "link": {"connected": True, "reconnects": 0, "rtt_ms": 35.2},
            "ctl_link": p.health().get("controller"),
            "clock": {"synced": True, "esterror_ms": 1.2},
            "sensors": sensors_view(p.health()),
            "power": {"src": 0, "batt": 100}})
        health_body["state"], health_body["faults"] = assess(health_body, [], 0)
        health = dumps(f.health(health_body))
    scale = TRIPS_PER_DAY / max(trips, 1)
    # status: what the recorded service sent, scaled by trips; heartbeats for the rest of
    # the day (the hours without trips send one every 60 s)
    n_status = int(len(out["status"]) * scale)
    busy_s = span * scale
    n_status += int(max(0.0, DAY_S - busy_s) / 60.0)
    day: list[tuple[str, bytes]] = []
    for kind, n in (("status", n_status), ("trip", TRIPS_PER_DAY),
                    ("event", round(len(out["event"]) * scale))):
        src = out[kind]
        day += [(kind, src[i % len(src)]) for i in range(n)] if src else []
    day += [("stats", stats_hour)] * 24 + [("stats", stats_day)]
    day += [("health", health)] * int(DAY_S / UplinkSettings(broker="x").health_s)
    self_test = dumps(f.event({"t": 0.0, "type": "event", "code": "self_test",
                               "state": "raised", "id": "1-999", "floor": "1", "sev": "info",
                               "detail": {"periodic": True}}))
    day += [("event", self_test)] * max(1, round(24 / DetectionParams().self_test_h))  # >= 1
    info = {"trace_s": round(span, 1), "trace_trips": trips, "scale": round(scale, 2),
            "pipeline_s": round(time.perf_counter() - t0, 1)}
    return day, info


async def upload_day(work: Path, day: list[tuple[str, bytes]], broker_port: int,
                     certs: Path) -> tuple[int, int]:
    relay = CountingRelay(broker_port)
    await relay.start()
    s = UplinkSettings(broker="127.0.0.1", port=relay.port, tls=True,
                       ca_file=str(certs / "ca.crt"), cert_file=str(certs / "client.crt"),
                       key_file=str(certs / "client.key"), inflight_max=20,
                       status_min_interval_s=0.001)
    ob = Outbox(work / "outbox-day", 256 << 20)
    u = Uplink(s, LIFT, ob)
    await u.start()
    if not await u.wait_connected(10):
        raise SystemExit("no TLS connection to the local broker")
    # one message at a time, as a day spreads them (a burst would share TLS records)
    for kind, payload in day:
        if kind == "status":
            u.offer_status(payload)
        else:
            msg = json.loads(payload)
            ob.append(lane_of(kind, msg), topic("lift", LIFT, kind), payload)
            u.wake()
        await asyncio.sleep(0.004)
    await u.flush(120)
    await asyncio.sleep(0.3)
    await u.stop(2)
    ob.close()
    relay.close()
    return relay.up, relay.down


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--inflight", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--repeat", type=int, default=3, help="drain runs per setting")
    ap.add_argument("--trace", type=Path,
                    default=REPO / "hil_tests" / "traces" / "normal_day.jsonl.gz")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, port = start_mosquitto(work)
        try:
            print("== drain rate to a local Mosquitto, QoS 1, acked in the outbox on PUBACK "
                  f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            for inflight in args.inflight:
                rates = sorted(asyncio.run(drain_rate(work, args.messages, inflight, port))
                               for _ in range(args.repeat))
                print(f"  inflight_max {inflight:4d}: {args.messages} messages, median "
                      f"{rates[len(rates) // 2]:6.0f} messages/s (runs: "
                      f"{', '.join(f'{r:.0f}' for r in rates)})   (target >= 1500)")
        finally:
            proc.kill()
        certs = work / "certs"
        certs.mkdir()
        make_certs(certs)
        tls = (f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
               f"keyfile {certs / 'server.key'}\nrequire_certificate true\n")
        proc, port = start_mosquitto(work, tls)
        try:
            print(f"== bytes per day, {TRIPS_PER_DAY} trips, from {args.trace.name}")
            day, info = day_messages(args.trace)
            print(f"  recorded service: {info['trace_s']} s, {info['trace_trips']} trips "
                  f"(x{info['scale']} for a day; pipeline took {info['pipeline_s']} s)")
            kinds: dict[str, tuple[int, int]] = {}
            for kind, payload in day:
                n, b = kinds.get(kind, (0, 0))
                kinds[kind] = (n + 1, b + len(payload))
            for kind, (n, b) in sorted(kinds.items()):
                print(f"  {kind:7s} {n:6d} messages  {b:9d} payload bytes  "
                      f"(avg {b / n:6.0f} B)")
            payload_total = sum(b for _, b in kinds.values())
            n_total = sum(n for n, _ in kinds.values())
            up, down = asyncio.run(upload_day(work, day, port, certs))
            keepalive = int(DAY_S / 60) * (2 + 22)  # PINGREQ in a TLS 1.3 record, 1/min
            tcpip = (n_total + int(DAY_S / 60)) * 52
            print(f"  payload            {payload_total:9d} B")
            print(f"  measured upload    {up:9d} B  (MQTT 5 over TLS 1.3, mutual TLS, "
                  f"one session; {down} B down)")
            print(f"  + keep-alive       {keepalive:9d} B  (PINGREQ every 60 s)")
            print(f"  = above TCP        {up + keepalive:9d} B  "
                  f"({(up + keepalive) / 1e6:.3f} MB/day, target <= 1 MB)")
            print(f"  + TCP/IP estimate  {tcpip:9d} B  -> {(up + keepalive + tcpip) / 1e6:.3f} "
                  "MB/day on the wire")
        finally:
            proc.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
