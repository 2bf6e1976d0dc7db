"""The studies (experiments/studies/): the entries each builds, and the verdicts its claims reach on handmade rows.

``run_comparison`` is replaced by a recorder, so nothing trains except in the one end-to-end test
(an 8x8 image, one epoch). Parameter counts are counted by torch on the built model, the
reference the budget must meet; the claims are checked against verdicts worked out by hand.
"""

import dataclasses
import math

import numpy as np
import pytest
from helpers import torch_count

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.experiments import compare
from monalisa.experiments.studies import STUDIES, common, default_base, depth, noise, tips
from monalisa.experiments.studies.common import study_target
from monalisa.experiments.studies.depth import DEPTHS, QUICK_DEPTHS, depth_claims
from monalisa.experiments.studies.encodings import encoding_claims
from monalisa.experiments.studies.tips import tips_claims
from monalisa.experiments.tables import check_claims
from monalisa.models.network import build_model
from monalisa.recipes.encodings import HashGridOptions, hashgrid_size, hashgrid_table_size
from monalisa.recipes.recipe import Recipe, get_preset
from monalisa.recipes.sizes import TOLERANCE

ORIGINAL = 272_703


@pytest.fixture
def target():
    """100 high, 80 wide: larger than quick mode's 64 px, so shrinking shows."""
    rng = np.random.default_rng(0)
    return Target("noise", rng.random((100, 80, 3), dtype=np.float32))


@pytest.fixture
def captured(monkeypatch):
    """Replaces run_comparison: records each call, trains nothing."""
    calls = []

    def fake(target, entries, out, **kwargs):
        calls.append({"target": target, "entries": entries, "out": out, **kwargs})
        return {"runs": [], "claims": []}

    monkeypatch.setattr(compare, "run_comparison", fake)
    return calls


def run(name, target, tmp_path, captured, **kwargs):
    STUDIES[name](target, tmp_path / name, **kwargs)
    return captured[-1]


# -----------------------------------------------------------------------------
# depth


def test_depth_entries_share_the_budget(target, tmp_path, captured):
    call = run("depth", target, tmp_path, captured)
    entries = dict(call["entries"])
    assert [len(recipe.arch) for recipe in entries.values()] == list(DEPTHS)
    for label, recipe in entries.items():
        assert label == f"d{len(recipe.arch)}-w{recipe.arch[0]}"
        assert abs(torch_count(recipe) - ORIGINAL) <= TOLERANCE * ORIGINAL
        # everything but the architecture is the original recipe, for the study's epochs
        assert recipe.replace(arch=(300,) * 4) == get_preset("original").replace(epochs=depth.DEPTH_EPOCHS)
    assert entries["d4-w300"].arch == (300,) * 4  # the original network is one of them
    assert call["target"] is target  # full mode trains on the image as given
    assert call["claims"]([]) and call["title"]


def test_depth_options(target, tmp_path, captured):
    call = run("depth", target, tmp_path, captured, budget=100_000, depths=[2, 5])
    assert [len(recipe.arch) for _, recipe in call["entries"]] == [2, 5]
    assert all(abs(torch_count(r) - 100_000) <= TOLERANCE * 100_000 for _, r in call["entries"])
    with pytest.raises(UserError, match="unknown option 'depth'"):
        run("depth", target, tmp_path, captured, depth=[2])
    with pytest.raises(UserError, match="too small"):
        run("depth", target, tmp_path, captured, budget=10, depths=[8])


def test_depth_budget_counts_the_encoding(target, tmp_path, captured):
    base = default_base("depth").replace(encoding="hashgrid:levels=2,table_size=1000", optimizer="adam", batch_size=64)
    call = run("depth", target, tmp_path, captured, base=base, depths=[1, 3], budget=20_000)
    for _, recipe in call["entries"]:
        assert recipe.encoding == base.encoding
        assert abs(torch_count(recipe) - 20_000) <= TOLERANCE * 20_000  # table + MLP


# -----------------------------------------------------------------------------
# tips


def test_tips_pair_each_tip_with_its_opposite(target, tmp_path, captured):
    entries = dict(run("tips", target, tmp_path, captured)["entries"])
    baseline = get_preset("original").replace(epochs=tips.TIPS_EPOCHS)
    assert entries["original"] == baseline

    def changed(recipe):
        ours, theirs = baseline.to_dict(), recipe.to_dict()
        return {key: value for key, value in theirs.items() if ours[key] != value}

    assert changed(entries["plain-relu"]) == {"activation": "relu"}
    assert changed(entries["init-x0.1"]) == {"init": "original:scale=0.03"}
    assert changed(entries["init-x10"]) == {"init": "original:scale=3.0"}
    assert changed(entries["scan-order"]) == {"order": "scan"}
    assert changed(entries["sigmoid-out"]) == {"output": "sigmoid"}
    assert changed(entries["lr-x10"]) == {"lr": 1.0}
    assert changed(entries["lr-x0.1"]) == {"lr": 0.01}
    # the reader's set-up as the preset has it, over the same epochs
    assert entries["rprop-sigmoid"] == get_preset("rprop-sigmoid").replace(epochs=tips.TIPS_EPOCHS)
    assert len(entries) == 9


def test_tips_need_the_original_initialiser(target, tmp_path, captured):
    with pytest.raises(UserError, match="init"):
        run("tips", target, tmp_path, captured, base=default_base("tips").replace(init="torch"))


# -----------------------------------------------------------------------------
# encodings


def test_encodings_share_the_budget(target, tmp_path, captured):
    entries = dict(run("encodings", target, tmp_path, captured)["entries"])
    assert list(entries) == ["none", "positional", "fourier", "hashgrid"]
    for label, recipe in entries.items():
        assert recipe.encoding.split(":")[0] == label
        assert abs(torch_count(recipe) - ORIGINAL) <= TOLERANCE * ORIGINAL  # the hash table included
    same = {"optimizer", "lr", "batch_size", "epochs", "activation", "init", "schedule", "seed"}
    assert len({tuple(getattr(r, f) for f in sorted(same)) for r in entries.values()}) == 1
    assert entries["fourier"].optimizer == "adam" and entries["fourier"].arch == (262,) * 3
    assert entries["hashgrid"].arch == (64, 64) and entries["hashgrid"].encoding_lr == 1e-2


def test_encodings_options(target, tmp_path, captured):
    entries = run("encodings", target, tmp_path, captured, budget=50_000,
                  encodings=["none", "fourier:features=64", "fourier:sigma=20"])["entries"]
    assert [label for label, _ in entries] == ["none", "fourier-features64", "fourier-sigma20.0"]
    assert all(abs(torch_count(r) - 50_000) <= TOLERANCE * 50_000 for _, r in entries)
    with pytest.raises(UserError, match="unknown encoding"):
        run("encodings", target, tmp_path, captured, encodings=["none", "wavelet"])


def test_hashgrid_table_size_is_the_closest():
    options = HashGridOptions(levels=6, base=4, finest=64)
    for parameters in (500, 3_000, 7_777, 10_000):
        size = hashgrid_table_size(options, parameters)

        def off(n):
            return abs(hashgrid_size(dataclasses.replace(options, table_size=n), 2)[1] - parameters)

        assert off(size) == min(off(n) for n in range(1, 5_000))
    built = Recipe(encoding="hashgrid:levels=6,base=4,finest=64,table_size=777")
    assert hashgrid_size(dataclasses.replace(options, table_size=777), 2)[1] == sum(
        p.numel() for p in build_model(built).encoding.parameters())


# -----------------------------------------------------------------------------
# every study


@pytest.mark.parametrize("name", list(STUDIES))
def test_base_overrides_reach_every_entry(name, target, tmp_path, captured):
    base = default_base(name).replace(epochs=7, seed=3)
    call = run(name, target, tmp_path, captured, base=base, jobs=2, device="cpu", quiet=True, resume=True)
    assert all(recipe.epochs == 7 and recipe.seed == 3 for _, recipe in call["entries"])
    assert (call["jobs"], call["device"], call["quiet"], call["resume"]) == (2, "cpu", True, True)


@pytest.mark.parametrize("name", list(STUDIES))
def test_quick_mode_is_smaller(name, target, tmp_path, captured):
    full = run(name, target, tmp_path, captured)
    quick = run(name, target, tmp_path, captured, quick=True)
    assert (quick["target"].height, quick["target"].width) == (64, 51)  # 100x80 -> longest side 64
    assert (full["target"].height, full["target"].width) == (100, 80)
    for (_, a), (_, b) in zip(quick["entries"], full["entries"]):
        assert a.epochs == default_base(name, quick=True).epochs
        # fewer pixel steps on the 300x429 reference image (45x64 in quick mode), whatever the epochs
        assert a.epochs * 45 * 64 < b.epochs * 300 * 429 / 10
    if name == "depth":
        assert [len(r.arch) for _, r in quick["entries"]] == list(QUICK_DEPTHS)


@pytest.mark.parametrize("name", list(STUDIES))
def test_studies_train_several_seeds_by_default(name, target, tmp_path, captured):
    expected = noise.NOISE_SEEDS if name == "noise" else common.STUDY_SEEDS
    assert run(name, target, tmp_path, captured)["seeds"] == expected
    assert run(name, target, tmp_path, captured, quick=True)["seeds"] == expected
    assert run(name, target, tmp_path, captured, resume=True)["seeds"] is None  # a resume keeps its own
    assert run(name, target, tmp_path, captured, seeds=(4, 9))["seeds"] == (4, 9)


def test_study_target():
    tall = Target("t", np.zeros((429, 300, 3), np.float32))
    assert study_target(tall, quick=False) is tall
    small = study_target(tall, quick=True)
    assert (small.height, small.width, small.name) == (64, 45, "t")
    assert study_target(small, quick=True) is small  # never enlarged, so applying it twice is harmless


def test_unknown_study():
    with pytest.raises(UserError, match="unknown study"):
        default_base("width")


# -----------------------------------------------------------------------------
# claims on handmade rows


SPREAD = (-0.05, 0.0, 0.05)  # three seeds a row, close together: a gap of 0.2 dB or more shows in the interval


def row(label, psnr, status="complete", arch=(300,) * 4, encoding="none", epochs=30):
    """An entry of three seeds around ``psnr`` (None: a perfect fit, mae 0 / a failure without a figure)."""
    recipe = Recipe(arch=arch, encoding=encoding).to_dict()
    seeds = [{"label": f"{label}-s{i}", "psnr": None if psnr is None else psnr + d, "mae": 0.1, "status": status,
              "epochs": epochs} for i, d in enumerate(SPREAD)]
    return {"label": label, "recipe": recipe, "psnr": psnr, "mae": 0.1, "status": status, "epochs": epochs,
            "seeds": [0, 1, 2], "seeds_failed": 0 if status == "complete" else 3, "per_seed": seeds}


def depth_rows(*psnrs, statuses=None):
    """One row per depth 1, 2, 3, 4, 6, 8 with the given final PSNRs."""
    statuses = statuses or ["complete"] * len(psnrs)
    return [row(f"d{d}", p, s, arch=(10,) * d) for d, p, s in zip((1, 2, 3, 4, 6, 8), psnrs, statuses)]


def verdicts(claims):
    assert check_claims(claims) == claims  # the shape compare.py requires
    return [claim["supported"] for claim in claims]


def test_deep_beats_shallow_flips_with_the_numbers():
    deep_wins = depth_claims(depth_rows(20.0, 21.0, 23.4, 24.5, 24.0, 22.0))
    assert verdicts(deep_wins)[0] is True
    assert "24.50 dB" in deep_wins[0]["evidence"] and "21.00 dB" in deep_wins[0]["evidence"]
    shallow_wins = depth_claims(depth_rows(24.5, 21.0, 23.4, 20.0, 22.0, 22.0))
    assert verdicts(shallow_wins)[0] is False
    close = depth_claims(depth_rows(20.0, 24.2, 23.4, 24.5, 24.0, 22.0))
    assert verdicts(close)[0] is None  # 0.3 dB apart, margin 0.5
    assert verdicts(depth_claims(depth_rows(20.0, 24.2, 23.4, 24.5), margin=0.2))[0] is True


def test_diverged_runs_count_as_failures():
    # the deep runs' last figures were high, but they diverged: the shallow ones win
    rows = depth_rows(20.0, 21.0, 30.0, 30.0, statuses=["complete", "complete", "diverged", "diverged"])
    claim = depth_claims(rows)[0]
    assert claim["supported"] is False
    assert "d3 diverged in 3 of 3 seeds" in claim["evidence"] and "21.00 dB" in claim["evidence"]
    rows = depth_rows(30.0, 30.0, 20.0, statuses=["diverged", "diverged", "complete"])
    assert verdicts(depth_claims(rows))[0] is True
    everything_failed = depth_rows(1.0, 1.0, 1.0, 1.0, statuses=["diverged"] * 4)
    assert verdicts(depth_claims(everything_failed)) == [None, None]


def test_psnr_rises_with_depth_up_to_the_best():
    claims = depth_claims(depth_rows(20.0, 22.0, 23.0, 25.0, 24.0, 23.0))
    assert claims[1]["supported"] is True and "up to 4 hidden layers" in claims[1]["claim"]
    assert "25.00 dB" in claims[1]["evidence"] and "+5.00 dB" in claims[1]["evidence"]
    assert depth_claims(depth_rows(26.0, 22.0, 23.0, 25.0))[1]["supported"] is False  # shallowest best
    assert depth_claims(depth_rows(20.0, 25.0, 21.0, 25.5))[1]["supported"] is None  # a dip on the way up
    assert depth_claims(depth_rows(20.0, 20.2, 20.3))[1]["supported"] is None  # flat within the margin


def tip_rows(original, opposite, status="complete"):
    return [row("original", original), row("plain-relu", opposite, status)]


def test_tip_verdicts_flip_with_the_numbers():
    tips = [("plain-relu", "leaky beats plain")]
    claim = tips_claims(tip_rows(25.0, 24.0), tips=tips)[0]
    assert claim["claim"] == "leaky beats plain" and claim["supported"] is True
    assert claim["evidence"].startswith("original 25.00 dB (mean of 3 seeds); plain-relu 24.00 dB (mean of 3 seeds); "
                                        "difference +1.00 dB, 95% interval [+0.9")
    assert "(BCa bootstrap, 3 and 3 seeds; margin 0.3 dB)" in claim["evidence"]
    assert tips_claims(tip_rows(24.0, 25.0), tips=tips)[0]["supported"] is False
    assert tips_claims(tip_rows(25.0, 24.8), tips=tips)[0]["supported"] is None
    assert tips_claims(tip_rows(25.0, 24.8), tips=tips, margin=0.1)[0]["supported"] is True


def test_tip_against_a_diverged_opposite():
    tips = [("plain-relu", "leaky beats plain")]
    claim = tips_claims(tip_rows(15.0, 40.0, status="diverged"), tips=tips)[0]
    assert claim["supported"] is True and "plain-relu diverged" in claim["evidence"]
    both = [row("original", 20.0, "diverged"), row("plain-relu", 20.0, "diverged")]
    assert tips_claims(both, tips=tips)[0]["supported"] is None
    baseline_failed = [row("original", 30.0, "diverged"), row("plain-relu", 20.0)]
    assert tips_claims(baseline_failed, tips=tips)[0]["supported"] is False


def test_default_tips_cover_every_entry():
    rows = [row(label, 25.0 if label == "original" else 20.0) for label in
            ("original", "plain-relu", "init-x0.1", "init-x10", "scan-order", "sigmoid-out", "lr-x10", "lr-x0.1",
             "rprop-sigmoid")]
    claims = tips_claims(rows)
    assert verdicts(claims) == [True] * 8
    assert "Learning rate 0.1 beats 10x larger (1)" in [c["claim"] for c in claims]
    missing = tips_claims(rows[:-1])[-1]
    assert missing["supported"] is None and "no run rprop-sigmoid" in missing["evidence"]


def encoding_rows(none, positional, fourier, hashgrid):
    return [row(name, psnr, encoding=name) for name, psnr in
            (("none", none), ("positional", positional), ("fourier", fourier), ("hashgrid", hashgrid))]


def test_encoding_claims():
    claims = encoding_claims(encoding_rows(20.0, 26.0, 28.0, 31.0))
    assert verdicts(claims) == [True, True, True]
    assert "31.00 dB" in claims[0]["evidence"] and "20.00 dB" in claims[0]["evidence"]
    assert claims[2]["claim"] == "hashgrid is the best encoding here"
    claims = encoding_claims(encoding_rows(30.0, 26.0, 25.0, 29.0))
    assert verdicts(claims) == [False, False, True]  # fourier 1 dB under positional
    assert claims[2]["claim"] == "none is the best encoding here"
    claims = encoding_claims(encoding_rows(25.0, 25.2, 25.1, 25.3))
    assert verdicts(claims) == [None, None, None]


def test_encoding_claims_with_failures_and_a_perfect_fit():
    rows = encoding_rows(20.0, 26.0, 28.0, None)
    rows[3].update(mae=0.0)  # compare.py writes a perfect fit's infinite PSNR as null
    for seed in rows[3]["per_seed"]:
        seed.update(mae=0.0)
    rows[2].update(status="diverged")
    claims = encoding_claims(rows)
    assert verdicts(claims)[:2] == [True, False]  # fourier diverged: it loses to positional
    assert claims[2]["claim"] == "hashgrid is the best encoding here"
    assert "inf dB" in claims[2]["evidence"] and "fourier diverged" in claims[2]["evidence"]


def test_the_noise_floor_is_the_spread_of_one_recipe():
    tight = noise.noise_claims([row("noise", 25.0)], margin=0.5)[0]  # seeds 0.1 dB apart
    assert tight["supported"] is True and "0.10 dB apart" in tight["evidence"] and "3 seeds" in tight["evidence"]
    wide = row("noise", 25.0)
    for seed, psnr in zip(wide["per_seed"], (24.2, 25.0, 25.9)):
        seed["psnr"] = psnr
    claim = noise.noise_claims([wide], margin=0.5)[0]
    assert claim["supported"] is False and "1.70 dB apart" in claim["evidence"]
    assert "median gap between two seeds is 0.90 dB" in claim["evidence"]


# -----------------------------------------------------------------------------
# end to end


def test_a_tiny_study_runs(tmp_path):
    pixels = np.random.default_rng(1).random((8, 8, 3), dtype=np.float32)
    base = default_base("depth", quick=True).replace(epochs=1)
    summary = depth.study_depth(Target("tiny", pixels), tmp_path / "depth", quick=True, base=base, jobs=1,
                                  quiet=True, depths=(1, 3), budget=5_000)
    assert [r["label"] for r in summary["runs"]] == ["d1-w833", "d3-w48"]
    assert all(r["epochs"] == 1 and math.isfinite(r["psnr"]) for r in summary["runs"])
    assert len(summary["claims"]) == 2 and (tmp_path / "depth" / "report.md").is_file()
    seeds = len(summary["runs"][0]["seeds"])
    assert seeds > 1 and len(list((tmp_path / "depth" / "runs").iterdir())) == 2 * seeds  # every seed trained
    header = (tmp_path / "depth" / "report.md").read_text().splitlines()[2]
    assert f"; {2 * seeds} runs (2 entries x {seeds} seeds)" in header  # not '2 runs'


def test_the_report_says_what_went_wrong_in_a_failed_entry(tmp_path):
    """A depth study whose 8-layer entry never leaves the mean colour (initial weights 10x smaller than
    the original's): the report names its layers' problems, computed from that run's layers.csv."""
    import json

    from helpers import tiny_target

    from monalisa.experiments.report.diagnosis import mean_colour_psnr
    from monalisa.runs.directory import RunDirectory

    target = tiny_target(24, 24)
    base = default_base("depth", quick=True).replace(epochs=4, init="original:scale=0.03")
    depth.study_depth(target, tmp_path / "depth", quick=True, base=base, jobs=1, quiet=True, depths=(1, 8),
                        budget=700, seeds=1)
    summary = json.loads((tmp_path / "depth" / "summary.json").read_text())
    deep = next(row for row in summary["runs"] if row["label"].startswith("d8"))
    assert deep["psnr"] < mean_colour_psnr(target) + 1  # it failed: the reason for a diagnosis
    diagnosis = next(d for d in summary["diagnoses"] if d["label"] == deep["label"])
    assert diagnosis["problem"].startswith("stuck near the mean colour")
    # The reference: the layer where the gradient fell two orders below the output layer's, from layers.csv
    rows = RunDirectory(tmp_path / "depth" / deep["run_dir"]).layers()
    last = [row for row in rows if row["epoch"] == 4]
    grad = {k: float(np.median([r["grad_rms"] for r in last if r["layer"] == k])) for k in range(1, 10)}
    fallen = next(k for k in range(8, 0, -1) if math.log10(grad[k] / grad[9]) <= -2)
    assert diagnosis["findings"][0].startswith(f"vanishing gradients: from layer {fallen} down")
    report = (tmp_path / "depth" / "report.md").read_text()
    assert "## What went wrong" in report and diagnosis["findings"][0] in report
    assert "What went wrong" in (tmp_path / "depth" / "report.html").read_text()
