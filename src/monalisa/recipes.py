"""Recipes: what network to build and how to train it, as plain data.

A ``Recipe`` is a frozen dataclass that round-trips through JSON and TOML, so a
run directory's ``recipe.json`` is enough to repeat the run. Presets are named
recipes; command-line flags override single fields. Every way in (``from_dict``,
``replace``, ``load_recipe``) checks names and values and raises ``UserError``
naming the valid ones, so a misspelt option can never be silently ignored.

The ``original`` preset is the 2012 experiment as ../shared/RECIPE.md records it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# The valid values of every field that is a name, in one place: validation,
# error messages and the CLI's help all read them from here.
CHOICES = {
    "activation": ("leaky_relu", "relu", "tanh", "sigmoid"),
    "output": ("linear", "sigmoid"),
    "init": ("original", "torch"),
    "optimizer": ("sgd", "momentum", "adam"),
    "order": ("shuffled", "scan"),
}

# Learning rate used when a recipe leaves ``lr`` unset, per optimiser.
DEFAULT_LR = {
    "sgd": 0.1,  # the original's rate (RECIPE.md), before its per-layer fan-in scaling
    "momentum": 0.01,  # momentum 0.9 multiplies the effective step by ~10: this keeps the original's step
    "adam": 1e-3,  # Kingma & Ba's default
}


@dataclass(frozen=True)
class Recipe:
    """A network and its training, every default the 2012 original's (RECIPE.md)."""

    arch: tuple[int, ...] = (300, 300, 300, 300)  # hidden widths: the post's 4 layers of 300
    activation: str = "leaky_relu"  # hidden units: the original's leaky rectifier
    slope: float = 0.01  # leaky slope: "so the derivative never goes completely to zero"
    output: str = "linear"  # the original's output units are linear, not sigmoid
    init: str = "original"  # Gaussian, std init_scale / sqrt(fan_in + 1); "torch": PyTorch's default
    init_scale: float = 0.3  # the original's constant; the author found it "very important"
    optimizer: str = "sgd"  # plain SGD, rate scaled per layer by 1/sqrt(fan_in + 1) as in the original
    lr: float | None = None  # None: DEFAULT_LR for the optimiser (0.1 for sgd, the original's)
    momentum: float = 0.9  # only for optimizer="momentum"; the textbook value
    batch_size: int = 1  # 1 is the original's online backprop, one pixel at a time
    order: str = "shuffled"  # a fresh permutation every epoch; scan order "got very bad results"
    epochs: int = 500  # the original animation's length
    seed: int = 0  # initial weights and pixel order

    def __post_init__(self):
        if isinstance(self.arch, list):  # from a direct Recipe(arch=[...]) call: keep the recipe hashable
            object.__setattr__(self, "arch", tuple(self.arch))
        for name in ("epochs", "batch_size", "seed"):
            if type(getattr(self, name)) is not int:
                raise UserError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        for name, valid in CHOICES.items():
            value = getattr(self, name)
            if value not in valid:
                raise UserError(f"unknown {name} {value!r}; choose one of: {', '.join(valid)}")
        if not self.arch or any(type(w) is not int or w < 1 for w in self.arch):
            raise UserError(f"arch must be a non-empty list of positive layer widths, got {list(self.arch)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive whole number, got {getattr(self, name)}")
        for name in ("slope", "init_scale", "momentum"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**64:  # numpy refuses negative seeds, torch those of 2**64 and up
            raise UserError(f"seed must be a whole number from 0 to 2**64 - 1, got {self.seed}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a positive number, got {self.lr}")

    # -- derived figures -------------------------------------------------------

    @property
    def widths(self) -> tuple[int, ...]:
        """Every layer's width, input (row, col) and output (R, G, B) included."""
        return (2, *self.arch, 3)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    def layer_learning_rates(self) -> list[float]:
        """Each layer's step size: the original scales the rate by 1/sqrt(fan_in + 1)."""
        if self.optimizer == "adam":
            return [self.learning_rate] * (len(self.widths) - 1)
        return [self.learning_rate / math.sqrt(fan_in + 1) for fan_in in self.widths[:-1]]

    def parameter_count(self) -> int:
        return sum(n_in * n_out + n_out for n_in, n_out in zip(self.widths[:-1], self.widths[1:]))

    def describe(self) -> str:
        """A short label such as '4x300 leaky_relu sgd' for captions and tables."""
        return f"{format_arch(self.arch)} {self.activation} {self.optimizer} b{self.batch_size}"

    # -- conversions -----------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["arch"] = list(self.arch)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """Build from a dict such as a parsed recipe.json; unknown keys are an error."""
        return Recipe().replace(**data)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed; each name must exist and each value fit its type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise UserError(f"unknown recipe key {unknown[0]!r}; valid keys: {', '.join(fields)}")
        coerced = {name: _coerce(name, value, getattr(self, name)) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_toml(self) -> str:
        lines = []
        for name, value in self.to_dict().items():
            if value is None:
                continue  # TOML has no null; a missing key means the default
            lines.append(f"{name} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


def _coerce(name: str, value, current):
    """Check a value against the field's type (taken from the default recipe)."""
    if name == "arch":
        if isinstance(value, str):
            return parse_arch(value)
        if isinstance(value, (list, tuple)) and all(type(w) is int for w in value):
            return tuple(value)
        raise UserError(f"arch must be like '4x300' or a list of widths, got {value!r}")
    if name == "lr":
        if value is None:
            return None
        current = 0.0
    if isinstance(current, bool) or isinstance(current, str):
        if type(value) is not type(current):
            raise UserError(f"{name} must be a {type(current).__name__}, got {value!r}")
        return value
    if isinstance(current, int):
        if type(value) is not int:
            raise UserError(f"{name} must be a whole number, got {value!r}")
        return value
    if isinstance(current, float):
        if type(value) not in (int, float):
            raise UserError(f"{name} must be a number, got {value!r}")
        return float(value)
    raise AssertionError(f"no coercion for field {name}")


_ARCH_REPEAT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_arch(text: str) -> tuple[int, ...]:
    """'4x300' -> (300, 300, 300, 300); '300,300,100' -> (300, 300, 100)."""
    match = _ARCH_REPEAT.match(text)
    if match:
        depth, width = int(match.group(1)), int(match.group(2))
        widths = (width,) * depth
    else:
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise UserError(
                f"malformed --arch {text!r}; write DEPTHxWIDTH such as 4x300, or widths such as 300,300,100"
            )
        widths = tuple(int(p) for p in parts)
    if not widths or min(widths) < 1:
        raise UserError(f"--arch {text!r} needs at least one layer, each at least 1 unit wide")
    return widths


def format_arch(arch: tuple[int, ...]) -> str:
    """The inverse of parse_arch, preferring the DEPTHxWIDTH form."""
    if len(set(arch)) == 1:
        return f"{len(arch)}x{arch[0]}"
    return ",".join(str(w) for w in arch)


PRESETS: dict[str, Recipe] = {
    # The post: 4 hidden layers of 300 leaky rectifiers, online SGD, 500 epochs.
    "original": Recipe(),
    # The published Java code builds 6 hidden layers of 300.
    "original-code": Recipe(arch=(300,) * 6),
    # The default run: the original network and algorithm, few enough epochs
    # to show a recognisable image in about a minute on a laptop.
    "quick": Recipe(epochs=30),
}


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a .json or .toml file (missing keys take the defaults)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"recipe file {str(path)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read recipe file {str(path)!r}: {exc.__class__.__name__}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"recipe file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe file {str(path)!r} must hold a table of recipe keys")
    return Recipe.from_dict(data)
