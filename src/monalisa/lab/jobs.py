"""The lab's runs: created on disk, queued, trained in worker processes, watched live.

``Lab`` is the whole back end of `monalisa serve` without the web: the HTTP
layer (app.py) only translates requests into these calls, so a script can
drive the lab from Python too::

    lab = Lab(Path("runs"), jobs=2)
    lab.start()
    run = lab.create_run("astronaut", "128", "quick", "arch = \\"2x64\\"")
    ...
    lab.close()  # running runs pause: every one resumes later

At most ``jobs`` runs train at once, each in its own process with its share of
the cores (two processes of two threads on two cores thrash: compare.py
measured 10x slower); the others wait in order. The state a page shows is the
run directory on disk, overlaid with what only the server knows (queued,
running, the live epoch fraction and preview frame). One thread pumps the
workers' reports into that overlay and out to listeners (the page's event
streams); it also notices workers that exit.

On start, runs left 'queued' on disk are queued again; runs left 'running' by a
server that died are shown as 'interrupted', to be resumed by the user.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engines import usable_cores
from ..errors import UserError
from ..images import BUILTIN_IMAGES, load_image
from ..recipes import get_preset
from ..record import RunBusy, RunDirectory
from ..status import BUSY, EXTENDABLE, Status, actions
from . import DEFAULT_PRESET, forms
from .store import LabError, RunReader, Uploads, find_runs, latest_frame, load_lab_target, run_id_of, run_path, \
    unique_run_path
from .worker import work

CLOSE_SECONDS = 20.0  # how long closing waits for workers to checkpoint and exit before killing them


@dataclass
class _Worker:
    process: multiprocessing.Process
    action: str
    intent: str | None = None  # "pause" or "stop" once asked
    ended: bool = False  # the worker reported its end (and wrote its status)


class Lab:
    def __init__(self, root: str | Path, jobs: int = 2, threads: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs = max(1, jobs)
        self.threads = threads or max(1, usable_cores() // self.jobs)
        self.reader = RunReader(self.root)
        self.uploads = Uploads(self.root)
        self._context = multiprocessing.get_context("spawn")
        self._events = self._context.Queue()
        self._lock = threading.RLock()
        self._waiting: list[tuple[str, str]] = []  # (run id, action) in order
        self._workers: dict[str, _Worker] = {}
        self._live: dict[str, dict] = {}  # run id -> {"epoch", "fraction", "version"}
        self._frames: dict[str, bytes] = {}  # run id -> latest PNG from its worker
        self._versions = itertools.count(1)
        self._listeners: list[Callable[[dict], None]] = []
        self._pump: threading.Thread | None = None
        self._closing = False

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        import torch

        torch.set_num_threads(1)  # the server's own torch work (neuron maps) must not starve the workers
        queued = [p for p in find_runs(self.root) if self.reader.info(p).get("status") == "queued"]
        queued.sort(key=lambda p: self.reader.info(p).get("created") or "")
        with self._lock:
            self._waiting = [(run_id_of(self.root, p), "train") for p in queued]
        self._pump = threading.Thread(target=self._pump_events, name="lab-events", daemon=True)
        self._pump.start()
        self._fill()

    def close(self) -> None:
        """Pause every running run (each resumes from its last epoch); queued runs stay queued on disk."""
        with self._lock:
            self._closing = True
            workers = list(self._workers.items())
            for _, worker in workers:
                worker.intent = worker.intent or "pause"
                _signal(worker.process, signal.SIGINT)
        deadline = time.monotonic() + CLOSE_SECONDS
        for run_id, worker in workers:
            worker.process.join(max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        if self._pump is not None:
            self._pump.join(timeout=5)
        for run_id, worker in workers:
            if not worker.ended:
                self._settle(run_id, "the server stopped; resume the run to continue it")
        # Free the queue's semaphores now: left to the end of the interpreter, they are reported leaked.
        self._events.close()
        self._events.join_thread()
        workers.clear()
        self._events = None
        gc.collect()

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

        from ..images import DEFAULT_IMAGE, builtin_path

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
        recipe = forms.build_recipe(preset, recipe_text, fields)
        target, source = load_lab_target(self.root, self.uploads, image, size)
        forms.check_size(recipe, target)  # the training image's pixels (limits.py), before target.npy is written
        preset = preset or DEFAULT_PRESET
        label = preset if recipe == get_preset(preset) else recipe.label()
        # The stem goes into a path: an upload's display name and a run's recorded image name are
        # both outside data (a browser, a stranger's run.json), so both are reduced to safe characters.
        shown = self.uploads.describe(image[7:])["name"] if image.startswith("upload:") else target.name
        stem = _safe_stem(shown, "upload-" + image[7:15] if image.startswith("upload:") else "run")
        with self._lock:
            path = unique_run_path(self.root, f"{stem}-{label}-{time.strftime('%Y%m%d-%H%M%S')}")
            path.mkdir()  # ours from here (unique_run_path found it free): removed again if the writing fails
            try:
                run = RunDirectory.create(path, recipe, target, {"preset": preset, "frames": "all", "source": source})
                with run.writing():  # created locked; let go here, for its worker to take
                    run.update_info(status="queued")
            except BaseException:  # a full disk mid-write: a half run would be listed as unreadable forever
                shutil.rmtree(path, ignore_errors=True)
                raise
            run_id = run_id_of(self.root, path)
            self._waiting.append((run_id, "train"))
        self._announce(run_id)
        self._fill()
        return self.summary(run_id)

    def runs(self) -> list[dict]:
        summaries = []
        for path in find_runs(self.root):
            try:
                summaries.append(self.summary(run_id_of(self.root, path)))
            except LabError:
                pass  # deleted since it was found
        return sorted(summaries, key=lambda s: s["created"] or "", reverse=True)

    def summary(self, run_id: str) -> dict:
        path = run_path(self.root, run_id)
        summary = self.reader.summary(path)
        with self._lock:
            worker = self._workers.get(run_id)
            if worker is not None and not worker.ended:
                summary["status"] = {"pause": Status.PAUSING, "stop": Status.STOPPING}.get(worker.intent, Status.RUNNING)
                if worker.action == "finish":
                    summary["status"] = Status.STOPPING
            elif any(r == run_id for r, _ in self._waiting):
                summary["status"] = Status.QUEUED
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
            if self._take_from_queue(run_id):
                self._mark(run_id, "paused", None)
            elif run_id in self._workers:
                worker = self._workers[run_id]
                worker.intent = "pause"
                _signal(worker.process, signal.SIGINT)
        self._announce(run_id)
        return self.summary(run_id)

    def stop(self, run_id: str) -> dict:
        self._act(run_id, "stop")
        with self._lock:
            if run_id in self._workers:
                worker = self._workers[run_id]
                worker.intent = "stop"
                _signal(worker.process, signal.SIGTERM)
            else:
                self._take_from_queue(run_id)
                if self.metrics(run_id):
                    self._waiting.insert(0, (run_id, "finish"))  # its GIF and MP4 are written by a worker
                else:
                    self._mark(run_id, "stopped", None)  # never trained: nothing to finish
        self._announce(run_id)
        self._fill()
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
            self._waiting.append((run_id, "train"))
        self._announce(run_id)
        self._fill()
        return self.summary(run_id)

    def _act(self, run_id: str, action: str) -> None:
        summary = self.summary(run_id)
        if action not in summary["actions"]:
            allowed = ", ".join(summary["actions"]) or "nothing"
            raise LabError(f"cannot {action} run {run_id!r}: it is {summary['status']} (it allows {allowed})",
                           status=409)

    def _take_from_queue(self, run_id: str) -> bool:
        before = len(self._waiting)
        self._waiting = [(r, a) for r, a in self._waiting if r != run_id]
        return len(self._waiting) != before

    def _mark(self, run_id: str, status: str, message: str | None) -> None:
        try:
            RunDirectory(run_path(self.root, run_id)).update_info(status=status, message=message)
        except (LabError, UserError, OSError, ValueError):
            pass  # deleted (or damaged) meanwhile: nothing to mark

    # -- workers -----------------------------------------------------------------------

    def _fill(self) -> None:
        """Start waiting runs while slots are free.

        A run whose last worker has reported its end but not yet exited waits until it is reaped:
        one worker per run, and every worker tracked until it is joined (never an orphan).
        """
        with self._lock:
            while not self._closing and len(self._workers) < self.jobs:
                ready = [i for i, (run_id, _) in enumerate(self._waiting) if run_id not in self._workers]
                if not ready:
                    return
                run_id, action = self._waiting.pop(ready[0])
                try:
                    path = run_path(self.root, run_id)
                except LabError:
                    continue  # deleted while it waited
                # Marked before the worker starts, so the worker's own writes to run.json come after.
                self._mark(run_id, "running", None)
                process = self._context.Process(
                    target=work, name=f"monalisa-run {run_id}", daemon=False,
                    args=(str(path), run_id, action, self.threads, self._events, os.getpid()))
                process.start()
                self._workers[run_id] = _Worker(process, action)
                self._live[run_id] = {"epoch": None, "fraction": 0.0, "version": None}

    def _pump_events(self) -> None:
        """Move worker reports to the overlay and the listeners; reap workers that exited."""
        while True:
            try:
                event = self._events.get(timeout=0.2)
            except queue.Empty:
                event = None
            except (EOFError, OSError):
                return
            if event is not None:
                self._handle(event)
            self._reap()
            with self._lock:
                if self._closing and not self._workers:
                    return

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
            elif kind == "end" and run_id in self._workers:
                self._workers[run_id].ended = True
        if kind in ("progress", "frame", "epoch"):
            self._broadcast(event)
        if kind in ("started", "epoch", "end"):
            self._announce(run_id)

    def _reap(self) -> None:
        with self._lock:
            gone = [(r, w) for r, w in self._workers.items() if not w.process.is_alive()]
            if any(not w.ended for _, w in gone):
                self._drain()  # a worker's last reports can still be in the pipe when it is seen gone
            for run_id, worker in gone:
                worker.process.join()
                del self._workers[run_id]
                self._live.pop(run_id, None)
                if not worker.ended:  # killed before it could report: its directory still resumes
                    self._settle(run_id, f"the worker process ended unexpectedly "
                                         f"(exit code {worker.process.exitcode})")
        for run_id, _ in gone:
            self._announce(run_id)
        if gone:
            self._fill()

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            self._handle(event)

    def _settle(self, run_id: str, message: str) -> None:
        """A worker ended without a word: 'interrupted', unless it wrote its own status before it went."""
        try:
            status = RunDirectory(run_path(self.root, run_id)).info().get("status")
        except (LabError, UserError, OSError, ValueError):
            return
        if status == "running":
            self._mark(run_id, "interrupted", message)

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


def _safe_stem(name: str, fallback: str) -> str:
    """A run directory's stem from a name we do not control ('Mona Lisa.jpg' -> 'Mona_Lisa').

    Only letters, digits, '_' and '-' survive, so it can never become a path ('../x' -> 'x');
    a name with none of them gives ``fallback``.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem)
    stem = stem.strip("_-")[:40].rstrip("_-")
    return stem or fallback


def _signal(process: multiprocessing.Process, signum: int) -> None:
    try:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signum)
    except ProcessLookupError:
        pass
