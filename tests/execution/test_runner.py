"""monalisa.runner over local worker processes: the jobs limit and the order, pause, stop, a killed
worker, Ctrl-C, a busy run, and which engine's libraries a worker loads.

Every run is a tiny network on 12x16 pixels. The bit-exact checks compare a run paused, killed and
resumed with one trained through the runner without a break (same threads, same engine), on the
checkpoint's full-precision history. Every wait is bounded, and every test leaves no worker alive
(the recording executor keeps each handle, and the tests check them).
"""

import json
import os
import signal
import sys
import time

import numpy as np
import pytest

from monalisa import Recipe, Target
from monalisa.execution.local import LocalExecutor, LocalHandle
from monalisa.execution.runner import Runner
from monalisa.execution.specs import START, RunSpec
from monalisa.execution.worker import execute
from monalisa.runs.directory import RunDirectory

TINY = Recipe(arch=(8,), epochs=3, batch_size=4, optimizer="adam")  # the batched engine
ONLINE = Recipe(arch=(8,), epochs=2)  # batch 1, plain SGD: the online engine (numba)
LONG = Recipe(arch=(8,), epochs=30, batch_size=4, optimizer="adam")  # ~70 ms an epoch: time to pause it
WAIT_SECONDS = 90.0  # any one wait: far above the few seconds each takes


def tiny_target() -> Target:
    y, x = np.mgrid[0:12, 0:16] / 16.0  # 12 rows, 16 columns
    pixels = np.stack([np.sin(6 * x) ** 2, np.cos(5 * y) ** 2, (x + y) / 2], axis=2)
    return Target(name="blobs", pixels=pixels.astype(np.float32))


def start(key, path, recipe=TINY, live=False) -> RunSpec:
    return RunSpec(key, path, START, target=tiny_target(), recipe=recipe, frames="log", live=live)


class _Telling:
    """The worker's report queue, which says before the end whether the worker imported numba."""

    def __init__(self, reports):
        self.reports = reports

    def put(self, report):
        if report["type"] == "end":
            self.reports.put({"type": "modules", "id": report["id"], "numba": "numba" in sys.modules})
        self.reports.put(report)


def execute_and_tell(spec, threads, reports, parent):
    execute(spec, threads, _Telling(reports), parent)


class RecordingExecutor(LocalExecutor):
    """LocalExecutor that keeps every handle, the order of starts, and how many were alive at each."""

    def __init__(self):
        super().__init__()
        self.started: list[str] = []
        self.alive_at_start: list[int] = []
        self.handles: dict[str, LocalHandle] = {}

    target = staticmethod(execute_and_tell)

    def start(self, spec, threads):
        self.alive_at_start.append(sum(handle.alive() for handle in self.handles.values()))
        self.started.append(spec.key)
        self.handles[spec.key] = super().start(spec, threads)
        return self.handles[spec.key]

    def none_alive(self) -> bool:
        return not any(handle.alive() for handle in self.handles.values())


def until(runner: Runner, condition, reports: list) -> dict:
    """Poll ``runner`` until a report meets ``condition``; every report is kept in ``reports``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for report in runner.poll():
            reports.append(report)
            if condition(report):
                return report
    raise AssertionError(f"timed out; reports so far: {[r['type'] for r in reports]}")


def history(path) -> list[dict]:
    """Every epoch's figures at full precision (metrics.csv keeps 6 figures)."""
    return [{k: row[k] for k in ("epoch", "mae", "mse", "psnr")} for row in RunDirectory.open(path).checkpoint()["history"]]


def status_on_disk(path) -> str:
    return json.loads((path / "run.json").read_text())["status"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """Five specs, two at a time: the uninterrupted reference, tiny batched runs and an online one."""
    out = tmp_path_factory.mktemp("first")
    executor = RecordingExecutor()
    runner = Runner(2, executor=executor)
    specs = [start("reference", out / "reference", LONG), start("a", out / "a"), start("online", out / "online", ONLINE),
             start("b", out / "b"), start("c", out / "c")]
    reports = []
    try:
        ends = runner.run_all(specs, on_report=reports.append)
    finally:
        runner.close(timeout=10)
    assert executor.none_alive()
    return out, executor, ends, reports


def test_jobs_limit_and_order_are_kept(first):
    out, executor, ends, _ = first
    assert executor.started == ["reference", "a", "online", "b", "c"]
    assert max(executor.alive_at_start) <= 1  # a start with two alive would make three at once
    assert {key: end["status"] for key, end in ends.items()} == dict.fromkeys(executor.started, "complete")
    for key in executor.started:
        assert status_on_disk(out / key) == "complete" and (out / key / "final.png").is_file()


def test_a_batched_run_never_imports_numba(first):
    _, _, _, reports = first
    numba = {r["id"]: r["numba"] for r in reports if r["type"] == "modules"}
    assert numba == {"reference": False, "a": False, "online": True, "b": False, "c": False}


def test_pause_and_a_killed_worker_resume_bit_exactly(first, tmp_path):
    reference = history(first[0] / "reference")
    path = tmp_path / "run"
    executor = RecordingExecutor()
    runner = Runner(1, executor=executor)
    reports = []
    try:
        # Paused after its second epoch: it says so, and leaves a checkpoint to resume from.
        runner.submit(start("run", path, LONG, live=True))
        until(runner, lambda r: r["type"] == "epoch" and r["row"]["epoch"] >= 2, reports)
        assert runner.pause("run") and runner.status("run") == "pausing"
        end = until(runner, lambda r: r["type"] == "end", reports)
        assert end["status"] == "paused" and status_on_disk(path) == "paused"
        paused_at = len(history(path))
        assert 2 <= paused_at < LONG.epochs

        # Resumed, then SIGKILLed: no word from it, so the runner settles it as interrupted.
        runner.submit(RunSpec("run", path, live=True))
        until(runner, lambda r: r["type"] == "epoch" and r["row"]["epoch"] >= paused_at + 2, reports)
        os.kill(executor.handles["run"].pid, signal.SIGKILL)
        end = until(runner, lambda r: r["type"] == "end", reports)
        assert end["status"] == "interrupted" and "ended unexpectedly" in end["message"]
        assert status_on_disk(path) == "interrupted" and runner.running() == []
        killed_at = len(history(path))
        assert paused_at < killed_at < LONG.epochs

        # Resumed to the end: every epoch as the run that never stopped.
        ends = runner.run_all([RunSpec("run", path)])
        assert ends["run"]["status"] == "complete"
    finally:
        runner.close(timeout=10)
    assert executor.none_alive()
    assert history(path) == reference


def test_stop_writes_the_ending(tmp_path):
    path = tmp_path / "run"
    executor = RecordingExecutor()
    runner = Runner(1, executor=executor)
    reports = []
    try:
        runner.submit(start("run", path, LONG, live=True))
        until(runner, lambda r: r["type"] == "epoch" and r["row"]["epoch"] >= 2, reports)
        assert runner.stop("run") and runner.status("run") == "stopping"
        end = until(runner, lambda r: r["type"] == "end", reports)
    finally:
        runner.close(timeout=10)
    assert executor.none_alive()
    assert end["status"] == "stopped"
    info = json.loads((path / "run.json").read_text())
    assert info["status"] == "stopped" and info["epochs_done"] < LONG.epochs
    for name in ("final.png", "learning.gif", "learning.mp4", "curves.png"):
        assert (path / name).is_file(), name


def test_ctrl_c_in_run_all_leaves_everything_resumable(tmp_path):
    executor = RecordingExecutor()
    runner = Runner(2, executor=executor)
    specs = [start(key, tmp_path / key, LONG, live=True) for key in ("x", "y", "z")]

    epochs = {}

    def interrupt(report):  # once both running runs have an epoch on disk (on a busy machine y may start late)
        if report["type"] == "epoch":
            epochs[report["id"]] = report["row"]["epoch"]
            if len(epochs) == 2 and max(epochs.values()) >= 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_all(specs, on_report=interrupt)
    assert executor.none_alive() and runner.running() == [] and runner.waiting() == []
    assert executor.started == ["x", "y"]  # z was still waiting: nothing of it on disk
    assert not (tmp_path / "z").exists()
    for key in ("x", "y"):
        assert status_on_disk(tmp_path / key) == "paused"
    again = Runner(2)
    try:
        ends = again.run_all([RunSpec(key, tmp_path / key) for key in ("x", "y")])
    finally:
        again.close(timeout=10)
    assert [ends[key]["status"] for key in ("x", "y")] == ["complete", "complete"]
    assert [len(history(tmp_path / key)) for key in ("x", "y")] == [LONG.epochs] * 2


def test_a_run_another_process_writes_is_a_reported_error(first, tmp_path):
    path = first[0] / "a"
    before = (path / "run.json").read_bytes()
    holder = RunDirectory.open(path).lock()  # a CLI `--resume` of the same run, say
    runner = Runner(1)
    try:
        ends = runner.run_all([RunSpec("a", path, "finish")])
    finally:
        runner.close(timeout=10)
        holder.unlock()
    assert ends["a"]["status"] == "error" and "being written by another process" in ends["a"]["message"]
    assert (path / "run.json").read_bytes() == before  # neither the runner nor the worker wrote it


def test_specs_are_checked():
    with pytest.raises(ValueError, match="target and a recipe"):
        RunSpec("a", "x", START)
    with pytest.raises(ValueError, match="unknown action"):
        RunSpec("a", "x", "train")
    with pytest.raises(ValueError, match="threads"):
        RunSpec("a", "x", threads=0)


ORPHAN_PARENT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import numpy as np
from test_runner import LONG
from monalisa import Target
from monalisa.execution.local import LocalExecutor
from monalisa.execution.specs import START, RunSpec

if __name__ == "__main__":
    # Noise compresses badly: each live frame is a ~50 KB PNG, so a few fill the report pipe.
    noise = np.random.default_rng(0).random((128, 128, 3), dtype=np.float32)
    spec = RunSpec("orphan", Path({path!r}), START, target=Target("noise", noise),
                   recipe=LONG.replace(epochs=100000), frames="log", live=True)
    handle = LocalExecutor().start(spec, 1)
    while not (Path({path!r}) / "metrics.csv").exists():  # training, and reporting
        time.sleep(0.05)
    time.sleep(2)  # nobody reads the reports meanwhile: the pipe fills
    print(handle.pid, flush=True)
    time.sleep(600)  # until the test kills us
"""


def test_a_worker_whose_parent_is_killed_pauses_and_exits(tmp_path):
    """SIGKILL the process that started a worker: the worker pauses its run and ends (it used to sleep
    forever at exit, flushing reports into a pipe nobody read), and the run resumes."""
    import subprocess

    path = tmp_path / "orphan"
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_PARENT.format(tests=os.path.dirname(__file__), path=str(path)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the orphaned worker is still alive a minute after its parent died"
        status = json.loads((path / "run.json").read_text())["status"]
        assert status in ("paused", "running")  # paused, or killed while writing it: resumable either way
        assert RunDirectory.open(path).checkpoint() is not None
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (reaped by init soon) counts as gone
        return f.read().split(") ")[-1][0] != "Z"
