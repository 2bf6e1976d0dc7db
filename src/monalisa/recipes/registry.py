"""Components by name: activations, encodings, initialisers, optimisers, schedules.

Every component of a recipe is written as a *spec*, a string naming a
registered component and, optionally, its options:

    "leaky_relu"                         defaults
    "sine:omega=30"                      one option changed
    "hashgrid:levels=16,finest=512"      several

Each registered component declares its options as a frozen dataclass; a spec's
options are checked against it (an unknown option or a value of the wrong type
is a ``UserError`` naming the valid ones), so a misspelt option is never
silently ignored. A user's own component registers the same way:

    from dataclasses import dataclass
    from torch import nn
    from monalisa.recipes.registry import ENCODINGS

    @dataclass(frozen=True)
    class MyOptions:
        width: int = 8  # why this default

    @ENCODINGS.register("mine", MyOptions)
    def build_mine(options: MyOptions, in_features: int, generator):
        module = nn.Linear(in_features, options.width)  # anything with .out_features
        return module

and is then usable as ``--encoding mine:width=16`` or ``encoding = "mine"``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from monalisa.errors import UserError, quoted, unknown_name


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class Entry:
    name: str
    options: type  # a frozen dataclass of the component's options and their defaults
    build: Callable[..., Any]
    # Encodings only: size(options, in_features) -> (out_features, parameters), arithmetic on the
    # options, so a recipe's size is checked before anything is allocated (limits.py). Optional: an
    # encoding registered without it is built to be measured.
    size: Callable[..., tuple[int, int]] | None = None


@dataclass(frozen=True)
class Spec:
    """A parsed spec: a registered name and its options (a dataclass instance)."""

    name: str
    options: Any

    def __str__(self) -> str:
        return format_spec(self)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "activation", "encoding", ...: used in error messages
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type = NoOptions, size: Callable[..., tuple[int, int]] | None = None):
        """Decorator: register ``build(options, ...)`` under ``name`` (``size``: see Entry)."""
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"options of {self.kind} {name!r} must be a dataclass")

        def decorate(build):
            self._entries[name] = Entry(name, options, build, size)
            return build

        return decorate

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def parse(self, spec: str) -> Spec:
        """'name:key=value,...' -> Spec, every option checked against the component's dataclass."""
        if not isinstance(spec, str) or not spec.strip():
            raise UserError(f"{self.kind} must be a name such as {next(iter(self._entries))!r}, "
                            f"got {quoted(spec)}")
        name, _, rest = spec.strip().partition(":")
        entry = self.entry(name.strip())
        fields = {f.name: f for f in dataclasses.fields(entry.options)}
        values = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise UserError(f"{self.kind} option {quoted(item)} in {quoted(spec)} needs a value: write "
                                "NAME=VALUE")
            if key not in fields:
                valid = ", ".join(fields) or "none"
                raise UserError(f"unknown option {quoted(key)} for {self.kind} {entry.name!r}; "
                                f"valid options: {valid}")
            if key in values:  # last-wins would silently drop one of the two
                raise UserError(f"option {key!r} is given twice in {quoted(spec)}; give it once")
            values[key] = _parse_value(text.strip(), entry.options().__getattribute__(key), key, spec)
        return Spec(entry.name, entry.options(**values))

    def build(self, spec: str | Spec, *args, **kwargs):
        spec = self.parse(spec) if isinstance(spec, str) else spec
        return self._entries[spec.name].build(spec.options, *args, **kwargs)


def require(condition: bool, message: str) -> None:
    """For options dataclasses' __post_init__: a value out of range is the user's mistake."""
    if not condition:
        raise UserError(message)


def format_spec(spec: Spec) -> str:
    """The canonical spec string: the name, then only the options that differ from the defaults."""
    defaults = type(spec.options)()
    changed = [f"{f.name}={getattr(spec.options, f.name)}" for f in dataclasses.fields(spec.options)
               if getattr(spec.options, f.name) != getattr(defaults, f.name)]
    return spec.name + (":" + ",".join(changed) if changed else "")


# Whole-number options are written as literals or as powers of two (table_size=2**14), never as
# arithmetic: Python's int() and ** would happily spend minutes and gigabytes on 9**999999999.
# 18 digits keep a literal below 2**63 (torch's int64); 2**40 is far past any size the limits allow.
MAX_INT_DIGITS = 18
MAX_POWER_OF_TWO = 40
_INT_LITERAL = re.compile(r"[+-]?\d{1,%d}" % MAX_INT_DIGITS)
_POWER_OF_TWO = re.compile(r"2\s*\*\*\s*([+-]?\d{1,3})")


def _parse_value(text: str, default, key: str, spec: str):
    """Parse an option value to the type of its default: bool, int, float or str.

    The text is checked before anything is computed from it, so no value can cost more than its parse.
    """
    where = f"option {key}={quoted(text)} in {quoted(spec)}"
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UserError(f"{where} must be true or false")
        return text.lower() in ("true", "1", "yes")
    if isinstance(default, int):
        power = _POWER_OF_TWO.fullmatch(text)
        if power:  # table sizes read best as powers of two: table_size=2**14
            exponent = int(power.group(1))
            if not 0 <= exponent <= MAX_POWER_OF_TWO:
                raise UserError(f"{where}: write a power of two as 2**K with K a whole number from 0 to "
                                f"{MAX_POWER_OF_TWO}")
            return 2**exponent
        if not _INT_LITERAL.fullmatch(text.strip()):
            raise UserError(f"{where} must be a whole number of at most {MAX_INT_DIGITS} digits, or a power of "
                            f"two written 2**K (K from 0 to {MAX_POWER_OF_TWO})")
        return int(text)
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UserError(f"{where} must be a finite number")
        return value
    return text


ACTIVATIONS = Registry("activation")
ENCODINGS = Registry("encoding")
INITS = Registry("init")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
OUTPUTS = Registry("output")
