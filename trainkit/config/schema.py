"""Typed, strict conversion of plain dicts (from YAML) into dataclasses.

Every recipe section is a dataclass; this module turns a mapping into that
dataclass and refuses anything it does not declare. Errors name the full dotted
key, the offending value and what is allowed, so a typo never silently becomes
a new setting (the failure mode of exec'd and argparse-style configs).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class RecipeError(ValueError):
    """A user-facing recipe problem; the message is one line and names the key or file."""


def closest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The choice most like ``word`` (difflib ratio >= 0.6), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or nothing: the one did-you-mean of every error."""
    close = closest(word, choices)
    return f"; did you mean {close!r}?" if close else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and return it converted.

    An int is accepted where a float is expected; a bool is never accepted as a number.
    """
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise RecipeError(f"{key}: invalid value {value!r}; choose one of {allowed}"
                              + (did_you_mean(value, map(str, get_args(tp))) if isinstance(value, str) else ""))
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise RecipeError(f"{key}: must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key)
            except RecipeError as err:
                errors.append(str(err))
        # A single non-null alternative has the most specific message.
        if len(errors) == 1:
            raise RecipeError(errors[0])
        raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value) or abs(value) >= 2.0**63:   # YAML's .nan/.inf, or 1e308
            raise RecipeError(f"{key}: expected a finite number of sensible size, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        if not -2**63 <= value < 2**63:   # torch (seeds, thread counts) takes 64-bit integers at most
            raise RecipeError(f"{key}: {value} is out of range (a 64-bit integer)")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in the schema


def from_dict(cls: type, data: Any, key: str) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys are errors with a did-you-mean."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{key}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{key}." if key else ""
    for name in data:
        if name not in fields:
            close = closest(str(name), fields)
            hint = f"; did you mean {prefix}{close}?" if close else f"; valid keys: {', '.join(fields)}"
            raise RecipeError(f"unknown key {prefix}{name}{hint}")
    values = {}
    for name in fields:
        if name in data:
            values[name] = convert(data[name], hints[name], f"{key}.{name}" if key else name)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(key)
    return obj


NAME_MAX, PATH_MAX = 255, 4096   # Linux: bytes per path component, per path


def check_path(value: str | None, key: str) -> None:
    """A path-like recipe string the file system can hold: no component over 255 bytes, no NUL
    (otherwise the first os call fails with "File name too long" far from the key that caused it)."""
    if value is None:
        return
    raw = os.fsencode(value)
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if b"\0" in raw or longest > NAME_MAX or len(raw) > PATH_MAX:
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise RecipeError(f"{key}: not a usable path ({len(raw)} bytes, longest name {longest} bytes; the limits "
                          f"are {NAME_MAX} per name, {PATH_MAX} in all, no NUL): {shown!r}")


def check_kwargs(value: dict, key: str) -> None:
    """A free-form keyword-argument section (passed on as ``**kwargs``): its keys must be argument
    names, or the call far away fails with a TypeError that names no recipe key."""
    bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise RecipeError(f"{key}: keys must be argument names, got {bad[0]!r}")


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML/JSON-ready) copy of a dataclass tree."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
