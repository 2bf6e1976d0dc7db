"""Encodings against reference answers: formulas written out loop by loop, a point-by-point hash
grid, the instant-ngp hash in Python integers, autograd's gradcheck, and a small fit."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from monalisa.errors import UserError
from monalisa.recipes import registry
from monalisa.recipes.encodings import HashGrid, build_encoding, spatial_hash
from monalisa.recipes.registry import ENCODINGS

# Options that change every default, for the round trip.
SPECS = {
    "none": "none",
    "positional": "positional:octaves=4,include_input=false",
    "fourier": "fourier:features=16,sigma=3.5",
    "hashgrid": "hashgrid:levels=4,features=3,table_size=2**8,base=2,finest=64",
}
# A small hash grid with dense levels (resolutions 2, 6) and hashed ones (20 and 64: more than 2^8 vertices).
SMALL = "hashgrid:levels=4,base=2,finest=64,table_size=2**8"


pytestmark = pytest.mark.usefixtures("one_thread")


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_points(n: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, 2, generator=generator(seed), dtype=dtype)


# -- every registered encoding ------------------------------------------------------------


@pytest.mark.parametrize("name", ENCODINGS.names())
def test_shape_finite_and_gradients(name):
    module = build_encoding(name, 2, generator())
    x = random_points(7).requires_grad_(True)
    out = module(x)
    assert out.shape == (7, module.out_features)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, parameter in module.named_parameters():
        assert parameter.grad is not None, pname
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ENCODINGS.names())
def test_spec_round_trip(name):
    for spec in (name, SPECS.get(name, name)):
        parsed = ENCODINGS.parse(spec)
        text = registry.format_spec(parsed)
        assert ENCODINGS.parse(text) == parsed
        assert (text == name) == (spec == name)  # defaults print as the bare name, changes do not


def test_expected_names_and_sizes():
    assert {"none", "positional", "fourier", "hashgrid"} <= set(ENCODINGS.names())
    names = ("none", "positional", "fourier", "hashgrid")
    sizes = {name: build_encoding(name, 2, generator()).out_features for name in names}
    assert sizes == {"none": 2, "positional": 2 + 2 * 2 * 10, "fourier": 512, "hashgrid": 32}
    assert build_encoding("positional:include_input=false,octaves=3", 2, generator()).out_features == 12
    assert build_encoding("positional", 3, generator()).out_features == 3 + 2 * 3 * 10


def test_bad_options_are_errors():
    for spec in ("hashgrid:level=4", "hashgrid:levels=0", "hashgrid:base=32,finest=16", "fourier:sigma=0",
                 "positional:octaves=-1", "positional:octaves=0,include_input=false"):
        with pytest.raises(UserError):
            build_encoding(spec, 2, generator())
    with pytest.raises(ValueError, match="2-D"):
        build_encoding("hashgrid", 3, generator())


def test_build_encoding_checks_out_features(monkeypatch):
    monkeypatch.setitem(ENCODINGS._entries, "broken",
                        registry.Entry("broken", registry.NoOptions, lambda options, n, g: nn.Identity()))
    with pytest.raises(TypeError, match="out_features"):
        build_encoding("broken", 2, generator())


# -- positional and fourier against the formulas -------------------------------------------


def positional_reference(points: np.ndarray, octaves: int, include_input: bool) -> np.ndarray:
    rows = []
    for point in points:
        row = list(point) if include_input else []
        for k in range(octaves):
            row += [math.sin(2**k * math.pi * c) for c in point]
            row += [math.cos(2**k * math.pi * c) for c in point]
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("octaves,include_input", [(10, True), (3, False)])
def test_positional_matches_formula(octaves, include_input):
    module = build_encoding(f"positional:octaves={octaves},include_input={include_input}", 2, generator())
    x = torch.cat([random_points(5, dtype=torch.float64), torch.tensor([[0.0, 1.0], [0.5, 0.25]], dtype=torch.float64)])
    expected = positional_reference(x.numpy(), octaves, include_input)
    np.testing.assert_allclose(module(x).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(module(x.float()).numpy(), expected, atol=2e-4)  # float32: angle up to 2^9 pi


def test_fourier_matches_formula():
    module = build_encoding("fourier:features=8,sigma=2.0", 2, generator()).double()
    x = random_points(5, dtype=torch.float64)
    B = module.B.numpy()
    expected = np.zeros((5, 16))
    for n, v in enumerate(x.numpy()):
        for i in range(8):
            angle = 2 * math.pi * sum(B[i, j] * v[j] for j in range(2))
            expected[n, i], expected[n, 8 + i] = math.cos(angle), math.sin(angle)
    np.testing.assert_allclose(module(x).numpy(), expected, atol=1e-12)


def test_fourier_matrix_is_a_seeded_gaussian_buffer():
    a, b, c = (build_encoding("fourier:features=4096,sigma=10.0", 2, generator(seed)) for seed in (3, 3, 4))
    assert torch.equal(a.B, b.B) and not torch.equal(a.B, c.B)
    assert a.B.shape == (4096, 2)
    assert abs(a.B.std().item() - 10.0) < 0.3  # std of 8192 draws: ~0.8% error
    assert abs(a.B.mean().item()) < 0.5
    assert list(a.parameters()) == [] and "B" in a.state_dict()


# -- hashgrid -------------------------------------------------------------------------------


def reference_resolutions(levels: int, base: int, finest: int) -> list[int]:
    if levels == 1:
        return [base]
    b = math.exp((math.log(finest) - math.log(base)) / (levels - 1))
    return [math.floor(base * b**l + 1e-6) for l in range(levels)]


def hashgrid_reference(table: np.ndarray, points: np.ndarray, levels: int, features: int, table_size: int,
                       base: int, finest: int) -> np.ndarray:
    """The encoding point by point, level by level, corner by corner, with Python integers."""
    out = np.zeros((len(points), levels * features))
    offset = 0
    for level, n in enumerate(reference_resolutions(levels, base, finest)):
        dense = (n + 1) ** 2 <= table_size
        for i, point in enumerate(points):
            cell = [min(math.floor(c * n), n - 1) for c in point]  # p = 1: last cell, fraction 1
            frac = [c * n - k for c, k in zip(point, cell)]
            for dx in (0, 1):
                for dy in (0, 1):
                    x, y = cell[0] + dx, cell[1] + dy
                    weight = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                    if dense:
                        row = x + y * (n + 1)
                    else:  # tcnn: uint32 products XORed, then mod T
                        row = (((x * 1) % 2**32) ^ ((y * 2654435761) % 2**32)) % table_size
                    out[i, level * features:(level + 1) * features] += weight * table[offset + row]
        offset += (n + 1) ** 2 if dense else table_size
    assert offset == len(table)
    return out


def edge_points() -> torch.Tensor:
    """Corners and edges of the square, vertices and cell edges of several levels, random points."""
    special = [0.0, 1.0, 0.5, 1 / 6, 2 / 6, 5 / 6, 3 / 20, 19 / 20, 1 / 64, 63 / 64, 0.999999]
    pairs = [(a, b) for a in special for b in (0.0, 1.0, 1 / 6, 19 / 20, 0.37)]
    return torch.cat([torch.tensor(pairs, dtype=torch.float64), random_points(40, dtype=torch.float64)])


@pytest.mark.parametrize("features,table_size", [(2, 2**8), (3, 2**8), (2, 200)])
@pytest.mark.parametrize("method", ["grid", "gather", "auto"])
def test_hashgrid_matches_reference(features, table_size, method):
    options = dict(levels=4, features=features, table_size=table_size, base=2, finest=64)
    module = build_encoding("hashgrid:" + ",".join(f"{k}={v}" for k, v in options.items()), 2, generator()).double()
    assert module.resolutions == [2, 6, 20, 64]
    assert module.dense == [True, True, False, False]  # 3^2, 7^2 <= T < 21^2, 65^2
    with torch.no_grad():  # order-1 values, so that 1e-6 is a tight check
        module.table.copy_(torch.randn(module.table.shape, generator=generator(5), dtype=torch.float64))
    module.method = method
    x = edge_points()
    expected = hashgrid_reference(module.table.detach().numpy(), x.numpy(), **options)
    np.testing.assert_allclose(module(x).detach().numpy(), expected, atol=1e-6, rtol=0)


def test_hashgrid_float32_default_init_matches_reference():
    options = dict(levels=4, features=2, table_size=2**8, base=2, finest=64)
    module = build_encoding(SMALL, 2, generator())
    x = edge_points()
    expected = hashgrid_reference(module.table.detach().double().numpy(), x.numpy(), **options)
    np.testing.assert_allclose(module(x.float()).detach().numpy(), expected, atol=1e-9, rtol=0)
    assert module.table.abs().max() <= 1e-4 and module.table.std() > 3e-5  # U(-1e-4, 1e-4)


def test_spatial_hash_is_instant_ngp_in_uint32():
    xs = torch.tensor([0, 1, 7, 513, 2**20 + 3])
    ys = torch.tensor([0, 2, 9, 400, 2**21 - 1])
    for table_size in (2**14, 1000):  # 1000 does not divide 2^32: the 32-bit wrap shows
        expected = [(((x * 1) & 0xFFFFFFFF) ^ ((y * 2654435761) & 0xFFFFFFFF)) % table_size
                    for x, y in zip(xs.tolist(), ys.tolist())]
        assert spatial_hash(xs, ys, table_size).tolist() == expected
    assert spatial_hash(torch.tensor(3), torch.tensor(5), 1000).item() != (3 ^ (5 * 2654435761)) % 1000


def test_hashgrid_resolutions_follow_geometric_formula():
    default = build_encoding("hashgrid", 2, generator())
    assert default.resolutions == [16, 20, 25, 32, 40, 50, 64, 80, 101, 128, 161, 203, 256, 322, 406, 512]
    assert default.dense == [True] * 9 + [False] * 7  # 102^2 <= 2^14 < 129^2
    assert default.table.shape == (sum((n + 1) ** 2 for n in default.resolutions[:9]) + 7 * 2**14, 2)
    for levels, base, finest in ((16, 16, 512), (8, 4, 300), (5, 16, 16), (1, 8, 64), (12, 3, 2048)):
        module = build_encoding(f"hashgrid:levels={levels},base={base},finest={finest}", 2, generator())
        assert module.resolutions == reference_resolutions(levels, base, finest)
        assert module.resolutions[0] == base and (levels == 1 or module.resolutions[-1] == finest)
        assert module.dense == [(n + 1) ** 2 <= 2**14 for n in module.resolutions]
        assert module.offsets[0] == 0 and all(b > a for a, b in zip(module.offsets, module.offsets[1:]))
    exact = build_encoding("hashgrid:levels=2,base=3,finest=15,table_size=16", 2, generator())
    assert exact.resolutions == [3, 15] and exact.dense == [True, False]  # 4^2 = 16 vertices fit exactly


@pytest.mark.parametrize("method", ["grid", "gather"])
def test_hashgrid_far_edge(method):
    module = build_encoding(SMALL, 2, generator())
    module.method = method
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.2, -0.5]])  # the last is clamped onto (1, 0)
    out = module(x)
    rows = []
    for level, n in enumerate(module.resolutions):
        if module.dense[level]:
            last = n + n * (n + 1)
        else:
            last = spatial_hash(torch.tensor(n), torch.tensor(n), 2**8).item()
        rows.append(module.offsets[level] + last)  # the vertex (n, n)
    assert torch.equal(out[0], module.table[rows].detach().flatten())
    assert torch.equal(out[1], out[2])
    out[0].sum().backward()  # weight 1 on the last vertex of each level, 0 on every other row
    expected = torch.zeros_like(module.table)
    expected[rows] = 1
    assert torch.equal(module.table.grad, expected)


@pytest.mark.parametrize("method", ["grid", "gather"])
def test_hashgrid_input_gradient_matches_finite_differences(method):
    """Inside the square: central differences. On its edge (p = 0 or 1) the encoding is clamped,
    and the gradient is the outside one-sided derivative, zero, on every level alike."""
    module = build_encoding(SMALL, 2, generator()).double()
    module.method = method
    with torch.no_grad():
        module.table.copy_(torch.randn(module.table.shape, generator=generator(5), dtype=torch.float64))
    mix = torch.randn(module.out_features, generator=generator(6), dtype=torch.float64)
    def f(x): return module(x.view(-1, 2)) @ mix  # (N,)
    # 0.37 and 0.61 are inside cells of every level (2, 6, 20, 64)
    x = torch.tensor([[0.37, 0.61], [1.0, 0.61], [0.0, 0.61], [0.37, 1.0], [0.37, 0.0], [1.0, 1.0]],
                     dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    h = 1e-6
    for i, point in enumerate(x.detach()):
        for d in range(2):
            step = torch.zeros(2, dtype=torch.float64)
            step[d] = h
            if point[d] in (0, 1):
                outside = f(point + step) - f(point) if point[d] == 1 else f(point) - f(point - step)
                expected = (outside / h).item()
                assert expected == 0.0  # clamped: flat outside
            else:
                expected = ((f(point + step) - f(point - step)) / (2 * h)).item()
                assert abs(expected) > 1
            assert abs(grad[i, d].item() - expected) < 1e-5 * (1 + abs(expected)), (point, d)


def test_hashgrid_auto_method_picks_by_batch_size():
    module = build_encoding("hashgrid", 2, generator())
    vertices = [(n + 1) ** 2 for n in module.resolutions]
    assert [module.materialises(l, 1) for l in range(16)] == module.dense  # hashed levels: gather 4 corners
    assert all(module.materialises(l, 128_700) for l in range(16))  # the full image: every grid
    expected = [dense or v <= 16 * 10_000 for dense, v in zip(module.dense, vertices)]  # MATERIALISE_RATIO 16
    assert [module.materialises(l, 10_000) for l in range(16)] == expected
    module.method = "grid"
    assert all(module.materialises(l, 1) for l in range(16))
    module.method = "gather"
    assert [module.materialises(l, 10**9) for l in range(16)] == module.dense
    module.method = "bogus"
    with pytest.raises(ValueError, match="method"):
        module(random_points(3))


@pytest.mark.parametrize("method", ["grid", "gather"])
def test_hashgrid_gradcheck(method):
    module = build_encoding("hashgrid:levels=2,base=2,finest=8,table_size=16", 2, generator()).double()
    module.method = method
    assert module.dense == [True, False]
    # (k + 0.3) / 8: fraction 0.3 on level 8 and 0.075 + k/4 on level 2, away from cell edges
    x = (torch.tensor([[0, 1], [3, 6], [5, 2], [7, 7], [2, 4]], dtype=torch.float64) + 0.3) / 8
    table = module.table.detach().clone().normal_(generator=generator(2)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: functional_call(module, {"table": t}, (x,)), (table,))
    assert torch.autograd.gradcheck(module, (x.clone().requires_grad_(True),))


def test_hashgrid_is_seeded():
    a, b, c = (build_encoding(SMALL, 2, generator(seed)).table for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hashgrid_learns_random_image_where_raw_coordinates_cannot():
    """32x32 random colours: a hash grid (defaults) + linear layer fits it in 100 Adam steps;
    the same linear layer on the raw coordinates can only fit a plane, MSE ~ var U(0,1) = 1/12."""
    size = 32
    g = generator(7)
    colours = torch.rand(size * size, 3, generator=g)
    r, c = torch.meshgrid(torch.arange(size) / (size - 1), torch.arange(size) / (size - 1), indexing="ij")
    coords = torch.stack([r, c], -1).reshape(-1, 2)  # (1024, 2), row first

    def fit(encoding: nn.Module) -> float:
        head = nn.Linear(encoding.out_features, 3)
        with torch.no_grad():
            head.weight.uniform_(-0.1, 0.1, generator=g)
            head.bias.zero_()
        model = nn.Sequential(encoding, head)
        # instant-ngp's Adam settings (paper section 4): lr 1e-2, betas (0.9, 0.99), eps 1e-15
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
        for _ in range(100):
            loss = (model(coords) - colours).square().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            return (model(coords) - colours).square().mean().item()

    assert fit(build_encoding("hashgrid", 2, generator())) < 1e-3
    assert fit(build_encoding("none", 2, generator())) > 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ENCODINGS.names())
def test_cuda_matches_cpu(name):
    module = build_encoding(SPECS.get(name, name), 2, generator())
    x = random_points(5000)
    expected = module(x)
    module.to("cuda")
    for method in ("grid", "gather") if isinstance(module, HashGrid) else ("",):
        if method:
            module.method = method
        torch.testing.assert_close(module(x.cuda()).cpu(), expected, atol=1e-4, rtol=1e-4)  # plumbing, not rounding
