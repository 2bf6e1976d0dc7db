"""A network's shape in numbers: its name (4x300), its parameter count, and the width for a budget.

The 2012 experiment's thesis was that deep beats shallow; the fair test holds the
parameter count fixed and trades width for depth. A fully connected network of
``depth`` hidden layers of width w, every layer with a bias, has

    P(w) = (in + 1) w  +  (depth - 1)(w + 1) w  +  (w + 1) out
         = (depth - 1) w^2 + (in + out + depth) w + out

parameters (input layer, the hidden-to-hidden layers, the output layer). P is a
quadratic in w, increasing for w > 0, so the width for a budget B is the positive
root of P(w) = B, rounded to whichever neighbouring integer comes closest. The
original 4x300 network has P(300) = 272,703 (docs/original.md), so ``width_for_budget(4,
272_703)`` is 300.

A budget cannot always be met: a deep network needs at least P(1) parameters, and
at small widths one unit more or less moves P by about 2 (depth - 1) w, which can
be more than the tolerance. Both are a ``UserError`` that says which.
"""

from __future__ import annotations

import math

from monalisa.errors import UserError

# How far from the budget a network may land: at the original's 272,703 parameters and
# depths up to 16 the nearest width is within 0.3%; 2% leaves room for budgets ~100x smaller.
TOLERANCE = 0.02


def format_arch(arch: tuple[int, ...]) -> str:
    """The inverse of parse_arch, preferring the DEPTHxWIDTH form."""
    if len(set(arch)) == 1:
        return f"{len(arch)}x{arch[0]}"
    return ",".join(str(w) for w in arch)


def parameter_count(arch: tuple[int, ...] | list[int], in_features: int = 2, out_features: int = 3) -> int:
    """Weights and biases of the MLP in_features -> arch[0] -> ... -> arch[-1] -> out_features."""
    widths = (in_features, *arch, out_features)
    return sum(n_in * n_out + n_out for n_in, n_out in zip(widths[:-1], widths[1:]))


def encoding_size(spec, in_features: int = 2) -> tuple[int, int]:
    """(output features, trainable parameters) of an encoding spec, from its options alone.

    A built-in encoding registers a ``size`` hook beside its builder (encodings.py), so nothing is
    allocated; a user's encoding registered without one is built and measured.
    """
    import torch

    from monalisa.recipes import encodings  # noqa: F401  (registers the built-in encodings)
    from monalisa.recipes.registry import ENCODINGS

    parsed = ENCODINGS.parse(spec) if isinstance(spec, str) else spec
    size = ENCODINGS.entry(parsed.name).size
    if size is not None:
        return size(parsed.options, in_features)
    module = encodings.build_encoding(parsed, in_features, torch.Generator().manual_seed(0))
    return module.out_features, sum(p.numel() for p in module.parameters() if p.requires_grad)


def recipe_parameters(recipe) -> int:
    """A recipe's trainable parameters: its encoding's, plus the MLP from the encoding's width."""
    features, encoding = encoding_size(recipe.encoding)
    return encoding + parameter_count(recipe.arch, features, 3)


def width_for_budget(depth: int, budget: int, in_features: int = 2, out_features: int = 3,
                     tolerance: float = TOLERANCE) -> int:
    """The equal width of ``depth`` hidden layers whose parameter count is closest to ``budget``.

    Raises UserError when no width comes within ``tolerance`` (a fraction) of the budget.
    """
    for name, value in (("depth", depth), ("budget", budget), ("in_features", in_features),
                        ("out_features", out_features)):
        if type(value) is not int or value < 1:
            raise UserError(f"{name} must be a positive whole number, got {value!r}")
    # P(w) = a w^2 + b w + c with:
    a = depth - 1
    b = in_features + out_features + depth
    c = out_features
    if a == 0:
        root = (budget - c) / b  # one hidden layer: P is linear in w
    else:
        root = (-b + math.sqrt(b * b + 4 * a * (budget - c))) / (2 * a)
    # The root rounded either way, and one more each side against float rounding of the sqrt.
    candidates = [w for w in range(math.floor(root) - 1, math.ceil(root) + 2) if w >= 1]
    count = lambda w: parameter_count((w,) * depth, in_features, out_features)  # noqa: E731
    width = min(candidates, key=lambda w: (abs(count(w) - budget), w))
    off = abs(count(width) - budget) / budget
    if off <= tolerance:
        return width
    smallest = count(1)
    if budget < smallest * (1 - tolerance):
        raise UserError(
            f"a budget of {budget:,} parameters is too small for {depth} hidden layers: even width 1 has "
            f"{smallest:,} ({in_features} inputs, {out_features} outputs); lower the depth or raise the budget"
        )
    below = max((w for w in candidates if count(w) <= budget), default=None)
    nearest = ", ".join(f"width {w}: {count(w):,}" for w in sorted({below or width, (below or width) + 1}))
    raise UserError(
        f"no width of {depth} hidden layers comes within {tolerance:.0%} of {budget:,} parameters "
        f"({nearest}): at this size one unit of width moves the count too far; "
        "lower the depth or raise the budget"
    )


def budget_arches(budget: int, depths: list[int] | tuple[int, ...], in_features: int = 2,
                  out_features: int = 3) -> list[tuple[int, ...]]:
    """One equal-width architecture per depth, each within TOLERANCE of ``budget`` parameters."""
    return [(width_for_budget(depth, budget, in_features, out_features),) * depth for depth in depths]
