"""tensorboard.py: a run's TensorBoard events, read back with TensorBoard's own reader (EventAccumulator)."""

import numpy as np
import pytest
from helpers import tiny_target

from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import resume_run, train_run

pytestmark = pytest.mark.usefixtures("one_thread")


def events(path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="the tensorboard extra is not installed")
    # size_guidance 0: keep every event (the default samples 10 images and 500 scalars a tag)
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0,
                                                                               "histograms": 0})
    return accumulator.Reload()


def test_a_run_writes_scalars_frames_and_histograms(tmp_path):
    recipe = Recipe(arch=(8, 6), epochs=4)
    train_run(tiny_target(10, 12), recipe, tmp_path / "run", quiet=True)
    run = RunDirectory.open(tmp_path / "run")
    board = events(run.path)
    tags = board.Tags()
    psnr = board.Scalars("image/psnr")
    assert [e.step for e in psnr] == [1, 2, 3, 4]
    assert [e.value for e in psnr] == pytest.approx([row["psnr"] for row in run.checkpoint()["history"]], rel=1e-6)
    ends = [r for r in run.layers() if r["fraction"] == 1.0 and r["layer"] == 2]
    grad = board.Scalars("grad_rms/layer2")
    assert [e.value for e in grad] == pytest.approx([r["grad_rms"] for r in ends], rel=1e-5)
    assert {"weights/layer1", "weights/layer3", "activations/layer1", "activations/layer2"} <= set(tags["histograms"])
    weights = board.Histograms("weights/layer1")[-1].histogram_value
    assert weights.num == 8 * 2  # every weight of the first layer, once
    images = board.Images("frame")
    assert [e.step for e in images] == [1, 2, 3, 4]
    assert (images[0].width, images[0].height) == (12, 10)


def test_a_resume_logs_each_epoch_once(tmp_path):
    recipe = Recipe(arch=(8, 6), epochs=2)
    train_run(tiny_target(10, 12), recipe, tmp_path / "run", quiet=True)
    # a killed writer's event for an epoch past the checkpoint: TensorBoard must drop it on the resume
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(tmp_path / "run")) as writer:
        writer.add_scalar("image/psnr", -1.0, 3)
    resume_run(tmp_path / "run", epochs=4, quiet=True)
    psnr = events(tmp_path / "run").Scalars("image/psnr")
    assert [e.step for e in psnr] == [1, 2, 3, 4]
    assert -1.0 not in [e.value for e in psnr]
    assert np.isfinite([e.value for e in psnr]).all()


def test_without_tensorboard_runs_train_and_say_so_once(tmp_path, monkeypatch, capsys):
    from monalisa.runs import tensorboard

    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(tensorboard, "_noted", False)
    for name in ("a", "b"):
        train_run(tiny_target(6, 8), Recipe(arch=(4,), epochs=1), tmp_path / name, quiet=True)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    assert (tmp_path / "b" / "layers.csv").is_file()
    err = capsys.readouterr().err
    assert err.count("the tensorboard package is not installed") == 1
