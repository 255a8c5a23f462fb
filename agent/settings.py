"""Settings owned by the agent: the terminal's identity and the uplink to the platform."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: why the reporting intervals have the ranges they have (REFERENCE.md "Safe ranges")
HEARTBEAT_WHY = ("a silent terminal is seen as offline only after this: at most an hour; at "
                 "least 1 s, one status a second (about 20 MB a day: for a commissioning or "
                 "demo view, not for a metered link)")
STATUS_WHY = ("bounds the status sent on change: at least 0.5 s (a moving car changes "
              "state many times a second), at most a minute")
HEALTH_WHY = ("a terminal's faults reach the platform only this often when nothing changes: "
              "at most an hour; at least 30 s (a health message is about 1 kB)")
#: What a lift id may hold: it is one MQTT topic level and part of the client id, so no
#: NUL, no wildcard (+ #), no level separator (/), nothing a log or a broker could take
#: for something else, and a length every broker and platform database accepts.
LIFT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The topic prefix: 1 to 4 levels of the same characters (1 to 32 each), joined by /.
TOPIC_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,32}(?:/[A-Za-z0-9._-]{1,32}){0,3}")


@dataclass(frozen=True)
class TerminalSettings:
    """Who this terminal is."""

    lift_id: str = field(
        metadata={"doc": "The lift's registration code (used in topics and the client id): "
                  "1 to 64 of `A-Z a-z 0-9 . _ -` (no spaces, `/`, `+`, `#` or control "
                  "characters)."}
    )
    name: str = field(default="", metadata={"doc": "Free text for technicians (address, car)."})


@dataclass(frozen=True)
class UplinkSettings:
    """MQTT connection to the city platform (platform-protocol.md)."""

    broker: str = field(metadata={"doc": "Broker host name or address."})
    port: int = field(default=8883, metadata={"doc": "Broker port.", "min": 1, "max": 65535})
    protocol: str = field(
        default="mqtt5", metadata={"doc": "MQTT protocol version.",
                                   "choices": ["mqtt5", "mqtt311"]},
    )
    tls: bool = field(
        default=True,
        metadata={"doc": "TLS with server verification. false sends in plaintext and is "
                  "warned about at every start."},
    )
    ca_file: str = field(default="", metadata={"doc": "CA bundle for the broker's certificate "
                                               "(empty: the system's)."})
    cert_file: str = field(default="", metadata={"doc": "Client certificate (mutual TLS)."})
    key_file: str = field(default="", metadata={"doc": "Client private key (mutual TLS).",
                                                "secret": True})
    credentials_file: str = field(
        default="",
        metadata={"doc": "TOML file with username and password; must not be readable by "
                  "other users.", "secret": True},
    )
    topic_prefix: str = field(
        default="lift",
        metadata={"doc": "First level(s) of every topic: 1 to 4 levels of 1 to 32 of "
                  "`A-Z a-z 0-9 . _ -`, joined by `/`."},
    )
    platform_profile: str = field(
        default="shanghai",
        metadata={"doc": "Platform code profile: a file firmware_config/platforms/NAME.toml."},
    )
    keepalive_s: int = field(default=60, metadata={"doc": "MQTT keep-alive.", "unit": "s",
                                                   "min": 5, "max": 65535})
    session_expiry_s: int = field(
        default=86400, metadata={"doc": "Persistent session expiry (MQTT 5).", "unit": "s",
                                 "min": 0, "max": 0xFFFFFFFF},
    )
    heartbeat_s: float = field(
        default=60.0, metadata={"doc": "status is sent at least this often.", "unit": "s",
                                "min": 1, "max": 3600, "remote": True, "weakens": "up",
                                "why": HEARTBEAT_WHY},
    )
    status_min_interval_s: float = field(
        default=1.0, metadata={"doc": "status on change at most this often.", "unit": "s",
                               "min": 0.5, "max": 60, "remote": True, "weakens": "up",
                               "why": STATUS_WHY},
    )
    health_s: float = field(
        default=300.0, metadata={"doc": "health is sent this often and on change.",
                                 "unit": "s", "min": 30, "max": 3600, "remote": True,
                                 "weakens": "up", "why": HEALTH_WHY},
    )
    inflight_max: int = field(
        default=20, metadata={"doc": "QoS 1 messages awaiting PUBACK at once.", "min": 1,
                              "max": 1000},
    )
    reconnect_min_s: float = field(
        default=1.0, metadata={"doc": "Reconnect back-off base (full jitter) while an alarm "
                               "waits, and for all retries when reconnect_window_s is "
                               "smaller.", "unit": "s", "gt": 0, "max": 60},
    )
    reconnect_max_s: float = field(
        default=120.0, metadata={"doc": "Longest reconnect back-off.", "unit": "s", "gt": 0,
                                 "max": 3600},
    )
    reconnect_window_s: float = field(
        default=11.0, metadata={"doc": "The first retry after a drop is spread over 0 to "
                                "this (an unsent alarm retries at once); later retries "
                                "double from it (platform-protocol.md, Fleet).", "unit": "s",
                                "min": 0},
    )
    reconnect_stable_s: float = field(
        default=30.0, metadata={"doc": "The back-off starts again from the first retry only "
                                "after a connection stayed up this long (a broker that "
                                "accepts and drops sees it grow).", "unit": "s", "min": 0},
    )
    brokers: list[str] = field(
        default_factory=list,
        metadata={"doc": "More addresses of the same platform broker (cluster nodes), "
                  "\"host\" or \"host:port\" (port default: port); with broker, tried in an "
                  "order shuffled per terminal."},
    )
