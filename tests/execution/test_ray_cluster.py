"""monalisa.execution.ray_cluster: comparisons on a real two-node Ray cluster, a node lost mid-run, Ctrl-C, and
the CLI's one-line errors (`monalisa search` is in test_search.py).

The cluster (conftest.py's `ray_cluster`) runs on this machine, every process bound to 127.0.0.1: a head
of no CPUs, where the driver and the executor's hub live, and two worker nodes of one CPU, so two runs
at once take one node each. The reference answer is the same comparison through the local executor:
on the CPU, a run trained anywhere has the same metrics, bit for bit, and so has one resumed from its
checkpoint after its node died. Every run is a tiny network on 16x24 pixels.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray")

from helpers import assert_one_line_error, run_cli  # noqa: E402

from monalisa import Recipe  # noqa: E402
from monalisa.data.images import Target, load_target  # noqa: E402
from monalisa.experiments.compare import run_comparison  # noqa: E402
from monalisa.runs.directory import RunDirectory  # noqa: E402

SHORT = [("wide", Recipe(arch=(16,), epochs=30, batch_size=32, optimizer="adam", init="torch")),
         ("deep", Recipe(arch=(8, 8), epochs=30, batch_size=32, optimizer="adam", init="torch", seed=3))]
# Long enough (~10 s here) for a node to be removed under it after a few epochs.
LONG = [("long", Recipe(arch=(16, 16), epochs=300, batch_size=16, optimizer="adam", init="torch"))]
WAIT_SECONDS = 120.0  # any one wait: far above what each takes
METRICS = ("epoch", "mae", "mse", "psnr")  # what must match; the times are this machine's


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 16x24 PNG of smooth waves, for the CLI; its Target (load_target) for the API."""
    y, x = np.mgrid[0:24, 0:16] / 16.0  # 24 rows, 16 columns
    pixels = np.stack([np.sin(5 * x) ** 2, np.cos(4 * y) ** 2, (x * y) % 1.0], axis=2)
    path = tmp_path_factory.mktemp("image") / "waves.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def target(image) -> Target:
    return load_target(image)


def figures(run_dir) -> list[tuple]:
    return [tuple(row[name] for name in METRICS) for row in RunDirectory.open(run_dir).metrics()]


def files(run_dir) -> set[str]:
    """A run directory's files by name; TensorBoard's event file is named by its host, time and pid."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith("events.out.tfevents")}


@pytest.fixture(scope="module")
def local(tmp_path_factory, target):
    """The reference: the short comparison and the long run through local processes."""
    out = tmp_path_factory.mktemp("local")
    run_comparison(target, SHORT, out / "short", quiet=True, jobs=2)
    run_comparison(target, LONG, out / "long", quiet=True, jobs=1)
    return out


class NodeWatch:
    """Which worker node each run's writer (the pid in its lock file) is on, sampled while it trains."""

    def __init__(self, cluster, run_dirs):
        self.cluster, self.run_dirs = cluster, run_dirs
        self.seen: dict[str, set] = {path.name: set() for path in run_dirs}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.done.is_set():
            for path in self.run_dirs:
                try:
                    node = self.cluster.node_of(int((path / ".lock").read_text().strip()))
                except (OSError, ValueError, IndexError):
                    continue  # not started, between writers, or ended
                if node is not None:
                    self.seen[path.name].add(node.unique_id)
            time.sleep(0.05)

    def stop(self):
        self.done.set()
        self.thread.join()


def test_without_ray_nothing_imports_it():
    code = ("import sys; import monalisa.cli, monalisa.experiments.compare, monalisa.experiments.studies, monalisa.execution.runner, "
            "monalisa.experiments.search; from monalisa.cli import build_parser; "
            "build_parser().parse_args(['compare', 'x', '--preset', 'quick', '--preset', 'fast']); "
            "print('ray' in sys.modules, 'optuna' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_comparison_on_two_nodes_matches_local(ray_cluster, local, target, tmp_path):
    out = tmp_path / "short"
    watch = NodeWatch(ray_cluster, [out / "runs" / label for label, _ in SHORT])
    try:
        summary = run_comparison(target, SHORT, out, quiet=True, ray=ray_cluster.address)
    finally:
        watch.stop()
    assert [row["status"] for row in summary["runs"]] == ["complete", "complete"]
    # One CPU a node and two runs at once: each ran on a node of its own, the whole run on it.
    first, second = (watch.seen[label] for label, _ in SHORT)
    assert len(first) == 1 and len(second) == 1 and first != second, watch.seen
    for label, _ in SHORT:
        mine, theirs = out / "runs" / label, local / "short" / "runs" / label
        assert figures(mine) == figures(theirs)
        assert files(mine) == files(theirs)
        assert json.loads((mine / "run.json").read_text())["status"] == "complete"
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()


def test_lost_node_resumes_its_run_from_the_checkpoint(ray_cluster, local, target, tmp_path, capsys):
    out = tmp_path / "long"
    run_dir = out / "runs" / "long"
    killed = {}

    def kill_its_node():  # once a few epochs are checkpointed, its node dies outright
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                node = ray_cluster.node_of(int((run_dir / ".lock").read_text().strip()))
                if node is not None and len(RunDirectory.open(run_dir).metrics()) >= 10:
                    killed["epochs"] = len(RunDirectory.open(run_dir).metrics())
                    killed["at"] = time.time()
                    ray_cluster.remove(node)
                    return
            except Exception:  # not started yet, between writers, a half-written file
                pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_its_node, daemon=True)
    killer.start()
    try:
        summary = run_comparison(target, LONG, out, ray=ray_cluster.address)
    finally:
        killer.join()
        ray_cluster.refill()
    assert killed, "the run ended before its node could be removed"
    assert killed["epochs"] < LONG[0][1].epochs
    captured = capsys.readouterr()
    err = captured.err
    assert "long: its worker was lost" in err and "restarted from its last checkpoint" in err
    # Ray's own account of the lost worker (the raylet's paragraph, the core's retries) is in ray.log, not here
    assert "raylet" not in err + captured.out and "core_worker" not in err + captured.out
    assert (out / "ray.log").is_file()
    assert summary["runs"][0]["status"] == "complete"
    # Resumed, not started again: the first epoch's frame is the one written before the node died,
    # and every epoch's figures are the uninterrupted local run's.
    assert (run_dir / "frames" / "epoch-00001.png").stat().st_mtime < killed["at"]
    assert figures(run_dir) == figures(local / "long" / "runs" / "long")


def test_ctrl_c_pauses_the_runs_and_resume_finishes_them(ray_cluster, local, image, tmp_path):
    """`monalisa compare --ray` in a process of its own: SIGINT once training has begun, exit 130 with
    every run paused (resumable), then `--resume` on the cluster gives the local figures."""
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "monalisa.cli", "compare", str(image), "--recipe", str(tmp_path / "long.json"),
            "--recipe", str(tmp_path / "wide.json"), "--out", str(out), "--ray", ray_cluster.address, "--quiet"]
    (tmp_path / "long.json").write_text(LONG[0][1].to_json())
    (tmp_path / "wide.json").write_text(SHORT[0][1].replace(epochs=300).to_json())
    # A child started while SIGINT is ignored keeps ignoring it (POSIX), and Python then never raises
    # KeyboardInterrupt: in two CI runs of the whole suite this comparison ran to its end through the
    # signal (exit 0), never when this file ran alone. So the child starts with SIGINT at its default,
    # and a failure says what this process had.
    ours = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        if ours is not None:
            signal.signal(signal.SIGINT, ours)
    try:
        started = time.monotonic()
        deadline = started + WAIT_SECONDS
        while not list(out.glob("runs/*/metrics.csv")) and time.monotonic() < deadline:
            time.sleep(0.1)
        # What the process was doing when Ctrl-C came: this failed once in CI with exit 0 and no output.
        when = f"SIGINT after {time.monotonic() - started:.1f} s, the process {'running' if process.poll() is None else 'ended'}"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    epochs = {path.parent.name: len(path.read_text().splitlines()) - 1 for path in out.glob("runs/*/metrics.csv")}
    assert process.returncode == 130, f"{when}; epochs written: {epochs}; SIGINT here: {ours}; stderr: {err}"
    assert f"monalisa compare --resume {out}" in err
    statuses = {path.parent.name: json.loads(path.read_text())["status"] for path in out.glob("runs/*/run.json")}
    assert statuses and set(statuses.values()) <= {"paused", "complete"}, statuses
    assert not list(out.glob("runs/*/.lock"))  # no writer left behind

    resumed = subprocess.run([sys.executable, "-m", "monalisa.cli", "compare", "--resume", str(out), "--ray",
                              ray_cluster.address, "--quiet"], capture_output=True, text=True,
                             timeout=WAIT_SECONDS)
    assert resumed.returncode == 0, resumed.stderr
    labels = sorted(path.name for path in (out / "runs").iterdir())
    long_label = next(label for label in labels if label.startswith("2x16"))
    assert figures(out / "runs" / long_label) == figures(local / "long" / "runs" / "long")


# -- one line, exit status 2, nothing written ---------------------------------------------------------


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "no Ray cluster answers there"),
    ("nonsense", "give local"),
    ("10.0.0.1:99999", "give local"),
])
def test_bad_address_is_one_line_and_writes_nothing(address, says, workspace, capsys):
    out = workspace / "cmp"
    for argv in (["compare", "mona_lisa", "--preset", "quick", "--preset", "fast"], ["study", "depth", "--quick"],
                 ["search", "mona_lisa"]):
        status, _, err = run_cli([*argv, "--out", str(out), "--ray", address], capsys)
        assert status == 2
        assert says in assert_one_line_error(err)
        assert not out.exists()
    assert not list((workspace / "cwd").iterdir())


def test_missing_ray_is_one_line_and_writes_nothing(tmp_path):
    """Ray hidden from the process (an import of it fails), as on a machine without the extra."""
    for argv in (["compare", "mona_lisa", "--preset", "quick", "--preset", "fast", "--ray", "local"],
                 ["search", "mona_lisa"]):
        code = ("import sys; sys.modules['ray'] = None; sys.modules['optuna'] = None; "
                f"from monalisa.cli import main; sys.exit(main({[*argv, '--out', str(tmp_path / 'x')]!r}))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "pip install 'monalisa[ray]'" in assert_one_line_error(result.stderr)
        assert not (tmp_path / "x").exists()


def test_cluster_without_the_project_is_one_line_and_writes_nothing(tmp_path):
    """A cluster whose Python finds another package named monalisa first (PYTHONPATH), so its workers
    cannot import this project: the check on every node says so before anything is written. Its head
    runs in the foreground (`ray start --block`) and is stopped by its pid, which stops its processes."""
    shadow = tmp_path / "shadow" / "monalisa"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('"""Another project named monalisa."""\n')
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="monalisa-test-" + "0" * 18)
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "the Ray head did not start"
                time.sleep(0.2)
        out = tmp_path / "cmp"
        cli = dict(env)
        del cli["PYTHONPATH"]  # the driver is this project; only the cluster's workers lack it
        result = subprocess.run([sys.executable, "-m", "monalisa.cli", "compare", "mona_lisa", "--preset", "quick",
                                 "--preset", "fast", "--out", str(out), "--ray", f"127.0.0.1:{port}"],
                                env=cli, capture_output=True, text=True, timeout=WAIT_SECONDS)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert result.returncode == 2, result.stderr
    assert "cannot import monalisa" in assert_one_line_error(result.stderr)
    assert not out.exists()
