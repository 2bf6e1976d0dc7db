"""The online engine against the reference answer: a plain PyTorch autograd loop.

Same recipe, same initial weights, same pixel order; after a few hundred
single-pixel steps the weights must agree. float64 runs the kernel with the
same arithmetic as the reference up to summation order, so the tolerance is
tight; float32 (what training uses) is checked too, looser.
"""

import functools

import numpy as np
import pytest
import torch

from monalisa.data.images import coordinate_grid
from monalisa.engines import online_kernel as kernel
from monalisa.engines.batched import make_optimizer
from monalisa.engines.online import OnlineEngine
from monalisa.models.network import build_model, linear_layers
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS

TWO_CORES = functools.partial(kernel.train_pixels_on, 2)  # the kernel's body on two cores, as the engine calls it


def reference_steps(model, recipe, coords, colours, order):
    """The textbook loop: zero_grad, forward, backward, step, one pixel at a time."""
    optimizer = make_optimizer(model, recipe)
    for p in order:
        optimizer.zero_grad()
        out = model(torch.from_numpy(coords[p:p + 1]))
        loss = 0.5 * (out - torch.from_numpy(colours[p:p + 1])).square().sum()
        loss.backward()
        optimizer.step()


def kernel_steps(model, recipe, coords, colours, order, dtype, train=kernel.train_pixels, expect=kernel.OK):
    """Run a kernel directly in ``dtype``; the flat parameters (and the stopping pixel if it diverged)."""
    widths, w_off, b_off, a_off, size = kernel.layout(recipe_widths(recipe))
    params = np.empty(size, dtype=dtype)
    for layer, linear in enumerate(linear_layers(model)):
        n_out, n_in = linear.weight.shape
        params[w_off[layer]:w_off[layer] + n_out * n_in] = linear.weight.detach().double().numpy().ravel()
        params[b_off[layer]:b_off[layer] + n_out] = linear.bias.detach().double().numpy()
    codes = {"leaky_relu": kernel.LEAKY_RELU, "relu": kernel.RELU, "tanh": kernel.TANH, "sigmoid": kernel.SIGMOID,
             "linear": kernel.IDENTITY}
    activation = ACTIVATIONS.parse(recipe.activation)
    status, done = train(
        params, widths, w_off, b_off, a_off,
        np.array(recipe.layer_learning_rates(list(recipe_widths(recipe)[:-1])), dtype=dtype),
        coords.astype(dtype), colours.astype(dtype), order, codes[activation.name], codes[recipe.output],
        dtype(getattr(activation.options, "slope", 0.0)), dtype(1000.0))
    assert status == expect
    if expect == kernel.DIVERGED:
        return params, done
    assert done == len(order)
    return params


def recipe_widths(recipe):
    return (2, *recipe.arch, 3)


def flat(model):
    return np.concatenate([np.concatenate([l.weight.detach().double().numpy().ravel(), l.bias.detach().double().numpy()])
                           for l in linear_layers(model)])


def problem(recipe, n_pixels=400, seed=1):
    rng = np.random.default_rng(seed)
    coords = coordinate_grid(20, 20)
    # A smooth colour field with an edge, so gradients are varied and non-trivial.
    colours = np.stack([coords[:, 0], coords[:, 1], (coords.sum(1) > 1).astype(np.float64)], 1).astype(np.float32)
    order = rng.integers(0, len(coords), size=n_pixels)
    return coords, colours, order


@pytest.mark.parametrize("recipe", [
    Recipe(arch=(37, 29, 41)),  # the original's activation, odd widths exercise the 4-row blocking tails
    Recipe(arch=(16, 16), activation="tanh", output="sigmoid"),
    Recipe(arch=(24, 12), activation="relu"),
    Recipe(arch=(20,), activation="sigmoid", lr=0.5),
], ids=["leaky", "tanh-sigmoid-out", "relu", "sigmoid"])
def test_kernel_matches_autograd_float64(recipe):
    coords, colours, order = problem(recipe)
    model = build_model(recipe).double()
    start = [p.detach().clone() for p in model.parameters()]
    params = kernel_steps(model, recipe, coords, colours, order, np.float64)
    reference_steps(model, recipe, coords.astype(np.float64), colours.astype(np.float64), order)
    expected = flat(model)
    moved = np.abs(expected - np.concatenate([p.numpy().ravel() for p in start])).max()
    assert moved > 1e-3, "the reference did not train: the comparison would prove nothing"
    np.testing.assert_allclose(params, expected, rtol=0, atol=1e-10)


def test_online_engine_matches_autograd_float32_original_recipe():
    """The engine as training uses it: float32, the 4x300 original, 300 steps."""
    recipe = Recipe()
    coords, colours, order = problem(recipe, n_pixels=300)
    model = build_model(recipe)
    reference = build_model(recipe)  # same seed -> same initial weights
    assert torch.equal(flat_t(model), flat_t(reference))
    engine = OnlineEngine(model, recipe, coords, colours)
    engine.train_epoch(order, epoch=1)
    engine.sync()
    reference_steps(reference, recipe, coords, colours, order)
    np.testing.assert_allclose(flat(model), flat(reference), rtol=0, atol=2e-5)
    assert np.abs(flat(model) - flat(build_model(recipe))).max() > 1e-3


def flat_t(model):
    return torch.cat([p.detach().ravel() for p in model.parameters()])


def test_divergence_is_caught_not_propagated():
    recipe = Recipe(arch=(8, 8), init="original:scale=30", lr=50.0)
    coords, colours, order = problem(recipe, n_pixels=2000)
    from monalisa.errors import Diverged
    engine = OnlineEngine(build_model(recipe), recipe, coords, colours)
    with pytest.raises(Diverged, match="epoch 3") as caught:
        engine.train_epoch(order, epoch=3)
    assert "--init original:scale=" in str(caught.value)  # the original's advice: shrink the initial weights


@pytest.mark.parametrize("recipe", [
    Recipe(arch=(37, 29), batch_size=16),
    Recipe(arch=(16, 16), activation="tanh", output="sigmoid", batch_size=7),
    Recipe(arch=(24, 12), activation="relu", batch_size=32),
    Recipe(arch=(24, 12), optimizer="momentum", batch_size=32),
    Recipe(arch=(24, 12), optimizer="adam", batch_size=32),
], ids=["leaky", "tanh-sigmoid-out", "relu", "momentum", "adam"])
def test_batched_engine_matches_plain_minibatch_loop(recipe):
    """The batched engine (one gather an epoch, per-layer rates) against the textbook loop."""
    from monalisa.engines.batched import BatchedEngine

    coords, colours, _ = problem(recipe)
    order = np.random.default_rng(3).permutation(len(coords))
    model = build_model(recipe).double()
    reference = build_model(recipe).double()
    engine = BatchedEngine(model, recipe, coords.astype(np.float64), colours.astype(np.float64),
                           torch.device("cpu"))
    engine.train_epoch(order, epoch=1)
    optimizer = make_optimizer(reference, recipe)
    x_all, t_all = torch.from_numpy(coords.astype(np.float64)), torch.from_numpy(colours.astype(np.float64))
    for start in range(0, len(order), recipe.batch_size):
        index = torch.from_numpy(order[start:start + recipe.batch_size])
        optimizer.zero_grad()
        loss = 0.5 * (reference(x_all[index]) - t_all[index]).square().sum(dim=1).mean()
        loss.backward()
        optimizer.step()
    assert np.abs(flat(reference) - flat(build_model(recipe).double())).max() > 1e-3
    np.testing.assert_allclose(flat(model), flat(reference), rtol=0, atol=1e-9)


TWO_CORE_RECIPES = {
    # Depths 1 to 6 place the output layer after a row-split and after a column-split
    # layer; odd and unequal widths exercise uneven halves and the 4-row blocking tails.
    "4x300": Recipe(arch=(300, 300, 300, 300)),
    "1x300-tanh-sigmoid-out": Recipe(arch=(300,), activation="tanh", output="sigmoid"),
    "2x300-relu": Recipe(arch=(300, 300), activation="relu"),
    "3x300-sigmoid": Recipe(arch=(300, 300, 300), activation="sigmoid", output="sigmoid"),
    "6x300": Recipe(arch=(300,) * 6),
    "tapered-tanh": Recipe(arch=(300, 200, 100), activation="tanh"),
    "odd-widths-relu": Recipe(arch=(70, 90, 65, 100), activation="relu"),
    "narrow-leaky": Recipe(arch=(37, 29, 41)),
    "narrow-tanh-sigmoid-out": Recipe(arch=(16, 16), activation="tanh", output="sigmoid"),
    "narrow-relu": Recipe(arch=(24, 12), activation="relu"),
    # Blocks of 1-2 units (_own splits below 8 in plain halves) and rows shorter than one vector.
    "tiny-widths": Recipe(arch=(3, 5, 2, 9)),
}
two_cores = pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="the two-core kernel needs two cores")


@two_cores
@pytest.mark.parametrize("recipe", TWO_CORE_RECIPES.values(), ids=TWO_CORE_RECIPES.keys())
def test_two_core_kernel_matches_autograd_float64(recipe):
    """The split two-core kernel computes the same weights as the autograd loop, the same way every run."""

    coords, colours, order = problem(recipe, n_pixels=300)
    model = build_model(recipe).double()
    start = flat(model)
    params = kernel_steps(model, recipe, coords, colours, order, np.float64,
                          train=TWO_CORES)
    again = kernel_steps(model, recipe, coords, colours, order, np.float64,
                         train=TWO_CORES)
    reference_steps(model, recipe, coords.astype(np.float64), colours.astype(np.float64), order)
    assert np.abs(flat(model) - start).max() > 1e-3, "the reference did not train: the comparison would prove nothing"
    np.testing.assert_allclose(params, flat(model), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(params, again)  # sums split the same way round the same way


@two_cores
def test_two_core_kernel_stops_on_divergence_at_the_same_pixel():

    recipe = Recipe(arch=(8, 8), init="original:scale=30", lr=50.0)
    coords, colours, order = problem(recipe, n_pixels=2000)
    model = build_model(recipe).double()
    one = kernel_steps(model, recipe, coords, colours, order, np.float64, expect=kernel.DIVERGED)
    two = kernel_steps(model, recipe, coords, colours, order, np.float64, expect=kernel.DIVERGED,
                       train=TWO_CORES)
    assert one[1] == two[1]  # the same pixel index


@two_cores
@pytest.mark.parametrize("unit", [1, 6], ids=["core-0-block", "core-1-block"])
@pytest.mark.parametrize("stop", [5, 49], ids=["mid-chunk", "last-pixel"])
def test_two_core_kernel_shares_a_divergence_only_one_core_sees(unit, stop):
    """A bad delta in one core's block of the first hidden layer stops both cores at that pixel.

    (8, 8): layer 0 is row-split, so the first hidden layer's delta is computed by
    halves, each core checking its own. A steep weight column into ``unit``
    (kept active by its bias) amplifies one pixel's large error into a delta
    above 1000 there and nowhere else: the output and second-layer deltas stay
    below it, so only the core owning ``unit`` sees it.
    """

    recipe = Recipe(arch=(8, 8), lr=1e-9)  # so slow that the weights barely move before the bad pixel
    coords = coordinate_grid(20, 20)
    order = np.random.default_rng(2).permutation(len(coords))[:50]
    colours = np.full((len(coords), 3), 0.5, dtype=np.float32)
    colours[order[stop]] = 500.0
    model = build_model(recipe).double()
    first, second, output = linear_layers(model)
    with torch.no_grad():
        first.bias[unit] = 10.0
        second.weight.fill_(0.01)
        second.weight[:, unit] = 30.0
        second.bias.fill_(10.0)
        output.weight.fill_(0.01)
    one = kernel_steps(model, recipe, coords, colours, order, np.float64, expect=kernel.DIVERGED)
    two = kernel_steps(model, recipe, coords, colours, order, np.float64, expect=kernel.DIVERGED,
                       train=TWO_CORES)
    assert one[1] == two[1] == stop


# -- one core and two cores round alike ------------------------------------------

DEPTH_SHAPES = {  # the depth study's equal-budget shapes (experiments/studies/), at a small pixel count
    "1x45450": (45450,), "2x519": (519, 519), "3x367": (367,) * 3, "4x300": (300,) * 4,
    "6x232": (232,) * 6, "8x196": (196,) * 8,
}
WIDE_RECIPES = {  # the one-hidden-layer sweeps (2 -> wide -> 3) against autograd
    "1x300": Recipe(arch=(300,)),
    "1x5000": Recipe(arch=(5000,)),
    "1x5001-tanh": Recipe(arch=(5001,), activation="tanh", output="sigmoid"),
}


@two_cores
@pytest.mark.parametrize("recipe", [*TWO_CORE_RECIPES.values(), *(Recipe(arch=a) for a in DEPTH_SHAPES.values())],
                         ids=[*TWO_CORE_RECIPES.keys(), *DEPTH_SHAPES.keys()])
def test_one_and_two_core_kernels_give_identical_weights(recipe):
    """The same sums over the same blocks in the same order: equal bit for bit, float32 as training runs."""

    coords, colours, order = problem(recipe, n_pixels=40 if recipe.parameter_count() > 200_000 else 200)
    model = build_model(recipe)
    one = kernel_steps(model, recipe, coords, colours, order, np.float32)
    two = kernel_steps(model, recipe, coords, colours, order, np.float32, train=TWO_CORES)
    assert np.abs(one - flat(model).astype(np.float32)).max() > 0  # it trained
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("recipe", WIDE_RECIPES.values(), ids=WIDE_RECIPES.keys())
def test_wide_one_layer_kernel_matches_autograd_float64(recipe):
    """The fused one-hidden-layer sweeps (input-major first layer, output-major second) against autograd."""
    coords, colours, order = problem(recipe, n_pixels=200)
    model = build_model(recipe).double()
    start = flat(model)
    params = kernel_steps(model, recipe, coords, colours, order, np.float64)
    reference_steps(model, recipe, coords.astype(np.float64), colours.astype(np.float64), order)
    assert np.abs(flat(model) - start).max() > 1e-3
    np.testing.assert_allclose(params, flat(model), rtol=0, atol=1e-10)


@two_cores
@pytest.mark.parametrize("arch", [(300, 300, 300), (2000,)], ids=["3x300", "1x2000"])
def test_engine_switching_kernels_every_call_equals_one_core(arch):
    """The engine may change kernels at any 1,024-pixel call: alternating 2, 1, 2, ... gives one core's weights."""
    recipe = Recipe(arch=arch)
    coords = coordinate_grid(72, 72)  # 5,184 pixels
    colours = np.stack([coords[:, 0], coords[:, 1], (coords.sum(1) > 1)], 1).astype(np.float32)
    order = np.random.default_rng(4).permutation(len(coords))[:5000]  # 5 calls, the last a partial one
    steady = OnlineEngine(build_model(recipe), recipe, coords, colours, cores=1)
    switching = OnlineEngine(build_model(recipe), recipe, coords, colours)
    kernels = iter([2, 1] * 10)
    switching._choose = lambda: next(kernels)
    steady.calls = {1: 0, 2: 0}
    switching.calls = {1: 0, 2: 0}  # not counting the compile call at construction
    steady.train_epoch(order, epoch=1)
    switching.train_epoch(order, epoch=1)
    assert switching.calls == {1: 2, 2: 3} and steady.calls == {1: 5, 2: 0}
    np.testing.assert_array_equal(steady.params, switching.params)
    assert switching.state_dict() == {}  # nothing load-dependent in a checkpoint
