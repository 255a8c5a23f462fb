"""``liftwatch config check FILE…`` and ``liftwatch config show FILE``.

check is what a technician runs after editing a file on site: every problem of
every file at once, exit 0 when all are usable, 2 when any is not. show prints
what the agent will actually run with (defaults filled in), never a secret.

Both read the remote changes the platform made (``config_set``), kept in the data
directory's ``remote.toml`` and merged over the file, and say what they change; an
override the agent would refuse (and set aside at start) is a warning, since the
agent starts on the file alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from liftwatch.agent.config import ConfigError, TerminalConfig, load_config
from liftwatch.agent.schema import show as show_value
from liftwatch.agent.tomltext import dump_toml

EXIT_OK, EXIT_INVALID = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate config files; print OK or every error",
                           description="Validate terminal config files. Prints 'OK FILE' "
                           "for each usable file and every problem of the others; exits "
                           "0 when all are usable, 2 otherwise.")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--data-dir", type=Path, help="the agent's --data-dir, where its remote "
                       "changes are (default: storage.data_dir of each FILE)")
    show = sub.add_parser("show", help="print the effective config, secrets redacted",
                          description="Print the effective config (defaults filled in, "
                          "relative paths resolved, secrets replaced by ***).")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.add_argument("--data-dir", type=Path, help="the agent's --data-dir, where its remote "
                      "changes are (default: storage.data_dir of FILE)")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "check":
        return check(args.files, data_dir=args.data_dir)
    return show(args.file, as_json=args.json, data_dir=args.data_dir)


def remote_lines(cfg: TerminalConfig) -> list[tuple[str, str]]:
    """(kind, text): what the remote override changes (REMOTE), or why it is not
    applied (WARNING)."""
    where = cfg.override_path
    if cfg.override_issues:
        return [("WARNING", f"remote changes in {where} are NOT applied (the agent sets the "
                 f"file aside as {where.name if where else ''}.rejected and runs on this "
                 f"file alone): {issue}") for issue in cfg.override_issues]
    return [("REMOTE", f"{key} = {show_value(new)} (file: {show_value(old)}), from {where}")
            for key, (old, new) in sorted(cfg.override.items())]


def check(files: list[str], data_dir: Path | None = None) -> int:
    status = EXIT_OK
    for name in files:
        try:
            cfg = load_config(name, data_dir=data_dir)
        except ConfigError as exc:
            status = EXIT_INVALID
            for issue in exc.issues:
                print(issue)
            print(f"FAILED {name}: {len(exc.issues)} problem(s)")
            continue
        for warning in cfg.warnings:
            print(f"WARNING {name}: {warning}")
        for kind, text in remote_lines(cfg):
            print(f"{kind} {name}: {text}")
        print(f"OK {name}")
    return status


class HexInt(int):
    """An integer TOML writes in hex (I2C addresses: ``address = 0x19``, not 25)."""

    def __str__(self) -> str:
        return f"0x{int(self):02X}"


def show(name: str, *, as_json: bool = False, data_dir: Path | None = None) -> int:
    try:
        cfg = load_config(name, data_dir=data_dir)
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
    header += [f"# {kind}: {text}" for kind, text in remote_lines(cfg)]
    accel = data.get("accel")
    if isinstance(accel, dict) and isinstance(accel.get("address"), int):
        accel["address"] = HexInt(accel["address"])  # as on the chip's datasheet: 0x53
    print("\n".join(header) + "\n\n" + dump_toml(data), end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m liftwatch.agent.tools.config_cmd check FILE…``: no dispatcher."""
    parser = argparse.ArgumentParser(prog="liftwatch config")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
