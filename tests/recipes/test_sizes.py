"""Equal-parameter widths (recipes/sizes.py), checked against the networks torch builds and a brute-force search."""

import math

import pytest
from helpers import torch_count

from monalisa.errors import UserError
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.sizes import TOLERANCE, budget_arches, parameter_count, width_for_budget


def test_the_original_is_4x300():
    # docs/original.md: 2*300+300 + 3*(300*300+300) + 300*3+3 = 272,703
    assert width_for_budget(4, 272_703) == 300
    assert parameter_count((300,) * 4) == 272_703


@pytest.mark.parametrize("budget", [272_703, 50_000, 1_000_000])
def test_depths_1_to_16_land_within_tolerance(budget):
    for arch in budget_arches(budget, list(range(1, 17))):
        count = torch_count(Recipe(arch=arch))
        assert abs(count - budget) <= TOLERANCE * budget, (arch[0], len(arch), count)


def test_small_budget_for_the_depths_it_allows():
    for depth in range(1, 9):
        width = width_for_budget(depth, 10_000)
        assert abs(torch_count(Recipe(arch=(width,) * depth)) - 10_000) <= 200


@pytest.mark.parametrize("arch, in_features", [((300, 300, 100), 2), ((17,), 42), ((64, 64), 32), ((5, 7, 9, 11), 512)])
def test_parameter_count_is_what_torch_counts(arch, in_features):
    encoding = {2: "none", 42: "positional", 32: "hashgrid:table_size=4", 512: "fourier"}[in_features]
    model = build_model(Recipe(arch=arch, encoding=encoding))
    mlp = sum(p.numel() for layer in model.layers for p in layer.parameters())
    assert parameter_count(arch, in_features) == mlp


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("budget", [3_000, 40_000, 272_703])
@pytest.mark.parametrize("in_features", [2, 512])
def test_width_is_the_closest_of_all_widths(depth, budget, in_features):
    def off(w):
        return abs(parameter_count((w,) * depth, in_features) - budget)

    # P(w) >= (in + out + 1) w, and >= (depth - 1) w^2: no wider network can come closer
    widest = budget // (in_features + 4) if depth == 1 else math.isqrt(budget // (depth - 1))
    brute = min(range(1, widest + 2), key=off)
    try:
        width = width_for_budget(depth, budget, in_features)
    except UserError:
        assert off(brute) > TOLERANCE * budget  # refused only when even the best width misses
        return
    assert off(width) == off(brute)


@pytest.mark.parametrize("depth, budget, words", [
    (8, 10, "too small"),  # width 1 already has 23 parameters
    (4, 5, "too small"),
    (9, 10_000, "within 2%"),  # widths 34 and 35 give 9,727 and 10,293
    (16, 1_000, "within 2%"),
])
def test_impossible_requests_say_why(depth, budget, words):
    with pytest.raises(UserError, match=words):
        width_for_budget(depth, budget)


def test_budget_arches_refuses_one_impossible_depth():
    assert budget_arches(10_000, [1, 4]) == [(1666,), (56,) * 4]
    with pytest.raises(UserError, match="9 hidden layers"):
        budget_arches(10_000, [1, 4, 9])


@pytest.mark.parametrize("args", [(0, 1000), (4, 0), (4, -5), (4, 1000.0), (True, 1000)])
def test_bad_arguments(args):
    with pytest.raises(UserError):
        width_for_budget(*args)
