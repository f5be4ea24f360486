"""Options and helpers shared by the sub-commands that run edits (edit, bench, ui)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from ..config import apply_overrides, default_config, method_names
from ..hub import DEFAULT_MODEL
from ..io import DEFAULT_MAX_PIXELS, atomic_paths, positive_int
from ..types import DragError, ProgressEvent, stage_label

SHAPES_MODEL = "shapes"  # --model shapes: the toy model shipped inside dragkit (dragkit/shapes/weights)
SHAPES_XL_MODEL = "shapes-xl"  # --model shapes-xl: its SDXL-architecture twin (dragkit/shapes/weights_xl)


THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (every command has it, added by :func:`dragkit.cli.build_parser`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: 1, or OMP_NUM_THREADS when set; 0 = torch's choice, one "
                             "per core). On a 2-core machine busy with other work, one thread was 14x faster than "
                             "two (README: CPU threads)")


def default_threads() -> int:
    """The CPU threads when ``--threads`` is not given: OMP_NUM_THREADS when set, else 1 — on a busy machine more
    threads than free cores wait on each other (a 10+10-step shapes edit: 87 s at torch's 2 threads, 6 s at 1,
    load 5-6 on 2 cores); an idle many-core machine gains from ``--threads 0`` (torch's choice, one per core)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 1


def apply_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads for this process (``threads``; None = :func:`default_threads`; 0 = torch's choice)
    — for threads started later too (the web app's edits run in worker threads): the OpenMP variables are set
    before torch is imported, and torch's own count when it already is."""
    n = default_threads() if threads is None else threads
    if n < 0:
        raise DragError(f"--threads {n}: use a positive count, or 0 for torch's choice")
    if n == 0:
        return
    for name in THREADS_ENV:
        os.environ[name] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def add_model_options(parser: argparse.ArgumentParser, default_model: Optional[str] = DEFAULT_MODEL,
                      default_model_help: str = "%(default)s") -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default_model,
                   help=f"Hub id, local diffusers folder, single-file .safetensors, or '{SHAPES_MODEL}' / "
                        f"'{SHAPES_XL_MODEL}' (the small offline SD / SDXL-architecture models shipped with dragkit) "
                        f"(default: {default_model_help})")
    g.add_argument("--model-config", default=None,
                   help="local diffusers config folder for a single-file checkpoint (needed offline)")
    g.add_argument("--vae", default=None, help="optional separate VAE (Hub id, folder or .safetensors)")
    g.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: the best available)")
    g.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                   help="weights dtype; the optimised latent, Adam state and LoRA weights stay fp32 (default: fp16 on "
                        "CUDA/MPS, bf16 on other accelerators, fp32 on CPU)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (inductor): slow first edits, faster later ones (default: off)")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle-based checkpoints (.ckpt/.bin/.pt), which can run code when loaded")
    g.add_argument("--style-lora", default=None, metavar="FILE",
                   help="a style LoRA (.safetensors) applied to everything the model does (generation and drag)")
    g.add_argument("--style-lora-scale", type=float, default=1.0, help="its strength (default: %(default)s)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("method")
    g.add_argument("--method", default="dragdiffusion", choices=method_names(),
                   help="drag method (default: %(default)s)")
    g.add_argument("--lora-steps", type=int, default=None, help="identity-LoRA steps (0 skips LoRA)")
    g.add_argument("--seed", type=int, default=0, help="seed of the LoRA noise (default: %(default)s)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field by name, e.g. --set latent_lr=0.02 (repeatable; --fields lists "
                        "them)")
    g.add_argument("--fields", action=ListFields, help="list every method's config fields (default, help) and exit")


class ListFields(argparse.Action):
    """``--fields``: each method's config fields with their paper defaults and help (from the fields' metadata)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import dataclasses

        from ..config import METHODS, field_help

        for method, cls in METHODS.items():
            print(f"{method}:")
            defaults, helps = cls(), field_help(cls)
            for f in dataclasses.fields(cls):
                print(f"  {f.name} = {getattr(defaults, f.name)!r}  # {helps[f.name]}")
        parser.exit()


def config_assignments(args: argparse.Namespace) -> list[str]:
    """The FIELD=VALUE assignments of the method options: ``--lora-steps N`` first, then every ``--set``."""
    lora = [f"lora_steps={args.lora_steps}"] if args.lora_steps is not None else []
    return lora + list(args.overrides)


def build_config(args: argparse.Namespace, method: Optional[str] = None):
    """The config of ``method`` (default: ``--method``): its paper defaults with the method options applied."""
    return apply_overrides(default_config(method or args.method), config_assignments(args))


def add_max_pixels_option(group) -> None:
    group.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help="refuse images of more than N pixels before decoding them (default: %(default)s = "
                            "4096x4096)")


def resolve_model(name: Optional[str]) -> Optional[str]:
    """``--model``: the names ``shapes`` and ``shapes-xl`` are the toy models shipped with dragkit, wherever it is
    installed (a local folder of that name is ``./shapes``); anything else is passed on as given."""
    if name in (SHAPES_MODEL, SHAPES_XL_MODEL):
        from ..shapes.model import default_model_path

        return default_model_path(xl=name == SHAPES_XL_MODEL)
    return name


def same_model(a: str, b: str) -> bool:
    """Whether two model arguments name the same model: equal Hub ids, the same folder or file, or both the shipped
    shapes model (``.../dragkit/shapes/weights``, wherever dragkit was installed when it was recorded)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return any(pa.parts[-2:] == tail and pb.parts[-2:] == tail for tail in _SHIPPED.values())


def generation_model(given: Optional[str], recorded: str) -> str:
    """The model to drag a generated image with: the one recorded with the generation, unless ``--model`` names
    another (then one line refuses it: the saved latents only make sense to the model that made them)."""
    if given is None:
        if not recorded:
            return DEFAULT_MODEL
        for name in (SHAPES_MODEL, SHAPES_XL_MODEL):  # recorded on another install: this install's copy
            if not Path(recorded).exists() and same_model(recorded, f"dragkit/{'/'.join(_SHIPPED[name])}"):
                return name
        return recorded
    if recorded and not same_model(resolve_model(given), recorded):
        raise DragError(f"--model {given}: the image was generated with {recorded}; drag it with that model (leave "
                        "out --model) or drop --generated to edit it as a photo")
    return given


_SHIPPED = {SHAPES_MODEL: ("shapes", "weights"), SHAPES_XL_MODEL: ("shapes", "weights_xl")}


def load_editor(args: argparse.Namespace, lora_cache_dir: Optional[str] = None):
    """The editor of the model options, after a check that ``--device`` exists here (one line naming what does)."""
    from ..checks import check_device
    from ..editor import DragEditor

    check_device(args.device)
    return DragEditor.from_pretrained(resolve_model(args.model), vae=args.vae, device=args.device, dtype=args.dtype,
                                      config=args.model_config, allow_pickle=args.allow_pickle,
                                      style_lora=args.style_lora, style_lora_scale=args.style_lora_scale,
                                      compile=getattr(args, "compile", False), lora_cache_dir=lora_cache_dir)


def write_outputs(writers: dict[str, Callable[[Path], None]]) -> None:
    """One transaction for all the files of a command: ``writers`` maps each output path to a function writing it
    at a temporary path; all appear together or none does (an OS error becomes one line)."""
    paths = list(writers)
    try:
        with atomic_paths(*paths) as temps:
            for path, tmp in zip(paths, temps):
                writers[path](tmp)
    except OSError as exc:
        raise DragError(f"cannot write {exc.filename or ', '.join(paths)}: {exc.strerror or exc}; nothing was "
                        "written") from None


class ProgressBars:
    """A progress callback drawing one tqdm bar per stage (LoRA, inversion, optimisation, denoising)."""


    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.stage = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=stage_label(event.stage), leave=False)
        self.bar.n = event.step
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
