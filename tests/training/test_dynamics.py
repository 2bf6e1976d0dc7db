"""dynamics.py: per-layer statistics against hand-written references, exactness, layers.csv across a resume.

The references: a plain forward and backward written here with PyTorch autograd over the probe
pixels, NumPy norms of the weights before and after, and networks built to have known dead or
saturated units. Exactness: a run's weights with and without recording must be bit-identical.
"""

import math
import re

import numpy as np
import pytest
import torch
from helpers import tiny_target

from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import resume_run, train_run
from monalisa.runs.recorder import Recorder, snapshot_wanted
from monalisa.training.dynamics import (
    LAYER_COLUMNS,
    PROBE_PIXELS,
    PROBE_SEED,
    LayerDynamics,
    diagnose,
    layers_csv,
    plot_dynamics,
    read_layers,
)
from monalisa.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

ONLINE = Recipe(arch=(12, 10, 8), epochs=3)
BATCHED = Recipe(arch=(12, 10), activation="tanh", optimizer="adam", batch_size=8, lr=0.01, epochs=3)


def weights(trainer):
    trainer.engine.sync()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("recipe,engine", [(ONLINE, "online"), (BATCHED, "batched")])
def test_recording_changes_no_weight(recipe, engine, monkeypatch):
    monkeypatch.setattr("monalisa.engines.online.CHUNK", 16)  # a progress report every 16 pixels, as batched's
    target = tiny_target(12, 16)
    plain = Trainer(target, recipe, engine=engine)
    plain.fit()
    watched = Trainer(target, recipe, engine=engine)
    dynamics = LayerDynamics(every_pixels=10, budget=None)  # a record every 10 pixels: many mid-epoch
    watched.fit([dynamics])
    assert len({(r["epoch"], r["fraction"]) for r in dynamics.rows}) >= 3 * 10
    for key, value in weights(plain).items():
        assert torch.equal(value, weights(watched)[key]), key  # bit for bit
    assert [r["psnr"] for r in plain.history] == [r["psnr"] for r in watched.history]


def reference_statistics(model, coords, colours):
    """Per layer: outputs, weight gradients by autograd over a hand-written forward (no trunk())."""
    model = model.double()
    x, t = torch.from_numpy(coords).double(), torch.from_numpy(colours).double()
    outputs, h = [], x
    for layer, activation in zip(model.layers[:-1], model.activations):
        h = activation(h @ layer.weight.T + layer.bias)
        outputs.append(h)
    out = h @ model.layers[-1].weight.T + model.layers[-1].bias
    outputs.append(out)
    (0.5 * (out - t).square().sum(1).mean()).backward()
    grads = [layer.weight.grad for layer in model.layers]
    return [o.detach().numpy() for o in outputs], [float(g.square().mean().sqrt()) for g in grads]


def test_statistics_match_autograd_and_numpy_norms():
    target = tiny_target(20, 24)
    trainer = Trainer(target, ONLINE.replace(epochs=2), engine="online")
    dynamics = LayerDynamics(every_pixels=10**6)  # the end of each epoch only
    before = weights(trainer)
    trainer.fit([dynamics])
    after = weights(trainer)
    rows = [r for r in dynamics.rows if r["epoch"] == 2]
    assert [r["layer"] for r in rows] == [1, 2, 3, 4] and [r["units"] for r in rows] == [12, 10, 8, 3]
    assert all(r["fraction"] == 1.0 and r["step"] == 2 * 480 for r in rows)
    pick = np.sort(np.random.default_rng(PROBE_SEED).choice(480, size=PROBE_PIXELS, replace=False))
    outputs, grads = reference_statistics(trainer.model, target.coords[pick], target.colours[pick])
    for row, z, grad in zip(rows, outputs, grads):
        assert row["act_mean"] == pytest.approx(z.mean(), rel=1e-4, abs=1e-6)
        assert row["act_std"] == pytest.approx(z.std(), rel=1e-4)
        assert row["grad_rms"] == pytest.approx(grad, rel=1e-3)
        if row["layer"] <= 3:
            assert row["dead_fraction"] == (z.max(0) <= 0).mean()
            assert math.isnan(row["saturated_fraction"])  # rectifiers do not saturate
        else:
            assert math.isnan(row["dead_fraction"])  # the output layer
    # The update ratio of epoch 2 from the weights at the ends of epochs 1 and 2.
    end_of_1 = [r for r in dynamics.rows if r["epoch"] == 1]
    first = Trainer(target, ONLINE.replace(epochs=1), engine="online")
    first.fit()
    middle = weights(first)
    for index, row in enumerate(rows):
        w1, w2 = middle[f"layers.{index}.weight"].double(), after[f"layers.{index}.weight"].double()
        ratio = float((w2 - w1).norm() / w1.norm()) / 480
        assert row["log10_update_ratio"] == pytest.approx(math.log10(ratio), abs=1e-4)
        assert row["weight_rms"] == pytest.approx(float(w2.square().mean().sqrt()), rel=1e-5)
        w0 = before[f"layers.{index}.weight"].double()
        assert end_of_1[index]["log10_update_ratio"] == pytest.approx(
            math.log10(float((w1 - w0).norm() / w0.norm()) / 480), abs=1e-4)


def test_dead_and_saturated_units_are_counted():
    target = tiny_target(16, 16)
    relu = Trainer(target, Recipe(arch=(10, 6), activation="relu", batch_size=4, epochs=1), engine="batched")
    with torch.no_grad():
        relu.model.layers[0].bias[:4] = -100.0  # inputs are in [0, 1]: these 4 of 10 never fire
    dynamics = LayerDynamics()
    dynamics.on_start(relu)
    rows = dynamics.record(relu, 1, 1.0)
    assert rows[0]["dead_fraction"] == pytest.approx(0.4)
    assert rows[0]["log10_update_ratio"] == -math.inf  # nothing trained: the weights did not move

    tanh = Trainer(target, Recipe(arch=(10, 6), activation="tanh", batch_size=4, epochs=1), engine="batched")
    with torch.no_grad():
        tanh.model.layers[0].bias[:3] = 50.0  # pinned at +1 everywhere
        tanh.model.layers[0].bias[3:5] = -50.0  # at -1
        tanh.model.layers[0].weight[5:] = 0.0  # 0: far from saturation
        tanh.model.layers[0].bias[5:] = 0.0
    dynamics = LayerDynamics()
    dynamics.on_start(tanh)
    first = dynamics.record(tanh, 1, 1.0)[0]
    assert first["dead_fraction"] == pytest.approx(0.5)
    assert first["saturated_fraction"] == pytest.approx(0.5)


def test_records_several_times_a_long_epoch_and_once_a_short_one():
    target = tiny_target(30, 40)  # 1,200 pixels
    trainer = Trainer(target, ONLINE.replace(epochs=2), engine="online")
    dynamics = LayerDynamics(every_pixels=1000, budget=None)  # the online engine reports every 1,024 pixels
    trainer.fit([dynamics])
    points = sorted({(r["epoch"], r["fraction"]) for r in dynamics.rows})
    assert points == [(1, 1024 / 1200), (1, 1.0), (2, 1024 / 1200), (2, 1.0)]
    seconds = [r["train_seconds"] for r in dynamics.rows]
    assert seconds == sorted(seconds) and seconds[-1] <= trainer.training_seconds() + 1e-9
    steps = sorted({r["step"] for r in dynamics.rows})
    assert steps == [1024, 1200, 2224, 2400]


class Paced:
    """A trainer whose epoch so far took ``seconds``: what LayerDynamics.spacing reads."""

    def __init__(self, seconds):
        self.seconds = seconds

    def seconds_into_epoch(self):
        return self.seconds


def test_records_inside_an_epoch_are_spaced_to_the_budget():
    dynamics = LayerDynamics(every_pixels=100, budget=0.02)
    dynamics.pixels, dynamics.cost = 1200, 0.001  # records of 1 ms
    # Half the epoch in 0.05 s: 0.1 s an epoch, 2% of it is 2 ms: 2 records, the end's and one inside, halfway
    assert dynamics.spacing(Paced(0.05), 600) == 600
    assert dynamics.spacing(Paced(0.1), 600) == 300  # 4 ms: 3 inside, 1200 / 4 pixels apart
    assert dynamics.spacing(Paced(5.0), 600) == 100  # a long epoch: every_pixels, no closer
    unlimited = LayerDynamics(every_pixels=100, budget=None)
    unlimited.pixels = 1200
    assert unlimited.spacing(Paced(0.0), 600) == 100
    unlimited.every_pixels = 500
    assert unlimited.spacing(Paced(0.0), 600) == 400  # 3 equal intervals, not 500, 500 and 200
    assert dynamics.spacing(Paced(0.01), 600) == math.inf  # none fits: only the epoch's end is recorded


def test_a_record_costs_what_it_is_measured_to():
    target = tiny_target(30, 40)
    trainer = Trainer(target, ONLINE.replace(epochs=2), engine="online")
    dynamics = LayerDynamics()
    trainer.fit([dynamics])
    assert 0 < dynamics.cost < 1 and 0 < dynamics.seconds
    assert {(r["epoch"], r["fraction"]) for r in dynamics.rows} >= {(1, 1.0), (2, 1.0)}  # the ends, always


def test_layers_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "fraction": 0.5, "step": 7, "train_seconds": 0.25, "layer": 2, "units": 8, "act_mean": -0.125,
             "act_std": 1.5, "dead_fraction": math.nan, "saturated_fraction": 0.25, "grad_rms": 3e-9,
             "weight_rms": 0.5, "log10_update_ratio": -math.inf}]
    (tmp_path / "layers.csv").write_text(layers_csv(rows))
    back = read_layers(tmp_path / "layers.csv")
    assert list(back[0]) == list(LAYER_COLUMNS)
    assert math.isnan(back[0]["dead_fraction"])
    assert {k: v for k, v in back[0].items() if k != "dead_fraction"} == \
        {k: v for k, v in rows[0].items() if k != "dead_fraction"}
    (tmp_path / "bad.csv").write_text("epoch,layer\n1,2\n")
    with pytest.raises(ValueError):
        read_layers(tmp_path / "bad.csv")


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


def same_rows(got, want):
    assert len(got) == len(want)
    for mine, theirs in zip(without_seconds(got), without_seconds(want)):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, nan_ok=True), (key, mine, theirs)


def test_a_resumed_run_neither_loses_nor_repeats_rows(tmp_path):
    target = tiny_target(12, 16)
    recipe = ONLINE.replace(epochs=5)
    train_run(target, recipe, tmp_path / "whole", quiet=True)
    whole = RunDirectory.open(tmp_path / "whole").layers()
    assert sorted({r["epoch"] for r in whole}) == [1, 2, 3, 4, 5]

    train_run(target, recipe.replace(epochs=3), tmp_path / "part", quiet=True)
    part = RunDirectory.open(tmp_path / "part")
    # A writer killed after layers.csv but before the checkpoint: epoch 4's rows on disk, epoch 3's checkpoint.
    leading = [dict(r, epoch=4) for r in part.layers() if r["epoch"] == 3]
    (part.path / "layers.csv").write_text(layers_csv(part.layers() + leading))
    resume_run(part.path, epochs=5, quiet=True)
    same_rows(part.layers(), whole)
    assert (part.path / "dynamics.png").is_file()


def test_plot_dynamics_draws_a_png(tmp_path):
    target = tiny_target(12, 16)
    trainer = Trainer(target, BATCHED, engine="batched")
    dynamics = LayerDynamics(every_pixels=50, budget=None)
    trainer.fit([dynamics])
    plot_dynamics(dynamics.rows, tmp_path / "dynamics.png", title="tiny")
    from PIL import Image
    with Image.open(tmp_path / "dynamics.png") as image:
        assert image.format == "PNG" and image.width > 1000


def test_a_long_run_without_dead_units_still_plots(tmp_path):
    """Past 50 epochs the epoch axis is logarithmic; a panel with nothing to draw (no dead state in
    gelu) once took the whole figure down with it ("Data cannot be log-scaled")."""
    rows = [dict(epoch=epoch, fraction=1.0, step=epoch * 100, train_seconds=0.1, layer=layer, units=8,
                 act_mean=0.1, act_std=0.2, dead_fraction=math.nan, saturated_fraction=math.nan, grad_rms=1e-3,
                 weight_rms=0.1, log10_update_ratio=-5.0) for epoch in range(1, 61) for layer in (1, 2, 3)]
    plot_dynamics(rows, tmp_path / "dynamics.png", title="gelu, 60 epochs")
    from PIL import Image
    with Image.open(tmp_path / "dynamics.png") as image:
        assert image.format == "PNG"


def test_snapshots_at_fibonacci_epochs_in_float16(tmp_path):
    assert [e for e in range(0, 60) if snapshot_wanted(e)] == [0, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    target = tiny_target(8, 10)
    train_run(target, ONLINE.replace(epochs=6), tmp_path / "run", quiet=True)
    run = RunDirectory.open(tmp_path / "run")
    assert run.snapshot_epochs() == [0, 1, 2, 3, 5, 6]  # and the last
    final = run.checkpoint()["model"]
    last = run.snapshot(6)
    for key, value in final.items():
        assert last[key].dtype == torch.float32
        assert torch.equal(last[key], value.half().float())


def test_recorder_without_dynamics_writes_no_layers(tmp_path):
    target = tiny_target(8, 10)
    run = RunDirectory.create(tmp_path / "run", ONLINE, target, {})
    with run.writing():
        Trainer(target, ONLINE.replace(epochs=1)).fit([Recorder(run, dynamics=False, tensorboard=False)])
    assert not (tmp_path / "run" / "layers.csv").exists() and not (tmp_path / "run" / "dynamics.png").exists()
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


# -- diagnose: what went wrong ----------------------------------------------------------------------


def synthetic(grads, dead=None, saturated=None, updates=None, stds=None, epochs=2):
    """Rows of ``epochs`` epochs, two records each, for layers 1..len(grads) (the last the output)."""
    n = len(grads)
    rows = []
    for epoch in range(1, epochs + 1):
        for fraction in (0.5, 1.0):
            for index in range(n):
                rows.append({"epoch": epoch, "fraction": fraction, "step": round((epoch - 1 + fraction) * 1000),
                             "train_seconds": 0.0, "layer": index + 1,
                             "units": 8, "act_mean": 0.1, "act_std": (stds or [0.5] * n)[index],
                             "dead_fraction": (dead or [0.0] * n)[index] if index < n - 1 else math.nan,
                             "saturated_fraction": (saturated or [math.nan] * n)[index], "grad_rms": grads[index],
                             "weight_rms": 0.3, "log10_update_ratio": (updates or [-3.0] * n)[index]})
    return rows


def test_a_healthy_network_has_no_findings():
    assert diagnose(synthetic([1e-2, 2e-2, 1e-2, 3e-2])) == []
    assert diagnose([]) == []


def test_each_rule_finds_what_it_names():
    # gradients a tenth of the layer above's: layer 2 is 2 orders below the output (layer 4), layer 1 is 3
    found = diagnose(synthetic([1e-5, 1e-4, 1e-3, 1e-2]))
    assert len(found) == 1 and found[0].startswith("vanishing gradients: from layer 2 down, the gradient RMS is 2.0 "
                                                   "orders of magnitude below the output layer's")
    assert "layer 1's is 3.0 orders of magnitude below it" in found[0]
    found = diagnose(synthetic([1e-2] * 4, dead=[0.0, 0.75, 0.5, 0.0]))
    assert found == ["dead units (no slope at any probe pixel, so they no longer learn): layer 2 75%, layer 3 50% "
                     "at epoch 2"]
    # 1,000 steps an epoch: 1e-7.5 a step is under 1e-4 an epoch even were the steps alike; 1e-6.5 is not
    found = diagnose(synthetic([1e-2] * 4, updates=[-7.5, -math.inf, -6.5, -6.5]))
    assert found == ["updates too small: under 1e-4 of the weights an epoch even were its 1,000 steps all alike; a "
                     "step: layer 2 not at all (steps under float32's resolution), layer 1 1e-7.5 at epoch 2"]
    found = diagnose(synthetic([1e-2] * 4, updates=[-5.5, -3.0, -3.2, -3.2]))
    assert found == ["layers learning at other speeds: layer 1's updates 2.3 orders of magnitude below the median "
                     "layer's at epoch 2"]
    found = diagnose(synthetic([1e-2] * 3, saturated=[0.9, 0.1, math.nan], stds=[0.5, 1e-3, 0.5]))
    assert found[0] == "saturated units (outputs within 1% of the activation's extremes): layer 1 90% of outputs at epoch 2"
    assert found[1].startswith("the forward signal collapses: the activations' std falls from 0.5 in layer 1 to 0.001 "
                               "in layer 2")
    assert diagnose(synthetic([1e-2, 5.0, 1e-2]))[0].startswith("exploding gradients: layer 2's gradient RMS is 2.7")


def test_the_last_epoch_decides():
    rows = synthetic([1e-5, 1e-4, 1e-3, 1e-2])  # vanished in both epochs ...
    for row in rows:
        if row["epoch"] == 2:
            row["grad_rms"] = 1e-2  # ... until the last one recovered
    assert diagnose(rows) == []
    assert diagnose([row for row in rows if row["epoch"] == 1])[0].startswith("vanishing gradients")


def test_a_real_failing_network_is_diagnosed():
    """8 layers of 8 leaky rectifiers with initial weights 10x smaller than the original's: the gradient
    reaching the first layers is orders of magnitude below the output's, and their weights barely move."""
    trainer = Trainer(tiny_target(24, 24), Recipe(arch=(8,) * 8, init="original:scale=0.03", epochs=4),
                      engine="online")
    dynamics = LayerDynamics()
    trainer.fit([dynamics])
    found = diagnose(dynamics.rows)
    last = {row["layer"]: row for row in dynamics.rows if row["epoch"] == 4}
    assert last[1]["grad_rms"] < 1e-4 * last[9]["grad_rms"]  # the reference: the rows themselves
    assert found[0].startswith("vanishing gradients: from layer ")
    assert any(finding.startswith("updates too small") and re.search(r"\blayers? 1\b", finding) for finding in found)
