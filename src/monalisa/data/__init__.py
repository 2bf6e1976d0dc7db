"""What is learnt: images as training targets (and the built-in images' files)."""
