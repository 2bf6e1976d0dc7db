"""Plain functions the tests share: import them (`from helpers import snapshot`); fixtures live in conftest.py.

- files: `snapshot` (every file under a folder, to show nothing changed), `write_png` (a seeded noise PNG);
- images: `tiny_target` (a smooth 6x8 target that trains in milliseconds);
- the CLI: `run_cli` (status, stdout, stderr), `run_cli_ok` (the printed lines of a command that must succeed),
  `assert_one_line_error` (the CLI's error shape);
- models: `torch_count` (parameters counted by PyTorch, the reference for recipes/sizes.py), `SMALL_HASHGRID`;
- the lab: `wait_for` (poll a run through the API until a condition holds);
- crafted run directories: `craft` (one file of a run replaced by a stranger's: a lying header, a huge
  recipe), `CRAFTS` (their names), `MEMORY_CAP` (the address space a process reading them runs under).
"""

import io
import json
import struct
import time
import zipfile
import zlib
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


# -- crafted run directories --------------------------------------------------------------------
# Each names a file of a finished run and what a stranger put there; a reader that trusted it would
# ask for gigabytes (the figure in the comment), which MEMORY_CAP makes an error a test can see.

CRAFTS = {
    "huge-arch": "recipe.json",  # arch [100000000, 8]: 6.4 GB of float32 weights
    "lying-target": "target.npy",  # a header claiming (200000, 200000, 3) float32: 447 GiB
    "lying-snapshot": "snapshots",  # a member claiming (100000, 100000) float16: 18.6 GiB
    "truncated-snapshot": "snapshots",  # half of each snapshot: a zip with no central directory
    "wrong-shape-snapshot": "snapshots",  # layers.0.weight of 3 inputs where the network has 2
    "oversized-checkpoint": "checkpoint.pt",  # an honest zip with 40 MB more than the recipe's network
    "lying-checkpoint": "checkpoint.pt",  # a zip directory claiming 3.75 GB for a tensor of a few bytes
    "bomb-frames": "frames",  # every frame a 240 kB PNG of 9000x9000 (under Pillow's bomb limit): 243 MB each decoded
}
MEMORY_CAP = 4 * 2**30  # RLIMIT_AS for a process reading crafted runs: torch itself maps ~2 GiB of it


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _rewrite_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def craft(run: Path, how: str) -> None:
    """Replace the file CRAFTS[how] names in the run directory ``run`` (a finished run with snapshots)."""
    snapshots = sorted((run / "snapshots").glob("*.npz"))
    if how == "huge-arch":
        recipe = json.loads((run / "recipe.json").read_text())
        (run / "recipe.json").write_text(json.dumps({**recipe, "arch": [100_000_000, 8]}))
    elif how == "lying-target":
        (run / "target.npy").write_bytes(_npy_header("<f4", (200_000, 200_000, 3)) + bytes(64))
    elif how == "lying-snapshot":
        for path in snapshots:
            _rewrite_zip(path, {**_zip_members(path),
                                "layers.0.weight.npy": _npy_header("<f2", (100_000, 100_000)) + bytes(64)})
    elif how == "truncated-snapshot":
        for path in snapshots:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "wrong-shape-snapshot":
        for path in snapshots:
            wrong = io.BytesIO()
            np.save(wrong, np.zeros((8, 3), np.float16))
            _rewrite_zip(path, {**_zip_members(path), "layers.0.weight.npy": wrong.getvalue()})
    elif how == "oversized-checkpoint":
        import torch

        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["model"]["layers.0.extra"] = torch.zeros(10 * 2**20)
        torch.save(state, run / "checkpoint.pt")
    elif how == "lying-checkpoint":
        _lie_about_a_tensor(run / "checkpoint.pt", 0xF000_0000)
    elif how == "bomb-frames":
        bomb = _black_png(9000, 9000)
        for path in (run / "frames").glob("epoch-*.png"):
            path.write_bytes(bomb)
    else:
        raise ValueError(how)


def _black_png(width: int, height: int) -> bytes:
    """A black RGB PNG written row by row: its zlib stream is ~1/1000 of the pixels it decodes to."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + 3 * width)  # each row: filter type 0, then black pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def _lie_about_a_tensor(path: Path, claimed: int) -> None:
    """Set the sizes the zip's central directory gives the first tensor (``.../data/0``) to ``claimed``:
    torch.load allocates a tensor's buffer from that entry before reading it."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        name = next(info.filename for info in archive.infolist() if info.filename.endswith("/data/0")).encode()
    at = data.index(b"PK\x01\x02")  # the first central directory entry
    while not data[at + 46: at + 46 + len(name)] == name:  # walk the central directory to the tensor's entry
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<II", data, at + 20, claimed, claimed)  # compressed and uncompressed size
    path.write_bytes(bytes(data))
