"""``dragkit`` command line: a thin layer over the library. Each sub-command lives in its own module exposing
``add_parser(subparsers)``; errors the user can fix are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _quiet_libraries() -> None:
    """Keep third-party chatter (torchvision fallbacks, deprecations, load bars) off the user's terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")


_quiet_libraries()

from ..types import DragError, EditCancelled  # noqa: E402

# Sub-command modules, in help order. Each defines add_parser(subparsers) that sets ``func`` on its parser.
COMMANDS = ["edit", "bench", "ui", "shapes"]

EXIT_INPUT = 2  # bad input / model that cannot be loaded
EXIT_FAILURE = 1  # anything unexpected


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="dragkit", description="Point-based (drag) image editing with diffusion.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except DragError as exc:
        print(f"dragkit: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except EditCancelled:
        print("dragkit: cancelled", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("dragkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
