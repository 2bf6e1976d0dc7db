"""The `monalisa` command: a thin shell that turns arguments into API calls.

    train    experiment.run_target, train_run / resume_run
    compare  compare.comparison_entries, run_comparison / load_comparison
    study    studies.check_study_options, STUDIES (each a run_comparison with claims)
    search   search.run_search (Ray Tune: Optuna's TPE and ASHA under a parameter budget)
    serve    lab.server.serve (the web lab)

Each subcommand has an add_<name> that builds its parser (choices from their owners)
and a command_<name> that runs it.

Exit status: 0 done; 1 training diverged; 2 a mistake in the input (one line on
stderr, no traceback); 130 interrupted (the run or comparison directory resumes);
141 the reader closed the pipe.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from pathlib import Path

from monalisa import __version__, interrupts
from monalisa.data.images import BUILTIN_IMAGES, DEFAULT_IMAGE, builtin_path, load_target, parse_size
from monalisa.engines import DEVICES, ENGINES
from monalisa.errors import Diverged, UserError
from monalisa.experiments.compare import comparison_entries, load_comparison, parse_seeds, run_comparison
from monalisa.experiments.report.pages import VERDICTS
from monalisa.experiments.studies import STUDIES, check_study_options, default_base
from monalisa.experiments.studies.common import QUICK_SIDE, STUDY_SEEDS
from monalisa.experiments.studies.depth import DEPTHS, QUICK_DEPTHS, DepthOptions
from monalisa.experiments.studies.noise import NOISE_SEEDS
from monalisa.files import save_png, write_errors
from monalisa.recipes.limits import MAX_PARAMETERS, MAX_PIXELS, allowing_large
from monalisa.recipes.recipe import DEFAULT_PRESET, ORDERS, PRESETS, Recipe, get_preset, load_recipe, parse_arch
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.runs.directory import FRAME_SCHEDULES, FRAME_SPACINGS, RunDirectory
from monalisa.runs.lifecycle import default_run_path, resume_run, run_target, train_run
from monalisa.views.neurons import DEFAULT_TILE, animate_neurons, run_neurons, save_neuron_grid
from monalisa.views.render import Region, output_size, render_run

# Flags that set a recipe field: flag dest -> recipe key.
RECIPE_FLAGS = ("arch", "activation", "output", "encoding", "residual", "init", "optimizer", "lr", "encoding_lr",
                "schedule", "batch_size", "order", "epochs", "until_psnr", "time_limit", "seed")
# Flags that set a field of a study's options dataclass (studies.STUDY_OPTIONS): flag dest -> option.
STUDY_FLAGS = ("budget", "depths")
ARCH_HELP = "hidden layers: DEPTHxWIDTH (4x300) or widths (300,300,100)"
ALLOW_LARGE_HELP = (f"lift the memory limits (over {MAX_PARAMETERS:,} parameters, {MAX_PIXELS:,} training pixels, "
                    "...: see limits.py) on a machine with the memory")
READ_LARGE_HELP = "lift the memory limits to read a run trained with --allow-large, on a machine with the memory"

COMPARE_DESCRIPTION = f"""\
Train several recipes on one image, each run in its own process, and write one
comparison directory: a table, learning curves, the runs' frames side by side,
and report.html. Ctrl-C leaves it resumable with --resume DIR.

Entries, in this order (at least two in all):
  --arch A      one per --arch: the --preset (default {DEFAULT_PRESET}) with that architecture
  --preset P    one per --preset, when no --arch is given (with --arch, the one
                --preset is the base of the --arch entries instead)
  --recipe F    one per recipe file
The other recipe flags (--epochs, --lr, ...) apply to every entry. Each entry's
label is made from its recipe, such as 2x8-leaky_relu-sgd-b1 (a repeat gets -2).

examples:
  monalisa compare photo.jpg --arch 1x1000 --arch 4x300 --epochs 20 --scale 0.25
  monalisa compare photo.jpg --preset quick --preset fast
  monalisa compare photo.jpg --preset quick --recipe mine.toml
  monalisa compare --resume runs/compare-photo-20250101-120000"""

STUDY_DESCRIPTION = """\
Ask one of the 2012 experiment's questions as a comparison that states its
verdicts: every run, the table and report.html as `monalisa compare` writes
them, plus one verdict per claim (supported, refuted or inconclusive), decided from
the 95% intervals over the entries' seeds (--seeds, default 3).

studies:
""" + "\n".join(textwrap.fill(function.__doc__.splitlines()[0], 79, initial_indent=f"  {name:10s} ",
                               subsequent_indent=" " * 13) for name, function in STUDIES.items()) + f"""

The recipe flags change the study's base recipe, which every entry starts from
(the fields a study varies are its own: the depth study sets each --arch).
--quick shrinks the image to {QUICK_SIDE} px on its longest side and uses the
study's quick epochs.

examples:
  monalisa study depth mona_lisa --quick
  monalisa study depth --budget 50000 --depths 1,2,4 --epochs 10 --quick
  monalisa study tips mona_lisa --quick --resume runs/study-tips-mona_lisa-20250101-120000"""


SEARCH_DESCRIPTION = """\
Search for the best recipe under a parameter budget with Ray Tune: Optuna's
TPE sampler proposes each trial (depth, activation, encoding and its size,
optimiser, rate, batch size; the width solved for the budget), and ASHA stops
the poor ones early on PSNR against training seconds. Every trial is an
ordinary run directory under DIR/runs; DIR holds the leaderboard (report.html,
leaderboard.csv), the best trials' curves and grid, and best-recipe.toml for
`monalisa train --recipe`. Ctrl-C leaves it resumable with --resume DIR.

examples:
  monalisa search mona_lisa --budget 273k --minutes 20
  monalisa search photo.jpg --budget 100k --minutes 5 --trials 20 --scale 0.5
  monalisa search mona_lisa --budget 273k --minutes 60 --ray 10.0.0.5:6379 --out /shared/search
  monalisa search --resume runs/search-mona_lisa-20250101-120000"""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise UserError(f"{message} (see `{self.prog} --help`)")


def names(registry) -> str:
    return ", ".join(registry.names())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def port_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free one), got {text}")
    return value


def count_type(text: str) -> int:
    """'273k' -> 273000, '1.5M' -> 1500000, '272703' -> 272703: a parameter count as people write it."""
    number, scale = text.strip(), 1
    if number[-1:].lower() in ("k", "m"):
        number, scale = number[:-1], 1_000 if number[-1].lower() == "k" else 1_000_000
    try:
        value = float(number) * scale if len(number) <= 12 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"write a whole number of parameters such as 272703, 273k or 1.5M; got "
                                         f"{text[:40]!r}")
    return int(value)


def positive_ints(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8)."""
    try:
        return tuple(positive_int(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"write positive whole numbers separated by commas, such as 1,2,4,8; "
                                         f"got {text!r}") from None


def seeds_type(text: str) -> int | tuple[int, ...]:
    """'5' -> 5 (five seeds from the recipe's); '0,3,7' -> (0, 3, 7) (those seeds)."""
    try:
        return parse_seeds(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def arch_type(text: str):
    try:
        return parse_arch(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def center_type(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        row, col = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"write ROW,COL as two fractions such as 0.3,0.5, got {text!r}") from None
    return row, col


def size_type(text: str):
    try:
        return parse_size(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_recipe_flags(group, epochs_help: str = "epochs in total") -> None:
    """Every recipe flag but --arch, --preset and --recipe, which each command defines in its own way."""
    group.add_argument("--activation", action="append", metavar="SPEC",
                       help=f"hidden activation, once for all layers or once per layer: {names(ACTIVATIONS)}")
    group.add_argument("--output", metavar="SPEC", help=f"output activation: {names(OUTPUTS)}")
    group.add_argument("--encoding", metavar="SPEC", help=f"input encoding: {names(ENCODINGS)}")
    group.add_argument("--residual", action=argparse.BooleanOptionalAction,
                       help="skip connections around equal-width hidden layers")
    group.add_argument("--init", metavar="SPEC", help=f"initialisation: {names(INITS)}")
    group.add_argument("--optimizer", metavar="SPEC", help=f"optimiser: {names(OPTIMIZERS)}")
    group.add_argument("--lr", type=positive_float, help="learning rate (sgd/momentum: before fan-in scaling)")
    group.add_argument("--encoding-lr", type=positive_float, help="the encoding's own learning rate")
    group.add_argument("--schedule", metavar="SPEC", help=f"learning-rate schedule: {names(SCHEDULES)}")
    group.add_argument("--batch-size", type=positive_int, help="pixels per step; 1 is the original's online SGD")
    group.add_argument("--order", choices=ORDERS, help="pixel order each epoch")
    group.add_argument("--epochs", type=positive_int, help=epochs_help)
    group.add_argument("--until-psnr", type=positive_float, metavar="DB", help="stop once the PSNR reaches DB")
    group.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                       help="stop after this much training time")
    group.add_argument("--seed", type=int, help="initial weights and pixel order")


def add_image_flags(parser: argparse.ArgumentParser) -> None:
    image = parser.add_argument_group("image")
    image.add_argument("--size", type=size_type, help="train on a resized copy, WIDTHxHEIGHT")
    image.add_argument("--scale", type=positive_float, help="train on a copy scaled by this factor")


def add_parallel_run_flags(parser: argparse.ArgumentParser, default_out: str, resume_help: str,
                           default_seeds: str) -> None:
    """The run flags that compare and study share."""
    run = parser.add_argument_group("run")
    run.add_argument("--jobs", type=positive_int, metavar="N",
                     help="runs at a time, each in its own process (default: one per core)")
    run.add_argument("--device", choices=DEVICES, help="where new runs train (default: auto)")
    run.add_argument("--out", metavar="DIR", help=f"comparison directory (default: {default_out})")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--resume", metavar="DIR", help=resume_help)
    run.add_argument("--seeds", type=seeds_type, metavar="N|S,S,...",
                     help=f"train each entry once per seed: N seeds from the recipe's (--seed) on, or these "
                          f"seeds; the table then gives means and 95%% intervals, and verdicts come from them "
                          f"(default: {default_seeds})")
    run.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    add_ray_flag(run)


def add_ray_flag(group, default: str | None = None) -> None:
    group.add_argument("--ray", metavar="ADDRESS", default=default,
                       help="train on Ray (pip install 'monalisa[ray]'): local starts one on this machine, bound "
                            "to 127.0.0.1; auto or HOST:PORT joins a cluster, whose nodes must see the output "
                            "folder at the same path (docs/ray.md)" + (f" (default: {default})" if default else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="monalisa", description="Watch a deep network learn one image.")
    parser.add_argument("--version", action="version", version=f"monalisa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (add_train, add_compare, add_study, add_search, add_images, add_render, add_neurons, add_serve,
                add_animate):
        add(commands)
    return parser


def add_train(commands) -> None:
    train = commands.add_parser("train", help="train a network on an image, writing a run directory")
    train.set_defaults(handler=command_train)
    train.add_argument("image", nargs="?", help=f"image file or built-in name (default: {DEFAULT_IMAGE} at half size)")
    recipe = train.add_argument_group(
        "recipe (flags override the preset's fields; components are specs: NAME or NAME:key=value,...)")
    recipe.add_argument("--preset", choices=list(PRESETS), help=f"named recipe (default: {DEFAULT_PRESET})")
    recipe.add_argument("--recipe", metavar="FILE", help="recipe file, .json or .toml")
    recipe.add_argument("--arch", type=arch_type, help=ARCH_HELP)
    add_recipe_flags(recipe, epochs_help="epochs in total (with --resume: extends the run)")
    add_image_flags(train)
    run = train.add_argument_group("run")
    run.add_argument("--device", choices=DEVICES, help="where to train (default: auto)")
    run.add_argument("--engine", choices=ENGINES, default="auto",
                     help="auto: the exact compiled online engine when the recipe allows, else batched PyTorch")
    run.add_argument("--frames", choices=FRAME_SCHEDULES, default="all", help="a frame every epoch, or log-spaced")
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/<image>-<preset>-<time>)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--resume", metavar="RUN", help="continue a stopped run directory")
    run.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)


def add_compare(commands) -> None:
    compare = commands.add_parser("compare", help="train several recipes on one image side by side, with a report",
                                  description=COMPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.set_defaults(handler=command_compare)
    compare.add_argument("image", nargs="?", help="image file or built-in name (required unless --resume)")
    entries = compare.add_argument_group("entries (each repeatable; at least two entries in all)")
    entries.add_argument("--arch", type=arch_type, action="append",
                         help=f"one entry with these {ARCH_HELP}, the rest from --preset")
    entries.add_argument("--preset", choices=list(PRESETS), action="append",
                         help=f"one entry per preset; with --arch, the entries' base (default: {DEFAULT_PRESET})")
    entries.add_argument("--recipe", metavar="FILE", action="append", help="one entry from a .json or .toml file")
    add_recipe_flags(compare.add_argument_group(
        "recipe (flags override every entry's fields; components are specs: NAME or NAME:key=value,...)"))
    add_image_flags(compare)
    add_parallel_run_flags(compare, "runs/compare-<image>-<time>",
                           "continue a stopped comparison: finished runs are reused, stopped ones resumed",
                           "1; on --resume, the comparison's own")


def add_study(commands) -> None:
    study = commands.add_parser("study", help="ask one of the 2012 experiment's questions: runs, report and verdicts",
                                description=STUDY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    study.set_defaults(handler=command_study)
    study.add_argument("study", choices=list(STUDIES), help="which study")
    study.add_argument("image", nargs="?",
                       help=f"image file or built-in name (default: {DEFAULT_IMAGE}); the 2012 experiment trained "
                            "on the Mona Lisa: give mona_lisa to ask its questions of its image")
    study.add_argument("--quick", action="store_true",
                       help=f"the image shrunk to {QUICK_SIDE} px on its longest side, the study's quick epochs")
    options = study.add_argument_group("study options")
    options.add_argument("--budget", type=positive_int, metavar="N",
                         help=f"parameters per network, depth and encodings studies "
                              f"(default: {DepthOptions.budget:,}, the original 4x300's)")
    options.add_argument("--depths", type=positive_ints, metavar="D,D,...",
                         help=f"hidden-layer counts, depth study (default: {','.join(map(str, DEPTHS))}; "
                              f"with --quick {','.join(map(str, QUICK_DEPTHS))})")
    recipe = study.add_argument_group(
        "base recipe (flags override the study's base, which every entry starts from)")
    recipe.add_argument("--arch", type=arch_type,
                        help=f"{ARCH_HELP}; not with the depth study, which sets it; "
                             "the encodings study keeps only its depth")
    add_recipe_flags(recipe, epochs_help="epochs in total (default: the study's, smaller with --quick)")
    add_parallel_run_flags(study, "runs/study-<study>-<image>-<time>",
                           "continue a stopped study, given the flags it started with (IMAGE may be left out: "
                           "DIR holds it)", f"{STUDY_SEEDS}, {NOISE_SEEDS} for the noise study; on --resume, the study's own")


def add_search(commands) -> None:
    search = commands.add_parser("search", help="search architectures under a parameter budget (Ray Tune)",
                                 description=SEARCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    search.set_defaults(handler=command_search)
    search.add_argument("image", nargs="?", help="image file or built-in name (required unless --resume)")
    options = search.add_argument_group("search (defaults in search.run_search)")
    options.add_argument("--budget", type=count_type, metavar="N",
                         help="parameters per network at most, such as 273k (default: 272,703, the original 4x300's)")
    options.add_argument("--minutes", type=positive_float, metavar="M", help="wall time of the search (default: 20)")
    options.add_argument("--trials", type=positive_int, metavar="N", help="trials at most (default: as time allows)")
    options.add_argument("--trial-seconds", type=positive_float, metavar="S",
                         help="training seconds a trial may have; ASHA stops most sooner (default: 60)")
    options.add_argument("--seed", type=int,
                         help="every trial's weights and pixel order, and the sampler's (default: 0)")
    add_image_flags(search)
    run = search.add_argument_group("run")
    run.add_argument("--device", choices=DEVICES, help="where trials train (default: auto)")
    run.add_argument("--out", metavar="DIR", help="search directory (default: runs/search-<image>-<time>)")
    run.add_argument("--quiet", action="store_true", help="the results and errors only (Ray's and Optuna's "
                     "messages go to ray.log in the search directory either way)")
    run.add_argument("--resume", metavar="DIR", help="continue a search stopped by Ctrl-C (Ray Tune's restore)")
    run.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    add_ray_flag(run, default="local")


def add_images(commands) -> None:
    commands.add_parser("images", help="list the built-in images").set_defaults(handler=command_images)


def add_render(commands) -> None:
    rend = commands.add_parser("render", help="render a trained run's network at any resolution, or zoomed in")
    rend.set_defaults(handler=command_render)
    rend.add_argument("run", help="run directory")
    rend.add_argument("--scale", type=positive_float, help="times the training image's size (default: 4)")
    rend.add_argument("--size", type=size_type, help="output size, WIDTHxHEIGHT")
    rend.add_argument("--zoom", type=positive_float, help="magnify: show 1/ZOOM of each side of the image")
    rend.add_argument("--center", type=center_type, default=(0.5, 0.5), metavar="ROW,COL",
                      help="centre of the zoomed view, as fractions of height and width (default: 0.5,0.5)")
    rend.add_argument("--device", choices=DEVICES, default="auto")
    rend.add_argument("--out", metavar="FILE", help="output PNG (default: RUN/render-WxH[-zoomZ].png)")
    rend.add_argument("--allow-large", action="store_true", help=READ_LARGE_HELP)


def add_neurons(commands) -> None:
    neur = commands.add_parser("neurons", help="what each unit of one layer computes over the image, as a grid")
    neur.set_defaults(handler=command_neurons)
    neur.add_argument("run", help="run directory (it may still be training: its latest checkpoint is drawn)")
    neur.add_argument("--layer", type=int, default=1, metavar="K",
                      help="hidden layer, 1 the first (0: the encoding; default: 1)")
    neur.add_argument("--tile", type=positive_int, default=DEFAULT_TILE, metavar="PX",
                      help=f"pixels on each unit's longest side (default: {DEFAULT_TILE})")
    neur.add_argument("--device", choices=DEVICES, default="cpu",
                      help="cpu (default) is quicker than starting CUDA for one layer")
    neur.add_argument("--out", metavar="FILE", help="output PNG (default: RUN/neurons-layerK.png); with --animate "
                                                    "a .gif or .mp4, the other kind written beside it")
    neur.add_argument("--animate", action="store_true",
                      help="every unit over the run, from the run's weight snapshots (epochs 0, 1, 2, 3, 5, 8, ...): "
                           "a GIF and an MP4 (default: RUN/neurons-layerK.gif and .mp4)")
    neur.add_argument("--allow-large", action="store_true", help=READ_LARGE_HELP)


def add_serve(commands) -> None:
    srv = commands.add_parser("serve", help="the live lab in the browser: start, watch and compare runs",
                              description="Serve the live lab: a page that trains networks in worker processes "
                                          "and shows them learning. Every run is an ordinary run directory under "
                                          "--runs; the page's JSON API is documented at /docs.")
    srv.set_defaults(handler=command_serve)
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 shares it)")
    srv.add_argument("--port", type=port_type, default=8765, help="port (default: 8765; 0 picks a free one)")
    srv.add_argument("--runs", default="runs", metavar="DIR", help="where runs are kept and found (default: runs)")
    srv.add_argument("--jobs", type=positive_int, default=2, help="runs that train at once; the rest wait (default: 2)")
    srv.add_argument("--open", action="store_true", help="open the page in the default browser")
    srv.add_argument("--allow-large", action="store_true",
                     help=ALLOW_LARGE_HELP + "; the lab's requests can never lift them themselves")


def add_animate(commands) -> None:
    anim = commands.add_parser("animate", help="write a run's animation again: smaller, log-spaced, or after a stop")
    anim.set_defaults(handler=command_animate)
    anim.add_argument("run", help="run directory")
    anim.add_argument("--out", required=True, metavar="FILE", help="output .gif or .mp4")
    anim.add_argument("--width", type=positive_int, help="resize frames to this width (default: as trained)")
    anim.add_argument("--max-frames", type=positive_int, default=120, help="keep at most this many frames")
    anim.add_argument("--spacing", choices=FRAME_SPACINGS, default="even",
                      help="which frames to keep: evenly spaced epochs, or log-spaced (more early ones)")
    anim.add_argument("--fps", type=positive_float, default=12)


def recipe_overrides(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict:
    """The recipe fields the flags set (but those in ``skip``)."""
    overrides = {key: getattr(args, key) for key in RECIPE_FLAGS if key not in skip and getattr(args, key) is not None}
    if "activation" in overrides:  # --activation once: every layer; several times: one per layer
        activations = overrides["activation"]
        overrides["activation"] = activations[0] if len(activations) == 1 else tuple(activations)
    return overrides


def given(args: argparse.Namespace, keys) -> list[str]:
    """Each of ``keys`` the user set, as spelt on the command line ('image' stays a positional's name)."""
    return [key if key == "image" else f"--{key.replace('_', '-')}" for key in keys if getattr(args, key) is not None]


def recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, str]:
    """The preset or recipe file, with flags overriding its fields; and a label for the run's name."""
    if args.preset and args.recipe:
        raise UserError("give --preset or --recipe, not both")
    if args.recipe:
        recipe, label = load_recipe(args.recipe), Path(args.recipe).stem
    else:
        label = args.preset or DEFAULT_PRESET
        recipe = get_preset(label)
    return recipe.replace(**recipe_overrides(args)), label


def command_train(args: argparse.Namespace) -> None:
    if args.resume:
        fixed = given(args, [key for key in RECIPE_FLAGS if key != "epochs"]
                      + ["preset", "recipe", "size", "scale", "out", "image"])
        if fixed:
            raise UserError(f"--resume continues a run as it was recorded; drop {', '.join(fixed)}")
        out = Path(args.resume)
        result = interruptible(f"`monalisa train --resume {out}`", resume_run, args.resume, epochs=args.epochs,
                               device=args.device, quiet=args.quiet)
    else:
        recipe, label = recipe_from_args(args)
        target = run_target(args.image, size=args.size, scale=args.scale)
        out = Path(args.out) if args.out else default_run_path(target.name, label)
        result = interruptible(f"`monalisa train --resume {out}`", train_run, target, recipe, out,
                               device=args.device or "auto", engine=args.engine, frames=args.frames,
                               quiet=args.quiet, preset=label)
    final = result.final
    print(f"{out}: {final['epoch']} epochs, PSNR {final['psnr']:.2f} dB, MAE {final['mae']:.4f}, "
          f"{final['seconds']:.0f} s")


def command_compare(args: argparse.Namespace) -> None:
    if args.resume:
        fixed = given(args, [*RECIPE_FLAGS, "preset", "recipe", "size", "scale", "out", "image"])
        if fixed:
            raise UserError(f"--resume continues a comparison as it was recorded; drop {', '.join(fixed)}")
        out = Path(args.resume)
        target, entries, title = load_comparison(out)
        summary = interruptible(f"`monalisa compare --resume {out}`", run_comparison, target, entries, out,
                                jobs=args.jobs, resume=True, device=args.device or "auto", quiet=args.quiet,
                                title=title, seeds=args.seeds, ray=args.ray)
    else:
        if args.image is None:
            raise UserError("give the IMAGE to compare on, or --resume DIR")
        entries = comparison_entries(args.arch or (), args.preset or (), args.recipe or (),
                                     overrides=recipe_overrides(args, skip=("arch",)))
        target = load_target(args.image, size=args.size, scale=args.scale)
        # default_run_path gives <first>-<second>-<time>: runs/compare-<image>-<time>
        out = Path(args.out) if args.out else default_run_path("compare", target.name)
        summary = interruptible(f"`monalisa compare --resume {out}`", run_comparison, target, entries, out,
                                jobs=args.jobs, device=args.device or "auto", quiet=args.quiet, seeds=args.seeds,
                                ray=args.ray)
    print(out / "report.html")
    print(summary["conclusion"])


def command_study(args: argparse.Namespace) -> None:
    name = args.study
    options = {key: getattr(args, key) for key in STUDY_FLAGS if getattr(args, key) is not None}
    check_study_options(name, options, args.arch)
    base = default_base(name, args.quick).replace(**recipe_overrides(args))
    if args.resume:
        if args.out is not None:
            raise UserError("--resume continues a study in its own directory; drop --out")
        out = Path(args.resume)
        target = load_comparison(out)[0] if args.image is None else load_target(args.image)
    else:
        target = load_target(args.image or DEFAULT_IMAGE)
        # default_run_path gives <first>-<second>-<time>: runs/study-<name>-<image>-<time>
        out = Path(args.out) if args.out else default_run_path(f"study-{name}", target.name)
    again = f"`monalisa study {name} --resume {out}` and the flags it started with"
    summary = interruptible(again, STUDIES[name], target, out, quick=args.quick, base=base, jobs=args.jobs,
                            resume=args.resume is not None, device=args.device or "auto", quiet=args.quiet,
                            seeds=args.seeds, ray=args.ray, **options)
    print(out / "report.html")
    print(summary["conclusion"])
    for claim in summary["claims"]:
        print(f"{VERDICTS[claim['supported']]}: {claim['claim']}")


def command_search(args: argparse.Namespace) -> None:
    from monalisa.experiments.search import (  # Ray Tune loads only for this command
        result_text,
        run_search,  # Ray Tune loads only for this command
    )

    settings = {key: getattr(args, key) for key in ("budget", "minutes", "trials", "trial_seconds", "seed", "device")
                if getattr(args, key) is not None}
    if args.resume:
        fixed = given(args, [*settings, "size", "scale", "out", "image"])
        if fixed:
            raise UserError(f"--resume continues a search as it was started; drop {', '.join(fixed)}")
        out, target, settings = Path(args.resume), None, {}
    else:
        if args.image is None:
            raise UserError("give the IMAGE to search on, or --resume DIR")
        target = load_target(args.image, size=args.size, scale=args.scale)
        # default_run_path gives <first>-<second>-<time>: runs/search-<image>-<time>
        out = Path(args.out) if args.out else default_run_path("search", target.name)
    summary = interruptible(f"`monalisa search --resume {out}`", run_search, target, out, ray=args.ray,
                            resume=args.resume is not None, quiet=args.quiet, **settings)
    best = summary["best"]
    print(out / "report.html")
    print(f"best of {summary['trials']} trials: {best['label']}, {result_text(best)}; "
          f"train it with --recipe {out / 'best-recipe.toml'}")


class Interrupted(Exception):
    pass


def interruptible(how: str, function, /, *args, **kwargs):
    """Run ``function``, turning Ctrl-C into a message that says ``how`` to continue.

    Ctrl-C is recorded as a pause (interrupts.py) and acted on at the next safe point: between the
    training's kernel calls and epochs, in a comparison's wait for its runs; so it never lands in
    the middle of a file or of a compiled library's callback. The ending of a run that has
    trained all its epochs is written whole first."""
    try:
        with interrupts.listening():
            return function(*args, **kwargs)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue with {how}") from None


def command_images(args: argparse.Namespace) -> None:
    from PIL import Image

    for name, builtin in BUILTIN_IMAGES.items():
        with Image.open(builtin_path(name)) as image:
            print(f"{name:22s} {f'{image.width}x{image.height}':9s} {image.mode:4s} {builtin.credit}")


def command_render(args: argparse.Namespace) -> None:
    run = RunDirectory.open(args.run)
    width, height = output_size(run, args.size, args.scale)
    region = Region.zoom(args.zoom or 1.0, args.center)  # zoom 1 is the whole image; --center still checked
    # A zoomed render names its centre too: a second --center must not overwrite the first.
    zoom = f"-zoom{args.zoom:g}-at{args.center[0]:g},{args.center[1]:g}" if args.zoom else ""
    out = Path(args.out) if args.out else run.path / f"render-{width}x{height}{zoom}.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {str(out)!r} must end in .png")
    pixels = render_run(run, width, height, region, device=args.device)
    with write_errors(out):  # a read-only run directory or a full disk: one line, choose another --out
        save_png(pixels, out)
    print(out)


def command_neurons(args: argparse.Namespace) -> None:
    if args.animate:
        out = Path(args.out) if args.out else Path(args.run) / f"neurons-layer{args.layer}.gif"
        if out.suffix.lower() not in (".gif", ".mp4"):
            raise UserError(f"--out {str(out)!r} must end in .gif or .mp4 with --animate")
        gif, mp4 = out.with_suffix(".gif"), out.with_suffix(".mp4")
        with write_errors(out):
            epochs = animate_neurons(args.run, args.layer, gif, mp4, tile=args.tile)
        print(gif)
        print(mp4)
        print(f"layer {args.layer} at epochs {', '.join(map(str, epochs))}")
        return
    grid = run_neurons(args.run, args.layer, tile=args.tile, device=args.device)
    out = args.out or Path(args.run) / f"neurons-layer{args.layer}.png"
    with write_errors(Path(out)):  # a read-only run directory or a full disk: one line, choose another --out
        out = save_neuron_grid(grid, out)
    print(out)
    print(grid.summary)


def command_serve(args: argparse.Namespace) -> None:
    from monalisa.lab.server import serve  # the web stack loads only for this command

    try:
        serve(args.runs, host=args.host, port=args.port, jobs=args.jobs, open_browser=args.open)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a lab is meant to stop (uvicorn passes it on once it has shut down)
    print("monalisa: the lab stopped; its runs are paused, and resume from the page", file=sys.stderr)


def command_animate(args: argparse.Namespace) -> None:
    if args.max_frames < 2:
        raise UserError("--max-frames must be at least 2")
    out = RunDirectory.open(args.run).export_animation(args.out, width=args.width, max_frames=args.max_frames,
                                                        spacing=args.spacing, fps=args.fps)
    print(out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with allowing_large(getattr(args, "allow_large", False)):  # inherited by the runs' processes
            args.handler(args)  # the command_* function its add_* set
        sys.stdout.flush()  # here, where a closed pipe is caught, not in Python's exit
    except UserError as exc:
        print(f"monalisa: error: {exc}", file=sys.stderr)
        return 2
    except Diverged as exc:
        print(f"monalisa: {exc}; everything up to the last full epoch is kept", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"\nmonalisa: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nmonalisa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`monalisa images | head -1`): stop quietly, as Unix tools do. Point
        # stdout at devnull so Python's own flush at exit does not raise again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a tool its reader closed on
    return 0


if __name__ == "__main__":
    sys.exit(main())
