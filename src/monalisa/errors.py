"""The two ways a run can end early that are not bugs, and how a message shows what the user gave.

``UserError`` is a mistake in what the user asked for (a missing file, an
unknown preset, a malformed ``--arch``): the CLI prints its message as one line
and exits with status 2, no traceback. ``Diverged`` is the training itself
blowing up, which the original experiment also caught and explained.

A message quotes a user's value with ``quoted`` (a short prefix of its repr: a 60 KB
value is not echoed back whole), turns outside text into one line with ``one_line``,
and refuses a name that is not one of the choices with ``unknown_name`` (which points
at a look-alike letter such as the Cyrillic 'е' in 'lеaky_relu').
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable

QUOTED_CHARACTERS = 60  # of a value's repr in a message: a name or a spec fits, a pasted file does not


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


def one_line(text: str, limit: int = 200) -> str:
    """Text for an error message (an exception's, a path from a request) as one short line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def quoted(value, limit: int = QUOTED_CHARACTERS) -> str:
    """``value`` as a message quotes it: its repr, cut to ``limit`` characters with its full length said."""
    if isinstance(value, str) and len(value) > limit:  # cut before repr: a long string is not copied twice
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def unknown_name(kind: str, name, choices: Iterable[str], listing: str = "choose one of") -> UserError:
    """The refusal of ``name`` as a ``kind`` ('activation', 'preset', 'recipe key'), then ``listing`` and the
    valid choices; for a name with a character outside ASCII, which one it is and the choice it looks like."""
    choices = list(choices)
    message = f"unknown {kind} {quoted(name)}"
    odd = next(((i, ch) for i, ch in enumerate(name) if not ch.isascii()), None) if isinstance(name, str) else None
    if odd is not None:
        position, character = odd
        what = unicodedata.name(character, "unnamed character")
        message += (f": it has a non-ASCII character {character!r} (U+{ord(character):04X} {what}) at position "
                    f"{position + 1}")
        # Every choice is ASCII: the closest by letters is the one it was meant to be (a long paste has none).
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6) if len(name) <= 100 else []
        if close:
            return UserError(f"{message}; did you mean {close[0]!r}? {listing.capitalize()}: {', '.join(choices)}")
    return UserError(f"{message}; {listing}: {', '.join(choices)}")
