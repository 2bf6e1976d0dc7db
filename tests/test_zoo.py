"""Every registered component and preset, against reference answers written out here.

- each activation, encoding, init, optimiser, schedule, output and preset builds a small network
  whose forward pass equals a plain formula-by-formula forward, and whose every parameter gets a
  finite, non-zero gradient;
- the optimisers' first three steps against their update rules written out (SGD, PyTorch's
  momentum, Kingma & Ba's Adam, Riedmiller & Braun's Rprop), at the per-layer and encoding rates;
- SIREN's initialisation against its paper's distributions, sine's omegas, per-layer activations,
  skip connections against a hand-written forward;
- the schedules against their formulas, and the batched engine applying them;
- the stopping rules, `monalisa render` against the network evaluated on a hand-made grid, and which
  engine a recipe gets.
"""

import contextlib
import io
import json
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from monalisa import fit, train_run
from monalisa.cli import main
from monalisa.engines import choose_engine
from monalisa.engines.batched import make_optimizer
from monalisa.errors import UserError
from monalisa.images import Target
from monalisa.models import build_model, linear_layers
from monalisa.recipes import PRESETS, Recipe, load_recipe
from monalisa.record import RunDirectory
from monalisa.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.rendering import output_size
from monalisa.train import Trainer

# A hash grid small enough to build in a millisecond: levels at resolutions 4, 10, 25, 64, the
# coarser two dense, the finer two hashed into 2^8 rows (they have more than 2^8 vertices).
SMALL_HASHGRID = "hashgrid:levels=4,table_size=2**8,base=4,finest=64"
SMALL_ENCODINGS = {"hashgrid": SMALL_HASHGRID, "fourier": "fourier:features=16"}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second thread costs more to wake than it saves, far more when another
    process holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(recipe: Recipe) -> Recipe:
    """The recipe's components on a (16, 16) network, 64-pixel batches, and a small hash grid."""
    encoding = ENCODINGS.parse(recipe.encoding).name
    activation = recipe.activation if isinstance(recipe.activation, str) else recipe.activation[:2]
    return recipe.replace(arch=(16, 16), batch_size=64, activation=activation,
                          encoding=SMALL_ENCODINGS.get(encoding, recipe.encoding))


def tiny_target(height: int = 6, width: int = 8) -> Target:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([0.2 + 0.6 * x / (width - 1), 0.3 + 0.4 * y / (height - 1), 0.5 + 0.3 * np.sin(x + y)], 2)
    return Target("tiny", pixels.astype(np.float32))


# -- reference forward pass ----------------------------------------------------------------------

# The functions as their papers and PyTorch's documentation write them, from exp, erf and sin.
REFERENCE_ACTIVATIONS = {
    "leaky_relu": lambda z, o, i: torch.where(z >= 0, z, o.slope * z),
    "relu": lambda z, o, i: torch.where(z > 0, z, torch.zeros_like(z)),
    "tanh": lambda z, o, i: (1 - torch.exp(-2 * z)) / (1 + torch.exp(-2 * z)),
    "sigmoid": lambda z, o, i: 1 / (1 + torch.exp(-z)),
    "gelu": lambda z, o, i: 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),  # the exact GELU, not tanh's
    "silu": lambda z, o, i: z / (1 + torch.exp(-z)),
    "sine": lambda z, o, i: torch.sin((o.first_omega if i == 0 else o.omega) * z),  # SIREN: omega_0 first
}
REFERENCE_OUTPUTS = {
    "linear": lambda z: z,
    "sigmoid": lambda z: 1 / (1 + torch.exp(-z)),
    "clamp": lambda z: torch.minimum(torch.maximum(z, torch.zeros_like(z)), torch.ones_like(z)),
}


def reference_forward(model, recipe: Recipe, x: torch.Tensor) -> torch.Tensor:
    """Layer by layer from the model's own weights; the encoding is test_encodings.py's business."""
    h = model.encoding(x)
    layers = linear_layers(model)
    for index, (layer, spec) in enumerate(zip(layers[:-1], recipe.layer_activations())):
        parsed = ACTIVATIONS.parse(spec)
        z = REFERENCE_ACTIVATIONS[parsed.name](h @ layer.weight.T + layer.bias, parsed.options, index)
        h = h + z if recipe.residual and z.shape == h.shape else z
    return REFERENCE_OUTPUTS[OUTPUTS.parse(recipe.output).name](h @ layers[-1].weight.T + layers[-1].bias)


def check_forward_backward(recipe: Recipe, points: int = 16) -> None:
    model = build_model(recipe)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(points, 2, generator=generator)
    target = torch.rand(points, 3, generator=generator)
    out = model(x)
    assert out.shape == (points, 3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference_forward(model, recipe, x), rtol=1e-5, atol=1e-6)
    loss = 0.5 * (out - target).square().sum(dim=1).mean()
    loss.backward()
    parameters = dict(model.named_parameters())
    assert parameters, "a network with nothing to train"
    # The reference's gradients, by autograd through the formulas above, with the same tensors.
    reference_loss = 0.5 * (reference_forward(model, recipe, x) - target).square().sum(dim=1).mean()
    reference_grads = torch.autograd.grad(reference_loss, list(parameters.values()))
    for (name, parameter), reference in zip(parameters.items(), reference_grads):
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 0, f"{name}'s gradient is all zero"
        torch.testing.assert_close(parameter.grad, reference, rtol=1e-4, atol=1e-7, msg=name)


# -- the zoo: every registered component --------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation(name):
    check_forward_backward(Recipe(arch=(16, 16), activation=name, batch_size=64))


@pytest.mark.parametrize("name", ENCODINGS.names())
def test_every_encoding(name):
    recipe = Recipe(arch=(16, 16), encoding=SMALL_ENCODINGS.get(name, name), batch_size=64)
    check_forward_backward(recipe)
    model = build_model(recipe)
    assert linear_layers(model)[0].in_features == model.encoding.out_features
    assert model.encoding(torch.rand(5, 2)).shape == (5, model.encoding.out_features)


@pytest.mark.parametrize("name", INITS.names())
def test_every_init(name):
    check_forward_backward(Recipe(arch=(16, 16), init=name, batch_size=64))


@pytest.mark.parametrize("name", OUTPUTS.names())
def test_every_output(name):
    check_forward_backward(Recipe(arch=(16, 16), output=name, batch_size=64))


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_trains(name):
    recipe = Recipe(arch=(16, 16), schedule=name, batch_size=16, optimizer="adam", lr=1e-2, epochs=2)
    check_forward_backward(recipe)
    result = fit(tiny_target(), recipe, device="cpu")
    assert result.stopped_by == "epochs" and len(result.history) == 2
    assert all(math.isfinite(row["psnr"]) for row in result.history)


# -- optimisers: three steps against the textbook update rules ---------------------------------------

# Which optimisers scale the rate per layer by 1 / sqrt(fan_in + 1) by default (the original's SGD does).
FAN_IN_SCALED = {"sgd": True, "momentum": True, "adam": False, "rprop": False}


class ReferenceOptimizer:
    """Each rule written out from its source, one tensor at a time, starting from zero state."""

    def __init__(self, spec: str):
        self.parsed = OPTIMIZERS.parse(spec)
        if self.parsed.name not in FAN_IN_SCALED:
            raise KeyError(f"no reference update for optimizer {self.parsed.name!r}: add one")
        self.state: dict[str, dict] = {}

    def step(self, name: str, p: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
        """The new value of parameter ``name``."""
        o, state = self.parsed.options, self.state.setdefault(name, {})
        if self.parsed.name == "sgd":
            return p - lr * g
        if self.parsed.name == "momentum":  # PyTorch's form (Sutskever et al. 2013): b = m b + g, starting at g
            b = state["b"] = g.clone() if "b" not in state else o.momentum * state["b"] + g
            return p - lr * (g + o.momentum * b if o.nesterov else b)
        if self.parsed.name == "adam":  # Kingma & Ba, Algorithm 1
            t = state["t"] = state.get("t", 0) + 1
            m = state["m"] = o.beta1 * state.get("m", 0) + (1 - o.beta1) * g
            v = state["v"] = o.beta2 * state.get("v", 0) + (1 - o.beta2) * g * g
            return p - lr * (m / (1 - o.beta1**t)) / ((v / (1 - o.beta2**t)).sqrt() + o.eps)
        # rprop, Riedmiller & Braun: each weight's step grows by eta_plus while its gradient keeps its
        # sign, shrinks by eta_minus when it flips (and that step is skipped); steps start at lr.
        # The bounds [1e-6, 50] are PyTorch's step_sizes default.
        prev, size = state.get("prev", torch.zeros_like(g)), state.get("size", torch.full_like(g, lr))
        sign = torch.sign(g * prev)
        size = torch.where(sign > 0, size * o.eta_plus, torch.where(sign < 0, size * o.eta_minus, size))
        size = size.clamp(1e-6, 50)
        g = torch.where(sign < 0, torch.zeros_like(g), g)
        state["prev"], state["size"] = g, size
        return p - torch.sign(g) * size


@pytest.mark.parametrize("spec", [*OPTIMIZERS.names(), "momentum:nesterov=true,momentum=0.5", "adam:eps=0.01",
                                  "adam:beta1=0.5,beta2=0.9", "rprop:eta_minus=0.3,eta_plus=1.5",
                                  "sgd:fan_in_scaling=false"])
def test_every_optimizer_against_its_update_rule(spec):
    # float64, so the two agree to rounding and Rprop's sign tests see the same signs.
    recipe = Recipe(arch=(16, 16), encoding=SMALL_HASHGRID, optimizer=spec, lr=0.05, encoding_lr=0.5, batch_size=64)
    check_forward_backward(recipe)
    model = build_model(recipe).double()
    optimizer = make_optimizer(model, recipe)
    reference = ReferenceOptimizer(spec)
    parsed = OPTIMIZERS.parse(spec)
    scaled = parsed.options.fan_in_scaling if "fan_in_scaling" in spec else FAN_IN_SCALED[parsed.name]
    rates = {"encoding.table": 0.5}  # encoding_lr, never fan-in scaled
    for index, layer in enumerate(linear_layers(model)):
        rate = 0.05 / math.sqrt(layer.in_features + 1) if scaled else 0.05
        rates |= {f"layers.{index}.weight": rate, f"layers.{index}.bias": rate}
    assert set(rates) == {name for name, _ in model.named_parameters()}
    generator = torch.Generator().manual_seed(2)
    for step in range(3):
        x = torch.rand(32, 2, generator=generator, dtype=torch.float64)
        loss = 0.5 * (model(x) - 0.5).square().sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        expected = {name: reference.step(name, p.detach(), p.grad, rates[name]) for name, p in model.named_parameters()}
        optimizer.step()
        for name, p in model.named_parameters():
            assert torch.isfinite(p).all()
            torch.testing.assert_close(p.detach(), expected[name], rtol=1e-9, atol=1e-12,
                                       msg=lambda m, name=name, step=step: f"{name}, step {step + 1}: {m}")


def test_encoding_lr_is_the_encoding_groups_rate():
    recipe = Recipe(arch=(16, 16), encoding=SMALL_HASHGRID, optimizer="sgd", lr=0.1, encoding_lr=5.0)
    model = build_model(recipe)
    groups = make_optimizer(model, recipe).param_groups
    layers = linear_layers(model)
    assert len(groups) == len(layers) + 1
    assert layers[0].in_features == 4 * 2  # levels x features
    for group, layer in zip(groups, layers):
        assert [id(p) for p in group["params"]] == [id(layer.weight), id(layer.bias)]
        assert group["lr"] == pytest.approx(0.1 / math.sqrt(layer.in_features + 1))  # the original's scaling
    assert [id(p) for p in groups[-1]["params"]] == [id(model.encoding.table)]
    assert groups[-1]["lr"] == 5.0
    # Unset, the encoding takes lr itself: the fan-in scaling is the linear layers' only.
    unset = make_optimizer(build_model(recipe.replace(encoding_lr=None)), recipe.replace(encoding_lr=None))
    assert unset.param_groups[-1]["lr"] == 0.1
    adam = recipe.replace(optimizer="adam", lr=0.01)
    assert [g["lr"] for g in make_optimizer(build_model(adam), adam).param_groups] == [0.01] * 3 + [5.0]
    # An encoding without parameters adds no group, whatever encoding_lr says.
    fourier = recipe.replace(encoding="fourier:features=4")
    assert len(make_optimizer(build_model(fourier), fourier).param_groups) == len(layers)


# -- SIREN ------------------------------------------------------------------------------------------


def uniform_check(weight: torch.Tensor, bound: float) -> None:
    """U(-bound, bound): within the bound, variance bound^2 / 3, mean 0."""
    w = weight.detach().double()
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound  # fills the interval (the max of 65k draws)
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.03)
    assert abs(w.mean().item()) < 5 * bound / math.sqrt(3 * w.numel())


def test_siren_init_follows_the_paper():
    # SIREN, Sec. 3.2: first layer U(-1/n, 1/n); later layers U(-sqrt(6/n)/omega, sqrt(6/n)/omega).
    generator = torch.Generator().manual_seed(0)
    wide = nn.Linear(2048, 256)
    INITS.build("siren", wide, 0, generator)
    uniform_check(wide.weight, 1 / 2048)
    INITS.build("siren", wide, 1, generator)
    uniform_check(wide.weight, math.sqrt(6 / 2048) / 30)
    INITS.build("siren:omega=10", wide, 2, generator)
    uniform_check(wide.weight, math.sqrt(6 / 2048) / 10)
    # The same through a model: an encoding 2048 wide feeds the first layer.
    model = build_model(Recipe(arch=(256, 256), encoding="fourier:features=1024", activation="sine", init="siren"))
    first, hidden, last = linear_layers(model)
    assert first.in_features == 2048
    uniform_check(first.weight, 1 / 2048)
    uniform_check(hidden.weight, math.sqrt(6 / 256) / 30)
    assert last.weight.abs().max().item() <= math.sqrt(6 / 256) / 30


def test_siren_init_keeps_hidden_preactivations_at_unit_std():
    # SIREN's Lemma 1.6: for x the output of a sine layer (arcsine-distributed on [-1, 1], E x^2 = 1/2)
    # and W ~ U(-sqrt(6/n)/omega, ...), omega W x has variance n * omega^2 * (6 / (n omega^2) / 3) / 2 = 1.
    model = build_model(Recipe(arch=(256, 256), activation="sine", init="siren"))
    hidden = linear_layers(model)[1]
    generator = torch.Generator().manual_seed(1)
    x = torch.sin(2 * math.pi * torch.rand(4096, 256, generator=generator, dtype=torch.float64))  # sine outputs
    y = 30 * x @ hidden.weight.detach().double().T  # (4096, 256)
    assert y.std().item() == pytest.approx(1.0, rel=0.05)
    assert y.mean().abs().item() < 0.05


def test_sine_first_layer_uses_first_omega():
    recipe = Recipe(activation="sine:omega=10,first_omega=20", arch=(8, 8))
    model = build_model(recipe)
    assert [m.omega for m in model.activations] == [20.0, 10.0]
    assert [m.omega for m in build_model(Recipe(activation="sine", arch=(8, 8, 8))).activations] == [30.0] * 3
    x = torch.rand(5, 2)
    first, second, last = linear_layers(model)
    h = torch.sin(20 * (x @ first.weight.T + first.bias))
    h = torch.sin(10 * (h @ second.weight.T + second.bias))
    torch.testing.assert_close(model(x), h @ last.weight.T + last.bias)


# -- per-layer activations and skips ------------------------------------------------------------------


def test_per_layer_activations_in_order():
    recipe = Recipe(arch=(8, 8, 8), activation=("tanh", "relu", "sine:first_omega=5"))
    model = build_model(recipe)
    assert [type(m) for m in model.activations[:2]] == [nn.Tanh, nn.ReLU]
    assert type(model.activations[2]).__name__ == "Sine"
    assert model.activations[2].omega == 30.0  # a hidden layer's omega: it is not the network's first layer
    x = torch.rand(6, 2)
    l0, l1, l2, l3 = linear_layers(model)
    h = torch.tanh(x @ l0.weight.T + l0.bias)
    h = torch.relu(h @ l1.weight.T + l1.bias)
    h = torch.sin(30 * (h @ l2.weight.T + l2.bias))
    torch.testing.assert_close(model(x), h @ l3.weight.T + l3.bias)
    check_forward_backward(recipe.replace(activation=("tanh", "gelu", "sine")))


@pytest.mark.parametrize("activation", [("tanh", "relu"), ("tanh",) * 4, ()])
def test_wrong_number_of_activations(activation):
    with pytest.raises(UserError) as info:
        Recipe.from_dict({"arch": [8, 8, 8], "activation": list(activation)})
    assert "\n" not in str(info.value)
    if activation:
        assert str(info.value).startswith(f"{len(activation)} activations given for 3 hidden layers")


def test_equal_activations_collapse_to_one():
    assert Recipe(arch=(8, 8, 8), activation=("tanh", "tanh", "tanh")).activation == "tanh"
    assert Recipe(arch=(8, 8), activation=["sine:omega=30", "sine"]).activation == "sine"  # equal once canonical
    assert Recipe(arch=(8, 8), activation=["relu"]).activation == "relu"
    assert Recipe(arch=(8, 8), activation=("tanh", "tanh")) == Recipe(arch=(8, 8), activation="tanh")
    assert Recipe(arch=(8, 8), activation=("tanh", "relu")).activation == ("tanh", "relu")


def test_residual_adds_the_input_of_equal_width_layers():
    recipe = Recipe(arch=(8, 8, 4), activation="tanh", residual=True)
    model = build_model(recipe)
    x = torch.rand(7, 2, generator=torch.Generator().manual_seed(3))
    l0, l1, l2, l3 = linear_layers(model)
    h1 = torch.tanh(x @ l0.weight.T + l0.bias)  # 2 -> 8: widths differ, no skip
    h2 = h1 + torch.tanh(h1 @ l1.weight.T + l1.bias)  # 8 -> 8: skip
    h3 = torch.tanh(h2 @ l2.weight.T + l2.bias)  # 8 -> 4: no skip
    torch.testing.assert_close(model(x), h3 @ l3.weight.T + l3.bias)
    # Same seed, same weights: without skips it is the plain network, and the skip made a difference.
    plain = build_model(recipe.replace(residual=False))
    p0, p1, p2, p3 = linear_layers(plain)
    assert torch.equal(p1.weight, l1.weight)
    h = torch.tanh(torch.tanh(torch.tanh(x @ p0.weight.T + p0.bias) @ p1.weight.T + p1.bias) @ p2.weight.T + p2.bias)
    torch.testing.assert_close(plain(x), h @ p3.weight.T + p3.bias)
    assert not torch.allclose(plain(x), model(x))
    check_forward_backward(recipe)


# -- schedules ------------------------------------------------------------------------------------

# The factor on the base rate at progress p in [0, 1] of the run, as each schedule's source writes it.
REFERENCE_SCHEDULES = {
    "constant": lambda o, p: 1.0,
    "step": lambda o, p: o.gamma ** math.floor(p / o.every),
    "exponential": lambda o, p: o.final**p,
    "cosine": lambda o, p: (p / o.warmup if p < o.warmup else
                            o.final + (1 - o.final) * 0.5 * (1 + math.cos(math.pi * (p - o.warmup) / (1 - o.warmup)))),
}


@pytest.mark.parametrize(
    "spec, factors",
    [
        ("constant", (1, 1, 1)),
        ("step", (1, 0.3**2, 0.3**4)),  # drops by 0.3 every quarter
        ("step:every=0.5,gamma=0.1", (1, 0.1, 0.01)),
        ("step:every=0.1,gamma=0.5", (1, 0.5**5, 0.5**10)),
        ("exponential", (1, 0.1, 0.01)),  # 0.01^p
        ("exponential:final=0.25", (1, 0.5, 0.25)),
        ("cosine", (1, 0.5, 0)),
        ("cosine:final=0.2", (1, 0.6, 0.2)),
        ("cosine:final=0.1,warmup=0.2", (0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.375)), 0.1)),
    ],
)
def test_schedule_factors(spec, factors):
    factor = SCHEDULES.build(spec)
    assert [factor(p) for p in (0.0, 0.5, 1.0)] == pytest.approx(factors, abs=1e-12)


def test_step_drops_at_its_boundaries_despite_rounding():
    # Epoch 4 of 10 starts at progress 3/10, which 0.3 / 0.1 puts at 2.9999999999999996 in floating point:
    # the third drop must still happen there, not an epoch late.
    factor = SCHEDULES.build("step:every=0.1,gamma=0.5")
    assert [factor(epoch / 10) for epoch in range(11)] == pytest.approx([0.5**k for k in range(11)])
    assert factor(0.3 - 1e-6) == pytest.approx(0.25)


def test_warmup_ramps_linearly():
    factor = SCHEDULES.build("cosine:warmup=0.2")
    assert [factor(p) for p in (0.05, 0.1, 0.15, 0.2)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_against_its_formula(name):
    options = SCHEDULES.parse(name).options
    factor = SCHEDULES.build(name)
    for p in [k / 40 for k in range(41)]:
        assert factor(p) == pytest.approx(REFERENCE_SCHEDULES[name](options, p), abs=1e-12)
    assert factor(0.0) == 1.0 or (name == "cosine" and options.warmup > 0)


def test_batched_engine_applies_the_schedule_over_the_whole_run():
    # 48 pixels in batches of 2: 24 steps an epoch, 48 in the run; SGD, so each layer has its own base rate.
    recipe = Recipe(arch=(8,), encoding=SMALL_HASHGRID, optimizer="sgd", lr=0.1, encoding_lr=1.0, batch_size=2,
                    epochs=2, schedule="exponential:final=0.1")
    trainer = Trainer(tiny_target(), recipe, device="cpu")
    assert trainer.engine_name == "batched"
    optimizer = trainer.engine.optimizer
    layers = linear_layers(trainer.model)
    base = [0.1 / math.sqrt(layer.in_features + 1) for layer in layers] + [1.0]
    seen = []
    step = optimizer.step

    def recording_step(*args, **kwargs):
        seen.append([group["lr"] for group in optimizer.param_groups])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    trainer.fit(epochs=1)
    halfway = [group["lr"] for group in optimizer.param_groups]
    # progress 1/2: 0.1^(1/2) (the last step of the epoch may have used 0.1^(23/48), 5% more)
    assert halfway == pytest.approx([b * 0.1**0.5 for b in base], rel=0.06)
    trainer.fit()
    final = [group["lr"] for group in optimizer.param_groups]
    assert final == pytest.approx([b * 0.1 for b in base], rel=0.06)  # the end of the run: 0.1
    assert len(seen) == 48
    for k, rates in enumerate(seen):  # step k covers progress k/48 .. (k+1)/48
        for rate, b in zip(rates, base):
            assert b * 0.1 ** ((k + 1) / 48) * (1 - 1e-9) <= rate <= b * 0.1 ** (k / 48) * (1 + 1e-9)


# -- stopping rules ---------------------------------------------------------------------------------


def test_until_psnr_stops_at_the_first_epoch_that_reaches_it():
    recipe = Recipe(arch=(8,), batch_size=64, optimizer="adam", lr=1e-2, epochs=500, until_psnr=15.0)
    result = fit(tiny_target(), recipe, device="cpu")
    assert result.stopped_by == "until_psnr"
    assert 1 < len(result.history) < 500
    assert result.history[-1]["psnr"] >= 15.0
    assert all(row["psnr"] < 15.0 for row in result.history[:-1])


def test_time_limit_stops_after_the_epoch_that_passes_it():
    # Any epoch takes longer than a microsecond; the rule is checked between epochs.
    result = fit(tiny_target(), Recipe(arch=(8,), batch_size=64, epochs=50, time_limit=1e-6), device="cpu")
    assert (result.stopped_by, len(result.history)) == ("time_limit", 1)
    generous = fit(tiny_target(), Recipe(arch=(8,), batch_size=64, epochs=3, time_limit=1e6), device="cpu")
    assert (generous.stopped_by, len(generous.history)) == ("epochs", 3)


@pytest.mark.parametrize("rule, value", [("until_psnr", 15.0), ("time_limit", 1e-6)])
def test_run_json_records_how_the_run_stopped(tmp_path, rule, value):
    recipe = Recipe(arch=(8,), batch_size=64, optimizer="adam", lr=1e-2, epochs=500).replace(**{rule: value})
    out = tmp_path / "run"
    result = train_run(tiny_target(), recipe, out, device="cpu", quiet=True, frames="log")
    info = json.loads((out / "run.json").read_text())
    assert (info["stopped_by"], info["status"], info["epochs_done"]) == (rule, "complete", len(result.history))
    last = len(result.history)
    assert (out / "final.png").read_bytes() == (out / "frames" / f"epoch-{last:05d}.png").read_bytes()
    assert len((out / "metrics.csv").read_text().splitlines()) == last + 1


# -- presets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_forward_backward(name):
    recipe = small(PRESETS[name])
    for field in ("output", "init", "optimizer", "schedule", "residual", "lr"):
        assert getattr(recipe, field) == getattr(PRESETS[name], field)  # its components kept
    check_forward_backward(recipe)
    result = fit(tiny_target(), recipe.replace(epochs=1), device="cpu")
    assert math.isfinite(result.final["psnr"])


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_round_trips(name, tmp_path):
    recipe = PRESETS[name]
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    assert Recipe.from_dict(tomllib.loads(recipe.to_toml())) == recipe
    path = tmp_path / f"{name}.toml"
    path.write_text(recipe.to_toml())
    assert load_recipe(path) == recipe
    path = tmp_path / f"{name}.json"
    path.write_text(recipe.to_json())
    assert load_recipe(path) == recipe


def test_presets_match_their_sources():
    # Only the figures each preset's comment takes from its source; widths, rates and batches are tuned here.
    siren = PRESETS["siren"]  # Sitzmann et al. 2020: sine units with omega_0 = 30 first and hidden, their init
    sine = ACTIVATIONS.parse(siren.activation)
    assert (sine.name, sine.options.omega, sine.options.first_omega) == ("sine", 30.0, 30.0)
    assert INITS.parse(siren.init) == INITS.parse("siren:omega=30")  # the init's omega matches the units'
    assert OPTIMIZERS.parse(siren.optimizer).name == "adam"
    fourier = PRESETS["fourier"]  # Tancik et al. 2020: 256 Gaussian features, sigma 10, ReLU layers of 256, Adam
    assert ENCODINGS.parse(fourier.encoding) == ENCODINGS.parse("fourier:features=256,sigma=10")
    assert (fourier.activation, set(fourier.arch), OPTIMIZERS.parse(fourier.optimizer).name) == ("relu", {256}, "adam")
    hashgrid = PRESETS["hashgrid"]  # Mueller et al. 2022, Table 1, and instant-ngp's Adam settings
    grid = ENCODINGS.parse(hashgrid.encoding)
    assert grid.name == "hashgrid"
    assert (grid.options.levels, grid.options.features, grid.options.table_size, grid.options.base,
            grid.options.finest) == (16, 2, 2**14, 16, 512)
    adam = OPTIMIZERS.parse(hashgrid.optimizer)
    assert (adam.name, adam.options.beta2, adam.options.eps, hashgrid.learning_rate) == ("adam", 0.99, 1e-15, 1e-2)
    assert (hashgrid.arch, hashgrid.activation) == ((64, 64), "relu")
    fast = PRESETS["fast"]  # a hash grid that stays under the original network's parameter budget
    assert ENCODINGS.parse(fast.encoding).name == "hashgrid"
    assert fast.parameter_count() < PRESETS["original"].parameter_count()
    rprop = PRESETS["rprop-sigmoid"]  # docs/original.md's failing set-up: RPROP, 3x300 ReLU, sigmoid outputs
    assert (rprop.optimizer, rprop.arch, rprop.activation, rprop.output) == ("rprop", (300,) * 3, "relu", "sigmoid")
    assert rprop.batch_size >= 300 * 429  # full batch: the whole image in one step


# -- render -----------------------------------------------------------------------------------------

WIDTH, HEIGHT = 12, 10


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-epoch 2x8 run on a 12x10 PNG (the render tests add render-*.png files to it).

    The network must vary steeply across the image, or a misplaced grid would hide under the
    one-level tolerance: a plain 2x8 rectifier net after 2 epochs is nearly flat (about 2 levels
    between neighbouring pixels). Fourier features with sigma 2, large initial weights and a
    few Adam steps keep a steep function; sigmoid outputs keep it unclipped. The steps still move it
    well away from its initialisation, so a render of the untrained network would show."""
    root = tmp_path_factory.mktemp("render")
    pixels = (np.random.default_rng(4).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / "tiny.png")
    out = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "tiny.png"), "--arch", "2x8", "--epochs", "2", "--out", str(out), "--quiet",
                     "--activation", "tanh", "--encoding", "fourier:features=16,sigma=2", "--init", "original:scale=3",
                     "--output", "sigmoid", "--optimizer", "adam", "--lr", "0.02", "--batch-size", "32"]) == 0
    return out


def network_of(run: Path, trained: bool = True):
    recipe = Recipe.from_dict(json.loads((run / "recipe.json").read_text()))
    model = build_model(recipe)
    if trained:
        model.load_state_dict(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"])
    return model.eval()


def expected_image(run: Path, rows: np.ndarray, cols: np.ndarray, trained: bool = True) -> np.ndarray:
    """The network on the grid rows x cols, as a frame: x 255, clamped, truncated (docs/original.md)."""
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    with torch.no_grad():
        out = network_of(run, trained)(torch.from_numpy(grid)).numpy().astype(np.float64)
    return np.clip(out * 255, 0, 255).astype(np.uint8).reshape(len(rows), len(cols), 3)


def render(argv: list[str], capsys) -> Path:
    assert main(["render", *argv]) == 0
    printed = capsys.readouterr().out.strip()
    path = Path(printed)
    assert path.is_file(), printed
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_within_one_level(image: np.ndarray, expected: np.ndarray) -> None:
    assert image.shape == expected.shape
    # The premise: neighbouring pixels differ by several levels, so a shifted grid would show.
    steps = [np.abs(np.diff(expected.astype(int), axis=axis)).mean() for axis in (0, 1)]
    assert min(steps) > 3 * 12 / max(expected.shape[:2]), steps
    # One level of slack: float rounding of a coordinate can move a value across a truncation boundary.
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1


def test_render_at_scale_3(trained_run, capsys):
    path = render([str(trained_run), "--scale", "3"], capsys)
    assert path == trained_run / f"render-{3 * WIDTH}x{3 * HEIGHT}.png"
    image = read_png(path)
    assert image.shape == (3 * HEIGHT, 3 * WIDTH, 3)
    # The same [0, 1]^2 as the training image, sampled 3x as finely: first and last rows at 0 and 1.
    rows, cols = np.arange(3 * HEIGHT) / (3 * HEIGHT - 1), np.arange(3 * WIDTH) / (3 * WIDTH - 1)
    assert_within_one_level(image, expected_image(trained_run, rows, cols))
    # The trained weights, not the recipe's initial ones: those would give a different picture.
    untrained = expected_image(trained_run, rows, cols, trained=False)
    assert np.abs(image.astype(int) - untrained.astype(int)).mean() > 5


def test_render_at_a_size(trained_run, capsys, tmp_path):
    path = render([str(trained_run), "--size", "7x5"], capsys)
    assert path == trained_run / "render-7x5.png"
    assert read_png(path).shape == (5, 7, 3)
    assert_within_one_level(read_png(path), expected_image(trained_run, np.arange(5) / 4, np.arange(7) / 6))
    elsewhere = render([str(trained_run), "--size", "7x5", "--out", str(tmp_path / "mine.png")], capsys)
    assert elsewhere == tmp_path / "mine.png"
    assert np.array_equal(read_png(elsewhere), read_png(path))


def test_render_at_scale_1_is_the_final_frame(trained_run, capsys):
    path = render([str(trained_run), "--scale", "1"], capsys)
    assert_within_one_level(read_png(path), read_png(trained_run / "final.png"))


def test_render_zoomed_into_the_centre(trained_run, capsys):
    path = render([str(trained_run), "--zoom", "4", "--center", "0.5,0.5"], capsys)
    assert path == trained_run / f"render-{4 * WIDTH}x{4 * HEIGHT}-zoom4-at0.5,0.5.png"  # --scale 4 by default
    # 1/4 of each side around the centre: [0.375, 0.625]^2.
    rows = 0.375 + 0.25 * np.arange(4 * HEIGHT) / (4 * HEIGHT - 1)
    cols = 0.375 + 0.25 * np.arange(4 * WIDTH) / (4 * WIDTH - 1)
    image = read_png(path)
    assert_within_one_level(image, expected_image(trained_run, rows, cols))
    assert not np.array_equal(image, read_png(render([str(trained_run), "--scale", "4"], capsys)))


def test_renders_at_two_centres_keep_both(trained_run, capsys):
    first = render([str(trained_run), "--zoom", "4", "--center", "0.3,0.5", "--size", "9x7"], capsys)
    second = render([str(trained_run), "--zoom", "4", "--center", "0.7,0.5", "--size", "9x7"], capsys)
    assert first == trained_run / "render-9x7-zoom4-at0.3,0.5.png"
    assert second == trained_run / "render-9x7-zoom4-at0.7,0.5.png"
    assert first.is_file() and not np.array_equal(read_png(first), read_png(second))


def test_render_zoom_near_an_edge_stays_inside_the_image(trained_run, capsys, tmp_path):
    # Centre (0, 1) with zoom 2: the half-size window is shifted to rows [0, 0.5], columns [0.5, 1].
    path = render([str(trained_run), "--zoom", "2", "--center", "0,1", "--size", "9x7", "--out",
                   str(tmp_path / "corner.png")], capsys)
    expected = expected_image(trained_run, 0.5 * np.arange(7) / 6, 0.5 + 0.5 * np.arange(9) / 8)
    assert_within_one_level(read_png(path), expected)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RENDER_MISTAKES = {
    # name: (arguments after `render RUN`, a word the message must contain)
    "size and scale": (["--size", "7x5", "--scale", "2"], "not both"),
    "zoom below 1": (["--zoom", "0.5"], "--zoom"),
    "zoom 0": (["--zoom", "0"], "--zoom"),
    "centre outside": (["--zoom", "2", "--center", "2,0"], "--center"),
    "centre one number": (["--zoom", "2", "--center", "0.5"], "--center"),
    # The centre is checked even without --zoom: a value that cannot be right must not pass silently.
    "centre outside, no zoom": (["--center", "2,0"], "--center"),
    "scale 0": (["--scale", "0"], "--scale"),
    "malformed size": (["--size", "7by5"], "--size"),
    "not a png": (["--out", "x.jpg"], ".png"),
}


@pytest.mark.parametrize("name", RENDER_MISTAKES)
def test_render_mistake_is_one_line(trained_run, capsys, name, tmp_path):
    argv, word = RENDER_MISTAKES[name]
    before = snapshot(trained_run)
    assert main(["render", str(trained_run), *[a.replace("x.jpg", str(tmp_path / "x.jpg")) for a in argv]]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monalisa: error: ") and "Traceback" not in captured.err
    assert word in lines[0]
    assert captured.out == ""
    assert snapshot(trained_run) == before
    assert list(tmp_path.iterdir()) == []


def test_render_of_something_that_is_not_a_run(trained_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine\n")
    for path in (tmp_path, tmp_path / "gone", tmp_path / "notes.txt"):
        assert main(["render", str(path)]) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and "is not a monalisa run directory" in line
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # A run directory that has not finished an epoch has no network to render.
    fresh = tmp_path / "fresh"
    shutil.copytree(trained_run, fresh)
    (fresh / "checkpoint.pt").unlink()
    before = snapshot(fresh)
    assert main(["render", str(fresh), "--size", "4x4"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "has no checkpoint yet" in line
    assert snapshot(fresh) == before


def test_render_size_is_bounded_as_scale_is(trained_run):
    # --scale refuses more than 50 megapixels; --size asks for the same memory and must too.
    run = RunDirectory.open(trained_run)
    with pytest.raises(UserError, match="megapixels"):
        output_size(run, None, 1000.0)
    with pytest.raises(UserError, match="megapixels"):
        output_size(run, (10_000, 10_000), None)


# -- which engine ---------------------------------------------------------------------------------

# One change each that takes a batch-size-1 recipe outside what the compiled online kernel implements.
OUTSIDE_THE_KERNEL = {
    "encoding": {"encoding": "fourier:features=4"},
    "positional": {"encoding": "positional:octaves=2"},
    "residual": {"residual": True},
    "sine": {"activation": "sine"},
    "gelu": {"activation": "gelu"},
    "silu": {"activation": "silu"},
    "per-layer activations": {"activation": ("tanh", "relu")},
    "adam": {"optimizer": "adam"},
    "momentum": {"optimizer": "momentum"},
    "rprop": {"optimizer": "rprop"},
    "schedule": {"schedule": "cosine"},
    "step schedule": {"schedule": "step"},
    "clamp output": {"output": "clamp"},
    "batches": {"batch_size": 2},
}


@pytest.mark.parametrize("changes", [{}, {"activation": "tanh", "output": "sigmoid"}, {"activation": "relu"},
                                     {"activation": "leaky_relu:slope=0.2", "init": "torch"},
                                     {"optimizer": "sgd:fan_in_scaling=false", "lr": 0.01}],
                         ids=lambda changes: json.dumps(changes))
def test_auto_picks_online_for_the_original_family_on_the_cpu(changes):
    recipe = Recipe(arch=(8, 8), **changes)
    assert choose_engine("auto", recipe, CPU) == "online"
    assert choose_engine("online", recipe, CPU) == "online"
    assert choose_engine("batched", recipe, CPU) == "batched"
    assert choose_engine("auto", recipe, torch.device("cuda")) == "batched"  # the kernel is CPU-only
    with pytest.raises(UserError, match="--engine online runs on the CPU only"):
        choose_engine("online", recipe, torch.device("cuda"))


@pytest.mark.parametrize("name", OUTSIDE_THE_KERNEL)
def test_recipes_outside_the_kernel_go_to_the_batched_engine(name):
    recipe = Recipe(arch=(8, 8), **OUTSIDE_THE_KERNEL[name])
    assert choose_engine("auto", recipe, CPU) == "batched"
    with pytest.raises(UserError) as info:
        choose_engine("online", recipe, CPU)
    assert str(info.value).startswith("--engine online cannot run this recipe: ")
    assert str(info.value).endswith("; use --engine batched") and "\n" not in str(info.value)


def test_engine_choice_reaches_the_trainer():
    target = tiny_target(3, 4)
    assert Trainer(target, Recipe(arch=(4,)), device="cpu").engine_name == "online"
    assert Trainer(target, Recipe(arch=(4,), residual=True), device="cpu").engine_name == "batched"
    with pytest.raises(UserError, match="--engine online cannot run this recipe"):
        Trainer(target, Recipe(arch=(4,), activation="sine"), device="cpu", engine="online")
    with pytest.raises(UserError, match="unknown engine 'fast'; choose one of: auto, online, batched"):
        Trainer(target, Recipe(arch=(4,)), device="cpu", engine="fast")


def test_cli_engine_online_with_an_outside_recipe(tmp_path, capsys):
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "t.png")
    for flags in (["--residual"], ["--activation", "sine"], ["--schedule", "cosine"], ["--output", "clamp"]):
        argv = ["train", str(tmp_path / "t.png"), "--arch", "2x8", "--engine", "online", *flags,
                "--out", str(tmp_path / "run"), "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("monalisa: error: --engine online cannot run this recipe")
        assert not (tmp_path / "run").exists()
