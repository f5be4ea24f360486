"""One-line messages of exceptions: the command line's errors, a benchmark sample's ``error.json``, model-loading
errors and the web app's status all show an exception as one line."""

from __future__ import annotations

from .types import DragError


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
