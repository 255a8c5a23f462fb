"""The demo: a simulated lift, the real agent, and what the city platform sees.

    scripts/demo            (sets up, then runs this)
    .venv/bin/python hil_tests/demo.py [--quick]

Starts a local Mosquitto on loopback, the software HIL rig (a simulated lift playing
its controller over Modbus RTU on a pseudo-terminal, and its inputs and accelerometer
through the simulation feed), the real ``liftwatch run`` agent, and a console view of
what the platform receives: a live status line (the speed while the car moves: the
demo's agent sends a status every second), events, trips with their ride-quality
figures. The story: ordinary trips, a passenger trapped between floors (the trip shown
as stopped between two landings, its figures as an emergency stop's), the command
centre acknowledges the alarm (named), the rescue (a relevel from between the landings).
Ends with a summary. ``liftwatch demo`` runs this file.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosquitto import Broker  # noqa: E402
from observer import Arrival, Observer, score  # noqa: E402
from rig import LIFT_ID, SoftRig  # noqa: E402
from scenarios import story  # noqa: E402

DOOR = {0: "?", 1: "closing", 2: "closed", 3: "opening", 4: "open", 5: "locked", 6: "ajar"}
DIR = {0: " ", 1: "↑", 2: "↓"}
#: the demo's agent sends a status every second (a field terminal: on change and every
#: 60 s), so that the live line follows the car's speed while it moves
DEMO_HEARTBEAT_S = 1


def _between(pair: Any) -> str | None:
    return f"between {pair[0]} and {pair[1]}" if isinstance(pair, list) and len(pair) == 2 \
        else None


def clock_text(s: float) -> str:
    """Story time as mm:ss.s; what arrives before the story starts (the terminal's online
    message, a few ms early) reads 00:00.0 or -00:00.4, not -1:60.0 (floor division of a
    negative)."""
    t = round(s, 1)
    sign = "-" if t < 0 else ""
    minutes, seconds = divmod(abs(t), 60)
    return f"{sign}{int(minutes):02d}:{seconds:04.1f}"


def trip_text(p: dict[str, Any]) -> str:
    """A trip message as the operator reads it: where from and to (a stop between floors
    and the relevel from there said so), then its figures; an emergency stop's figures
    are not ride quality and are shown as what they are."""
    start = _between(p.get("from_between")) or str(p.get("from"))
    end = _between(p.get("to_between"))
    end = f"stopped {end}" if end else str(p.get("to"))
    figs = ""
    if p.get("emergency_stop"):
        figs = (f"  {p.get('distance_m', 0):5.1f} m  EMERGENCY STOP: d_max "
                f"{p.get('d_max') or 0:.2f} m/s²  jerk {p.get('jerk_max') or 0:.2f} m/s³ "
                "(a fault stop, not ride quality)")
    elif p.get("v_max") is not None:
        figs = (f"  {p.get('distance_m', 0):5.1f} m  v_max {p['v_max']:.2f} m/s  "
                f"a_max {p.get('a_max', 0):.2f} m/s²  jerk {p.get('jerk_max', 0):.2f}"
                f" m/s³  vib z {(p.get('vib_pp_max') or {}).get('z') or 0:.2f} m/s²")
    return f"trip  {start} → {end}{figs}"


def command_text(p: dict[str, Any], codes: dict[str, str]) -> str:
    """A command of the command centre; an ``ack`` names the alarm it acknowledges."""
    args = p.get("args") if isinstance(p.get("args"), dict) else {}
    if p.get("op") == "ack":
        eid = str(args.get("eid"))
        return f"command centre acknowledges the {codes.get(eid, 'unknown')} alarm (eid {eid})"
    return f"command centre: {p.get('op')} {args}"


def live_line(s: dict[str, Any], between: list[str] | None = None) -> str:
    """The status as one line: the speed and direction while moving; stopped, at a floor
    or outside a door zone (between the landings the last trip stopped between)."""
    floor = "?" if s.get("floor") is None else str(s.get("floor"))
    if s.get("run"):
        speed = s.get("speed")
        where = (f"floor {floor} {DIR.get(s.get('dir'), ' ')} "
                 f"{'?' if speed is None else f'{speed:4.2f}'} m/s")
    elif s.get("zone") == 0:
        where = f"stopped outside a door zone, {_between(between) or 'past ' + floor}"
    else:
        where = f"floor {floor}  stopped"
    return (f"   [{s.get('src', '')}] {where}  door {DOOR.get(s.get('door'), '?')}"
            f"  person {'yes' if s.get('person') else 'no'}")


class DemoRig(SoftRig):
    """The soft rig, its agent sending a status every DEMO_HEARTBEAT_S."""

    def _start_agent(self) -> None:
        text = self.config_path.read_text()
        line = re.compile(r"^heartbeat_s = .*$", re.M)
        assert line.search(text), "the rig's config has no heartbeat_s to set"
        self.config_path.write_text(line.sub(f"heartbeat_s = {DEMO_HEARTBEAT_S}", text))
        super()._start_agent()


class ConsoleView:
    """Print what reaches the platform, as a command-centre operator would read it."""

    def __init__(self, observer: Observer, t0: float, live: bool) -> None:
        self.observer = observer
        self.t0 = t0
        self.live = live and sys.stdout.isatty()
        self.seen = 0
        self.status: dict[str, Any] = {}
        self.codes: dict[str, str] = {}  # eid -> code of the events seen
        self.between: list[str] | None = None  # where the last trip stopped, if between

    def _clock(self, a: Arrival) -> str:
        return clock_text(a.t - self.t0)

    def line(self, text: str) -> None:
        if self.live:
            sys.stdout.write("\r\x1b[2K")
        print(text, flush=True)

    def poll(self) -> None:
        arrivals = self.observer.arrivals[self.seen:]
        self.seen += len(arrivals)
        for a in arrivals:
            kind = a.topic.rsplit("/", 1)[-1]
            p = a.payload if isinstance(a.payload, dict) else {}
            if kind == "status":
                self.status = p
            elif kind == "event":
                self.codes[str(p.get("eid"))] = str(p.get("code"))
                sev = str(p.get("sev", "")).upper()
                mark = "!!" if sev == "ALARM" and p.get("state") == "raised" else "  "
                extra = f", after {p['duration_s']:.0f} s" if p.get("duration_s") else ""
                rep = f" (repeat {p['repeat']})" if p.get("repeat") else ""
                st = self.status
                # the car stands between the landings the last trip stopped between
                between = _between(self.between) \
                    if not st.get("run") and st.get("zone") == 0 else None
                where = between or f"at floor {p.get('floor')}"
                self.line(f"{self._clock(a)} {mark} {sev:<7} {p.get('code')} "
                          f"{p.get('state')} {where}{extra}{rep}")
            elif kind == "trip":
                self.between = p.get("to_between")
                self.line(f"{self._clock(a)}    {trip_text(p)}")
            elif kind == "cmd":
                self.line(f"{self._clock(a)} >> {command_text(p, self.codes)}")
            elif kind == "online":
                state = "online" if a.payload == 1 else "OFFLINE"
                self.line(f"{self._clock(a)}    terminal {state}")
        if self.live and self.status:
            sys.stdout.write("\r\x1b[2K" + live_line(self.status, self.between))
            sys.stdout.flush()


async def main_async(quick: bool, workdir: Path) -> int:
    scn = story(outage=None, quick=quick)
    broker = Broker(workdir=workdir / "broker")
    (workdir / "broker").mkdir(parents=True)
    broker.start()
    print(f"liftwatch demo: Mosquitto on 127.0.0.1:{broker.port}; a {len(scn.lift.landings)}"
          f"-landing lift ({scn.lift.landings[0]}…{scn.lift.landings[-1]}, "
          f"{scn.lift.rated_speed} m/s) plays its controller over Modbus RTU; the agent "
          f"reports as {LIFT_ID}.")
    print(f"The story takes {scn.duration / 60:.1f} minutes: ordinary trips, a passenger "
          "trapped between floors, the command centre acknowledges, the rescue.\n")
    observer = Observer(broker.host, broker.port, "lift", LIFT_ID,
                        auto_ack_after_s=scn.ack_alarms_after_s)
    observer.start()
    rig = DemoRig(workdir / "rig", scn, broker, transport="rtu")
    (workdir / "rig").mkdir()
    view = ConsoleView(observer, time.monotonic(), live=True)
    try:
        await rig.start()
        view.t0 = time.monotonic()
        play = asyncio.create_task(rig.play(observer))
        while not play.done():
            view.poll()
            await asyncio.sleep(0.2)
        t_start = play.result()
        for _ in range(25):
            view.poll()
            await asyncio.sleep(0.2)
    finally:
        rc = await rig.stop()
        await asyncio.sleep(0.5)
        view.poll()
        observer.stop()
        broker.stop()
    sc = score("demo story", observer.arrivals, t_start, scn.expects, scn.allowed,
               trips_expected=scn.trips)
    print("\n" + sc.table())
    ent = [a for a in observer.events() if isinstance(a.payload, dict)
           and a.payload.get("code") == "entrapment_nonlevel"]
    if ent:
        after = ent[0].t - t_start - scn.onsets["stall"]
        print(f"\nThe entrapment reached the platform view {after:.1f} s after the car "
              f"stopped (rule: {scn.expects[0].timer:.0f} s with a person inside).")
    else:
        print("\nThe entrapment did NOT reach the platform view; agent log: "
              f"{rig.agent_log_path}")
    if rc not in (0, None):
        print(f"agent exited with {rc}")
    return 0 if sc.passed and ent else 1


def main() -> int:
    ap = argparse.ArgumentParser(description="liftwatch demo on a simulated lift")
    ap.add_argument("--quick", action="store_true",
                    help="short, non-interactive story (for tests)")
    ap.add_argument("--workdir", type=Path, help="keep the demo's files here")
    args = ap.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(main_async(args.quick, args.workdir))
    with tempfile.TemporaryDirectory(prefix="liftwatch-demo-") as tmp:
        return asyncio.run(main_async(args.quick, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
