"""training/trainer.py's stopping rules: --until-psnr and --time-limit end fit() between epochs, and the run records why."""

import json

import pytest
from helpers import tiny_target

from monalisa import fit, train_run
from monalisa.recipes.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_until_psnr_stops_at_the_first_epoch_that_reaches_it():
    recipe = Recipe(arch=(8,), batch_size=64, optimizer="adam", lr=1e-2, epochs=500, until_psnr=15.0)
    result = fit(tiny_target(), recipe, device="cpu")
    assert result.stopped_by == "until_psnr"
    assert 1 < len(result.history) < 500
    assert result.history[-1]["psnr"] >= 15.0
    assert all(row["psnr"] < 15.0 for row in result.history[:-1])


def test_time_limit_stops_after_the_epoch_that_passes_it():
    # Any epoch takes longer than a microsecond; the rule is checked between epochs.
    result = fit(tiny_target(), Recipe(arch=(8,), batch_size=64, epochs=50, time_limit=1e-6), device="cpu")
    assert (result.stopped_by, len(result.history)) == ("time_limit", 1)
    generous = fit(tiny_target(), Recipe(arch=(8,), batch_size=64, epochs=3, time_limit=1e6), device="cpu")
    assert (generous.stopped_by, len(generous.history)) == ("epochs", 3)


@pytest.mark.parametrize("rule, value", [("until_psnr", 15.0), ("time_limit", 1e-6)])
def test_run_json_records_how_the_run_stopped(tmp_path, rule, value):
    recipe = Recipe(arch=(8,), batch_size=64, optimizer="adam", lr=1e-2, epochs=500).replace(**{rule: value})
    out = tmp_path / "run"
    result = train_run(tiny_target(), recipe, out, device="cpu", quiet=True, frames="log")
    info = json.loads((out / "run.json").read_text())
    assert (info["stopped_by"], info["status"], info["epochs_done"]) == (rule, "complete", len(result.history))
    last = len(result.history)
    assert (out / "final.png").read_bytes() == (out / "frames" / f"epoch-{last:05d}.png").read_bytes()
    assert len((out / "metrics.csv").read_text().splitlines()) == last + 1
