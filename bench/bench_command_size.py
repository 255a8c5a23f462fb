"""What an oversized downlink command costs the agent's memory (issue 23).

    .venv/bin/python bench/bench_command_size.py [--mb 250]

``liftwatch run --trace`` (a piece of the entrapment trace) against a local Mosquitto,
once over MQTT 3.1.1 and once over MQTT 5; when it is running, one command of ``--mb``
MB is published on its ``cmd`` topic, then a small one. Prints the agent process's
peak resident set (``VmHWM``) before and after, and what it replied. For comparison the
same publish is received by a plain paho-mqtt 2.x client in a child process (what the
agent did before: paho reads a whole packet into memory; issue 23 measured a 250 MB
command taking the agent to 905 MB). Needs about 3 x ``--mb`` of free memory (the
sender, the broker).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hil_tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from attack_helpers import CMD, AgentRun, attack_config, press_trace, wait_alarm  # noqa: E402
from mosquitto import Broker  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from uplink_helpers import Observer  # noqa: E402

PLAIN_PAHO = """
import sys, time, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
got = []
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-paho")
c.on_connect = lambda c, *a: c.subscribe(sys.argv[2], qos=1)
c.on_message = lambda c, u, m: got.append(len(m.payload))
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
print("ready", flush=True)
deadline = time.monotonic() + 120
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print(got[0] if got else 0, hwm, flush=True)
"""


def publish(port: int, payload: bytes) -> float:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sender")
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.monotonic()
    try:
        c.publish(CMD, payload, qos=1).wait_for_publish(120)
    finally:
        c.loop_stop()
        c.disconnect()
    return time.monotonic() - t0


def big_payload(mb: int) -> bytes:
    size = mb * 1024 * 1024
    head = b'{"id":"huge","op":"config_set","args":{"patch":{"uplink":{"x":"'
    return head + b"a" * (size - len(head) - 5) + b'"}}}}'


def agent_case(work: Path, broker: Broker, protocol: str, payload: bytes) -> None:
    d = work / protocol
    d.mkdir()
    obs = Observer(broker.port, client_id=f"bench-obs-{protocol}")
    cfg = attack_config(d, broker.port, protocol=protocol)
    agent = AgentRun(cfg, press_trace(d))
    try:
        wait_alarm(obs)
        base = agent.peak_rss_kb()
        secs = publish(broker.port, payload)
        obs.publish(CMD, b'{"id":"after","op":"config_get"}')
        obs.wait_for(lambda g: any(b'"after"' in m.payload for m in g
                                   if m.topic.endswith("/cmd/reply")), 60)
        peak = agent.peak_rss_kb()
        reply = next((json.loads(m.payload) for m in obs.on("reply")
                      if b'"huge"' in m.payload), None)
        what = ("no reply (the broker kept it back)" if reply is None
                else f"reply ok={reply['ok']}: {reply.get('error', '')[:60]}")
        print(f"agent, {protocol:7}: peak RSS {base / 1024:6.1f} MB before, {peak / 1024:6.1f} "
              f"MB after (+{(peak - base) / 1024:.1f} MB); sent in {secs:.1f} s; {what}")
        agent.stop()
    finally:
        agent.kill()
        obs.close()


def plain_case(broker: Broker, payload: bytes) -> None:
    p = subprocess.Popen([sys.executable, "-c", PLAIN_PAHO, str(broker.port), CMD],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    p.stdout.readline()
    time.sleep(0.5)
    publish(broker.port, payload)
    size, hwm = p.stdout.readline().split()
    p.wait(30)
    print(f"plain paho-mqtt 2.x subscriber: received {int(size) / 2**20:.0f} MB, peak RSS "
          f"{int(hwm) / 1024:.1f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=250)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lw-cmdsize-"))
    broker = Broker(workdir=work)
    broker.start()
    try:
        payload = big_payload(args.mb)
        print(f"one command of {args.mb} MB on {CMD}")
        for protocol in ("mqtt311", "mqtt5"):
            agent_case(work, broker, protocol, payload)
        plain_case(broker, payload)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
