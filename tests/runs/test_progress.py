"""monalisa.runs.progress: the ETA the CLI prints, against times worked out by hand."""

from types import SimpleNamespace

from monalisa.recipes.recipe import Recipe
from monalisa.runs.progress import Progress


def trainer_after(epochs_done: int, recipe: Recipe) -> SimpleNamespace:
    """A trainer that has trained ``epochs_done`` epochs of 0.8 s of training each."""
    history = [{"epoch": e, "train_seconds": 0.8} for e in range(1, epochs_done + 1)]
    return SimpleNamespace(recipe=recipe, epoch=epochs_done, history=history,
                           training_seconds=lambda: 0.8 * epochs_done)


def eta(recipe: Recipe, fraction: float = 0.0) -> str:
    progress = Progress()
    progress.epoch_wall = [1.0] * 10  # each epoch took 1 s of wall clock
    return progress._eta(trainer_after(10, recipe), fraction)


def test_eta_runs_to_the_last_epoch():
    assert eta(Recipe(epochs=5000)) == "ETA 1:23:10"  # 4990 epochs of 1 s


def test_eta_stops_at_the_time_limit():
    # `siren --time-limit 60` once showed 1:09:29 and stopped at 84 s. 60 - 8 s of training left:
    # 65 epochs of 0.8 s (the limit is checked after each epoch), 65 s of wall clock; 64.5 s when half-way.
    assert eta(Recipe(epochs=5000, time_limit=60)) == "ETA 1:05 (time limit)"
    assert eta(Recipe(epochs=5000, time_limit=60), fraction=0.5) == "ETA 1:04 (time limit)"
    assert eta(Recipe(epochs=20, time_limit=60)) == "ETA 0:10"  # the epochs end first


def test_eta_with_until_psnr_says_it_may_come_sooner():
    assert eta(Recipe(epochs=20, until_psnr=30.0)) == "ETA 0:10 or sooner"
