"""The worker's live reports: progress, previews within an epoch, and frames that match the run's."""

import io
import queue

import numpy as np
import pytest
from PIL import Image

from monalisa import Recipe, Trainer, load_target
from monalisa.execution import live_reports as worker
from monalisa.execution.live_reports import LiveReporter


class ListQueue(queue.SimpleQueue):
    def drain(self) -> list[dict]:
        items = []
        while not self.empty():
            items.append(self.get())
        return items


@pytest.mark.parametrize("engine", ["online", "batched"])
def test_previews_arrive_within_epochs_and_frames_match_the_run(monkeypatch, engine):
    monkeypatch.setattr(worker, "PREVIEW_SECONDS", 0.0)  # a preview at every progress report
    monkeypatch.setattr(worker, "PREVIEW_SHARE", 1e9)
    monkeypatch.setattr(worker, "PREVIEW_PIXELS", 1000)  # 64x48 -> every 2nd row and column: 32x24
    target = load_target("astronaut", size=(64, 48))
    recipe = Recipe(arch=(16, 16), epochs=2, batch_size=1 if engine == "online" else 64)
    trainer = Trainer(target, recipe, engine=engine)
    events = ListQueue()
    history = trainer.fit([LiveReporter("r1", events)]).history
    reports = events.drain()
    kinds = [r["type"] for r in reports]
    assert kinds[0] == "started" and all(r["id"] == "r1" for r in reports)
    previews = [r for r in reports if r["type"] == "frame" and r["fraction"] < 1]
    assert len(previews) >= 2
    assert Image.open(io.BytesIO(previews[0]["png"])).size == (32, 24)
    # Every epoch ends with its row and its full-size frame, which is the frame the run records.
    rows = [r["row"] for r in reports if r["type"] == "epoch"]
    assert rows == history
    last = [r for r in reports if r["type"] == "frame" and r["fraction"] == 1.0][-1]
    pixels = np.asarray(Image.open(io.BytesIO(last["png"])))
    from monalisa.training.inference import render, to_frame

    expected = to_frame(render(trainer.model, target.coords, trainer.device), 48, 64)
    assert np.array_equal(pixels, expected)


def test_preview_time_is_not_training_time(monkeypatch):
    """A slow preview inside the epoch must not be charged to train_seconds."""
    monkeypatch.setattr(worker, "PREVIEW_SECONDS", 0.0)
    monkeypatch.setattr(worker, "PREVIEW_SHARE", 1e9)  # never throttled by its own cost
    real_render = worker.render

    def slow_render(*args, **kwargs):
        import time

        time.sleep(0.05)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(worker, "render", slow_render)
    target = load_target("astronaut", size=(32, 32))
    recipe = Recipe(arch=(8,), epochs=1, batch_size=16)  # 64 steps, ~20 progress reports
    trainer = Trainer(target, recipe, engine="batched")
    events = ListQueue()
    history = trainer.fit([LiveReporter("r", events)]).history
    previews = [r for r in events.drain() if r["type"] == "frame" and r["fraction"] < 1]
    assert len(previews) >= 5  # >= 0.25 s of sleeping inside the epoch
    assert history[0]["train_seconds"] < 0.05 * len(previews) / 2
