"""engines/: numba loads only for the online engine; the batched engine resumes bit-exactly.

- in a fresh interpreter, choosing an engine and training a batched recipe leave numba
  unimported, and training an online recipe imports it;
- the names online_support.py admits are the names online.py has kernel codes for;
- a batched run checkpointed through torch.save / torch.load(weights_only=True) and resumed
  ends with the uninterrupted run's weights and figures, bit for bit (optimiser state, schedule);
- the batched engine applies the schedule over the whole run, step by step;
- which engine a recipe gets (auto, online, batched), in choose_engine, the Trainer and the CLI.
"""

import io
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import SMALL_HASHGRID, tiny_target
from PIL import Image

from monalisa.cli import main
from monalisa.data.images import load_target
from monalisa.engines import choose_engine, online_support
from monalisa.errors import UserError
from monalisa.models.network import linear_layers
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS, OUTPUTS
from monalisa.training.trainer import Trainer

CPU = torch.device("cpu")

TRAIN_ONE_EPOCH = """
import sys
import torch
from monalisa import Recipe, Trainer, load_target
from monalisa.engines import choose_engine

recipe = Recipe(arch=(8, 8), epochs=1, batch_size={batch_size})
assert choose_engine("auto", Recipe(), torch.device("cpu")) == "online"  # decided without the kernel
trainer = Trainer(load_target("astronaut", size=(12, 10)), recipe, device="cpu")
trainer.fit()
print(trainer.engine_name, "numba" in sys.modules)
"""


@pytest.mark.parametrize("batch_size,engine,numba_loaded", [(16, "batched", False), (1, "online", True)])
def test_numba_is_imported_only_by_the_online_engine(batch_size, engine, numba_loaded):
    script = textwrap.dedent(TRAIN_ONE_EPOCH.format(batch_size=batch_size))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [engine, str(numba_loaded)]


def test_online_support_names_are_the_kernels_codes():
    from monalisa.engines import online

    assert set(online_support.HIDDEN_ACTIVATIONS) == set(online._ACTIVATION_CODES)
    assert set(online_support.OUTPUTS) == set(online._OUTPUT_CODES)
    assert set(online_support.HIDDEN_ACTIVATIONS) <= set(ACTIVATIONS.names())
    assert set(online_support.OUTPUTS) <= set(OUTPUTS.names())


@pytest.mark.parametrize("recipe", [
    Recipe(arch=(16, 16), optimizer="adam", lr=1e-2, schedule="cosine", batch_size=24, epochs=5),
    Recipe(arch=(16, 16), optimizer="momentum", schedule="step", batch_size=16, epochs=5),
    Recipe(arch=(16,), activation="relu", encoding="hashgrid", init="torch", optimizer="adam", lr=1e-2,
           batch_size=32, epochs=5),
], ids=["adam-cosine", "momentum-step", "hashgrid-adam"])
def test_batched_run_resumes_bit_exactly_from_a_weights_only_checkpoint(recipe):
    target = load_target("astronaut", size=(12, 10))
    uninterrupted = Trainer(target, recipe, device="cpu", engine="batched")
    uninterrupted.fit(epochs=2)
    saved = io.BytesIO()
    torch.save(uninterrupted.state_dict(), saved)
    uninterrupted.fit()

    saved.seek(0)
    resumed = Trainer(target, recipe, device="cpu", engine="batched")
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    resumed.fit()

    assert resumed.epoch == uninterrupted.epoch == recipe.epochs
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [row["psnr"] for row in resumed.history] == [row["psnr"] for row in uninterrupted.history]


# -- the schedule in the batched engine -----------------------------------------------------------


def test_batched_engine_applies_the_schedule_over_the_whole_run():
    # 48 pixels in batches of 2: 24 steps an epoch, 48 in the run; SGD, so each layer has its own base rate.
    recipe = Recipe(arch=(8,), encoding=SMALL_HASHGRID, optimizer="sgd", lr=0.1, encoding_lr=1.0, batch_size=2,
                    epochs=2, schedule="exponential:final=0.1")
    trainer = Trainer(tiny_target(), recipe, device="cpu")
    assert trainer.engine_name == "batched"
    optimizer = trainer.engine.optimizer
    layers = linear_layers(trainer.model)
    base = [0.1 / math.sqrt(layer.in_features + 1) for layer in layers] + [1.0]
    seen = []
    step = optimizer.step

    def recording_step(*args, **kwargs):
        seen.append([group["lr"] for group in optimizer.param_groups])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    trainer.fit(epochs=1)
    halfway = [group["lr"] for group in optimizer.param_groups]
    # progress 1/2: 0.1^(1/2) (the last step of the epoch may have used 0.1^(23/48), 5% more)
    assert halfway == pytest.approx([b * 0.1**0.5 for b in base], rel=0.06)
    trainer.fit()
    final = [group["lr"] for group in optimizer.param_groups]
    assert final == pytest.approx([b * 0.1 for b in base], rel=0.06)  # the end of the run: 0.1
    assert len(seen) == 48
    for k, rates in enumerate(seen):  # step k covers progress k/48 .. (k+1)/48
        for rate, b in zip(rates, base):
            assert b * 0.1 ** ((k + 1) / 48) * (1 - 1e-9) <= rate <= b * 0.1 ** (k / 48) * (1 + 1e-9)


# -- which engine ---------------------------------------------------------------------------------

# One change each that takes a batch-size-1 recipe outside what the compiled online kernel implements.
OUTSIDE_THE_KERNEL = {
    "encoding": {"encoding": "fourier:features=4"},
    "positional": {"encoding": "positional:octaves=2"},
    "residual": {"residual": True},
    "sine": {"activation": "sine"},
    "gelu": {"activation": "gelu"},
    "silu": {"activation": "silu"},
    "per-layer activations": {"activation": ("tanh", "relu")},
    "adam": {"optimizer": "adam"},
    "momentum": {"optimizer": "momentum"},
    "rprop": {"optimizer": "rprop"},
    "schedule": {"schedule": "cosine"},
    "step schedule": {"schedule": "step"},
    "clamp output": {"output": "clamp"},
    "batches": {"batch_size": 2},
}


@pytest.mark.parametrize("changes", [{}, {"activation": "tanh", "output": "sigmoid"}, {"activation": "relu"},
                                     {"activation": "leaky_relu:slope=0.2", "init": "torch"},
                                     {"optimizer": "sgd:fan_in_scaling=false", "lr": 0.01}],
                         ids=lambda changes: json.dumps(changes))
def test_auto_picks_online_for_the_original_family_on_the_cpu(changes):
    recipe = Recipe(arch=(8, 8), **changes)
    assert choose_engine("auto", recipe, CPU) == "online"
    assert choose_engine("online", recipe, CPU) == "online"
    assert choose_engine("batched", recipe, CPU) == "batched"
    assert choose_engine("auto", recipe, torch.device("cuda")) == "batched"  # the kernel is CPU-only
    with pytest.raises(UserError, match="--engine online runs on the CPU only"):
        choose_engine("online", recipe, torch.device("cuda"))


@pytest.mark.parametrize("name", OUTSIDE_THE_KERNEL)
def test_recipes_outside_the_kernel_go_to_the_batched_engine(name):
    recipe = Recipe(arch=(8, 8), **OUTSIDE_THE_KERNEL[name])
    assert choose_engine("auto", recipe, CPU) == "batched"
    with pytest.raises(UserError) as info:
        choose_engine("online", recipe, CPU)
    assert str(info.value).startswith("--engine online cannot run this recipe: ")
    assert str(info.value).endswith("; use --engine batched") and "\n" not in str(info.value)


def test_engine_choice_reaches_the_trainer():
    target = tiny_target(3, 4)
    assert Trainer(target, Recipe(arch=(4,)), device="cpu").engine_name == "online"
    assert Trainer(target, Recipe(arch=(4,), residual=True), device="cpu").engine_name == "batched"
    with pytest.raises(UserError, match="--engine online cannot run this recipe"):
        Trainer(target, Recipe(arch=(4,), activation="sine"), device="cpu", engine="online")
    with pytest.raises(UserError, match="unknown engine 'fast'; choose one of: auto, online, batched"):
        Trainer(target, Recipe(arch=(4,)), device="cpu", engine="fast")


def test_cli_engine_online_with_an_outside_recipe(tmp_path, capsys):
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "t.png")
    for flags in (["--residual"], ["--activation", "sine"], ["--schedule", "cosine"], ["--output", "clamp"]):
        argv = ["train", str(tmp_path / "t.png"), "--arch", "2x8", "--engine", "online", *flags,
                "--out", str(tmp_path / "run"), "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("monalisa: error: --engine online cannot run this recipe")
        assert not (tmp_path / "run").exists()
