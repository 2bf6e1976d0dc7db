"""File helpers every module shares: atomic writes, JSON, the metrics CSV, PNG bytes.

    atomic_path(path)      context manager: write to a temporary name, then os.replace
    write_text / write_json / json_safe
    parse_json(text)       json.loads that refuses an object giving a key twice, as TOML does
    csv_rows(path, limit)  a CSV file a run wrote, its size and each line's length checked before parsing
    read_metrics(path)     metrics.csv back as rows (epoch an int, the rest floats)
    read_json(path)        a JSON object from a file of a bounded size
    read_npy(f, dtype, shape)  an array from a .npy stream, its header checked against what the caller expects
    save_png / png_bytes   a uint8 frame as a PNG file (atomically) or as bytes (for the lab)
    write_errors(path)     an OSError while writing (a full disk, a read-only folder) as one line
    existing_folders()     inside it, atomic_path makes no missing folder (a run directory's writes)

Every writer goes through ``atomic_path`` so a reader (or a crash) never sees a half-written
file: the old file stays until the new one is complete.
"""

from __future__ import annotations

import csv
import errno
import glob
import io
import json
import math
import os
import secrets
import stat
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from monalisa.errors import UserError, quoted

PathLike = str | os.PathLike

# False inside existing_folders(): atomic_path then writes only into folders that are there.
_MAKE_FOLDERS = ContextVar("make_folders", default=True)


@contextmanager
def existing_folders():
    """Inside the block atomic_path makes no missing folder: a write into one fails with ENOENT.

    A run directory's writer works inside it (record.RunDirectory): a run moved or deleted while
    it trains must not come back at its old path as a ghost folder holding one new file.
    """
    token = _MAKE_FOLDERS.set(False)
    try:
        yield
    finally:
        _MAKE_FOLDERS.reset(token)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success move it over ``path``.

    The temp file lives in the same directory so ``os.replace`` is an atomic
    rename (same filesystem). It keeps the real suffix at the end
    (``.learning.mp4.tmp-1a2b3c4d.mp4``) because Pillow, matplotlib and ffmpeg
    pick the format from the extension; the leading dot hides it from globs
    like ``*.mp4``. The file is not pre-created (no mkstemp): mkstemp makes it
    0600, and the result should get the usual umask permissions. If the body
    raises, the temp file is removed and ``path`` is left untouched.

    Missing folders along ``path`` are made first, except inside existing_folders().

    The temp name carries the writer's pid (``.learning.mp4.tmp-4242-1a2b3c4d.mp4``): a writer
    killed outright (SIGKILL, power loss) cannot clean up, so each new write of ``path`` first
    removes the temporaries of ``path`` whose writer process is gone.
    """
    path = Path(path)
    try:
        if _MAKE_FOLDERS.get():
            path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # A file where a folder should be ('out.png/x.png'): the disk is fine, the name is not.
        raise UserError(f"cannot write {str(path)!r}: a part of its folder is a file, not a folder; "
                        "choose another path") from None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # absent (the usual case), or a dangling symlink the rename replaces
    if mode is not None and not stat.S_ISREG(mode):
        # os.replace would swap /dev/null (as root), a FIFO or a socket for a regular file.
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
        raise UserError(f"{str(path)!r} is {kind}, not a file; choose a file name to write")
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave litter behind
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``path``'s leftover temporaries whose writer process no longer exists."""
    prefix = f".{path.name}.tmp-"
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or a pid no process has: leave the file alone
    return True


def save_png(pixels_uint8: np.ndarray, path: PathLike, compress_level: int = 6) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as a PNG, atomically (zlib's ``compress_level``, 0-9)."""
    pixels = check_uint8_image(pixels_uint8, allow_grey=True)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", compress_level=compress_level)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)  # fast: the page shows it once
    return buffer.getvalue()



def write_failure(path: Path, exc: OSError, run: Path | None = None) -> UserError:
    """An OSError while writing ``path`` (a full disk, a read-only folder) as one line that says what to do.

    EFBIG (a file past RLIMIT_FSIZE or the filesystem's limit) counts as a full disk here.
    """
    reason = exc.strerror or str(exc)
    # No errno: a short write (NumPy's "9216 requested and 4968 written"), which is a full disk too.
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, None):
        advice = "free some disk space, then " + (f"continue with --resume {run}" if run else "try again")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "it is read-only: choose a writable place (copy a run there to continue it)"
    else:
        advice = "check the disk, then try again"
    return UserError(f"cannot write {str(path)!r} ({reason}); {advice}")


@contextmanager
def write_errors(path: Path, run: Path | None = None):
    """Turn an OSError inside the block into write_failure's line. Used around atomic_path, which has
    already removed its temporary file, so the file under its real name is untouched."""
    try:
        yield
    except OSError as exc:
        raise write_failure(path, exc, run) from None


def write_text(path: Path, text: str) -> None:
    with write_errors(path), atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def json_safe(value):
    """JSON has no infinity or NaN: a non-finite number (a perfect fit's PSNR) becomes None, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


class DuplicateKey(ValueError):
    """A JSON object gives a key twice: json.loads would silently keep the last, TOML refuses it."""


def parse_json(text: str):
    """``json.loads(text)``, but an object (at any depth) that gives a key twice is a DuplicateKey naming it.
    Every recipe read back (a file, the lab's text, a run's recipe.json) is parsed with it."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    data = {}
    for key, value in pairs:
        if key in data:
            raise DuplicateKey(f"the key {quoted(key)} is given twice; give each key once")
        data[key] = value
    return data


# metrics.csv is ~60 bytes an epoch, rewritten whole after every epoch: 64 MB is a million epochs, far past
# any run; a bigger file is doctored (and parsed into dicts it would take gigabytes).
MAX_METRICS_BYTES = 64 * 2**20


def require_regular(path: PathLike, limit: int | None = None) -> None:
    """OSError unless ``path`` is a regular file (after symlinks) of at most ``limit`` bytes.

    A reader calls it before opening a run's or the user's file: a FIFO named checkpoint.pt or
    image.png would block the open forever, and /dev/zero (or a doctored multi-gigabyte file) would
    be read until memory runs out. The OSError carries a strerror, as the callers' messages expect.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        raise OSError(errno.EINVAL, f"not a regular file but {kind}", str(path))
    if limit is not None and info.st_size > limit:
        raise OSError(errno.EFBIG, f"{info.st_size:,} bytes, more than the {limit:,} such a file can hold",
                      str(path))


# run.json, recipe.json, comparison.json, search.json: a few hundred bytes to a few kilobytes; a bigger
# one is doctored, and not parsed.
MAX_JSON_BYTES = 2**20


def require_own_file(path: PathLike) -> None:
    """OSError unless ``path`` itself is a regular file: not a symlink (out of a run or not), FIFO or device.
    For files a run wrote and a reader serves or copies (frames, final.png, snapshots), where
    require_regular, which follows links, would let final.png -> /etc/passwd through."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file of the run (a symlink, FIFO or device)", str(path))


def is_own_file(path: PathLike) -> bool:
    """Whether require_own_file(path) holds."""
    try:
        require_own_file(path)
    except OSError:
        return False
    return True


def read_json(path: PathLike) -> dict:
    """A JSON object from a file of at most MAX_JSON_BYTES; OSError or ValueError saying what is wrong."""
    require_regular(path, MAX_JSON_BYTES)  # a FIFO would block, /dev/zero fill memory
    try:
        data = parse_json(Path(path).read_text())
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except DuplicateKey:
        raise
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    return data


# A line of a CSV file a run writes (metrics.csv: six numbers, ~60 bytes; layers.csv: thirteen, ~140)
# is short. A longer one is doctored: a header or a row of millions of fields would be split into millions
# of strings and dict keys, a gigabyte, before any check could look at them.
MAX_CSV_LINE = 1024


class LineTooLong(ValueError):
    """A line of a run's CSV file past MAX_CSV_LINE: refused before it is split into fields."""


def csv_rows(path: PathLike, limit: int) -> csv.DictReader:
    """A DictReader over the CSV file ``path`` of at most ``limit`` bytes, each of its lines checked
    against MAX_CSV_LINE first (LineTooLong); OSError as require_regular's."""
    require_regular(path, limit)
    return csv.DictReader(_short_lines(path))


def _short_lines(path: PathLike) -> Iterator[str]:
    with open(path, newline="") as f:
        while line := f.readline(MAX_CSV_LINE + 1):  # never more of a line than the limit and one
            if len(line) > MAX_CSV_LINE:
                raise LineTooLong(f"a line longer than {MAX_CSV_LINE:,} characters, where a row of this file "
                                  "is a few dozen")
            yield line


def read_metrics(path: Path) -> list[dict]:
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
            for row in csv_rows(path, MAX_METRICS_BYTES)]



# The .npy header layouts NumPy writes (np.save picks 1.0 unless a header needs more than 64 KB, which
# no array of ours does); 3.0 differs only by UTF-8 field names, which ours never have.
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(f, dtype, shape: tuple[int, ...], size: int | None = None) -> np.ndarray:
    """The array in the .npy stream ``f`` (a file, or a member of an .npz), which must be ``dtype`` of
    ``shape``; ValueError saying what differs.

    The header is read and compared before any of the data: np.load sizes its allocation from the
    header, so a 100-byte file claiming (200000, 200000, 3) would make it ask for 447 GiB. Here the
    caller's shape sizes it, and exactly that many bytes must follow (``size``: the stream's length,
    when known, so a short or padded file is refused before the read too).
    """
    dtype, shape = np.dtype(dtype), tuple(shape)
    version = np.lib.format.read_magic(f)
    if version not in _NPY_HEADERS:
        raise ValueError(f"NumPy format version {version[0]}.{version[1]}, not one np.save writes here")
    got_shape, fortran_order, got_dtype = _NPY_HEADERS[version](f)
    if got_dtype != dtype or got_shape != shape or fortran_order:
        order = " in Fortran order" if fortran_order else ""
        raise ValueError(f"a {got_dtype} array of shape {got_shape}{order}, not {dtype} of {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if size is not None and size - f.tell() != nbytes:
        raise ValueError(f"{size - f.tell():,} bytes of data where its shape needs {nbytes:,}")
    array = np.empty(shape, dtype)
    view, done = memoryview(array).cast("B"), 0
    while done < nbytes:
        got = f.readinto(view[done:])
        if not got:
            raise ValueError(f"truncated: {done:,} of {nbytes:,} bytes of data")
        done += got
    if f.read(1):
        raise ValueError(f"more than the {nbytes:,} bytes of data its shape needs")
    return array


def check_uint8_image(a: np.ndarray, allow_grey: bool = False) -> np.ndarray:
    a = np.asarray(a)
    rgb = a.ndim == 3 and a.shape[2] == 3
    grey = allow_grey and a.ndim == 2
    if a.dtype != np.uint8 or not (rgb or grey) or a.shape[0] == 0 or a.shape[1] == 0:
        want = "(H, W, 3) or (H, W)" if allow_grey else "(H, W, 3)"
        raise ValueError(f"expected a {want} uint8 image, got {a.dtype} {a.shape}")
    return a
