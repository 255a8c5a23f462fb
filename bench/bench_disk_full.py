"""What a full disk costs the running agent: log lines, and the duties it still does.

    .venv/bin/python bench/bench_disk_full.py [--seconds 27] [--python PYTHON]

``liftwatch run --trace`` (the entrapment trace, x4, alarms repeated every second)
against a local Mosquitto, with its data directory on a 2 MB tmpfs that is filled
until ENOSPC right after the agent is running, for ``--seconds``; then SIGTERM.
Prints the agent's log lines (all, errors, ``tick failed``) and what the platform got
during the fault (status, health, health naming ``disk_fault``, events). ``--python``
runs the agent of another checkout (e.g. ``../old-checkout/.venv/bin/python``) for a
before/after in the same conditions. Needs root (mount); issue 15 measured about
1,000 log lines in 27 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "hil_tests"))

from mosquitto import Broker  # noqa: E402
from test_runtime_trace import CUT_START, cut_trace  # noqa: E402
from uplink_helpers import Observer, write_config  # noqa: E402

TRACE = REPO / "hil_tests" / "traces" / "entrapment_between_floors.jsonl.gz"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=27.0)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lw-diskfull-"))
    data = work / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(data)], check=True)
    broker = Broker(workdir=work)
    broker.start()
    proc = None
    try:
        trace = work / "cut.jsonl"
        cut_trace(TRACE, trace, 145.0, 285.0, start=CUT_START)
        cfg = write_config(work, broker.port)
        cfg.write_text(cfg.read_text() + "\n[detection]\nalarm_repeat_s = 1.0\n")
        obs = Observer(broker.port, client_id="bench-observer")
        # --allow-root on purpose: the bench may run as root (CI); it plays a trace
        proc = subprocess.Popen([args.python, "-m", "liftwatch.agent.cli", "-v", "run",
                                 "--allow-root",
                                 "--config", str(cfg), "--trace", str(trace),
                                 "--other-lift", "--speed", "4"],
                                stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        running = threading.Event()

        def read() -> None:
            assert proc is not None and proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if "agent running" in line:
                    running.set()

        threading.Thread(target=read, daemon=True).start()
        if not running.wait(30):
            print("the agent did not start:\n" + "".join(lines))
            return 1
        n0, got0 = len(lines), len(obs.got)
        with open(data / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        time.sleep(args.seconds)
        fault_lines = lines[n0:]
        during = obs.got[got0:]
        proc.terminate()
        proc.wait(15)
        health = [m for m in during if m.topic.endswith("/health")]
        print(f"disk full for {args.seconds:g} s ({args.python}):")
        print(f"  log lines: {len(fault_lines)}, errors: "
              f"{sum(' ERROR ' in x or x.startswith('ERROR') for x in fault_lines)}, "
              f"'tick failed': {sum('tick failed' in x for x in fault_lines)}")
        print(f"  the platform got: {sum(m.topic.endswith('/status') for m in during)} status, "
              f"{len(health)} health ({sum(b'disk_fault' in m.payload for m in health)} "
              f"naming disk_fault), {sum(m.topic.endswith('/event') for m in during)} events")
        obs.close()
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker.stop()
        subprocess.run(["umount", "-l", str(data)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
