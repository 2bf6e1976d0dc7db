"""The run directory under attack: readers never write, one writer per run, checkpoints are data not
code, a kill during the ending is finished by a resume, damage or a full disk is one line, and a file
a stranger crafted (a huge recipe, a lying header) is refused before anything is allocated.

Each test reproduces the attack first and then checks the fix against what is on disk. Runs are tiny
(a 2x8 network on 16x12 pixels) and every subprocess has a timeout and is killed in a finally.
"""

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CRAFTS, MEMORY_CAP, assert_one_line_error, craft, snapshot

from monalisa import Recipe, files, load_target, train_run
from monalisa.cli import main
from monalisa.errors import UserError
from monalisa.runs import directory
from monalisa.runs.directory import RunBusy, RunDirectory
from monalisa.runs.lifecycle import resume_run

RECIPE = Recipe(arch=(8, 8), epochs=3)
SIZE = (16, 12)
MEMORY = 4 * 2**30  # address-space cap for every subprocess: torch needs ~2 GiB of it


def tiny_run(path: Path, recipe: Recipe = RECIPE, **kwargs) -> Path:
    train_run(load_target("astronaut", size=SIZE), recipe, path, quiet=True, **kwargs)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A complete 3-epoch run, copied by the tests that change it."""
    return tiny_run(tmp_path_factory.mktemp("finished") / "run")


def copy_of(run: Path, tmp_path: Path, **info) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if info:
        data = json.loads((copy / "run.json").read_text())
        (copy / "run.json").write_text(json.dumps({**data, **info}))
    return copy


def python(code: str, **kwargs) -> subprocess.Popen:
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limits, **kwargs)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


# -- 1. readers never write ---------------------------------------------------------------------


def test_reading_a_run_leaves_a_writers_temporary_files_alone(finished, tmp_path, capsys):
    """The attack: `monalisa neurons` deleted the trainer's half-written checkpoint before its rename."""
    run = copy_of(finished, tmp_path)
    (run / ".checkpoint.pt.tmp-1a2b3c4d.pt").write_bytes(b"half a checkpoint")  # a live writer's file
    (run / "frames" / ".epoch-00004.png.tmp-5e6f7a8b.png").write_bytes(b"half a frame")
    before = snapshot(run)
    out = tmp_path / "out"
    assert main(["neurons", str(run), "--layer", "1", "--out", str(out / "n.png")]) == 0
    assert main(["render", str(run), "--out", str(out / "r.png")]) == 0
    assert main(["animate", str(run), "--out", str(out / "a.gif")]) == 0
    opened = RunDirectory.open(run)
    opened.info(), opened.recipe(), opened.target(), opened.checkpoint(), opened.metrics()
    assert snapshot(run) == before  # every file, the temporary ones included, byte for byte


def test_a_run_read_while_its_checkpoint_is_half_written_keeps_training(tmp_path, capsys):
    """The attack as reported (a trainer, and `neurons` in a loop), made deterministic: the trainer
    stops inside its second checkpoint write, after the temporary file is written and before its
    rename, while `monalisa neurons` reads the run; then the trainer must finish its rename and the run."""
    out, inside, go = tmp_path / "run", tmp_path / "inside", tmp_path / "go"
    code = ("import os, time\nimport torch\nsave = torch.save\ncalls = []\n"
            "def held(state, path, *args, **kwargs):\n"
            "    save(state, path, *args, **kwargs)\n"
            "    calls.append(path)\n"
            "    if len(calls) == 2:\n"
            f"        open({str(inside)!r}, 'w').close()\n"
            "        deadline = time.monotonic() + 60\n"
            f"        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
            "            time.sleep(0.01)\n"
            "torch.save = held\nfrom monalisa.cli import main\n"
            f"raise SystemExit(main(['train', 'astronaut', '--size', '16x12', '--arch', '2x8', '--epochs', '3', "
            f"'--out', {str(out)!r}, '--quiet']))")
    trainer = python(code)
    try:
        deadline = time.monotonic() + 60
        while not inside.exists():
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.communicate()[1]
            time.sleep(0.01)
        assert list(out.glob(".checkpoint.pt.tmp-*"))  # the trainer's half-written file
        for _ in range(3):
            assert main(["neurons", str(out), "--out", str(tmp_path / "n.png")]) == 0
        assert list(out.glob(".checkpoint.pt.tmp-*"))  # still there for its rename
        go.touch()
        _, err = trainer.communicate(timeout=60)
        assert trainer.returncode == 0, err
    finally:
        stop(trainer)
    assert [row["epoch"] for row in RunDirectory.open(out).metrics()] == [1, 2, 3]


# -- 2. one writer per run -----------------------------------------------------------------------


def test_a_second_writer_is_refused_in_one_line(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path, status="paused")
    holder = RunDirectory.open(run).lock()  # another writer (a lock is per open file, so this process counts)
    try:
        before = snapshot(run)
        assert main(["train", "--resume", str(run), "--epochs", "5", "--quiet"]) == 2
        line = assert_one_line_error(capsys.readouterr().err)
        assert f"is being written by another process (pid {os.getpid()})" in line
        assert snapshot(run) == before
        with pytest.raises(RunBusy):
            RunDirectory.open(run).lock()
    finally:
        holder.unlock()
    assert main(["train", "--resume", str(run), "--epochs", "5", "--quiet"]) == 0  # free again
    assert RunDirectory.open(run).checkpoint()["epoch"] == 5
    assert not (run / ".lock").exists()  # a writer that ends normally leaves no lock file


def test_a_killed_writer_leaves_no_stale_lock(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    holder = python(f"from monalisa.runs.directory import RunDirectory\nimport time\n"
                    f"RunDirectory.open({str(run)!r}).lock()\nprint('locked', flush=True)\ntime.sleep(60)")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            RunDirectory.open(run).lock()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        stop(holder)
    assert (run / ".lock").exists()  # the file stays behind: harmless, the kernel dropped the lock
    RunDirectory.open(run).lock().unlock()


def test_the_writer_removes_what_a_killed_writer_left(finished, tmp_path):
    run = copy_of(finished, tmp_path, status="paused")
    (run / ".metrics.csv.tmp-00000000.csv").write_text("left by a SIGKILL")
    with RunDirectory.open(run).writing():
        assert not list(run.rglob(".*.tmp-*"))


# -- 3. a checkpoint is data, never code ----------------------------------------------------------


class Trap:
    """Unpickling this calls open(marker, 'w'): the stand-in for any shell command."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", ["render", "neurons", "resume"])
def test_a_doctored_checkpoint_runs_nothing(finished, tmp_path, capsys, command):
    run = copy_of(finished, tmp_path, status="paused")
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**state, "engine": {"optimizer": Trap(marker)}}, run / "checkpoint.pt")
    argv = {"render": ["render", str(run), "--out", str(tmp_path / "r.png")],
            "neurons": ["neurons", str(run), "--out", str(tmp_path / "n.png")],
            "resume": ["train", "--resume", str(run), "--epochs", "5", "--quiet"]}[command]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "checkpoint.pt" in line and "not loaded" in line
    assert not marker.exists()


def test_checkpoints_of_every_engine_hold_plain_data_only(tmp_path):
    """What this version writes loads under weights_only (and so did the previous version's: same layout)."""
    for name, recipe in [("online", RECIPE), ("batched", RECIPE.replace(batch_size=8, optimizer="adam"))]:
        run = tiny_run(tmp_path / name, recipe.replace(epochs=1))
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert state["epoch"] == 1 and isinstance(state["rng"]["state"]["state"], int)


# -- 4. a kill during the ending is finished by a resume ------------------------------------------


def killed_in_the_ending(tmp_path: Path) -> Path:
    """A real run SIGKILLed by itself while it writes its MP4 (after every epoch's checkpoint)."""
    out = tmp_path / "killed"
    code = ("import os, signal\nimport monalisa.runs.animation as a\n"
            "a.write_mp4 = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)\n"
            "from monalisa.cli import main\n"
            f"main(['train', 'astronaut', '--size', '16x12', '--arch', '8x8', '--epochs', '3', '--out', {str(out)!r},"
            " '--quiet'])")
    process = python(code)
    try:
        process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode == -signal.SIGKILL
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert RunDirectory.open(out).checkpoint()["epoch"] == 3
    assert not (out / "learning.mp4").exists() and not (out / "curves.png").exists()
    return out


def test_resume_finishes_a_run_killed_in_its_ending(tmp_path, capsys):
    out = killed_in_the_ending(tmp_path)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    for name in ("final.png", "learning.gif", "learning.mp4", "curves.png"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run.json").read_text())
    assert (info["status"], info["stopped_by"], info["epochs_done"]) == ("complete", "epochs", 3)
    assert (out / "final.png").read_bytes() == (out / "frames" / "epoch-00003.png").read_bytes()
    assert [row["epoch"] for row in RunDirectory.open(out).metrics()] == [1, 2, 3]  # nothing trained again
    # Complete now, with its ending: the usual refusal.
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    assert "is complete (3 epochs, stopped by epochs)" in assert_one_line_error(capsys.readouterr().err)


def test_finishing_renders_a_last_frame_that_was_never_written(finished, tmp_path):
    run = copy_of(finished, tmp_path, status="running")
    last = run / "frames" / "epoch-00003.png"
    expected = last.read_bytes()
    for name in ("final.png", "curves.png", "learning.gif", "learning.mp4", "frames/epoch-00003.png"):
        (run / name).unlink()
    result = resume_run(run, quiet=True)
    assert result.stopped_by == "epochs" and len(result.history) == 3
    assert last.read_bytes() == expected and (run / "final.png").read_bytes() == expected


# -- 5. damage, a read-only run, a full disk: one line ---------------------------------------------

DAMAGE = {
    "checkpoint.pt": [b"", b"PK\x03\x04 not a zip", "truncate"],
    "recipe.json": [b"{not json", b"[1, 2]", b'{"arch": 7, "epochs": "many"}'],
    "run.json": [b"\x00\xff", b'"a string"', b'{"image": "x", "width": "wide", "height": 12}'],
    "target.npy": ["truncate", "float64", "shape", "object"],
    "metrics.csv": [b"epoch,psnr\nseven,x\n", b"epoch,psnr\n1," + b"0," * 600 + b"\n"],
    "layers.csv": ["wide"],
}


def damage(path: Path, how) -> None:
    if isinstance(how, bytes):
        path.write_bytes(how)
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "float64":
        np.save(path, np.load(path).astype(np.float64))
    elif how == "shape":
        np.save(path, np.load(path)[:, :, :2])
    elif how == "object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif how == "wide":  # a row of a million fields: refused by its length before it is split
        path.write_text(path.read_text().splitlines()[0] + "\n1" + ",0" * 10**6 + "\n")


@pytest.mark.parametrize("name,how", [(name, how) for name, hows in DAMAGE.items() for how in hows])
def test_a_damaged_file_is_one_line_naming_it(finished, tmp_path, capsys, name, how):
    run = copy_of(finished, tmp_path, status="paused")
    damage(run / name, how)
    commands = {"render": ["render", str(run), "--out", str(tmp_path / "r.png")],
                "neurons": ["neurons", str(run), "--out", str(tmp_path / "n.png")],
                "animate": ["animate", str(run), "--out", str(tmp_path / "a.gif")],
                "resume": ["train", "--resume", str(run), "--epochs", "4", "--quiet"]}
    failed = []
    for command, argv in commands.items():
        status = main(argv)
        err = capsys.readouterr().err
        assert status in (0, 2), (command, err)  # never a traceback (1 is divergence only)
        if status == 2:
            line = assert_one_line_error(err)
            assert name in line and ("restore" in line or "not loaded" in line), line
            failed.append(command)
    # Resuming reads every file but metrics.csv (rewritten from the checkpoint); animating reads that one.
    assert ("animate" if name == "metrics.csv" else "resume") in failed
    if name.endswith(".csv") and how != b"epoch,psnr\nseven,x\n":
        assert "a line longer than 1,024 characters" in line, line


def test_a_read_only_run_is_one_line(finished, tmp_path, capsys, monkeypatch):
    run = copy_of(finished, tmp_path, status="paused")
    before = snapshot(run)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    # Tests run as root, where chmod stops nothing: a read-only filesystem's answer, to these two modules only.
    monkeypatch.setattr(files, "os", types.SimpleNamespace(**{**vars(os), "replace": read_only}))  # every write
    monkeypatch.setattr(directory, "os", types.SimpleNamespace(**{**vars(os), "open": read_only}))  # the lock file
    assert main(["train", "--resume", str(run), "--epochs", "5", "--quiet"]) == 2
    assert "read-only" in assert_one_line_error(capsys.readouterr().err)
    assert main(["render", str(run)]) == 2  # its default --out is inside the run
    line = assert_one_line_error(capsys.readouterr().err)
    assert "read-only" in line and "render-" in line
    assert main(["render", str(run), "--out", str(tmp_path / "elsewhere.png")]) == 2  # no rename anywhere
    assert "elsewhere.png" in assert_one_line_error(capsys.readouterr().err)
    assert main(["neurons", str(run)]) == 2
    assert "read-only" in assert_one_line_error(capsys.readouterr().err)
    assert snapshot(run) == before  # and no temporary file left


def test_a_full_disk_mid_run_keeps_the_last_whole_epoch(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(state, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the third epoch's checkpoint: half written, then ENOSPC
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(state, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    argv = ["train", "astronaut", "--size", "16x12", "--arch", "8x8", "--epochs", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "checkpoint.pt" in line and "No space left" in line and f"--resume {out}" in line
    assert not list(out.rglob(".*.tmp-*"))
    run = RunDirectory.open(out)
    assert run.checkpoint()["epoch"] == 2 and [row["epoch"] for row in run.metrics()] == [1, 2]
    monkeypatch.setattr(torch, "save", real_save)  # space freed
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert [row["epoch"] for row in RunDirectory.open(out).metrics()] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("failing", ["checkpoint.pt", "metrics.csv"])
def test_after_a_full_disk_run_json_counts_only_the_epochs_on_disk(tmp_path, capsys, monkeypatch, failing):
    """The attack: the disk filled in epoch 3's checkpoint, and run.json said epochs_done 3 while the
    checkpoint and metrics.csv stopped at 2. run.json's count must be what the other files hold."""
    out = tmp_path / "run"
    real_save, real_write = torch.save, directory.write_text
    writes = []

    def full_in_epoch_3(path) -> None:
        writes.append(path)
        # metrics.csv is also written once at the start (a resume's catch-up): its 4th write is epoch 3's.
        if len(writes) == (3 if failing == "checkpoint.pt" else 4):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save(state, path, *args, **kwargs):
        if failing == "checkpoint.pt":
            full_in_epoch_3(path)
        return real_save(state, path, *args, **kwargs)

    def write_text(path, text):
        if failing == "metrics.csv" and Path(path).name == "metrics.csv":
            full_in_epoch_3(path)
        return real_write(path, text)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(directory, "write_text", write_text)
    argv = ["train", "astronaut", "--size", "16x12", "--arch", "8x8", "--epochs", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert failing in line and "No space left" in line
    run = RunDirectory.open(out)
    info, metrics, checkpoint = run.info(), run.metrics(), run.checkpoint()
    assert [row["epoch"] for row in metrics] == [1, 2]
    assert info["epochs_done"] == len(metrics) == 2 and info["status"] != "complete"
    # The checkpoint is written before metrics.csv, so a failed metrics write leaves it one ahead
    # (the module's order); a resume counts from it and rewrites metrics.csv to match.
    assert checkpoint["epoch"] == (2 if failing == "checkpoint.pt" else 3)
    monkeypatch.setattr(torch, "save", real_save)  # space freed
    monkeypatch.setattr(directory, "write_text", real_write)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    run = RunDirectory.open(out)
    assert run.info()["epochs_done"] == run.checkpoint()["epoch"] == 5
    assert [row["epoch"] for row in run.metrics()] == [1, 2, 3, 4, 5]


def test_a_file_size_limit_during_create_leaves_no_directory(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE below target.npy's size): one line, and no half-made run left."""
    out = tmp_path / "run"

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # target.npy is 64x48x3x4 = 36,864 bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past it fails with EFBIG

    done = subprocess.run([sys.executable, "-m", "monalisa.cli", "train", "astronaut", "--size", "64x48",
                           "--arch", "2x8", "--batch-size", "8", "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, preexec_fn=limits)
    assert done.returncode == 2, done.stderr
    line = assert_one_line_error(done.stderr)
    assert "target.npy" in line and "disk space" in line
    assert not out.exists()


def test_a_failed_atomic_write_removes_its_temporary_file(tmp_path):
    with pytest.raises(OSError):
        with files.atomic_path(tmp_path / "x.png") as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "full")
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_a_directory_another_process_is_creating(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunDirectory(out).lock()
    try:
        with pytest.raises(UserError, match="being written by another process"):
            RunDirectory.create(out, RECIPE, load_target("astronaut", size=SIZE), {})
    finally:
        holder.unlock()


# -- 6. a crafted file is refused before anything is allocated ---------------------------------------

# What each reader reads of CRAFTS' files (animate reads frames and metrics only).
CLI_READS = {
    "render": ("huge-arch", "oversized-checkpoint", "lying-checkpoint"),
    "neurons": ("huge-arch", "oversized-checkpoint", "lying-checkpoint"),
    "neurons --animate": ("huge-arch", "lying-snapshot", "truncated-snapshot", "wrong-shape-snapshot"),
    "train --resume": ("huge-arch", "lying-target", "oversized-checkpoint", "lying-checkpoint"),
    "compare --resume": ("huge-arch", "lying-target"),
    "animate": ("bomb-frames",),
}
# The words each refusal must hold: the file, and what about it is refused.
REFUSED = {
    "huge-arch": ("recipe.json': arch 100000000,8 has over 1,000,000,035 parameters", "the limit is 50,000,000"),
    "lying-target": ("target.npy", "(200000, 200000, 3), not float32 of (12, 16, 3)"),
    "lying-snapshot": ("snapshots/epoch-00000.npz' cannot be read", "(100000, 100000), not float16 of (8, 2)"),
    "truncated-snapshot": ("snapshots/epoch-00000.npz' cannot be read", "truncated"),
    "wrong-shape-snapshot": ("snapshots/epoch-00000.npz' cannot be read", "(8, 3), not float16 of (8, 2)"),
    "oversized-checkpoint": ("checkpoint.pt' cannot be read", "bytes, more than the"),
    "lying-checkpoint": ("checkpoint.pt' cannot be read", "its zip directory claims 4,026,5"),
    "bomb-frames": ("frames/epoch-00001.png' cannot be read", "9000x9000 pixels, not the run's 16x12"),
}
PEAK_RSS = 1536 * 2**20  # torch, the tiny run and the pictures: ~500 MB measured; any crafted size is gigabytes


def crafted_comparison(finished: Path, folder: Path, how: str) -> Path:
    """A comparison directory of one entry whose run is ``finished``, then crafted: its run's recipe
    (read by the resume's plan) or the comparison's own target.npy (read first)."""
    out = folder / f"compare-{how}"
    (out / "runs").mkdir(parents=True)
    shutil.copytree(finished, out / "runs" / "a")
    shutil.copy(finished / "target.npy", out / "target.npy")
    (out / "comparison.json").write_text(json.dumps({"title": "t", "image": "astronaut", "width": SIZE[0],
                                                     "height": SIZE[1], "entries": [
                                                         {"label": "a", "recipe": RECIPE.to_dict(),
                                                          "seeds": [RECIPE.seed]}]}))
    craft(out if how == "lying-target" else out / "runs" / "a", how)
    return out


def cli_argv(command: str, run: Path, folder: Path) -> list[str]:
    return {"render": ["render", str(run), "--out", str(folder / "r.png")],
            "neurons": ["neurons", str(run), "--out", str(folder / "n.png")],
            "neurons --animate": ["neurons", str(run), "--animate", "--out", str(folder / "n.gif")],
            "train --resume": ["train", "--resume", str(run), "--epochs", "4", "--quiet"],
            "compare --resume": ["compare", "--resume", str(run), "--quiet"],
            "animate": ["animate", str(run), "--out", str(folder / "a.gif")]}[command]


@pytest.fixture(scope="module")
def crafted_cli(finished, tmp_path_factory) -> dict:
    """Every (command, craft) of CLI_READS, run in one process under MEMORY_CAP (one torch import for
    all): {(command, craft): (status, stderr)}, and the process's peak resident memory."""
    folder = tmp_path_factory.mktemp("crafted")
    cases = []
    for command, crafts in CLI_READS.items():
        for how in crafts:
            if command == "compare --resume":
                target = crafted_comparison(finished, folder / command.replace(" ", ""), how)
            else:
                target = folder / command.replace(" ", "") / how
                shutil.copytree(finished, target)
                craft(target, how)
            cases.append((command, how, cli_argv(command, target, folder)))
    code = ("import contextlib, io, json, resource, sys\nfrom monalisa.cli import main\nresults = []\n"
            f"for command, how, argv in {cases!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
            "        status = main(argv)\n"
            "    results.append([command, how, status, err.getvalue()])\n"
            "print(json.dumps({'results': results, 'peak': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    return {"results": {(command, how): (status, err) for command, how, status, err in answer["results"]},
            "peak": answer["peak"] * 1024}


@pytest.mark.parametrize("command,how", [(command, how) for command, crafts in CLI_READS.items() for how in crafts])
def test_a_crafted_file_is_one_line_and_allocates_nothing(crafted_cli, command, how):
    status, err = crafted_cli["results"][(command, how)]
    assert status == 2, err
    line = assert_one_line_error(err)
    for words in REFUSED[how]:
        assert words in line, line
    if how != "huge-arch":
        assert "restore the file" in line, line
    if CRAFTS[how] != "checkpoint.pt":  # a damaged snapshot names itself, not the checkpoint
        assert "checkpoint.pt" not in line, line
    assert crafted_cli["peak"] < PEAK_RSS, crafted_cli["peak"]


def test_a_run_trained_past_the_limits_reads_with_allow_large(finished, tmp_path, capsys, monkeypatch):
    """The check that refuses a crafted recipe.json lets a big one through where the limits are lifted:
    the refusal is about this machine's memory, not about the file."""
    from monalisa.recipes import limits

    run = copy_of(finished, tmp_path)
    monkeypatch.setattr(limits, "MAX_PARAMETERS", 100)  # the 8x8 network has 115 weights before its input's
    assert main(["render", str(run), "--out", str(tmp_path / "r.png")]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert f"{str(run / 'recipe.json')!r}: arch 2x8 has over 115 parameters; the limit is 100" in line
    assert "--allow-large" in line and not (tmp_path / "r.png").exists()
    assert main(["render", str(run), "--out", str(tmp_path / "r.png"), "--allow-large"]) == 0
    assert (tmp_path / "r.png").is_file()
