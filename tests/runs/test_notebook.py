"""monalisa.runs.notebook (and experiments/notebook.py): the live view's widgets follow training, the
side-by-side view shows the runs on disk, and examples/quickstart.ipynb runs top to bottom in a real
Jupyter kernel, its outputs holding the Mona Lisa and a rising PSNR.

The widgets are ipywidgets objects used in this process (``display=False``: no kernel needed); each
check reads them back (PNG bytes decoded, values) and compares them with what the trainer rendered
or the run directory holds.
"""

import base64
import io
import itertools
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL_HASHGRID, tiny_target
from PIL import Image

import monalisa
from monalisa import Callback, NotebookView, Progress, fit, get_preset, load_target, show_runs, train_run
from monalisa.errors import UserError
from monalisa.runs import notebook
from monalisa.training.trainer import Trainer

pytest.importorskip("ipywidgets")  # the notebook extra (the test extra installs it)
pytestmark = pytest.mark.usefixtures("one_thread")

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"
HEIGHT, WIDTH = 12, 16
FACTOR = notebook.FRAME_SIDE // WIDTH  # frames this small are shown scaled up 16 times
RECIPE = get_preset("fast").replace(encoding=SMALL_HASHGRID, batch_size=32, epochs=4)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def shown_pixels(png: bytes, factor: int = FACTOR) -> np.ndarray:
    """The image a view's PNG shows, at its own size: each displayed square of ``factor`` pixels must be one colour."""
    big = decode(png)
    small = big[::factor, ::factor]
    assert np.array_equal(big, small.repeat(factor, axis=0).repeat(factor, axis=1))
    return small


class FakeClock:
    """notebook.time: perf_counter stands still until a test moves it, so throttling is deterministic."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class Watch(Callback):
    """After the view (callbacks run in order): what its widgets show after each epoch, and the frame rendered."""

    def __init__(self, view: NotebookView):
        self.view, self.seen = view, []

    def on_epoch(self, trainer, row, frame):
        v = self.view
        self.seen.append({"epoch": row["epoch"], "frame": frame.copy(), "png": v.frame_image.value,
                          "caption": v.frame_caption.value, "curve": v.curve_image.value, "bar": v.bar.value,
                          "line": v.line.value, "psnr": row["psnr"]})


def test_the_view_draws_each_epochs_frame_and_curve_and_moves_the_bar(monkeypatch):
    monkeypatch.setattr(notebook, "DRAW_EVERY", 0.0)  # every epoch drawn
    target = tiny_target(HEIGHT, WIDTH)
    view = NotebookView(display=False)
    watch = Watch(view)
    result = fit(target, RECIPE, callbacks=[view, watch])

    assert [s["epoch"] for s in watch.seen] == [1, 2, 3, 4]
    for s in watch.seen:
        assert np.array_equal(shown_pixels(s["png"]), s["frame"])  # the frame the trainer rendered, exactly
        assert s["caption"] == f"epoch {s['epoch']}   PSNR {s['psnr']:.2f} dB"
        assert s["bar"] == s["epoch"]
        assert s["line"].startswith(f"epoch {s['epoch']}/4  PSNR {s['psnr']:.2f} dB")
    curves = [s["curve"] for s in watch.seen]
    assert len(set(curves)) == 4 and all(decode(c).shape[0] > 100 for c in curves)  # a new plot each epoch
    expected_target = np.clip(np.round(target.pixels * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(shown_pixels(view.target_image.value), expected_target)
    assert "hashgrid" in view.title.value and f"{WIDTH}x{HEIGHT}" in view.title.value
    assert view.bar.max == 4 and view.bar.bar_style == "success"
    assert view.line.value == f"stopped by epochs: {result.final['psnr']:.2f} dB after 4 epochs"


def test_between_draws_the_frame_waits_but_the_last_epoch_is_always_drawn(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(notebook, "time", clock)
    view = NotebookView(display=False)
    watch = Watch(view)
    fit(tiny_target(HEIGHT, WIDTH), RECIPE, callbacks=[view, watch])  # the clock never moves: one redraw window
    drawn = [s["caption"] for s in watch.seen]
    assert drawn[:3] == [drawn[0]] * 3 and drawn[0].startswith("epoch 1 ") and drawn[3].startswith("epoch 4 ")
    assert np.array_equal(shown_pixels(watch.seen[3]["png"]), watch.seen[3]["frame"])
    assert [s["bar"] for s in watch.seen] == [1, 2, 3, 4]  # the bar and the line move every epoch regardless


def test_within_an_epoch_the_bar_moves_at_most_twice_a_second(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(notebook, "time", clock)
    trainer = Trainer(tiny_target(HEIGHT, WIDTH), RECIPE)
    view = NotebookView(display=False)
    view.on_start(trainer)
    view.on_progress(trainer, 1, 0.5)
    assert view.bar.value == 0.5 and view.line.value.startswith("epoch 1/4  50%")
    view.on_progress(trainer, 1, 0.75)  # 0 s later: skipped
    assert view.bar.value == 0.5
    clock.now += notebook.DRAW_EVERY
    view.on_progress(trainer, 1, 0.75)
    assert view.bar.value == 0.75 and view.line.value.startswith("epoch 1/4  75%")


def test_the_bar_says_how_a_run_ended():
    trainer = Trainer(tiny_target(HEIGHT, WIDTH), RECIPE)
    for stopped_by, style in (("diverged", "danger"), ("interrupted", "warning"), ("until_psnr", "success")):
        view = NotebookView(display=False)
        view.on_start(trainer)
        view.on_end(trainer, stopped_by)
        assert view.bar.bar_style == style and view.line.value == f"stopped by {stopped_by}"


def test_train_run_shows_the_view_in_place_of_its_progress_line(tmp_path, capsys):
    target = tiny_target(HEIGHT, WIDTH)
    view = NotebookView(display=False)
    train_run(target, RECIPE, out=tmp_path / "viewed", callbacks=[view])
    assert capsys.readouterr().err == ""  # the view is the run's one progress display
    final = decode((tmp_path / "viewed" / "final.png").read_bytes())
    assert np.array_equal(shown_pixels(view.frame_image.value), final)

    train_run(target, RECIPE, out=tmp_path / "plain")
    assert capsys.readouterr().err.startswith("training ")  # without one, the line on stderr as before


def test_show_runs_puts_each_runs_latest_frame_beside_the_target(tmp_path):
    target = tiny_target(HEIGHT, WIDTH)
    for name, epochs in (("short", 2), ("long", 3)):
        train_run(target, RECIPE.replace(epochs=epochs), out=tmp_path / name, quiet=True)
    view = show_runs({"two epochs": tmp_path / "short", "three": tmp_path / "long"}, display=False, title="<a & b>")

    title, grid, curve = view.children
    assert title.value == "<b>&lt;a &amp; b&gt;</b>"  # escaped: a title is text, never markup
    cells = [(cell.children[0].value, cell.children[1].value) for cell in grid.children]
    assert cells[0][0] == f"target {WIDTH}x{HEIGHT}"
    assert np.array_equal(shown_pixels(cells[0][1]), decode((tmp_path / "short" / "target.png").read_bytes()))
    for (caption, png), name, label, epoch in ((cells[1], "short", "two epochs", 2), (cells[2], "long", "three", 3)):
        psnr = float((tmp_path / name / "metrics.csv").read_text().splitlines()[-1].split(",")[-1])
        assert caption == f"{label}: epoch {epoch}   {psnr:.2f} dB"
        frame = decode((tmp_path / name / "frames" / f"epoch-{epoch:05d}.png").read_bytes())
        assert np.array_equal(shown_pixels(png), frame)
    assert decode(curve.value).shape[0] > 100


def test_show_runs_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="is not a monalisa run directory"):
        show_runs([tmp_path], display=False)
    with pytest.raises(UserError, match="at least one run directory"):
        show_runs([], display=False)


def test_outside_jupyter_the_view_says_how_to_get_one(monkeypatch):
    for make in (NotebookView, lambda: show_runs(["anything"])):
        with pytest.raises(UserError) as caught:
            make()  # pytest is no Jupyter kernel
        message = str(caught.value)
        assert "\n" not in message and "pip install 'monalisa[notebook]'" in message and "Progress()" in message
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # the extra not installed: importing it fails
    with pytest.raises(UserError, match=r"needs ipywidgets: pip install 'monalisa\[notebook\]'"):
        NotebookView(display=False)


def test_the_package_exports_both_progress_displays():
    assert {"Progress", "NotebookView", "show_runs"} <= set(monalisa.__all__)
    assert issubclass(NotebookView, Progress)
    assert "callbacks=[Progress()]" in (monalisa.runs.progress.__doc__ or "")


# -- the quickstart notebook, executed --------------------------------------------------------------


def widget_tree(state: dict, model_id: str, kind: str) -> list[dict]:
    """The states of the ``kind`` models (ImageModel, LabelModel) under ``model_id``, in display order."""
    model = state[model_id]
    found = [model] if model["model_name"] == kind else []
    for child in model["state"].get("children", []):
        found += widget_tree(state, child.removeprefix("IPY_MODEL_"), kind)
    return found


def image_bytes(model: dict) -> bytes:
    (buffer,) = [b for b in model.get("buffers", []) if b["path"] == ["value"]]
    assert buffer["encoding"] == "base64"
    return base64.b64decode(buffer["data"])


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return 10 * np.log10(1 / mse)


@pytest.mark.e2e
def test_the_quickstart_notebook_runs_in_a_kernel_and_shows_the_mona_lisa_emerge(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook_file = nbformat.read(QUICKSTART, as_version=4)
    # One cell of the test's own, last: which Python the kernel ran (the kernelspec's "python" is the
    # interpreter running the client, so the kernel sees the packages installed beside this test).
    notebook_file.cells.append(nbformat.v4.new_code_cell("import sys, monalisa; print(sys.executable, monalisa.__file__)"))
    source = str(Path(monalisa.__file__).parents[1])  # the kernel imports the monalisa under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(notebook_file, kernel_name="python3", timeout=300, startup_timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})  # the kernel's cwd
    client.execute(env=env)  # a cell that fails raises CellExecutionError with its traceback

    code = [cell for cell in notebook_file.cells if cell.cell_type == "code"]
    text = ["".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream") for cell in code]
    assert text[-1].split() == [sys.executable, monalisa.__file__]

    # The default run: a rising PSNR, the same as the run directory it wrote under the kernel's cwd.
    printed = [float(v) for v in re.search(r"PSNR by epoch \(dB\): ([\d. ]+)", text[0]).group(1).split()]
    (run_dir,) = (tmp_path / "runs").iterdir()
    on_disk = [float(line.split(",")[-1]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert printed == pytest.approx(on_disk, abs=0.006) and len(printed) == 10
    assert all(b > a for a, b in itertools.pairwise(printed)) and printed[-1] > 30  # the mean colour: ~13 dB

    # Its view, as the notebook saved it: the last frame is the run's, a Mona Lisa beside the target.
    state = notebook_file.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"] for cell in code for o in cell.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 2  # the training view and the comparison view
    frame, target_png, curve = (decode(image_bytes(m)) for m in widget_tree(state, views[0], "ImageModel"))
    mona_lisa = (load_target("mona_lisa").pixels * 255).round().astype(np.uint8)
    assert np.array_equal(target_png, mona_lisa)
    assert np.array_equal(frame, decode((run_dir / "final.png").read_bytes()))
    assert psnr_db(frame, mona_lisa) > 30 and curve.shape[0] > 100
    captions = [m["state"]["value"] for m in widget_tree(state, views[0], "LabelModel")]
    assert f"epoch 10   PSNR {printed[-1]:.2f} dB" in captions

    # The neurons: a PNG of the grid of the hidden layer's 32 units.
    (neurons,) = [o for o in code[1].outputs if "image/png" in o.get("data", {})]
    assert decode(base64.b64decode(neurons.data["image/png"])).shape[0] > 256
    assert text[1].startswith("layer 1 of 1: 32 units")

    # The depth comparison: its conclusion, and each run's last frame side by side with the target.
    assert "1x32" in text[2] and "3x32" in text[2]
    (comparison,) = (tmp_path / "comparisons").iterdir()
    shown = [image_bytes(m) for m in widget_tree(state, views[1], "ImageModel")]
    assert len(shown) == 4  # the target, two runs, the curves
    for png, label in zip(shown[1:3], ("1x32", "3x32")):
        run = comparison / "runs" / label
        last = decode((run / "frames" / f"epoch-{8:05d}.png").read_bytes())  # 8 epochs, a frame each
        assert last.shape == (60, 42, 3)
        assert np.array_equal(shown_pixels(png, notebook.FRAME_SIDE // 60), last)
