"""``dragkit ui``: the interactive web app (Gradio), with the model loaded once at start."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from ..config import configs_with_overrides, default_config, method_names
from ..types import DragError
from .common import add_method_options, add_model_options, config_assignments, load_editor

logger = logging.getLogger(__name__)


def default_lora_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "dragkit" / "lora")


def add_parser(sub) -> None:
    p = sub.add_parser("ui", help="interactive web app",
                       description="Start the web app: dragkit ui --model stable-diffusion-v1-5/stable-diffusion-v1-5 "
                                   "then open http://127.0.0.1:7860")
    srv = p.add_argument_group("server")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    srv.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    srv.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    srv.add_argument("--upload-max-side", "--max-side", dest="upload_max_side", type=int, default=1024,
                     help="uploads with a longer side are downscaled to it (default: %(default)s; --max-side is the "
                          "old name, kept; the working size of an edit is the config's max_side, --set max_side=N)")
    srv.add_argument("--lora-cache", default=default_lora_cache(),
                     help="folder caching identity LoRAs by image content (default: %(default)s); '' disables")
    add_model_options(p)
    add_method_options(p)
    p.set_defaults(func=run)


def method_defaults(args: argparse.Namespace) -> dict:
    """Config shown at start for every method: paper defaults with --lora-steps / --set applied where the method has
    the field (a --set field no method knows is an error)."""
    return configs_with_overrides({m: default_config(m) for m in method_names()}, config_assignments(args))


def run(args: argparse.Namespace) -> int:
    if args.upload_max_side < 64:
        raise DragError("--upload-max-side must be at least 64")
    defaults = method_defaults(args)
    try:
        from ..ui.app import build_app, serve
    except ImportError as exc:
        raise DragError(f"the web app needs gradio: pip install 'dragkit[ui]' ({exc})") from None
    editor = load_editor(args, lora_cache_dir=args.lora_cache or None)
    demo = build_app(editor, defaults, method=args.method, upload_max_side=args.upload_max_side, seed=args.seed)
    logger.info("serving on http://%s:%d", args.host, args.port)
    # A terminated server exits like an interrupted one, so that its work folder is removed (AppContext).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(demo, args.host, args.port, args.share)
    except OSError as exc:
        raise DragError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    return 0
