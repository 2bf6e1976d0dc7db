"""Recipes as data: the presets against RECIPE.md's figures, parsing, round trips, validation, initialisation."""

import dataclasses
import json
import math
import tomllib

import pytest
import torch

from monalisa.errors import UserError
from monalisa.models import build_model, linear_layers
from monalisa.recipes import CHOICES, DEFAULT_LR, PRESETS, Recipe, format_arch, get_preset, load_recipe, parse_arch

FIELDS = [f.name for f in dataclasses.fields(Recipe)]


# -- presets against RECIPE.md ------------------------------------------------------------


def test_original_preset_is_the_post():
    recipe = get_preset("original")
    assert recipe.arch == (300, 300, 300, 300)
    assert recipe.widths == (2, 300, 300, 300, 300, 3)
    assert (recipe.activation, recipe.slope, recipe.output) == ("leaky_relu", 0.01, "linear")
    assert (recipe.init, recipe.init_scale) == ("original", 0.3)
    assert (recipe.optimizer, recipe.learning_rate, recipe.batch_size) == ("sgd", 0.1, 1)
    assert (recipe.order, recipe.epochs) == ("shuffled", 500)
    # RECIPE.md: 2*300+300 + 3*(300*300+300) + 300*3+3
    assert recipe.parameter_count() == 272_703
    assert sum(p.numel() for p in build_model(recipe).parameters()) == 272_703


def test_original_code_preset_has_six_hidden_layers():
    recipe = get_preset("original-code")
    assert recipe.arch == (300,) * 6
    assert recipe.parameter_count() == (2 * 300 + 300) + 5 * (300 * 300 + 300) + (300 * 3 + 3)
    assert dataclasses.replace(recipe, arch=(300,) * 4) == get_preset("original")  # only the depth differs


def test_unknown_preset():
    with pytest.raises(UserError) as info:
        get_preset("orignal")
    assert str(info.value) == f"unknown preset 'orignal'; choose one of: {', '.join(PRESETS)}"
    assert "original-code" in str(info.value)


def test_layer_learning_rates_follow_the_original_fan_in_scaling():
    rates = get_preset("original").layer_learning_rates()
    assert len(rates) == 5
    assert rates[0] == pytest.approx(0.1 / math.sqrt(3), rel=1e-12)
    for rate in rates[1:]:
        assert rate == pytest.approx(0.1 / math.sqrt(301), rel=1e-12)
    narrow = Recipe(arch=(8, 5), lr=0.2).layer_learning_rates()
    assert narrow == pytest.approx([0.2 / math.sqrt(3), 0.2 / math.sqrt(9), 0.2 / math.sqrt(6)])


def test_default_learning_rates_per_optimiser():
    assert Recipe(optimizer="momentum").learning_rate == DEFAULT_LR["momentum"]
    assert Recipe(optimizer="adam", arch=(4, 4)).layer_learning_rates() == [1e-3] * 3  # Adam: no fan-in scaling
    assert Recipe(optimizer="adam", lr=0.05).learning_rate == 0.05


# -- parse_arch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, widths",
    [
        ("4x300", (300, 300, 300, 300)),
        ("1x8", (8,)),
        ("2X16", (16, 16)),
        (" 3 x 5 ", (5, 5, 5)),
        ("300,300,100", (300, 300, 100)),
        ("7", (7,)),
        ("64, 32", (64, 32)),
    ],
)
def test_parse_arch(text, widths):
    assert parse_arch(text) == widths


@pytest.mark.parametrize("text", ["4x", "x300", "abc", "4x300x2", "300,,100", "", "300;100", "-4x300", "4x-3", "3.5x2"])
def test_parse_arch_malformed(text):
    with pytest.raises(UserError) as info:
        parse_arch(text)
    assert str(info.value) == (
        f"malformed --arch {text!r}; write DEPTHxWIDTH such as 4x300, or widths such as 300,300,100"
    )


@pytest.mark.parametrize("text", ["0x300", "4x0", "300,0,100", "0"])
def test_parse_arch_needs_positive_layers(text):
    with pytest.raises(UserError, match="needs at least one layer, each at least 1 unit wide"):
        parse_arch(text)


def test_parse_arch_rejects_non_ascii_digits_as_a_user_error():
    # '²'.isdigit() is True but int('²') raises ValueError; a recipe file with arch = "²" must not crash.
    with pytest.raises(UserError):
        parse_arch("²")
    with pytest.raises(UserError):
        Recipe.from_dict({"arch": "8,²"})


def test_format_arch_inverts_parse_arch():
    for text in ("4x300", "300,300,100", "1x8"):
        assert format_arch(parse_arch(text)) == text


# -- round trips ------------------------------------------------------------------------------

EVERYTHING_CHANGED = {
    "arch": [16, 8, 4],
    "activation": "tanh",
    "slope": 0.02,
    "output": "sigmoid",
    "init": "torch",
    "init_scale": 0.25,
    "optimizer": "momentum",
    "lr": 0.005,
    "momentum": 0.5,
    "batch_size": 32,
    "order": "scan",
    "epochs": 7,
    "seed": 42,
}


def test_everything_changed_really_changes_every_field():
    assert sorted(EVERYTHING_CHANGED) == sorted(FIELDS)
    default = Recipe().to_dict()
    assert all(EVERYTHING_CHANGED[name] != default[name] for name in FIELDS)


def test_from_dict_sets_every_field():
    recipe = Recipe.from_dict(EVERYTHING_CHANGED)
    assert recipe.arch == (16, 8, 4)  # a tuple, so the recipe stays hashable
    hash(recipe)
    for name, value in EVERYTHING_CHANGED.items():
        if name != "arch":
            assert getattr(recipe, name) == value


def test_json_round_trip():
    recipe = Recipe.from_dict(EVERYTHING_CHANGED)
    data = json.loads(recipe.to_json())
    assert data == EVERYTHING_CHANGED
    assert Recipe.from_dict(data) == recipe


def test_toml_round_trip(tmp_path):
    recipe = Recipe.from_dict(EVERYTHING_CHANGED)
    text = recipe.to_toml()
    assert tomllib.loads(text) == EVERYTHING_CHANGED
    path = tmp_path / "everything.toml"
    path.write_text(text)
    assert load_recipe(path) == recipe


def test_json_file_and_defaults(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(Recipe.from_dict(EVERYTHING_CHANGED).to_json())
    assert load_recipe(path) == Recipe.from_dict(EVERYTHING_CHANGED)
    partial = tmp_path / "partial.toml"
    partial.write_text('arch = "2x8"\nepochs = 3\n')
    assert load_recipe(partial) == Recipe(arch=(8, 8), epochs=3)  # missing keys take the defaults


def test_unset_lr_round_trips_as_unset(tmp_path):
    recipe = Recipe(arch=(4,))
    assert Recipe.from_dict(json.loads(recipe.to_json())).lr is None
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    assert load_recipe(path) == recipe


# -- validation -------------------------------------------------------------------------------


def test_unknown_key_names_the_valid_keys(tmp_path):
    with pytest.raises(UserError) as info:
        Recipe.from_dict({"epoch": 5})
    message = str(info.value)
    assert message == f"unknown recipe key 'epoch'; valid keys: {', '.join(FIELDS)}"
    path = tmp_path / "typo.toml"
    path.write_text("learning_rate = 0.1\n")
    with pytest.raises(UserError, match=r"^unknown recipe key 'learning_rate'; valid keys: arch, "):
        load_recipe(path)


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": "5"},
        {"epochs": 2.5},
        {"epochs": True},
        {"epochs": 0},
        {"batch_size": -1},
        {"seed": 1.0},
        {"arch": [0]},
        {"arch": []},
        {"arch": [8, 2.5]},
        {"arch": [True]},
        {"arch": 300},
        {"slope": "0.01"},
        {"slope": True},
        {"lr": "0.1"},
        {"lr": 0},
        {"lr": -0.1},
        {"lr": float("nan")},
        {"momentum": -0.5},
        {"init_scale": float("inf")},
        {"activation": 3},
    ],
)
def test_wrong_types_and_values_are_rejected(changes):
    with pytest.raises(UserError) as info:
        Recipe.from_dict(changes)
    assert "\n" not in str(info.value)
    name = next(iter(changes))
    assert str(info.value).startswith(name) or f" {name} " in str(info.value)
    with pytest.raises(UserError):
        Recipe().replace(**changes)


def test_ints_are_accepted_where_floats_are_expected():
    recipe = Recipe.from_dict({"slope": 0, "lr": 1, "init_scale": 1})
    assert (recipe.slope, recipe.lr, recipe.init_scale) == (0.0, 1.0, 1.0)
    assert type(recipe.lr) is float


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_unknown_choice_lists_the_valid_ones(name):
    with pytest.raises(UserError) as info:
        Recipe.from_dict({name: "bogus"})
    assert str(info.value) == f"unknown {name} 'bogus'; choose one of: {', '.join(CHOICES[name])}"


def test_recipe_file_errors(tmp_path):
    with pytest.raises(UserError) as info:
        load_recipe(tmp_path / "missing.toml")
    assert str(info.value) == f"recipe file {str(tmp_path / 'missing.toml')!r} does not exist"
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: 3")
    with pytest.raises(UserError, match=r"is not valid json"):
        load_recipe(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(UserError, match="must hold a table of recipe keys"):
        load_recipe(listed)
    with pytest.raises(UserError, match="cannot read recipe file"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seeds_the_generators_refuse_are_a_user_error(seed):
    # numpy's default_rng (the pixel order) refuses negative seeds, torch's manual_seed (the weights)
    # ones of 2**64 and up, each with a ValueError once training starts; the recipe must refuse
    # them up front, as it does every other bad value.
    with pytest.raises(UserError, match="seed"):
        Recipe.from_dict({"seed": seed})


# -- initialisation ---------------------------------------------------------------------------


def sample_std(tensor: torch.Tensor) -> float:
    return tensor.double().pow(2).mean().sqrt().item()  # around the known mean 0


def test_original_init_statistics():
    # 2 -> 2000 -> 3: 6000 weights of each kind, so the std is estimated to about 1%.
    model = build_model(Recipe(arch=(2000,), init="original"))
    first, last = linear_layers(model)
    assert first.weight.shape == (2000, 2) and last.weight.shape == (3, 2000)
    for layer, fan_in in ((first, 2), (last, 2000)):
        expected = 0.3 / math.sqrt(fan_in + 1)  # RECIPE.md
        values = torch.cat([layer.weight.flatten(), layer.bias.flatten()])
        assert sample_std(values) == pytest.approx(expected, rel=0.05)
        assert abs(values.double().mean().item()) < 4 * expected / math.sqrt(values.numel())
    # A Gaussian, not a uniform: about 4.6% of draws beyond 2 std (a uniform of that std has none).
    w = last.weight.flatten() / (0.3 / math.sqrt(2001))
    assert 0.03 < (w.abs() > 2).double().mean().item() < 0.065


def test_init_scale_scales_the_weights():
    base = linear_layers(build_model(Recipe(arch=(16,), init_scale=0.3)))[0].weight
    double = linear_layers(build_model(Recipe(arch=(16,), init_scale=0.6)))[0].weight
    torch.testing.assert_close(double, 2 * base)  # same seed, same draws, twice the std


def test_torch_init_is_bounded_by_fan_in():
    first, last = linear_layers(build_model(Recipe(arch=(2000,), init="torch")))
    for layer, fan_in in ((first, 2), (last, 2000)):
        bound = 1 / math.sqrt(fan_in)
        assert layer.weight.abs().max().item() <= bound
        assert sample_std(layer.weight) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform(-b, b)


@pytest.mark.parametrize("init", CHOICES["init"])
def test_seed_decides_the_weights(init):
    def weights(seed):
        return [p.detach().clone() for p in build_model(Recipe(arch=(8, 8), init=init, seed=seed)).parameters()]

    same_a, same_b, other = weights(3), weights(3), weights(4)
    for a, b in zip(same_a, same_b):
        assert torch.equal(a, b)
    assert not any(torch.equal(a, c) for a, c in zip(same_a, other))


def test_model_shape_activations_and_output():
    recipe = Recipe(arch=(8, 6), activation="tanh", output="sigmoid")
    model = build_model(recipe)
    assert [(m.in_features, m.out_features) for m in linear_layers(model)] == [(2, 8), (8, 6), (6, 3)]
    out = model(torch.rand(5, 2))
    assert out.shape == (5, 3) and out.min() >= 0 and out.max() <= 1
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Sigmoid"]
    leaky = build_model(Recipe(arch=(4,), slope=0.2))
    assert leaky[1].negative_slope == 0.2
    assert type(build_model(Recipe(arch=(4,)))[-1]).__name__ == "Linear"  # linear outputs, as the original
