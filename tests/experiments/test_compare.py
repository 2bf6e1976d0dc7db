"""monalisa.experiments.compare: several recipes on one image, the table, the figures and the reports.

One small comparison (two tiny networks and one that diverges, 16x12 pixels, 3 epochs)
is trained once for the module; the table is checked against each run's own metrics.csv
read independently, parameter and FLOP counts against sums done by hand, and the
conclusion against rows made by hand.
"""

import base64
import csv
import io
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from monalisa import Recipe, Target, UserError, get_preset
from monalisa.experiments import compare
from monalisa.experiments.compare import load_comparison, run_comparison
from monalisa.experiments.report import figures
from monalisa.experiments.tables import conclusion, flops_per_pixel

SMALL = Recipe(arch=(8,), epochs=3)
DEEP = Recipe(arch=(8, 8, 8), epochs=3)
BOOM = Recipe(arch=(8,), epochs=3, lr=10.0)  # diverges in epoch 1 (error signal above 1000)
ENTRIES = [("small", SMALL), ("deep", DEEP), ("boom", BOOM)]
TITLE = "Tiny <test> & co"  # markup in it: the HTML must escape it
OUTPUTS = ("comparison.json", "target.npy", "summary.json", "report.md", "report.html", "curves.png",
           "grid.mp4", "grid.gif", "finals.png")


def blobs_target() -> Target:
    y, x = np.mgrid[0:12, 0:16] / 16.0  # 12 rows, 16 columns
    pixels = np.stack([np.sin(6 * x) ** 2, np.cos(5 * y) ** 2, (x + y) / 2], axis=2)
    return Target(name="blobs", pixels=pixels.astype(np.float32))


def judge(rows):
    judge.seen = [row["label"] for row in rows]
    small, deep = rows[0], rows[1]
    return [{"claim": "depth helps", "supported": deep["psnr"] > small["psnr"],
             "evidence": f"deep {deep['psnr']:.2f} dB against small {small['psnr']:.2f} dB (x < y & z)"},
            {"claim": "boom trains", "supported": None, "evidence": "it diverged"}]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    summary = run_comparison(blobs_target(), ENTRIES, out, jobs=2, quiet=True, title=TITLE, claims=judge)
    return out, summary


def metrics_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


# -----------------------------------------------------------------------------
# the comparison directory


def test_writes_every_file(comparison):
    out, summary = comparison
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for label, _ in ENTRIES:
        assert (out / "runs" / label / "run.json").is_file()
        assert (out / "runs" / label / "metrics.csv").is_file()
    for label in ("small", "deep"):
        assert (out / "runs" / label / "final.png").is_file()
    assert json.loads((out / "summary.json").read_text()) == summary
    assert [run["label"] for run in summary["runs"]] == ["small", "deep", "boom"]
    assert (summary["title"], summary["image"], summary["width"], summary["height"]) == (TITLE, "blobs", 16, 12)
    assert not [p.name for p in out.rglob(".*.tmp-*")]  # no temporary files left behind


def test_load_comparison_gives_back_what_was_run(comparison):
    out, _ = comparison
    target, entries, title = load_comparison(out)
    assert entries == ENTRIES and title == TITLE
    np.testing.assert_array_equal(target.pixels, blobs_target().pixels)


def test_table_matches_each_runs_own_metrics(comparison):
    out, summary = comparison
    for run in summary["runs"][:2]:
        rows = metrics_csv(out / run["run_dir"] / "metrics.csv")
        assert run["status"] == "complete"
        assert run["epochs"] == len(rows) == 3
        assert run["psnr"] == pytest.approx(rows[-1]["psnr"], rel=1e-12)
        assert run["mae"] == pytest.approx(rows[-1]["mae"], rel=1e-12)
        times = sorted(row["train_seconds"] for row in rows)
        assert run["seconds_per_epoch"] == pytest.approx(times[1], rel=1e-12)  # the median of 3
        best = max(rows, key=lambda row: row["psnr"])
        assert run["best_epoch"] == best["epoch"] and run["best_psnr"] == pytest.approx(best["psnr"])
        elapsed = 0.0
        reached = {20.0: None, 25.0: None}
        for row in rows:
            elapsed += row["train_seconds"]
            for db in reached:
                if reached[db] is None and row["psnr"] >= db:
                    reached[db] = elapsed
        assert run["seconds_to_20"] == (None if reached[20.0] is None else pytest.approx(reached[20.0]))
        assert run["seconds_to_25"] == (None if reached[25.0] is None else pytest.approx(reached[25.0]))
    small, deep, _ = summary["runs"]
    # Parameters and FLOPs by hand: layers 2->8->3 and 2->8->8->8->3, each weight and bias.
    assert small["parameters"] == (2 * 8 + 8) + (8 * 3 + 3) == 51
    assert deep["parameters"] == (2 * 8 + 8) + 2 * (8 * 8 + 8) + (8 * 3 + 3) == 195
    assert small["flops_per_pixel"] == 6 * (2 * 8 + 8 * 3)
    assert deep["flops_per_pixel"] == 6 * (2 * 8 + 2 * 8 * 8 + 8 * 3)
    assert small["recipe"] == SMALL.to_dict() and small["describe"] == SMALL.describe()


def test_a_diverged_run_is_a_row_not_a_crash(comparison):
    out, summary = comparison
    boom = summary["runs"][2]
    assert boom["status"] == "diverged" and boom["epochs"] == 0
    assert boom["psnr"] is None and boom["seconds_per_epoch"] is None
    assert "boom diverged" in summary["conclusion"]
    assert "boom (diverged)" in (out / "report.md").read_text()


def test_conclusion_names_the_best_run_of_the_table(comparison):
    _, summary = comparison
    small, deep, _ = summary["runs"]
    best = small if round(small["psnr"], 1) > round(deep["psnr"], 1) else deep
    other = deep if best is small else small
    if round(small["psnr"], 1) == round(deep["psnr"], 1):
        assert summary["conclusion"].startswith("small and deep both reached")
    else:
        assert summary["conclusion"].startswith(f"{best['label']} reached the highest PSNR ({best['psnr']:.1f} dB")
        assert f"the lowest, {other['label']} ({other['psnr']:.1f} dB)" in summary["conclusion"]


# -----------------------------------------------------------------------------
# the conclusion, from rows made by hand


def row(label, psnr, parameters=1000, to_20=None, to_25=None, status="complete"):
    return {"label": label, "psnr": psnr, "parameters": parameters, "seconds_to_20": to_20, "seconds_to_25": to_25,
            "status": status}


def test_conclusion_follows_the_numbers():
    a, b = row("4x300", 27.1, 272_703, 3.2, 9.0), row("1x1000", 24.8, 4_003, 1.5)
    text = conclusion([a, b])
    assert text.startswith("4x300 reached the highest PSNR (27.1 dB, 272,703 parameters), "
                           "2.3 dB above the lowest, 1x1000 (24.8 dB)")
    assert "the fastest to 20 dB was 1x1000 (1.5 s), to 25 dB 4x300 (9 s)" in text
    # Swap the PSNRs and the times: the sentence follows.
    a, b = row("4x300", 24.8, 272_703, 1.5), row("1x1000", 27.1, 4_003, 3.2, 9.0)
    text = conclusion([a, b])
    assert text.startswith("1x1000 reached the highest PSNR (27.1 dB, 4,003 parameters), "
                           "2.3 dB above the lowest, 4x300 (24.8 dB)")
    assert "the fastest to 20 dB was 4x300 (1.5 s), to 25 dB 1x1000 (9 s)" in text


def test_conclusion_handles_ties_divergence_single_runs_and_unreached_thresholds():
    assert conclusion([row("a", 25.04), row("b", 24.96)]).startswith("a and b both reached the same PSNR, 25.0 dB")
    assert conclusion([row("a", 30.0), row("b", 30.0), row("c", 20.0)]).startswith(
        "a and b tied for the highest PSNR (30.0 dB), 10.0 dB above the lowest, c (20.0 dB)")
    assert conclusion([row("a", 12.0), row("b", 11.0)]).endswith("; no run reached 20 dB.")
    assert conclusion([row("a", None, status="diverged"), row("b", None, status="diverged")]) == \
        "All 2 runs diverged (a and b); there is nothing to compare."
    assert conclusion([row("a", None, status="diverged")]) == "a diverged; there is nothing to compare."
    assert conclusion([row("a", 26.0, 51, 0.25, 0.5)]) == "a reached 26.0 dB (51 parameters), 20 dB after 250 ms " \
                                                           "and 25 dB after 500 ms."
    text = conclusion([row("a", 22.0, to_20=2.0), row("b", 21.0, to_20=1.0), row("c", 5.0, status="diverged")])
    assert text == ("a reached the highest PSNR (22.0 dB, 1,000 parameters), 1.0 dB above the lowest, b (21.0 dB); "
                    "the fastest to 20 dB was b (1 s). c diverged.")
    assert conclusion([]) == "No runs to compare."


# -----------------------------------------------------------------------------
# figures and reports


class Markup(HTMLParser):
    """Collects images and checks that every element that opens also closes, in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.mismatched, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.mismatched.append(tag)


def test_report_html_is_self_contained_and_escaped(comparison):
    out, summary = comparison
    page = (out / "report.html").read_text()
    assert 'src="http' not in page and 'src="runs/' not in page and "href=\"http" not in page
    parser = Markup()
    parser.feed(page)
    parser.close()
    assert parser.mismatched == [] and parser.stack == []
    assert len(parser.images) == 3  # finals, curves, the grid animation
    formats = []
    for src in parser.images:
        assert src.startswith("data:image/")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            formats.append(image.format)
    assert sorted(formats) == ["GIF", "PNG", "PNG"]
    assert "Tiny &lt;test&gt; &amp; co" in page and "<test>" not in page
    assert "x &lt; y &amp; z" in page


def test_grid_has_the_target_then_one_panel_per_run(comparison):
    out, _ = comparison
    with Image.open(out / "grid.gif") as gif:
        assert gif.n_frames == 3  # epochs 1, 2, 3
        frame = np.asarray(gif.convert("RGB")).astype(int)
    # Panels are separated by full-height white gutters: 3 runs + the target = 4 panels, 3 gutters.
    white = (np.abs(frame - 255) <= 8).all(axis=2)
    gutters = np.flatnonzero(np.diff(white.all(axis=0).astype(int)) == 1)
    assert len(gutters) == len(ENTRIES)
    assert frame.shape[1] <= figures.MAX_GRID_WIDTH
    panel = (frame.shape[1] - figures.GUTTER * len(ENTRIES)) // (len(ENTRIES) + 1)
    starts = [i * (panel + figures.GUTTER) for i in range(len(ENTRIES) + 1)]
    assert starts[-1] + panel == frame.shape[1]
    for start in starts:  # every panel holds something: none is the white padding
        assert not white[:, start:start + panel].all()
    # The first is the target (up to the GIF's dithering), each pixel a k x k block.
    k = panel // 16
    target = (blobs_target().pixels * 255).round()
    first = frame[:12 * k, :16 * k].reshape(12, k, 16, k, 3).mean(axis=(1, 3))
    assert np.abs(first - target).mean() < 6
    # finals.png (lossless): its first panel is the target, each pixel an equal square block.
    finals = np.asarray(Image.open(out / "finals.png").convert("RGB"))
    target = (blobs_target().pixels * 255).round().astype(np.uint8)
    panel = (finals.shape[1] - figures.GUTTER * len(ENTRIES)) // (len(ENTRIES) + 1)
    k = panel // 16
    assert panel == 16 * k and k >= 2
    np.testing.assert_array_equal(finals[:12 * k, :16 * k], np.repeat(np.repeat(target, k, 0), k, 1))


def test_claims_land_in_summary_and_report(comparison):
    out, summary = comparison
    assert judge.seen == ["small", "deep", "boom"]  # the callback saw the table
    small, deep, _ = summary["runs"]
    assert summary["claims"][0]["claim"] == "depth helps"
    assert summary["claims"][0]["supported"] is (deep["psnr"] > small["psnr"])
    assert summary["claims"][1] == {"claim": "boom trains", "supported": None, "evidence": "it diverged"}
    report = (out / "report.md").read_text()
    verdict = "supported" if summary["claims"][0]["supported"] else "refuted"
    assert f"**{verdict}**: depth helps" in report
    assert "**inconclusive**: boom trains" in report and "it diverged" in report


# -----------------------------------------------------------------------------
# resuming, and refusing


def test_resume_reuses_finished_runs_and_trains_missing_ones(comparison, tmp_path, capsys):
    source, summary = comparison
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    shutil.rmtree(out / "runs" / "deep")
    kept = (out / "runs" / "small" / "metrics.csv").stat().st_mtime_ns
    target, entries, title = load_comparison(out)
    again = run_comparison(target, entries, out, jobs=2, resume=True, title=title)
    assert (out / "runs" / "small" / "metrics.csv").stat().st_mtime_ns == kept  # not retrained
    assert len(metrics_csv(out / "runs" / "deep" / "metrics.csv")) == 3  # trained again
    assert json.loads((out / "runs" / "deep" / "run.json").read_text())["status"] == "complete"
    assert again["runs"][0] == summary["runs"][0]
    assert again["runs"][1]["psnr"] == pytest.approx(summary["runs"][1]["psnr"], rel=1e-6)  # same seed, same run
    err = capsys.readouterr().err
    assert "small: already complete, reused" in err and "boom: already diverged, reused" in err
    assert "training 1 of 3 runs" in err and "deep: done, 3 epochs" in err


def test_an_existing_directory_needs_resume(comparison, tmp_path):
    out, _ = comparison
    before = (out / "comparison.json").stat().st_mtime_ns
    with pytest.raises(UserError, match="--resume"):
        run_comparison(blobs_target(), ENTRIES, out, quiet=True)
    with pytest.raises(UserError, match="another recipe"):
        run_comparison(blobs_target(), [("small", Recipe(arch=(9,), epochs=3))], out, resume=True, quiet=True)
    with pytest.raises(UserError, match="different image"):
        run_comparison(Target("other", np.zeros((12, 16, 3), np.float32)), ENTRIES, out, resume=True, quiet=True)
    assert (out / "comparison.json").stat().st_mtime_ns == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a comparison directory"):
        run_comparison(blobs_target(), ENTRIES, stranger, resume=True, quiet=True)
    assert sorted(p.name for p in stranger.iterdir()) == ["notes.txt"]


# -----------------------------------------------------------------------------
# labels and costs


def test_labels_are_safe_unique_and_checked(tmp_path):
    assert Recipe().label() == "4x300-leaky_relu-sgd-b1"
    assert Recipe().label(taken=["4x300-leaky_relu-sgd-b1"]) == "4x300-leaky_relu-sgd-b1-2"
    assert Recipe().label(taken=["4X300-LEAKY_RELU-SGD-B1", "4x300-leaky_relu-sgd-b1-2"]).endswith("-3")
    odd = Recipe(arch=(30, 20), activation=("sine", "relu"), encoding="fourier").label()
    assert compare.LABEL_PATTERN.match(odd) and odd == "fourier-30_20-sine+relu-sgd-b1"
    for entries in ([("a/b", SMALL)], [("..", SMALL)], [("", SMALL)], [("run", SMALL), ("RUN", DEEP)],
                    [("ok", "not a recipe")], []):
        with pytest.raises(UserError):
            run_comparison(blobs_target(), entries, tmp_path / "never", quiet=True)
    with pytest.raises(UserError, match="jobs"):
        run_comparison(blobs_target(), ENTRIES, tmp_path / "never", jobs=0, quiet=True)
    assert not (tmp_path / "never").exists()


def test_flops_per_pixel_of_the_original_is_recipe_md_figure():
    # Multiply-adds of 2->300->300->300->300->3, six FLOPs each (forward 2, backward 4).
    macs = 2 * 300 + 3 * 300 * 300 + 300 * 3
    assert flops_per_pixel(Recipe()) == 6 * macs == 1_629_000
    # docs/original.md: about 6 FLOPs per parameter per pixel, so about 1.6 MFLOP a pixel.
    assert flops_per_pixel(Recipe()) == pytest.approx(6 * 272_703, rel=0.01)
    assert round(flops_per_pixel(Recipe()) / 1e6, 1) == 1.6
    # The hash grid preset: 16 levels x 2 features into 2x64, plus 16 FLOPs a level and feature.
    assert flops_per_pixel(get_preset("hashgrid")) == 6 * (32 * 64 + 64 * 64 + 64 * 3) + 16 * 16 * 2


# -----------------------------------------------------------------------------
# several seeds


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """One recipe under two labels, and a smaller network, 3 seeds each."""
    out = tmp_path_factory.mktemp("seeds") / "out"
    entries = [("same-a", DEEP), ("same-b", DEEP), ("small", SMALL)]

    def claims(rows):
        from monalisa.experiments.studies.claims import versus
        return [versus("same-a beats same-b", rows[0], rows[1], 0.0, "same-a", "same-b")]

    summary = run_comparison(blobs_target(), entries, out, jobs=2, quiet=True, seeds=3, claims=claims)
    return out, summary


def test_each_seed_is_a_run_and_the_table_holds_their_spread(seeded):
    out, summary = seeded
    assert summary["seeds"] == 3
    small = summary["runs"][2]
    assert small["seeds"] == [0, 1, 2] and [run["seed"] for run in small["per_seed"]] == [0, 1, 2]
    finals = []
    for seed in (0, 1, 2):
        run = out / "runs" / f"small-s{seed}"
        assert json.loads((run / "recipe.json").read_text())["seed"] == seed
        finals.append(metrics_csv(run / "metrics.csv")[-1]["psnr"])
    assert len(set(finals)) == 3  # the seed changed the run
    stats = small["stats"]["psnr"]
    assert stats["values"] == pytest.approx(finals, abs=1e-4) and small["psnr"] == pytest.approx(np.mean(finals), abs=1e-4)
    assert stats["low"] <= stats["mean"] <= stats["high"] and stats["method"] == "BCa bootstrap"
    assert small["run_dir"] == f"runs/small-s{small['median_seed']}"
    assert sorted(finals)[1] == pytest.approx(metrics_csv(out / small["run_dir"] / "metrics.csv")[-1]["psnr"])
    for name in ("seeds.png", "curves.png", "grid.gif"):
        assert (out / name).is_file()
    assert "95% confidence interval" in (out / "report.md").read_text()


def test_the_report_header_counts_every_run_trained(seeded):
    """3 entries x 3 seeds are 9 runs trained, and the header says so, in both reports."""
    out, summary = seeded
    assert len(list((out / "runs").iterdir())) == 9
    assert "; 9 runs (3 entries x 3 seeds)" in (out / "report.md").read_text().splitlines()[2]
    assert "; 9 runs (3 entries x 3 seeds)" in (out / "report.html").read_text()


def test_header_counts_of_handmade_tables():
    """2 entries x 3 seeds with a diverged seed and a stopped one; uneven seeds; one seed each; one entry."""
    from monalisa.experiments.report.pages import _subtitle

    def entry(label, statuses):
        runs = [{"label": f"{label}-s{i}", "status": status} for i, status in enumerate(statuses)]
        return {"label": label, "status": statuses[0], "seeds": list(range(len(statuses))), "per_seed": runs}

    def header(*rows):
        return _subtitle({"image": "tiny", "width": 8, "height": 6, "runs": list(rows)}).rsplit(";", 1)[0]

    assert header(entry("a", ["complete"] * 3), entry("b", ["complete", "diverged", "stopped"])) == \
        "tiny, 8x6 pixels; 6 runs (2 entries x 3 seeds), 1 diverged, 1 unfinished"
    assert header(entry("a", ["complete"] * 2), entry("b", ["complete"] * 4)) == \
        "tiny, 8x6 pixels; 6 runs (2 entries x 2-4 seeds)"
    assert header(entry("a", ["complete"]), entry("b", ["diverged"])) == "tiny, 8x6 pixels; 2 runs, 1 diverged"
    assert header(entry("noise", ["complete"] * 20)) == "tiny, 8x6 pixels; 20 runs (1 entry x 20 seeds)"


def test_a_recipe_against_itself_never_wins(seeded):
    _, summary = seeded
    a, b = summary["runs"][:2]
    assert a["stats"]["psnr"]["values"] == b["stats"]["psnr"]["values"]  # the same seeds: the same runs
    assert summary["claims"][0]["supported"] is None  # even with a margin of 0
    assert "same-a and same-b" in summary["conclusion"]  # named together, never one above the other
    assert "same-a reached" not in summary["conclusion"] and "same-b reached" not in summary["conclusion"]


def test_a_multi_seed_resume_reuses_finished_seeds(seeded, tmp_path):
    out, _ = seeded
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "runs" / "small-s1")  # one seed lost
    kept = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in (copy / "runs").iterdir()}
    target, entries, title = load_comparison(copy)
    again = run_comparison(target, entries, copy, resume=True, quiet=True, title=title)
    for name, mtime in kept.items():
        assert (copy / "runs" / name / "checkpoint.pt").stat().st_mtime_ns == mtime, name  # reused, not retrained
    assert (copy / "runs" / "small-s1" / "final.png").is_file()
    assert again["runs"][2]["stats"]["psnr"]["values"] == pytest.approx(seeded[1]["runs"][2]["stats"]["psnr"]["values"])
    with pytest.raises(UserError, match="between one and several"):
        run_comparison(target, entries, copy, resume=True, quiet=True, seeds=1)
