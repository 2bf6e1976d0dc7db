"""Recipes: what network to build and how to train it, as plain data.

A ``Recipe`` is a frozen dataclass that round-trips through JSON and TOML, so a
run directory's ``recipe.json`` is enough to repeat the run. Components
(activation, encoding, init, optimiser, schedule, output) are *specs*: a
registered name with optional options, such as ``"sine:omega=30"`` or
``"hashgrid:levels=16,finest=512"`` (registry.py). Presets are named recipes;
command-line flags override single fields. Every way in (``from_dict``,
``replace``, ``load_recipe``, the constructor) checks names and values and
raises ``UserError`` naming the valid ones, so a misspelt option can never be
silently ignored.

The ``original`` preset is the 2012 experiment as docs/original.md records it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from monalisa.errors import UserError, one_line, quoted, unknown_name
from monalisa.files import DuplicateKey, parse_json
from monalisa.recipes import components, encodings  # noqa: F401  (they register the built-in components)  # noqa: F401  (they register the built-in components)
from monalisa.recipes.limits import MAX_LAYERS, MAX_LR, MAX_RECIPE_BYTES
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES, format_spec
from monalisa.recipes.sizes import format_arch

ORDERS = ("shuffled", "scan")
# The largest seed both generators take: numpy's default_rng takes any whole number from 0, torch's
# manual_seed one that fits 64 bits unsigned.
MAX_SEED = 2**64 - 1

# Which registry checks each spec field.
SPEC_FIELDS = {"encoding": ENCODINGS, "output": OUTPUTS, "init": INITS, "optimizer": OPTIMIZERS,
               "schedule": SCHEDULES}


@dataclass(frozen=True)
class Recipe:
    """A network and its training; every default is the 2012 original's (docs/original.md)."""

    arch: tuple[int, ...] = (300, 300, 300, 300)  # hidden widths: the post's 4 layers of 300
    activation: str | tuple[str, ...] = "leaky_relu"  # hidden units: one spec, or one per hidden layer
    output: str = "linear"  # the original's output units are linear, not sigmoid
    encoding: str = "none"  # the original feeds the raw (row, col)
    residual: bool = False  # skip connections around equal-width hidden layers (He et al. 2016)
    init: str = "original"  # Gaussian, std 0.3 / sqrt(fan_in + 1)
    optimizer: str = "sgd"  # plain SGD, its rate scaled per layer by 1/sqrt(fan_in + 1), as the original
    lr: float | None = None  # None: the optimiser's default (0.1 for sgd, the original's)
    encoding_lr: float | None = None  # the encoding's own rate (hash tables like a larger one); None: lr
    schedule: str = "constant"  # the original kept its rate fixed
    batch_size: int = 1  # 1 is the original's online backprop, one pixel at a time
    order: str = "shuffled"  # a fresh permutation every epoch; scan order "got very bad results"
    epochs: int = 500  # the original animation's length
    until_psnr: float | None = None  # stop early once the PSNR (dB) reaches this
    time_limit: float | None = None  # stop after this many seconds of training
    seed: int = 0  # initial weights, encoding draws and pixel order

    def __post_init__(self):
        if isinstance(self.arch, (list, tuple)) and len(self.arch) > MAX_LAYERS:  # before anything walks it
            raise UserError(f"arch has {len(self.arch):,} hidden layers; at most {MAX_LAYERS:,}")
        if isinstance(self.arch, list):  # a direct Recipe(arch=[...]) call: keep the recipe hashable
            object.__setattr__(self, "arch", tuple(self.arch))
        if isinstance(self.activation, list):
            object.__setattr__(self, "activation", tuple(self.activation))
        for name in ("epochs", "batch_size", "seed"):
            if type(getattr(self, name)) is not int:
                raise UserError(f"{name} must be a whole number, got {quoted(getattr(self, name))}")
        if type(self.residual) is not bool:
            raise UserError(f"residual must be true or false, got {quoted(self.residual)}")
        if not self.arch or any(type(w) is not int or w < 1 for w in self.arch):
            raise UserError(f"arch must be a non-empty list of positive layer widths, got {quoted(list(self.arch))}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive whole number, got {quoted(getattr(self, name))}")
        if not 0 <= self.seed <= MAX_SEED:  # numpy refuses negative seeds, torch those of 2**64 and up
            raise UserError(f"seed must be a whole number from 0 to 2**64 - 1, got {quoted(self.seed)}")
        if self.order not in ORDERS:
            raise unknown_name("order", self.order, ORDERS)
        for name in ("lr", "encoding_lr", "until_psnr", "time_limit"):
            value = getattr(self, name)
            if value is not None and (type(value) not in (int, float) or not (math.isfinite(value) and value > 0)):
                raise UserError(f"{name} must be a positive number, got {quoted(value)}")
        for name in ("lr", "encoding_lr"):
            if getattr(self, name) is not None and getattr(self, name) > MAX_LR:
                raise UserError(f"{name} must be at most {MAX_LR:g} (limits.MAX_LR), got {getattr(self, name):g}")
        # Check every spec now (parse raises UserError); store the canonical form.
        for name, registry in SPEC_FIELDS.items():
            object.__setattr__(self, name, format_spec(registry.parse(getattr(self, name))))
        activations = self.activation if isinstance(self.activation, tuple) else (self.activation,)
        if isinstance(self.activation, tuple) and len(activations) not in (1, len(self.arch)):
            raise UserError(f"{len(activations)} activations given for {len(self.arch)} hidden layers; "
                            "give one for all, or one per layer")
        canonical = tuple(format_spec(ACTIVATIONS.parse(a)) for a in activations)
        object.__setattr__(self, "activation", canonical[0] if len(set(canonical)) == 1 else canonical)

    # -- derived figures -------------------------------------------------------

    def layer_activations(self) -> tuple[str, ...]:
        """One activation spec per hidden layer."""
        if isinstance(self.activation, tuple):
            return self.activation
        return (self.activation,) * len(self.arch)

    @property
    def learning_rate(self) -> float:
        """The base rate: ``lr``, or the optimiser's default."""
        if self.lr is not None:
            return float(self.lr)
        return OPTIMIZERS.parse(self.optimizer).options.default_lr

    def layer_learning_rates(self, fan_ins: list[int]) -> list[float]:
        """Each layer's rate; the original scales it by 1/sqrt(fan_in + 1) (optimiser option fan_in_scaling)."""
        if not OPTIMIZERS.parse(self.optimizer).options.fan_in_scaling:
            return [self.learning_rate] * len(fan_ins)
        return [self.learning_rate / math.sqrt(fan_in + 1) for fan_in in fan_ins]

    def parameter_count(self) -> int:
        """Trainable parameters, by arithmetic (budget.recipe_parameters): nothing is built."""
        from monalisa.recipes.sizes import recipe_parameters

        return recipe_parameters(self)

    def describe(self) -> str:
        """A short label such as '4x300 leaky_relu sgd b1' for captions and tables."""
        activation = "/".join(dict.fromkeys(a.split(":")[0] for a in self.layer_activations()))
        encoding = "" if self.encoding == "none" else f"{self.encoding.split(':')[0]} "
        return f"{encoding}{format_arch(self.arch)} {activation} {self.optimizer.split(':')[0]} b{self.batch_size}"

    def label(self, taken: Iterable[str] = ()) -> str:
        """``describe()`` as a file-name-safe label, e.g. '4x300-leaky_relu-sgd-b1': a run's or an entry's name.

        ``taken``: labels already in use; a clash (compared ignoring case, as some file systems
        do) gets '-2', '-3', ... appended.
        """
        text = self.describe().replace(" ", "-").replace(",", "_").replace("/", "+")
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip("._+-")[:60] or "run"
        used = {label.lower() for label in taken}
        label, n = base, 1
        while label.lower() in used:
            n += 1
            label = f"{base}-{n}"
        return label

    # -- conversions -----------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["arch"] = list(self.arch)
        if isinstance(self.activation, tuple):
            data["activation"] = list(self.activation)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """Build from a dict such as a parsed recipe.json; unknown keys are an error."""
        return Recipe().replace(**data)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed; each name must exist and each value fit its type."""
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise unknown_name("recipe key", unknown[0], fields, "valid keys")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_toml(self) -> str:
        # TOML has no null: an unset optional field is left out, which reads back as its default.
        return "".join(f"{name} = {json.dumps(value)}\n" for name, value in self.to_dict().items()
                       if value is not None)


_OPTIONAL_NUMBERS = ("lr", "encoding_lr", "until_psnr", "time_limit")


def _coerce(name: str, value):
    """Check a value's type for field ``name``; the constructor checks its range."""
    if name == "arch":
        if isinstance(value, str):
            return parse_arch(value)
        if isinstance(value, (list, tuple)) and len(value) > MAX_LAYERS:  # before walking the list
            raise UserError(f"arch has {len(value):,} hidden layers; at most {MAX_LAYERS:,}")
        if isinstance(value, (list, tuple)) and all(type(w) is int for w in value):
            return tuple(value)
        raise UserError(f"arch must be like '4x300' or a list of widths, got {quoted(value)}")
    if name == "activation":
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
            return tuple(value)
        raise UserError(f"activation must be a name or a list of names, got {quoted(value)}")
    if name in _OPTIONAL_NUMBERS:
        if value is None:
            return None
        if type(value) not in (int, float):
            raise UserError(f"{name} must be a number, got {quoted(value)}")
        return float(value)
    default = getattr(Recipe(), name)
    if type(value) is not type(default):
        kind = {int: "a whole number", bool: "true or false", str: "a string"}[type(default)]
        raise UserError(f"{name} must be {kind}, got {quoted(value)}")
    return value


_ARCH_REPEAT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# Digits of one number in an --arch: a width of 10^12 already needs terabytes, and bounding the
# text keeps int() and the layer tuple cheap whatever is typed.
ARCH_DIGITS = 12


def parse_arch(text: str) -> tuple[int, ...]:
    """'4x300' -> (300, 300, 300, 300); '300,300,100' -> (300, 300, 100).

    The depth and the digits are bounded on the text, before any tuple is made (limits.MAX_LAYERS).
    """
    match = _ARCH_REPEAT.match(text) if text.isascii() else None
    if match:
        if max(len(match.group(1).lstrip("0")), len(match.group(2).lstrip("0"))) > ARCH_DIGITS:
            raise UserError(f"--arch {quoted(text.strip())} has a number of more than {ARCH_DIGITS} digits")
        depth, width = int(match.group(1)), int(match.group(2))
        if depth > MAX_LAYERS:
            raise UserError(f"--arch {quoted(text.strip())} has {depth:,} hidden layers; at most {MAX_LAYERS:,}")
        widths = (width,) * depth
    else:
        if text.count(",") >= MAX_LAYERS:
            raise UserError(f"--arch has {text.count(',') + 1:,} hidden layers; at most {MAX_LAYERS:,}")
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise UserError(
                f"malformed --arch {quoted(text)}; write DEPTHxWIDTH such as 4x300, or widths such as 300,300,100"
            )
        if any(len(p.lstrip("0")) > ARCH_DIGITS for p in parts):
            raise UserError(f"--arch {quoted(text)} has a number of more than {ARCH_DIGITS} digits")
        widths = tuple(int(p) for p in parts)
    if not widths or min(widths) < 1:
        raise UserError(f"--arch {quoted(text)} needs at least one layer, each at least 1 unit wide")
    return widths


PRESETS: dict[str, Recipe] = {
    # The post: 4 hidden layers of 300 leaky rectifiers, online SGD, 500 epochs.
    "original": Recipe(),
    # The published Java code builds 6 hidden layers of 300.
    "original-code": Recipe(arch=(300,) * 6),
    # The default run: the original network and algorithm, few enough epochs
    # to show a recognisable image in about two minutes on a laptop.
    "quick": Recipe(epochs=30),
    # SIREN (Sitzmann et al. 2020, image fitting): sine units with omega_0 = 30 and their
    # initialisation, Adam. Their 5x256 network is narrowed to 3x256 for a CPU, and their
    # full-batch rate of 1e-4 raised to 1e-3 for minibatches: 28 dB in 20 s here against 25 dB.
    "siren": Recipe(arch=(256,) * 3, activation="sine", init="siren", optimizer="adam", lr=1e-3,
                    batch_size=8192, epochs=300),
    # Gaussian Fourier features (Tancik et al. 2020, natural images): 256 features, sigma = 10,
    # ReLU layers of 256 (their 4 narrowed to 3, which fits the original's parameter budget), Adam 1e-3.
    "fourier": Recipe(arch=(256,) * 3, activation="relu", encoding="fourier", init="torch", optimizer="adam",
                      lr=1e-3, batch_size=8192, epochs=300),
    # Multiresolution hash encoding (Mueller et al. 2022): the paper's 16 levels x 2 features from
    # resolution 16, 2^14 entries a level, finest 512 (beyond the image's 429 rows), a 2x64 ReLU
    # network, Adam at 1e-2 with beta2 0.99 and eps 1e-15 (instant-ngp's settings).
    "hashgrid": Recipe(arch=(64, 64), activation="relu", encoding="hashgrid", init="torch",
                       optimizer="adam:beta2=0.99,eps=1e-15", lr=1e-2, batch_size=16384, epochs=300),
    # The best time to 30 dB found on a 2-core CPU (benchmarks/time_to_quality.py): a hash grid with
    # fewer, coarser-starting levels (12 from resolution 8: 180k parameters, under the original's 273k),
    # one hidden layer of 32, small batches for many steps, a doubled rate. Measured under load with
    # one thread: 30 dB in 0.5 s, against 2.2 s for `hashgrid`.
    "fast": Recipe(arch=(32,), activation="relu", encoding="hashgrid:levels=12,base=8", init="torch",
                   optimizer="adam:beta2=0.99,eps=1e-15", lr=2e-2, batch_size=8192, epochs=100),
    # The reader's failing set-up from docs/original.md: RPROP (a full-batch method, so one batch an epoch),
    # 3 hidden layers of 300 rectifiers, sigmoid outputs, PyTorch's initialisation.
    "rprop-sigmoid": Recipe(arch=(300,) * 3, activation="relu", output="sigmoid", init="torch", optimizer="rprop",
                            batch_size=10**9, epochs=500),
}


# The preset a run starts from when none is named (`monalisa train`, compare's --arch entries):
# the original network and algorithm, few enough epochs to show an image in about two minutes.
DEFAULT_PRESET = "quick"


def get_preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return PRESETS[name]


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a .json or .toml file (missing keys take the defaults)."""
    path = Path(path)
    try:
        if path.is_file() is False and path.exists() and not path.is_dir():  # a FIFO blocks, /dev/zero never ends
            raise UserError(f"recipe file {str(path)!r} is not a regular file (a FIFO or device); give a .json or "
                            ".toml file")
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"recipe file {str(path)!r} is over {MAX_RECIPE_BYTES // 2**10:,} KB; a recipe is a few "
                            "lines of keys and values")
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"recipe file {str(path)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read recipe file {str(path)!r}: {exc.__class__.__name__}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else parse_json(text)
    except DuplicateKey as exc:
        raise UserError(f"recipe file {str(path)!r}: {exc}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"recipe file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise UserError(f"recipe file {str(path)!r} is nested too deeply; a recipe is flat keys and values") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts (sys.int_info)
        raise UserError(f"recipe file {str(path)!r} is not a readable recipe: {one_line(str(exc), 100)}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe file {str(path)!r} must hold a table of recipe keys")
    return Recipe.from_dict(data)
