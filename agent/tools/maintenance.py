"""``liftwatch maintenance``: the lift's wear figures, and the technician's "maintenance done".

    liftwatch maintenance --config FILE           # each figure against its reference
    liftwatch maintenance --config FILE --done    # a visit restored the lift

``--done`` leaves a marker in the data directory (``buffer/baselines.py``,
``MAINTENANCE_MARKER``); the agent takes it at its next tick (within a second or two)
or, when it is not running, at its next start, and then does what the downlink
``maintenance_done`` does: every wear reference is learned again and open ``*_trend``
warnings are cleared. A marker rather than an edit of ``baselines.db``: a running agent
owns that file and would write its old references back at its next save. The tool
waits a few seconds to say which of the two happened.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from liftwatch.agent.tools.common import load_config_reported, running_agent
from liftwatch.buffer.baselines import MAINTENANCE_MARKER, BaselineStore, mark_maintenance
from liftwatch.signal.trends import Trends

WAIT_S = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="terminal config file (TOML)")
    p.add_argument("--done", action="store_true",
                   help="a maintenance visit restored the lift: learn the wear references "
                        "again")


def _show(data_dir: Path, lift_id: str) -> int:
    store = BaselineStore(data_dir, lift_id)
    try:
        state = store.load() or {}
    finally:
        store.close()
    cond = Trends(state.get("trends")).condition()
    if not cond["figures"]:
        print("no wear figure has a counted day yet (the agent saves them once a day "
              "and when it stops)")
        return 0
    print(f"{'figure':<18} {'state':<9} {'ref':>8} {'level':>8} {'ratio':>6} {'days':>5}")
    for key, f in cond["figures"].items():
        ref = f"{f['ref']:.3f}" if "ref" in f else "-"
        lvl = f"{f['level']:.3f}" if "level" in f else "-"
        ratio = f"{f['ratio']:.2f}" if f.get("ratio") is not None else "-"
        print(f"{key:<18} {f['state']:<9} {ref:>8} {lvl:>8} {ratio:>6} {f['ref_days']:>5}")
    print(f"references restarted by maintenance: {cond['restarts']}")
    return 0


def run(args: argparse.Namespace) -> int:
    prog = "liftwatch maintenance"
    cfg = load_config_reported(args.config, prog)
    if cfg is None:
        return 2
    data_dir = Path(cfg.storage.data_dir)
    if not args.done:
        return _show(data_dir, cfg.terminal.lift_id)
    try:
        path = mark_maintenance(data_dir, datetime.now(UTC).isoformat().encode())
    except OSError as exc:
        print(f"{prog}: cannot write the marker in {data_dir}: {exc} (run as the agent's "
              f"user, or check the data directory)", file=sys.stderr)
        return 1
    pid = running_agent(cfg)
    if pid is None:
        print(f"{prog}: noted ({path}); no agent is running on {data_dir}: the wear "
              f"references restart at its next start")
        return 0
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if not (data_dir / MAINTENANCE_MARKER).exists():
            print(f"{prog}: the running agent (pid {pid}) restarted the wear references")
            return 0
        time.sleep(0.1)
    print(f"{prog}: noted ({path}), but the agent (pid {pid}) has not taken it within "
          f"{WAIT_S:.0f} s: it will at its next tick; if it never does, check it with "
          f"'liftwatch monitor'", file=sys.stderr)
    return 1
