"""dragkit's user-facing exception, :class:`DragError`, and one-line messages of exceptions: the command line's
errors, a benchmark sample's ``error.json``, model-loading errors and the web app's status all show an exception as
one line. The bottom layer: it imports nothing of dragkit (``dragkit.types.DragError`` is this class)."""

from __future__ import annotations


class DragError(ValueError):
    """A user-facing problem with the input (bad points, mask, file...). Its message is one readable line."""


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first line of ``exc``'s message, or its type name when the message is empty.

    ``with_type``: prefix the type name (``KeyError: 'points'``) unless ``exc`` is a :class:`DragError`, whose message
    is written for the user — for records and logs, where a bare message may say little.
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0]
    return f"{type(exc).__name__}: {line}" if with_type and not isinstance(exc, DragError) else line
