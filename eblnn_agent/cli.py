"""Typed dataclass configurations in YAML and on the command line: the one mechanism every script uses.

A component's settings are a dataclass whose fields carry a docstring each (written under the field,
as Gymnasium and CleanRL do). :func:`add_dataclass_flags` turns those fields into flags with the
docstring as help text; :func:`apply_overrides` checks and coerces values from YAML or flags
(:func:`coerce`) into a new instance; :func:`read_yaml_mapping` reads a settings file. Every default
is therefore written once, in the dataclass.

Flags follow one convention: ``--name value``; booleans also take ``--name`` alone, ``--name=false``
(as ``wandb agent`` writes them) and ``--no_name``; lists take several values; an unset flag is
``None`` (meaning: keep the YAML or dataclass value).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap
import typing
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "field_docs",
    "str2bool",
    "coerce",
    "add_dataclass_flags",
    "apply_overrides",
    "read_yaml_mapping",
    "parse_dataclass_args",
]


class ConfigError(ValueError):
    """An invalid setting; the message names the field, the value and what is allowed."""


@cache
def field_docs(klass: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass and of its dataclass bases."""
    docs: dict[str, str] = {}
    for base in reversed(klass.__mro__):
        if not dataclasses.is_dataclass(base):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def str2bool(s: str) -> bool:
    """``true/yes/on/1`` -> True, ``false/no/off/0`` -> False (any case); anything else is an error."""
    low = str(s).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{s!r} is not a boolean (true/false)")


def _optional_of(hint: Any) -> Any:
    """``T`` for ``T | None``, else None."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def coerce(klass: type, name: str, value: Any) -> Any:
    """``value`` converted to the annotated type of ``klass.name`` (YAML/CLI values), or ConfigError.

    Ints written as floats (``240.0``) become ints; booleans are real booleans or their words;
    ``None``/``null`` is accepted only where the field is optional.
    """
    hint = typing.get_type_hints(klass)[name]
    inner = _optional_of(hint)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        hint = inner
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            return value if isinstance(value, bool) else str2bool(str(value))
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if math.isnan(out):
                raise ValueError
            return out
        if hint is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            if not isinstance(value, list | tuple):
                raise ValueError
            (elem, *_) = typing.get_args(hint) or (Any,)
            if elem in (int, float, str):
                return [elem(x) for x in value]
            return list(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{klass.__name__}.{name}={value!r} is not a valid {hint}") from err
    return value


def add_dataclass_flags(parser: argparse.ArgumentParser, klass: type, title: str | None = None,
                        skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """One flag per field of ``klass`` (type and help from the dataclass), in an argument group.

    Flag defaults are ``None``: :func:`apply_overrides` keeps the existing value for them.
    """
    group = parser.add_argument_group(title or klass.__name__, (klass.__doc__ or "").split("\n")[0])
    hints, docs, defaults = typing.get_type_hints(klass), field_docs(klass), klass()
    for f in dataclasses.fields(klass):
        if f.name in skip:
            continue
        hint = hints[f.name]
        hint = _optional_of(hint) or hint
        help_ = f"{docs.get(f.name, '')} (default: {getattr(defaults, f.name)!r})".replace("%", "%%")
        if hint is bool:
            group.add_argument(f"--{f.name}", nargs="?", const=True, default=None, type=str2bool,
                               help=help_ + "; --no_" + f.name + " turns it off")
            group.add_argument(f"--no_{f.name}", dest=f.name, action="store_const", const=False,
                               help=argparse.SUPPRESS)
        elif typing.get_origin(hint) in (list, tuple):
            (elem, *_) = typing.get_args(hint) or (str,)
            group.add_argument(f"--{f.name}", nargs="*", type=elem, default=None, help=help_)
        else:
            group.add_argument(f"--{f.name}", type=hint, default=None, help=help_)
    return parser


def apply_overrides(obj: Any, values: dict[str, Any], source: str = "settings") -> Any:
    """A copy of the dataclass ``obj`` with ``values`` checked and coerced; ``None`` (an unset flag) is skipped."""
    klass = type(obj)
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, val in values.items():
        if val is None:
            continue
        if key not in names:
            raise ConfigError(f"{source}: unknown setting {key!r}; allowed: {sorted(names)}")
        try:
            changes[key] = coerce(klass, key, val)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return dataclasses.replace(obj, **changes)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML settings file, or a ConfigError naming the file and what is wrong."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a mapping of settings, got {type(data).__name__}")
    return data


def parse_dataclass_args(klass: type, argv: list[str] | None = None, description: str | None = None,
                         parser: argparse.ArgumentParser | None = None) -> tuple[Any, argparse.Namespace]:
    """``(klass() with the command line's values, the parsed namespace)``; a bad value exits with
    argparse's usage error naming it (status 2). Extra flags may be added to ``parser`` first."""
    parser = parser if parser is not None else argparse.ArgumentParser(description=description)
    add_dataclass_flags(parser, klass)
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(klass(), {f.name: getattr(args, f.name) for f in dataclasses.fields(klass)},
                              "command line")
    except ConfigError as err:
        parser.error(str(err))
    return cfg, args
