"""Per-layer dynamics: what every layer's activations, gradients and weights do during training.

The frames show *that* a network fails; these numbers say *why*: signals that vanish on their
way back through the layers, rectifiers that stopped firing, tanh units pinned at +-1, updates too
small to move the weights. They are the statistics of the usual activation-and-gradient
diagnostics (Karpathy's "Building makemore part 3" lecture; TensorBoard's histograms), one row
per layer per record in ``layers.csv`` (LAYER_COLUMNS):

    act_mean, act_std     the layer's outputs on the probe pixels (hidden layers: after the
                          activation, before any residual skip; the last layer: the network's output)
    dead_fraction         units whose output has a zero slope at every probe pixel: a rectifier
                          that fires nowhere, a tanh/sigmoid/sine unit saturated everywhere; they
                          cannot learn (empty for activations that do neither, and the output layer)
    saturated_fraction    (tanh, sigmoid, sine) the share of unit-pixel outputs within 1% of the
                          activation's extremes, Karpathy's ``(h.abs() > 0.99).mean()``
    grad_rms              RMS of dLoss/dW for the layer's weights on the probe pixels
    weight_rms            RMS of the layer's weights (biases left out: they start at other scales)
    log10_update_ratio    log10 of |W_now - W_before| / |W_before| / steps since the last record
                          (Frobenius norms; a step is one optimiser update: a pixel online, a batch
                          batched). About -3 is the rule of thumb for minibatch SGD; the original's
                          single-pixel steps sit near -6 when healthy (diagnose judges an epoch).

How it is measured without touching training: at a record point (between two of the engine's
calls, from its progress hook) the engine copies its current weights into a private copy of the
model (``engine.copy_weights_to``, which reads the online kernel's weight array and writes
nothing of the engine's), and the copy runs one forward and backward pass on a fixed probe of
PROBE_PIXELS pixels chosen once by a fixed generator. The training state (weights, pixel order,
optimiser) is never read into or written from that pass, so a run's weights are bit-identical with
and without recording (tests/test_dynamics.py). The time goes into ``Trainer.untimed`` so
``train_seconds`` keeps meaning training alone.

Why a probe rather than the training pixels: the online kernel computes its activations inside
compiled code that keeps none of them; instrumenting it would slow every pixel. A probe of 256
pixels spread over the image costs ~5 ms a record for the 4x300 network; a unit that fires on
none of them fires on at most a sliver of the image. "Never fired over the interval" is therefore
judged at the record's end, on the probe.

Records come at the end of every epoch and, inside it, every RECORD_PIXELS pixels of training or
more thinly, so that they cost at most TIME_SHARE of the epoch's training time: an epoch of the 300x429
Mona Lisa (128,700 pixels) with the 4x300 network gets about 7 records (~5 ms each against ~2 s),
the `fast` preset's 0.1 s epochs one, a 24 px test image one.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
import torch

from monalisa.files import PathLike, atomic_path, csv_rows
from monalisa.training.trainer import Callback, Trainer

LAYER_COLUMNS = ("epoch", "fraction", "step", "train_seconds", "layer", "units", "act_mean", "act_std",
                 "dead_fraction", "saturated_fraction", "grad_rms", "weight_rms", "log10_update_ratio")
INT_COLUMNS = ("epoch", "step", "layer", "units")

# Every 20,000 pixels: 6 records inside a Mona Lisa epoch plus its end (7); more would only redraw
# the same curve.
RECORD_PIXELS = 20_000
# The records inside an epoch may cost this share of its training time, judged from the cost of the
# records so far and the epoch's pace so far, the end-of-epoch record (always made) included; the
# records inside are spaced out to fit. The aim is at most 5% of a run's time; 2% leaves room for the machine's
# noise. A record costs ~4-7 ms
# for 4x300 and ~1.5 ms for the `fast` hash grid (2 cores, one torch thread), whose epochs take ~0.1 s:
# 6 records inside those would cost 10% (benchmarks/dynamics_overhead.py).
TIME_SHARE = 0.02
# The probe: 256 pixels, enough for a unit's activation statistics to settle. Seeded apart from the recipe, so every run on an image is
# measured on the same pixels.
PROBE_PIXELS = 256
PROBE_SEED = 20121
# A saturating unit is "at its extreme" within 1% of its range: |tanh| > 0.99 (Karpathy's threshold;
# tanh' < 0.02 there), sigmoid < 0.01 or > 0.99, |sin| > 0.99.
SATURATION = 0.99
RECTIFIERS = ("relu", "leaky_relu")
SATURATING = ("tanh", "sigmoid", "sine")
# layers.csv grows by (depth + 1) rows a record: 500 epochs of 8x196 are ~32,000 rows, ~3 MB.
MAX_LAYERS_BYTES = 256 * 2**20


class LayerDynamics(Callback):
    """Computes LAYER_COLUMNS rows at record points; ``rows`` holds every row of the run so far.

    The Recorder (runs/directory.py) owns one, hands it the rows already on disk when a run resumes,
    and writes ``rows`` to layers.csv after each epoch.
    """

    def __init__(self, every_pixels: int = RECORD_PIXELS, probe_pixels: int = PROBE_PIXELS,
                 budget: float | None = TIME_SHARE):
        """``budget``: the share of training time records inside an epoch may take (None: no limit)."""
        if every_pixels < 1 or probe_pixels < 1:
            raise ValueError("every_pixels and probe_pixels must be positive")
        self.every_pixels = every_pixels
        self.probe_pixels = probe_pixels
        self.budget = budget
        self.rows: list[dict] = []
        self.seconds = 0.0  # time spent recording, for benchmarks/dynamics_overhead.py
        self.last_activations: dict[int, np.ndarray] = {}  # layer -> (probe, units), the last record's

    # -- the callback ---------------------------------------------------------------

    def on_start(self, trainer: Trainer, rows: Sequence[dict] = ()) -> None:
        """``rows``: the rows of a resumed run's epochs already done (later ones are dropped)."""
        self.rows = [dict(row) for row in rows if row["epoch"] <= trainer.epoch]
        n = len(trainer.coords)
        pick = np.sort(np.random.default_rng(PROBE_SEED).choice(n, size=min(n, self.probe_pixels), replace=False))
        self.probe_x = torch.from_numpy(np.ascontiguousarray(trainer.coords[pick])).to(trainer.device)  # (P, 2)
        self.probe_t = torch.from_numpy(np.ascontiguousarray(trainer.colours[pick])).to(trainer.device)  # (P, 3)
        self.copy = copy.deepcopy(trainer.model)  # the probe's own network: training's is never run here
        self.kinds = [spec.split(":")[0] for spec in trainer.recipe.layer_activations()]
        self.batch = trainer.recipe.batch_size
        self.steps_per_epoch = math.ceil(n / self.batch)
        self.pixels = n
        # The weights at the start (a resume's checkpoint is the last record's end), for the first ratio.
        trainer.engine.copy_weights_to(self.copy)
        self.before = self._weights()
        # One pass that records nothing: its time is the first estimate of a record's cost (the budget's).
        started = time.perf_counter()
        with _one_thread():
            self._statistics(0)  # leaves self.before the weights now
        self.cost = time.perf_counter() - started
        self.before_step = trainer.epoch * self.steps_per_epoch
        self.next_record = 1  # inside an epoch, the k-th record is due at k * spacing pixels
        self.epoch = None  # the epoch the progress hook last reported
        self.epoch_recorded = trainer.epoch  # the last epoch whose end has been recorded

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        done = round(fraction * self.pixels)
        if epoch != self.epoch:
            self.epoch, self.next_record = epoch, 1
        if done >= self.pixels:
            self.record(trainer, epoch, 1.0)
            return
        spacing = self.spacing(trainer, done)
        if done >= self.next_record * spacing:
            self.next_record = math.floor(done / spacing) + 1
            self.record(trainer, epoch, done / self.pixels)

    def spacing(self, trainer: Trainer, done: int) -> float:
        """Pixels between records inside this epoch (inf: none inside it). The epoch is cut into equal
        intervals of at most every_pixels, so each update ratio is over about as many steps (a short
        last interval would show a higher ratio a step: a random walk's |dW| grows as the root of its
        steps); fewer intervals where the records they need, at this epoch's pace so far, would cost
        more than the budget."""
        intervals = max(1, math.ceil(self.pixels / self.every_pixels))
        if self.budget is not None:
            epoch_seconds = trainer.seconds_into_epoch() * self.pixels / done  # the pace so far, for the whole epoch
            # The records the budget pays for, less the epoch's end (always made): those inside.
            fits = int(self.budget * epoch_seconds / self.cost) - 1 if self.cost > 0 else intervals
            intervals = max(1, min(intervals, fits + 1))
        return self.pixels / intervals if intervals > 1 else math.inf

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        # An engine that did not report the end of its epoch through its progress hook: record it now.
        if self.epoch_recorded < row["epoch"]:
            self.record(trainer, row["epoch"], 1.0)

    # -- one record -----------------------------------------------------------------

    def record(self, trainer: Trainer, epoch: int, fraction: float) -> list[dict]:
        """Rows for every layer at this point of training, appended to ``rows``; kept out of train_seconds."""
        seconds = trainer.training_seconds() + trainer.seconds_into_epoch()  # before untimed() starts its clock
        started = time.perf_counter()
        with trainer.untimed(), _one_thread():
            trainer.engine.copy_weights_to(self.copy)
            step = (epoch - 1) * self.steps_per_epoch + math.ceil(round(fraction * self.pixels) / self.batch)
            rows = [{"epoch": epoch, "fraction": fraction, "step": step, "train_seconds": seconds, **stats}
                    for stats in self._statistics(step - self.before_step)]
            self.before_step = step
            self.rows.extend(rows)
            if fraction >= 1.0:
                self.epoch_recorded = epoch
        spent = time.perf_counter() - started
        self.seconds += spent
        self.cost = (self.cost + spent) / 2  # follows the machine's load, one noisy record half counted
        return rows

    def _weights(self) -> list[np.ndarray]:
        return [layer.weight.detach().cpu().numpy().copy() for layer in self.copy.layers]

    def _statistics(self, steps: int) -> list[dict]:
        """One dict per layer (1..depth hidden, depth + 1 the output layer) from the copy's weights now."""
        model = self.copy
        model.zero_grad(set_to_none=True)
        outputs = []
        with torch.enable_grad():
            trunk = model.trunk(self.probe_x)
            _, h = next(trunk)  # layer 0, the encoding: no weights of a layer of its own
            for z, h in trunk:
                outputs.append(z)  # (P, width)
            out = model.output(model.layers[-1](h))  # (P, 3)
            outputs.append(out)
            # The engines' loss: half the squared error summed over R, G, B, the mean over pixels.
            loss = 0.5 * (out - self.probe_t).square().sum(dim=1).mean()
            loss.backward()
        now = self._weights()
        rows = []
        for index, (layer, z) in enumerate(zip(model.layers, outputs)):
            z = z.detach().float().cpu().numpy()  # (P, units)
            kind = self.kinds[index] if index < len(self.kinds) else None  # None: the output layer
            dead = saturated = math.nan
            if kind in RECTIFIERS:
                dead = float((z.max(axis=0) <= 0).mean())
            elif kind in SATURATING:
                at_extreme = (np.minimum(z, 1 - z) < 1 - SATURATION) if kind == "sigmoid" else (np.abs(z) > SATURATION)
                dead = float(at_extreme.all(axis=0).mean())
                saturated = float(at_extreme.mean())
            w_before, w_now = self.before[index], now[index]
            norm = float(np.linalg.norm(w_before))
            ratio = float(np.linalg.norm(w_now - w_before)) / norm / steps if steps > 0 and norm > 0 else 0.0
            grad = layer.weight.grad
            rows.append({
                "layer": index + 1,
                "units": z.shape[1],
                "act_mean": float(z.mean()),
                "act_std": float(z.std()),
                "dead_fraction": dead,
                "saturated_fraction": saturated,
                "grad_rms": float(grad.float().square().mean().sqrt()) if grad is not None else math.nan,
                "weight_rms": float(np.sqrt(np.mean(np.square(w_now, dtype=np.float64)))),
                "log10_update_ratio": math.log10(ratio) if ratio > 0 else (math.nan if steps <= 0 else -math.inf),
            })
            self.last_activations[index + 1] = z
        self.before = now
        return rows


@contextmanager
def _one_thread():
    """The probe's tensors are small (256 pixels): on one thread they take ~4 ms for 4x300 and wake
    no worker of torch's pool. Woken workers spin on after the probe, beside the online kernel's two
    threads, and the kernel then measures its next two-core call as slow and runs 16 calls on one core
    (engines/online.py, BACK_OFF_CALLS): on a loaded machine that cost ~7% of an epoch's training."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- layers.csv ------------------------------------------------------------------------


def layers_csv(rows: Sequence[Mapping], header: bool = True) -> str:
    """The rows as CSV text, one line each: whole numbers as they are, the rest to 6 significant
    digits, NaN empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LAYER_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k in INT_COLUMNS else _number(row[k])) for k in LAYER_COLUMNS})
    return buffer.getvalue()


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def read_layers(path: PathLike) -> list[dict]:
    """layers.csv back as rows: INT_COLUMNS ints, the rest floats (empty: NaN). ValueError if malformed."""
    reader = csv_rows(path, MAX_LAYERS_BYTES)
    if tuple(reader.fieldnames or ()) != LAYER_COLUMNS:
        raise ValueError(f"columns {reader.fieldnames}, not {list(LAYER_COLUMNS)}")
    return [{k: (int(v) if k in INT_COLUMNS else (float(v) if v else math.nan)) for k, v in row.items()}
            for row in reader]


def epoch_end_rows(rows: Sequence[Mapping]) -> dict[int, list[dict]]:
    """layer -> its rows recorded at the end of an epoch, in epoch order."""
    by_layer: dict[int, list[dict]] = {}
    for row in rows:
        if row["fraction"] >= 1.0:
            by_layer.setdefault(row["layer"], []).append(dict(row))
    return by_layer


# -- dynamics.png ----------------------------------------------------------------------

PANELS = (  # (column, label, log scale)
    ("act_mean", "activation mean", False),
    ("act_std", "activation std", True),
    ("dead_fraction", "dead units (fraction)", False),
    ("grad_rms", "gradient RMS, dLoss/dW", True),
    ("weight_rms", "weight RMS", True),
    ("log10_update_ratio", "log10 (|dW| / |W|) per step", False),
)
HEALTHY_UPDATE = -3  # the rule of thumb drawn on the update panel (Karpathy, makemore part 3)
LOG_EPOCHS_ABOVE = 50  # as animate.plot_curves: past this many epochs the epoch axis is log-scaled


def plot_dynamics(rows: Sequence[Mapping], path: PathLike, title: str = "") -> None:
    """One panel per statistic, one line per layer, against epochs (fractions of one for mid-epoch records)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("plot_dynamics needs at least one row")
    layers = sorted({row["layer"] for row in rows})
    last = layers[-1]
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    epochs = max(row["epoch"] for row in rows)
    # Ten layers or fewer: tab10's distinct hues (viridis's neighbours blur together past five lines);
    # more: viridis, the first layer dark, the output light.
    colours = colormaps["tab10"](np.arange(len(layers))) if len(layers) <= 10 else \
        colormaps["viridis"](np.linspace(0, 0.9, len(layers)))
    saturating = any(not math.isnan(row["saturated_fraction"]) for row in rows)
    for ax, (column, label, log) in zip(axes, PANELS):
        if column == "dead_fraction" and saturating:
            label = "dead or saturated-everywhere units (fraction)"
        drawn = False  # any finite value in this panel
        for layer, colour in zip(layers, colours):
            mine = [row for row in rows if row["layer"] == layer]
            x = np.array([row["epoch"] - 1 + row["fraction"] for row in mine])
            y = np.array([row[column] for row in mine], dtype=float)
            y[~np.isfinite(y)] = np.nan
            if log:
                y[y <= 0] = np.nan
            drawn = drawn or bool(np.isfinite(y).any())
            ax.plot(x, y, color=colour, lw=1.3, marker="o" if len(x) <= 30 else None, ms=3,
                    label="output" if layer == last else f"layer {layer}")
        ax.set_title(label, fontsize=10)
        if not drawn:  # e.g. dead units of an activation that has no dead state (gelu, silu): say so, and
            # scale nothing (a log axis over no data has no limits to take its ticks from)
            ax.text(0.5, 0.5, "not defined for these layers' activation", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, color="grey")
            ax.set_xlabel("epoch")
            ax.spines[["top", "right"]].set_visible(False)
            continue
        if log:
            ax.set_yscale("log")
        if column == "log10_update_ratio":
            ax.axhline(HEALTHY_UPDATE, color="grey", ls="--", lw=1)
            ax.annotate("~1e-3: the rule of thumb for a minibatch step", (0.01, HEALTHY_UPDATE),
                        xycoords=("axes fraction", "data"), xytext=(0, -11), textcoords="offset points",
                        fontsize=8, color="grey")
        if column == "dead_fraction":
            ax.set_ylim(-0.03, 1.03)
        if epochs > LOG_EPOCHS_ABOVE:
            ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=8, frameon=False, ncol=2)
    fig.suptitle(f"{title}: per-layer dynamics on {PROBE_PIXELS} probe pixels" if title else
                 f"per-layer dynamics on {PROBE_PIXELS} probe pixels", fontsize=12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- what went wrong -------------------------------------------------------------------

# The thresholds a diagnosis flags, each a rule of thumb from the activation-and-gradient lectures:
VANISHED = 2  # orders of magnitude a layer's gradient RMS lies below the output layer's
EXPLODED = 2  # ... or above it
DEAD = 0.5  # a layer with half its units dead or saturated everywhere has lost half its width
SATURATED = 0.5  # half of all unit-pixel outputs at an extreme
# Updates too small, judged an epoch at a time: the ~1e-3 a step of the rule of thumb is for minibatch
# steps; the original's steps are single pixels, 128,700 of them an epoch, and its healthy 4x300 network
# moves ~1e-6.3 a step (docs/dynamics.md), 1e-1.2 an epoch were the steps aligned. Under
# 1e-4 an epoch even then, a layer's weights stand still (the 8x196 network's first five layers).
TINY_EPOCH_UPDATE = -4
SLOWER = 2  # orders of magnitude a layer's updates lie below the median layer's: it learns 100x slower
HUGE_UPDATE = -1  # 10% of the weights' size a step: noise, not learning
COLLAPSED = 2  # orders of magnitude the last hidden layer's activation std lies below the first's


def diagnose(rows: Sequence[Mapping]) -> list[str]:
    """What the layer statistics of a run's last recorded epoch say went wrong, one finding a line;
    [] when none passes its threshold. Each statistic is the median over that epoch's records, so one
    noisy probe does not decide."""
    if not rows:
        return []
    last_epoch = max(row["epoch"] for row in rows)
    stats: dict[int, dict[str, float]] = {}
    for layer in sorted({row["layer"] for row in rows}):
        mine = [row for row in rows if row["layer"] == layer and row["epoch"] == last_epoch]
        stats[layer] = {k: _median([row[k] for row in mine])
                        for k in ("act_std", "dead_fraction", "saturated_fraction", "grad_rms", "log10_update_ratio")}
    layers = sorted(stats)
    output, hidden = layers[-1], layers[:-1]
    at = f"at epoch {last_epoch}"
    findings = []

    top = stats[output]["grad_rms"]
    if top > 0 and math.isfinite(top):
        orders = {k: math.log10(stats[k]["grad_rms"] / top) if stats[k]["grad_rms"] > 0 else -math.inf
                  for k in hidden}
        # Backwards from the output: the first layer past which the signal has fallen VANISHED orders.
        fallen = [k for k in reversed(hidden) if orders[k] <= -VANISHED]
        if fallen:
            k = fallen[0]
            findings.append(f"vanishing gradients: from layer {k} down, the gradient RMS is {-orders[k]:.1f} orders of "
                            f"magnitude below the output layer's ({stats[k]['grad_rms']:.2g} against {top:.2g}) "
                            f"{at}; layer {hidden[0]}'s is {_orders(orders[hidden[0]])}")
        grown = [k for k in hidden if orders[k] >= EXPLODED]
        if grown:
            k = grown[0]
            findings.append(f"exploding gradients: layer {k}'s gradient RMS is {orders[k]:.1f} orders of magnitude "
                            f"above the output layer's {at}")
    elif top == 0:
        findings.append(f"no gradient reaches even the output layer {at}: the loss is flat in every weight")
    dead = [(k, stats[k]["dead_fraction"]) for k in hidden if stats[k]["dead_fraction"] >= DEAD]
    if dead:
        findings.append("dead units (no slope at any probe pixel, so they no longer learn): "
                        + ", ".join(f"layer {k} {fraction:.0%}" for k, fraction in dead) + f" {at}")
    saturated = [(k, stats[k]["saturated_fraction"]) for k in hidden if stats[k]["saturated_fraction"] >= SATURATED]
    if saturated:
        findings.append("saturated units (outputs within 1% of the activation's extremes): "
                        + ", ".join(f"layer {k} {fraction:.0%} of outputs" for k, fraction in saturated) + f" {at}")
    ratios = {k: stats[k]["log10_update_ratio"] for k in layers if not math.isnan(stats[k]["log10_update_ratio"])}
    end = max((row for row in rows if row["epoch"] == last_epoch), key=lambda row: row["step"])
    steps = end["step"] / last_epoch  # optimiser steps an epoch
    tiny = {k: r for k, r in ratios.items() if steps >= 1 and r + math.log10(steps) < TINY_EPOCH_UPDATE}
    if tiny:
        still = [k for k, r in tiny.items() if r == -math.inf]  # weights that did not change at all in float32
        parts = ([f"layer{'s' * (len(still) > 1)} {', '.join(map(str, still))} not at all (steps under float32's "
                  "resolution)"] if still else []) + [f"layer {k} 1e{r:.1f}" for k, r in tiny.items() if r != -math.inf]
        findings.append(f"updates too small: under 1e{TINY_EPOCH_UPDATE} of the weights an epoch even were its "
                        f"{steps:,.0f} steps all alike; a step: " + ", ".join(parts) + f" {at}")
    if len(ratios) >= 3:
        median = float(np.median(list(ratios.values())))
        slow = {k: r for k, r in ratios.items() if k not in tiny and r <= median - SLOWER}
        if slow:
            findings.append("layers learning at other speeds: " + ", ".join(
                f"layer {k}'s updates {median - r:.1f} orders of magnitude below the median layer's" for k, r in
                slow.items()) + f" {at}")
    huge = [(k, stats[k]["log10_update_ratio"]) for k in layers if stats[k]["log10_update_ratio"] > HUGE_UPDATE]
    if huge:
        findings.append(f"updates too large (over 1e{HUGE_UPDATE} of the weights a step): "
                        + ", ".join(f"layer {k} 1e{r:.1f}" for k, r in huge) + f" {at}")
    if len(hidden) >= 2:
        first, last = stats[hidden[0]]["act_std"], stats[hidden[-1]]["act_std"]
        if first > 0 and (last == 0 or math.log10(last / first) <= -COLLAPSED):
            findings.append(f"the forward signal collapses: the activations' std falls from {first:.2g} in layer "
                            f"{hidden[0]} to {last:.2g} in layer {hidden[-1]} {at}, so the output barely depends "
                            "on the pixel")
    return findings


def _median(values: Sequence[float]) -> float:
    """The median of the values that are not NaN (-inf, no update at all, counts), else NaN."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.median(kept)) if kept else math.nan


def _orders(value: float) -> str:
    if value == -math.inf:
        return "zero"
    return f"{abs(value):.1f} orders of magnitude {'below' if value < 0 else 'above'} it"
