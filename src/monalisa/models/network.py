"""Build the coordinate network a recipe describes.

The network maps a pixel's (row, col) in [0, 1]^2 to its (R, G, B):

    (N, 2) -> encoding -> (N, E) -> [Linear -> activation (+ skip)] x depth -> Linear -> output -> (N, 3)

fully connected, every layer with a bias. With the ``none`` encoding and no
skips it is exactly the original's network. Both engines train this same
module; the online engine copies its weights out and back.

``CoordinateNetwork.trunk`` walks the layers one at a time; ``forward`` is that
walk plus the output layer, and ``layer_outputs`` stops it at one layer to show
what its units compute (the neuron view, neurons.py).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OUTPUTS


class CoordinateNetwork(nn.Module):
    def __init__(self, encoding: nn.Module, layers: list[nn.Linear], activations: list[nn.Module],
                 output: nn.Module, residual: bool):
        super().__init__()
        self.encoding = encoding
        self.layers = nn.ModuleList(layers)  # hidden layers, then the output layer
        self.activations = nn.ModuleList(activations)  # one per hidden layer
        self.output = output
        self.residual = residual

    @property
    def depth(self) -> int:
        """Hidden layers: numbered 1..depth by ``trunk`` and ``layer_outputs`` (0 is the encoding)."""
        return len(self.activations)

    def trunk(self, coords: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Layer by layer, 0 (the encoding) to ``depth``: (z, h).

        z is the layer's own units, activation(Linear(h_prev)), (N, width): what the neuron view
        draws. h is what the next layer reads: z, or h_prev + z across a residual skip. For
        layer 0 both are the encoded coordinates (N, E). ``forward`` walks this same generator,
        so a layer's units can never drift from what the network computes.
        """
        h = self.encoding(coords)  # (N, E)
        yield h, h
        for layer, activation in zip(self.layers[:-1], self.activations):
            z = activation(layer(h))  # (N, width)
            h = h + z if self.residual and z.shape == h.shape else z
            yield z, h

    def layer_outputs(self, coords: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer``'s units, (N, width): 0 the encoding, 1..depth the hidden layers."""
        if not 0 <= layer <= self.depth:
            raise ValueError(f"layer {layer} is out of range: hidden layers are 1-{self.depth} (0 is the encoding)")
        for index, (z, _) in enumerate(self.trunk(coords)):
            if index == layer:
                return z  # the later layers are never computed
        raise AssertionError("unreachable: trunk yields depth + 1 layers")

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        for _, h in self.trunk(coords):
            pass  # only the last hidden layer's h feeds the output layer
        return self.output(self.layers[-1](h))  # (N, 3)

    def with_layers(self, layers: list[nn.Module]) -> CoordinateNetwork:
        """This network with ``layers`` in place of its linear layers; the encoding, activation and
        output modules are shared, not copied (packed.py swaps in layers for a faster render)."""
        return CoordinateNetwork(self.encoding, layers, list(self.activations), self.output, self.residual)

    def can_split_last_layer(self) -> bool:
        """Whether ``forward_in_unit_blocks`` computes ``forward``: a last hidden layer with no residual
        skip across it and an activation that holds no per-unit state (every built-in one)."""
        if self.depth == 0:
            return False
        last, activation = self.layers[-2], self.activations[-1]
        skipped = self.residual and last.in_features == last.out_features
        stateful = any(True for _ in activation.parameters()) or any(True for _ in activation.buffers())
        return not skipped and not stateful

    def forward_in_unit_blocks(self, coords: torch.Tensor, block: int) -> torch.Tensor:
        """``forward``, with the last hidden layer computed ``block`` units at a time, each block's share
        of the output summed as it goes: a very wide last layer (1x45450) never holds all its units for
        all the pixels, so a chunk of many pixels stays in cache. Equal to ``forward`` up to float rounding
        (the output layer's sums run in another order). Needs ``can_split_last_layer()``."""
        for index, (_, h) in enumerate(self.trunk(coords)):
            if index == self.depth - 1:
                break  # the generator stops here: the last hidden layer is computed below, in blocks
        last, out, activation = self.layers[-2], self.layers[-1], self.activations[-1]
        total = out.bias.expand(len(h), out.out_features).clone()
        for start in range(0, last.out_features, block):
            units = slice(start, start + block)
            z = activation(torch.addmm(last.bias[units], h, last.weight[units].T))
            total.addmm_(z, out.weight[:, units].T)
        return self.output(total)


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
