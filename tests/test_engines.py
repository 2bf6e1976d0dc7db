"""engines/: numba loads only for the online engine; the batched engine resumes bit-exactly.

- in a fresh interpreter, choosing an engine and training a batched recipe leave numba
  unimported, and training an online recipe imports it;
- the names online_support.py admits are the names online.py has kernel codes for;
- a batched run checkpointed through torch.save / torch.load(weights_only=True) and resumed
  ends with the uninterrupted run's weights and figures, bit for bit (optimiser state, schedule).
"""

import io
import subprocess
import sys
import textwrap

import pytest
import torch

from monalisa.engines import online_support
from monalisa.images import load_target
from monalisa.recipes import Recipe
from monalisa.registry import ACTIVATIONS, OUTPUTS
from monalisa.train import Trainer

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
