"""The image as a function of its coordinates, on monalisa's Python API alone.

A network learns (row, col) -> (R, G, B) for every pixel of the Mona Lisa; after each epoch the
whole image is rendered from the network, so the frames show it emerge (as tiny-cuda-nn's
`samples/mlp_learning_an_image_pytorch.py` does on a GPU). Run it from a checkout:

    python examples/minimal.py [--epochs 15] [--out minimal-frames]

It writes one PNG a few epochs apart, then the last; the numbers printed are the PSNR of the
raw output against the image (dB, higher is better).
"""

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from monalisa import Callback, Trainer, get_preset, load_target


class SaveFrames(Callback):
    """After every ``every``-th epoch (and the last) the rendered frame as a PNG; the step's time
    printed beside it. The render is the trainer's, outside the training time it reports."""

    def __init__(self, out: Path, every: int):
        self.out, self.every = out, every

    def on_epoch(self, trainer, row, frame: np.ndarray) -> None:
        last = row["epoch"] == trainer.recipe.epochs
        if row["epoch"] % self.every == 0 or last:
            Image.fromarray(frame).save(self.out / f"epoch-{row['epoch']:03d}.png")
        print(f"epoch {row['epoch']:3d}  {row['psnr']:5.2f} dB  training {row['train_seconds']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("minimal-frames"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    target = load_target("mona_lisa")  # (429, 300, 3) floats in [0, 1]; coords are (row, col) in [-1, 1]
    # `fast`: a multiresolution hash grid feeding one hidden layer of 32 ReLUs, Adam on batches of
    # 8,192 pixels (recipes/recipe.py says where each number comes from). Any preset or Recipe works.
    recipe = get_preset("fast").replace(epochs=args.epochs)
    trainer = Trainer(target, recipe, device="auto")  # cuda when there is one
    started = time.perf_counter()
    result = trainer.fit(callbacks=[SaveFrames(args.out, every=5)])
    print(f"{result.final['psnr']:.2f} dB after {len(result.history)} epochs, "
          f"{time.perf_counter() - started:.1f} s; frames in {args.out}/")


if __name__ == "__main__":
    main()
