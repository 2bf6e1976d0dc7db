"""Kill a run with SIGKILL at arbitrary moments, resume it, and get the uninterrupted run's figures.

The reference answer is the same command run without interruption. On the CPU
the online engine is deterministic and the checkpoint holds the weights and
the permutation generator's state, so the figures must match exactly.
"""

import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ARGS = ["--arch", "2x24", "--epochs", "30", "--quiet"]
FIGURES = ("mae", "mse", "psnr")


def monalisa(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "monalisa.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: float(row[k]) for k in ("epoch", *FIGURES)} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "blobs.png"
    y, x = np.mgrid[0:24, 0:20] / 20.0
    pixels = np.stack([np.sin(6 * x) ** 2, np.cos(5 * y) ** 2, (x + y) / 2.2], axis=2)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def reference_run(image, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    process = monalisa("train", str(image), *ARGS, "--out", str(out))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def uninterrupted(reference_run):
    return metrics(reference_run)


def layer_rows(run):
    """layers.csv's rows less train_seconds (a resumed run's clock differs; nothing else may)."""
    with open(run / "layers.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(f)]


def wait_for_epoch(run, epoch, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(metrics(run)) >= epoch:
                return
        except (FileNotFoundError, KeyError, ValueError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"run never reached epoch {epoch}")


@pytest.mark.parametrize("kill_after_epoch,extra_delay", [(0, 0.0), (4, 0.013), (13, 0.004)])
def test_sigkilled_run_resumes_to_the_same_figures(image, uninterrupted, reference_run, tmp_path, kill_after_epoch,
                                                   extra_delay):
    out = tmp_path / "run"
    process = monalisa("train", str(image), *ARGS, "--out", str(out))
    if kill_after_epoch:
        wait_for_epoch(out, kill_after_epoch)
        time.sleep(extra_delay)  # land somewhere inside a later epoch's writes
    else:
        while not (out / "run.json").exists():  # killed before any epoch finished
            time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done = len(metrics(out)) if (out / "metrics.csv").exists() else 0
    assert done < 30, "the run finished before it was killed: the test proved nothing"

    resumed = monalisa("train", "--resume", str(out), "--quiet")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    got = metrics(out)
    assert [row["epoch"] for row in got] == list(range(1, 31))
    for mine, reference in zip(got, uninterrupted):
        for key in FIGURES:
            assert mine[key] == reference[key], (mine, reference)
    assert (out / "learning.mp4").exists() and (out / "final.png").exists()
    assert not [p.name for p in out.rglob(".*tmp*")], "temporary files left behind"
    # The layer statistics too: every epoch's rows once, as the uninterrupted run recorded them.
    assert layer_rows(out) == layer_rows(reference_run)


def test_resume_extends_a_finished_run(image, uninterrupted, tmp_path):
    out = tmp_path / "run"
    first = monalisa("train", str(image), "--arch", "2x24", "--epochs", "10", "--quiet", "--out", str(out))
    assert first.wait(timeout=120) == 0
    more = monalisa("train", "--resume", str(out), "--epochs", "30", "--quiet")
    _, err = more.communicate(timeout=120)
    assert more.returncode == 0, err
    # Extending to 30 epochs continues the same weights and permutation stream as a 30-epoch run.
    assert [r["psnr"] for r in metrics(out)] == [r["psnr"] for r in uninterrupted]
