"""The reconnect law: when one terminal of a fleet of 10⁵ tries its broker again.

Pure (no clock, no socket, no thread): the uplink and the fleet simulation
(bench/fleet_sim.py) drive this very code, the first with one terminal on a real
broker, the second with 10⁵–10⁶ of them against a model broker, so the figures the
simulation gives are those of the agent's own law (platform-protocol.md, "Fleet").

Why each rule (a broker restart drops every terminal of a city in the same second):

- **The first retry after a drop is spread** over ``[0, window_s]`` (11 s): with
  "full jitter" alone every terminal retried within its first second (1,077 attempts
  in that second for 1,000 terminals); 11 s keeps that second under 10 % of the fleet
  (9.2 %). A terminal holding an unsent alarm retries at once and then on the short
  ``min_s`` doubling: alarms are rare, and must not wait.
- **Later retries double** from that window: ``uniform(0, min(max_s, base * 2**k))``
  with ``base = max(window_s, min_s)``, so a 30 s outage leaves the fleet spread over
  tens of seconds when the broker comes back (peak 3.6 % of N a second), and every
  terminal is back within the outage + ``max_s``.
- **The back-off resets only after a connection has stayed up** ``stable_s`` (30 s):
  a broker that accepts and drops at once (a cluster whose session node is down) sees
  the back-off grow, not one connect a second (≤ 15 a minute, EMQX's flapping ban).
- **Busy and rate-limit refusals back off longer**: server busy (0x89), quota
  exceeded (0x97), connection rate exceeded (0x9F), and MQTT 3.1.1's "server
  unavailable" (0x88): one more doubling, and at least half the cap (no draw near 0).
- **Redirects are followed**: use another server (0x9C, once) and server moved
  (0x9D, for the rest of the run) with their Server Reference; a list of brokers is
  tried in an order shuffled per terminal, so a cluster's nodes share the fleet.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liftwatch.agent.settings import UplinkSettings

#: CONNACK / DISCONNECT reason codes after which the broker wants fewer connects
BUSY = {0x88: "server unavailable", 0x89: "server busy", 0x97: "quota exceeded",
        0x9F: "connection rate exceeded"}
USE_ANOTHER_SERVER = 0x9C
SERVER_MOVED = 0x9D
#: redirects followed in a row without a connection; past this they count as failures
MAX_REDIRECTS = 4

_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+))"
                      r"(?::(?P<port>\d{1,5}))?$")


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port); ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError(f"a broker address must be a string, got {text!r}")
    m = _ADDRESS.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not host or host:port (no scheme, no path)")
    port = int(m.group("port")) if m.group("port") else default_port
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not in 1..65535")
    return m.group("v6") or m.group("host"), port


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(max, min * 2**attempt)]."""
    cap = min(max_s, min_s * (2.0 ** min(attempt, 30)))
    return rng.uniform(0.0, cap)


@dataclass(frozen=True)
class Law:
    """The parameters (uplink settings ``reconnect_*``); all delays are capped by max_s."""

    min_s: float = 1.0
    max_s: float = 120.0
    window_s: float = 11.0
    stable_s: float = 30.0

    @classmethod
    def of(cls, settings: UplinkSettings) -> Law:
        """From an ``UplinkSettings``."""
        return cls(settings.reconnect_min_s, settings.reconnect_max_s,
                   settings.reconnect_window_s, settings.reconnect_stable_s)


class Backoff:
    """One terminal's reconnect state. Times are the caller's monotonic seconds."""

    def __init__(self, law: Law, rng: random.Random) -> None:
        self.law = law
        self.rng = rng
        #: retries since the last connection that stayed up stable_s (0: the next is the
        #: first retry after a drop)
        self.attempt = 0
        self._up_since: float | None = None

    def connected(self, now: float) -> None:
        """A CONNACK with success: the connection is up (not yet stable)."""
        self._up_since = now

    def dropped(self, now: float) -> None:
        """The connection ended; it resets the back-off only if it stayed up stable_s."""
        if self._up_since is not None and now - self._up_since >= self.law.stable_s:
            self.attempt = 0
        self._up_since = None

    def delay(self, *, refused: int | None = None, urgent: bool = False) -> float:
        """Seconds to wait before the next attempt; counts that attempt.

        ``refused``: the reason code of a CONNACK refusal or a broker's DISCONNECT, if
        any; ``urgent``: an alarm waits to be sent."""
        law = self.law
        k = self.attempt
        busy = refused in BUSY
        if busy:
            k += 1  # one doubling more, and the attempt counts twice from here
        self.attempt = k + 1
        if k == 0:
            return 0.0 if urgent else self.rng.uniform(0.0, min(law.window_s, law.max_s))
        base = law.min_s if urgent and not busy else max(law.window_s, law.min_s)
        cap = min(law.max_s, base * 2.0 ** min(k, 30))
        return self.rng.uniform(cap / 2 if busy else 0.0, cap)


class Brokers:
    """The addresses to try, in an order shuffled once per terminal, and redirects."""

    def __init__(self, addresses: list[tuple[str, int]], rng: random.Random) -> None:
        if not addresses:
            raise ValueError("no broker address")
        self._ring = list(dict.fromkeys(addresses))  # duplicates removed, order kept
        rng.shuffle(self._ring)
        self._i = 0
        self._once: tuple[str, int] | None = None
        self.redirects = 0  # in a row, without a connection

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self._ring)

    def current(self) -> tuple[str, int]:
        return self._once or self._ring[self._i]

    def failed(self) -> None:
        """The current address did not give a (lasting) connection: next time, the next."""
        if self._once is not None:
            self._once = None
        else:
            self._i = (self._i + 1) % len(self._ring)

    def connected(self) -> None:
        self.redirects = 0

    def redirect(self, reference: str, code: int, default_port: int) -> bool:
        """Follow a Server Reference (0x9C: for the next attempt; 0x9D: from now on).
        False when it cannot be used (unparsable, or too many redirects in a row)."""
        first = (reference or "").split()[0] if (reference or "").split() else ""
        try:
            addr = parse_address(first, default_port)
        except ValueError:
            return False
        self.redirects += 1
        if self.redirects > MAX_REDIRECTS:
            return False
        if code == SERVER_MOVED:
            self._once = None
            if addr in self._ring:
                self._i = self._ring.index(addr)
            else:
                self._ring.insert(self._i, addr)
        else:
            self._once = addr
        return True
