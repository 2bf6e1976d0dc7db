"""The two ways a run can end early that are not bugs.

``UserError`` is a mistake in what the user asked for (a missing file, an
unknown preset, a malformed ``--arch``): the CLI prints its message as one line
and exits with status 2, no traceback. ``Diverged`` is the training itself
blowing up, which the original experiment also caught and explained.
"""


class UserError(Exception):
    """Bad input from the user; the message says what is wrong and how to fix it."""


class Diverged(Exception):
    """Training produced a non-finite or exploding error signal."""

    def __init__(self, epoch: int, detail: str):
        self.epoch = epoch
        self.detail = detail
        super().__init__(
            f"training diverged in epoch {epoch} ({detail}); "
            "shrink the initial weights (e.g. --init original:scale=0.1) or the learning rate (--lr)"
        )
