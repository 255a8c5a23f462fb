"""``liftwatch outbox``: what is waiting to be sent to the platform.

    liftwatch outbox --config FILE [--export FILE.jsonl]

Per lane (alarm, event, record): messages waiting, their bytes and the age of the
oldest; messages dropped to keep within ``storage.outbox_max_mb``; files set aside as
damaged. Read only (:mod:`liftwatch.agent.tools.outbox_view`), so it is safe while the agent
runs. ``--export`` writes every waiting message in send order as JSON Lines
(``lane``, ``seq``, ``created``, ``topic``, ``payload`` or ``payload_b64``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liftwatch.agent.tools.common import load_config_reported
from liftwatch.agent.tools.outbox_view import OutboxViewError, export_jsonl, snapshot
from liftwatch.agent.tools.outfile import OutputRefused, output_file, output_refused


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="terminal config file (TOML)")
    p.add_argument("--export", type=Path, metavar="FILE.jsonl",
                   help="write every waiting message as JSON Lines")
    p.add_argument("--force", action="store_true", help="overwrite an existing --export file")


def run(args: argparse.Namespace) -> int:
    prog = "liftwatch outbox"
    if output_refused(prog, args.export, args.force):
        return 2
    cfg = load_config_reported(args.config, prog)
    if cfg is None:
        return 2
    directory = Path(cfg.storage.data_dir) / "outbox"
    try:
        snap = snapshot(directory)
    except OutboxViewError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    if snap is None:
        print(f"{prog}: no outbox in {directory} yet: nothing waiting")
    if args.export is not None:
        try:
            with output_file(args.export, args.force) as fh:
                n = export_jsonl(snap, fh) if snap is not None else 0
        except OutputRefused as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"{prog}: cannot write {args.export}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"{prog}: {n} waiting message(s) written to {args.export}")
        return 0
    if snap is None:
        return 0
    st = snap.stats()
    print(f"outbox {directory} (bound {cfg.storage.outbox_max_mb:g} MB)")
    print(f"{'lane':<8} {'waiting':>8} {'bytes':>10} {'oldest':>9} {'dropped':>8}")
    for lane, s in st["lanes"].items():
        print(f"{lane:<8} {s['depth']:>8} {s['bytes']:>10} {_age(s['oldest_age_s']):>9} "
              f"{st['dropped'][lane]:>8}")
    kinds = st["dropped_kind"]
    if any(kinds.values()):
        print(f"record lane drops by kind: trips/health {kinds['record']}, "
              f"stats {kinds['stats']}")
    if st["quarantined"]:
        print(f"quarantined (damaged, kept for inspection in {directory / 'quarantine'}):")
        for name in st["quarantined"]:
            print(f"  {name}")
    if st["lost_records"]:
        print(f"warning: {st['lost_records']} stored message(s) were found missing from disk "
              "(a lost stretch of records, not a torn append): see the agent's log")
    if st["damaged_bytes"]:
        print(f"warning: {st['damaged_bytes']} damaged byte(s) in the segment files are "
              "skipped (the agent repairs them at its next start)")
    if st["cursor_problem"]:
        print(f"warning: {st['cursor_problem']}")
    print("(read from the files: acknowledgements of the last seconds may not show yet)")
    return 0
