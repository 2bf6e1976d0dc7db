"""The `monalisa` command: a thin shell that turns arguments into API calls.

Exit status: 0 done; 1 training diverged; 2 a mistake in the input (one line on
stderr, no traceback); 130 interrupted (the run directory resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import Diverged, UserError
from .experiment import default_run_path, resume_run, train_run
from .images import BUILTIN_IMAGES, DEFAULT_IMAGE, builtin_path, load_target, parse_size
from .recipes import ORDERS, PRESETS, Recipe, get_preset, load_recipe, parse_arch
from .registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from .animate import save_png
from .record import FRAME_SCHEDULES, RunDirectory
from .rendering import Region, output_size, render_run

# The default run (`monalisa train` alone) halves the built-in image: 256x256
# trains in ~2.5 s an epoch with the original network, so a recognisable
# astronaut appears within a minute or two on a laptop.
DEFAULT_IMAGE_SCALE = 0.5
DEFAULT_PRESET = "quick"

# Flags that set a recipe field: flag dest -> recipe key.
RECIPE_FLAGS = ("arch", "activation", "output", "encoding", "residual", "init", "optimizer", "lr", "encoding_lr",
                "schedule", "batch_size", "order", "epochs", "until_psnr", "time_limit", "seed")


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="monalisa", description="Watch a deep network learn one image.")
    parser.add_argument("--version", action="version", version=f"monalisa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a network on an image, writing a run directory")
    train.add_argument("image", nargs="?", help=f"image file or built-in name (default: {DEFAULT_IMAGE} at half size)")
    recipe = train.add_argument_group(
        "recipe (flags override the preset's fields; components are specs: NAME or NAME:key=value,...)")
    recipe.add_argument("--preset", choices=list(PRESETS), help=f"named recipe (default: {DEFAULT_PRESET})")
    recipe.add_argument("--recipe", metavar="FILE", help="recipe file, .json or .toml")
    recipe.add_argument("--arch", type=arch_type, help="hidden layers: DEPTHxWIDTH (4x300) or widths (300,300,100)")
    recipe.add_argument("--activation", action="append", metavar="SPEC",
                        help=f"hidden activation, once for all layers or once per layer: {names(ACTIVATIONS)}")
    recipe.add_argument("--output", metavar="SPEC", help=f"output activation: {names(OUTPUTS)}")
    recipe.add_argument("--encoding", metavar="SPEC", help=f"input encoding: {names(ENCODINGS)}")
    recipe.add_argument("--residual", action=argparse.BooleanOptionalAction,
                        help="skip connections around equal-width hidden layers")
    recipe.add_argument("--init", metavar="SPEC", help=f"initialisation: {names(INITS)}")
    recipe.add_argument("--optimizer", metavar="SPEC", help=f"optimiser: {names(OPTIMIZERS)}")
    recipe.add_argument("--lr", type=positive_float, help="learning rate (sgd/momentum: before fan-in scaling)")
    recipe.add_argument("--encoding-lr", type=positive_float, help="the encoding's own learning rate")
    recipe.add_argument("--schedule", metavar="SPEC", help=f"learning-rate schedule: {names(SCHEDULES)}")
    recipe.add_argument("--batch-size", type=positive_int, help="pixels per step; 1 is the original's online SGD")
    recipe.add_argument("--order", choices=ORDERS, help="pixel order each epoch")
    recipe.add_argument("--epochs", type=positive_int, help="epochs in total (with --resume: extends the run)")
    recipe.add_argument("--until-psnr", type=positive_float, metavar="DB", help="stop once the PSNR reaches DB")
    recipe.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                        help="stop after this much training time")
    recipe.add_argument("--seed", type=int, help="initial weights and pixel order")
    image = train.add_argument_group("image")
    image.add_argument("--size", type=size_type, help="train on a resized copy, WIDTHxHEIGHT")
    image.add_argument("--scale", type=positive_float, help="train on a copy scaled by this factor")
    run = train.add_argument_group("run")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    run.add_argument("--engine", choices=["auto", "online", "batched"], default="auto",
                     help="auto: the exact compiled online engine when the recipe allows, else batched PyTorch")
    run.add_argument("--frames", choices=FRAME_SCHEDULES, default="all", help="a frame every epoch, or log-spaced")
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/<image>-<preset>-<time>)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--resume", metavar="RUN", help="continue a stopped run directory")

    commands.add_parser("images", help="list the built-in images")

    rend = commands.add_parser("render", help="render a trained run's network at any resolution, or zoomed in")
    rend.add_argument("run", help="run directory")
    rend.add_argument("--scale", type=positive_float, help="times the training image's size (default: 4)")
    rend.add_argument("--size", type=size_type, help="output size, WIDTHxHEIGHT")
    rend.add_argument("--zoom", type=positive_float, help="magnify: show 1/ZOOM of each side of the image")
    rend.add_argument("--center", type=center_type, default=(0.5, 0.5), metavar="ROW,COL",
                      help="centre of the zoomed view, as fractions of height and width (default: 0.5,0.5)")
    rend.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    rend.add_argument("--out", metavar="FILE", help="output PNG (default: RUN/render-WxH[-zoomZ].png)")

    anim = commands.add_parser("animate", help="write a run's animation again: smaller, log-spaced, or after a stop")
    anim.add_argument("run", help="run directory")
    anim.add_argument("--out", required=True, metavar="FILE", help="output .gif or .mp4")
    anim.add_argument("--width", type=positive_int, help="resize frames to this width (default: as trained)")
    anim.add_argument("--max-frames", type=positive_int, default=120, help="keep at most this many frames")
    anim.add_argument("--spacing", choices=["even", "log"], default="even",
                      help="which frames to keep: evenly spaced epochs, or log-spaced (more early ones)")
    anim.add_argument("--fps", type=positive_float, default=12)
    return parser


def recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, str]:
    """The preset or recipe file, with flags overriding its fields; and a label for the run's name."""
    if args.preset and args.recipe:
        raise UserError("give --preset or --recipe, not both")
    if args.recipe:
        recipe, label = load_recipe(args.recipe), Path(args.recipe).stem
    else:
        label = args.preset or DEFAULT_PRESET
        recipe = get_preset(label)
    overrides = {key: getattr(args, key) for key in RECIPE_FLAGS if getattr(args, key) is not None}
    if "activation" in overrides:  # --activation once: every layer; several times: one per layer
        activations = overrides["activation"]
        overrides["activation"] = activations[0] if len(activations) == 1 else tuple(activations)
    return recipe.replace(**overrides), label


def command_train(args: argparse.Namespace) -> None:
    if args.resume:
        fixed = [f"--{key.replace('_', '-')}" for key in RECIPE_FLAGS if key != "epochs" and getattr(args, key) is not None]
        fixed += [flag for flag, value in (("--preset", args.preset), ("--recipe", args.recipe), ("--size", args.size),
                                           ("--scale", args.scale), ("--out", args.out), ("image", args.image)) if value]
        if fixed:
            raise UserError(f"--resume continues a run as it was recorded; drop {', '.join(fixed)}")
        out = Path(args.resume)
        result = interruptible(out, resume_run, args.resume, epochs=args.epochs, device=args.device,
                               quiet=args.quiet)
    else:
        recipe, label = recipe_from_args(args)
        source = args.image or DEFAULT_IMAGE
        scale = args.scale
        if args.image is None and args.size is None and scale is None:
            scale = DEFAULT_IMAGE_SCALE
        target = load_target(source, size=args.size, scale=scale)
        out = Path(args.out) if args.out else default_run_path(target.name, label)
        result = interruptible(out, train_run, target, recipe, out, device=args.device or "auto",
                               engine=args.engine, frames=args.frames, quiet=args.quiet, preset=label)
    final = result.final
    print(f"{out}: {final['epoch']} epochs, PSNR {final['psnr']:.2f} dB, MAE {final['mae']:.4f}, "
          f"{final['seconds']:.0f} s")


class Interrupted(Exception):
    pass


def interruptible(out: Path, function, *args, **kwargs):
    """Run ``function``, turning Ctrl-C into a message that names the directory to resume."""
    try:
        return function(*args, **kwargs)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; continue with `monalisa train --resume {out}`") from None


def command_images(args: argparse.Namespace) -> None:
    from PIL import Image

    for name in BUILTIN_IMAGES:
        with Image.open(builtin_path(name)) as image:
            print(f"{name:22s} {image.width}x{image.height} {image.mode}")


def command_render(args: argparse.Namespace) -> None:
    run = RunDirectory.open(args.run)
    width, height = output_size(run, args.size, args.scale)
    region = Region.zoom(args.zoom or 1.0, args.center)  # zoom 1 is the whole image; --center still checked
    zoom = f"-zoom{args.zoom:g}" if args.zoom else ""
    out = Path(args.out) if args.out else run.path / f"render-{width}x{height}{zoom}.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {str(out)!r} must end in .png")
    save_png(render_run(run, width, height, region, device=args.device), out)
    print(out)


def command_animate(args: argparse.Namespace) -> None:
    if args.max_frames < 2:
        raise UserError("--max-frames must be at least 2")
    out = RunDirectory.open(args.run).export_animation(args.out, width=args.width, max_frames=args.max_frames,
                                                        spacing=args.spacing, fps=args.fps)
    print(out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        {"train": command_train, "images": command_images, "animate": command_animate,
         "render": command_render}[args.command](args)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
