"""Build the coordinate network a recipe describes.

The network maps a pixel's (row, col) in [0, 1]^2 to its (R, G, B): fully
connected, every layer with a bias, the recipe's hidden activation between
layers and its output activation at the end. Both engines train this same
``torch.nn.Module``; the online engine copies its weights out and back.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .recipes import Recipe


def hidden_activation(recipe: Recipe) -> nn.Module:
    if recipe.activation == "leaky_relu":
        return nn.LeakyReLU(recipe.slope)
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[recipe.activation]()


def build_model(recipe: Recipe) -> nn.Sequential:
    """The network, initialised from ``recipe.seed`` so a seed always gives the same weights."""
    generator = torch.Generator().manual_seed(recipe.seed)
    layers: list[nn.Module] = []
    widths = recipe.widths
    for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        linear = nn.Linear(n_in, n_out)
        init_linear(linear, recipe, generator)
        layers.append(linear)
        if index < len(widths) - 2:
            layers.append(hidden_activation(recipe))
    if recipe.output == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


@torch.no_grad()
def init_linear(linear: nn.Linear, recipe: Recipe, generator: torch.Generator) -> None:
    if recipe.init == "original":
        # RECIPE.md: weights and biases ~ N(0, (0.3 / sqrt(fan_in + 1))^2).
        std = recipe.init_scale / math.sqrt(linear.in_features + 1)
        linear.weight.normal_(0.0, std, generator=generator)
        linear.bias.normal_(0.0, std, generator=generator)
    else:
        # PyTorch's default (Kaiming-uniform with a=sqrt(5)), drawn from our
        # generator so that the seed still decides it.
        bound = 1 / math.sqrt(linear.in_features)
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]
