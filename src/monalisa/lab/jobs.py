"""The lab's runs: created on disk, queued, trained in worker processes, watched live.

``Lab`` is the whole back end of `monalisa serve` without the web: the HTTP
layer (app.py) only translates requests into these calls, so a script can
drive the lab from Python too::

    lab = Lab(Path("runs"), jobs=2)
    lab.start()
    run = lab.create_run("astronaut", "128", "quick", "arch = \\"2x64\\"")
    ...
    lab.close()  # running runs pause: every one resumes later

Runs train through the runner (runner.py): at most ``jobs`` at once, each in
its own process with its share of the cores; the others wait in order. The
state a page shows is the run directory on disk, overlaid with what only the
server knows (queued, running, the live epoch fraction and preview frame). One
thread polls the runner and turns its reports into that overlay and out to
listeners (the page's event streams).

On start, runs left 'queued' on disk are queued again; runs left 'running' by a
server that died are shown as 'interrupted', to be resumed by the user. A run
whose lock another process holds (a `monalisa train`, a second lab on the same
runs) is shown as 'elsewhere', with that process's pid, and every action on it
is refused (409): this lab can watch it, not control it.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from monalisa.data.images import BUILTIN_IMAGES, load_image
from monalisa.errors import UserError
from monalisa.execution.runner import Runner
from monalisa.execution.specs import FINISH, RESUME, RunSpec
from monalisa.files import png_bytes
from monalisa.lab import DEFAULT_PRESET, forms
from monalisa.lab.store import (
    LabError,
    RunReader,
    Uploads,
    find_runs,
    latest_frame,
    load_lab_target,
    run_id_of,
    run_path,
    unique_run_path,
)
from monalisa.recipes.recipe import get_preset
from monalisa.runs.directory import RunBusy, RunDirectory
from monalisa.runs.status import BUSY, EXTENDABLE, Status, actions

THUMBNAIL_SIDE = 160  # px, the gallery's tiles at 2x for sharp screens
THUMBNAILS = 64  # thumbnails kept (~30 KB each): the built-in gallery and the recent uploads
NEURON_GRIDS = 32  # neuron grids kept, keyed by run, layer and checkpoint (a 300-unit grid is ~1 MB)
# A render download's widest: 4096 px of the original 4x300 network is ~4.5 TFLOP for a square image,
# a minute or so on one CPU core; wider belongs to `monalisa render`, which has the whole machine.
MAX_RENDER_WIDTH = 4096
MAX_RENDER_PIXELS = 25_000_000  # and a tall image's height with it: 4096 px of the Mona Lisa is 24 megapixels
# Seeds of one recipe from one click: each is a run and a member of the panel's band; the queue trains
# `jobs` at a time, so 20 seeds of the quick preset at 128 px are a few minutes. More is a study's job.
LAB_MAX_SEEDS = 20

log = logging.getLogger(__name__)


class Lab:
    def __init__(self, root: str | Path, jobs: int = 2, threads: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = max(1, jobs)
        self.reader = RunReader(self.root)
        self.uploads = Uploads(self.root)
        self.runner = Runner(self.jobs, threads=threads)  # the queue and the worker processes
        self._lock = threading.RLock()
        self._live: dict[str, dict] = {}  # run id -> {"epoch", "fraction", "version"}
        self._frames: dict[str, bytes] = {}  # run id -> latest PNG from its worker
        self._versions = itertools.count(1)
        self._listeners: list[Callable[[dict], None]] = []
        self._pump: threading.Thread | None = None
        self._closing = False
        # The page asks for every tile and grid it shows, again and again: the last few are kept (LRU).
        self._thumbnails = functools.lru_cache(maxsize=THUMBNAILS)(self._draw_thumbnail)
        self._neuron_grids = functools.lru_cache(maxsize=NEURON_GRIDS)(self._draw_neuron_grid)

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        import torch

        torch.set_num_threads(1)  # the server's own torch work (neuron maps) must not starve the workers
        queued = [p for p in find_runs(self.root) if self.reader.info(p).get("status") == "queued"]
        queued.sort(key=lambda p: self.reader.info(p).get("created") or "")
        self._pump = threading.Thread(target=self._pump_events, name="lab-events", daemon=True)
        self._pump.start()
        with self._lock:
            for path in queued:
                self.runner.submit(self._spec(run_id_of(self.root, path)))

    def close(self) -> None:
        """Pause every running run (each resumes from its last epoch); queued runs stay queued on disk."""
        with self._lock:
            self._closing = True
        if self._pump is not None:
            self._pump.join(timeout=5)  # it sees _closing within one poll
        self.runner.close("the server stopped; resume the run to continue it")
        gc.collect()  # the workers' process objects and the report queue: released now, not at exit

    def subscribe(self, listener: Callable[[dict], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[dict], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- images ----------------------------------------------------------------------

    def images(self) -> dict:
        from PIL import Image

        from monalisa.data.images import DEFAULT_IMAGE, builtin_path

        builtin = []
        for name in BUILTIN_IMAGES:
            with Image.open(builtin_path(name)) as image:  # the header only: the size
                width, height = image.size
            builtin.append({"id": name, "name": name, "width": width, "height": height,
                            "thumbnail": f"/api/images/{name}/thumbnail.png"})
        return {"builtin": builtin, "uploads": self.uploads.all(), "default": DEFAULT_IMAGE}

    def image_pixels(self, image_id: str):
        """An image's float pixels by id, for thumbnails."""
        if image_id in BUILTIN_IMAGES:
            return load_image(image_id)
        if image_id.startswith("upload:"):
            return load_image(self.uploads.path(image_id))
        raise LabError(f"unknown image {image_id!r}", status=404)

    # -- runs ----------------------------------------------------------------------

    def create_run(self, image: str, size: str | None, preset: str | None, recipe_text: str | None = None,
                   fields: dict | None = None) -> dict:
        """Check the set-up, write the run directory, queue it; the run's summary."""
        return self.create_runs(image, size, preset, recipe_text, fields)[0]

    def create_runs(self, image: str, size: str | None, preset: str | None, recipe_text: str | None = None,
                    fields: dict | None = None, seeds: int | list[int] | str | None = None) -> list[dict]:
        """One run per seed (compare.entry_seeds: a count, a list, or their text), each an ordinary run
        directory; several share a ``group`` in run.json, which the page draws as one panel with a band.
        All are written before any is queued, and none is left behind if one cannot be written."""
        recipe = forms.build_recipe(preset, recipe_text, fields)
        chosen = _lab_seeds(recipe, seeds)
        target, source = load_lab_target(self.root, self.uploads, image, size)
        forms.check_size(recipe, target)  # the training image's pixels (limits.py), before target.npy is written
        preset = preset or DEFAULT_PRESET
        label = preset if recipe == get_preset(preset) else recipe.label()
        # The stem goes into a path: an upload's display name and a run's recorded image name are
        # both outside data (a browser, a stranger's run.json), so both are reduced to safe characters.
        shown = self.uploads.describe(image[7:])["name"] if image.startswith("upload:") else target.name
        stem = _safe_stem(shown, "upload-" + image[7:15] if image.startswith("upload:") else "run")
        name = f"{stem}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
        extra = {"preset": preset, "frames": "all", "source": source}
        created: list[Path] = []
        with self._lock:
            try:
                if len(chosen) == 1:
                    created.append(self._write_run(unique_run_path(self.root, name), recipe.replace(seed=chosen[0]),
                                                   target, extra))
                else:
                    group = _free_group(self.root, name, chosen)
                    for seed in chosen:
                        created.append(self._write_run(self.root / f"{group}-s{seed}",
                                                       recipe.replace(seed=seed), target, extra | {"group": group}))
            except BaseException:  # a full disk mid-way: no group is left with some of its seeds
                for path in created:
                    shutil.rmtree(path, ignore_errors=True)
                raise
            run_ids = [run_id_of(self.root, path) for path in created]
            for run_id in run_ids:
                self.runner.submit(self._spec(run_id))
        for run_id in run_ids:
            self._announce(run_id)
        return [self.summary(run_id) for run_id in run_ids]

    def _write_run(self, path: Path, recipe, target, extra: dict) -> Path:
        """A new run directory at ``path`` (found free under the lab's lock), marked queued."""
        path.mkdir()  # ours from here: removed again if the writing fails
        try:
            run = RunDirectory.create(path, recipe, target, extra)
            with run.writing():  # created locked; let go here, for its worker to take
                run.update_info(status="queued")
        except BaseException:  # a half run would be listed as unreadable forever
            shutil.rmtree(path, ignore_errors=True)
            raise
        return path

    def runs(self) -> list[dict]:
        summaries = []
        for path in find_runs(self.root):
            try:
                summaries.append(self.summary(run_id_of(self.root, path)))
            except LabError:
                pass  # deleted since it was found
        # Newest first; two runs created in the same second keep one order (by id).
        return sorted(summaries, key=lambda s: (s["created"] or "", s["id"]), reverse=True)

    def summary(self, run_id: str) -> dict:
        path = run_path(self.root, run_id)
        summary = self.reader.summary(path)
        with self._lock:
            live = self.runner.status(run_id)  # queued, running, pausing, stopping; None when not ours
            # Asked under the lab's lock, which every write of this server's own takes first.
            busy = RunDirectory(path).writer_elsewhere() if live is None else None
            if live is not None:
                summary["status"] = live
            elif busy is not None and summary["status"] != Status.UNREADABLE:
                summary.update(status=Status.ELSEWHERE, writer_pid=busy.pid,
                               message=f"{busy.who} is writing this run (a `monalisa train`, or another lab on "
                                       "these runs): pause, stop or resume it there; this lab only watches it")
            elif summary["status"] in BUSY | {Status.QUEUED}:
                summary["status"] = Status.INTERRUPTED  # on disk as running, but no worker of ours: a server died
            if run_id in self._live and summary["status"] in BUSY:
                summary["live"] = dict(self._live[run_id])
        summary["actions"] = actions(summary["status"])
        return summary

    def metrics(self, run_id: str) -> list[dict]:
        return self.reader.metrics(run_path(self.root, run_id))

    def frame(self, run_id: str) -> bytes | Path:
        """The newest reconstruction: the worker's latest PNG, else the newest frame on disk."""
        path = run_path(self.root, run_id)
        with self._lock:
            if run_id in self._frames:
                return self._frames[run_id]
        frame = latest_frame(path)
        if frame is None:
            raise LabError(f"run {run_id!r} has no frame yet", status=404)
        return frame

    def pause(self, run_id: str) -> dict:
        self._act(run_id, "pause")
        with self._lock:
            if self.runner.cancel(run_id):
                self._mark(run_id, "paused", None)
            else:
                self.runner.pause(run_id)
        self._announce(run_id)
        return self.summary(run_id)

    def stop(self, run_id: str) -> dict:
        self._act(run_id, "stop")
        with self._lock:
            if not self.runner.stop(run_id):
                self.runner.cancel(run_id)
                # Its ending (GIF, MP4, curves; the untrained network for a run that never trained, as a
                # queued seed of a group): a worker's job.
                self.runner.submit(self._spec(run_id, FINISH), first=True)
        self._announce(run_id)
        return self.summary(run_id)

    def resume(self, run_id: str, epochs: int | None = None) -> dict:
        """Queue a paused, stopped or interrupted run again; ``epochs`` extends it (a complete run too).

        The check and the queueing are one step under the lab's lock, so of many requests at once
        exactly one queues the run and the others see it queued (409). The server writes the run only
        under the run's own lock, so a run another process is writing (a CLI --resume) is refused (409).
        """
        if epochs is not None and (type(epochs) is not int or epochs < 1):
            raise LabError(f"epochs must be a positive whole number, got {epochs!r}", field="epochs")
        with self._lock:
            summary = self.summary(run_id)
            if epochs is not None:
                _refuse_elsewhere(summary, "extend")
                if epochs <= summary["epoch"]:
                    raise LabError(f"epochs {epochs} is not more than the {summary['epoch']} epochs "
                                   f"{run_id!r} has trained", status=409, field="epochs")
                if summary["status"] not in EXTENDABLE:
                    raise LabError(f"run {run_id!r} is {summary['status']}; it cannot be extended now", status=409)
            else:
                self._act(run_id, "resume")
            run = RunDirectory.open(run_path(self.root, run_id))
            try:
                with run.writing():
                    if epochs is not None:
                        run.write_recipe(run.recipe().replace(epochs=epochs))
                    run.update_info(status="queued", message=None)
            except RunBusy as exc:
                raise LabError(str(exc), status=409) from None
            self.runner.submit(self._spec(run_id))
        self._announce(run_id)
        return self.summary(run_id)

    def _act(self, run_id: str, action: str) -> None:
        summary = self.summary(run_id)
        _refuse_elsewhere(summary, action)
        if action not in summary["actions"]:
            allowed = ", ".join(summary["actions"]) or "nothing"
            raise LabError(f"cannot {action} run {run_id!r}: it is {summary['status']} (it allows {allowed})",
                           status=409)

    def _mark(self, run_id: str, status: str, message: str | None) -> None:
        """Write ``status`` into a run no worker is on, under the run's lock: 409 if another process has it."""
        try:
            run = RunDirectory(run_path(self.root, run_id))
            with run.writing():
                run.update_info(status=status, message=message)
        except RunBusy as exc:
            raise LabError(str(exc), status=409) from None
        except (LabError, UserError, OSError, ValueError):
            pass  # deleted (or damaged) meanwhile: nothing to mark

    # -- the runner -------------------------------------------------------------------

    def _spec(self, run_id: str, action: str = RESUME) -> RunSpec:
        """Train the run on disk to its recipe's epochs ("resume"), or write its ending ("finish")."""
        return RunSpec(run_id, run_path(self.root, run_id), action, live=True)

    def _pump_events(self) -> None:
        """Poll the runner (it starts waiting runs and reaps ended ones); its reports to the overlay."""
        while not self._closing:
            for report in self.runner.poll():
                self._handle(report)

    def _handle(self, event: dict) -> None:
        run_id, kind = event["id"], event["type"]
        with self._lock:
            live = self._live.setdefault(run_id, {"epoch": None, "fraction": 0.0, "version": None})
            if kind == "progress":
                live.update(epoch=event["epoch"], fraction=event["fraction"])
            elif kind == "frame":
                self._frames[run_id] = event.pop("png")
                live.update(version=next(self._versions), epoch=event["epoch"], fraction=event["fraction"])
                event["version"] = live["version"]
            elif kind == "epoch":
                live.update(epoch=event["row"]["epoch"], fraction=1.0)
            elif kind == "end":
                self._live.pop(run_id, None)
                if event.get("status") == Status.ERROR and event.get("message"):
                    # The page shows it on the run; a run moved away is no longer listed, so say it here too.
                    log.warning("run %s: %s", run_id, event["message"])
        if kind in ("progress", "frame", "epoch"):
            self._broadcast(event)
        if kind in ("started", "epoch", "end"):
            self._announce(run_id)

    # -- listeners ---------------------------------------------------------------------

    def _announce(self, run_id: str) -> None:
        try:
            summary = self.summary(run_id)
        except LabError:
            return
        self._broadcast({"type": "run", "run": summary})

    def _broadcast(self, event: dict) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    # -- pictures ----------------------------------------------------------------------

    def thumbnail(self, image_id: str) -> bytes:
        """A small PNG of an image (at most THUMBNAIL_SIDE px a side); an id names fixed content."""
        return self._thumbnails(image_id)

    def _draw_thumbnail(self, image_id: str) -> bytes:
        from monalisa.data.images import resize

        pixels = self.image_pixels(image_id)
        scale = THUMBNAIL_SIDE / max(pixels.shape[:2])
        small = resize(pixels, scale=scale) if scale < 1 else pixels
        return png_bytes((small * 255).round().astype("uint8"))

    def neuron_grid(self, run_id: str, layer: int) -> tuple[dict, bytes]:
        """What each unit of ``layer`` computes, from the run's latest checkpoint: the layout
        (neurons.NeuronGrid's fields and its summary line) and the grid as a PNG."""
        checkpoint = run_path(self.root, run_id) / "checkpoint.pt"
        saved = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None  # a new checkpoint, a new grid
        return self._neuron_grids(run_id, layer, saved)

    def _draw_neuron_grid(self, run_id: str, layer: int, saved: int | None) -> tuple[dict, bytes]:
        from monalisa.views.neurons import run_neurons

        grid = run_neurons(run_path(self.root, run_id), layer)
        meta = {field.name: getattr(grid, field.name) for field in dataclasses.fields(grid)
                if field.name != "image"} | {"summary": grid.summary}
        return meta, png_bytes(grid.image)

    def render(self, run_id: str, width: int) -> tuple[str, bytes]:
        """The run's latest checkpoint rendered ``width`` px wide, its aspect ratio kept: a file name and a PNG."""
        from monalisa.views.render import render_run

        if not 1 <= width <= MAX_RENDER_WIDTH:
            raise LabError(f"width must be 1 to {MAX_RENDER_WIDTH} px, got {width}; use `monalisa render` for "
                           "larger images", field="width")
        run = RunDirectory(run_path(self.root, run_id))  # not .open(): a reader must not tidy a run a worker writes
        info = run.info()
        height = max(1, round(width * info["height"] / info["width"]))
        if width * height > MAX_RENDER_PIXELS:
            raise LabError(f"{width}x{height} is more than {MAX_RENDER_PIXELS // 10**6} megapixels; choose a smaller "
                           "width, or use `monalisa render`", field="width")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run.path.name}-render-{width}x{height}.png")  # a header is ASCII
        return name, png_bytes(render_run(run, width, height))


def _refuse_elsewhere(summary: dict, action: str) -> None:
    """409 for ``action`` on a run another process writes, naming that process."""
    if summary["status"] == Status.ELSEWHERE:
        raise LabError(f"cannot {action} run {summary['id']!r}: {summary['message']}", status=409)


def _free_group(root: Path, name: str, seeds: tuple[int, ...]) -> str:
    """``name`` (or name-2, -3, ...) such that neither it nor any of its runs '<group>-s<seed>' exists:
    two groups started in the same second never share a name, nor a run directory."""
    group, n = name, 1
    while (root / group).exists() or any((root / f"{group}-s{seed}").exists() for seed in seeds):
        n += 1
        group = f"{name}-{n}"
    return group


def _lab_seeds(recipe, seeds) -> tuple[int, ...]:
    """The seeds a request asks for (None: the recipe's own), at most LAB_MAX_SEEDS; LabError on the field."""
    from monalisa.experiments.compare import entry_seeds, parse_seeds

    try:
        asked = parse_seeds(seeds) if isinstance(seeds, str) else seeds
        count = asked if type(asked) is int else None  # a count past the lab's bound is told the lab's bound
        chosen = entry_seeds(recipe, asked) if count is None or count <= LAB_MAX_SEEDS else None
    except UserError as exc:
        raise LabError(str(exc), field="seeds") from None
    if chosen is None or len(chosen) > LAB_MAX_SEEDS:
        got = count if chosen is None else len(chosen)
        raise LabError(f"the lab trains at most {LAB_MAX_SEEDS} seeds of a recipe at once, got {got}; "
                       "`monalisa compare --seeds` takes up to 100", field="seeds")
    return chosen


def _safe_stem(name: str, fallback: str) -> str:
    """A run directory's stem from a name we do not control ('Mona Lisa.jpg' -> 'Mona_Lisa').

    Only letters, digits, '_' and '-' survive, so it can never become a path ('../x' -> 'x');
    a name with none of them gives ``fallback``.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem)
    stem = stem.strip("_-")[:40].rstrip("_-")
    return stem or fallback
