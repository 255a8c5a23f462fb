"""Failover on a real clustered broker (issue 19, item 3).

The agent (``run --trace`` of the entrapment example) talks MQTT 3.1.1 to a three-node
aedes cluster with its sessions in Redis, through HAProxy (``tests/cluster.py``), as a
city's terminals talk to a clustered platform broker. The node holding its connection is
killed: the agent must be back on another node within 5 s and receive the QoS 1 command
the platform sent while it was away. Then the terminal-facing nodes are cut off while
the entrapment and the alarm press happen: when a node comes back, the alarms go out
first, and every event and trip the pipeline decided reaches the platform.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster, env_without_proxy, missing
from liftwatch.agent.replay import build_pipeline, replay_records
from liftwatch.drivers.trace import TraceReader
from test_runtime_trace import CUT_FROM, CUT_START, cut_trace, entrapment_example
from uplink_helpers import LIFT, Observer, write_config

SPEED = 4.0
AGENT_ID = f"lw-{LIFT}-replay"   # a re-run's own client id (platform-protocol.md)


def haproxy_cmd(sock: str, cmd: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(cmd.encode() + b"\n")
        return s.recv(65536).decode()


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    absent = missing()
    if absent:
        pytest.fail("the test cluster needs " + ", ".join(absent) + ": run scripts/setup")
    c = Cluster(tmp_path / "cluster")
    # a short path for HAProxy's admin socket (a Unix socket path is at most 107 bytes)
    c.admin_sock = str(Path(tempfile.mkdtemp(prefix="lwha")) / "admin.sock")
    c.start(admin_socket=c.admin_sock)
    yield c
    c.stop()


@pytest.mark.realtime(45)
@pytest.mark.timeout(150)
def test_node_loss_and_cut_off_front(cluster: Cluster, tmp_path: Path) -> None:
    trace = tmp_path / "entrapment_cut.jsonl"
    cut_trace(entrapment_example(), trace, CUT_FROM, CUT_FROM + 140.0, start=CUT_START)
    with TraceReader(trace) as r:
        oracle = [x for x in replay_records(r, build_pipeline(r.header, None))
                  if x["type"] in ("event", "trip")]
    # the platform's consumer: a node of its own, a persistent session
    obs = Observer(cluster.nodes[2].port)
    assert obs.subscribed.wait(10)
    cfg = write_config(tmp_path, cluster.front_port, protocol="mqtt311")
    agent = subprocess.Popen(
        [sys.executable, "-m", "liftwatch.agent.cli", "run", "--allow-root", "--config", str(cfg),
         "--trace", str(trace), "--other-lift", "--speed", str(SPEED), "--drain-s", "20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env_without_proxy())
    t_start = time.monotonic()
    try:
        def trace_now() -> float:
            return (time.monotonic() - t_start) * SPEED

        deadline = time.monotonic() + 20
        while cluster.node_holding(AGENT_ID) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = cluster.node_holding(AGENT_ID)
        assert first is not None, "the agent never connected through HAProxy"
        # --- 1. kill the node holding the terminal; the platform sends a command at once
        while trace_now() < 30.0:
            time.sleep(0.05)
        t_kill = time.monotonic()
        cluster.kill(first)
        obs.publish(f"lift/{LIFT}/cmd", json.dumps({"id": "during-outage", "op": "snapshot",
                                                    "args": {}}).encode(), qos=1)
        t_cmd = time.monotonic()
        other = 1 - first
        back = []
        while not back and time.monotonic() < t_kill + 10:
            back = cluster.nodes[other].connects(AGENT_ID, after=t_kill)
            time.sleep(0.05)
        assert back, "the agent did not come back on the other node"
        recovery = back[0] - t_kill
        assert recovery <= 5.0, f"back {recovery:.2f} s after the node loss"
        assert back[0] > t_cmd, "the command was not sent while the agent was away"
        assert obs.wait_for(lambda g: any(m.topic.endswith("/cmd/reply")
                                          and m.json().get("id") == "during-outage"
                                          and m.json().get("ok") for m in g), 10), \
            "the QoS 1 command sent during the outage was not delivered"
        # --- 2. cut the terminal-facing side off while the entrapment and the press happen
        while trace_now() < 45.0:
            time.sleep(0.05)
        haproxy_cmd(cluster.admin_sock, f"disable server nodes/n{other + 1}")
        haproxy_cmd(cluster.admin_sock, f"shutdown sessions server nodes/n{other + 1}")
        while trace_now() < 132.0:
            time.sleep(0.05)
        n_before = len(obs.got)
        cluster.start_node(first)              # the lost node comes back, empty
        assert agent.wait(60) == 0, agent.stderr.read()[-2000:] if agent.stderr else ""
    finally:
        if agent.poll() is None:
            agent.kill()
    t_end = time.monotonic()
    assert obs.wait_for(lambda g: any(m.topic.endswith("/online") and m.payload == b"0"
                                      for m in g), 10)
    obs.close()
    events = [m.json() for m in obs.got if m.topic == f"lift/{LIFT}/event"]
    trips = [m.json() for m in obs.got if m.topic == f"lift/{LIFT}/trip"]
    # nothing the pipeline decided was lost (at least once: duplicates allowed)
    want_events = {(x["code"], x["state"], x["id"].lstrip("e")) for x in oracle
                   if x["type"] == "event"}
    got_events = {(e["code"], e["state"], e["eid"].split("-", 1)[1]) for e in events}
    assert want_events <= got_events, want_events - got_events
    assert len({t["id"] for t in trips}) == sum(1 for x in oracle if x["type"] == "trip")
    # the backlog of the cut: alarms first, then other events, then records
    lanes = []
    for m in obs.got[n_before:]:
        kind = m.topic.rsplit("/", 1)[-1]
        if kind == "event":
            lanes.append("alarm" if m.json()["sev"] == "alarm" and m.json()["state"] == "raised"
                         else "event")
        elif kind in ("trip", "stats", "health"):
            lanes.append("record")
    # (the entrapment and the press were raised during the cut: both alarms wait)
    assert lanes.count("alarm") >= 2 and "record" in lanes, lanes
    first_record = lanes.index("record")
    assert lanes[0] == "alarm" and "alarm" not in lanes[first_record:], lanes
    assert "event" not in lanes[first_record:], lanes
    print(f"node loss: back in {recovery:.2f} s; run {t_end - t_start:.1f} s")
