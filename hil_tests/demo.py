"""The demo: a simulated lift, the real agent, and what the city platform sees.

    scripts/demo            (sets up, then runs this)
    .venv/bin/python hil_tests/demo.py [--quick]

Starts a local Mosquitto on loopback, the software HIL rig (a simulated lift playing
its controller over Modbus RTU on a pseudo-terminal, and its inputs and accelerometer
through the simulation feed), the real ``liftwatch run`` agent, and a console view of
what the platform receives: a live status line, events, trips with their ride-quality
figures. The story: ordinary trips, a passenger trapped between floors, the command
centre acknowledges the alarm, the rescue. Ends with a summary.
"""

from __future__ import annotations

import argparse
import asyncio
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


class ConsoleView:
    """Print what reaches the platform, as a command-centre operator would read it."""

    def __init__(self, observer: Observer, t0: float, live: bool) -> None:
        self.observer = observer
        self.t0 = t0
        self.live = live and sys.stdout.isatty()
        self.seen = 0
        self.status: dict[str, Any] = {}

    def _clock(self, a: Arrival) -> str:
        s = a.t - self.t0
        return f"{int(s // 60):02d}:{s % 60:04.1f}"

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
                sev = str(p.get("sev", "")).upper()
                mark = "!!" if sev == "ALARM" and p.get("state") == "raised" else "  "
                extra = f", after {p['duration_s']:.0f} s" if p.get("duration_s") else ""
                rep = f" (repeat {p['repeat']})" if p.get("repeat") else ""
                self.line(f"{self._clock(a)} {mark} {sev:<7} {p.get('code')} "
                          f"{p.get('state')} at floor {p.get('floor')}{extra}{rep}")
            elif kind == "trip":
                figs = ""
                if p.get("v_max") is not None:
                    figs = (f"  {p.get('distance_m', 0):5.1f} m  v_max {p['v_max']:.2f} m/s  "
                            f"a_max {p.get('a_max', 0):.2f} m/s²  jerk {p.get('jerk_max', 0):.2f}"
                            f" m/s³  vib z {p.get('vib_pp_max', {}).get('z', 0):.2f} m/s²")
                self.line(f"{self._clock(a)}    trip  {p.get('from')} → {p.get('to')}{figs}")
            elif kind == "cmd":
                self.line(f"{self._clock(a)} >> command centre: {p.get('op')} "
                          f"{p.get('args', {})}")
            elif kind == "online":
                state = "online" if a.payload == 1 else "OFFLINE"
                self.line(f"{self._clock(a)}    terminal {state}")
        if self.live and self.status:
            s = self.status
            sys.stdout.write(
                f"\r\x1b[2K   [{s.get('src', '')}] floor {s.get('floor')} "
                f"{DIR.get(s.get('dir'), '')}"
                f" {s.get('speed', 0):4.2f} m/s  door {DOOR.get(s.get('door'), '?')}"
                f"  person {'yes' if s.get('person') else 'no '}")
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
    rig = SoftRig(workdir / "rig", scn, broker, transport="rtu")
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
