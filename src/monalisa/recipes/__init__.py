"""What to train, as data: the recipe, the registry of components, encodings, limits and sizes."""
