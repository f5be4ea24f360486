"""``dragkit`` command line: a thin layer over the library. Each sub-command lives in its own module exposing
``add_parser(subparsers)``; errors the user can fix are one line on stderr and a non-zero exit.

Importing this package changes nothing global and loads no model library (torch, diffusers): ``dragkit --help`` and
every ``dragkit COMMAND --help`` stay light; a command's ``run`` imports what it needs. :func:`main` quiets the
third-party libraries before running a command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

# Sub-command modules, in help order. Each defines add_parser(subparsers) that sets ``func`` on its parser.
COMMANDS = ["generate", "edit", "bench", "ui", "shapes"]

EXIT_INPUT = 2  # bad input / model that cannot be loaded
EXIT_FAILURE = 1  # anything unexpected


EPILOG = ("First edit, offline (the toy model shipped with dragkit): dragkit shapes example --out scene.png, then "
          "the command it prints.")


def build_parser() -> argparse.ArgumentParser:
    from .common import add_threads_option

    parser = argparse.ArgumentParser(prog="dragkit", description="Point-based (drag) image editing with diffusion.",
                                     epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    for leaf in _leaves(parser):  # every command: -v after it too, and --threads (once, here)
        leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log what happens (to stderr)")
        if "--threads" not in leaf._option_string_actions:
            add_threads_option(leaf)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run (``edit``, ``bench shapes``, …), below ``parser``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaves(p)]


def quiet_libraries(verbose: bool = False) -> None:
    """Keep third-party chatter (torchvision fallbacks, deprecations, load bars) off the user's terminal; with
    ``verbose``, log dragkit's steps at INFO."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")  # huggingface_hub, on a cache lookup
    warnings.filterwarnings("ignore", module=r"PIL\.")  # a broken file is reported once, as dragkit's one line
    if not verbose:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()


# Options whose value may start with "-" (a negative coordinate or factor): "--drag -1,10:5,5" is read as
# "--drag=-1,10:5,5" instead of argparse's "expected one argument".
SIGNED_VALUE_OPTIONS = ("--drag", "--freeu")


def join_signed_values(argv: list[str]) -> list[str]:
    """``argv`` with each ``OPTION -VALUE`` of :data:`SIGNED_VALUE_OPTIONS` written as ``OPTION=-VALUE`` when the
    value starts like a number ("-1,…", "-.5,…")."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if token in SIGNED_VALUE_OPTIONS and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == "."):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run one command; Ctrl-C at any moment — the first seconds' imports included — is one line and exit 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("dragkit: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from ..errors import first_line
    from ..types import DragError, EditCancelled
    from .common import apply_threads

    argv = join_signed_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        apply_threads(getattr(args, "threads", None))  # before the command imports torch
        quiet_libraries(args.verbose)
        return int(args.func(args) or 0)
    except DragError as exc:
        print(f"dragkit: error: {first_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except EditCancelled:
        print("dragkit: cancelled", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
