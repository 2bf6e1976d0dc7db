"""fit(): the trainer, its callbacks, the render after each epoch, per-layer dynamics."""
