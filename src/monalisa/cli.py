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
from .recipes import CHOICES, PRESETS, Recipe, get_preset, load_recipe, parse_arch
from .record import FRAME_SCHEDULES, RunDirectory

# The default run (`monalisa train` alone) halves the built-in image: 256x256
# trains in ~2.5 s an epoch with the original network, so a recognisable
# astronaut appears within a minute or two on a laptop.
DEFAULT_IMAGE_SCALE = 0.5
DEFAULT_PRESET = "quick"

# Flags that set a recipe field: flag dest -> recipe key.
RECIPE_FLAGS = ("arch", "activation", "slope", "output", "init", "init_scale", "optimizer", "lr", "momentum",
                "batch_size", "order", "epochs", "seed")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise UserError(f"{message} (see `{self.prog} --help`)")


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
    recipe = train.add_argument_group("recipe (flags override the preset's fields)")
    recipe.add_argument("--preset", choices=list(PRESETS), help=f"named recipe (default: {DEFAULT_PRESET})")
    recipe.add_argument("--recipe", metavar="FILE", help="recipe file, .json or .toml")
    recipe.add_argument("--arch", type=arch_type, help="hidden layers: DEPTHxWIDTH (4x300) or widths (300,300,100)")
    recipe.add_argument("--activation", choices=CHOICES["activation"], help="hidden activation")
    recipe.add_argument("--slope", type=float, help="leaky rectifier's negative slope")
    recipe.add_argument("--output", choices=CHOICES["output"], help="output activation")
    recipe.add_argument("--init", choices=CHOICES["init"], help="initialisation")
    recipe.add_argument("--init-scale", type=positive_float, help="original init: std = SCALE / sqrt(fan_in + 1)")
    recipe.add_argument("--optimizer", choices=CHOICES["optimizer"])
    recipe.add_argument("--lr", type=positive_float, help="learning rate (sgd/momentum: before fan-in scaling)")
    recipe.add_argument("--momentum", type=float, help="momentum for --optimizer momentum")
    recipe.add_argument("--batch-size", type=positive_int, help="pixels per step; 1 is the original's online SGD")
    recipe.add_argument("--order", choices=CHOICES["order"], help="pixel order each epoch")
    recipe.add_argument("--epochs", type=positive_int, help="epochs in total (with --resume: extends the run)")
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


def command_animate(args: argparse.Namespace) -> None:
    if args.max_frames < 2:
        raise UserError("--max-frames must be at least 2")
    out = RunDirectory.open(args.run).export_animation(args.out, width=args.width, max_frames=args.max_frames,
                                                        spacing=args.spacing, fps=args.fps)
    print(out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        {"train": command_train, "images": command_images, "animate": command_animate}[args.command](args)
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
