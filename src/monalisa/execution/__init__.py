"""Where runs train: run specs, the runner, the worker, local and Ray executors."""
