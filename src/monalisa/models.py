"""Build the coordinate network a recipe describes.

The network maps a pixel's (row, col) in [0, 1]^2 to its (R, G, B):

    (N, 2) -> encoding -> (N, E) -> [Linear -> activation (+ skip)] x depth -> Linear -> output -> (N, 3)

fully connected, every layer with a bias. With the ``none`` encoding and no
skips it is exactly the original's network. Both engines train this same
module; the online engine copies its weights out and back.
"""

from __future__ import annotations

import torch
from torch import nn

from .recipes import Recipe
from .registry import ACTIVATIONS, ENCODINGS, INITS, OUTPUTS


class CoordinateNetwork(nn.Module):
    def __init__(self, encoding: nn.Module, layers: list[nn.Linear], activations: list[nn.Module],
                 output: nn.Module, residual: bool):
        super().__init__()
        self.encoding = encoding
        self.layers = nn.ModuleList(layers)  # hidden layers, then the output layer
        self.activations = nn.ModuleList(activations)  # one per hidden layer
        self.output = output
        self.residual = residual

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        h = self.encoding(coords)  # (N, E)
        for layer, activation in zip(self.layers[:-1], self.activations):
            z = activation(layer(h))  # (N, width)
            h = h + z if self.residual and z.shape == h.shape else z
        return self.output(self.layers[-1](h))  # (N, 3)


def build_model(recipe: Recipe) -> CoordinateNetwork:
    """The network, initialised from ``recipe.seed``: a seed always gives the same weights."""
    generator = torch.Generator().manual_seed(recipe.seed)
    encoding = ENCODINGS.build(recipe.encoding, 2, generator)
    widths = (encoding.out_features, *recipe.arch, 3)
    layers = [nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:])]
    init = INITS.parse(recipe.init)
    for index, layer in enumerate(layers):
        INITS.build(init, layer, index, generator)
    activations = [ACTIVATIONS.build(spec, index) for index, spec in enumerate(recipe.layer_activations())]
    return CoordinateNetwork(encoding, layers, activations, OUTPUTS.build(recipe.output), recipe.residual)


def linear_layers(model: CoordinateNetwork) -> list[nn.Linear]:
    return list(model.layers)
