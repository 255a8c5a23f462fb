"""A real clustered MQTT broker on loopback for failover tests (issue 19, item 3).

Three aedes nodes (``tests/cluster/aedes_node.mjs``, MQTT 3.1.1) share their sessions,
retained messages and offline QoS 1 queues through one Redis (aedes-persistence-redis)
and their publishes through Redis pub/sub (mqemitter-redis). HAProxy in front of the
terminal-facing nodes gives the terminals one address, as a city's load balancer does;
the platform's consumers use a node of their own, so killing a terminal's node never
takes the test's observer with it.

``scripts/setup`` installs node, npm, redis-server and haproxy and the pinned npm
packages (``tests/cluster/package-lock.json``); :func:`missing` says what is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosquitto import free_port  # hil_tests/, on the path the tests' conftest sets

HERE = Path(__file__).resolve().parent / "cluster"
NODE_SCRIPT = HERE / "aedes_node.mjs"


def missing() -> list[str]:
    """What the cluster needs and this machine lacks (empty when it can run)."""
    out = [p for p in ("node", "redis-server", "haproxy") if shutil.which(p) is None]
    if not (HERE / "node_modules" / "aedes").is_dir():
        out.append("tests/cluster/node_modules (npm ci, done by scripts/setup)")
    return out


def wait_port(port: int, timeout: float = 15.0,
              proc: subprocess.Popen[Any] | None = None) -> None:
    """Until something listens on ``port``; ``proc``'s end is an error at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ClusterStartError(f"{proc.args[0]} exited ({proc.returncode}) before "
                                    f"listening on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ClusterStartError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def redis_answers(port: int) -> bool:
    """The port is Redis's (a free port picked at once by another test's server is not)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class ClusterStartError(RuntimeError):
    """A part of the cluster did not come up (a port taken meanwhile, a process died)."""


@dataclass
class Node:
    """One aedes process and what it printed: connects and disconnects by client id."""

    name: str
    port: int
    proc: subprocess.Popen[str]
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, verb, client)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"(connect|disconnect) (\S+)", line)
            if m:
                with self.lock:
                    self.events.append((time.monotonic(), m.group(1), m.group(2)))

    def holds(self, client_id: str) -> bool:
        with self.lock:
            last = [verb for _t, verb, c in self.events if c == client_id]
        return bool(last) and last[-1] == "connect"

    def connects(self, client_id: str, after: float = 0.0) -> list[float]:
        with self.lock:
            return [t for t, verb, c in self.events
                    if c == client_id and verb == "connect" and t >= after]


class Cluster:
    """Redis, ``nodes`` aedes nodes and HAProxy in front of the first ``front`` of them."""

    def __init__(self, workdir: Path, nodes: int = 3, front: int = 2) -> None:
        self.workdir = workdir
        self.n_nodes = nodes
        self.n_front = front
        self.redis: subprocess.Popen[bytes] | None = None
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.nodes: list[Node] = []
        self.redis_port = free_port()
        self.front_port = free_port()

    def start(self, admin_socket: str | None = None, tries: int = 3) -> Cluster:
        """Start Redis, the nodes and HAProxy; ``admin_socket``: HAProxy's admin socket
        (``disable server nodes/n2``, ``shutdown sessions server nodes/n2``, ...).

        Ports are picked free and then bound by another process: a server of a test on
        the other worker can take one in between. Such a start is stopped and tried
        again on fresh ports (``tries`` in all), saying why if none succeeds."""
        for attempt in range(tries):
            try:
                return self._start(admin_socket)
            except ClusterStartError:
                self.stop()
                if attempt == tries - 1:
                    raise
                self.nodes = []
                self.redis_port = free_port()
                self.front_port = free_port()
        raise AssertionError("unreachable")

    def _start(self, admin_socket: str | None) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.redis_port, proc=self.redis)
        if not redis_answers(self.redis_port):
            raise ClusterStartError(f"127.0.0.1:{self.redis_port} is not this cluster's Redis")
        for i in range(self.n_nodes):
            self.start_node(i)
        cfg = self.workdir / "haproxy.cfg"
        servers = "".join(f"    server {n.name} 127.0.0.1:{n.port} check inter 300 fall 1 "
                          "rise 2\n" for n in self.nodes[:self.n_front])
        cfg.write_text(
            "global\n    maxconn 4000\n"
            + (f"    stats socket {admin_socket} mode 600 level admin\n" if admin_socket else "")
            +
            "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 300s\n"
            "    timeout server 300s\n    retries 2\n    option redispatch\n"
            f"frontend mqtt\n    bind 127.0.0.1:{self.front_port}\n"
            "    default_backend nodes\n"
            f"backend nodes\n    balance leastconn\n{servers}")
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.front_port, proc=self.haproxy)
        return self

    def start_node(self, i: int) -> Node:
        """Start node ``i`` (again, on its old port, after a kill)."""
        port = self.nodes[i].port if i < len(self.nodes) else free_port()
        proc = subprocess.Popen(
            ["node", str(NODE_SCRIPT), "--id", f"n{i + 1}", "--port", str(port),
             "--redis-port", str(self.redis_port)],
            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        node = Node(f"n{i + 1}", port, proc)
        threading.Thread(target=node.read, daemon=True, name=f"aedes-{node.name}").start()
        if i < len(self.nodes):
            self.nodes[i] = node
        else:
            self.nodes.append(node)
        wait_port(port, proc=proc)
        return node

    def node_holding(self, client_id: str) -> int | None:
        for i, n in enumerate(self.nodes):
            if n.proc.poll() is None and n.holds(client_id):
                return i
        return None

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``: its clients' TCP connections drop, HAProxy marks it down."""
        self.nodes[i].proc.send_signal(signal.SIGKILL)
        self.nodes[i].proc.wait(5)

    def stop(self) -> None:
        for p in [n.proc for n in self.nodes] + [self.haproxy, self.redis]:
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


def env_without_proxy() -> dict[str, str]:
    """The environment for the agent: no proxy variables (the cluster is on loopback)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
