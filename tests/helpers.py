"""Plain functions the tests share: import them (`from helpers import snapshot`); fixtures live in conftest.py.

- files: `snapshot` (every file under a folder, to show nothing changed), `write_png` (a seeded noise PNG);
- images: `tiny_target` (a smooth 6x8 target that trains in milliseconds);
- the CLI: `run_cli` (status, stdout, stderr), `run_cli_ok` (the printed lines of a command that must succeed),
  `assert_one_line_error` (the CLI's error shape);
- models: `torch_count` (parameters counted by PyTorch, the reference for budget.py), `SMALL_HASHGRID`;
- the lab: `wait_for` (poll a run through the API until a condition holds).
"""

import time
from pathlib import Path

import numpy as np
from PIL import Image

from monalisa.cli import main
from monalisa.data.images import Target
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe

# A hash grid small enough to build in a millisecond: levels at resolutions 4, 10, 25, 64, the
# coarser two dense, the finer two hashed into 2^8 rows (they have more than 2^8 vertices).
SMALL_HASHGRID = "hashgrid:levels=4,table_size=2**8,base=4,finest=64"


# -- files ----------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict:
    """Every file under root with its bytes, to show that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_png(path: Path, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A width x height PNG of seeded uniform noise at path; returns its (height, width, 3) uint8 pixels."""
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


# -- images ---------------------------------------------------------------------------------------


def tiny_target(height: int = 6, width: int = 8) -> Target:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([0.2 + 0.6 * x / (width - 1), 0.3 + 0.4 * y / (height - 1), 0.5 + 0.3 * np.sin(x + y)], 2)
    return Target("tiny", pixels.astype(np.float32))


# -- the CLI --------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`monalisa ARGV` in this process: its exit status, stdout and stderr."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_cli_ok(argv: list[str], capsys) -> list[str]:
    """`monalisa ARGV`, which must succeed: the lines it printed."""
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    return out.splitlines()


def assert_one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("monalisa: error: ")
    return lines[0]


# -- models ---------------------------------------------------------------------------------------


def torch_count(recipe: Recipe) -> int:
    return sum(p.numel() for p in build_model(recipe).parameters())


# -- the lab --------------------------------------------------------------------------------------


def wait_for(client, run_id, condition, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()["run"]
        if condition(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"timed out; last state {run}")
