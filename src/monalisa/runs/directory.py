"""The run directory: everything a run leaves on disk, written so a crash leaves it readable.

Layout of ``runs/<name>/``::

    recipe.json     the recipe (Recipe.from_dict reads it back)
    run.json        image, size, engine, device, status and how the run stopped
    target.npy      the training target, float32 (H, W, 3), so a resume needs no source file
    target.png      the same, for looking at
    metrics.csv     epoch, train_seconds, seconds, mae, mse, psnr: one row per epoch
    frames/         epoch-00001.png ... (every epoch, or a log-spaced schedule)
    checkpoint.pt   weights, optimiser and RNG state, history: after every epoch
    layers.csv      per-layer dynamics, several records an epoch (dynamics.py's LAYER_COLUMNS)
    snapshots/      epoch-00000.npz ...: the weights in float16 at epochs 0, 1, 2, 3, 5, 8, 13, ... and
                    the last, for `monalisa neurons RUN --animate`
    events.out.tfevents.*   TensorBoard's event files (board.py), when tensorboard is installed
    final.png       the last frame
    learning.gif    the animation, captioned (subsampled to keep the file small)
    learning.mp4    the animation, every frame
    curves.png      PSNR and MAE against epoch and against training seconds
    dynamics.png    layers.csv drawn: one panel per statistic, one line per layer

Every file is written to a temporary name and renamed into place, so a
SIGKILL at any moment leaves either the old file or the new one. The order in
an epoch is frame, layers.csv, snapshot, checkpoint, metrics; ``metrics.csv`` is always rewritten
from the checkpoint's history, so it can lag the checkpoint but never lead it. ``layers.csv``
is the other way round: its rows exist nowhere else, so it is written before the checkpoint and
may lead it by one epoch; a resume drops the rows past the checkpoint and records them again as it
retrains that epoch, so no row is lost or written twice.

Reading and writing are kept apart. ``RunDirectory.open`` reads and changes
nothing (a run may be training while it is read). A process writes a run only
while it holds the run's lock (``lock()`` / ``writing()``): an OS lock
(``flock``) on ``.lock`` in the run directory, so there is one writer per run,
and the kernel drops the lock when its process dies (a SIGKILL leaves no stale
lock). The writer, and only the writer, removes the temporary files a killed
writer left behind. Checkpoints hold tensors and plain Python values only and
are loaded with ``weights_only=True``: a run directory is data, never code.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import pickle
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.files import (
    atomic_path,
    read_metrics,
    require_regular,
    save_png,
    write_errors,
    write_failure,
    write_json,
    write_text,
)
from monalisa.recipes.recipe import Recipe
from monalisa.runs import animation
from monalisa.runs.status import COMPLETE_REASONS, Status, status_after
from monalisa.runs.tensorboard import TensorBoardLog
from monalisa.training.dynamics import LayerDynamics, layers_csv, plot_dynamics, read_layers
from monalisa.training.trainer import METRIC_COLUMNS, Callback, Trainer

FRAME_SCHEDULES = ("all", "log")
# zlib level for the frame written after every epoch: a Mona Lisa frame takes 7.8 ms at 1
# against 24.5 ms at PIL's default 6, for a file 2% larger (228 against 222 kB).
FRAME_COMPRESSION = 1
FRAME_SPACINGS = ("even", "log")  # which frames an exported animation keeps: see captioned_frames
LOCK_FILE = ".lock"  # hidden, like the temporary files; removed by a writer that ends normally
STALE_TEMPORARIES = ".*.tmp-*"  # files.atomic_path's temporary names
MAX_JSON_BYTES = 2**20  # run.json and recipe.json are a few hundred bytes; a bigger one is doctored
SNAPSHOTS = "snapshots"
MAX_SNAPSHOT_BYTES = 2**30  # float16 weights: 0.55 MB for 4x300, ~100 MB at the limits' largest network


def own_file(path: Path) -> None:
    """OSError unless ``path`` itself is a regular file: not a symlink (to /etc/shadow, say), FIFO or device.
    For files a run writes and then reads back or copies (frames)."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file of the run (a symlink, FIFO or device)", str(path))


class RunBusy(UserError):
    """Another process holds the run's lock: it is writing the run."""


def frame_wanted(epoch: int, last_epoch: int, schedule: str) -> bool:
    """'log': every epoch up to 10, then ~20 a decade; the last epoch always."""
    if schedule == "all" or epoch <= 10 or epoch == last_epoch:
        return True
    # Keep e if it is the first whole epoch at or past one of the marks 10**(k/20).
    k = math.floor(20 * math.log10(epoch) + 1e-9)
    return epoch == math.ceil(10 ** (k / 20) - 1e-9)


def snapshot_wanted(epoch: int) -> bool:
    """Epochs 0 (the initial weights), 1, 2, 3, 5, 8, 13, 21, ...: the Fibonacci numbers, spaced about
    x1.6 apart, so 500 epochs keep 14 snapshots (plus the last epoch's) and the early epochs,
    where the units change most, are dense."""
    a, b = 1, 2
    while a < epoch:
        a, b = b, a + b
    return epoch in (0, a)


def checkpoint_problem(state) -> str | None:
    """What is wrong with a loaded checkpoint's layout (Trainer.state_dict's), or None."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a checkpoint"
    for key, kind in (("epoch", int), ("model", dict), ("engine", dict), ("rng", dict), ("history", list)):
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            return f"its {key!r} is missing or not a {kind.__name__}"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        return "its weights are not all tensors"
    if len(state["history"]) != state["epoch"]:
        return f"{len(state['history'])} rows of history for {state['epoch']} epochs"
    for row in state["history"]:
        if not isinstance(row, dict) or not all(type(row.get(k)) in (int, float) for k in METRIC_COLUMNS):
            return "a malformed row of history"
    return None


@dataclass
class RunDirectory:
    path: Path
    _lock: int | None = field(default=None, repr=False, compare=False)  # the lock file's descriptor, held
    _depth: int = field(default=0, repr=False, compare=False)  # nested writing() blocks

    # -- creating and opening ------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, recipe: Recipe, target: Target, info: dict) -> RunDirectory:
        """A new run directory, locked for writing (``unlock()`` when done); refuses one that already holds
        files, so nothing is overwritten. One that fails part-way (a full disk) is removed again, so no
        half-made directory looks like a run."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
            raise UserError(
                f"{str(path)!r} already exists; continue it with --resume {path} or choose another --out"
            )
        made = not path.exists()
        try:
            (path / "frames").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {str(path)!r}: {exc.strerror}") from None
        run = cls(path)
        run.lock()  # RunBusy if another process is creating it at this moment
        if [p for p in path.iterdir() if p.name not in (LOCK_FILE, "frames")] or any((path / "frames").iterdir()):
            run.unlock()  # another process made it between our check and our lock: it is theirs
            raise UserError(f"{str(path)!r} already exists; continue it with --resume {path} or choose another --out")
        try:
            with write_errors(path / "target.npy"), atomic_path(path / "target.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, target.pixels)
            with write_errors(path / "target.png"):
                save_png((target.pixels * 255).round().astype(np.uint8), path / "target.png")
            write_text(path / "recipe.json", recipe.to_json())
            run.write_info({"image": target.name, "width": target.width, "height": target.height,
                            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "status": Status.RUNNING, **info})
        except BaseException:
            # Remove what this call made (it holds the lock, and the folder was empty): the folder if it
            # made it, else the files it wrote. A library deletes nothing else on its own.
            if made:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for child in path.iterdir():
                    if child.name not in (LOCK_FILE, "frames"):
                        child.unlink(missing_ok=True)
            run.unlock()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """A run directory to read: nothing in it is changed (it may be training in another process)."""
        path = Path(path)
        missing = [name for name in ("run.json", "recipe.json", "target.npy") if not (path / name).is_file()]
        if not path.is_dir() or missing:
            raise UserError(f"{str(path)!r} is not a monalisa run directory (missing {', '.join(missing) or 'it'})")
        return cls(path)

    # -- the writer's lock ---------------------------------------------------------

    def lock(self) -> RunDirectory:
        """Become the run's one writer, or raise RunBusy naming the process that is.

        flock(LOCK_EX | LOCK_NB) on ``.lock``: the kernel releases it when this process dies, however
        it dies. Holding it, remove the temporary files a killed writer left behind (only a writer may:
        a reader would delete a live writer's file before its rename). Calling it again on the same
        object while held does nothing.
        """
        if self._lock is not None:
            return self
        lock_path = self.path / LOCK_FILE
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise write_failure(lock_path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                who = f"another process (pid {holder})" if holder.isdigit() else "another process"
                raise RunBusy(f"{str(self.path)!r} is being written by {who}; wait for it to end, or stop it, "
                              "then try again") from None
            # unlock() removes the file before it lets go: if it went between our open and our flock,
            # we hold a lock on a file nobody else will open, so open the new one.
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)
        self._lock = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message a second writer gets
            for stale in self.path.rglob(STALE_TEMPORARIES):
                stale.unlink(missing_ok=True)
        except OSError:
            pass  # a full disk or a read-only file: the lock holds all the same; the next write will say why
        return self

    def unlock(self) -> None:
        """Stop being the writer (the kernel does it anyway when the process ends)."""
        if self._lock is None:
            return
        try:
            (self.path / LOCK_FILE).unlink(missing_ok=True)  # before letting go: see lock()
        except OSError:
            pass
        os.close(self._lock)
        self._lock = None

    @contextmanager
    def writing(self):
        """``with run.writing():`` hold the lock for the block; nested blocks share the outer one's."""
        self.lock()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.unlock()

    # -- reading -------------------------------------------------------------------
    # Every file may be damaged or doctored: each reader checks what it gets and says, in one line,
    # which file is wrong and what to do.

    def _damaged(self, name: str, detail: str) -> UserError:
        return UserError(f"{str(self.path / name)!r} cannot be read ({detail}); the run directory is damaged: "
                         "restore the file from a copy, or train the run again")

    def _json(self, name: str) -> dict:
        try:
            require_regular(self.path / name, MAX_JSON_BYTES)  # a FIFO would block, /dev/zero fill memory
            data = json.loads((self.path / name).read_text())
        except OSError as exc:
            raise self._damaged(name, exc.strerror or str(exc)) from None
        except ValueError as exc:
            raise self._damaged(name, f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self._damaged(name, f"a JSON {type(data).__name__}, not an object")
        return data

    def info(self) -> dict:
        info = self._json("run.json")
        if not isinstance(info.get("image"), str):
            raise self._damaged("run.json", "no image name")
        for key in ("width", "height"):
            if type(info.get(key)) is not int or info[key] < 1:
                raise self._damaged("run.json", f"{key} is not a positive whole number")
        return info

    def recipe(self) -> Recipe:
        data = self._json("recipe.json")
        try:
            return Recipe.from_dict(data)
        except (UserError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._damaged("recipe.json", f"not a valid recipe: {exc}") from None

    def target(self) -> Target:
        info = self.info()
        try:
            require_regular(self.path / "target.npy")
            pixels = np.load(self.path / "target.npy", allow_pickle=False)  # no pickles: data only
        except (OSError, ValueError, EOFError) as exc:
            raise self._damaged("target.npy", f"not a NumPy array file: {exc}") from None
        shape = (info["height"], info["width"], 3)
        if pixels.dtype != np.float32 or pixels.shape != shape:
            raise self._damaged("target.npy", f"a {pixels.dtype} array of shape {pixels.shape}, "
                                              f"not float32 of {shape} as run.json says")
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise self._damaged("target.npy", "values outside [0, 1]")
        return Target(name=info["image"], pixels=pixels)

    def checkpoint(self) -> dict | None:
        """The last checkpoint, or None before the first epoch. Loaded with ``weights_only=True``:
        tensors and plain Python values only, so a doctored file cannot run code."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        try:
            require_regular(path)  # a FIFO named checkpoint.pt would block torch.load forever
        except OSError as exc:
            raise self._damaged("checkpoint.pt", exc.strerror or str(exc)) from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" in str(exc).lower() or "weights_only" in str(exc):
                raise UserError(f"{str(path)!r} holds more than tensors and plain data, so it was not loaded "
                                "(loading it could run code); delete it and train the run again, or restore "
                                "it from a copy you trust") from None
            raise self._damaged("checkpoint.pt", f"not a checkpoint: {exc}") from None
        except Exception as exc:  # torch.load on garbage can raise almost anything (RuntimeError, EOFError, ...)
            raise self._damaged("checkpoint.pt", f"truncated or not a checkpoint: {type(exc).__name__}") from None
        problem = checkpoint_problem(state)
        if problem:
            raise self._damaged("checkpoint.pt", problem)
        return state

    def load_weights(self, model: torch.nn.Module, checkpoint: dict) -> None:
        """The checkpoint's weights into ``model``; a checkpoint of another network is one line."""
        try:
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._damaged("checkpoint.pt", f"its weights do not fit recipe.json's network: {detail}") from None

    def metrics(self) -> list[dict]:
        return self._csv("metrics.csv", read_metrics)

    def layers(self) -> list[dict]:
        """layers.csv's rows (dynamics.LAYER_COLUMNS), or [] before the first epoch."""
        return self._csv("layers.csv", read_layers)

    def _csv(self, name: str, reader) -> list[dict]:
        """One of the run's CSV files read by ``reader``; [] before it exists, one line if it is damaged."""
        path = self.path / name
        if not path.exists():
            return []
        try:
            return reader(path)
        except OSError as exc:  # a FIFO or device, a doctored huge file, permissions
            raise self._damaged(name, exc.strerror or str(exc)) from None
        except (ValueError, KeyError, TypeError, csv.Error) as exc:
            raise self._damaged(name, f"{type(exc).__name__}: {exc}") from None

    def snapshot_path(self, epoch: int) -> Path:
        return self.path / SNAPSHOTS / f"epoch-{epoch:05d}.npz"

    def snapshot_epochs(self) -> list[int]:
        """The epochs whose weights are in snapshots/, in order."""
        folder = self.path / SNAPSHOTS
        names = sorted(folder.glob("epoch-*.npz")) if folder.is_dir() else []
        return [int(path.stem.split("-")[1]) for path in names if path.stem.split("-")[1].isdigit()]

    def snapshot(self, epoch: int) -> dict[str, torch.Tensor]:
        """Snapshot ``epoch``'s weights as float32 tensors, a state dict for build_model(recipe)."""
        path = self.snapshot_path(epoch)
        name = f"{SNAPSHOTS}/{path.name}"
        try:
            own_file(path)
            require_regular(path, MAX_SNAPSHOT_BYTES)
            with np.load(path, allow_pickle=False) as data:  # no pickles: data only
                return {key: torch.from_numpy(data[key].astype(np.float32 if data[key].dtype.kind == "f"
                                                               else data[key].dtype)) for key in data.files}
        except OSError as exc:
            raise self._damaged(name, exc.strerror or str(exc)) from None
        except (ValueError, EOFError, KeyError) as exc:
            raise self._damaged(name, f"not a NumPy archive: {exc}") from None

    def frame_path(self, epoch: int) -> Path:
        return self.path / "frames" / f"epoch-{epoch:05d}.png"

    # -- writing -------------------------------------------------------------------

    def _writing(self, name: str | Path):
        """write_errors for a file of this run: a full disk's line says how to continue the run."""
        return write_errors(self.path / name, run=self.path)

    def write_info(self, data: dict) -> None:
        with self._writing("run.json"):
            write_json(self.path / "run.json", data)

    def update_info(self, **changes) -> None:
        self.write_info({**self.info(), **changes})

    def write_recipe(self, recipe: Recipe) -> None:
        with self._writing("recipe.json"):
            write_text(self.path / "recipe.json", recipe.to_json())

    def write_checkpoint(self, state: dict) -> None:
        with self._writing("checkpoint.pt"), atomic_path(self.path / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def write_frame(self, epoch: int, frame: np.ndarray) -> None:
        with self._writing(self.frame_path(epoch)):
            save_png(frame, self.frame_path(epoch), compress_level=FRAME_COMPRESSION)

    def write_metrics(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6g}") for k in METRIC_COLUMNS})
        with self._writing("metrics.csv"):
            write_text(self.path / "metrics.csv", buffer.getvalue())

    def write_layers(self, text: str) -> None:
        """layers.csv, from dynamics.layers_csv's text."""
        with self._writing("layers.csv"):
            write_text(self.path / "layers.csv", text)

    def write_snapshot(self, epoch: int, model: torch.nn.Module) -> None:
        """The model's weights at ``epoch`` in float16: enough for pictures of units, a quarter of
        float32's size (each unit's map is scaled to its own peak, so the ~3 digits suffice)."""
        arrays = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
        arrays = {key: value.astype(np.float16) if value.dtype.kind == "f" else value for key, value in arrays.items()}
        path = self.snapshot_path(epoch)
        with self._writing(path), atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def write_animations(self, history: list[dict]) -> None:
        """learning.gif, learning.mp4, curves.png and dynamics.png from the frames, metrics and layers on disk."""
        frames = self.captioned_frames(history)
        if frames:
            with self._writing("learning.gif"):
                animation.write_gif(frames, self.path / "learning.gif")
            with self._writing("learning.mp4"):
                animation.write_mp4(frames, self.path / "learning.mp4")
        if history:
            with self._writing("curves.png"):
                animation.plot_curves(history, self.path / "curves.png", title=self.path.name)
        layers = self.layers()
        if layers:
            with self._writing("dynamics.png"):
                plot_dynamics(layers, self.path / "dynamics.png", title=self.path.name)

    def write_end(self, history: list[dict], stopped_by: str, last_frame: np.ndarray | None = None,
                  animations: bool = True, status: str | None = None) -> None:
        """How a run stopped, in run.json; for a run that ended (its epochs, its stopping rule, divergence,
        or ``status="stopped"``: the user's stop) its ending first: the last epoch's frame if it is not on
        disk yet (``last_frame``), final.png, the animations and curves. The status goes last, so
        'complete' on disk means the ending is all there."""
        ended = stopped_by in (*COMPLETE_REASONS, Status.DIVERGED) or status == Status.STOPPED
        if ended and history:
            last = history[-1]["epoch"]
            if not self.frame_path(last).exists() and last_frame is not None:
                self.write_frame(last, last_frame)
            self.write_ending(history, animations=animations)
        if status is None:
            status = status_after(stopped_by)
        self.update_info(status=status, stopped_by=stopped_by, epochs_done=len(history))

    def write_ending(self, history: list[dict], animations: bool = True) -> None:
        """final.png (the newest frame on disk) and, with ``animations``, the GIF, MP4 and curves."""
        frames = [path for path in (self.frame_path(row["epoch"]) for row in history) if path.exists()]
        if frames:
            last = int(frames[-1].stem.split("-")[1])
            self._frame_image(last)  # a PNG this run wrote: never a symlink's target copied where /runs/ serves it
            with self._writing("final.png"), atomic_path(self.path / "final.png") as tmp:
                Path(tmp).write_bytes(frames[-1].read_bytes())
        if animations:
            self.write_animations(history)

    def captioned_frames(self, history: list[dict], width: int | None = None, min_height: int = 256,
                         max_frames: int | None = None, spacing: str = "even") -> list[np.ndarray]:
        """The frames on disk, captioned with epoch and PSNR, optionally resized to ``width`` pixels.

        ``max_frames`` with ``spacing="log"`` keeps more of the early epochs, where most of the
        learning happens; "even" keeps the animation's clock linear in epochs.
        """
        if spacing not in FRAME_SPACINGS:
            raise UserError(f"unknown --spacing {spacing!r}; choose one of: {', '.join(FRAME_SPACINGS)}")
        rows = [row for row in history if self.frame_path(row["epoch"]).exists()]
        if max_frames is not None and len(rows) > max_frames:
            if spacing == "log":
                picks = np.unique(np.geomspace(1, len(rows), max_frames).round().astype(int) - 1)
            else:
                picks = animation.subsample_indices(len(rows), max_frames)
            rows = [rows[i] for i in picks]
        captioned, size = [], None
        for row in rows:
            image = self._frame_image(row["epoch"], size)
            size = image.size
            if width is not None and width != image.width:
                height = max(1, round(image.height * width / image.width))
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            captioned.append(animation.caption_frame(np.asarray(image), f"epoch {row['epoch']}   PSNR {row['psnr']:.2f} dB",
                                                   min_height=min_height))
        return captioned

    def frame(self, epoch: int) -> np.ndarray:
        """Frame ``epoch`` as (H, W, 3) uint8, checked as ``_frame_image`` checks it."""
        return np.asarray(self._frame_image(epoch))

    def _frame_image(self, epoch: int, size: tuple[int, int] | None = None) -> Image.Image:
        """Frame ``epoch`` as RGB, checked: a file this run wrote (not a symlink, a FIFO or another file
        put in its place), a PNG, as large as ``size`` (the frames before it). A doctored frame is one line."""
        path = self.frame_path(epoch)
        try:
            own_file(path)
            with Image.open(path) as image:
                if image.format != "PNG":
                    raise ValueError(f"a {image.format} image, not a PNG")
                if size is not None and image.size != size:
                    raise ValueError(f"{image.width}x{image.height} pixels, not {size[0]}x{size[1]} as the frames "
                                     "before it")
                return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self._damaged(f"frames/{path.name}", getattr(exc, "strerror", None) or str(exc)) from None

    def export_animation(self, out: str | Path, width: int | None = None, max_frames: int = 120,
                         spacing: str = "even", fps: float = 12) -> Path:
        """A GIF or MP4 (by ``out``'s suffix) of this run's frames: for sharing, or after an interrupted run."""
        out = Path(out)
        if out.suffix.lower() not in (".gif", ".mp4"):
            raise UserError(f"--out {str(out)!r} must end in .gif or .mp4")
        animation.check_animation(width=width, fps=fps, frames=max_frames)  # before any frame is read
        frames = self.captioned_frames(self.metrics(), width=width, min_height=0, max_frames=max_frames,
                                       spacing=spacing)
        if not frames:
            raise UserError(f"{str(self.path)!r} has no frames yet")
        writer = animation.write_gif if out.suffix.lower() == ".gif" else animation.write_mp4
        with write_errors(out):
            writer(frames, out, fps=fps)
        return out


def _epoch_end_tail(rows: list[dict], epoch: int) -> list[dict]:
    """The rows ``epoch``'s end just recorded: the last ones, so a long run's epoch reads a few rows,
    not its whole history."""
    ends = []
    for row in reversed(rows):
        if row["epoch"] != epoch or row["fraction"] < 1.0:
            break
        ends.append(row)
    return ends[::-1]


class Recorder(Callback):
    """Writes a frame, the layers' dynamics, the checkpoint and the metrics after every epoch, weight
    snapshots at snapshot_wanted's epochs, TensorBoard's events; the animations at the end.

    ``dynamics``: record layers.csv (a LayerDynamics is made and driven from here, so its rows are
    on disk before the checkpoint: see the module's docstring). ``tensorboard``: write event files
    when the package is installed.
    """

    def __init__(self, run: RunDirectory, frames: str = "all", animate_at_end: bool = True,
                 dynamics: bool = True, tensorboard: bool = True):
        self.run = run
        self.frames = frames
        self.animate_at_end = animate_at_end
        self.last_frame: np.ndarray | None = None
        self.dynamics = LayerDynamics() if dynamics else None
        self.tensorboard = tensorboard
        self.board: TensorBoardLog | None = None
        self._layers_text: list[str] = []  # layers.csv's rows so far as text: each row is formatted once
        self._layers_rows = 0  # how many rows _layers_text holds

    def on_start(self, trainer: Trainer) -> None:
        self.run.lock()  # the caller normally holds it already (train_run, resume_run): then this does nothing
        # A resumed run's metrics may lag its checkpoint by one epoch (killed in between).
        self.run.write_metrics(trainer.history)
        self.run.update_info(status=Status.RUNNING, engine=trainer.engine_name, device=str(trainer.device))
        if self.dynamics is not None:
            # A resumed run's layers.csv may lead its checkpoint by an epoch: on_start keeps the rows up to it.
            self.dynamics.on_start(trainer, self.run.layers())
            self._layers_text, self._layers_rows = [], 0
            self._write_layers()
        if trainer.epoch == 0:
            self.run.write_snapshot(0, trainer.model)
        if self.tensorboard:
            self.board = TensorBoardLog.open(self.run.path, first_epoch=trainer.epoch + 1)

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        if self.dynamics is not None:
            self.dynamics.on_progress(trainer, epoch, fraction)

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.last_frame = frame
        epoch = row["epoch"]
        if frame_wanted(epoch, trainer.recipe.epochs, self.frames):
            self.run.write_frame(epoch, frame)
        if self.dynamics is not None:
            self.dynamics.on_epoch(trainer, row, frame)
            self._write_layers()
        if snapshot_wanted(epoch):
            self.run.write_snapshot(epoch, trainer.model)  # fit() synced the engine's weights into it
        self.run.write_checkpoint(trainer.state_dict())
        self.run.write_metrics(trainer.history)
        if self.board is not None:
            ends = _epoch_end_tail(self.dynamics.rows, epoch) if self.dynamics is not None else []
            activations = self.dynamics.last_activations if self.dynamics is not None else {}
            shown = frame if frame_wanted(epoch, trainer.recipe.epochs, "log") else None
            self.board.epoch(row, ends, trainer.model, activations, shown)

    def _write_layers(self) -> None:
        """layers.csv from the dynamics' rows; only rows new since the last write are formatted, so
        a long run's write stays a file copy (~2 ms for 3 MB) rather than a growing CSV job."""
        rows = self.dynamics.rows
        if self._layers_rows < len(rows):
            self._layers_text.append(layers_csv(rows[self._layers_rows:], header=False))
            self._layers_rows = len(rows)
        self.run.write_layers(layers_csv([], header=True) + "".join(self._layers_text))

    def on_end(self, trainer: Trainer, stopped_by: str) -> None:
        try:
            if stopped_by in COMPLETE_REASONS and trainer.history and not \
                    self.run.snapshot_path(trainer.epoch).exists():
                self.run.write_snapshot(trainer.epoch, trainer.model)  # the last epoch's weights, synced
            self.run.write_end(trainer.history, stopped_by, self.last_frame, animations=self.animate_at_end)
        except UserError:
            if stopped_by != "error":
                raise
            # Already failing (a full disk, most likely, and this write hit it too): let the first error
            # through. Every file keeps its last whole version, so the run resumes from its checkpoint.
        finally:
            if self.board is not None:
                self.board.close()
                self.board = None
