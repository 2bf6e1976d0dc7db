"""A network's layers prepacked for oneDNN, for the forward passes the render makes on a CPU.

torch's CPU matmul is MKL's sgemm; oneDNN, which torch also ships, runs the same
product about twice as fast on the machines measured (an AMD Zen 5 core: ~111
against ~255 GFLOP/s, a 1,024x300 by 300x300 product, one thread), once the
weights are reordered into its own layout. The render makes one forward pass over
every pixel after every epoch, with weights fixed for that pass, so packing them
once per render pays for itself many times over (it costs ~1 ms for 4x300).

Only the linear layers change: each packed layer takes and returns an ordinary
(dense) tensor, so the encoding, activations, skips and output module run as in
training, and a packed network computes what the network does up to the order of
float sums inside each product (~1e-7 relative).
"""

from __future__ import annotations

import torch
from torch import nn

from monalisa.models.network import CoordinateNetwork


def can_pack(device: torch.device) -> bool:
    """Whether this torch has oneDNN's linear for ``device`` (CPU builds on x86 and ARM do)."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch._C._nn, "mkldnn_linear"))


class PackedLinear(nn.Module):
    """An ``nn.Linear``'s product through oneDNN, on weights reordered once; dense in, dense out."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight = layer.weight.detach().float().to_mkldnn()  # (out, in), in oneDNN's layout
        self.bias = layer.bias.detach().float().to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, in) -> (N, out). Converting to and from oneDNN's tensors copies; both copies are
        # small next to the product itself when a chunk of pixels stays in cache (train.PACKED_FLOATS).
        return torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), self.weight, self.bias).to_dense()


# Layers with fewer inputs or outputs than this stay torch's. A thin product is a pass over
# memory, not arithmetic, and oneDNN's conversions cost more than they save (4x300's first
# layer, 2 -> 300, 1,092 pixels: 0.04 ms through torch against 0.07-0.95 packed; its last,
# 300 -> 3: 0.07 against 0.10). Whole renders of the Mona Lisa, 2 threads, torch against
# packed: 3x96 0.048 against 0.031 s, 3x64 0.034 against 0.031, and the small hash-grid
# networks, whose encoding costs more than their layers, slower packed (`hashgrid`, 2x64,
# 0.059-0.074 against 0.080; `fast`, 1x32, 0.028 against 0.037-0.040).
PACK_FROM = 96


def packed_network(model: CoordinateNetwork) -> CoordinateNetwork | None:
    """``model`` with its linear layers of at least PACK_FROM inputs and outputs packed, for forward
    passes only (no gradients, no updates); None when no layer is that wide.

    Shares the encoding, activation and output modules and the unpacked layers with ``model``;
    the packed weights are copies, so later training steps do not reach them: pack again after
    each step.
    """
    wide = [min(layer.in_features, layer.out_features) >= PACK_FROM for layer in model.layers]
    if not any(wide):
        return None
    return model.with_layers([PackedLinear(layer) if pack else layer for layer, pack in zip(model.layers, wide)])
