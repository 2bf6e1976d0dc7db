"""The built-in components of a recipe, registered by name (see registry.py).

- activations: leaky_relu, relu, tanh, sigmoid, gelu, silu, sine (SIREN)
- outputs: linear, sigmoid, clamp
- initialisers: original (docs/original.md), torch (PyTorch's default), siren
- optimisers: sgd, momentum, adam, rprop
- learning-rate schedules: constant, step, exponential, cosine

Input encodings live in encodings.py. Sources: the 2012 original
(docs/original.md); SIREN, Sitzmann et al. 2020, "Implicit Neural
Representations with Periodic Activation Functions" (sine units, omega_0 = 30,
and their initialisation); RPROP, Riedmiller & Braun 1993.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from monalisa.recipes.registry import ACTIVATIONS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES, NoOptions, require

# -- activations: build(options, layer_index) -> nn.Module ------------------------------


@dataclass(frozen=True)
class LeakyOptions:
    slope: float = 0.01  # docs/original.md: "so the derivative never goes completely to zero"

    def __post_init__(self):
        # Past 1 the "leak" is the steeper side: no longer a leaky rectifier (and 1e308 overflows float32).
        require(0 <= self.slope <= 1, f"leaky_relu slope must be from 0 to 1, got {self.slope}")


@ACTIVATIONS.register("leaky_relu", LeakyOptions)
def _leaky_relu(options: LeakyOptions, layer_index: int) -> nn.Module:
    return nn.LeakyReLU(options.slope)


for _name, _module in (("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("gelu", nn.GELU),
                       ("silu", nn.SiLU)):
    ACTIVATIONS.register(_name)(lambda options, layer_index, _module=_module: _module())


# SIREN's omega_0 (30 in the paper): below 1e-3 sin(omega x) is a straight line over the inputs, and
# SIREN's initialisation divides by omega (1e-308 overflows it); above 1e4 float32 keeps ~3 digits of
# omega x's phase.
OMEGA_RANGE = (1e-3, 1e4)


@dataclass(frozen=True)
class SineOptions:
    omega: float = 30.0  # SIREN's omega_0 for hidden layers
    first_omega: float = 30.0  # SIREN's omega_0 for the first layer, which sets the frequencies the net can see

    def __post_init__(self):
        low, high = OMEGA_RANGE
        require(low <= min(self.omega, self.first_omega) and max(self.omega, self.first_omega) <= high,
                f"sine omega and first_omega must be from {low:g} to {high:g}")


class Sine(nn.Module):
    """sin(omega * x): SIREN's activation."""

    def __init__(self, omega: float):
        super().__init__()
        self.omega = omega

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * x)

    def extra_repr(self) -> str:
        return f"omega={self.omega}"


@ACTIVATIONS.register("sine", SineOptions)
def _sine(options: SineOptions, layer_index: int) -> nn.Module:
    return Sine(options.first_omega if layer_index == 0 else options.omega)


# -- outputs ---------------------------------------------------------------------------


class Clamp(nn.Module):
    """Clamp to [0, 1]: in range the output is linear; outside it the gradient is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


OUTPUTS.register("linear")(lambda options: nn.Identity())
OUTPUTS.register("sigmoid")(lambda options: nn.Sigmoid())
OUTPUTS.register("clamp")(lambda options: Clamp())


# -- initialisers: init(options, linear, layer_index, generator) -----------------------


@dataclass(frozen=True)
class OriginalInitOptions:
    scale: float = 0.3  # docs/original.md; the author found the initial scale "very important"

    def __post_init__(self):
        require(self.scale > 0, f"original init scale must be > 0, got {self.scale}")


@INITS.register("original", OriginalInitOptions)
@torch.no_grad()
def _init_original(options: OriginalInitOptions, linear: nn.Linear, layer_index: int, generator) -> None:
    # Weights and biases ~ N(0, (scale / sqrt(fan_in + 1))^2).
    std = options.scale / math.sqrt(linear.in_features + 1)
    linear.weight.normal_(0.0, std, generator=generator)
    linear.bias.normal_(0.0, std, generator=generator)


@INITS.register("torch")
@torch.no_grad()
def _init_torch(options, linear: nn.Linear, layer_index: int, generator) -> None:
    # PyTorch's nn.Linear default (Kaiming-uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    # drawn from our generator so the seed still decides it.
    bound = 1 / math.sqrt(linear.in_features)
    linear.weight.uniform_(-bound, bound, generator=generator)
    linear.bias.uniform_(-bound, bound, generator=generator)


@dataclass(frozen=True)
class SirenInitOptions:
    omega: float = 30.0  # must match the sine activation's hidden omega_0

    def __post_init__(self):
        require(OMEGA_RANGE[0] <= self.omega <= OMEGA_RANGE[1],
                f"siren init omega must be from {OMEGA_RANGE[0]:g} to {OMEGA_RANGE[1]:g}, got {self.omega}")


@INITS.register("siren", SirenInitOptions)
@torch.no_grad()
def _init_siren(options: SirenInitOptions, linear: nn.Linear, layer_index: int, generator) -> None:
    # SIREN, Sec. 3.2: first layer W ~ U(-1/n, 1/n); later layers W ~ U(-sqrt(6/n)/omega, sqrt(6/n)/omega),
    # so that omega * W x is ~ standard-deviation 1 whatever the width. Biases as PyTorch's default.
    n = linear.in_features
    bound = 1 / n if layer_index == 0 else math.sqrt(6 / n) / options.omega
    linear.weight.uniform_(-bound, bound, generator=generator)
    linear.bias.uniform_(-1 / math.sqrt(n), 1 / math.sqrt(n), generator=generator)


# -- optimisers: build(options, groups) -> torch.optim.Optimizer -----------------------
# Each options class carries the optimiser's default learning rate (used when a recipe
# leaves lr unset) and whether the rate is scaled per layer by 1/sqrt(fan_in + 1).


@dataclass(frozen=True)
class SGDOptions:
    default_lr: ClassVar[float] = 0.1  # the original's rate
    fan_in_scaling: bool = True  # the original's per-layer rate, lr / sqrt(fan_in + 1)


@OPTIMIZERS.register("sgd", SGDOptions)
def _sgd(options: SGDOptions, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=groups[0]["lr"])


@dataclass(frozen=True)
class MomentumOptions:
    default_lr: ClassVar[float] = 0.01  # momentum 0.9 multiplies the step by ~10: this keeps the original's
    momentum: float = 0.9  # the textbook value
    nesterov: bool = False
    fan_in_scaling: bool = True

    def __post_init__(self):
        require(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        require(self.momentum > 0 or not self.nesterov, "nesterov needs momentum > 0")


@OPTIMIZERS.register("momentum", MomentumOptions)
def _momentum(options: MomentumOptions, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=options.momentum, nesterov=options.nesterov)


@dataclass(frozen=True)
class AdamOptions:
    default_lr: ClassVar[float] = 1e-3  # Kingma & Ba's default
    beta1: float = 0.9  # Kingma & Ba
    beta2: float = 0.999  # Kingma & Ba; instant-ngp uses 0.99 for hash tables
    eps: float = 1e-8  # Kingma & Ba; instant-ngp uses 1e-15
    fan_in_scaling: bool = False  # Adam normalises step sizes itself

    def __post_init__(self):
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "adam beta1 and beta2 must be in [0, 1)")
        require(self.eps >= 0, f"adam eps must be >= 0, got {self.eps}")


@OPTIMIZERS.register("adam", AdamOptions)
def _adam(options: AdamOptions, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=groups[0]["lr"], betas=(options.beta1, options.beta2), eps=options.eps)


@dataclass(frozen=True)
class RpropOptions:
    default_lr: ClassVar[float] = 0.01  # PyTorch's default initial step
    eta_minus: float = 0.5  # Riedmiller & Braun
    eta_plus: float = 1.2  # Riedmiller & Braun
    fan_in_scaling: bool = False  # step sizes adapt per weight

    def __post_init__(self):
        require(0 < self.eta_minus < 1 < self.eta_plus, "rprop needs 0 < eta_minus < 1 < eta_plus")
        # Riedmiller & Braun use 1.2; at 10 a step grows tenfold per agreeing sign, and torch keeps
        # the factor in float32 (1e308 overflows it).
        require(self.eta_plus <= 10, f"rprop eta_plus must be at most 10, got {self.eta_plus}")


@OPTIMIZERS.register("rprop", RpropOptions)
def _rprop(options: RpropOptions, groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.Rprop(groups, lr=groups[0]["lr"], etas=(options.eta_minus, options.eta_plus))


# -- schedules: build(options) -> factor(progress), progress in [0, 1] over the run ------


@SCHEDULES.register("constant")
def _constant(options: NoOptions):
    return lambda progress: 1.0


@dataclass(frozen=True)
class StepOptions:
    every: float = 0.25  # fraction of the run between drops: four plateaus
    gamma: float = 0.3  # factor at each drop

    def __post_init__(self):
        # A step schedule drops the rate; a factor above 1 would compound past float32 at each step.
        require(self.every > 0 and 0 < self.gamma <= 1, "step schedule needs every > 0 and 0 < gamma <= 1")


@SCHEDULES.register("step", StepOptions)
def _step(options: StepOptions):
    return lambda progress: options.gamma ** math.floor(progress / options.every + 1e-9)


@dataclass(frozen=True)
class DecayOptions:
    final: float = 0.01  # factor reached at the end of the run

    def __post_init__(self):
        require(self.final > 0, f"exponential schedule final must be > 0, got {self.final}")


@SCHEDULES.register("exponential", DecayOptions)
def _exponential(options: DecayOptions):
    return lambda progress: options.final ** min(progress, 1.0)


@dataclass(frozen=True)
class CosineOptions:
    final: float = 0.0  # Loshchilov & Hutter's cosine annealing, without restarts
    warmup: float = 0.0  # fraction of the run with a linear ramp up from 0

    def __post_init__(self):
        # Annealing goes down, to final x the rate (1e308 x the rate overflows float32).
        require(0 <= self.final <= 1, f"cosine schedule final must be from 0 to 1, got {self.final}")
        require(0 <= self.warmup < 1, f"cosine schedule warmup must be in [0, 1), got {self.warmup}")


@SCHEDULES.register("cosine", CosineOptions)
def _cosine(options: CosineOptions):
    def factor(progress: float) -> float:
        if progress < options.warmup:
            return progress / options.warmup
        t = min(1.0, (progress - options.warmup) / max(1e-12, 1 - options.warmup))
        return options.final + (1 - options.final) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
