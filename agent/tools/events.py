"""``liftwatch events``: the event journal the agent keeps on the terminal.

    liftwatch events --config FILE [--code C] [--since WHEN] [--limit N] [--utc]
                     [--export FILE.jsonl]

Times are shown in the terminal's local time (``TZ`` honoured), each with its zone
(``2026-11-26 11:03:12 CST``); ``--utc`` shows UTC. An event raised while the car stood
between floors says so (``between 6 and 7``), not the last landing passed.
``--code`` takes an event code of events.md or the start of one: ``entrapment`` selects
``entrapment_level`` and ``entrapment_nonlevel``; a code that names none is an error
(exit 2) listing the known codes, rather than an empty list that looks like "no event".
``--since`` takes an ISO 8601 time (``2026-11-26T03:00``: in the listing's zone, local
or with ``--utc`` UTC, when none is written), a span back from now (``90s``, ``30m``,
``2h``, ``7d``) or UTC milliseconds. The journal
is read where the agent writes it (``storage.data_dir``/journal); the agent may run
meanwhile (every journal file is replaced atomically). ``--export`` writes the selected
events as JSON Lines, oldest first, exactly as stored.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liftwatch.agent.timebase import clock_time
from liftwatch.agent.tools.common import load_config_reported
from liftwatch.agent.tools.outfile import OutputRefused, output_file, output_refused

SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
SPAN_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None, local: bool = False) -> int:
    """UTC milliseconds for ``--since``; ValueError naming the accepted forms. An ISO time
    without a zone is local time with ``local``, else UTC."""
    now = time.time() if now is None else now
    m = SPAN.match(text)
    if m:
        return int((now - float(m.group(1)) * SPAN_S[m.group(2)]) * 1000)
    if text.strip().isdigit():
        return int(text.strip())
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since: expected an ISO time (2026-11-26T03:00), a span back "
                         f"from now (30m, 2h, 7d) or UTC milliseconds, found {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone() if local else dt.replace(tzinfo=UTC)  # naive: local time
    return int(dt.timestamp() * 1000)


def where(e: dict[str, Any]) -> str:
    """Where the car was: between two landings when the event says so, else its floor."""
    between = e.get("between")
    if isinstance(between, list | tuple) and len(between) == 2:
        return f"between {between[0]} and {between[1]}"
    return f"floor {e['floor']}" if e.get("floor") is not None else ""


def describe(e: dict[str, Any], utc: bool = False) -> str:
    parts = [clock_time(e.get("ts"), utc), f"{e.get('code', '?'):<22}",
             f"{e.get('state', ''):<8}", f"{e.get('sev', ''):<8}"]
    if where(e):
        parts.append(where(e))
    if e.get("duration_s") is not None:
        parts.append(f"after {e['duration_s']:.1f} s")
    if e.get("id"):
        parts.append(f"id {e['id']}")
    if e.get("replay") is True:  # kept by a run from a recorded trace: time is the trace's
        parts.append("REPLAYED from a trace")
    if e.get("detail"):
        parts.append(json.dumps(e["detail"], separators=(",", ":"), ensure_ascii=False))
    return "  ".join(parts)


def codes_matching(code: str, seen: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The codes ``--code`` selects: itself when it is a code, else every code that starts
    with it. Known are the catalogue's codes and those already in the journal (an older
    agent's). ValueError naming the catalogue when there is none."""
    from liftwatch.signal.events import CATALOGUE

    known = set(CATALOGUE) | set(seen)
    if code in known:
        return {code}
    found = {c for c in known if code and c.startswith(code)}
    if not found:
        raise ValueError(f"--code: no event code is or starts with {code!r}; known codes: "
                         f"{', '.join(CATALOGUE)}")
    return found


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="terminal config file (TOML)")
    p.add_argument("--code", help="only events of this code (events.md) or of the codes that "
                   "start with it, e.g. entrapment")
    p.add_argument("--since", help="only events from then on: ISO time, 30m / 2h / 7d, or "
                   "UTC milliseconds")
    p.add_argument("--limit", type=int, help="only the newest N of them")
    p.add_argument("--utc", action="store_true",
                   help="times in UTC (default: local time, as TZ sets it, zone shown)")
    p.add_argument("--export", type=Path, metavar="FILE.jsonl",
                   help="write the selected events as JSON Lines instead of listing them")
    p.add_argument("--force", action="store_true", help="overwrite an existing --export file")


def run(args: argparse.Namespace) -> int:
    from liftwatch.buffer.journal import EventJournal, JournalError

    prog = "liftwatch events"
    try:
        since = parse_since(args.since, local=not args.utc) if args.since is not None \
            else None
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 0:
        print(f"{prog}: --limit must be >= 0, found {args.limit}", file=sys.stderr)
        return 2
    if output_refused(prog, args.export, args.force):
        return 2
    cfg = load_config_reported(args.config, prog)
    if cfg is None:
        return 2
    path = Path(cfg.storage.data_dir) / "journal"
    if not path.is_dir():
        print(f"{prog}: no event journal in {path} yet (the agent has not run here)")
        events: list[dict[str, Any]] = []
        quarantined: list[str] = []
    else:
        try:
            journal = EventJournal(path, cfg.storage.journal_max_events)
        except (OSError, JournalError) as exc:
            print(f"{prog}: cannot open the event journal {path}: {exc}", file=sys.stderr)
            return 1
        try:
            events = journal.query(since=since)
            quarantined = list(journal.quarantined)
        finally:
            journal.close()
    codes: set[str] = set()
    if args.code is not None:
        try:
            codes = codes_matching(args.code, {str(e.get("code")) for e in events})
        except ValueError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        events = [e for e in events if e.get("code") in codes]
    if args.limit is not None:
        events = events[len(events) - args.limit:] if args.limit else []
    for name in quarantined:
        print(f"{prog}: warning: damaged journal file set aside as quarantine/{name}",
              file=sys.stderr)
    if args.export is not None:
        try:
            with output_file(args.export, args.force) as fh:
                for e in events:
                    fh.write(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n")
        except OutputRefused as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"{prog}: cannot write {args.export}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"{prog}: {len(events)} event(s) written to {args.export}")
        return 0
    for e in events:
        print(describe(e, args.utc))
    print(f"{len(events)} event(s)" + (f" of code {', '.join(sorted(codes))}" if codes else "")
          + (f" since {clock_time(since, args.utc)}" if since is not None else ""))
    return 0
