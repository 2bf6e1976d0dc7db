"""Studies: the 2012 experiment's questions, each asked as one comparison that states its verdicts.

    depth      deep against shallow at the original's parameter count: the experiment's thesis
    tips       each of the author's six tips to a reader whose copy failed, against its opposite,
               and the reader's own failing set-up (docs/original.md)
    encodings  raw coordinates against positional, Gaussian Fourier and hash-grid encodings at
               one parameter budget (Tancik et al. 2020, "Fourier Features Let Networks Learn High
               Frequency Functions in Low Dimensional Domains"; Mueller et al. 2022, instant-ngp)

Each study builds (label, recipe) entries from a *base* recipe, whose fields apply to every
entry except those the study varies, and hands them to ``compare.run_comparison`` with a
claims function: rows of the finished table in, verdicts out (``supported`` True, False, or
None for inconclusive). The claims functions are pure, so they can be checked on handmade rows.

    from monalisa.studies import STUDIES, default_base, study_target
    target = study_target("mona_lisa", quick=True)              # longest side 64 px
    summary = STUDIES["depth"](target, "studies/depth", quick=True)
    for claim in summary["claims"]: print(claim)

Every study takes ``ray`` (run_comparison's: "local", "auto" or a cluster's HOST:PORT) to train on Ray.
A study's ``base`` defaults to ``default_base(name, quick)``; the CLI applies the user's train
flags to that (``default_base("tips").replace(epochs=20)``) and passes the result. Each study's
defaults sit at the top of its section, each with its reason and its cost.

Costs are measured on this project's 2-core machine with one torch thread a job and two jobs
at once (compare.py's default); per epoch of the Mona Lisa (300x429), training alone, at equal
parameter count (272,703), 2026-12-01: the compiled online engine 3.4-3.8 s for every depth
from 1x45450 to 8x196 (~27 us a pixel: the kernel has a fused path for one wide layer), plus
its render (0.7 s on one thread for 4x300, 2.8 s for 1x45450); Adam on batches, a ~273k-parameter
MLP ~40 us a pixel, the hash grid ~3 us. Several seeds multiply every cost by their count.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import stats
from .budget import TOLERANCE, parameter_count, width_for_budget
from .compare import run_comparison  # a name of this module, so that tests can replace it
from .encodings import HashGridOptions, hashgrid_resolutions
from .errors import UserError, unknown_name
from .images import Target, load_target, resize
from .limits import MAX_LAYERS
from .recipes import Recipe, format_arch, get_preset
from .registry import ENCODINGS, INITS, Spec, format_spec

# Quick mode's image: the longest side 64 px (the Mona Lisa becomes 45x64, 2,880 pixels, 45x
# fewer than 300x429): the author's "experiment on smaller images first".
QUICK_SIDE = 64
# Seeds per entry unless --seeds says otherwise (quick mode too): three is the fewest from which the
# BCa bootstrap gives an interval (stats.py); a verdict needs intervals, and one seed gives none.
STUDY_SEEDS = 3

# Fields of the base that every entry keeps, even one whose recipe is otherwise fixed (the reader's).
RUN_FIELDS = ("epochs", "until_psnr", "time_limit", "seed")


def study_target(image: Target | str | Path, quick: bool = False) -> Target:
    """The image a study trains on: as given, or in quick mode shrunk to QUICK_SIDE px (never enlarged)."""
    target = image if isinstance(image, Target) else load_target(image)
    longest = max(target.height, target.width)
    if not quick or longest <= QUICK_SIDE:
        return target
    scale = QUICK_SIDE / longest
    size = (max(1, round(target.width * scale)), max(1, round(target.height * scale)))  # (W, H)
    return Target(name=target.name, pixels=resize(target.pixels, size=size))


# -----------------------------------------------------------------------------
# depth: deep against shallow at equal parameter count

# Full: 30 epochs, the `quick` preset's, where the 4x300 network already draws a recognisable
# Mona Lisa. Every shape costs about the same now (3.4-3.8 s an epoch of training on one core):
# one seed of the six depths measured 481 s of wall time (2026-12-01), so the default three
# seeds are ~24 min and five ~40 min. Each 10 epochs more: +1/3.
DEPTH_EPOCHS = 30
# Quick (45x64): 80 epochs. An epoch there is 45x cheaper, so quick mode runs more of them but
# far fewer pixel steps (230k against 3.9M), enough to separate the depths' first rises. Four
# depths times the default three seeds measured 85 s of wall time (2026-12-01).
DEPTH_QUICK_EPOCHS = 80
DEPTHS = (1, 2, 3, 4, 6, 8)  # shallow (1, 2) against deep, up to the published code's 6 and past it
QUICK_DEPTHS = (1, 2, 4, 8)  # one per doubling: the same question in 4 runs


@dataclass(frozen=True)
class DepthOptions:
    """The depth study's settings: ``study_depth(..., budget=100_000, depths=(1, 4))``."""

    budget: int = 272_703  # the original 4x300's parameter count (docs/original.md): the thesis at its own size
    depths: tuple[int, ...] | None = None  # None: DEPTHS, or QUICK_DEPTHS in quick mode
    margin: float = 0.5  # dB, 12% in MSE: a gap that shows in the frames (not calibrated against seeds)

    def __post_init__(self):
        _check_positive_int("budget", self.budget)
        if self.depths is not None:
            object.__setattr__(self, "depths", _int_tuple("depths", self.depths, distinct=True, largest=MAX_LAYERS))
        _check_margin(self.margin)


def depth_base(quick: bool = False) -> Recipe:
    """The `original` preset (online SGD, leaky ReLU, 4x300) for DEPTH_(QUICK_)EPOCHS."""
    return get_preset("original").replace(epochs=DEPTH_QUICK_EPOCHS if quick else DEPTH_EPOCHS)


def depth_entries(base: Recipe, budget: int, depths) -> list[tuple[str, Recipe]]:
    """One equal-width network per depth, each within budget.TOLERANCE of ``budget`` parameters in all.

    The base's encoding counts: its trainable parameters come off the budget and its output
    width is the first layer's input. Labels: 'd4-w300'.
    """
    in_features, encoding_parameters = encoding_size(base.encoding)
    entries = []
    for depth in depths:
        width = width_for_budget(depth, _remaining(budget, encoding_parameters, base.encoding), in_features)
        recipe = base.replace(arch=(width,) * depth)
        _check_budget(recipe, budget, TOLERANCE, f"depth {depth}")
        entries.append((f"d{depth}-w{width}", recipe))
    return entries


def study_depth(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
                resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
                ray: str | None = None, **options) -> dict:
    """Equal-parameter networks of several depths (default: the original, 272,703 parameters)."""
    opts = _options(DepthOptions, options, "depth")
    base = depth_base(quick) if base is None else base
    depths = opts.depths or (QUICK_DEPTHS if quick else DEPTHS)
    entries = depth_entries(base, opts.budget, depths)
    return run_comparison(study_target(target, quick), entries, out, jobs=jobs, resume=resume, device=device,
                          quiet=quiet, title=f"Depth at {opts.budget:,} parameters",
                          claims=functools.partial(depth_claims, margin=opts.margin),
                          seeds=_study_seeds(seeds, resume), ray=ray)


def depth_claims(rows: list[dict], margin: float = DepthOptions.margin) -> list[dict]:
    """Deep (>= 3 hidden layers) against shallow (<= 2), and how far up PSNR rises with depth."""
    return [_deep_beats_shallow(rows, margin), _rises_with_depth(rows, margin)]


def _deep_beats_shallow(rows: list[dict], margin: float) -> dict:
    claim = "Deeper networks (3 or more hidden layers) beat shallower ones (1 or 2) at the same parameter count"
    deep = [row for row in rows if _depth(row) >= 3]
    shallow = [row for row in rows if _depth(row) <= 2]
    if not deep or not shallow:
        return _verdict(claim, None, "needs runs of depth <= 2 and of depth >= 3; this study has depths "
                        + ", ".join(str(_depth(row)) for row in rows))
    best_deep, best_shallow = _best(deep), _best(shallow)
    parts = [f"best of depth >= 3: {_describe_best(best_deep, deep)}",
             f"best of depth <= 2: {_describe_best(best_shallow, shallow)}"]
    supported = _compare_best(best_deep, best_shallow, margin, parts)
    return _verdict(claim, supported, "; ".join(parts + _failures(rows)))


def _rises_with_depth(rows: list[dict], margin: float) -> dict:
    scored = sorted((row for row in rows if _score(row) is not None), key=_depth)
    if len(scored) < 2:
        claim = "PSNR rises with depth up to a best depth"
        return _verdict(claim, None, "fewer than two runs finished; " + "; ".join(_failures(rows) or ["no runs"]))
    best = max(scored, key=_score)
    shallowest = scored[0]
    if best is shallowest:
        claim = f"PSNR rises with depth beyond {_layers(_depth(best))}, the shallowest here"
    else:
        claim = f"PSNR rises with depth up to {_layers(_depth(best))}, the best depth here"
    by_depth = ", ".join(f"depth {_depth(row)} {_db(_score(row))}" for row in scored)
    evidence = [f"by depth: {by_depth}; best depth {_depth(best)} ({best['label']}, {_db(_score(best))})"]
    before = [row for row in scored if _depth(row) <= _depth(best)]
    if best is shallowest:
        runner_up = max(scored[1:], key=_score)
        beaten, text = _gap(best, runner_up, margin)
        supported = False if beaten else None
        evidence.append(f"the shallowest finished run, depth {_depth(best)}, is the best; against depth "
                        f"{_depth(runner_up)}: {text}")
        return _verdict(claim, supported, "; ".join(evidence + _failures(rows)))
    rose, text = _gap(best, shallowest, margin)
    # A drop on the way up: a shallower network that beats the next deeper one by the margin.
    drops = [(a, b) for a, b in zip(before, before[1:]) if _gap(a, b, margin)[0]]
    if not rose:
        supported = None
        evidence.append(f"depth {_depth(best)} against depth {_depth(shallowest)}: {text}")
    elif drops:
        supported = None
        a, b = drops[0]
        evidence.append(f"not a steady rise: depth {_depth(a)} beats depth {_depth(b)}: {_gap(a, b, margin)[1]}")
    else:
        supported = True
        evidence.append(f"depth {_depth(best)} against depth {_depth(shallowest)}: {text}")
    return _verdict(claim, supported, "; ".join(evidence + _failures(rows)))


def _depth(row: dict) -> int:
    return len(row["recipe"]["arch"])


def _layers(depth: int) -> str:
    return f"{depth} hidden layer{'s' * (depth != 1)}"


# -----------------------------------------------------------------------------
# tips: each of the author's tips against its opposite (docs/original.md)

# Full: 50 epochs. Eight of the nine runs are 4x300 online SGD at 44 us a pixel, 5.6 s an epoch
# on 300x429; the reader's RPROP is one full batch an epoch, ~2.5 s. 9 runs x 50 epochs on 2
# cores: ~20 min, less when a tip's opposite diverges early. 100 epochs would be ~40 min.
TIPS_EPOCHS = 50
# Quick (45x64): 150 epochs, 430k pixel steps. Nine runs times the default three seeds measured
# 245 s of wall time (2026-12-01); full mode with three seeds is ~3x the one-seed ~20 min.
TIPS_QUICK_EPOCHS = 150


@dataclass(frozen=True)
class TipsOptions:
    """The tips study's settings: ``study_tips(..., margin=0.5)``."""

    margin: float = 0.3  # dB, 7% in MSE: one setting changed on one network, so a smaller gap counts

    def __post_init__(self):
        _check_margin(self.margin)


def tips_base(quick: bool = False) -> Recipe:
    """The `original` preset for TIPS_(QUICK_)EPOCHS: every tip's own choice, the baseline."""
    return get_preset("original").replace(epochs=TIPS_QUICK_EPOCHS if quick else TIPS_EPOCHS)


def tips_entries(base: Recipe) -> list[tuple[str, Recipe, str | None]]:
    """(label, recipe, claim) for the baseline ('original', no claim) and each tip's opposite.

    Scales multiply the base's own values, so with the `original` base the opposites are
    init original:scale=0.03 and 3.0 and learning rates 1.0 and 0.01 (before the per-layer
    1/sqrt(fan_in + 1) scaling, as the original's 0.1 is). The reader's set-up is the
    `rprop-sigmoid` preset, given the base's RUN_FIELDS (epochs, seed, stopping rules).
    """
    init = INITS.parse(base.init)
    if init.name != "original":
        raise UserError(f"the tips study scales the original initialiser's std 10x up and down; the base's init "
                        f"is {base.init!r}: use --init original or original:scale=S")
    scale, lr = init.options.scale, base.learning_rate

    def init_scaled(factor: float) -> str:
        return format_spec(Spec("original", dataclasses.replace(init.options, scale=_tidy(scale * factor))))

    reader = get_preset("rprop-sigmoid").replace(**{name: getattr(base, name) for name in RUN_FIELDS})
    return [
        ("original", base, None),
        ("plain-relu", base.replace(activation="relu"),
         "A slight negative slope on the rectifier (leaky ReLU) beats a plain ReLU"),
        ("init-x0.1", base.replace(init=init_scaled(0.1)),
         f"Initial weights of std {scale:g}/sqrt(fan_in + 1) beat 10x smaller ({_tidy(scale * 0.1):g})"),
        ("init-x10", base.replace(init=init_scaled(10)),
         f"Initial weights of std {scale:g}/sqrt(fan_in + 1) beat 10x larger ({_tidy(scale * 10):g})"),
        ("scan-order", base.replace(order="scan"),
         "A fresh random pixel order every epoch beats scan order"),
        ("sigmoid-out", base.replace(output="sigmoid"), "Linear output units beat sigmoid ones"),
        ("lr-x10", base.replace(lr=_tidy(lr * 10)), f"Learning rate {lr:g} beats 10x larger ({_tidy(lr * 10):g})"),
        ("lr-x0.1", base.replace(lr=_tidy(lr * 0.1)),
         f"Learning rate {lr:g} beats 10x smaller ({_tidy(lr * 0.1):g})"),
        ("rprop-sigmoid", reader,
         f"This recipe beats the reader's failing set-up (full-batch RPROP, {format_arch(reader.arch)} ReLU, "
         f"sigmoid outputs) over the same {base.epochs} epochs"),
    ]


def study_tips(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
               resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
               ray: str | None = None, **options) -> dict:
    """The original recipe against each tip's opposite, one change at a time, and the reader's set-up."""
    opts = _options(TipsOptions, options, "tips")
    base = tips_base(quick) if base is None else base
    entries = tips_entries(base)
    tips = [(label, claim) for label, _, claim in entries if claim is not None]
    return run_comparison(study_target(target, quick), [(label, recipe) for label, recipe, _ in entries], out,
                          jobs=jobs, resume=resume, device=device, quiet=quiet,
                          title="The author's tips against their opposites",
                          claims=functools.partial(tips_claims, margin=opts.margin, tips=tips),
                          seeds=_study_seeds(seeds, resume), ray=ray)


def tips_claims(rows: list[dict], margin: float = TipsOptions.margin,
                tips: list[tuple[str, str]] | None = None) -> list[dict]:
    """One verdict per tip: the baseline ('original') against the tip's opposite, final PSNR.

    ``tips``: (label, claim) pairs; default those of tips_entries(tips_base()).
    """
    if tips is None:
        tips = [(label, claim) for label, _, claim in tips_entries(tips_base()) if claim is not None]
    by_label = {row["label"]: row for row in rows}
    baseline = by_label.get("original")
    return [_versus(claim, baseline, by_label.get(label), margin, "original", label) for label, claim in tips]


# -----------------------------------------------------------------------------
# encodings: Tancik et al.'s comparison, plus the hash grid, at one parameter budget

# Full: 125 epochs of batches of 8192 on 300x429, 16 batches an epoch: ~2,000 Adam steps, Tancik
# et al.'s count. The three MLPs cost ~5.5 s an epoch each (train 2.7-3.9 s + render), the hash
# grid 0.5 s: 4 runs on 2 cores, ~10.3 s of wall an epoch, ~21 min.
ENCODINGS_EPOCHS = 125
# Quick (45x64): batches of 512 (8192 would be one full batch an epoch), 6 an epoch, 200 epochs:
# ~1,100 Adam steps. 0.12-0.18 s an epoch per MLP, 0.06 s the hash grid: ~1 min in all; measured
# 2.5 min with a third training job holding one of the two cores.
ENCODINGS_QUICK_EPOCHS = 200
ENCODINGS_QUICK_BATCH = 512


@dataclass(frozen=True)
class EncodingOptions:
    """The encodings study's settings: ``study_encodings(..., encodings=("none", "fourier:sigma=20"))``.

    How the budget is shared. none, positional and fourier have no trainable parameters: each
    gets an MLP of the base's depth whose equal width is solved for the budget given the
    encoding's output width (3x367 for none, 3x357 for positional's 42 features, 3x262 for
    fourier's 512). The hash grid's tables are parameters: it keeps instant-ngp's small MLP
    (``hashgrid_arch``) and its table size per level is solved so tables + MLP meet the budget
    (15,022 rows a level at 272,703). Every entry lands within budget.TOLERANCE (2%).
    """

    budget: int = 272_703  # the original's count; Tancik et al.'s 3x256 Fourier network has 263,683
    encodings: tuple[str, ...] = ("none", "positional", "fourier", "hashgrid")  # Tancik's three + instant-ngp
    hashgrid_arch: tuple[int, ...] = (64, 64)  # instant-ngp's MLP: the tables hold the detail, the MLP decodes
    hashgrid_lr: float = 1e-2  # instant-ngp's Adam rate, for the tables alone (encoding_lr, unless the base sets one)
    margin: float = 0.5  # dB, as the depth study

    def __post_init__(self):
        _check_positive_int("budget", self.budget)
        if isinstance(self.encodings, str) or not self.encodings or not all(
                isinstance(spec, str) for spec in self.encodings):
            raise UserError(f"encodings must be a list of encoding specs, got {self.encodings!r}")
        object.__setattr__(self, "encodings", tuple(format_spec(ENCODINGS.parse(s)) for s in self.encodings))
        object.__setattr__(self, "hashgrid_arch", _int_tuple("hashgrid_arch", self.hashgrid_arch))
        if type(self.hashgrid_lr) not in (int, float) or not (math.isfinite(self.hashgrid_lr) and self.hashgrid_lr > 0):
            raise UserError(f"hashgrid_lr must be a positive number, got {self.hashgrid_lr!r}")
        _check_margin(self.margin)


def encodings_base(quick: bool = False) -> Recipe:
    """The `fourier` preset without its encoding (3x256 ReLU, PyTorch init, Adam 1e-3, batches of 8192)."""
    base = get_preset("fourier").replace(encoding="none", epochs=ENCODINGS_EPOCHS)
    return base.replace(epochs=ENCODINGS_QUICK_EPOCHS, batch_size=ENCODINGS_QUICK_BATCH) if quick else base


def encoding_entries(base: Recipe, opts: EncodingOptions | None = None) -> list[tuple[str, Recipe]]:
    """One entry per encoding, every one within budget.TOLERANCE of ``opts.budget`` parameters in all."""
    opts = EncodingOptions() if opts is None else opts
    names = [ENCODINGS.parse(spec).name for spec in opts.encodings]
    entries = []
    for spec, name in zip(opts.encodings, names):
        label = name if names.count(name) == 1 else _spec_label(spec)
        if name == "hashgrid":
            options = ENCODINGS.parse(spec).options
            mlp = parameter_count(opts.hashgrid_arch, options.levels * options.features)
            table_size = hashgrid_table_size(options, _remaining(opts.budget, mlp, "the hash grid's MLP"))
            encoding = format_spec(Spec("hashgrid", dataclasses.replace(options, table_size=table_size)))
            # the tables' own rate, unless the base (the user) set one
            recipe = base.replace(encoding=encoding, arch=opts.hashgrid_arch,
                                  encoding_lr=base.encoding_lr or opts.hashgrid_lr)
        else:
            in_features, encoding_parameters = encoding_size(spec)
            depth = len(base.arch)
            width = width_for_budget(depth, _remaining(opts.budget, encoding_parameters, spec), in_features)
            recipe = base.replace(encoding=spec, arch=(width,) * depth)
        _check_budget(recipe, opts.budget, TOLERANCE, f"encoding {spec}")
        entries.append((label, recipe))
    return entries


def study_encodings(target: Target, out, *, quick: bool = False, base: Recipe | None = None,
                    jobs: int | None = None, resume: bool = False, device: str = "auto", quiet: bool = False,
                    seeds=None, ray: str | None = None, **options) -> dict:
    """Raw coordinates against input encodings, all at one parameter budget, the same Adam and epochs."""
    opts = _options(EncodingOptions, options, "encodings")
    base = encodings_base(quick) if base is None else base
    entries = encoding_entries(base, opts)
    return run_comparison(study_target(target, quick), entries, out, jobs=jobs, resume=resume, device=device,
                          quiet=quiet, title=f"Input encodings at {opts.budget:,} parameters",
                          claims=functools.partial(encoding_claims, margin=opts.margin),
                          seeds=_study_seeds(seeds, resume), ray=ray)


def encoding_claims(rows: list[dict], margin: float = EncodingOptions.margin) -> list[dict]:
    """An encoding against raw coordinates; Fourier against positional (Tancik et al.); the best encoding."""
    def name(row: dict) -> str:
        return row["recipe"]["encoding"].split(":")[0]

    raw = [row for row in rows if name(row) == "none"]
    encoded = [row for row in rows if name(row) != "none"]
    claims = []
    claim = "An input encoding beats raw coordinates at the same parameter count"
    if not raw or not encoded:
        claims.append(_verdict(claim, None, "needs a run with encoding none and one with an encoding"))
    else:
        best_encoded, best_raw = _best(encoded), _best(raw)
        parts = [f"best encoded: {_describe_best(best_encoded, encoded)}",
                 f"raw coordinates: {_describe_best(best_raw, raw)}"]
        supported = _compare_best(best_encoded, best_raw, margin, parts)
        claims.append(_verdict(claim, supported, "; ".join(parts + _failures(rows))))

    fourier = next((row for row in rows if name(row) == "fourier"), None)
    positional = next((row for row in rows if name(row) == "positional"), None)
    if fourier and positional:
        claims.append(_versus("Gaussian Fourier features beat NeRF's positional encoding (Tancik et al. 2020)",
                              fourier, positional, margin, fourier["label"], positional["label"]))

    scored = sorted((row for row in rows if _score(row) is not None), key=_score, reverse=True)
    if len(scored) < 2:
        claims.append(_verdict("One encoding is the best here", None,
                               "fewer than two runs finished; " + "; ".join(_failures(rows) or ["no runs"])))
    else:
        first, second = scored[:2]
        leads, text = _gap(first, second, margin)
        ranking = ", ".join(f"{row['label']} {_db(_score(row))}" for row in scored)
        claims.append(_verdict(
            f"{first['label']} is the best encoding here", True if leads else None,
            f"ranking (mean final PSNR): {ranking}; {first['label']} against {second['label']}: {text}"
            + "".join("; " + failure for failure in _failures(rows))))
    return claims


# -----------------------------------------------------------------------------
# noise: how far apart one recipe lands from seed to seed, so a reader knows what a gap means

# The depth study's base and epochs (the original recipe, 30 epochs; quick: 80 on 64 px), 10 seeds:
# ten draws show the spread's size to within about a quarter. Full: 10 runs of ~4.3 s an epoch on
# one core each, two at a time: ~11 min; quick: ~1 min.
NOISE_SEEDS = 10


@dataclass(frozen=True)
class NoiseOptions:
    """The noise study's settings: ``study_noise(..., margin=0.5)``."""

    margin: float = 0.5  # dB: the other studies' margin, checked against the spread found here

    def __post_init__(self):
        _check_margin(self.margin)


def noise_base(quick: bool = False) -> Recipe:
    """The depth study's base: the original recipe at the depth study's epochs."""
    return depth_base(quick)


def study_noise(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
                resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
                ray: str | None = None, **options) -> dict:
    """One recipe, many seeds: the spread of its final PSNR, the noise floor of every other comparison."""
    opts = _options(NoiseOptions, options, "noise")
    base = noise_base(quick) if base is None else base
    seeds = _study_seeds(seeds, resume, NOISE_SEEDS)
    if type(seeds) is int and seeds < 2 or isinstance(seeds, tuple) and len(seeds) < 2:
        raise UserError("the noise study compares seeds with each other: give --seeds 2 or more")
    return run_comparison(study_target(target, quick), [("noise", base)], out, jobs=jobs, resume=resume,
                          device=device, quiet=quiet, title="Seed to seed: one recipe's noise floor",
                          claims=functools.partial(noise_claims, margin=opts.margin), seeds=seeds, ray=ray)


def noise_claims(rows: list[dict], margin: float = NoiseOptions.margin) -> list[dict]:
    """Whether two seeds of one recipe land within ``margin`` dB of each other, and how far apart they do."""
    claim = f"Two seeds of this recipe land within {margin:g} dB of each other (the studies' margin)"
    finals = sorted(_finals(rows[0])) if rows else []
    if len(finals) < 2:
        return [_verdict(claim, None, "fewer than two seeds finished; " + "; ".join(_failures(rows) or ["no runs"]))]
    spread = stats.estimate(finals)
    gaps = [abs(a - b) for i, a in enumerate(finals) for b in finals[i + 1:]]
    widest = finals[-1] - finals[0]
    evidence = (f"{len(finals)} seeds, final PSNR {spread.shown(2, ' dB')} (mean ± sd [95% interval]); "
                f"lowest {finals[0]:.2f} dB, highest {finals[-1]:.2f} dB: {widest:.2f} dB apart; the median gap "
                f"between two seeds is {statistics.median(gaps):.2f} dB. One run of each of two recipes that "
                f"differ by less than {widest:.2f} dB on this image may differ by seed alone")
    return [_verdict(claim, widest <= margin, evidence + "".join("; " + f for f in _failures(rows)))]


def hashgrid_parameters(options: HashGridOptions) -> int:
    """The hash grid's trainable parameters: each level's min((N_l + 1)^2, table_size) rows of F features."""
    rows = sum(min((n + 1) ** 2, options.table_size) for n in hashgrid_resolutions(options))
    return rows * options.features


def hashgrid_table_size(options: HashGridOptions, parameters: int) -> int:
    """The table size per level whose grid has the number of parameters closest to ``parameters``.

    The count grows with the table size until every level is dense; a bisection finds the
    first size at or above the target, then the closer of it and the size below wins.
    """
    def count(size: int) -> int:
        return hashgrid_parameters(dataclasses.replace(options, table_size=size))

    low, high = 1, max((n + 1) ** 2 for n in hashgrid_resolutions(options))  # high: every level dense
    if count(high) < parameters:
        return high  # the grid cannot grow further; _check_budget reports the shortfall
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < parameters else (low, middle)
    return low if low == 1 or count(low) - parameters <= parameters - count(low - 1) else low - 1


def encoding_size(spec: str) -> tuple[int, int]:
    """(output features, trainable parameters) of an encoding spec: budget.encoding_size, nothing built."""
    from .budget import encoding_size as measure  # this module's `budget` is a parameter name

    return measure(spec)


# -----------------------------------------------------------------------------
# the registry

STUDIES = {"depth": study_depth, "tips": study_tips, "encodings": study_encodings, "noise": study_noise}
STUDY_OPTIONS = {"depth": DepthOptions, "tips": TipsOptions, "encodings": EncodingOptions, "noise": NoiseOptions}
_BASES = {"depth": depth_base, "tips": tips_base, "encodings": encodings_base, "noise": noise_base}


def default_base(study: str, quick: bool = False) -> Recipe:
    """The recipe a study's entries start from, before the user's flags."""
    if study not in _BASES:
        raise unknown_name("study", study, STUDIES)
    return _BASES[study](quick)


def check_study_options(study: str, options, arch=None) -> None:
    """UserError unless ``study`` takes each of ``options`` (names such as "budget", or a dict of
    them), and, for the depth study, no ``arch`` is asked for: it makes each entry's from the budget.

        check_study_options("tips", {"budget": 50_000})  # UserError: the depth and encodings studies take it
    """
    if study not in STUDY_OPTIONS:
        raise unknown_name("study", study, STUDIES)
    for key in options:
        takers = [name for name, cls in STUDY_OPTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if not takers:
            _options(STUDY_OPTIONS[study], {key: None}, study)  # raises: unknown option, and the valid ones
        if study not in takers:
            raise UserError(f"--{key} applies to the {' and '.join(takers)} stud{'y' if len(takers) == 1 else 'ies'}, "
                            f"not {study}")
    if study == "depth" and arch is not None:
        raise UserError("the depth study makes each network's architecture from --budget and --depths; drop --arch")


# -----------------------------------------------------------------------------
# verdicts from table rows


def _score(row: dict | None) -> float | None:
    """A run's final PSNR, or None if it failed: diverged, did not finish, or left no figure."""
    if row is None or row.get("status") != "complete":
        return None
    psnr = row.get("psnr")
    if psnr is None:
        # compare.py writes a perfect fit's infinite PSNR as null (JSON has no infinity)
        return math.inf if row.get("epochs") and row.get("mae") == 0 else None
    return None if math.isnan(psnr) else float(psnr)


def _db(value: float) -> str:
    return f"{value:.2f} dB"


def _result(row: dict) -> str:
    """'d4-w300 26.12 dB', 'lr-x10 diverged in epoch 4' or 'x did not finish (running)'."""
    score = _score(row)
    if score is not None:
        seeds = len(row.get("seeds") or ())
        return f"{row['label']} {_db(score)}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    status = row.get("status")
    seeds = len(row.get("seeds") or ())
    if status == "diverged" and seeds > 1:
        return f"{row['label']} diverged in {row.get('seeds_failed')} of {seeds} seeds"
    if status == "diverged":  # "epochs" counts the epochs completed; the next one diverged
        return f"{row['label']} diverged in epoch {(row.get('epochs') or 0) + 1}"
    return f"{row['label']} did not finish ({status})"


def _failures(rows: list[dict]) -> list[str]:
    failed = [_result(row) for row in rows if _score(row) is None]
    return ["failed: " + ", ".join(failed)] if failed else []


def _best(rows: list[dict]) -> dict | None:
    scored = [row for row in rows if _score(row) is not None]
    return max(scored, key=_score) if scored else None


def _describe_best(best: dict | None, group: list[dict]) -> str:
    return _result(best) if best else "none finished (" + ", ".join(_result(row) for row in group) + ")"


def _compare_best(winner: dict | None, loser: dict | None, margin: float, parts: list[str]) -> bool | None:
    """Whether ``winner``'s group beat ``loser``'s; a group whose runs all failed loses. Appends the gap."""
    if winner is None and loser is None:
        return None
    if winner is None or loser is None:
        return loser is None
    supported, text = _gap(winner, loser, margin)
    parts.append(text)
    return supported


def _gap(ours: dict, theirs: dict, margin: float) -> tuple[bool | None, str]:
    """Whether ``ours`` beat ``theirs`` by ``margin`` dB of final PSNR, decided from the seeds (stats.py):
    True when the 95% interval of the difference of the means lies above the margin, False when it lies
    below -margin, None otherwise, and always None from one seed each (no spread: no interval)."""
    a, b = _finals(ours), _finals(theirs)
    gap = stats.difference(a, b)
    if gap.mean is None:
        return None, "no finished seeds to compare"
    if gap.low is None:
        return None, (f"difference {gap.mean:+.2f} dB from {len(a)} and {len(b)} seed(s): no interval, so no "
                      f"verdict (margin {margin:g} dB; --seeds 3 or more decides)")
    improvement = stats.probability_of_improvement(a, b)
    text = (f"difference {gap.mean:+.2f} dB, 95% interval [{gap.low:+.2f}, {gap.high:+.2f}] ({gap.method}, "
            f"{len(a)} and {len(b)} seeds; margin {margin:g} dB); P(a seed of {ours['label']} beats one of "
            f"{theirs['label']}) {improvement.mean:.2f} [{improvement.low:.2f}, {improvement.high:.2f}]")
    return stats.SUPPORTED_VALUE[stats.verdict(gap, margin)], text


def _finals(row: dict) -> list[float]:
    """Each completed seed's final PSNR (a perfect fit's is inf: its row has psnr null and mae 0)."""
    runs = row.get("per_seed") or [row]
    return [score for score in (_score(run) for run in runs) if score is not None]


def _versus(claim: str, ours: dict | None, theirs: dict | None, margin: float, our_label: str,
            their_label: str) -> dict:
    """The claim that ``ours`` beats ``theirs`` by final PSNR; a run that failed loses to one that did not."""
    if ours is None or theirs is None:
        missing = our_label if ours is None else their_label
        return _verdict(claim, None, f"no run {missing} in this comparison")
    parts = [_result(ours), _result(theirs)]
    supported = _compare_best(ours if _score(ours) is not None else None,
                              theirs if _score(theirs) is not None else None, margin, parts)
    return _verdict(claim, supported, "; ".join(parts))


def _verdict(claim: str, supported: bool | None, evidence: str) -> dict:
    return {"claim": claim, "supported": supported, "evidence": evidence}


# -----------------------------------------------------------------------------
# checks


def _study_seeds(seeds, resume: bool, default: int = STUDY_SEEDS):
    """What a study passes to run_comparison: the seeds asked for; else on resume the study's own
    (None: read from its directory), and ``default`` for a new study."""
    if seeds is not None:
        return seeds
    return None if resume else default


def _options(cls: type, options: dict, study: str):
    """The study's options dataclass from keyword arguments; a misspelt one is an error."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r} for the {study} study; valid options: {', '.join(fields)}")
    return cls(**options)


def _remaining(budget: int, used: int, what: str) -> int:
    if used >= budget:
        raise UserError(f"{what} alone has {used:,} parameters, the whole budget of {budget:,}; raise the budget")
    return budget - used


def _check_budget(recipe: Recipe, budget: int, tolerance: float, what: str) -> None:
    """The recipe's parameter count (Recipe.parameter_count, which counts without building) must be within ``tolerance`` of ``budget``."""
    count = recipe.parameter_count()
    if abs(count - budget) > tolerance * budget:
        raise UserError(f"{what}: the nearest network has {count:,} parameters, more than {tolerance:.0%} "
                        f"from the budget of {budget:,}; change the budget")


def _check_positive_int(name: str, value) -> None:
    if type(value) is not int or value < 1:
        raise UserError(f"{name} must be a positive whole number, got {value!r}")


def _check_margin(margin) -> None:
    if type(margin) not in (int, float) or not (math.isfinite(margin) and margin >= 0):
        raise UserError(f"margin must be a number of dB >= 0, got {margin!r}")


def _int_tuple(name: str, values, distinct: bool = False, largest: int | None = None) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise UserError(f"{name} must be a list of positive whole numbers, got {_shown(values)}")
    values = tuple(values)
    if not values or any(type(v) is not int or v < 1 for v in values):
        raise UserError(f"{name} must be a list of positive whole numbers, got {_shown(values)}")
    if largest is not None and max(values) > largest:
        raise UserError(f"{name} may be at most {largest:,}, got {max(values):,}")
    if distinct and len(set(values)) != len(values):
        raise UserError(f"{name} lists a value twice: {_shown(values)}")
    return values


def _shown(values, most: int = 12) -> str:
    """A list in an error message, cut after ``most`` items: a pasted 100,000-item list is not echoed."""
    if not isinstance(values, tuple):
        return repr(values)[:200]
    items = [repr(v)[:40] for v in values[:most]]
    more = f", ... ({len(values) - most:,} more)" if len(values) > most else ""
    return "[" + ", ".join(items) + more + "]"


def _tidy(value: float) -> float:
    """0.1 * 0.1 -> 0.01, not 0.010000000000000002: a rate or scale as a person would write it."""
    return float(f"{value:.12g}")


def _spec_label(spec: str) -> str:
    """'fourier:sigma=20' -> 'fourier-sigma20', a file-name-safe label (compare.LABEL_PATTERN)."""
    return spec.replace(":", "-").replace("=", "").replace(",", "-")[:64]
