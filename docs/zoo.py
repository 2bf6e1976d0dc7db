"""Make the README's architecture-zoo figure: each preset after the same training time, side by side.

    python docs/zoo.py --seconds 20 --out docs/zoo.png            # the reference image
    python docs/zoo.py --image chelsea --seconds 10 --out zoo.png  # any image

Each panel is the preset's reconstruction after ``--seconds`` of training
(rendering excluded), captioned with the preset, its parameter count and PSNR;
the target is the last panel. Everything is computed here by monalisa's own API.
"""

from __future__ import annotations

import argparse

import numpy as np

from monalisa.data.images import load_target
from monalisa.files import save_png
from monalisa.recipes.recipe import get_preset
from monalisa.runs.animation import caption_frame
from monalisa.training.trainer import Trainer
from monalisa.training.inference import render, to_frame

REFERENCE_IMAGE = "mona_lisa"  # the built-in reference image (README, "Built-in images")
PRESETS = ("original", "rprop-sigmoid", "siren", "fourier", "hashgrid", "fast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=REFERENCE_IMAGE, help="image file or built-in name")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seconds", type=float, default=20.0, help="training seconds per preset")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    target = load_target(args.image)
    panels = []
    for name in args.presets.split(","):
        recipe = get_preset(name).replace(time_limit=args.seconds, epochs=10_000)
        trainer = Trainer(target, recipe)
        trainer.fit()
        frame = to_frame(render(trainer.model, trainer.coords, trainer.device), target.height, target.width)
        psnr = trainer.history[-1]["psnr"]
        print(f"{name:14s} {psnr:6.2f} dB after {trainer.training_seconds():.1f} s, {len(trainer.history)} epochs",
              flush=True)
        panels.append(caption_frame(frame, f"{name}\n{recipe.parameter_count() / 1000:.0f}k params  {psnr:.1f} dB",
                                    min_height=0))
    truth = (target.pixels * 255).round().astype(np.uint8)
    panels.append(caption_frame(truth, f"target\n{target.width}x{target.height}", min_height=0))
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    row = np.concatenate([piece for panel in panels for piece in (panel, gap)][:-1], axis=1)
    save_png(row, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
