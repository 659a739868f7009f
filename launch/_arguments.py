"""A command's settings dataclass as a command line: argparse options generated from its fields.

Every setting is accepted as `key=value` and as `--key value` / `--key=value` (`--key-name` and
`--key_name` alike, nested as `--optim.lr 0.5`), true/false as `--cpu` / `--no-cpu` or `cpu=true`,
lists as `--decay-epochs 30 60` or `decay_epochs=[30,60]`. The parser only collects what was typed
(no defaults, no types, no choices: the dataclass and the loader own those), as (key, value) pairs
typed the way YAML types them, so `--epochs abc` and `epochs=abc` get the same one-line refusal.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any

from fastclr.config import ConfigError, Field, fields, groups
from fastclr.launch._commands import Command
from fastclr.launch._config import check_text, split_override, yaml_value

KEY = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")
SPELLINGS = (
    "Every setting is KEY=VALUE or --KEY VALUE (--key-name or --key_name; nested: --optim.lr 0.5 or "
    "optim.lr=0.5); true/false: --cpu / --no-cpu or cpu=true; lists: --decay-epochs 30 60 or "
    "decay_epochs=[30,60]; values are read as YAML (null, [a, b], {key: value}). KEY=VALUE settings "
    "apply after --KEY ones. docs/config.md lists every command's settings."
)


class Parser(argparse.ArgumentParser):
    """argparse with its complaints as one-line errors (exit 1), like every other bad input."""

    def error(self, message: str):
        prefix = "" if self.prog == "fastclr" else f"{self.prog}: "
        raise ConfigError(f"{prefix}{message} (see `{self.prog} --help`)")


def _base(hint) -> Any:
    """`int | None` -> int; other hints as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _is_list(hint) -> bool:
    return typing.get_origin(_base(hint)) in (list, tuple)


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _yaml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _help(f: Field) -> str:
    default = "required" if f.required else f"default: {_yaml_text(f.default)}"
    text = f"{f.help} ({f.type}; {default})" if f.help else f"({f.type}; {default})"
    return text.replace("%", "%%")  # argparse formats help with %


def _metavar(f: Field) -> str:
    if f.choices:
        return "{" + ",".join(map(str, f.choices)) + "}"
    base = _base(f.hint)
    if _is_list(f.hint):
        base = typing.get_args(base)[0] if typing.get_args(base) else str
    if typing.get_origin(base) is dict:
        return "{KEY: VALUE}"
    return {int: "INT", float: "NUMBER", str: "TEXT"}.get(base, "VALUE")


def _description(command: Command) -> str:
    doc = inspect.getdoc(command.settings) or ""
    if doc.startswith(f"{command.settings.__name__}("):  # dataclass's generated signature
        doc = ""
    text = " ".join(part for part in (f"{command.help}.", command.description, doc) if part)
    return text.replace("%", "%%")


def command_parser(command: Command, add_help: bool = True) -> Parser:
    """The argparse parser of `command`, one option per setting, grouped as the dataclass nests them."""
    by_key = {f.key: f for f in fields(command.settings)}
    words = [f"[{n.upper()} ...]" if _is_list(by_key[n].hint) else n.upper() for n in command.positional]
    words += ["[--config FILE]"] if command.yaml else []
    parser = Parser(
        prog=f"fastclr {command.name}",
        usage=" ".join(["%(prog)s", *words, "[KEY=VALUE | --KEY VALUE ...]"]),
        description=_description(command),
        epilog=SPELLINGS,
        allow_abbrev=False,
        add_help=add_help,
    )
    schema = command.settings
    sections = {"": parser.add_argument_group("settings")}
    for group in groups(schema):
        sections[group.key + "."] = parser.add_argument_group(group.key, group.help.replace("%", "%%"))
    if command.yaml:
        sections[""].add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="YAML file of these settings (launch/configs/...); command-line settings override it",
        )
    one_per_flag = _takes_list_by_position(command)
    for name in command.positional:
        f = by_key[name]
        parser.add_argument(
            f"positional {name}",
            nargs="*" if _is_list(f.hint) else "?",
            metavar=name.upper(),
            default=argparse.SUPPRESS,
            help=f"the same as --{name.replace('_', '-')}",
        )
    for f in by_key.values():
        section = sections[f.key.rpartition(".")[0] + "." if "." in f.key else ""]
        options = {"dest": f.key, "default": argparse.SUPPRESS, "help": _help(f)}
        if _base(f.hint) is bool:
            section.add_argument(flag(f.key), action=argparse.BooleanOptionalAction, **options)
        elif _is_list(f.hint) and one_per_flag:  # `--step a --step b`: the rest of the line is positional
            section.add_argument(flag(f.key), action="append", metavar=_metavar(f), **options)
        elif _is_list(f.hint):
            section.add_argument(flag(f.key), nargs="+", action="extend", metavar=_metavar(f), **options)
        else:
            section.add_argument(flag(f.key), metavar=_metavar(f), **options)
    return parser


def _takes_list_by_position(command: Command) -> bool:
    """Whether a positional setting takes a list: then a list option takes one value per use, or it
    would swallow the positional values that follow it."""
    hints = {f.key: f.hint for f in fields(command.settings)}
    return any(_is_list(hints[name]) for name in command.positional)


def _normal(token: str) -> str:
    """`--key_name=v` -> `--key-name=v`: one spelling for argparse (the value is left alone)."""
    if not token.startswith("--") or token == "--":
        return token
    name, eq, value = token[2:].partition("=")
    return "--" + name.replace("_", "-") + eq + value


def parse_tokens(command: Command, tokens: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """The command line after the command's name -> (its --config file, (key, value) settings)."""
    for token in tokens:
        check_text(token)
    schema_fields = {f.key: f for f in fields(command.settings)}
    top = {f.name for f in dataclasses.fields(command.settings)}
    one_per_flag = _takes_list_by_position(command)
    single = {
        flag(k)
        for k, f in schema_fields.items()
        if (one_per_flag or not _is_list(f.hint)) and _base(f.hint) is not bool
    }
    single |= {"--config"} if command.yaml else set()
    pairs, rest, previous = [], [], ""
    for token in map(_normal, tokens):
        key = token.partition("=")[0]
        takes_value = previous in single
        previous = token
        if takes_value or token.startswith("-") or "=" not in token or not KEY.fullmatch(key):
            rest.append(token)
        elif command.positional and key.replace("-", "_").split(".")[0] not in top:
            rest.append(token)  # a positional value with `=` in it (a sweep point's folder)
        else:
            pairs.append(split_override(key.replace("-", "_") + token[len(key) :]))
    namespace, extras = command_parser(command).parse_known_intermixed_args(rest)
    given = vars(namespace)
    config_file = given.pop("config", None) if command.yaml else None
    flags = []
    for name in command.positional:
        if f"positional {name}" in given:
            flags.append((name, _typed(schema_fields[name], given.pop(f"positional {name}"))))
    flags += [(key, _typed(schema_fields[key], raw)) for key, raw in given.items()]
    unknown = _unknown_options(command, extras)
    if command.free_keys is not None and unknown:  # they join the ones given by position
        given_free = dict(flags).get(command.free_keys, [])
        flags = [p for p in flags if p[0] != command.free_keys] + [
            (command.free_keys, given_free + unknown[0][1])
        ]
        unknown = []
    return config_file, flags + unknown + pairs


def _typed(f: Field, raw) -> Any:
    """A value as typed: text stays text for a text setting; anything else is read as YAML."""
    base = _base(f.hint)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, list):
        item = typing.get_args(base)[0] if typing.get_args(base) else str
        return [r if item is str else yaml_value(r, f"{f.key}={r}") for r in raw]
    if base is str and not (raw == "null" and base is not f.hint):
        return raw
    return yaml_value(raw, f"{f.key}={raw}")


def _unknown_options(command: Command, extras: list[str]) -> list[tuple[str, Any]]:
    """Options argparse does not know, as settings, so the loader refuses them as it refuses any
    unknown key (naming the valid ones) or takes them inside a free-form mapping
    (`--data.augment.jitter_p 0.5`); for a command with `free_keys` they join that list as
    `key=value` (`fastclr run ... --optim.lr 0.5`)."""

    def is_setting(token: str) -> bool:
        return token.startswith("--") or KEY.fullmatch(token.partition("=")[0]) is not None and "=" in token

    texts, i = [], 0
    while i < len(extras):
        token = extras[i]
        if not is_setting(token):
            raise ConfigError(
                f"fastclr {command.name}: unexpected argument {token!r}; settings are key=value or "
                "--key value (see --help)"
            )
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            following = extras[i + 1] if i + 1 < len(extras) else "--"
            if not eq and is_setting(following):
                value = "true"  # a switch: `--cpu`
            elif not eq:
                value, i = following, i + 1
            token = f"{name.replace('-', '_')}={value}"
        texts.append(token)
        i += 1
    if command.free_keys is not None and texts:
        return [(command.free_keys, texts)]
    return [split_override(text) for text in texts]
