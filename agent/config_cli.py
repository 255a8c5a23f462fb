"""``liftwatch config check FILE…`` and ``liftwatch config show FILE``.

check is what a technician runs after editing a file on site: every problem of
every file at once, exit 0 when all are usable, 2 when any is not. show prints
what the agent will actually run with (defaults filled in), never a secret.
"""

from __future__ import annotations

import argparse
import json
import sys

from liftwatch.agent.config import ConfigError, load_config
from liftwatch.agent.tomltext import dump_toml

EXIT_OK, EXIT_INVALID = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate config files; print OK or every error",
                           description="Validate terminal config files. Prints 'OK FILE' "
                           "for each usable file and every problem of the others; exits "
                           "0 when all are usable, 2 otherwise.")
    check.add_argument("files", nargs="+", metavar="FILE")
    show = sub.add_parser("show", help="print the effective config, secrets redacted",
                          description="Print the effective config (defaults filled in, "
                          "relative paths resolved, secrets replaced by ***).")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "check":
        return check(args.files)
    return show(args.file, as_json=args.json)


def check(files: list[str]) -> int:
    status = EXIT_OK
    for name in files:
        try:
            cfg = load_config(name)
        except ConfigError as exc:
            status = EXIT_INVALID
            for issue in exc.issues:
                print(issue)
            print(f"FAILED {name}: {len(exc.issues)} problem(s)")
            continue
        for warning in cfg.warnings:
            print(f"WARNING {name}: {warning}")
        print(f"OK {name}")
    return status


class HexInt(int):
    """An integer TOML writes in hex (I2C addresses: ``address = 0x19``, not 25)."""

    def __str__(self) -> str:
        return f"0x{int(self):02X}"


def show(name: str, *, as_json: bool = False) -> int:
    try:
        cfg = load_config(name)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_INVALID
    data = cfg.redacted()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    header = [f"# Effective config of {name}: defaults filled in, secrets shown as ***.",
              f"# Register map: {cfg.register_map_path or '(controller disabled)'}",
              f"# Platform profile: {cfg.platform.name}"]
    header += [f"# WARNING: {w}" for w in cfg.warnings]
    accel = data.get("accel")
    if isinstance(accel, dict) and isinstance(accel.get("address"), int):
        accel["address"] = HexInt(accel["address"])  # as on the chip's datasheet: 0x53
    print("\n".join(header) + "\n\n" + dump_toml(data), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m liftwatch.agent.config_cli check FILE…``: the same without the dispatcher."""
    parser = argparse.ArgumentParser(prog="liftwatch config")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
