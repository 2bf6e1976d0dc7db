"""Recipes as data: the presets against docs/original.md's figures, specs, parsing, round trips, validation, initialisation."""

import dataclasses
import json
import math
import tomllib

import pytest
import torch

from monalisa.errors import UserError
from monalisa.models.network import build_model, linear_layers
from monalisa.recipes.recipe import PRESETS, Recipe, get_preset, load_recipe, parse_arch
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.recipes.sizes import format_arch

FIELDS = [f.name for f in dataclasses.fields(Recipe)]

# Recipe field -> the registry that checks its spec.
REGISTRIES = {"activation": ACTIVATIONS, "encoding": ENCODINGS, "init": INITS, "optimizer": OPTIMIZERS,
              "schedule": SCHEDULES, "output": OUTPUTS}


def options(registry, spec):
    return registry.parse(spec).options


# -- presets against docs/original.md ------------------------------------------------------------


def test_original_preset_is_the_post():
    recipe = get_preset("original")
    assert recipe.arch == (300, 300, 300, 300)
    widths = [(layer.in_features, layer.out_features) for layer in linear_layers(build_model(recipe))]
    assert widths == [(2, 300), (300, 300), (300, 300), (300, 300), (300, 3)]
    assert (recipe.activation, recipe.output, recipe.encoding, recipe.residual) == ("leaky_relu", "linear", "none",
                                                                                       False)
    assert options(ACTIVATIONS, recipe.activation).slope == 0.01
    assert recipe.init == "original" and options(INITS, recipe.init).scale == 0.3
    assert (recipe.optimizer, recipe.learning_rate, recipe.batch_size) == ("sgd", 0.1, 1)
    assert options(OPTIMIZERS, recipe.optimizer).fan_in_scaling is True
    assert (recipe.schedule, recipe.encoding_lr, recipe.until_psnr, recipe.time_limit) == ("constant", None, None,
                                                                                          None)
    assert (recipe.order, recipe.epochs) == ("shuffled", 500)
    # docs/original.md: 2*300+300 + 3*(300*300+300) + 300*3+3
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
    rates = get_preset("original").layer_learning_rates([2, 300, 300, 300, 300])
    assert len(rates) == 5
    assert rates[0] == pytest.approx(0.1 / math.sqrt(3), rel=1e-12)
    for rate in rates[1:]:
        assert rate == pytest.approx(0.1 / math.sqrt(301), rel=1e-12)
    narrow = Recipe(arch=(8, 5), lr=0.2).layer_learning_rates([2, 8, 5])
    assert narrow == pytest.approx([0.2 / math.sqrt(3), 0.2 / math.sqrt(9), 0.2 / math.sqrt(6)])
    # The fan-ins are the caller's: an encoding widens the first layer's.
    assert Recipe(lr=0.2).layer_learning_rates([32]) == pytest.approx([0.2 / math.sqrt(33)])


def test_fan_in_scaling_is_an_optimiser_option():
    assert Recipe(optimizer="momentum", lr=0.2).layer_learning_rates([3]) == pytest.approx([0.1])
    assert Recipe(optimizer="sgd:fan_in_scaling=false", lr=0.2).layer_learning_rates([3, 8]) == [0.2, 0.2]
    assert Recipe(optimizer="adam:fan_in_scaling=true", lr=0.2).layer_learning_rates([3]) == pytest.approx([0.1])


def test_default_learning_rates_per_optimiser():
    # The figures the optimisers' comments cite: the original's 0.1, Kingma & Ba's 1e-3, PyTorch's Rprop 0.01.
    assert Recipe(optimizer="sgd").learning_rate == 0.1
    assert Recipe(optimizer="momentum").learning_rate == 0.01
    assert Recipe(optimizer="rprop").learning_rate == 0.01
    assert Recipe(optimizer="adam", arch=(4, 4)).layer_learning_rates([2, 4, 4]) == [1e-3] * 3  # no fan-in scaling
    assert Recipe(optimizer="adam:beta2=0.99", lr=0.05).learning_rate == 0.05


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


# -- specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, spec, canonical",
    [
        ("activation", "leaky_relu:slope=0.01", "leaky_relu"),  # a default option is left out
        ("activation", "leaky_relu:slope=0", "leaky_relu:slope=0.0"),
        ("activation", " sine : omega = 30 ", "sine"),
        ("activation", "sine:first_omega=20,omega=10", "sine:omega=10.0,first_omega=20.0"),  # declaration order
        ("encoding", "hashgrid:table_size=2**10", "hashgrid:table_size=1024"),
        ("encoding", "hashgrid:levels=16,finest=512", "hashgrid"),
        ("optimizer", "momentum:momentum=0.9", "momentum"),
        ("optimizer", "momentum:nesterov=yes", "momentum:nesterov=True"),
        ("optimizer", "sgd:fan_in_scaling=0", "sgd:fan_in_scaling=False"),
        ("init", "original:scale=1", "original:scale=1.0"),
        ("schedule", "cosine:warmup=0.1,", "cosine:warmup=0.1"),
    ],
)
def test_specs_are_stored_in_canonical_form(field, spec, canonical):
    recipe = Recipe.from_dict({field: spec})
    assert getattr(recipe, field) == canonical
    assert REGISTRIES[field].parse(canonical) == REGISTRIES[field].parse(spec)  # the same component and options
    assert Recipe.from_dict({field: canonical}) == recipe


def test_spec_options_reach_the_parsed_options():
    assert options(ACTIVATIONS, "leaky_relu:slope=0.02").slope == 0.02
    assert options(INITS, "original:scale=0.6").scale == 0.6
    assert options(OPTIMIZERS, "momentum:momentum=0.5").momentum == 0.5
    hashgrid = options(ENCODINGS, "hashgrid:levels=4,table_size=2**8,finest=64")
    assert (hashgrid.levels, hashgrid.table_size, hashgrid.finest, hashgrid.base) == (4, 256, 64, 16)
    assert type(options(ACTIVATIONS, "leaky_relu:slope=0").slope) is float
    assert type(hashgrid.levels) is int


# -- round trips ------------------------------------------------------------------------------

EVERYTHING_CHANGED = {
    "arch": [16, 8, 4],
    "activation": ["leaky_relu:slope=0.02", "tanh", "sine:omega=10.0"],
    "output": "sigmoid",
    "encoding": "hashgrid:levels=4",
    "residual": True,
    "init": "original:scale=0.25",
    "optimizer": "momentum:momentum=0.5",
    "lr": 0.005,
    "encoding_lr": 0.05,
    "schedule": "cosine:warmup=0.1",
    "batch_size": 32,
    "order": "scan",
    "epochs": 7,
    "until_psnr": 31.5,
    "time_limit": 60.0,
    "seed": 42,
}


def test_everything_changed_really_changes_every_field():
    assert sorted(EVERYTHING_CHANGED) == sorted(FIELDS)
    default = Recipe().to_dict()
    assert all(EVERYTHING_CHANGED[name] != default[name] for name in FIELDS)


def test_from_dict_sets_every_field():
    recipe = Recipe.from_dict(EVERYTHING_CHANGED)
    assert recipe.arch == (16, 8, 4)  # a tuple, so the recipe stays hashable
    assert recipe.activation == ("leaky_relu:slope=0.02", "tanh", "sine:omega=10.0")  # a tuple too
    hash(recipe)
    for name, value in EVERYTHING_CHANGED.items():
        if name not in ("arch", "activation"):
            assert getattr(recipe, name) == value
    assert Recipe.from_dict({"activation": "tanh"}).activation == "tanh"


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
    partial.write_text('arch = "2x8"\nepochs = 3\nactivation = ["tanh", "sine:omega=3"]\n')
    # missing keys take the defaults
    assert load_recipe(partial) == Recipe(arch=(8, 8), epochs=3, activation=("tanh", "sine:omega=3"))


@pytest.mark.parametrize("name", ["lr", "encoding_lr", "until_psnr", "time_limit"])
def test_unset_optional_numbers_round_trip_as_unset(tmp_path, name):
    recipe = Recipe(arch=(4,))
    assert getattr(Recipe.from_dict(json.loads(recipe.to_json())), name) is None
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    assert name not in tomllib.loads(recipe.to_toml())  # TOML has no null
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


@pytest.mark.parametrize("old", ["slope", "init_scale", "momentum"])
def test_the_old_fields_are_unknown_keys(old):
    # They moved into the specs (leaky_relu:slope=..., original:scale=..., momentum:momentum=...).
    with pytest.raises(UserError, match=rf"^unknown recipe key '{old}'; valid keys: "):
        Recipe.from_dict({old: 0.5})


@pytest.mark.parametrize(
    "changes, word",
    [
        ({"epochs": "5"}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"seed": 1.0}, "seed"),
        ({"arch": [0]}, "arch"),
        ({"arch": []}, "arch"),
        ({"arch": [8, 2.5]}, "arch"),
        ({"arch": [True]}, "arch"),
        ({"arch": 300}, "arch"),
        ({"residual": 1}, "residual"),
        ({"residual": "yes"}, "residual"),
        ({"lr": "0.1"}, "lr"),
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"encoding_lr": 0}, "encoding_lr"),
        ({"until_psnr": -30}, "until_psnr"),
        ({"until_psnr": True}, "until_psnr"),
        ({"time_limit": float("inf")}, "time_limit"),
        ({"activation": 3}, "activation"),
        ({"activation": []}, "activation"),
        ({"activation": ["tanh", 3]}, "activation"),
        ({"activation": ""}, "activation"),
        ({"encoding": 3}, "encoding"),
        ({"schedule": ""}, "schedule"),
        ({"order": 1}, "order"),
        # the old slope / init_scale / momentum checks, now options of a spec
        ({"activation": "leaky_relu:slope=abc"}, "slope"),
        ({"activation": "leaky_relu:slope=true"}, "slope"),
        ({"activation": "leaky_relu:slope"}, "slope"),  # no value
        ({"optimizer": "momentum:momentum=x"}, "momentum"),
        ({"optimizer": "momentum:nesterov=maybe"}, "nesterov"),
        ({"encoding": "hashgrid:levels=abc"}, "levels"),
        ({"encoding": "hashgrid:levels=2.5"}, "levels"),
        ({"encoding": "hashgrid:table_size=2**x"}, "table_size"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else None,
)
def test_wrong_types_and_values_are_rejected(changes, word):
    check_rejected(changes, word)


def check_rejected(changes, word):
    with pytest.raises(UserError) as info:
        Recipe.from_dict(changes)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(word) or f" {word} " in message or f"{word}=" in message or f"'{word}'" in message
    with pytest.raises(UserError):
        Recipe().replace(**changes)


@pytest.mark.parametrize(
    "changes, word",
    [
        # Values of the right type that the component cannot use. Each of these is accepted by the
        # recipe today and fails later: a ValueError traceback from torch.optim (momentum, beta1), a
        # ZeroDivisionError (every=0), a complex-number RuntimeError (final=-1), or a "diverged" run
        # (scale=inf) -- where the old recipe rejected momentum < 0 and init_scale = inf up front.
        ({"init": "original:scale=inf"}, "scale"),
        ({"init": "original:scale=-0.3"}, "scale"),
        ({"optimizer": "momentum:momentum=-0.5"}, "momentum"),
        ({"optimizer": "adam:beta1=2"}, "beta1"),
        ({"schedule": "step:every=0"}, "every"),
        ({"schedule": "exponential:final=-1"}, "final"),
        ({"activation": "sine:omega=nan"}, "omega"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else None,
)
def test_option_values_out_of_range_are_rejected(changes, word):
    check_rejected(changes, word)


def test_ints_are_accepted_where_floats_are_expected():
    recipe = Recipe.from_dict({"activation": "leaky_relu:slope=0", "lr": 1, "init": "original:scale=1",
                               "until_psnr": 30, "time_limit": 5, "encoding_lr": 2})
    assert options(ACTIVATIONS, recipe.activation).slope == 0.0
    assert options(INITS, recipe.init).scale == 1.0
    assert (recipe.lr, recipe.until_psnr, recipe.time_limit, recipe.encoding_lr) == (1.0, 30.0, 5.0, 2.0)
    assert all(type(v) is float for v in (recipe.lr, recipe.until_psnr, recipe.time_limit, recipe.encoding_lr))


@pytest.mark.parametrize("field", sorted(REGISTRIES))
@pytest.mark.parametrize("spec", ["bogus", "bogus:x=1"])
def test_unknown_component_lists_the_valid_ones(field, spec):
    registry = REGISTRIES[field]
    with pytest.raises(UserError) as info:
        Recipe.from_dict({field: spec})
    assert str(info.value) == f"unknown {field} 'bogus'; choose one of: {', '.join(registry.names())}"
    assert len(registry.names()) >= 3  # there is something to choose from


def test_the_registries_hold_the_documented_components():
    # components.py and encodings.py docstrings; a component can be added, none silently dropped.
    assert {"leaky_relu", "relu", "tanh", "sigmoid", "gelu", "silu", "sine"} <= set(ACTIVATIONS.names())
    assert {"none", "positional", "fourier", "hashgrid"} <= set(ENCODINGS.names())
    assert {"original", "torch", "siren"} <= set(INITS.names())
    assert {"sgd", "momentum", "adam", "rprop"} <= set(OPTIMIZERS.names())
    assert {"constant", "step", "exponential", "cosine"} <= set(SCHEDULES.names())
    assert {"linear", "sigmoid", "clamp"} <= set(OUTPUTS.names())


def test_unknown_order_lists_the_valid_ones():
    with pytest.raises(UserError) as info:
        Recipe.from_dict({"order": "bogus"})
    assert str(info.value) == "unknown order 'bogus'; choose one of: shuffled, scan"


def test_unknown_activation_in_a_per_layer_list():
    with pytest.raises(UserError) as info:
        Recipe(arch=(8, 8), activation=("tanh", "bogus"))
    assert str(info.value) == f"unknown activation 'bogus'; choose one of: {', '.join(ACTIVATIONS.names())}"


@pytest.mark.parametrize(
    "field, spec, message",
    [
        ("activation", "sine:omegaa=3",
         "unknown option 'omegaa' for activation 'sine'; valid options: omega, first_omega"),
        ("activation", "relu:slope=0.1", "unknown option 'slope' for activation 'relu'; valid options: none"),
        ("encoding", "hashgrid:level=4", "unknown option 'level' for encoding 'hashgrid'; "
                                         "valid options: levels, features, table_size, base, finest"),
        ("optimizer", "adam:momentum=0.9", "unknown option 'momentum' for optimizer 'adam'; "
                                           "valid options: beta1, beta2, eps, fan_in_scaling"),
        ("init", "original:std=1", "unknown option 'std' for init 'original'; valid options: scale"),
        ("schedule", "cosine:min=0.1", "unknown option 'min' for schedule 'cosine'; valid options: final, warmup"),
    ],
)
def test_unknown_option_names_the_valid_options(field, spec, message):
    with pytest.raises(UserError) as info:
        Recipe.from_dict({field: spec})
    assert str(info.value) == message


@pytest.mark.parametrize("field", sorted(REGISTRIES))
def test_every_component_refuses_an_unknown_option(field):
    registry = REGISTRIES[field]
    for name in registry.names():
        valid = [f.name for f in dataclasses.fields(registry.entry(name).options)]
        with pytest.raises(UserError) as info:
            registry.parse(f"{name}:no_such_option=1")
        assert str(info.value) == (f"unknown option 'no_such_option' for {field} {name!r}; "
                                   f"valid options: {', '.join(valid) or 'none'}")


@pytest.mark.parametrize("spec", ["hashgrid:levels=abc", "hashgrid:levels=", "hashgrid:finest=1e3"])
def test_wrongly_typed_option_is_a_user_error(spec):
    with pytest.raises(UserError) as info:
        Recipe(encoding=spec)
    message = str(info.value)
    key = spec.split(":")[1].split("=")[0]
    assert "\n" not in message
    assert key in message and spec in message and "whole number" in message  # which option, where, and its type


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
    option = tmp_path / "option.toml"
    option.write_text('activation = "sine:omegaa=3"\n')
    with pytest.raises(UserError, match="^unknown option 'omegaa' for activation 'sine'"):
        load_recipe(option)


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
        expected = 0.3 / math.sqrt(fan_in + 1)  # docs/original.md
        values = torch.cat([layer.weight.flatten(), layer.bias.flatten()])
        assert sample_std(values) == pytest.approx(expected, rel=0.05)
        assert abs(values.double().mean().item()) < 4 * expected / math.sqrt(values.numel())
    # A Gaussian, not a uniform: about 4.6% of draws beyond 2 std (a uniform of that std has none).
    w = last.weight.flatten() / (0.3 / math.sqrt(2001))
    assert 0.03 < (w.abs() > 2).double().mean().item() < 0.065


def test_init_scale_scales_the_weights():
    base = linear_layers(build_model(Recipe(arch=(16,), init="original:scale=0.3")))[0].weight
    double = linear_layers(build_model(Recipe(arch=(16,), init="original:scale=0.6")))[0].weight
    torch.testing.assert_close(double, 2 * base)  # same seed, same draws, twice the std
    default = linear_layers(build_model(Recipe(arch=(16,))))[0].weight
    assert torch.equal(default, base)  # 0.3 is the default scale


def test_torch_init_is_bounded_by_fan_in():
    first, last = linear_layers(build_model(Recipe(arch=(2000,), init="torch")))
    for layer, fan_in in ((first, 2), (last, 2000)):
        bound = 1 / math.sqrt(fan_in)
        assert layer.weight.abs().max().item() <= bound
        assert sample_std(layer.weight) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform(-b, b)


@pytest.mark.parametrize("init", INITS.names())
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
    layers = linear_layers(model)
    assert [(m.in_features, m.out_features) for m in layers] == [(2, 8), (8, 6), (6, 3)]
    x = torch.rand(5, 2)
    out = model(x)
    assert out.shape == (5, 3) and out.min() >= 0 and out.max() <= 1
    assert [type(m).__name__ for m in model.activations] == ["Tanh", "Tanh"]
    # The forward pass written out: Linear, tanh, Linear, tanh, Linear, sigmoid.
    h = x
    for layer in layers[:-1]:
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    torch.testing.assert_close(out, torch.sigmoid(h @ layers[-1].weight.T + layers[-1].bias))
    leaky = build_model(Recipe(arch=(4,), activation="leaky_relu:slope=0.2"))
    assert leaky.activations[0].negative_slope == 0.2
    assert build_model(Recipe(arch=(4,))).activations[0].negative_slope == 0.01  # docs/original.md's slope
    identity = build_model(Recipe(arch=(4,)))  # linear outputs, as the original
    x = torch.tensor([[-50.0, 80.0]])  # far enough out that any squashing would show
    last = linear_layers(identity)[-1]
    hidden = torch.nn.functional.leaky_relu(x @ linear_layers(identity)[0].weight.T + linear_layers(identity)[0].bias,
                                            0.01)
    torch.testing.assert_close(identity(x), hidden @ last.weight.T + last.bias)


# -- per-layer activations and presets ------------------------------------------------------------


@pytest.mark.parametrize("activation", [("tanh", "relu"), ("tanh",) * 4, ()])
def test_wrong_number_of_activations(activation):
    with pytest.raises(UserError) as info:
        Recipe.from_dict({"arch": [8, 8, 8], "activation": list(activation)})
    assert "\n" not in str(info.value)
    if activation:
        assert str(info.value).startswith(f"{len(activation)} activations given for 3 hidden layers")


def test_equal_activations_collapse_to_one():
    assert Recipe(arch=(8, 8, 8), activation=("tanh", "tanh", "tanh")).activation == "tanh"
    assert Recipe(arch=(8, 8), activation=["sine:omega=30", "sine"]).activation == "sine"  # equal once canonical
    assert Recipe(arch=(8, 8), activation=["relu"]).activation == "relu"
    assert Recipe(arch=(8, 8), activation=("tanh", "tanh")) == Recipe(arch=(8, 8), activation="tanh")
    assert Recipe(arch=(8, 8), activation=("tanh", "relu")).activation == ("tanh", "relu")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_round_trips(name, tmp_path):
    recipe = PRESETS[name]
    assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    assert Recipe.from_dict(tomllib.loads(recipe.to_toml())) == recipe
    path = tmp_path / f"{name}.toml"
    path.write_text(recipe.to_toml())
    assert load_recipe(path) == recipe
    path = tmp_path / f"{name}.json"
    path.write_text(recipe.to_json())
    assert load_recipe(path) == recipe


def test_presets_match_their_sources():
    # Only the figures each preset's comment takes from its source; widths, rates and batches are tuned here.
    siren = PRESETS["siren"]  # Sitzmann et al. 2020: sine units with omega_0 = 30 first and hidden, their init
    sine = ACTIVATIONS.parse(siren.activation)
    assert (sine.name, sine.options.omega, sine.options.first_omega) == ("sine", 30.0, 30.0)
    assert INITS.parse(siren.init) == INITS.parse("siren:omega=30")  # the init's omega matches the units'
    assert OPTIMIZERS.parse(siren.optimizer).name == "adam"
    fourier = PRESETS["fourier"]  # Tancik et al. 2020: 256 Gaussian features, sigma 10, ReLU layers of 256, Adam
    assert ENCODINGS.parse(fourier.encoding) == ENCODINGS.parse("fourier:features=256,sigma=10")
    assert (fourier.activation, set(fourier.arch), OPTIMIZERS.parse(fourier.optimizer).name) == ("relu", {256}, "adam")
    hashgrid = PRESETS["hashgrid"]  # Mueller et al. 2022, Table 1, and instant-ngp's Adam settings
    grid = ENCODINGS.parse(hashgrid.encoding)
    assert grid.name == "hashgrid"
    assert (grid.options.levels, grid.options.features, grid.options.table_size, grid.options.base,
            grid.options.finest) == (16, 2, 2**14, 16, 512)
    adam = OPTIMIZERS.parse(hashgrid.optimizer)
    assert (adam.name, adam.options.beta2, adam.options.eps, hashgrid.learning_rate) == ("adam", 0.99, 1e-15, 1e-2)
    assert (hashgrid.arch, hashgrid.activation) == ((64, 64), "relu")
    fast = PRESETS["fast"]  # a hash grid that stays under the original network's parameter budget
    assert ENCODINGS.parse(fast.encoding).name == "hashgrid"
    assert fast.parameter_count() < PRESETS["original"].parameter_count()
    rprop = PRESETS["rprop-sigmoid"]  # docs/original.md's failing set-up: RPROP, 3x300 ReLU, sigmoid outputs
    assert (rprop.optimizer, rprop.arch, rprop.activation, rprop.output) == ("rprop", (300,) * 3, "relu", "sigmoid")
    assert rprop.batch_size >= 300 * 429  # full batch: the whole image in one step



def test_the_largest_seed_the_generators_take_is_a_recipe():
    # The reference: numpy's default_rng and torch's manual_seed both take 2**64 - 1 (and torch
    # nothing above it, which the test above refuses).
    top = 2**64 - 1
    np_rng = __import__("numpy").random.default_rng(top)
    torch.Generator().manual_seed(top)
    recipe = Recipe.from_dict({"seed": top, "arch": [4]})
    assert recipe.seed == top and Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    weights = [p.detach().clone() for p in build_model(recipe).parameters()]
    again = [p.detach() for p in build_model(recipe).parameters()]
    other = [p.detach() for p in build_model(recipe.replace(seed=0)).parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights, again))
    assert not all(torch.equal(a, b) for a, b in zip(weights, other))
    assert np_rng.permutation(10).tolist() != list(range(10))


# -- what a message shows of the value it refuses --------------------------------------------------


LONG = "x" * 60_000  # a pasted file where a name belongs


@pytest.mark.parametrize("changes", [
    {"activation": LONG},
    {"activation": [LONG]},
    {"encoding": "hashgrid:" + LONG},
    {"encoding": "hashgrid:levels=" + "9" * 60_000},
    {"optimizer": "adam:" + LONG + "=1"},
    {"arch": LONG},
    {"arch": "1," * 500 + "x"},
    {LONG: 1},
    {"order": LONG},
    {"epochs": LONG},
])
def test_a_huge_value_is_quoted_as_a_short_prefix(changes):
    with pytest.raises(UserError) as info:
        Recipe().replace(**changes)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, message[:600]
    assert "characters)" in message  # says the value was cut, and how long it was


def test_an_unknown_preset_quotes_a_short_prefix():
    with pytest.raises(UserError) as info:
        get_preset(LONG)
    assert str(info.value) == f"unknown preset {'x' * 60!r}... (60,000 characters); choose one of: {', '.join(PRESETS)}"


@pytest.mark.parametrize("call, message", [
    # Cyrillic 'е' (U+0435) for the Latin 'e'; Ukrainian 'і' (U+0456) for 'i'; Greek 'ο' (U+03BF) for 'o'.
    (lambda: Recipe(activation="l\u0435aky_relu"),
     "unknown activation 'lеaky_relu': it has a non-ASCII character 'е' (U+0435 CYRILLIC SMALL LETTER IE) at "
     f"position 2; did you mean 'leaky_relu'? Choose one of: {', '.join(ACTIVATIONS.names())}"),
    (lambda: Recipe(encoding="hashgr\u0456d:levels=4"),
     "unknown encoding 'hashgrіd': it has a non-ASCII character 'і' (U+0456 CYRILLIC SMALL LETTER "
     f"BYELORUSSIAN-UKRAINIAN I) at position 7; did you mean 'hashgrid'? Choose one of: {', '.join(ENCODINGS.names())}"),
    (lambda: Recipe().replace(**{"epοchs": 3}),
     "unknown recipe key 'epοchs': it has a non-ASCII character 'ο' (U+03BF GREEK SMALL LETTER OMICRON) at "
     f"position 3; did you mean 'epochs'? Valid keys: {', '.join(FIELDS)}"),
    (lambda: get_preset("qu\u0456ck"),
     "unknown preset 'quіck': it has a non-ASCII character 'і' (U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN "
     f"I) at position 3; did you mean 'quick'? Choose one of: {', '.join(PRESETS)}"),
    # An invisible character: shown escaped, so the user can see it at all.
    (lambda: Recipe(activation="relu\u200b"),
     "unknown activation 'relu\\u200b': it has a non-ASCII character '\\u200b' (U+200B ZERO WIDTH SPACE) at "
     f"position 5; did you mean 'relu'? Choose one of: {', '.join(ACTIVATIONS.names())}"),
    # Nothing close: no guess, the choices only.
    (lambda: Recipe(activation="\u0436\u0436\u0436"),
     "unknown activation 'жжж': it has a non-ASCII character 'ж' (U+0436 CYRILLIC SMALL LETTER ZHE) at position 1; "
     f"choose one of: {', '.join(ACTIVATIONS.names())}"),
])
def test_a_look_alike_letter_is_named(call, message):
    with pytest.raises(UserError) as info:
        call()
    assert str(info.value) == message


def test_json_recipes_refuse_a_key_given_twice_as_toml_does(tmp_path):
    toml = tmp_path / "twice.toml"
    toml.write_text("epochs = 3\nepochs = 5\n")
    with pytest.raises(UserError, match="not valid toml"):  # the reference: TOML itself refuses it
        load_recipe(toml)
    path = tmp_path / "twice.json"
    path.write_text('{"epochs": 3, "lr": 0.1, "epochs": 5}')
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == f"recipe file {str(path)!r}: the key 'epochs' is given twice; give each key once"
    path.write_text('{"epochs": 3, "lr": 0.1}')  # the same keys once each still read
    assert load_recipe(path) == Recipe(epochs=3, lr=0.1)
