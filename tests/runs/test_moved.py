"""The run directory's writer (runs/directory.py) when its run directory goes away under it: moved or deleted mid-training.

A `monalisa train` in a subprocess (a 2x8 network on 16x12 pixels, ~100 epochs a second) is
moved or removed after a few epochs; it must stop at its next write with one line and exit 2,
leave nothing at the old path (no folder made again, no TensorBoard traceback from its thread), and
a moved run continues where it now is. Every subprocess has a memory cap and a timeout and is
killed by its pid in a finally.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from monalisa import Recipe, load_target, train_run
from monalisa.models.network import build_model
from monalisa.runs.directory import RunDirectory, RunMoved

MEMORY = 4 * 2**30  # address-space cap for the subprocess: torch needs ~2 GiB of it
TIMEOUT = 180  # seconds for the subprocess to start, train a few epochs and stop (the machine is shared)


def start_training(out: Path) -> subprocess.Popen:
    """`monalisa train` into ``out`` for far more epochs than the test waits for."""
    code = ("from monalisa.cli import main\n"
            "raise SystemExit(main(['train', 'astronaut', '--size', '16x12', '--arch', '2x8', '--epochs', '100000', "
            f"'--out', {str(out)!r}, '--quiet']))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY)))


def wait_for_epochs(trainer: subprocess.Popen, out: Path, epochs: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            done = len((out / "metrics.csv").read_text().splitlines()) - 1
        except OSError:
            done = 0
        if done >= epochs:
            return
        assert trainer.poll() is None, trainer.communicate()
        assert time.monotonic() < deadline, "the run did not train in time"
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_cli_run_moved_or_deleted_mid_training_stops_in_one_line(tmp_path, how):
    out, elsewhere = tmp_path / "run", tmp_path / "moved"
    trainer = start_training(out)
    try:
        wait_for_epochs(trainer, out, 5)
        if how == "moved":
            os.rename(out, elsewhere)
        else:
            # As `rm -rf`, again if the writer put a file in the folder while it was being emptied
            # (the rm then fails with "Directory not empty"): once its lock file is gone it writes nothing.
            deadline = time.monotonic() + 30
            while out.exists():
                assert time.monotonic() < deadline, sorted(p.name for p in out.iterdir())
                shutil.rmtree(out, ignore_errors=True)
        _, err = trainer.communicate(timeout=TIMEOUT)
    finally:
        stop(trainer)
    assert trainer.returncode == 2, err
    line = assert_one_line_error(err)  # no traceback, from the main thread or TensorBoard's
    assert f"the run directory {str(out)!r} was moved or deleted while it trained; stopped" in line
    assert not out.exists()  # no ghost folder at the old path
    assert [p.name for p in tmp_path.iterdir()] == (["moved"] if how == "moved" else [])
    if how == "moved":
        # Everything it had written is there, whole: it resumes where it now is, from its checkpoint.
        run = RunDirectory.open(elsewhere)
        done = run.checkpoint()["epoch"]
        assert done >= 5 and [row["epoch"] for row in run.metrics()] == list(range(1, done + 1))
        assert json.loads((elsewhere / "run.json").read_text())["status"] == "running"  # not rewritten by the writer
        from monalisa.runs.lifecycle import resume_run

        result = resume_run(elsewhere, epochs=done + 2, quiet=True)
        assert [row["epoch"] for row in result.history] == list(range(1, done + 3))
        assert RunDirectory.open(elsewhere).info()["status"] == "complete"


def test_a_writer_makes_no_folder_at_the_old_path(tmp_path):
    """In this process, through the writer's own calls: each write after a move is RunMoved, the old
    path stays empty (no frames/ or snapshots/ made there), and a new folder at the old path is
    left alone, its lock file included."""
    recipe = Recipe(arch=(2, 8), epochs=3)
    target = load_target("astronaut", size=(16, 12))
    out = tmp_path / "run"
    run = RunDirectory.create(out, recipe, target, {})
    try:
        os.rename(out, tmp_path / "moved")
        frame = (target.pixels * 255).astype("uint8")
        for write in (lambda: run.write_metrics([]), lambda: run.update_info(status="error"),
                      lambda: run.write_checkpoint({"epoch": 0}), lambda: run.write_frame(1, frame),
                      lambda: run.write_snapshot(1, build_model(recipe)), lambda: run.write_end([], "error")):
            with pytest.raises(RunMoved, match="was moved or deleted while it trained; stopped"):
                write()
            assert not out.exists()
        out.mkdir()  # someone else's folder now: the old writer must not write into it, nor take its lock
        (out / ".lock").write_text("not yours\n")
        with pytest.raises(RunMoved):
            run.write_frame(1, frame)
    finally:
        run.unlock()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert (out / ".lock").read_text() == "not yours\n"
    assert (tmp_path / "moved" / "run.json").is_file() and not (tmp_path / "moved" / "snapshots").exists()


def test_a_run_in_place_trains_as_before(tmp_path):
    """The check costs nothing visible: a run that stays put trains to complete and unlocks."""
    out = tmp_path / "run"
    result = train_run(load_target("astronaut", size=(16, 12)), Recipe(arch=(2, 8), epochs=3), out, quiet=True)
    assert len(result.history) == 3
    assert RunDirectory.open(out).info()["status"] == "complete"
    assert not (out / ".lock").exists()
