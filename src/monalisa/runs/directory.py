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
    events.out.tfevents.*   TensorBoard's event files (runs/tensorboard.py), when tensorboard is installed
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
retrains that epoch, so no row is lost or written twice. ``run.json``'s ``epochs_done`` counts only the
epochs whose checkpoint and metrics were both written, so after a failed write (a full disk) it
agrees with them; a resume counts from the checkpoint.

Reading and writing are kept apart. ``RunDirectory.open`` reads and changes
nothing (a run may be training while it is read). A process writes a run only
while it holds the run's lock (``lock()`` / ``writing()``; the Recorder, recorder.py, writes it as it trains): an OS lock
(``flock``) on ``.lock`` in the run directory, so there is one writer per run,
and the kernel drops the lock when its process dies (a SIGKILL leaves no stale
lock). The writer, and only the writer, removes the temporary files a killed
writer left behind. Before each write the writer checks that the run's path still leads to the lock
it holds: a run directory moved or deleted while it trains stops its writer with one line
(RunMoved), and no write ever makes a folder again at the old path. A reader may ask whether
another process writes a run (``writer_elsewhere``) without writing anything. Checkpoints hold tensors and plain Python values only and
are loaded with ``weights_only=True``: a run directory is data, never code.
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
import pickle
import shutil
import stat
import time
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monalisa.data.images import Target
from monalisa.errors import UserError, quoted, unknown_name
from monalisa.files import (
    LineTooLong,
    atomic_path,
    existing_folders,
    read_json,
    read_metrics,
    read_npy,
    require_own_file,
    require_regular,
    save_png,
    write_errors,
    write_failure,
    write_json,
    write_text,
)
from monalisa.recipes.limits import LimitError, check_pixels, check_recipe, checkpoint_bytes
from monalisa.recipes.recipe import Recipe
from monalisa.runs import animation
from monalisa.runs.status import COMPLETE_REASONS, Status, status_after
from monalisa.training.dynamics import plot_dynamics, read_layers
from monalisa.training.trainer import METRIC_COLUMNS

FRAME_SCHEDULES = ("all", "log")
# zlib level for the frame written after every epoch: a Mona Lisa frame takes 7.8 ms at 1
# against 24.5 ms at PIL's default 6, for a file 2% larger (228 against 222 kB).
FRAME_COMPRESSION = 1
FRAME_SPACINGS = ("even", "log")  # which frames an exported animation keeps: see captioned_frames
LOCK_FILE = ".lock"  # hidden, like the temporary files; removed by a writer that ends normally
# How long lock() keeps trying a lock that is taken before it says the run is busy: a reader's
# writer_elsewhere() holds a shared lock for the few microseconds of its question (a loaded machine
# may pause its thread for a few milliseconds), and a writer starting then must not be refused.
LOCK_GRACE_SECONDS = 0.25
STALE_TEMPORARIES = ".*.tmp-*"  # files.atomic_path's temporary names
SNAPSHOTS = "snapshots"
# A snapshot is its model's weights in float16 plus, per array, an .npy header (128 bytes) and zip
# headers (~150 bytes and the name twice); a file bigger than that is not a snapshot of that model.
SNAPSHOT_BYTES_PER_MEMBER = 4096
SNAPSHOT_SLACK_BYTES = 2**16
TENSORBOARD_FILES = "events.out.tfevents.*"  # runs/tensorboard.py's, named so by TensorBoard


class RunBusy(UserError):
    """Another process holds the run's lock: it is writing the run. ``pid``: that process, when its
    lock file says (None when it does not); ``who``: "another process (pid N)", for messages."""

    def __init__(self, path: Path, holder: str):
        self.pid = int(holder) if holder.isdigit() else None
        self.who = f"another process (pid {self.pid})" if self.pid is not None else "another process"
        super().__init__(f"{str(path)!r} is being written by {self.who}; wait for it to end, or stop it, "
                         "then try again")


class RunMoved(UserError):
    """The run directory a writer holds was moved or deleted while it trained: the writer stops."""


def damaged(path: Path, detail: str, directory: str = "run directory", again: str = "train the run again") -> UserError:
    """The one line for a file of a run (or comparison, or search) that is not what it should be."""
    detail = getattr(detail, "strerror", None) or str(detail)
    return UserError(f"{str(path)!r} cannot be read ({detail}); the {directory} is damaged: restore the file from "
                     f"a copy, or {again}")


def read_target(path: Path, width: int, height: int, described_in: Path) -> np.ndarray:
    """(height, width, 3) float32 in [0, 1] from a run's, comparison's or search's target.npy, where
    ``described_in`` (run.json, comparison.json, search.json) gives the size: that size is checked
    against limits.py (LimitError) and the file's header against it (files.read_npy) before a pixel
    is read. OSError or ValueError for a file that is not that array."""
    if not all(type(side) is int and side >= 1 for side in (width, height)):
        raise ValueError(f"{described_in.name} gives its size as {width!r}x{height!r}, not two positive whole numbers")
    check_pixels(width * height, f"{str(described_in)!r}: its {width:,}x{height:,} target", shrink="")
    require_regular(path)  # a FIFO would block the open
    with open(path, "rb") as f:
        pixels = read_npy(f, np.float32, (height, width, 3), size=os.fstat(f.fileno()).st_size)
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise ValueError("values outside [0, 1]")
    return pixels


def write_target(path: Path, pixels: np.ndarray) -> None:
    """target.npy: the training target as float32 (H, W, 3), atomically; read_target reads it back. A run,
    a comparison and a search each keep one, so a resume needs no source image."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(pixels, dtype=np.float32))


# run.json's fields and their types: a reader that shows them (the lab's list) trusts nothing else.
INFO_TYPES = {"image": str, "source": str, "preset": str, "created": str, "status": str, "message": str,
              "width": int, "height": int, "group": str}


def read_info(path: Path) -> dict:
    """run.json, checked: an object of at most MAX_JSON_BYTES, each known field of its type, an image name
    and a positive size. OSError or ValueError saying what is wrong; RunDirectory.info and the lab's list
    both read it here."""
    info = read_json(path)
    for name, kind in INFO_TYPES.items():
        value = info.get(name)
        if value is not None and type(value) is not kind:
            raise ValueError(f"{name} is {quoted(value)}, not a {kind.__name__}")
    if not isinstance(info.get("image"), str):
        raise ValueError("no image name")
    for key in ("width", "height"):
        if info.get(key) is None or info[key] < 1:
            raise ValueError(f"{key} is not a positive whole number")
    return info


def read_recipe(path: Path) -> Recipe:
    """recipe.json, checked against the limits as a recipe the user wrote would be (a run directory may
    come from anyone: an arch of 100,000,000 units must be refused, not built); ValueError or LimitError."""
    data = read_json(path)
    try:
        recipe = Recipe.from_dict(data)
    except (UserError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a valid recipe: {exc}") from None
    check_recipe(recipe, source=str(path))
    return recipe


def read_run_metrics(path: Path) -> list[dict]:
    """metrics.csv's rows; ValueError when a row is short, holds a word, or a column readers use is missing."""
    try:
        rows = read_metrics(path)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except LineTooLong:
        raise
    except (TypeError, ValueError, csv.Error):  # float(None) for a short row, float('x') for a word
        raise ValueError("a row is short or holds something that is not a number") from None
    for row in rows:  # every column the run writes: the lab's answer (schemas.MetricsRow) names each
        if not set(METRIC_COLUMNS) <= row.keys():
            raise ValueError(f"it lacks the columns {', '.join(METRIC_COLUMNS)}")
    return rows


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
            with write_errors(path / "target.npy"):
                write_target(path / "target.npy", target.pixels)
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
        grace = time.monotonic() + LOCK_GRACE_SECONDS
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
                if time.monotonic() < grace:
                    time.sleep(0.01)  # a reader's question, most likely: see LOCK_GRACE_SECONDS
                    continue
                raise RunBusy(self.path, holder) from None
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
            if self._in_place():  # a moved run's path may lead to another run's lock file now
                (self.path / LOCK_FILE).unlink(missing_ok=True)  # before letting go: see lock()
        except OSError:
            pass
        os.close(self._lock)
        self._lock = None
        self._depth = 0

    def _in_place(self) -> bool:
        """Whether the path still leads to the lock file this object holds (True when it holds none)."""
        if self._lock is None:
            return True
        try:
            here = os.stat(self.path / LOCK_FILE)
        except OSError:  # gone, or a part of the path is a file now
            return False
        mine = os.fstat(self._lock)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def check_in_place(self) -> None:
        """RunMoved unless the run directory is still where its writer locked it: every write checks,
        so a run moved or deleted mid-training stops at its next write instead of writing a ghost."""
        if not self._in_place():
            raise self._moved()

    def _moved(self) -> RunMoved:
        return RunMoved(f"the run directory {str(self.path)!r} was moved or deleted while it trained; stopped "
                        "(a moved run continues with --resume at its new place)")

    def writer_elsewhere(self) -> RunBusy | None:
        """RunBusy naming the process that writes this run, if another process holds its lock; else None.

        A reader's question: it opens the lock file read-only, without creating it, takes a shared
        lock for an instant (a writer starting then waits: LOCK_GRACE_SECONDS) and writes nothing.
        A lock held by this very process (another object of it) is not elsewhere.
        """
        if self._lock is not None:
            return None
        try:
            # O_NONBLOCK: a FIFO put in the lock file's place must not hang the reader.
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None  # no lock file: no writer (one that ends removes it), or not ours to open
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                busy = RunBusy(self.path, os.pread(fd, 32, 0).decode(errors="replace").strip())
                return None if busy.pid == os.getpid() else busy
            except OSError:
                return None
            return None  # free: a writer that was killed left the file; closing the file lets the lock go
        finally:
            os.close(fd)

    @contextmanager
    def writing(self):
        """``with run.writing():`` hold the lock for the block; nested blocks share the outer one's."""
        self.lock()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth = max(0, self._depth - 1)  # 0 already if the block called unlock() itself
            if self._depth == 0:
                self.unlock()

    def hold(self) -> RunDirectory:
        """lock() for the caller until its unlock(): writing() blocks inside (resume_run's, finish_run's)
        share it and do not let go, so the caller's own last write (a worker's status) is still the writer's."""
        self.lock()
        self._depth += 1
        return self

    # -- reading -------------------------------------------------------------------
    # Every file may be damaged or doctored: each reader checks what it gets and says, in one line,
    # which file is wrong and what to do.

    def _damaged(self, name: str, detail: str) -> UserError:
        return damaged(self.path / name, detail)

    def _json(self, name: str) -> dict:
        return self._checked(name, read_json)

    def _checked(self, name: str, reader):
        """``reader`` on one of the run's files; its complaint (OSError, ValueError) as one damaged-file line.
        A LimitError (a recipe past the limits) stays itself: it says which limit and how to lift it."""
        try:
            return reader(self.path / name)
        except LimitError:
            raise
        except OSError as exc:
            raise self._damaged(name, exc.strerror or str(exc)) from None
        except ValueError as exc:
            raise self._damaged(name, str(exc)) from None

    def info(self) -> dict:
        return self._checked("run.json", read_info)

    def recipe(self) -> Recipe:
        """recipe.json, checked against the limits (read_recipe); a LimitError says which limit and how to lift it."""
        return self._checked("recipe.json", read_recipe)

    def target(self) -> Target:
        """target.npy, as float32 of run.json's size: that size is checked against limits.py and the
        file's header against it before any pixel is read (read_npy)."""
        info = self.info()
        try:
            pixels = read_target(self.path / "target.npy", info["width"], info["height"], self.path / "run.json")
        except OSError as exc:
            raise self._damaged("target.npy", exc.strerror or str(exc)) from None
        except ValueError as exc:  # a header unlike run.json's size, a short file, values outside [0, 1]
            raise self._damaged("target.npy", str(exc)) from None
        return Target(name=info["image"], pixels=pixels)

    def checkpoint(self) -> dict | None:
        """The last checkpoint, or None before the first epoch. Loaded with ``weights_only=True``:
        tensors and plain Python values only, so a doctored file cannot run code; and only once
        the file is no bigger than a checkpoint of recipe.json's network can be (limits.checkpoint_bytes),
        with a zip directory that claims no more than the file holds (torch.load sizes each tensor's
        buffer from it)."""
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        bound = checkpoint_bytes(self.recipe())
        try:
            require_regular(path)  # a FIFO named checkpoint.pt would block the open forever
            f = open(path, "rb")  # one open file for the checks and the load: a writer's rename cannot come between
        except OSError as exc:
            raise self._damaged("checkpoint.pt", exc.strerror or str(exc)) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > bound:
                raise self._damaged("checkpoint.pt", f"{size:,} bytes, more than the {bound:,} a checkpoint of "
                                                     "recipe.json's network holds")
            try:
                with zipfile.ZipFile(f) as archive:
                    members = archive.infolist()
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise self._damaged("checkpoint.pt", f"truncated or not a checkpoint: {exc}") from None
            claimed = sum(member.file_size for member in members)
            if claimed > size or any(member.compress_type != zipfile.ZIP_STORED
                                     or member.compress_size != member.file_size for member in members):
                # torch.save stores every member as it is: a claim past the file's own size is a lie
                raise self._damaged("checkpoint.pt", f"its zip directory claims {claimed:,} bytes in a file of "
                                                     f"{size:,}")
            f.seek(0)
            return self._load_checkpoint(f)

    def _load_checkpoint(self, f) -> dict:
        path = self.path / "checkpoint.pt"
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
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
        return self._csv("metrics.csv", read_run_metrics)

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
        except LineTooLong as exc:
            raise self._damaged(name, str(exc)) from None
        except (ValueError, KeyError, TypeError, csv.Error) as exc:
            raise self._damaged(name, f"{type(exc).__name__}: {exc}") from None

    def snapshot_path(self, epoch: int) -> Path:
        return self.path / SNAPSHOTS / f"epoch-{epoch:05d}.npz"

    def snapshot_epochs(self) -> list[int]:
        """The epochs whose weights are in snapshots/, in order."""
        folder = self.path / SNAPSHOTS
        names = sorted(folder.glob("epoch-*.npz")) if folder.is_dir() else []
        return [int(path.stem.split("-")[1]) for path in names if path.stem.split("-")[1].isdigit()]

    def snapshot(self, epoch: int, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Snapshot ``epoch``'s weights as float32 tensors, a state dict for ``model`` (by default
        build_model(recipe.json)). Each member's header must name one of the model's tensors with its
        shape (write_snapshot's float16) before its data is read, so a doctored archive costs no more
        memory than the model's own weights; anything else is one line naming the snapshot."""
        path = self.snapshot_path(epoch)
        name = f"{SNAPSHOTS}/{path.name}"
        if model is None:
            from monalisa.models.network import build_model

            model = build_model(self.recipe())
        expected = {f"{key}.npy": (key, np.float16 if value.is_floating_point() else value.numpy().dtype,
                                   tuple(value.shape)) for key, value in model.state_dict().items()}
        data_bytes = sum(math.prod(shape) * np.dtype(dtype).itemsize for _, dtype, shape in expected.values())
        try:
            require_own_file(path)
            require_regular(path, data_bytes + SNAPSHOT_BYTES_PER_MEMBER * len(expected) + SNAPSHOT_SLACK_BYTES)
            weights = {}
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                names = sorted(member.filename for member in members)
                if names != sorted(expected):
                    stranger = next((n for n in names if n not in expected), None)
                    why = f"an array {stranger[:60]!r} the network lacks" if stranger is not None else \
                        f"{len(names):,} arrays where the network has {len(expected):,}"
                    raise ValueError(f"{why}: not a snapshot of recipe.json's network")
                for member in members:
                    key, dtype, shape = expected[member.filename]
                    with archive.open(member) as f:
                        try:
                            array = read_npy(f, dtype, shape, size=member.file_size)
                        except ValueError as exc:
                            raise ValueError(f"{key}: {exc}") from None
                    weights[key] = torch.from_numpy(array.astype(np.float32) if array.dtype.kind == "f" else array)
            return weights
        except OSError as exc:
            raise self._damaged(name, exc.strerror or str(exc)) from None
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:
            raise self._damaged(name, f"truncated or not a NumPy archive: {exc}") from None
        except ValueError as exc:
            raise self._damaged(name, str(exc)) from None

    def frame_path(self, epoch: int) -> Path:
        return self.path / "frames" / f"epoch-{epoch:05d}.png"

    # -- writing -------------------------------------------------------------------

    @contextmanager
    def _writing(self, name: str | Path):
        """Around every write of a file of this run: the run must still be where it was locked
        (check_in_place), no folder is made along the way (files.existing_folders), and an OSError
        is write_errors' line (a full disk's says how to continue the run), or RunMoved's when the
        write failed because the directory went meanwhile."""
        self.check_in_place()
        try:
            with existing_folders(), write_errors(self.path / name, run=self.path):
                yield
        except UserError:
            if not self._in_place():
                raise self._moved() from None
            raise

    def _folder(self, name: str) -> None:
        """The run's own folder ``name`` (frames/, snapshots/), made if missing: never the run directory itself."""
        with self._writing(name):
            (self.path / name).mkdir(exist_ok=True)

    def write_info(self, data: dict) -> None:
        with self._writing("run.json"):
            write_json(self.path / "run.json", data)

    def update_info(self, **changes) -> None:
        self.check_in_place()  # before the read: a moved run's line, not a missing run.json's
        self.write_info({**self.info(), **changes})

    def write_recipe(self, recipe: Recipe) -> None:
        with self._writing("recipe.json"):
            write_text(self.path / "recipe.json", recipe.to_json())

    def write_checkpoint(self, state: dict) -> None:
        with self._writing("checkpoint.pt"), atomic_path(self.path / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def write_frame(self, epoch: int, frame: np.ndarray) -> None:
        if not self.frame_path(epoch).parent.is_dir():
            self._folder("frames")
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
        if not path.parent.is_dir():
            self._folder(SNAPSHOTS)
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
            self.frame_image(frames[-1])  # a PNG this run wrote: never a symlink's target copied where /runs/ serves it
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
            raise unknown_name("--spacing", spacing, FRAME_SPACINGS)
        rows = [row for row in history if self.frame_path(row["epoch"]).exists()]
        if max_frames is not None and len(rows) > max_frames:
            if spacing == "log":
                picks = np.unique(np.geomspace(1, len(rows), max_frames).round().astype(int) - 1)
            else:
                picks = animation.subsample_indices(len(rows), max_frames)
            rows = [rows[i] for i in picks]
        captioned = []
        size = self.frame_size() if rows else None
        for row in rows:
            image = self.frame_image(self.frame_path(row["epoch"]), size)
            if width is not None and width != image.width:
                height = max(1, round(image.height * width / image.width))
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            captioned.append(animation.caption_frame(np.asarray(image), f"epoch {row['epoch']}   PSNR {row['psnr']:.2f} dB",
                                                   min_height=min_height))
        return captioned

    def frame(self, epoch: int) -> np.ndarray:
        """Frame ``epoch`` as (H, W, 3) uint8, checked as ``frame_image`` checks it."""
        return np.asarray(self.frame_image(self.frame_path(epoch)))

    def frame_size(self) -> tuple[int, int]:
        """(width, height) of every frame the run writes: its target's, as run.json gives it."""
        info = self.info()
        return info["width"], info["height"]

    def frame_image(self, path: Path, size: tuple[int, int] | None = None) -> Image.Image:
        """A frame of this run (frames/epoch-*.png, final.png) as RGB, checked: a file this run wrote (not a
        symlink, a FIFO or another file put in its place), a PNG of the run's size (``size``, by default
        frame_size()). The size is read from the header and compared before any pixel is decoded: a
        250 kB PNG claiming 9000x9000 would decode to 243 MB, once per frame. A doctored frame is one line."""
        size = size or self.frame_size()
        name = path.relative_to(self.path).as_posix() if path.is_relative_to(self.path) else path.name
        try:
            require_own_file(path)
            with Image.open(path) as image:
                if image.format != "PNG":
                    raise ValueError(f"a {image.format} image, not a PNG")
                if image.size != size:
                    raise ValueError(f"{image.width}x{image.height} pixels, not the run's {size[0]}x{size[1]}")
                return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self._damaged(name, getattr(exc, "strerror", None) or str(exc)) from None

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
