"""monalisa.experiments.search: the search space, recipes within the budget, and a real search on the two-node cluster.

The budget arithmetic is checked against PyTorch's own parameter count (helpers.torch_count); the
space against Optuna's real sampler; the search itself on conftest.py's `ray_cluster` with a few
trials of a couple of seconds on 16x24 pixels, ending in a leaderboard and a best recipe that
`monalisa train --recipe` trains.
"""

import csv
import json
import tomllib

import numpy as np
import pytest
from helpers import run_cli, run_cli_ok, torch_count
from PIL import Image

from monalisa.cli import count_type
from monalisa.data.images import load_target
from monalisa.errors import UserError
from monalisa.experiments.search import SearchSpace, recipe_for, suggest
from monalisa.recipes.recipe import load_recipe

BUDGET = 272_703  # the original 4x300's count
CONFIGS = [
    {"depth": 4, "activation": "leaky_relu", "encoding": "none", "optimizer": "momentum", "lr": 0.1,
     "batch_size": 1024},
    {"depth": 1, "activation": "relu", "encoding": "none", "optimizer": "adam:beta2=0.99,eps=1e-15", "lr": 1e-3,
     "batch_size": 4096},
    {"depth": 6, "activation": "sine", "encoding": "positional", "octaves": 12, "optimizer": "adam", "lr": 1e-4,
     "batch_size": 16384},
    {"depth": 3, "activation": "gelu", "encoding": "fourier", "features": 256, "sigma": 10.0, "optimizer": "adam",
     "lr": 3e-3, "batch_size": 4096},
    {"depth": 2, "activation": "silu", "encoding": "hashgrid", "levels": 16, "base": 4, "table_share": 0.9,
     "optimizer": "adam", "lr": 1e-2, "batch_size": 16384},
    {"depth": 6, "activation": "tanh", "encoding": "hashgrid", "levels": 8, "base": 16, "table_share": 0.3,
     "optimizer": "adam", "lr": 1e-2, "batch_size": 1024},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['depth']}-{c['encoding']}")
def test_recipe_fills_the_budget_without_going_over(config):
    recipe = recipe_for(config, BUDGET)
    count = torch_count(recipe)  # PyTorch's count of the built network: the reference
    assert count <= BUDGET
    assert count >= 0.95 * BUDGET  # as wide as fits: one unit wider would go over
    wider = recipe.replace(arch=(recipe.arch[0] + 1,) * len(recipe.arch))
    assert torch_count(wider) > BUDGET
    assert len(recipe.arch) == config["depth"] and recipe.encoding.split(":")[0] == config["encoding"]
    assert recipe.init == ("siren" if config["activation"] == "sine" else "torch")


def test_the_4x300_network_is_the_original_width():
    """The budget is the original 4x300's count, so depth 4 without an encoding is exactly 4x300."""
    assert recipe_for(CONFIGS[0], BUDGET).arch == (300,) * 4


def test_a_budget_too_small_for_the_encoding_is_a_user_error():
    with pytest.raises(UserError, match="raise the budget"):
        recipe_for(CONFIGS[3], 100)  # 256 Fourier features need 257 weights for one unit alone


def test_optuna_draws_within_the_space():
    """Optuna's TPE sampler through `suggest`, 30 draws: every name registered, every option in its range."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        suggest(trial, space)
        params = trial.params
        assert params["depth"] in space.depths and params["activation"] in space.activations
        assert params["optimizer"] in space.optimizers and params["batch_size"] in space.batch_sizes
        assert space.lr[0] <= params["lr"] <= space.lr[1]
        sizes = {"positional": {"octaves"}, "fourier": {"features", "sigma"},
                 "hashgrid": {"levels", "base", "table_share"}, "none": set()}[params["encoding"]]
        assert set(params) - {"depth", "activation", "encoding", "optimizer", "lr", "batch_size"} == sizes
        recipe_for(params, BUDGET)  # every draw is a recipe under the budget
        study.tell(trial, float(len(study.trials)))


def test_a_misspelt_component_in_the_space_is_a_user_error():
    with pytest.raises(UserError, match="unknown activation 'rleu'"):
        SearchSpace(activations=("relu", "rleu"))


@pytest.mark.parametrize("text, value", [("273k", 273_000), ("272703", 272_703), ("1.5M", 1_500_000),
                                         ("50K", 50_000)])
def test_budget_as_people_write_it(text, value):
    assert count_type(text) == value


@pytest.mark.parametrize("text", ["", "k", "1.5", "-3k", "nan", "1e400", "twelve"])
def test_budget_that_is_no_count_is_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        count_type(text)


# -- a real search --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    """`monalisa search` on the two-node cluster: four trials of at most 3 s of training, 5,000 parameters."""
    root = tmp_path_factory.mktemp("search")
    y, x = np.mgrid[0:24, 0:16] / 16.0
    pixels = np.stack([np.sin(5 * x) ** 2, np.cos(4 * y) ** 2, (x * y) % 1.0], axis=2)
    image = root / "waves.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(image)
    out = root / "search"
    status, stdout, stderr = run_cli_outside_capsys(["search", str(image), "--budget", "5k", "--minutes", "1.5",
                                                     "--trials", "4", "--trial-seconds", "3", "--out", str(out),
                                                     "--ray", ray_cluster.address])
    return image, out, status, stdout, stderr


def run_cli_outside_capsys(argv):
    """`monalisa ARGV` in this process, for a module fixture (capsys is a test's): status, stdout, stderr."""
    import contextlib
    import io

    from monalisa.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_search_writes_every_trial_and_a_leaderboard(searched):
    image, out, status, stdout, stderr = searched
    assert status == 0, stderr
    assert str(out / "report.html") in stdout and "best of" in stdout
    trials = sorted(path for path in (out / "runs").iterdir())
    assert 1 <= len(trials) <= 4
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["trial"] for row in rows) == sorted(path.name for path in trials)
    psnr = [float(row["psnr"]) if row["psnr"] else None for row in rows]  # none: stopped before an epoch
    finished = [row for row in rows if row["status"] in ("complete", "stopped")]
    assert len(finished) == len(rows)  # every trial an ordinary run that ended: completed, or stopped by ASHA
    assert [p for p, row in zip(psnr, rows) if row["status"] == "complete"] == \
        sorted((p for p, row in zip(psnr, rows) if row["status"] == "complete"), reverse=True)
    for trial in trials:  # an ordinary run directory, its ending written
        info = json.loads((trial / "run.json").read_text())
        assert info["status"] in ("complete", "stopped")
        assert (trial / "final.png").is_file() and (trial / "metrics.csv").is_file()
        assert load_recipe(trial / "recipe.json").parameter_count() <= 5_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == len(trials) and summary["best"]["label"] == rows[0]["trial"] or \
        rows[0]["status"] != "complete"
    for name in ("report.md", "report.html", "curves.png", "finals.png", "grid.gif", "search.json", "target.npy"):
        assert (out / name).is_file(), name
    assert "## Every trial" in (out / "report.md").read_text()
    assert (out / "tune").is_dir()  # Ray Tune's experiment, which a resume restores
    assert (out / "ray.log").is_file()  # what Ray and Optuna said, off the terminal


def test_search_progress_shows_from_the_first_second(searched):
    """Lines as the search starts, while it waits for Ray and the first workers, as each trial starts,
    reports its first epoch and ends (with the best so far), and never a silence much past a heartbeat."""
    import re

    from monalisa.experiments.search import HEARTBEAT_SECONDS

    _, out, status, _, stderr = searched
    assert status == 0, stderr
    lines = stderr.splitlines()
    assert lines[0].startswith("[0:00] search: starting ") and "joining the Ray cluster at 127.0.0.1:" in lines[0]
    assert lines[1].split("] ")[1].startswith("Ray ready: ") and str(out / "ray.log") in lines[1]
    assert "waiting for the first workers" in lines[2]
    assert lines[-1].endswith("] writing the leaderboard and the report")
    stamps = [int(m) * 60 + int(s) for m, s in (re.match(r"\[(\d+):(\d\d)\] ", line).groups() for line in lines)]
    assert stamps == sorted(stamps)
    # While Ray Tune runs (from Ray's start to the leaderboard): a loaded machine may stall its loop, which
    # beats the heartbeat, for a while
    during = stamps[1:-1]
    assert max(b - a for a, b in zip(during, during[1:])) <= HEARTBEAT_SECONDS + 30, stderr
    started = {re.search(r"trial-(\w+) started: ", line).group(1): i for i, line in enumerate(lines)
               if " started: " in line}
    assert started, stderr
    for i, line in enumerate(lines):
        found = re.search(r"\] trial-(\w+): (first epoch|.*best so far)", line)
        if found:  # a trial's first epoch and its end come after its start, its end after its first epoch
            assert started[found.group(1)] < i
            if "best so far" in line:
                assert all(found.group(1) not in later or "first epoch" not in later for later in lines[i:])
    assert "step" not in stderr and "raylet" not in stderr  # Optuna's and Ray's own messages are in ray.log


def test_the_best_recipe_trains_with_monalisa_train(searched, tmp_path, capsys):
    image, out, status, _, stderr = searched
    assert status == 0, stderr
    best = out / "best-recipe.toml"
    recipe = load_recipe(best)
    with open(best, "rb") as f:
        assert tomllib.load(f)["arch"] == list(recipe.arch)
    summary = json.loads((out / "summary.json").read_text())
    assert recipe.to_dict() == summary["best"]["recipe"]
    assert recipe.time_limit == 3  # the training time the search gave it
    lines = run_cli_ok(["train", str(image), "--recipe", str(best), "--epochs", "2", "--out",
                        str(tmp_path / "again"), "--quiet"], capsys)
    assert "2 epochs" in lines[-1]
    assert load_target(image).pixels.shape == (24, 16, 3)


def test_resuming_a_finished_search_is_a_user_error(searched, capsys):
    _, out, status, _, stderr = searched
    assert status == 0, stderr
    status, _, err = run_cli(["search", "--resume", str(out)], capsys)
    assert status == 2 and "finished search" in err


def test_ctrl_c_then_resume_finishes_the_search(ray_cluster, searched, tmp_path):
    """`monalisa search` in a process of its own: SIGINT once a trial trains, exit 130 and nothing
    finished; `--resume` restores Ray Tune's experiment and writes the leaderboard."""
    import signal
    import subprocess
    import sys
    import time

    image = searched[0]
    out = tmp_path / "search"
    search = [sys.executable, "-m", "monalisa.cli", "search", "--ray", ray_cluster.address, "--quiet"]
    process = subprocess.Popen([*search, str(image), "--budget", "5k", "--minutes", "1", "--trials", "3",
                                "--trial-seconds", "3", "--out", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("runs/*/metrics.csv")) and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert f"monalisa search --resume {out}" in err
    assert not (out / "summary.json").exists()
    resumed = subprocess.run([*search, "--resume", str(out)], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "summary.json").is_file() and (out / "best-recipe.toml").is_file()
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
        assert len(rows) == len(list((out / "runs").iterdir())) >= 1
    # --quiet: the two result lines on stdout, nothing on stderr; whatever Optuna and Ray said (Optuna warns of
    # every step a restored trial reports again: hundreds on a longer search) is in ray.log
    # (test_chatter_goes_to_the_log_and_our_lines_to_the_terminal has each kind of message)
    assert resumed.stdout.splitlines() == [str(out / "report.html"), resumed.stdout.splitlines()[1]]
    assert resumed.stdout.splitlines()[1].startswith(f"best of {len(rows)} trials: {rows[0]['trial']}, ")
    assert resumed.stderr == ""
    assert (out / "ray.log").is_file()


def test_a_trial_still_writing_its_ending_is_waited_for(tmp_path):
    """Ray Tune may return while a trial ASHA stopped is still writing its ending: the search waits for its
    lock instead of failing (seen on a loaded machine: 'being written by another process')."""
    import threading
    import time

    from helpers import tiny_target

    from monalisa.experiments.search import _settle
    from monalisa.recipes.recipe import Recipe
    from monalisa.runs.directory import RunDirectory
    from monalisa.runs.lifecycle import finish_run, train_run

    path = tmp_path / "trial-x"
    train_run(tiny_target(), Recipe(arch=(4,), epochs=2), path, quiet=True)
    with RunDirectory.open(path).writing() as run:
        run.update_info(status="interrupted")  # killed mid-run, as ASHA stops a trial
    held, released = threading.Event(), []

    def trial_writing_its_ending():  # the trial's own process, here a thread with its own lock file handle
        with RunDirectory.open(path).writing():
            held.set()
            time.sleep(1.5)
            released.append(time.monotonic())

    writer = threading.Thread(target=trial_writing_its_ending)
    writer.start()
    held.wait(10)
    _settle(RunDirectory.open(path), finish_run)
    settled = time.monotonic()
    writer.join()
    assert released and settled >= released[0]  # it waited for the trial to let go of the run
    assert RunDirectory.open(path).info()["status"] == "stopped"
    assert (path / "learning.gif").is_file()


# -- the ranking rule ------------------------------------------------------------------------------------


def trial(label, status, psnr, seconds):
    return {"label": label, "status": status, "psnr": psnr, "train_seconds": seconds}


def test_the_ranking_rule_puts_complete_trials_first_then_rungs_then_psnr():
    """60 s trials, ASHA's rungs at 7.5, 22.5 and 67.5 s: the order written out by hand."""
    from monalisa.experiments.search import asha_rungs, rank_trials

    assert asha_rungs(60) == pytest.approx([7.5, 22.5, 67.5])
    trials = [
        trial("stopped-early-high", "stopped", 31.0, 8.0),  # rung 1, the highest PSNR of all
        trial("diverged", "diverged", 35.0, 40.0),
        trial("complete-low", "complete", 28.0, 60.2),
        trial("stopped-late", "stopped", 27.0, 23.0),  # rung 2: kept by ASHA past 22.5 s
        trial("complete-high", "complete", 29.9, 60.1),
        trial("interrupted-late", "interrupted", 26.0, 30.0),
        trial("no-epoch", "error", None, 0.0),
        trial("before-any-rung", "stopped", 33.0, 5.0),
    ]
    assert [row["label"] for row in rank_trials(trials, 60)] == [
        "complete-high", "complete-low", "stopped-late", "interrupted-late", "stopped-early-high",
        "before-any-rung", "diverged", "no-epoch"]
    assert rank_trials(trials, 60) == rank_trials(trials[::-1], 60)  # the order of the input does not matter


@pytest.fixture(scope="module")
def crafted_search(tmp_path_factory):
    """A search directory of three trials without Ray: 'trial-done' complete after one epoch; 'trial-cut'
    stopped (as by ASHA) after 40 epochs, with the higher PSNR; 'trial-blown' the same 40 epochs, diverged."""
    import shutil

    from helpers import tiny_target

    from monalisa.recipes.recipe import Recipe
    from monalisa.runs.directory import RunDirectory
    from monalisa.runs.lifecycle import train_run

    out = tmp_path_factory.mktemp("crafted") / "search"
    target = tiny_target()
    recipe = Recipe(arch=(16,), optimizer="adam", lr=1e-2, time_limit=60.0)
    train_run(target, recipe.replace(epochs=1), out / "runs" / "trial-done", quiet=True)
    train_run(target, recipe.replace(epochs=40), out / "runs" / "trial-cut", quiet=True)
    shutil.copytree(out / "runs" / "trial-cut", out / "runs" / "trial-blown")
    for key, status in (("trial-cut", "stopped"), ("trial-blown", "diverged")):
        with RunDirectory.open(out / "runs" / key).writing() as run:
            run.update_info(status=status)
    image = out.parent / "tiny.png"
    Image.fromarray((target.pixels * 255).round().astype(np.uint8)).save(image)
    # `monalisa search` as it ends: run_search's end (_write_leaderboard) on these trials, then the CLI's lines
    import monalisa.experiments.search as search

    settings = {"budget": 5_000, "minutes": 1.0, "trials": 3, "trial_seconds": 60.0, "seed": 0, "device": "cpu"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search, "run_search", lambda target, path, **kwargs: search._write_leaderboard(
            out, target, settings))
        status, stdout, stderr = run_cli_outside_capsys(["search", str(image), "--out", str(out)])
    assert status == 0, stderr
    return out, stdout.splitlines()


def test_leaderboard_report_cli_and_best_recipe_name_the_same_best(crafted_search):
    """A stopped trial with a higher PSNR than the complete one: the rule ranks the complete one first, and
    leaderboard.csv's row 1, the CLI's best, summary.json and best-recipe.toml all name it."""
    out, lines = crafted_search
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    psnr = {row["trial"]: float(row["psnr"]) for row in rows}
    assert psnr["trial-cut"] > psnr["trial-done"]  # the case the rule decides
    assert [row["trial"] for row in rows] == ["trial-done", "trial-cut", "trial-blown"]
    assert [row["finished"] for row in rows] == ["yes", "no", "yes"]  # diverged is finished, and last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["label"] == "trial-done" and summary["leaderboard"][0]["label"] == "trial-done"
    assert lines[1].startswith(f"best of 3 trials: trial-done, PSNR {psnr['trial-done']:.2f} dB after ")
    best = (out / "best-recipe.toml").read_text()
    assert best.startswith("# trial-done: ")
    assert load_recipe(out / "best-recipe.toml").to_dict() == json.loads(rows[0]["recipe"])
    assert json.loads(rows[0]["recipe"])["epochs"] == 1


def test_unfinished_trials_are_marked_in_the_report(crafted_search):
    out, _ = crafted_search
    report = (out / "report.md").read_text()
    table = report.split("## Every trial")[0]
    assert "| trial-cut (unfinished: stopped after " in table and "| trial-done |" in table
    assert "of 60 s" in table
    every = report.split("## Every trial")[1]
    assert "| 2 | trial-cut | **unfinished**: stopped after " in every
    assert "3 trials, 1 diverged, 1 unfinished" in report.splitlines()[2]
    page = (out / "report.html").read_text()
    assert "trial-cut (unfinished: stopped after" in page
    done_row = next(row for row in page.split("<tr>") if row.startswith("<td>trial-done</td>"))
    assert 'class="best"' in done_row and page.count('class="best"') == 1  # not the stopped trial's higher PSNR


# -- where Ray's and Optuna's own messages go ----------------------------------------------------------------


def test_chatter_goes_to_the_log_and_our_lines_to_the_terminal(tmp_path, capfd):
    """Each way Ray and Optuna speak, as they do it (the raylet's paragraph through Ray's own
    print_to_stdstream, the C++ core on descriptor 2, loggers, Optuna's real warning of a step reported
    twice): all in the log, none on the
    terminal, while our own line on sys.stderr still gets there."""
    import logging
    import os
    import sys

    pytest.importorskip("ray")
    optuna = pytest.importorskip("optuna")
    from ray._private.worker import print_to_stdstream

    from monalisa.execution.ray_cluster import chatter_to

    log = tmp_path / "ray.log"
    with chatter_to(log, startup="core: retrying the connection\n"):
        print_to_stdstream({"lines": ["A worker died or was killed while executing a task"], "pid": "raylet",
                            "is_err": False}, ignore_prefix=False)
        os.write(2, b"[core_worker.cc:123] a C++ line\n")
        logging.getLogger("ray.tune").warning("a Ray Tune warning")
        logging.getLogger("optuna").warning("an Optuna warning")
        study = optuna.create_study(direction="maximize")  # a restored trial reporting a step again, as Optuna warns
        again = study.ask()
        again.report(20.0, step=3)
        again.report(21.0, step=3)
        print("trial-x: our own line", file=sys.stderr)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err.strip() == "trial-x: our own line"
    text = log.read_text()
    for said in ("retrying the connection", "(raylet)", "A worker died", "a C++ line", "a Ray Tune warning",
                 "an Optuna warning", "`step=3` is already reported"):
        assert said in text, said
    print("after", file=sys.stderr)
    os.write(2, b"fd 2 is back\n")
    assert capfd.readouterr().err == "after\nfd 2 is back\n"  # everything put back
