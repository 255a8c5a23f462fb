"""Helpers of the uplink, command and runtime tests: a platform-side observer on the real
broker, test certificates made with the ``openssl`` command, JSON Schema checks."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
from liftwatch.agent import messages
from paho.mqtt.enums import CallbackAPIVersion

#: a broker that saves its state every second (readable and writable by it: ``user root``)
#: and queues QoS 0 for offline persistent sessions, as a platform broker set up for it does
AUTOSAVE_CONF = "autosave_interval 1\nqueue_qos0_messages true\nuser root\n"


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Observer:
    """The platform's side: a persistent-session subscriber to ``lift/#`` (QoS 1).

    Its session (subscription and queue) survives a broker SIGKILL when the broker
    autosaves (``AUTOSAVE_CONF``), so messages the agent sends while it is away are
    queued for it as they would be for a real platform consumer.
    """

    port: int
    pattern: str = "lift/#"
    client_id: str = "platform-observer"
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=False)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("observer did not subscribe")

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            c.subscribe(self.pattern, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(Received(m.topic, bytes(m.payload), bool(m.retain)))

    def on(self, suffix: str) -> list[Received]:
        with self.lock:
            return [r for r in self.got if r.topic.endswith("/" + suffix)]

    def wait_for(self, pred: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = list(self.got)
            if pred(snapshot):
                return True
            time.sleep(0.02)
        return False

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = messages.schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)  # the schema file itself is valid
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate(kind: str, obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``obj`` is a valid ``kind`` message."""
    err = jsonschema.exceptions.best_match(_validator(kind).iter_errors(obj))
    if err is not None:
        raise err


def kind_of_topic(topic: str) -> str | None:
    suffix = topic.split("/", 2)[2]
    return {"status": "status", "event": "event", "trip": "trip", "stats": "stats",
            "condition": "condition", "health": "health", "cmd/reply": "cmd_reply"}.get(suffix)


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    assert exe, "the openssl command is needed to make test certificates"
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-days",
             "2", "-out", f"{name}.crt", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, cn: str, ext: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out",
             f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
             f"{name}.crt", cwd=d)


def make_certs(d: Path) -> Path:
    """A test CA, a server certificate for 127.0.0.1/localhost, a client certificate of
    that CA, and a client certificate of another ("rogue") CA that the broker refuses."""
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "rogue")
    _leaf(d, "server", "ca", "localhost",
          "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "ca", "lw-L1", "extendedKeyUsage=clientAuth\n")
    _leaf(d, "wrong", "rogue", "lw-L1", "extendedKeyUsage=clientAuth\n")
    return d


def tls_listener_conf(certs: Path, require_certificate: bool = True) -> str:
    """Lines that turn the Broker fixture's listener into a TLS one (mosquitto 2)."""
    # ``user root``: started as root, mosquitto would switch to its own user, which cannot
    # read the test's private files (nor write its log and persistence there).
    return ("user root\n"
            f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\n"
            f"keyfile {certs / 'server.key'}\ntls_version tlsv1.2\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n")


def wait_saved(workdir: Path, since: float, timeout: float = 5.0) -> None:
    """Wait until a broker with AUTOSAVE_CONF has saved its state after ``since`` (wall
    time): from then on the sessions made before ``since`` survive a SIGKILL."""
    db = workdir / "mosq-data" / "mosquitto.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists() and db.stat().st_mtime > since + 0.01:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the broker did not save its state in {timeout} s")


#: the lift of the entrapment trace (its registration code)
LIFT = "31103593381743981324"


def write_config(d: Path, port: int, **uplink: Any) -> Path:
    """A terminal config for trace runs against a broker on loopback (no TLS)."""
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in uplink.items())
    cfg = d / "terminal.toml"
    cfg.write_text(
        f'[terminal]\nlift_id = "{LIFT}"\n\n'
        '[lift]\nlandings = ["1", "2"]\nlanding_heights_m = [0.0, 3.0]\n\n'
        "[controller]\nenabled = false\n\n"
        f'[uplink]\nbroker = "127.0.0.1"\nport = {port}\ntls = false\n'
        f"reconnect_min_s = 0.2\nreconnect_max_s = 1.0\n{extra}\n"
        f'[storage]\ndata_dir = "{d / "data"}"\n')
    return cfg
