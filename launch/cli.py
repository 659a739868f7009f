"""The `fastclr` command (also `python -m fastclr`): one subcommand per job.

The command groups live in `_cli_shards`, `_cli_train` and `_cli_eval`; each handler imports
torch, DALI, timm and accelerate itself, so `--help` and the shards commands start in a blink.
"""

from __future__ import annotations

import argparse
import sys

from fastclr.launch._cli_common import say
from fastclr.launch._cli_eval import add_evaluations, add_report
from fastclr.launch._cli_shards import add_shards
from fastclr.launch._cli_train import add_demo, add_experiments, add_pretrain
from fastclr.launch._errors import is_user_error

__all__ = ["build_parser", "main", "say"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastclr", description="SimCLR pretraining with a GPU-fed input pipeline."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_shards(commands)
    add_pretrain(commands)
    add_experiments(commands)
    add_evaluations(commands)
    add_report(commands)
    add_demo(commands)
    return parser


def _printable_streams() -> None:
    """Paths that are not valid UTF-8 (surrogate-escaped by Python) print escaped, never crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _printable_streams()
    args = build_parser().parse_args(argv)
    args.argv = ["fastclr", *(sys.argv[1:] if argv is None else argv)]  # recorded in manifests
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("fastclr: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"fastclr: error: {err}", file=sys.stderr)
        return 1
    return 0
