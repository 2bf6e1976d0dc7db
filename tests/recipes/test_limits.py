"""limits.py: every attack on a limit gets one line, before anything is allocated.

The attacks that used to hang or allocate gigabytes run in one child process capped at
CHILD_MEMORY of address space and CHILD_TIMEOUT seconds, so a regression fails fast (a
MemoryError traceback or a timeout) instead of taking the machine; the rest run in-process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from monalisa.cli import main
from monalisa.data.images import Target, resize
from monalisa.errors import UserError
from monalisa.lab import forms
from monalisa.lab.store import LabError
from monalisa.models.network import build_model
from monalisa.recipes import limits
from monalisa.recipes.encodings import build_encoding
from monalisa.recipes.recipe import PRESETS, Recipe, load_recipe, parse_arch
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.recipes.sizes import encoding_size, recipe_parameters
from monalisa.training.trainer import Trainer

CHILD_MEMORY = 3 * 2**30  # torch and the lab import in ~1 GB; every attack asked for 8 GB or more
CHILD_TIMEOUT = 240


def run_bounded(code: str, data, cwd=None) -> str:
    """Run ``code`` in a child capped in memory and time, ``data`` as JSON on its stdin; its stdout."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(data), capture_output=True, text=True,
                          cwd=cwd, preexec_fn=cap, timeout=CHILD_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# -- the command line, in one bounded child ---------------------------------------------------

# Each attack: the arguments after `train tiny.png --epochs 1 --quiet --out OUT`, and words its line must hold.
TRAIN_ATTACKS = {
    "table_size 9**999999999": (["--encoding", "hashgrid:table_size=9**999999999"], "power of two"),
    "table_size 99**99999": (["--encoding", "hashgrid:table_size=99**99999"], "power of two"),
    "table_size 2**-1": (["--encoding", "hashgrid:table_size=2**-1"], "2**K"),
    "eta_plus 1e308": (["--optimizer", "rprop:eta_plus=1e308"], "eta_plus must be at most"),
    "a repeated option": (["--activation", "sine:omega=30,omega=20"], "given twice"),
    "true or false": (["--encoding", "positional:include_input=maybe"], "must be true or false"),
    "arch 1x1000000000": (["--arch", "1x1000000000"], "parameters"),
    "arch 1000x100000": (["--arch", "1000x100000"], "parameters"),
    "arch 1000000x1": (["--arch", "1000000x1"], "at most 1,000"),
    "arch overflowing": (["--arch", "99999999999999999999x1"], "digits"),
    "size 100000x100000": (["--size", "100000x100000"], "pixels"),
    "scale 1e6": (["--scale", "1e6"], "pixels"),
    "fourier 10**9": (["--encoding", "fourier:features=10**9"], "whole number"),
    "fourier 1000000000": (["--encoding", "fourier:features=1000000000"], "floats a pixel"),
    "hashgrid features 1e8": (["--encoding", "hashgrid:features=1e8"], "whole number"),
    "hashgrid finest": (["--encoding", "hashgrid:finest=100000,table_size=2**27"], "table entries"),
    "lr 1e308": (["--lr", "1e308"], "lr must be at most"),
    "recipe 20 million layers": (["--recipe", "layers.json"], "KB"),
    "recipe nested json": (["--recipe", "deep.json"], "nested too deeply"),
    "recipe nested toml": (["--recipe", "deep.toml"], "nested too deeply"),
    "recipe huge integer": (["--recipe", "huge.json"], "not a readable recipe"),
}
MEMORY_ATTACKS = ("arch 1x1000000000", "arch 1000x100000", "size 100000x100000", "scale 1e6", "fourier 1000000000",
                  "hashgrid finest")
ANIMATE_ATTACKS = {
    "width 100000": (["--out", "a.gif", "--width", "100000"], "--width must be"),
    "fps 0.0001": (["--out", "a.gif", "--fps", "0.0001"], "--fps must be"),
    "fps 1e9 mp4": (["--out", "x.mp4", "--fps", "1e9"], "--fps must be"),
    "max-frames": (["--out", "a.gif", "--max-frames", "100000000"], "--max-frames must be"),
}

CHILD = """
import contextlib, io, json, sys, time
from monalisa.cli import main
results = {}
for name, argv in json.load(sys.stdin).items():
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    results[name] = [rc, err.getvalue(), time.monotonic() - start]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_answers(tmp_path_factory):
    """Every CLI attack's (exit status, stderr, seconds), from one capped child."""
    d = tmp_path_factory.mktemp("attacks")
    Image.new("RGB", (8, 6), (200, 30, 60)).save(d / "tiny.png")
    (d / "layers.json").write_text('{"arch": [' + ",".join(["1"] * 20_000_000) + "]}")
    (d / "deep.json").write_text('{"arch": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (d / "deep.toml").write_text("arch = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (d / "huge.json").write_text('{"arch": [' + "9" * 5000 + "]}")
    assert main(["train", str(d / "tiny.png"), "--arch", "2x4", "--epochs", "2", "--quiet", "--out", str(d / "run")]) == 0
    argvs = {name: ["train", "tiny.png", "--epochs", "1", "--quiet", "--out", "out", *args]
             for name, (args, _) in TRAIN_ATTACKS.items()}
    argvs |= {name: ["animate", "run", *args] for name, (args, _) in ANIMATE_ATTACKS.items()}
    answers = json.loads(run_bounded(CHILD, argvs, cwd=d))
    answers["_dir"] = d
    return answers


@pytest.mark.parametrize("name", [*TRAIN_ATTACKS, *ANIMATE_ATTACKS])
def test_each_cli_attack_gets_one_line_and_exit_2(cli_answers, name):
    rc, stderr, seconds = cli_answers[name]
    words = {**TRAIN_ATTACKS, **ANIMATE_ATTACKS}[name][1]
    assert rc == 2, stderr
    assert stderr.startswith("monalisa: error: ") and stderr.count("\n") == 1, stderr
    assert words in stderr
    if name in MEMORY_ATTACKS:  # a big machine may go beyond these: the line says how
        assert "--allow-large" in stderr
    assert seconds < 20, f"{name} took {seconds:.1f} s"  # refused by checking, not by trying
    assert not (cli_answers["_dir"] / "out").exists()  # nothing was written


def test_the_mp4_attack_leaves_no_temporary(cli_answers):
    assert not list(cli_answers["_dir"].glob(".x.mp4*")) and not (cli_answers["_dir"] / "x.mp4").exists()


def test_allow_large_lifts_a_memory_limit_for_the_command_only(tmp_path, capsys):
    Image.new("RGB", (3, 2), (200, 30, 60)).save(tmp_path / "tiny.png")
    argv = ["train", str(tmp_path / "tiny.png"), "--arch", "1x120000", "--epochs", "1", "--quiet",
            "--init", "torch", "--out"]
    assert main([*argv, str(tmp_path / "refused")]) == 2
    assert "120,000 hidden units" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "allowed"), "--allow-large"]) == 0  # 1x120000: 0.8M parameters, fine here
    assert (tmp_path / "allowed" / "final.png").exists()
    assert not limits.large_allowed()  # the flag ended with the command


@pytest.mark.parametrize("argv", [["compare", "--allow-large"], ["study", "depth", "--allow-large"],
                                  ["serve", "--allow-large"], ["train", "--allow-large"]])
def test_allow_large_is_a_flag_of_the_commands_that_train(argv):
    from monalisa.cli import build_parser

    assert build_parser().parse_args(argv).allow_large is True


# -- option values ----------------------------------------------------------------------------

REGISTRIES = {"activation": ACTIVATIONS, "encoding": ENCODINGS, "init": INITS, "optimizer": OPTIMIZERS,
              "schedule": SCHEDULES, "output": OUTPUTS}
EXTREMES = ("0", "-1", "1e308", "-1e308", "1e-308", "2**40", "nan", "inf", "9" * 30)
OPTIONS = [(field, name, option.name) for field, registry in REGISTRIES.items() for name in registry.names()
           for option in dataclasses.fields(registry.entry(name).options)]

FUZZ = """
import dataclasses, json, sys, warnings
import numpy as np
from monalisa.errors import Diverged, UserError
from monalisa.data.images import Target
from monalisa.recipes.recipe import Recipe
from monalisa.training.trainer import Trainer
warnings.simplefilter("error")  # a numpy overflow warning is a failure too
target = Target("t", np.random.default_rng(0).random((6, 5, 3), dtype=np.float32))
results = {}
for field, spec in json.load(sys.stdin):
    try:
        recipe = Recipe(arch=(4, 4), batch_size=8, epochs=2, **{field: spec})
        Trainer(target, recipe, device="cpu", engine="batched").fit([])
        results[spec] = "trained"
    except UserError as exc:
        results[spec] = "refused: " + str(exc)
    except Diverged:
        results[spec] = "diverged"
    except BaseException as exc:
        results[spec] = f"CRASH {type(exc).__name__}: {exc}"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def fuzzed():
    cases = [(field, f"{name}:{option}={value}") for field, name, option in OPTIONS for value in EXTREMES]
    return json.loads(run_bounded(FUZZ, cases))


@pytest.mark.parametrize("field,name,option", OPTIONS, ids=[f"{n}:{o}" for _, n, o in OPTIONS])
def test_every_option_at_extreme_values_trains_diverges_or_is_refused_in_one_line(fuzzed, field, name, option):
    """Every registered component's every option: a valid recipe whose training is safe (it trains,
    or diverges with the usual message), or a one-line UserError. Never a traceback."""
    for value in EXTREMES:
        outcome = fuzzed[f"{name}:{option}={value}"]
        assert outcome in ("trained", "diverged") or outcome.startswith("refused: "), f"{value}: {outcome}"
        assert "\n" not in outcome
        if value in ("nan", "inf"):  # never a valid value of any option
            assert outcome.startswith("refused: "), f"{value}: {outcome}"


@pytest.mark.parametrize("text", ["9**999999999", "99**99999", "3**2", "2**41", "2**-1", "1" * 19, "1e8", "0x10",
                                  "2**(40)", " 2 ** 99999999999999999999"])
def test_whole_number_options_refuse_arithmetic_before_computing(text):
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        ENCODINGS.parse(f"hashgrid:table_size={text}")
    assert time.monotonic() - start < 0.1
    assert "\n" not in str(caught.value) and "table_size" in str(caught.value)


def test_whole_number_options_take_literals_and_powers_of_two():
    assert ENCODINGS.parse("hashgrid:table_size=2**14").options.table_size == 16384
    assert ENCODINGS.parse("hashgrid:table_size=2 ** 0").options.table_size == 1
    assert ENCODINGS.parse("hashgrid:table_size=16384").options.table_size == 16384
    with pytest.raises(UserError, match="from 0 to 40"):
        ENCODINGS.parse("hashgrid:table_size=2**-1")  # was silently 0.5


def test_a_repeated_option_is_an_error_not_last_wins():
    with pytest.raises(UserError, match="'omega' is given twice"):
        ACTIVATIONS.parse("sine:omega=30,omega=20")


def test_a_bool_option_message_reads_right():
    with pytest.raises(UserError, match=r"must be true or false$"):
        ENCODINGS.parse("positional:include_input=maybe")
    with pytest.raises(UserError, match=r"^residual must be true or false, got 'yes'$"):
        Recipe.from_dict({"residual": "yes"})


# -- one parameter counter --------------------------------------------------------------------

ENCODING_SPECS = ["none", "positional", "positional:octaves=3,include_input=false", "fourier",
                  "fourier:features=7", "hashgrid", "hashgrid:levels=12,base=8", "hashgrid:levels=1",
                  "hashgrid:levels=4,features=3,table_size=2**8,base=2,finest=64", "hashgrid:table_size=2**20"]


@pytest.mark.parametrize("spec", ENCODING_SPECS)
def test_encoding_size_by_arithmetic_matches_the_built_module(spec):
    module = build_encoding(spec, 2, torch.Generator().manual_seed(0))
    built = (module.out_features, sum(p.numel() for p in module.parameters() if p.requires_grad))
    assert encoding_size(spec) == built


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_count_by_arithmetic_matches_the_built_model_of_every_preset(preset):
    recipe = PRESETS[preset]
    built = sum(p.numel() for p in build_model(recipe).parameters())
    assert recipe.parameter_count() == recipe_parameters(recipe) == built
    assert limits.check_recipe(recipe).parameters == built


def test_a_user_encoding_without_a_size_hook_is_built_to_be_measured(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class WideOptions:
        width: int = 5

    monkeypatch.setattr(ENCODINGS, "_entries", dict(ENCODINGS._entries))  # unregistered after the test
    ENCODINGS.register("wide", WideOptions)(lambda options, in_features, generator:
                                            torch.nn.Linear(in_features, options.width))
    assert encoding_size("wide:width=7") == (7, 2 * 7 + 7)
    recipe = Recipe(arch=(4,), encoding="wide:width=7")
    assert recipe.parameter_count() == sum(p.numel() for p in build_model(recipe).parameters())
    # the other limits come first: an arch over them is refused before the user's encoding is built
    built = []
    ENCODINGS.register("spy", WideOptions)(lambda *args: built.append(1) or torch.nn.Linear(2, 5))
    with pytest.raises(limits.LimitError):
        limits.check_recipe(Recipe(arch=(200_000,), encoding="spy"))
    assert not built


# -- recipes ----------------------------------------------------------------------------------


def test_parse_arch_bounds_depth_and_digits_before_making_the_tuple():
    start = time.monotonic()
    for text in ("1000000000x1", "1001x1", ",".join(["1"] * 1001), "1x" + "9" * 13, "9" * 5000 + "x1"):
        with pytest.raises(UserError):
            parse_arch(text)
    assert time.monotonic() - start < 0.5
    assert parse_arch("1000x1") == (1,) * 1000 and parse_arch("1x999999999999") == (999999999999,)


def test_a_recipe_arch_list_is_bounded_by_length_first():
    start = time.monotonic()
    long = [1] * 2_000_000
    for attempt in (lambda: Recipe.from_dict({"arch": long}), lambda: Recipe(arch=long)):
        with pytest.raises(UserError, match="at most 1,000"):
            attempt()
    assert time.monotonic() - start < 0.5


def test_load_recipe_refuses_deep_nesting_in_one_line(tmp_path):
    for suffix, text in ((".json", '{"arch": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                         (".toml", "arch = " + "[" * 100_000 + "]" * 100_000)):
        path = tmp_path / f"deep{suffix}"
        path.write_text(text)
        with pytest.raises(UserError, match="nested too deeply") as caught:
            load_recipe(path)
        assert "\n" not in str(caught.value)


def test_lr_is_bounded():
    with pytest.raises(UserError, match="at most 100"):
        Recipe(lr=1e308)
    with pytest.raises(UserError, match="at most 100"):
        Recipe(encoding_lr=101.0)
    assert Recipe(lr=50.0).lr == 50.0


# -- the check --------------------------------------------------------------------------------


def test_check_recipe_builds_nothing(monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("built")

    monkeypatch.setattr(torch.nn.Linear, "__init__", no_building)
    for recipe in PRESETS.values():
        limits.check_recipe(recipe, pixels=512 * 512)
    with pytest.raises(limits.LimitError, match="table entries") as caught:
        limits.check_recipe(Recipe(encoding="hashgrid:finest=100000,table_size=2**27"))
    assert caught.value.field == "encoding"


def test_trainer_checks_the_training_image_before_building(monkeypatch):
    monkeypatch.setattr(limits, "MAX_PIXELS", 20)
    with pytest.raises(limits.LimitError, match="30 pixels") as caught:
        Trainer(Target("t", np.zeros((5, 6, 3), np.float32)), Recipe(arch=(4,)), device="cpu")
    assert caught.value.field == "size"
    with limits.allowing_large():
        Trainer(Target("t", np.zeros((5, 6, 3), np.float32)), Recipe(arch=(4,)), device="cpu")


def test_resize_checks_the_output_before_resizing():
    pixels = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(limits.LimitError, match="pixels"):
        resize(pixels, size=(100_000, 100_000))
    with pytest.raises(UserError):
        resize(pixels, scale=1e308)  # the size itself overflows a float


# -- the lab ----------------------------------------------------------------------------------


LAB_CHILD = """
import json, sys, time
from monalisa.lab import forms
from monalisa.lab.jobs import Lab
from monalisa.lab.store import LabError
from monalisa.errors import UserError
results = {}
data = json.load(sys.stdin)
for name, text in data["texts"].items():
    start = time.monotonic()
    try:
        forms.build_recipe("quick", text)
        results[name] = ["accepted", None]
    except LabError as exc:
        results[name] = [str(exc), exc.field]
    results[name].append(time.monotonic() - start)
lab = Lab(data["root"], jobs=1)
try:
    lab.create_run("astronaut", "100000x100000", "quick", 'arch = "2x8"')
    results["size"] = ["accepted", None]
except (LabError, UserError) as exc:
    results["size"] = [str(exc), getattr(exc, "field", None)]
finally:
    lab.close()
print(json.dumps(results))
"""
LAB_ATTACKS = {
    "table_size": ('encoding = "hashgrid:table_size=9**999999999"', "encoding", "power of two"),
    "finest": ('encoding = "hashgrid:finest=100000,table_size=2**27"', "encoding", "table entries"),
    "arch": ('arch = "1x1000000000"', "arch", "parameters"),
    "layers": ('arch = "1000000x1"', "arch", "at most 1,000"),
    "nested": ("arch = " + "[" * 100_000 + "]" * 100_000, "recipe_text", "nested too deeply"),
}


def test_the_lab_refuses_each_attack_with_its_field(tmp_path):
    texts = {name: text for name, (text, _, _) in LAB_ATTACKS.items()}
    answers = json.loads(run_bounded(LAB_CHILD, {"texts": texts, "root": str(tmp_path / "runs")}))
    for name, (_, field, words) in LAB_ATTACKS.items():
        message, got_field, seconds = answers[name]
        assert words in message and got_field == field and "\n" not in message, (name, answers[name])
        assert seconds < 5, name
    assert "pixels" in answers["size"][0]  # was a 500 after a 120 GB allocation
    assert not list((tmp_path / "runs").glob("*/target.npy"))


def test_the_lab_caps_the_training_image_before_writing_the_run(tmp_path, monkeypatch):
    from monalisa.lab.jobs import Lab

    monkeypatch.setattr(limits, "MAX_PIXELS", 1000)  # astronaut is 512x512
    lab = Lab(tmp_path / "runs", jobs=1)
    try:
        with pytest.raises(LabError, match="262,144 pixels") as caught:
            lab.create_run("astronaut", "full", "quick", 'arch = "2x8"')
        assert caught.value.field == "size"
    finally:
        lab.close()
    assert not list((tmp_path / "runs").glob("*/target.npy"))


def test_check_size_no_longer_builds_the_encoding():
    recipe = Recipe(arch=(64,), encoding="hashgrid:finest=100000,table_size=2**27")
    start = time.monotonic()
    with pytest.raises(LabError, match="table entries") as caught:
        forms.check_size(recipe)
    assert time.monotonic() - start < 0.5 and caught.value.field == "encoding"


# -- animations -------------------------------------------------------------------------------


def test_animation_limits():
    for kwargs in ({"width": 100_000}, {"fps": 0.0001}, {"fps": 1e9}, {"frames": 10**8}, {"frames": 1}):
        with pytest.raises(limits.LimitError):
            limits.check_animation(**kwargs)
    limits.check_animation(width=4096, fps=12, frames=120)


def test_a_fresh_write_removes_a_dead_writers_temporary(tmp_path):
    from monalisa import files
    from monalisa.runs import animation

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    stale = tmp_path / f".x.mp4.tmp-{dead.pid}-0badcafe.mp4"
    live = tmp_path / f".x.mp4.tmp-{1}-0badcafe.mp4"  # pid 1 is always alive
    other = tmp_path / f".y.mp4.tmp-{dead.pid}-0badcafe.mp4"  # another output's: not ours to touch
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    frames = [np.zeros((4, 4, 3), np.uint8)] * 2
    animation.write_gif(frames, tmp_path / "x.gif")  # a different output: nothing removed
    assert stale.exists()
    with files.atomic_path(tmp_path / "x.mp4") as tmp:
        assert tmp.name.startswith(f".x.mp4.tmp-{os.getpid()}-")
        tmp.write_bytes(b"done")
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "x.mp4").read_bytes() == b"done"
