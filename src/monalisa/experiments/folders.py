"""An experiment's own folder (a comparison's, a search's): made with one line on failure, its target
saved before the file that describes it (so a folder with that file can always be resumed), and both
read back checked."""

from __future__ import annotations

from pathlib import Path

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.files import read_json, write_json
from monalisa.runs.directory import damaged, read_target, write_target


def create_folder(out: Path, kind: str) -> None:
    """``out`` and its parents, or one line saying why not (``kind``: "comparison", "search")."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {kind} directory {str(out)!r}: {exc.strerror}") from None


def save_description(out: Path, name: str, target: Target, data: dict) -> None:
    """target.npy (unless it is there), then ``name`` with the target's name and size and ``data``."""
    if not (out / "target.npy").is_file():
        write_target(out / "target.npy", target.pixels)
    write_json(out / name, {"image": target.name, "width": target.width, "height": target.height, **data})


def load_description(out: Path, name: str, kind: str, again: str) -> tuple[Target, dict]:
    """(target, the description's data) of an experiment folder; OSError, ValueError, KeyError or TypeError
    when the description is damaged, one damaged-file line when target.npy is."""
    path = out / name
    data = read_json(path)
    try:
        pixels = read_target(out / "target.npy", data["width"], data["height"], path)
    except (OSError, ValueError) as exc:
        raise damaged(out / "target.npy", exc, f"{kind} directory", again) from None
    return Target(name=data["image"], pixels=pixels), data
