"""The ``liftwatch`` command: one subcommand per job, each in the module named for it.

Subcommand modules expose ``add_arguments(parser)`` and ``run(args) -> int`` and are
imported only when used, so ``liftwatch config check`` starts fast on a Pi.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# One BLAS thread, set before numpy is first imported: the agent's matrices are 3×3, and
# OpenBLAS's default pool (a thread per core, spinning after each call) costs a Pi more
# CPU than the whole signal pipeline. An explicit setting in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: subcommand -> (module, one-line help); the agent itself and the pipeline over a trace,
#: then the technician's tools (``liftwatch.agent.tools``, one module each)
TOOLS = "liftwatch.agent.tools."
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("liftwatch.agent.runtime", "run the agent (live, or from a recorded trace)"),
    "replay": ("liftwatch.agent.replay", "run the detection pipeline over a trace"),
    "config": (TOOLS + "config_cmd", "check or show terminal config files"),
    "record": (TOOLS + "record", "record the live inputs into a trace"),
    "check": (TOOLS + "check", "commissioning self-test with pass/fail table"),
    "monitor": (TOOLS + "monitor", "live view of the lift as the agent sees it"),
    "calibrate": (TOOLS + "calibrate", "record the mounting orientation at rest"),
    "outbox": (TOOLS + "outbox", "what is waiting to be sent"),
    "events": (TOOLS + "events", "the event journal"),
    "plot": (TOOLS + "plot", "plot a trip's ride quality to a PNG or JPEG"),
    "maintenance": (TOOLS + "maintenance", "wear figures against their references; "
                    "--done after a maintenance visit"),
    "demo": (TOOLS + "demo", "simulated lift, agent and platform view on this machine "
             "(runs the source repository's demo)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (the others stay unloaded)."""
    parser = argparse.ArgumentParser(
        prog="liftwatch", description="Agent for lift remote-monitoring terminals.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def setup_logging(verbose: int) -> None:
    """Plain lines on stderr: journald adds its own timestamps on a terminal."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"liftwatch {args.command}: not available in this build", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`liftwatch replay … | head`): not a fault of ours, so no
        # traceback; stdout goes to /dev/null so the interpreter's final flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
