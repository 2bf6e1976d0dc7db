"""Input encodings: what the network sees of a pixel's coordinates.

A coordinate network given the raw (row, col) in [0, 1]^2 learns a blurry
image: an MLP is biased towards low frequencies (Rahaman et al. 2019), and
the detail of a photograph sits at the pixel scale. An encoding lifts the two
coordinates into many features that already vary at fine scales. Four are
registered in ``registry.ENCODINGS``:

    none        the coordinates themselves
    positional  sin/cos at octave frequencies, per coordinate (NeRF: Mildenhall et al. 2020, eq. 4)
    fourier     sin/cos of random Gaussian projections (Tancik et al. 2020, "Fourier Features Let
                Networks Learn High Frequency Functions in Low Dimensional Domains")
    hashgrid    trainable multiresolution hash encoding (Mueller et al. 2022, "Instant Neural Graphics
                Primitives with a Multiresolution Hash Encoding"; NVlabs/tiny-cuda-nn, encodings/grid.h)

Every build function is ``build(options, in_features, generator) -> nn.Module``;
the module maps (N, in_features) -> (N, module.out_features). Anything random
(the Fourier matrix, the hash tables' initial values) is drawn from
``generator``, a CPU ``torch.Generator``, so a recipe's seed rebuilds the same
model. ``build_encoding`` is ``ENCODINGS.build`` plus a check of that contract.
Each also registers ``size(options, in_features) -> (out_features, parameters)``,
the same figures by arithmetic, so limits.py can size a recipe before building it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from monalisa.recipes.registry import ENCODINGS, NoOptions, Spec, require


def build_encoding(spec: str | Spec, in_features: int, generator: torch.Generator) -> nn.Module:
    """The encoding ``spec`` names (e.g. "hashgrid:levels=8"), checked to declare its ``out_features``.

    Equivalent to ``ENCODINGS.build(spec, in_features, generator)``; the check catches a user's own
    registered encoding that forgot the attribute, which the model builder needs to size the first layer.
    """
    module = ENCODINGS.build(spec, in_features, generator)
    if not isinstance(getattr(module, "out_features", None), int):
        raise TypeError(f"encoding {spec!s} built a {type(module).__name__} without an int out_features")
    return module


# -- none ----------------------------------------------------------------------------------


class Identity(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.out_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@ENCODINGS.register("none", NoOptions, size=lambda options, in_features: (in_features, 0))
def build_none(options: NoOptions, in_features: int, generator: torch.Generator) -> nn.Module:
    return Identity(in_features)


# -- positional (NeRF) ------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionalOptions:
    # NeRF's L for positions; here sin(2^9 pi p) has 256 periods across the image, a period of
    # 1.2-2 pixels for 300-513 pixels: the finest band sits at the pixel Nyquist (see Positional)
    octaves: int = 10
    include_input: bool = True  # NeRF's code (get_embedder, include_input=True) keeps p itself

    def __post_init__(self):
        # Past 2^52 pi p a float64 angle keeps no fraction of a period: such octaves are noise.
        require(0 <= self.octaves <= 52, f"positional octaves must be 0 to 52, got {self.octaves}")
        require(self.octaves > 0 or self.include_input, "positional with octaves=0 and include_input=false "
                "encodes nothing")


def positional_size(options: PositionalOptions, in_features: int) -> tuple[int, int]:
    return in_features * options.include_input + 2 * in_features * options.octaves, 0  # no trainable parameters


class Positional(nn.Module):
    """gamma(p) = [p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p)].

    Each sin/cos is taken of every coordinate, so octave k contributes 2 * in_features features,
    in the order of NeRF's code: [sin of all coordinates, cos of all coordinates] per octave.
    The paper's formula has the factor pi; NeRF's code omits it (its inputs span about [-1, 1]).

    Why 10 octaves: sin(2^k pi p) makes 2^(k-1) periods over p in [0, 1]. A row of W pixels
    is sampled every 1/(W-1), so it can hold at most (W-1)/2 periods (Nyquist): 150 for 300
    pixels, 214 for 429, 256 for 513. Octave k = 9 (L = 10) gives 256, the Nyquist of a
    513-pixel row and just past it for the few-hundred-pixel images here, so the finest band
    can draw a one-pixel edge; L = 9 (128 periods) could not, and L > 10 only adds bands that
    alias between pixels.
    """

    def __init__(self, in_features: int, octaves: int, include_input: bool):
        super().__init__()
        self.octaves = octaves
        self.include_input = include_input
        self.out_features = in_features * include_input + 2 * in_features * octaves

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pi 2^k, k = 0..L-1, made in the input's dtype each call (L numbers, free): a float32
        # buffer would carry float32's pi into float64 inputs, an error of 5e-5 in the finest angle.
        frequencies = math.pi * 2.0 ** torch.arange(self.octaves, dtype=x.dtype, device=x.device)  # (L,)
        angles = x[:, None, :] * frequencies[:, None]  # (N, L, in)
        bands = torch.stack([angles.sin(), angles.cos()], 2)  # (N, L, 2, in)
        parts = [x] if self.include_input else []
        return torch.cat(parts + [bands.flatten(1)], 1)  # (N, in*include_input + 2*in*L)


@ENCODINGS.register("positional", PositionalOptions, size=positional_size)
def build_positional(options: PositionalOptions, in_features: int, generator: torch.Generator) -> nn.Module:
    return Positional(in_features, options.octaves, options.include_input)


# -- fourier (Tancik et al. 2020) -------------------------------------------------------------


@dataclass(frozen=True)
class FourierOptions:
    features: int = 256  # Tancik et al.'s 2-D image demo: mapping_size (their m) = 256
    sigma: float = 10.0  # the best of their image sweep (1, 10, 100) for natural photographs

    def __post_init__(self):
        require(self.features >= 1, f"fourier features must be >= 1, got {self.features}")
        # 2 pi sigma |B v| past ~1e7 radians: float32 angles keep no fraction of a period.
        require(0 < self.sigma <= 1e6, f"fourier sigma must be > 0 and at most 1e6, got {self.sigma}")


def fourier_size(options: FourierOptions, in_features: int) -> tuple[int, int]:
    return 2 * options.features, 0  # B is a fixed buffer, not trained


class Fourier(nn.Module):
    """gamma(v) = [cos(2 pi B v), sin(2 pi B v)] with B ~ N(0, sigma^2), shape (features, in).

    B is a buffer: saved with the model (a checkpoint does not depend on the seed to be
    reloaded) but not trained, as in the paper. sigma sets the bandwidth: with sigma = 10 most
    rows of B make under 30 periods across the image, far below the pixel Nyquist; the
    Gaussian's tail supplies the few finer ones. Larger sigma fits faster and overfits into noise.
    """

    def __init__(self, in_features: int, features: int, sigma: float, generator: torch.Generator):
        super().__init__()
        self.out_features = 2 * features
        self.register_buffer("B", sigma * torch.randn(features, in_features, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * (x @ self.B.t())  # (N, features)
        return torch.cat([angles.cos(), angles.sin()], 1)  # (N, 2*features)


@ENCODINGS.register("fourier", FourierOptions, size=fourier_size)
def build_fourier(options: FourierOptions, in_features: int, generator: torch.Generator) -> nn.Module:
    return Fourier(in_features, options.features, options.sigma, generator)


# -- hashgrid (instant-ngp) -------------------------------------------------------------------


@dataclass(frozen=True)
class HashGridOptions:
    levels: int = 16  # Mueller et al. 2022, Table 1: L = 16
    features: int = 2  # per level; Table 1: F = 2
    # per level (tcnn: 2^log2_hashmap_size); the low end of Table 1's 2^14..2^24, enough here:
    # 285k parameters in all, ~2 per pixel of a 300x429 image
    table_size: int = 2**14
    base: int = 16  # coarsest resolution N_min; Table 1: 16
    finest: int = 512  # N_max; Table 1's low end 512, about one cell per pixel of a 300x429 image

    def __post_init__(self):
        for name in ("levels", "features", "table_size", "base"):
            require(getattr(self, name) >= 1, f"hashgrid {name} must be >= 1, got {getattr(self, name)}")
        require(self.finest >= self.base, f"hashgrid finest ({self.finest}) must be >= base ({self.base})")
        # 64 levels is 4x the paper's 16; the resolutions are listed one per level.
        require(self.levels <= 64, f"hashgrid levels must be at most 64, got {self.levels}")
        # The hash multiplies a vertex index by 2654435761 (~2^31) in int64: indices below 2^24 keep
        # it far from overflow, and a grid 16 million cells a side is finer than any image here.
        require(self.finest <= 2**24, f"hashgrid finest must be at most 2**24, got {self.finest}")


def hashgrid_size(options: HashGridOptions, in_features: int) -> tuple[int, int]:
    """(levels x features, table entries): HashGrid's own layout, by arithmetic (see HashGrid)."""
    rows = sum(min((n + 1) ** 2, options.table_size) for n in hashgrid_resolutions(options))
    return options.levels * options.features, rows * options.features


def hashgrid_table_size(options: HashGridOptions, parameters: int) -> int:
    """The table size per level whose grid has the number of parameters closest to ``parameters``.

    The count grows with the table size until every level is dense; a bisection finds the
    first size at or above the target, then the closer of it and the size below wins.
    """
    def count(size: int) -> int:
        return hashgrid_size(dataclasses.replace(options, table_size=size), 2)[1]

    low, high = 1, max((n + 1) ** 2 for n in hashgrid_resolutions(options))  # high: every level dense
    if count(high) < parameters:
        return high  # the grid cannot grow further; _check_budget reports the shortfall
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < parameters else (low, middle)
    return low if low == 1 or count(low) - parameters <= parameters - count(low - 1) else low - 1


# instant-ngp's spatial hash, one factor per dimension: h(x) = (x_0 * 1 XOR x_1 * 2654435761) mod T
# (section 3 of the paper; tcnn grid.h, fast_hash). tcnn computes it in wrapping uint32 arithmetic; masking the
# int64 product to 32 bits reproduces that wrap, so indices match tcnn for any T, not only 2^k.
PRIMES = (1, 2654435761)


def spatial_hash(x: torch.Tensor, y: torch.Tensor, table_size: int) -> torch.Tensor:
    """Table row of the integer vertex (x, y) (int64 tensors, broadcast): instant-ngp's hash."""
    return (((x * PRIMES[0]) ^ (y * PRIMES[1])) & 0xFFFFFFFF) % table_size


def hashgrid_resolutions(options: HashGridOptions) -> list[int]:
    """N_l = floor(N_min * b^l), b = exp((ln N_max - ln N_min) / (L - 1)) (Mueller et al. 2022, section 3).

    The factor (1 + 1e-9) undoes floating-point rounding: without it, b^l that is an integer
    in exact arithmetic (e.g. the last level, N_max itself) can come out as 511.99999999 and
    floor to one less.
    """
    if options.levels == 1:
        return [options.base]
    b = math.exp((math.log(options.finest) - math.log(options.base)) / (options.levels - 1))
    return [math.floor(options.base * b**level * (1 + 1e-9)) for level in range(options.levels)]


class HashGrid(nn.Module):
    """Multiresolution hash encoding for 2-D inputs in [0, 1]^2 -> (N, levels * features).

    Level l is a grid of N_l x N_l cells, (N_l + 1)^2 vertices, each with F trainable features;
    a point's feature at that level is the bilinear interpolation of its cell's 4 vertices, and
    the levels' features are concatenated (level-major, as tcnn). A level whose vertices fit in
    ``table_size`` rows is stored densely (row = x + y (N_l + 1), no collisions), as tcnn does;
    a finer one stores T rows and finds a vertex's row by ``spatial_hash``, so several vertices
    share a row and training resolves the collisions. All levels live in one flat table,
    ``table`` (rows, F), level l at rows ``offsets[l]`` onwards.

    Conventions: x = the input's first coordinate (the row here; tcnn's dimension 0, the one
    hashed with factor 1), y = the second. p * N_l is the vertex coordinate, the same for both
    kinds of level: p = 0 and p = 1 are the first and last vertex (tcnn's current code instead
    offsets by half a cell). p = 1 falls in the last cell with weight 1 on its far vertex; inputs
    outside [0, 1] are clamped to it, so the image's edge value continues. On the edge (p = 0
    or 1) and beyond, the gradient with respect to that input coordinate is zero, the outside
    one-sided derivative, on every level. Only 2-D inputs: the dense and hashed indexing and
    grid_sample below are written for two coordinates.

    How a level is evaluated. Forward + backward at N = 128,700 points (the full 300x429
    image), default options, CPU, float32, median of 7; torch 2.13 on a 2-core VM whose other
    core ran a training job:

                                                             1 thread   2 threads
      gather table[index] (N, L, 4, F), weighted sum          441 ms      795 ms
      the same as an autograd.Function, index_add_ backward   383 ms      542 ms
      embedding_bag(index (N*L, 4), per_sample_weights)      1066 ms     1740 ms
      grid_sample on each level's vertex grid (this class)     60 ms      572 ms

    The gather variants spend most of their time building the (N, L, 4) int64 index (~100 ms
    single-threaded) and scattering 4 N L gradient rows back into the table; embedding_bag's
    CPU backward is slower still. grid_sample finds the cell, the weights and interpolates in
    one fused kernel per level: a dense level's vertex grid is a view of its table rows, and a
    hashed level's is materialised by one gather of its (N_l + 1)^2 rows (684k for the 7
    hashed levels together, against 4 N = 515k per level for the direct gather). With 2
    threads every small op waits for the core the other job holds, so that column measures
    the contention (torch.set_num_threads(1) is the faster setting on such a machine).

    Materialising costs the same whatever N is, ~12 ms per call for the default hashed levels,
    so for small batches it is slower than gathering each point's 4 corners (default options:
    N = 1 costs 13.6 ms materialised against 1.6 ms gathered; N = 16,384, 21 ms against 37 ms).
    ``method = "auto"`` (the default) therefore decides per hashed level: materialise when the
    level has at most ``MATERIALISE_RATIO`` vertices per input point, else gather. Both
    compute the same function (to float rounding); "grid" and "gather" force one way.
    Nothing is cached between calls: the hashed vertex indices are recomputed (~3 ms).
    """

    # Measured crossover of one hashed level, 1 thread: materialising wins below about 25
    # vertices per point at N_l = 128 and 14 at N_l = 512 (~20 ns per vertex against ~290 ns
    # per point gathered).
    MATERIALISE_RATIO = 16.0

    def __init__(self, options: HashGridOptions, in_features: int, generator: torch.Generator):
        super().__init__()
        if in_features != 2:
            raise ValueError(f"hashgrid is written for 2-D coordinates; got in_features={in_features}")
        self.table_size = options.table_size
        self.features = options.features
        self.resolutions = hashgrid_resolutions(options)  # N_l, cells per side
        self.dense = [(n + 1) ** 2 <= options.table_size for n in self.resolutions]
        self.rows = [(n + 1) ** 2 if dense else options.table_size for n, dense in zip(self.resolutions, self.dense)]
        self.offsets = [sum(self.rows[:level]) for level in range(options.levels)]
        self.out_features = options.levels * options.features
        self.method = "auto"  # "auto", "grid" or "gather": see the class docstring
        # U(-1e-4, 1e-4): the paper's initialisation (section 4), near zero so that the first
        # steps see an almost constant encoding, but not zero so that gradients differ per entry.
        table = torch.empty(sum(self.rows), options.features).uniform_(-1e-4, 1e-4, generator=generator)
        self.table = nn.Parameter(table)  # (rows, F)

    def level_tables(self) -> tuple[torch.Tensor, ...]:
        """Each level's rows of ``table``, (rows_l, F) views.

        One split rather than a slice per level: its backward writes all levels' gradients into
        one table-sized tensor, where 16 slices would each allocate and add a table-sized zero.
        """
        return self.table.split(self.rows)

    def vertex_grid(self, level: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The level's features at all its vertices, (1, F, N_l + 1, N_l + 1), indexed [0, f, y, x].

        Free for a dense level (a view of its rows); a hashed level costs one gather of
        (N_l + 1)^2 rows, whose backward scatters the grid's gradient into the table.
        ``rows``: the level's table rows if already split off (forward does), else taken here.
        """
        n = self.resolutions[level] + 1
        rows = self.level_tables()[level] if rows is None else rows  # (rows_l, F)
        if not self.dense[level]:
            y, x = torch.meshgrid(*[torch.arange(n, device=rows.device)] * 2, indexing="ij")  # (n, n) each
            rows = rows[spatial_hash(x, y, self.table_size)]  # (n, n, F)
        return rows.view(n, n, self.features).permute(2, 0, 1)[None]  # (1, F, n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) -> (N, L*F), a transposed view of a contiguous (L*F, N): grid_sample yields
        (F, N) per level, and the Linear layer that follows multiplies a transposed input at no
        extra cost, where making it contiguous would cost a strided copy of the whole output
        (encoding + Linear(32, 3), forward + backward at N = 128,700: 80 ms, 88 ms contiguous)."""
        points = len(x)
        # Clamp to [0, 1] with zero gradient on the edge too (x.clamp would pass it there):
        # grid_sample's border padding clips the gradient at the edge vertex, and the gathered
        # levels must agree, or the levels' derivatives would be taken from different sides.
        x = torch.where((x > 0) & (x < 1), x, x.detach().clamp(0, 1))  # (N, 2)
        # grid_sample's [-1, 1] with align_corners=True puts -1 and 1 on the first and last
        # vertex; its grid[..., 0] indexes the last (x) axis of the vertex grid.
        grid = (2 * x - 1).view(1, 1, points, 2)  # (1, 1, N, 2)
        features = []
        for level, rows in enumerate(self.level_tables()):
            if self.materialises(level, points):
                # padding "border": the neighbour past the edge (weight 0 at p = 1) reads the
                # edge vertex, never a phantom zero, and the edge gradient is clipped to zero.
                sampled = F.grid_sample(self.vertex_grid(level, rows), grid, mode="bilinear",
                                        padding_mode="border", align_corners=True)  # (1, F, 1, N)
                features.append(sampled.view(self.features, points))  # (F, N)
            else:
                features.append(self._gather(level, rows, x).t())  # (F, N)
        return torch.cat(features, 0).t()  # (L*F, N) -> (N, L*F)

    def materialises(self, level: int, points: int) -> bool:
        """Whether a batch of ``points`` inputs evaluates ``level`` on its whole vertex grid."""
        if self.method not in ("auto", "grid", "gather"):
            raise ValueError(f"HashGrid.method must be 'auto', 'grid' or 'gather', got {self.method!r}")
        if self.dense[level]:
            return True  # its vertex grid is a view: nothing to materialise
        if self.method == "auto":
            return (self.resolutions[level] + 1) ** 2 <= self.MATERIALISE_RATIO * points
        return self.method == "grid"

    def _gather(self, level: int, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A hashed level by direct lookup of each point's 4 cell corners: (N, 2) -> (N, F).
        ``rows``: the level's table rows, (table_size, F)."""
        n = self.resolutions[level]
        scaled = x * n  # (N, 2), in vertex units
        # floor picks the cell; p = 1 would start a cell past the edge, so it takes the last one
        # with fraction 1. detach: the cell is piecewise constant, its gradient is zero anyway.
        cell = scaled.detach().floor().clamp_(max=n - 1)  # (N, 2)
        frac = scaled - cell  # (N, 2), in [0, 1]
        cx, cy = cell.long().unbind(1)  # (N,) each
        corner_x = torch.stack([cx, cx + 1], 1)  # (N, 2)
        corner_y = torch.stack([cy, cy + 1], 1)  # (N, 2)
        index = spatial_hash(corner_x[:, None, :], corner_y[:, :, None], self.table_size)  # (N, 2, 2): [y, x]
        fx, fy = frac.unbind(1)
        weight_x = torch.stack([1 - fx, fx], 1)  # (N, 2)
        weight_y = torch.stack([1 - fy, fy], 1)  # (N, 2)
        weights = weight_y[:, :, None] * weight_x[:, None, :]  # (N, 2, 2)
        values = rows[index]  # (N, 2, 2, F)
        return torch.einsum("nyxf,nyx->nf", values, weights)  # (N, F)


@ENCODINGS.register("hashgrid", HashGridOptions, size=hashgrid_size)
def build_hashgrid(options: HashGridOptions, in_features: int, generator: torch.Generator) -> nn.Module:
    return HashGrid(options, in_features, generator)
