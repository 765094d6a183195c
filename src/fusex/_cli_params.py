"""``--param NAME=VALUE`` on the command line: every `FusionParams` field, parsed by its type hint.

The dataclass is the single source: its fields, type hints and defaults
decide what each value may be, and its docstring gives the one-line meaning
that ``fusex fuse --help`` prints.  A value is never guessed from its look
alone: ``backtracking=no`` is False because the field is a bool, and a
string that fits none of the field's types is an error naming what would fit.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from .params import FusionParams

__all__ = ["describe_params", "parse_param"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_CALL = re.compile(r"(\w+)\((.*)\)", re.DOTALL)


class _NoMatch(Exception):
    """The text is not a value of this one type (the next type of the union is tried)."""


def parse_param(text: str) -> tuple[str, Any]:
    """Split ``NAME=VALUE`` and parse the value by the type of field ``NAME``.

    Raises
    ------
    ValueError
        For a missing ``=``, an unknown field, or a value that is none of the
        field's types; the message says what the field takes.

    """
    if "=" not in text:
        raise ValueError(f"--param needs NAME=VALUE, got {text!r}")
    name, raw = (part.strip() for part in text.split("=", 1))
    hints = _hints()
    if name not in hints:
        raise ValueError(f"--param {name}: unknown parameter; choose from {', '.join(sorted(hints))}")
    options = _options(hints[name])
    for option in options:
        try:
            return name, _parse(raw, option)
        except _NoMatch:
            continue
    mapping = next((o for o in options if _origin(o) is Mapping), None)
    if mapping is not None and ":" in raw:
        raise ValueError(f"--param {name}: per-element values read ELEMENT:VALUE,..., got {raw!r}")
    raise ValueError(f"--param {name} takes {_syntax(options)}, got {raw!r}")


def describe_params(width: int = 100) -> str:
    """Return the list of fields for ``fusex fuse --help``: each with its syntax, default and meaning."""
    meanings = _meanings()
    lines = ["parameters (--param NAME=VALUE; the defaults are --preset fusex's):"]
    for field in dataclasses.fields(FusionParams):
        options = _options(_hints()[field.name])
        lines.append(f"  {field.name}={_show(field.default)}    ({_syntax(options)})")
        meaning = meanings.get(field.name, "")
        lines.extend(textwrap.wrap(meaning, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def _hints() -> dict[str, Any]:
    hints = typing.get_type_hints(FusionParams)
    return {f.name: hints[f.name] for f in dataclasses.fields(FusionParams)}


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint)


def _options(hint: Any) -> list[Any]:
    """Return the members of a union hint, most specific first, so that "1" is an int where ints are allowed."""
    members = list(typing.get_args(hint)) if _origin(hint) in (typing.Union, types.UnionType) else [hint]
    order = (type(None), bool, Literal, int, float, Sequence, Mapping, "dataclass", str, Callable)

    def rank(member: Any) -> int:
        key = _origin(member) or member
        if dataclasses.is_dataclass(member):
            key = "dataclass"
        return order.index(key) if key in order else len(order)

    return sorted(members, key=rank)


def _parse(raw: str, option: Any) -> Any:
    low = raw.lower()
    if option is type(None):
        if low == "none":
            return None
    elif option is bool:
        if low in _TRUE | _FALSE:
            return low in _TRUE
    elif _origin(option) is Literal:
        for choice in typing.get_args(option):
            if low == str(choice).lower():
                return choice
    elif option is int:
        if re.fullmatch(r"[+-]?\d+", raw):
            return int(raw)
    elif option is float:
        return _number(raw)
    elif _origin(option) is Sequence:
        return tuple(_number(v) for v in raw.split(","))
    elif _origin(option) is Mapping:
        if ":" in raw:
            pairs = [pair.split(":") for pair in raw.split(",")]
            if all(len(p) == 2 and p[0].strip() for p in pairs):
                # Values are numbers, or names where the mapping's values are a Literal (``prior=O:huber``).
                value = typing.get_args(option)[1]
                read = (lambda v: _parse(v.strip(), value)) if _origin(value) is Literal else _number
                return {k.strip(): read(v) for k, v in pairs}
    elif dataclasses.is_dataclass(option):
        return _construct(raw, option)
    elif option is str:
        if raw and not re.fullmatch(r"[-+.\d,:eE ]+", raw):
            return raw
    raise _NoMatch


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _NoMatch from None
    if not math.isfinite(value):
        raise _NoMatch
    return value


def _construct(raw: str, cls: type) -> Any:
    """``ExponentialDecay(eta0=1, rate=0.02)`` (the field's repr, as results store it) from numbers only."""
    match = _CALL.fullmatch(raw.strip())
    if match is None or match[1] != cls.__name__:
        raise _NoMatch
    args: list[float] = []
    kwargs: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in match[2].split(","))):
        key, _, value = item.rpartition("=")
        if key:
            kwargs[key.strip()] = _number(value)
        else:
            args.append(_number(value))
    try:
        return cls(*args, **kwargs)
    except TypeError:
        raise _NoMatch from None


def _syntax(options: list[Any]) -> str:
    words = []
    for option in options:
        if option is type(None):
            words.append("none")
        elif option is bool:
            words.append("true/false (or yes/no, on/off, 1/0)")
        elif _origin(option) is Literal:
            words.append("one of " + "/".join(map(str, typing.get_args(option))))
        elif option is int:
            words.append("an integer")
        elif option is float:
            words.append("a number")
        elif _origin(option) is Sequence:
            words.append("numbers separated by commas")
        elif _origin(option) is Mapping:
            words.append("ELEMENT:VALUE,... (one value per map)")
        elif dataclasses.is_dataclass(option):
            names = ", ".join(f"{f.name}=..." for f in dataclasses.fields(option))
            words.append(f"{option.__name__}({names})")
        elif option is str:
            words.append("a name")
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _show(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _meanings() -> dict[str, str]:
    """Return the first sentence of each field's entry in the FusionParams docstring, without reST markup."""
    doc = inspect.getdoc(FusionParams) or ""
    section = doc.split("Parameters\n----------\n", 1)[-1].split("\n\n", 1)[0]
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    for line in section.splitlines():
        header = re.match(r"(\w+) : ", line)
        if header and not line.startswith(" "):
            current = entries.setdefault(header[1], [])
        elif line.strip():
            current.append(line.strip())
    out = {}
    for name, words in entries.items():
        text = " ".join(words)
        text = re.sub(r":\w+:`([^`]*)`", r"\1", text)  # :math:`x`, :class:`x` -> x
        text = re.sub(r"\\overline\{([^}]*)\}", r"mean(\1)", text)
        text = re.sub(r"_\{(\w+)\}", r"_\1", text)  # lambda_{TV} -> lambda_TV
        text = text.replace("``", "").replace("`", "").replace("\\", "")
        out[name] = re.split(r"(?<=\.)\s+(?![a-z])", text, maxsplit=1)[0]
    return out
