"""components.py and models/network.py: every registered component, against reference answers written out here.

- each activation, encoding, init, optimiser, schedule, output and preset builds a small network
  whose forward pass equals a plain formula-by-formula forward, and whose every parameter gets a
  finite, non-zero gradient;
- the optimisers' first three steps against their update rules written out (SGD, PyTorch's
  momentum, Kingma & Ba's Adam, Riedmiller & Braun's Rprop), at the per-layer and encoding rates;
- SIREN's initialisation against its paper's distributions, sine's omegas, per-layer activations,
  skip connections against a hand-written forward;
- the schedules against their formulas.
"""

import math

import pytest
import torch
from helpers import SMALL_HASHGRID, tiny_target
from torch import nn

from monalisa import fit
from monalisa.engines.batched import make_optimizer
from monalisa.models.network import build_model, linear_layers
from monalisa.recipes.recipe import PRESETS, Recipe
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES

SMALL_ENCODINGS = {"hashgrid": SMALL_HASHGRID, "fourier": "fourier:features=16"}

pytestmark = pytest.mark.usefixtures("one_thread")


def small(recipe: Recipe) -> Recipe:
    """The recipe's components on a (16, 16) network, 64-pixel batches, and a small hash grid."""
    encoding = ENCODINGS.parse(recipe.encoding).name
    activation = recipe.activation if isinstance(recipe.activation, str) else recipe.activation[:2]
    return recipe.replace(arch=(16, 16), batch_size=64, activation=activation,
                          encoding=SMALL_ENCODINGS.get(encoding, recipe.encoding))


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


# -- presets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_forward_backward(name):
    recipe = small(PRESETS[name])
    for field in ("output", "init", "optimizer", "schedule", "residual", "lr"):
        assert getattr(recipe, field) == getattr(PRESETS[name], field)  # its components kept
    check_forward_backward(recipe)
    result = fit(tiny_target(), recipe.replace(epochs=1), device="cpu")
    assert math.isfinite(result.final["psnr"])
