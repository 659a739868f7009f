"""The `fastclr` command (also `python -m fastclr`): one subcommand per registered command.

`fastclr NAME [settings]` finds NAME in the registry (`_commands`), turns the rest of the line into
its settings object (`_arguments` + the loader in `_config`), checks what it names on disk and runs
it. The registry's modules import no torch, DALI, timm or accelerate, so `--help` and the shards
commands start in a blink.
"""

from __future__ import annotations

import sys
from typing import Any

from fastclr.launch._arguments import Parser, command_parser
from fastclr.launch._cli_common import say
from fastclr.launch._commands import Command, commands
from fastclr.launch._config import load_settings
from fastclr.launch._errors import is_user_error

__all__ = ["build_parser", "main", "parse", "say"]


def build_parser() -> Parser:
    """The whole command tree as argparse parsers: `fastclr --help` and every command's `--help`."""
    parser = Parser(prog="fastclr", description="SimCLR pretraining with a GPU-fed input pipeline.")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for name, command in commands().items():
        group, _, sub = name.rpartition(" ")
        if group and group not in groups:
            nested = top.add_parser(group, help=f"{group} commands: `fastclr {group} --help` lists them")
            groups[group] = nested.add_subparsers(dest=f"{group} command", required=True, metavar="COMMAND")
        own = command_parser(command, add_help=False)
        (groups[group] if group else top).add_parser(
            sub,
            parents=[own],
            help=command.help,
            description=own.description,
            epilog=own.epilog,
            usage=own.usage,
        )
    return parser


def _route(argv: list[str]) -> tuple[Command | None, list[str]]:
    """The command the first one or two words name (`pretrain`, `shards convert`), and the rest."""
    known = commands()
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in known:
            return known[name], argv[words:]
    return None, argv


def parse(argv: list[str]) -> tuple[Command, Any]:
    """The command `argv` names (without `fastclr`) and its settings object, loaded and checked;
    nothing on disk is looked at yet. `--help` prints and exits; no command prints the list."""
    from fastclr.launch._arguments import parse_tokens

    command, tokens = _route(argv)
    if command is None:
        build_parser().parse_args(argv)  # help, or one line naming the commands
        raise AssertionError("argparse accepted no command")
    config_file, pairs = parse_tokens(command, tokens)
    if command.load is not None:
        return command, command.load(config_file, pairs)
    return command, load_settings(command.settings, pairs, path=config_file)


def _printable_streams() -> None:
    """Paths that are not valid UTF-8 (surrogate-escaped by Python) print escaped, never crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _printable_streams()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        command, settings = parse(argv)
        if command.check_files is not None:
            command.check_files(settings)
        command.run(settings, ["fastclr", *argv])  # the command line is recorded in manifests
    except KeyboardInterrupt:
        print("fastclr: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"fastclr: error: {err}", file=sys.stderr)
        return 1
    return 0
