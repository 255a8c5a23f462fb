"""The platform side of the rig: subscribe like the city platform, and score what arrives.

The observer is an MQTT client of its own (paho), subscribed to the terminal's topics
on the same broker the agent publishes to. It timestamps every message on arrival
(monotonic clock), answers alarms with ``ack`` like the command centre when asked to,
and scores a run against a scenario's ground truth: missed events, false events,
latency from the onset to the message at the broker, duplicates (same ``id``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: messages the terminal sends with a unique ``id`` (commands and their replies carry the
#: platform's command id instead)
UPLINK_KINDS = frozenset({"status", "event", "trip", "stats", "health"})


@dataclass
class Arrival:
    t: float  # monotonic time of arrival
    topic: str
    payload: Any
    retained: bool


class Observer:
    """Collect every message of one terminal; optionally acknowledge alarms."""

    def __init__(self, host: str, port: int, prefix: str, lift_id: str,
                 auto_ack_after_s: float | None = None) -> None:
        self.prefix, self.lift_id = prefix, lift_id
        self.base = f"{prefix}/{lift_id}"
        self.arrivals: list[Arrival] = []
        self.auto_ack_after_s = auto_ack_after_s
        self._acked: set[str] = set()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"platform-observer-{lift_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)
        self.host, self.port = host, port

    def start(self, timeout: float = 10.0) -> None:
        # a persistent session, as a platform's consumer has: what the terminal publishes
        # while the observer reconnects after a broker outage is kept for it
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(self.host, self.port, keepalive=10, clean_start=False,
                                  properties=props)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError("observer could not connect to the broker")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        client.subscribe(f"{self.base}/#", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = msg.payload.decode(errors="replace")
        arrival = Arrival(time.monotonic(), msg.topic, payload, bool(msg.retain))
        with self._lock:
            self.arrivals.append(arrival)
        if (self.auto_ack_after_s is not None and msg.topic == f"{self.base}/event"
                and isinstance(payload, dict) and payload.get("sev") == "alarm"
                and payload.get("state") == "raised"):
            eid = str(payload.get("eid"))
            if eid not in self._acked:
                self._acked.add(eid)
                threading.Timer(self.auto_ack_after_s, self.ack, args=(eid,)).start()

    def ack(self, eid: str) -> None:
        cmd = {"id": f"ack-{eid}", "op": "ack", "args": {"eid": eid}}
        self.client.publish(f"{self.base}/cmd", json.dumps(cmd), qos=1)

    def messages(self, kind: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.topic == f"{self.base}/{kind}"]

    def events(self) -> list[Arrival]:
        return self.messages("event")

    def wait_for(self, pred: Any, timeout: float) -> Arrival | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for a in self.arrivals:
                    if pred(a):
                        return a
            time.sleep(0.05)
        return None


@dataclass
class Expect:
    """An event that must reach the platform: raised after ``onset`` within ``timer + slack``."""

    code: str
    onset: float  # scenario time of the onset
    timer: float  # the rule's timer in the config under test
    state: str = "raised"
    slack: float = 2.0


@dataclass
class Score:
    scenario: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false: list[dict[str, Any]] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    duplicates_with_other_content: int = 0
    delivered: int = 0
    trips_expected: int | None = None
    trips_delivered: int = 0

    @property
    def lost_trips(self) -> int:
        if self.trips_expected is None:
            return 0
        return max(0, self.trips_expected - self.trips_delivered)

    @property
    def passed(self) -> bool:
        return not (self.missed or self.false or self.late or self.duplicates_with_other_content
                    or self.lost_trips)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "passed": self.passed, "rows": self.rows,
                "missed": self.missed, "false": self.false, "late": self.late,
                "delivered": self.delivered, "trips_expected": self.trips_expected,
                "trips_delivered": self.trips_delivered,
                "duplicates_with_other_content": self.duplicates_with_other_content}

    def table(self) -> str:
        lines = [f"scenario {self.scenario}: {'PASS' if self.passed else 'FAIL'}",
                 f"  {'code':<24} {'state':<8} {'onset':>7} {'limit':>7} {'latency':>8}  result"]
        for r in self.rows:
            lat = "-" if r["latency_s"] is None else f"{r['latency_s']:.2f}"
            lines.append(f"  {r['code']:<24} {r['state']:<8} {r['onset']:7.1f} "
                         f"{r['limit_s']:7.1f} {lat:>8}  {r['result']}")
        for f in self.false:
            lines.append(f"  FALSE EVENT {f['code']} {f['state']} at +{f['t']:.1f} s")
        lines.append(f"  messages delivered: {self.delivered}; trips delivered "
                     f"{self.trips_delivered} of {self.trips_expected}")
        return "\n".join(lines)


def score(name: str, arrivals: list[Arrival], t_start: float, expects: list[Expect],
          allowed: set[str] | frozenset[str] = frozenset(),
          outages: list[tuple[float, float]] | None = None,
          trips_expected: int | None = None) -> Score:
    """Compare the event messages that arrived with the scenario's ground truth.

    ``t_start`` is the monotonic time at which scenario time 0 was played. An event
    code that is neither expected nor in ``allowed`` is a false event. Messages with
    the same ``id`` must be byte-identical apart from transport (at-least-once). An
    event whose deadline falls inside a broker outage cannot reach the broker before
    the outage ends: its deadline then counts from the end of the outage.
    """
    sc = Score(name, delivered=len(arrivals), trips_expected=trips_expected)
    sc.trips_delivered = len({a.payload.get("id") for a in arrivals
                              if a.topic.endswith("/trip") and isinstance(a.payload, dict)})
    by_id: dict[str, Any] = {}
    for a in arrivals:
        kind = a.topic.rsplit("/", 1)[-1]
        if kind in UPLINK_KINDS and isinstance(a.payload, dict) and "id" in a.payload \
                and not a.retained:
            prev = by_id.setdefault(a.payload["id"], a.payload)
            if prev != a.payload:
                sc.duplicates_with_other_content += 1
    events = [a for a in arrivals if a.topic.endswith("/event") and isinstance(a.payload, dict)]
    used: set[int] = set()
    for e in expects:
        limit = e.timer + e.slack
        for a_, b_ in outages or []:
            if a_ <= e.onset + e.timer < b_:
                limit = b_ - e.onset + e.slack
        hit = None
        for i, a in enumerate(events):
            p = a.payload
            if i in used or p.get("code") != e.code or p.get("state") != e.state:
                continue
            if a.t - t_start < e.onset - 0.5:
                continue
            hit = i
            break
        row: dict[str, Any] = {"code": e.code, "state": e.state, "onset": e.onset,
                               "limit_s": limit, "latency_s": None, "result": "missed"}
        if hit is None:
            sc.missed.append(f"{e.code} {e.state} (onset {e.onset:.1f} s)")
        else:
            used.add(hit)
            latency = events[hit].t - t_start - e.onset
            row["latency_s"] = round(latency, 3)
            row["result"] = "ok" if latency <= limit else "late"
            if latency > limit:
                sc.late.append(f"{e.code} {e.state}: {latency:.1f} s > {limit:.1f} s")
        sc.rows.append(row)
    expected_codes = {e.code for e in expects}
    for i, a in enumerate(events):
        p = a.payload
        if i in used or p.get("code") in expected_codes or p.get("code") in allowed:
            continue
        sc.false.append({"code": p.get("code"), "state": p.get("state"),
                         "t": round(a.t - t_start, 2)})
    return sc
