"""A run on disk: the run directory, its recorder, the lifecycle of a run, progress, TensorBoard, animation, statuses."""
