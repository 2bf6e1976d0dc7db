"""What the lab keeps on disk: run directories under one root, and uploaded images.

Everything here is plain files, so the lab, the CLI and a restarted server all
see the same runs::

    <runs>/                       the root given to `monalisa serve --runs`
      <run id>/                   an ordinary run directory (runs/directory.py), from the lab or the CLI
      compare-.../runs/<label>/   runs nested in comparison directories are listed too
      .uploads/<sha256>           an uploaded image's bytes, named by their content
      .uploads/<sha256>.json      its size and the name the browser sent (for display only)

Safety: a run id comes from a URL, so it is checked segment by segment and the
resolved path must stay inside the root (no '..', no hidden names, no symlink
out). An upload is named by the SHA-256 of its bytes, never by the name the
browser sent, and is decoded by Pillow behind a byte and a pixel cap before it
is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from urllib.parse import quote

from PIL import Image, UnidentifiedImageError

from monalisa.data.images import BUILTIN_IMAGES, Target, load_image, resize
from monalisa.errors import UserError, one_line, quoted
from monalisa.files import is_own_file, write_json
from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory, read_info, read_recipe, read_run_metrics

UPLOADS = ".uploads"
# Caps on an upload. 32 MB holds any camera JPEG; 40 megapixels is beyond any
# image worth training on a laptop (the lab trains on a resized copy anyway)
# and keeps a decoded upload under ~500 MB of float32.
MAX_UPLOAD_BYTES = 32 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
MAX_RUN_DEPTH = 4  # <root>/compare-x/runs/<label> is 3 segments; a little room beyond

# A run id's segment: no separators, no NUL, not hidden (which also rules out '.' and '..').
_SEGMENT = re.compile(r"^[^./\\\x00][^/\\\x00]{0,199}$")
_UPLOAD_ID = re.compile(r"^upload:([0-9a-f]{64})$")

log = logging.getLogger(__name__)


class LabError(Exception):
    """A request the lab refuses: an HTTP status, a one-line message, and the form field it concerns."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


# -----------------------------------------------------------------------------
# runs


def run_path(root: Path, run_id: str) -> Path:
    """The directory of ``run_id`` under ``root``, or LabError 404; never a path outside ``root``."""
    segments = run_id.split("/")
    if not run_id or len(segments) > MAX_RUN_DEPTH or not all(_SEGMENT.match(s) for s in segments):
        raise LabError(f"{quoted(run_id)} is not a run id", status=404)
    path = root.joinpath(*segments)
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base) or resolved == base:
        raise LabError(f"{quoted(run_id)} is not a run id", status=404)
    if not (path / "run.json").is_file():
        raise LabError(f"no run {quoted(run_id)} under {str(root)!r}", status=404)
    return path


def run_file(root: Path, run_id_and_file: str) -> Path:
    """A file inside a run directory, for /runs/<run id>/<file>; LabError 404 for anything else."""
    segments = run_id_and_file.split("/")
    if len(segments) < 2 or len(segments) > MAX_RUN_DEPTH + 2 or not all(_SEGMENT.match(s) for s in segments):
        raise LabError("not found", status=404)
    path = root.joinpath(*segments)
    resolved, base = path.resolve(), root.resolve()
    # The file must sit in a run directory (or its frames/), inside the root after symlinks.
    owner = path.parent.parent if path.parent.name == "frames" else path.parent
    if not resolved.is_relative_to(base) or not resolved.is_file() or not (owner / "run.json").is_file():
        raise LabError("not found", status=404)
    if owner.resolve() == base:
        raise LabError("not found", status=404)
    return resolved


def run_id_of(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (a folder holding run.json), at most MAX_RUN_DEPTH deep.

    A run whose path run_path would refuse as an id (a backslash, a segment over 200 characters,
    a name that is not UTF-8) is skipped and logged once: listed, its id would fail every request.
    """
    found: list[Path] = []

    def walk(folder: Path, depth: int, unnamed: str | None) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            why = unnamed or _unnameable(entry.name)  # an odd folder's nested runs cannot be named either
            if (path / "run.json").is_file():
                if why is None:
                    found.append(path)
                elif str(path) not in _skipped:
                    _skipped.add(str(path))
                    log.warning("not listing run directory %r: %s, so it cannot be named as a run id", str(path), why)
            elif depth < MAX_RUN_DEPTH:
                walk(path, depth + 1, why)

    walk(root, 1, None)
    return found


_skipped: set[str] = set()  # directories find_runs already logged: the page lists runs every few seconds


def _unnameable(name: str) -> str | None:
    """Why a directory name cannot be one segment of a run id, or None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if len(name) > 200:
        return f"its name is {len(name)} characters long (the limit is 200)"
    if not _SEGMENT.match(name):
        return "its name holds a backslash"  # NUL and '/' cannot be in a name; hidden ones are skipped
    return None


@dataclass
class _Cached:
    key: tuple
    value: object


class RunReader:
    """Reads what the runs view shows from a run directory, caching by file modification time.

    A page polls the list often and a root may hold hundreds of runs; each run's
    metrics.csv is parsed again only when it changes.
    """

    def __init__(self, root: Path):
        self.root = root
        self._cache: dict[Path, _Cached] = {}

    def _read(self, path: Path, reader):
        """``reader(path)``, cached; None when the file is absent, Unreadable when it cannot be read."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Unreadable(exc.strerror or type(exc).__name__)
        if not S_ISREG(stat.st_mode):  # a FIFO would block this thread forever, /dev/zero fill memory
            return Unreadable("not a regular file")
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is None or cached.key != key:
            try:
                cached = _Cached(key, reader(path))
            except FileNotFoundError:
                return None  # deleted between the stat and the read
            except OSError as exc:  # not cached: a permission or I/O error may be fixed without touching the file
                return Unreadable(exc.strerror or type(exc).__name__)
            except (ValueError, KeyError, TypeError, UserError) as exc:  # the content: stays wrong until rewritten
                cached = _Cached(key, Unreadable(one_line(str(exc)) or type(exc).__name__))
            self._cache[path] = cached
        return cached.value

    def metrics(self, run: Path) -> list[dict]:
        """Every epoch's metrics; [] when there are none yet or metrics.csv is unreadable."""
        metrics = self._read(run / "metrics.csv", read_run_metrics)
        return metrics if isinstance(metrics, list) else []

    def info(self, run: Path) -> dict:
        """run.json; {} when it is absent or unreadable."""
        info = self._read(run / "run.json", read_info)
        return info if isinstance(info, dict) else {}

    def summary(self, run: Path) -> dict:
        """The run as the API describes it (see RunSummary in the API docs); status as on disk.

        A run whose files cannot be read (garbage JSON, wrong types, a missing target) is listed
        with status "unreadable" and a message naming the files, so it allows no action.
        """
        run_id = run_id_of(self.root, run)
        problems = []
        info = self._read(run / "run.json", read_info)
        recipe = self._read(run / "recipe.json", read_recipe)
        metrics = self._read(run / "metrics.csv", read_run_metrics)
        for name, value in (("run.json", info), ("recipe.json", recipe), ("metrics.csv", metrics)):
            if isinstance(value, Unreadable):
                problems.append(f"{name} is unreadable ({value.why})")
        if recipe is None:
            problems.append("recipe.json is missing")
        if not (run / "target.npy").is_file():
            problems.append("target.npy is missing")
        info = info if isinstance(info, dict) else {}
        metrics = metrics if isinstance(metrics, list) else []
        if isinstance(recipe, Recipe):
            describe, depth, epochs = recipe.describe(), len(recipe.arch), recipe.epochs
        else:
            recipe, describe, depth, epochs = None, "unreadable recipe", 0, None
        last = metrics[-1] if metrics else {}
        finite = [row["psnr"] for row in metrics if row["psnr"] == row["psnr"]]
        base = f"/runs/{url_path(run_id)}"

        def file_url(name: str) -> str | None:
            return f"{base}/{name}" if (run / name).is_file() else None

        return {
            "id": run_id,
            "image": info.get("image"),
            "source": info.get("source") or f"run:{run_id}",
            "width": info.get("width"),
            "height": info.get("height"),
            "preset": info.get("preset"),
            "describe": describe,
            "recipe": recipe.to_dict() if recipe else None,
            "status": "unreadable" if problems else info.get("status", "unknown"),
            "message": f"{'; '.join(problems)}: the lab cannot use this run" if problems else info.get("message"),
            "epoch": last.get("epoch", 0),
            "epochs": epochs,
            "psnr": last.get("psnr"),
            "best_psnr": max(finite) if finite else None,
            "mae": last.get("mae"),
            "created": info.get("created"),
            "train_seconds": sum(row["train_seconds"] for row in metrics),
            "layers": depth,
            "group": info.get("group"),
            "seed": recipe.seed if recipe else None,
            "files": {
                "target": file_url("target.png"),
                "final": file_url("final.png"),
                "gif": file_url("learning.gif"),
                "mp4": file_url("learning.mp4"),
                "curves": file_url("curves.png"),
                "recipe": file_url("recipe.json"),
            },
            "frame": f"/api/runs/{url_path(run_id)}/frame.png",
            "live": None,
            "actions": [],
            "writer_pid": None,
        }


class Unreadable:
    """A run file that is there but cannot be read as what it should be; ``why`` says how."""

    def __init__(self, why: str):
        self.why = why


# run.json's fields the lab reads, and the types they must have (None: absent).
def url_path(run_id: str) -> str:
    """A run id as it goes into a URL: each segment quoted, the slashes kept."""
    return "/".join(quote(segment, safe="") for segment in run_id.split("/"))


def latest_frame(run: Path) -> Path | None:
    """final.png, else the newest frame on disk: what a finished or stopped run looks like now."""
    # Only the run's own files: final.png -> /etc/passwd must not be served as the run's picture.
    if is_own_file(run / "final.png"):
        return run / "final.png"
    if (run / "frames").is_symlink():  # frames -> a folder elsewhere
        return None
    return next((frame for frame in sorted((run / "frames").glob("epoch-*.png"), reverse=True) if is_own_file(frame)),
                None)


def unique_run_path(root: Path, name: str) -> Path:
    """root/name, or root/name-2, -3, ... when taken."""
    path, n = root / name, 1
    while path.exists():
        n += 1
        path = root / f"{name}-{n}"
    return path


# -----------------------------------------------------------------------------
# images: built-in, uploaded, or another run's target


class Uploads:
    """Uploaded images, each stored once under the SHA-256 of its bytes."""

    def __init__(self, root: Path):
        self.folder = root / UPLOADS

    def add(self, data: bytes, sent_name: str | None) -> dict:
        """Check and keep an upload; LabError 413 when too large, 400 when not an image."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise LabError(f"the upload is {len(data) / 2**20:.1f} MB; the limit is "
                           f"{MAX_UPLOAD_BYTES // 2**20} MB: shrink or recompress it", status=413, field="file")
        if not data:
            raise LabError("the upload is empty; choose an image file", field="file")
        width, height = _image_size(data)
        if width * height > MAX_UPLOAD_PIXELS:
            raise LabError(f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels); the limit is "
                           f"{MAX_UPLOAD_PIXELS / 1e6:.0f} megapixels: shrink it first", status=413, field="file")
        digest = hashlib.sha256(data).hexdigest()
        path, meta = self.folder / digest, self.folder / f"{digest}.json"
        if not (path.is_file() and meta.is_file()):
            self.folder.mkdir(parents=True, exist_ok=True)
            # A random part, not the pid: two requests may upload the same bytes at once, on two threads.
            tmp = self.folder / f".{digest}.tmp-{secrets.token_hex(4)}"
            try:
                tmp.write_bytes(data)
                try:
                    pixels = load_image(tmp)  # the full decode, with the same checks as the CLI
                except UserError:
                    raise LabError("the upload is not an image Pillow can read; use a PNG, JPEG or other image "
                                   "file", field="file") from None
                height, width = pixels.shape[:2]  # after EXIF orientation
                # The description first, the bytes last: an image is listed only once both are there.
                write_json(meta, {"name": _display_name(sent_name), "width": width, "height": height,
                                  "bytes": len(data)})
                os.replace(tmp, path)
            except BaseException:  # a full disk mid-write leaves no half file and no orphan description
                tmp.unlink(missing_ok=True)
                if not path.is_file():
                    meta.unlink(missing_ok=True)
                raise
        return self.describe(digest)

    def describe(self, digest: str) -> dict:
        """An upload as the API lists it; LabError 404 when its description is missing or damaged."""
        try:
            meta = json.loads((self.folder / f"{digest}.json").read_text())
            name, width, height = str(meta["name"]), int(meta["width"]), int(meta["height"])
        except (OSError, ValueError, KeyError, TypeError):
            raise LabError(f"no uploaded image 'upload:{digest}'; upload it again", status=404, field="image") from None
        return {"id": f"upload:{digest}", "name": name, "width": width, "height": height,
                "thumbnail": f"/api/images/upload:{digest}/thumbnail.png"}

    def all(self) -> list[dict]:
        if not self.folder.is_dir():
            return []
        found = []
        for meta in self.folder.glob("*.json"):
            try:
                if re.fullmatch(r"[0-9a-f]{64}", meta.stem) and (self.folder / meta.stem).is_file():
                    found.append((meta.stat().st_mtime, self.describe(meta.stem)))
            except (OSError, LabError):
                continue  # removed meanwhile, or a damaged description: not offered
        return [upload for _, upload in sorted(found, key=lambda pair: pair[0], reverse=True)]

    def path(self, image_id: str) -> Path:
        match = _UPLOAD_ID.match(image_id)
        if not match or not (self.folder / match.group(1)).is_file():
            raise LabError(f"no uploaded image {quoted(image_id)}; upload it again", status=404, field="image")
        return self.folder / match.group(1)


def _image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the header alone: the pixel cap is checked before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:
        raise LabError(f"the image has more than {Image.MAX_IMAGE_PIXELS:,} pixels; shrink it first",
                       status=413, field="file") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise LabError("the upload is not an image Pillow can read; use a PNG, JPEG or other image file",
                       field="file") from None


def _display_name(name: str | None) -> str:
    """The browser's file name, for showing only: its last component, printable, short."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:80]
    return name or "upload"


def parse_lab_size(text: str | None) -> tuple[str, object]:
    """The form's size: 'full', '128' (longest side in pixels) or 'WxH'. -> (kind, value)."""
    from monalisa.data.images import parse_size

    text = (text or "full").strip().lower()
    if text == "full":
        return "full", None
    if text.isascii() and text.isdigit():
        if len(text.lstrip("0")) > 9:  # past any image, and int() of thousands of digits refuses outright
            raise LabError(f"size {quoted(text)} is larger than any image; write full for the image's own size",
                           field="size")
        side = int(text)
        if side < 2:
            raise LabError(f"size {quoted(text)} is too small; give at least 2 pixels", field="size")
        return "side", side
    try:
        return "size", parse_size(text)
    except UserError:
        raise LabError(f"malformed size {quoted(text)}; write full, a longest side such as 128, or WIDTHxHEIGHT such as "
                       "150x214", field="size") from None


def load_lab_target(root: Path, uploads: Uploads, image_id: str, size: str | None) -> tuple[Target, str]:
    """The training target for an image id and size, and the id to record as the run's source.

    Ids: a built-in name, 'upload:<sha256>', or 'run:<run id>' (that run's exact target: 'run again'
    and 'compare with' train on the same pixels, so the size is ignored).
    """
    if image_id.startswith("run:"):
        try:
            return RunDirectory.open(run_path(root, image_id[4:])).target(), image_id
        except UserError as exc:  # a damaged run: its target.npy or run.json cannot be read
            raise LabError(str(exc), status=409, field="image") from None
    kind, value = parse_lab_size(size)
    if image_id in BUILTIN_IMAGES:
        pixels, name = load_image(image_id), image_id
    elif image_id.startswith("upload:"):
        pixels, name = load_image(uploads.path(image_id)), f"upload-{image_id[7:15]}"
    else:
        raise LabError(f"unknown image {quoted(image_id)}; pick a built-in image or upload one", field="image")
    height, width = pixels.shape[:2]
    if kind == "side" and value < max(height, width):
        pixels = resize(pixels, scale=value / max(height, width))
    elif kind == "size":
        pixels = resize(pixels, size=value)
    return Target(name=name, pixels=pixels), image_id
