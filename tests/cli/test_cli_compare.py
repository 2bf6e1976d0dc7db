"""`monalisa compare` and `monalisa study`: flags in, the right API calls out.

One real comparison (two tiny networks, 16x12 pixels, 2 epochs) is trained for the module
and resumed once; everything else replaces ``run_comparison`` with a recorder, so the
entries each command builds are checked against recipes written out by hand, parameter
counts against torch's count of the built model, and nothing trains.
"""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli_ok, snapshot, torch_count, write_png

from monalisa import cli
from monalisa.cli import main
from monalisa.experiments import compare
from monalisa.experiments.studies import tips
from monalisa.recipes.recipe import Recipe, get_preset
from monalisa.recipes.sizes import TOLERANCE

WIDTH, HEIGHT = 16, 12


# -- one real comparison, and its resume --------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    image = root / "tiny.png"
    write_png(image, WIDTH, HEIGHT, seed=1)
    out = root / "cmp"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["compare", str(image), "--arch", "2x8", "--arch", "1x8", "--epochs", "2", "--jobs", "2",
                       "--quiet", "--out", str(out)])
    assert status == 0
    return out, stdout.getvalue()


def test_compare_trains_one_run_per_arch(comparison):
    out, printed = comparison
    summary = json.loads((out / "summary.json").read_text())
    recipes = [Recipe.from_dict(row["recipe"]) for row in summary["runs"]]
    # the quick preset (the original for 30 epochs) with each --arch and the common --epochs
    assert recipes == [Recipe(arch=(8, 8), epochs=2), Recipe(arch=(8,), epochs=2)]
    assert [row["status"] for row in summary["runs"]] == ["complete", "complete"]
    assert (summary["image"], summary["width"], summary["height"]) == ("tiny", WIDTH, HEIGHT)
    assert (out / "report.html").is_file()
    assert printed.splitlines() == [str(out / "report.html"), summary["conclusion"]]


def test_compare_resume_of_a_finished_comparison_trains_nothing(comparison, capsys):
    out, _ = comparison
    metrics = sorted((out / "runs").glob("*/metrics.csv"))
    assert len(metrics) == 2
    before = {path: path.stat().st_mtime_ns for path in metrics}
    assert main(["compare", "--resume", str(out), "--jobs", "2", "--quiet"]) == 0
    assert {path: path.stat().st_mtime_ns for path in metrics} == before
    summary = json.loads((out / "summary.json").read_text())
    assert capsys.readouterr().out.splitlines() == [str(out / "report.html"), summary["conclusion"]]


# -- user mistakes ------------------------------------------------------------------------------


@pytest.fixture
def workspace(workspace):
    """conftest's workspace holding a small PNG and a folder that is not a comparison; the cwd an empty folder."""
    write_png(workspace / "tiny.png", WIDTH, HEIGHT)
    (workspace / "not-a-comparison").mkdir()
    (workspace / "not-a-comparison" / "notes.txt").write_text("mine\n")
    return workspace


MISTAKES = {
    # name: (arguments with {d} for the workspace, words the message must contain)
    "compare one recipe": (["compare", "{d}/tiny.png", "--arch", "2x8"], "give at least two recipes to compare"),
    "compare one preset": (["compare", "{d}/tiny.png", "--preset", "quick"], "give at least two recipes to compare"),
    "compare no image": (["compare", "--arch", "2x8", "--arch", "1x8"], "give the IMAGE"),
    "compare missing image": (["compare", "{d}/nothere.png", "--arch", "2x8", "--arch", "1x8"], "does not exist"),
    "compare --arch with two presets": (["compare", "{d}/tiny.png", "--arch", "2x8", "--preset", "quick", "--preset",
                                         "fast"], "one --preset"),
    "compare malformed --arch": (["compare", "{d}/tiny.png", "--arch", "2x8", "--arch", "4x"], "--arch"),
    "compare --resume a non-comparison": (["compare", "--resume", "{d}/not-a-comparison"],
                                          "is not a comparison directory"),
    "compare --resume with a recipe flag": (["compare", "--resume", "{d}/not-a-comparison", "--epochs", "3"],
                                            "drop --epochs"),
    "unknown study": (["study", "nosuch", "{d}/tiny.png"], "invalid choice: 'nosuch'"),
    "--budget with tips": (["study", "tips", "{d}/tiny.png", "--budget", "5000"],
                           "--budget applies to the depth and encodings studies, not tips"),
    "--depths with encodings": (["study", "encodings", "{d}/tiny.png", "--depths", "1,2"],
                                "--depths applies to the depth study, not encodings"),
    "malformed --depths": (["study", "depth", "{d}/tiny.png", "--depths", "1,,2"], "--depths"),
    "zero in --depths": (["study", "depth", "{d}/tiny.png", "--depths", "0,2"], "--depths"),
    "huge depth": (["study", "depth", "{d}/tiny.png", "--depths", "100000000"], "at most 1,000"),
    "zero seeds": (["study", "tips", "{d}/tiny.png", "--seeds", "0"], "at least one seed"),
    "malformed seeds": (["compare", "{d}/tiny.png", "--arch", "4", "--arch", "8", "--seeds", "1,x"],
                        "write a number of seeds"),
    "a seed twice": (["compare", "{d}/tiny.png", "--arch", "4", "--arch", "8", "--seeds", "3,3"],
                     "lists a seed twice"),
    "too many seeds": (["study", "depth", "{d}/tiny.png", "--seeds", "101"], "seeds must be 1 to 100"),
    "one seed for the noise study": (["study", "noise", "{d}/tiny.png", "--seeds", "1"], "--seeds 2 or more"),
    "a long repeated list is not echoed whole": (["study", "depth", "{d}/tiny.png", "--depths", ",".join(["3"] * 5000)],
                                                 "(4,988 more)"),
    "repeated --depths": (["study", "depth", "{d}/tiny.png", "--depths", "2,2"], "depths lists a value twice"),
    "--arch with depth": (["study", "depth", "{d}/tiny.png", "--arch", "2x8"], "drop --arch"),
    "study bad recipe flag": (["study", "tips", "{d}/tiny.png", "--init", "torch"], "init"),
    "study --resume a non-comparison": (["study", "tips", "--resume", "{d}/not-a-comparison"],
                                        "is not a comparison directory"),
    "study missing image": (["study", "tips", "{d}/nothere.png"], "does not exist"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_user_mistake_is_one_line_and_writes_nothing(name, workspace, capsys):
    argv, words = MISTAKES[name]
    out = workspace / "out"
    argv = [a.format(d=workspace) for a in argv]
    if "--resume" not in argv:
        argv += ["--out", str(out)]
    before = snapshot(workspace)
    assert main([*argv, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert words in assert_one_line_error(captured.err)
    assert captured.out == ""
    assert not out.exists()
    assert snapshot(workspace) == before  # no runs/ in the cwd, nothing touched


def test_help_reads(capsys):
    for command, words in (("compare", ["--arch", "--preset", "--recipe", "--jobs", "--resume", "--epochs"]),
                           ("study", ["depth", "tips", "encodings", "--quick", "--budget", "--depths", "Mona Lisa"])):
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        assert exit.value.code == 0
        text = capsys.readouterr().out
        assert all(word in text for word in words), (command, text)


# -- flags -> entries, with run_comparison replaced -----------------------------------------------


@pytest.fixture
def recorded(monkeypatch):
    """Replaces run_comparison in cli and in studies: records each call, trains nothing."""
    calls = []

    def fake(target, entries, out, **kwargs):
        calls.append({"target": target, "entries": entries, "out": Path(out), **kwargs})
        claims = [{"claim": "a claim", "supported": True, "evidence": "e"},
                  {"claim": "another", "supported": None, "evidence": "e"}]
        return {"runs": [], "conclusion": "The conclusion.", "claims": claims if "claims" in kwargs else []}

    monkeypatch.setattr(cli, "run_comparison", fake)
    monkeypatch.setattr(compare, "run_comparison", fake)
    return calls


def test_compare_entries_from_presets_recipes_and_archs(workspace, recorded, capsys):
    image = str(workspace / "tiny.png")
    recipe_file = workspace / "mine.toml"
    recipe_file.write_text('arch = "3x8"\noptimizer = "adam"\nbatch_size = 16\n')
    out = str(workspace / "cmp")

    run_cli_ok(["compare", image, "--preset", "quick", "--preset", "fast", "--epochs", "2", "--out", out], capsys)
    assert [r for _, r in recorded[-1]["entries"]] == [get_preset("quick").replace(epochs=2),
                                                        get_preset("fast").replace(epochs=2)]

    run_cli_ok(["compare", image, "--preset", "fast", "--arch", "16", "--arch", "2x8", "--out", out], capsys)
    assert [r for _, r in recorded[-1]["entries"]] == [get_preset("fast").replace(arch=(16,)),
                                                        get_preset("fast").replace(arch=(8, 8))]

    # the common flags reach the recipe file's entry too; --arch alone builds on the quick preset
    run_cli_ok(["compare", image, "--arch", "2x8", "--recipe", str(recipe_file), "--seed", "5", "--out", out], capsys)
    assert [r for _, r in recorded[-1]["entries"]] == [
        Recipe(arch=(8, 8), epochs=30, seed=5),
        Recipe(arch=(8, 8, 8), optimizer="adam", batch_size=16, seed=5)]

    # a single --preset is an entry beside a recipe file; a repeated recipe gets its own label
    run_cli_ok(["compare", image, "--preset", "quick", "--arch", "2x8", "--arch", "2x8", "--out", out], capsys)
    labels = [label for label, _ in recorded[-1]["entries"]]
    assert labels == ["2x8-leaky_relu-sgd-b1", "2x8-leaky_relu-sgd-b1-2"]
    run_cli_ok(["compare", image, "--preset", "quick", "--recipe", str(recipe_file), "--out", out], capsys)
    assert [r for _, r in recorded[-1]["entries"]] == [
        get_preset("quick"), Recipe(arch=(8, 8, 8), optimizer="adam", batch_size=16)]
    call = recorded[-1]
    assert (call["out"], call["jobs"], call["device"], call["quiet"]) == (Path(out), None, "auto", False)
    assert call["target"].pixels.shape == (HEIGHT, WIDTH, 3)


def test_compare_default_out_and_image_size(workspace, recorded, capsys):
    printed = run_cli_ok(["compare", str(workspace / "tiny.png"), "--arch", "2x8", "--arch", "1x8", "--size", "8x6",
                       "--jobs", "3", "--device", "cpu"], capsys)
    call = recorded[-1]
    assert re.fullmatch(r"runs/compare-tiny-\d{8}-\d{6}", call["out"].as_posix())
    assert (call["jobs"], call["device"]) == (3, "cpu")
    assert call["target"].pixels.shape == (6, 8, 3)
    assert printed == [str(call["out"] / "report.html"), "The conclusion."]


@pytest.fixture
def large_png(workspace):
    """80 wide, 100 high: larger than quick mode's 64 px, so the shrink shows."""
    write_png(workspace / "large.png", 80, 100, seed=2)
    return str(workspace / "large.png")


def test_study_depth_passes_flags_budget_and_depths(workspace, large_png, recorded, capsys):
    out = workspace / "depth"
    printed = run_cli_ok(["study", "depth", large_png, "--quick", "--epochs", "3", "--budget", "5000",
                       "--depths", "1,2", "--jobs", "2", "--out", str(out)], capsys)
    call = recorded[-1]
    recipes = [recipe for _, recipe in call["entries"]]
    assert [len(recipe.arch) for recipe in recipes] == [1, 2]
    for recipe in recipes:
        assert abs(torch_count(recipe) - 5000) <= TOLERANCE * 5000
        # all but the architecture is the original recipe, for the 3 epochs asked
        assert recipe.replace(arch=(300,) * 4) == get_preset("original").replace(epochs=3)
    assert "5,000" in call["title"]
    # quick: the longest side shrunk to 64 px, 80x100 -> 51x64
    assert call["target"].pixels.shape == (64, 51, 3)
    assert (call["out"], call["jobs"], call["resume"], call["quiet"]) == (out, 2, False, False)
    assert printed == [str(out / "report.html"), "The conclusion.", "supported: a claim", "inconclusive: another"]


def test_study_tips_lr_reaches_the_baseline(workspace, large_png, recorded, capsys):
    run_cli_ok(["study", "tips", large_png, "--quick", "--lr", "0.05", "--out", str(workspace / "tips")], capsys)
    call = recorded[-1]
    entries = dict(call["entries"])
    assert entries["original"] == get_preset("original").replace(epochs=tips.TIPS_QUICK_EPOCHS, lr=0.05)
    assert entries["lr-x10"].lr == 0.5 and entries["lr-x0.1"].lr == 0.005
    assert entries["rprop-sigmoid"].lr == get_preset("rprop-sigmoid").lr  # the reader's set-up keeps its own
    assert call["target"].pixels.shape == (64, 51, 3)


def test_study_default_image_and_out(workspace, recorded, capsys):
    run_cli_ok(["study", "encodings", "--quick", "--budget", "20000", "--epochs", "1"], capsys)
    call = recorded[-1]
    assert re.fullmatch(r"runs/study-encodings-astronaut-\d{8}-\d{6}", call["out"].as_posix())
    assert call["target"].pixels.shape == (64, 64, 3)  # astronaut is 512x512
    assert all(abs(torch_count(recipe) - 20000) <= TOLERANCE * 20000 for _, recipe in call["entries"])


def test_study_resume_takes_the_image_from_the_directory(comparison, recorded, capsys):
    out, _ = comparison
    run_cli_ok(["study", "tips", "--resume", str(out), "--epochs", "2"], capsys)
    call = recorded[-1]
    assert (call["out"], call["resume"]) == (out, True)
    np.testing.assert_array_equal(call["target"].pixels, np.load(out / "target.npy"))
    assert dict(call["entries"])["original"] == get_preset("original").replace(epochs=2)


@pytest.mark.parametrize("argv, how", [
    (["compare", "{d}/tiny.png", "--arch", "2x8", "--arch", "1x8", "--out", "{d}/cmp"],
     "continue with `monalisa compare --resume {d}/cmp`"),
    (["study", "tips", "{d}/tiny.png", "--out", "{d}/tips"],
     "continue with `monalisa study tips --resume {d}/tips` and the flags it started with"),
])
def test_ctrl_c_says_how_to_resume(argv, how, workspace, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_comparison", interrupted)
    monkeypatch.setattr(compare, "run_comparison", interrupted)
    assert main([a.format(d=workspace) for a in argv]) == 130
    assert capsys.readouterr().err.strip() == f"monalisa: interrupted; {how.format(d=workspace)}"
