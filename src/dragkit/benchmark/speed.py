"""Per-stage wall time, peak memory and UNet forward/backward counts of an edit (LoRA, inversion, optimisation,
denoising), for every method; with ``--warm``, a cold edit, the preparation and warm re-edits in one process.

    dragkit bench speed                          # tiny offline model, CPU, 512×512, paper defaults
    dragkit bench speed --warm --threads 1       # + prepare and a warm re-edit (new points) per method
    dragkit bench speed --arch sd15 --device cuda --warmup --warm   # full-size SD-1.5, random weights (GPU)
    dragkit bench speed --arch sd15 --device cuda --dtype bf16 --compile --warm   # torch.compile (inductor)
    dragkit bench speed --arch sdxl --size 1024 --device cuda --dtype fp16   # full-size SDXL architecture
    dragkit bench speed --model PATH_OR_HUB_ID   # any real model
    dragkit bench speed --generated --sizes 768x512,512x1024   # generation + generated-image drag
    dragkit bench speed --flops --arch sd15 --size 512   # TFLOP per stage, every method (meta device)

Cost does not depend on weight values, so ``--arch sd15`` (the real SD-1.5 UNet/VAE/CLIP sizes with random
weights, built offline) is a valid speed and memory benchmark.

Runs (``--warm``): **cold** = ``editor.edit(request, config)`` from scratch (identity LoRA, inversion, drag,
denoising); **prepare** = ``editor.prepare(image, prompt, config)`` (what the web app does in the background when an
image is set: posterior, LoRA, inversion); **warm** = ``editor.edit(request2, config, prepared=…)`` with other
points (only the drag and the denoising run; GoodDrag's undragged trajectory is filled by the first re-edit and
reused from ``--reedits 2`` on). With ``--compile`` the cold edit includes the compilation.

Per stage (the stages the editor reports to a :class:`dragkit.types.StageObserver`, :meth:`DragEditor.observe`):
wall seconds (the editor's own timings), peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the
process's peak RSS from ``/proc/self/status`` VmHWM, reset at each stage boundary, else ``resource.getrusage``'s
ru_maxrss, the process's peak so far) and UNet calls (:class:`UNetCallCounter`) — ``fwd/bwd``: forwards (one per call, whatever the batch)
and backward passes through the UNet; ``+Np``: partial forwards that stopped at the feature block (DragDiffusion
without the mask term, ``--no-mask``). Calls are counted by forward hooks on the UNet (run eagerly under
``torch.compiler.disable``, so a compiled UNet keeps its graph), backwards by a gradient hook on the UNet's output and
on its input latent, once per forward.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import (GenerationConfig, apply_overrides, config_fields, configs_with_overrides, default_config,
                      method_names)
from ..editor import DragEditor
from ..models import DiffusionModel, compile_unet, select_device, select_dtype
from ..types import EDIT_STAGES, DragRequest, ProgressEvent, Stage
from .speed_options import MAX_REEDITS, add_arguments  # the CLI's options, importable without torch

STAGES = tuple(EDIT_STAGES)
GENERATED_STAGES = (Stage.GENERATION, Stage.OPTIMIZATION, Stage.DENOISING)
# (handle, target) as fractions of the side: the cold edit's, then one per warm re-edit (other points each time).
COLD_POINTS = ((0.4, 0.5), (0.6, 0.5))
WARM_POINTS = (((0.45, 0.45), (0.6, 0.35)), ((0.35, 0.55), (0.5, 0.65)), ((0.5, 0.4), (0.65, 0.45)))
assert len(WARM_POINTS) == MAX_REEDITS


def _no_calls() -> dict:
    return {"forward": 0, "partial": 0, "backward": 0}


class _CountBackward(torch.autograd.Function):
    """Identity on the UNet's input latent; its backward counts the pass (once per forward, with the output's)."""

    @staticmethod
    def forward(ctx, sample, reached):
        ctx.reached = reached
        return sample.view_as(sample)

    @staticmethod
    def backward(ctx, grad):
        ctx.reached()
        return grad, None


class UNetCallCounter:
    """UNet calls by stage, while the ``with`` block runs: forwards that returned, partial forwards that ended at the
    feature block (``FeaturesReady``: the forward hook is ``always_call`` and sees no output) and backward passes.

    Only public hooks: a forward pre-hook and an ``always_call`` forward hook on the UNet (removed on exit; nothing
    else on the module is changed), both run eagerly under ``torch.compiler.disable`` so a compiled UNet keeps its
    graph (it is compiled once more with the hooks on: dynamo guards on module hooks). A backward is counted when a
    gradient first reaches the forward's output (a hook on the output tensor) or its input latent (the pre-hook passes
    the latent through an identity whose backward counts: a partial forward's features lead back to it), once per
    forward. ``stage`` (a callable) names the stage a call is counted under.

    >>> with UNetCallCounter(unet) as counter:
    ...     unet(sample, t, text)
    >>> counter.calls["other"]["forward"]
    1
    """

    def __init__(self, unet: torch.nn.Module, stage=lambda: "other"):
        self.unet, self.stage, self.calls = unet, stage, {}
        self._handles: list = []
        self._pending: list = []  # the current forwards' "reached" flags (a stack: UNet calls do not nest, but safe)

    def reset(self):
        self.calls = {}

    def _count(self, kind: str, calls: dict | None = None) -> dict:
        calls = calls if calls is not None else self.calls.setdefault(self.stage(), _no_calls())
        calls[kind] += 1
        return calls

    def _reached(self, calls: dict):
        done = []

        def reached(*_):
            if not done:
                done.append(True)
                calls["backward"] += 1
        return reached

    def _pre(self, module, args, kwargs):
        calls = self.calls.setdefault(self.stage(), _no_calls())
        reached = self._reached(calls)
        self._pending.append((calls, reached))
        if not torch.is_grad_enabled():
            return None
        if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            return (_CountBackward.apply(args[0], reached), *args[1:]), kwargs
        sample = kwargs.get("sample")
        if isinstance(sample, torch.Tensor) and sample.requires_grad:
            return args, {**kwargs, "sample": _CountBackward.apply(sample, reached)}
        return None

    def _post(self, module, args, kwargs, output):
        calls, reached = self._pending.pop() if self._pending else (self.calls.setdefault(self.stage(), _no_calls()),
                                                                    None)
        if output is None:  # the forward raised: a partial forward (or an error, counted alike)
            calls["partial"] += 1
            return None
        calls["forward"] += 1
        sample = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if reached is not None and isinstance(sample, torch.Tensor) and sample.requires_grad:
            sample.register_hook(reached)
        return None

    def __enter__(self) -> "UNetCallCounter":
        self._handles = [
            self.unet.register_forward_pre_hook(torch.compiler.disable(self._pre), with_kwargs=True),
            self.unet.register_forward_hook(torch.compiler.disable(self._post), with_kwargs=True, always_call=True)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles, self._pending = [], []
        return False


def _read_hwm_mib() -> float | None:
    """The process's peak RSS since the last reset (Linux ``VmHWM``), None where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset Linux's peak RSS to the current RSS (``/proc/self/clear_refs`` 5); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_peak_mib() -> float:
    hwm = _read_hwm_mib()
    if hwm is not None:
        return hwm
    import resource  # Unix only

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024)


class StageProbe:
    """Attributes wall time, peak memory and UNet calls to the stage that is running, and records each stage's last
    progress step (it is the edit's progress callback). A :class:`dragkit.types.StageObserver`: the editor tells it
    of every stage (:meth:`DragEditor.observe`, entered by :meth:`watching`); the stage is the innermost one entered,
    "total" aside; outside any stage, "other"."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._stack: list[str] = []
        self.counter: UNetCallCounter | None = None
        self.peaks: dict[str, float] = {}
        self.start()

    @contextlib.contextmanager
    def watching(self, editor: DragEditor):
        """Observe ``editor``'s stages and count its UNet's calls while the block runs."""
        with editor.observe(self), UNetCallCounter(editor.model.unet, lambda: self.stage) as self.counter:
            self.start()
            yield self
        self.counter = None

    # --- a measured run ---------------------------------------------------------------------------------------
    def start(self):
        """A new run: forget the peaks, calls, steps and stage seconds measured so far."""
        self.peaks, self.steps, self.seconds = {}, {}, {}
        if self.counter is not None:
            self.counter.reset()
        self._reset_peak()

    @property
    def calls(self) -> dict:
        return self.counter.calls if self.counter is not None else {}

    def finish(self):
        self._close_segment()

    def __call__(self, event: ProgressEvent):
        self.steps[event.stage] = max(self.steps.get(event.stage, 0), event.step)

    # --- stages (StageObserver) -------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        return next((str(s) for s in reversed(self._stack) if s != Stage.TOTAL), "other")

    def stage_entered(self, stage: Stage) -> None:
        self._close_segment()
        self._stack.append(stage)

    def stage_exited(self, stage: Stage, seconds: float) -> None:
        self._close_segment()
        self._stack.pop()
        if stage not in self._stack:
            self.seconds[str(stage)] = self.seconds.get(str(stage), 0.0) + seconds

    # --- memory -----------------------------------------------------------------------------------------------
    def _reset_peak(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            _reset_hwm()

    def _close_segment(self):
        """The peak since the last boundary goes to the stage that was running."""
        if self.device.type == "cuda":
            mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.device.type == "cpu" and self._stack:
            mib = _cpu_peak_mib()
        else:
            return self._reset_peak()
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), mib)
        self._reset_peak()


def sd15_pipeline(device=None):
    """SD-1.5's UNet, VAE and CLIP-L text encoder at full size with random weights (no download), built on
    ``device`` (default: torch's; ``"meta"``: shapes only, for :func:`count_flops`) into the tiny pipeline's
    scheduler and tokenizer."""
    from dragkit.testing import build_tiny_pipeline

    torch.manual_seed(0)
    with torch.device(device) if device else contextlib.nullcontext():
        unet, vae, text = _sd15_modules()
    pipe = build_tiny_pipeline()
    pipe.unet, pipe.vae, pipe.text_encoder = unet, vae, text
    return pipe


def _sd15_modules():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dragkit.tokenizer import VOCAB_SIZE

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=512, eos_token_id=513, pad_token_id=513))
    return unet, vae, text


def build_sd15_random(device, dtype) -> DiffusionModel:
    """:func:`sd15_pipeline` on ``device`` in ``dtype``."""
    return DiffusionModel.from_pipeline(sd15_pipeline().to(device, dtype), name="sd15-architecture-random")


def sdxl_pipeline(device=None):
    """SDXL base's UNet (2.6 B), VAE (scaling 0.13025, force_upcast) and both text encoders (CLIP-L 768 and
    OpenCLIP-bigG 1280 with projection) at full size with random weights (no download), built on ``device`` (as
    :func:`sd15_pipeline`)."""
    from dragkit.testing import build_tiny_sdxl_pipeline

    torch.manual_seed(0)
    with torch.device(device) if device else contextlib.nullcontext():
        unet, vae, text_1, text_2 = _sdxl_modules()
    pipe = build_tiny_sdxl_pipeline()
    pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2 = unet, vae, text_1, text_2
    return pipe


def _sdxl_modules():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dragkit.tokenizer import VOCAB_SIZE

    unet = UNet2DConditionModel(
        sample_size=128, cross_attention_dim=2048, attention_head_dim=(5, 10, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.13025, force_upcast=True, sample_size=1024)

    def text(hidden, layers, heads, **kw):
        return CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                              bos_token_id=512, eos_token_id=513, pad_token_id=513, **kw)

    return unet, vae, CLIPTextModel(text(768, 12, 12)), CLIPTextModelWithProjection(text(1280, 32, 20,
                                                                                          projection_dim=1280))


def build_sdxl_random(device, dtype) -> DiffusionModel:
    """:func:`sdxl_pipeline` on ``device`` in ``dtype``."""
    return DiffusionModel.from_pipeline(sdxl_pipeline().to(device, dtype), name="sdxl-architecture-random")


def test_image(size: int) -> tuple[Image.Image, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(8 * xx) * np.cos(6 * yy)], -1)
    disc = (xx - 0.4) ** 2 + (yy - 0.5) ** 2 < 0.02
    rgb[disc] = [0.9, 0.2, 0.1]
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 5: 4 * size // 5] = 1
    return Image.fromarray((rgb * 255).astype(np.uint8)), mask


def load_model(args, device, dtype) -> DiffusionModel:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arch == "sd15":
        return build_sd15_random(device, dtype)
    if args.arch == "sdxl":
        return build_sdxl_random(device, dtype)
    if args.model:
        return DiffusionModel.from_pretrained(args.model, device=str(device), dtype=dtype)
    from dragkit.testing import build_tiny_pipeline

    return DiffusionModel.from_pipeline(build_tiny_pipeline().to(device, dtype), name="tiny-random")


def method_configs(args) -> dict:
    """Every requested method's paper config with the --set assignments that name one of its fields."""
    return configs_with_overrides({m: default_config(m) for m in args.method or method_names()}, args.overrides)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Rows(list):
    """The rows so far, written to --json after each one (a run stopped by a timeout keeps what it finished); with
    ``append`` (--append), after the rows the file already holds."""

    def __init__(self, path, append: bool = False):
        super().__init__()
        self.path = path
        self.kept = 0  # rows of an earlier run (--append): in the file, not in this run's table
        if path and append and Path(path).exists():
            self.kept = len(earlier := json.loads(Path(path).read_text()))
            self.extend(earlier)

    def add(self, row: dict):
        self.append(row)
        logging.info("%s", json.dumps(row))
        if self.path:  # whole or not at all: a timeout may strike at any moment
            part = Path(f"{self.path}.part")
            part.write_text(json.dumps(self, indent=1))
            os.replace(part, self.path)


def _base(args, method: str, run: str, model: DiffusionModel, device) -> dict:
    """The fields every row of a run has."""
    return {"method": method, "run": run, "model": model.name, "device": str(device),
            "dtype": str(model.dtype).replace("torch.", ""), "compile": args.compile, "size": args.size,
            "threads": torch.get_num_threads(), "mask": not args.no_mask}


def _measured(probe: StageProbe, stages) -> dict:
    return {"peak_mib": {k: round(probe.peaks.get(k, 0.0), 1) for k in stages},
            "unet": {k: dict(probe.calls.get(k, _no_calls())) for k in stages},  # copies: counting goes on
            "steps": {k: probe.steps.get(k, 0) for k in stages}}


def _edit_row(base: dict, result, probe: StageProbe) -> dict:
    return {**base, "seconds": {k: round(result.timings.get(k, 0.0), 3) for k in (*STAGES, Stage.TOTAL)},
            **_measured(probe, STAGES), "adam_steps": result.steps, "lora_cached": result.lora_cached,
            "inversion_cached": result.inversion_cached, "skipped_steps": result.skipped_steps}


def _attempt(rows: Rows, base: dict, measure):
    """``measure()`` → a row; an exception becomes an error row (the other runs go on)."""
    try:
        row = measure()
    except Exception as exc:  # noqa: BLE001 — a benchmark reports a failed run and goes on to the next
        logging.error("%s %s failed:\n%s", base["method"], base["run"], traceback.format_exc())
        row = {**base, "error": f"{type(exc).__name__}: {exc}"[:300]}
    rows.add(row)
    return row


def request_for(image, mask, size: int, points) -> DragRequest:
    (hx, hy), (tx, ty) = points
    return DragRequest(image, handles=[(hx * size, hy * size)], targets=[(tx * size, ty * size)], mask=mask)


def measure_edit(editor: DragEditor, probe: StageProbe, base: dict, request: DragRequest, config,
                 prepared=None, cold: dict | None = None) -> dict:
    """A cold edit (``prepared`` None) or a warm re-edit (``prepared`` given; ``cold`` its cold row, for the ratio)."""
    probe.start()
    result = editor.edit(request, config, callback=probe, prepared=prepared)
    probe.finish()
    row = _edit_row(base, result, probe)
    if cold is not None and "error" not in cold:
        row["vs_cold"] = round(row["seconds"]["total"] / cold["seconds"]["total"], 3)
    return row


def measure_prepare(editor: DragEditor, probe: StageProbe, base: dict, request: DragRequest, config,
                    prepared: list) -> dict:
    """``editor.prepare`` of the request's image and prompt (appended to ``prepared``); seconds per stage."""
    probe.start()
    start = time.perf_counter()
    prepared.append(editor.prepare(request.image, request.prompt, config, callback=probe))
    _sync(probe.device)
    total = time.perf_counter() - start
    probe.finish()
    seconds = {k: round(probe.seconds.get(k, 0.0), 3) for k in STAGES}
    return {**base, "seconds": {**seconds, "total": round(total, 3)}, **_measured(probe, STAGES)}


def run(args) -> Rows:
    device = select_device(args.device)
    model = load_model(args, device, select_dtype(device, args.dtype))
    if args.compile:
        compile_unet(model.unet, args.compile)
    editor = DragEditor(model)
    probe = StageProbe(device)
    with probe.watching(editor):
        return _run(args, editor, probe, model, device)


def _run(args, editor: DragEditor, probe: StageProbe, model: DiffusionModel, device) -> Rows:
    image, mask = test_image(args.size)
    mask = None if args.no_mask else mask
    request = request_for(image, mask, args.size, COLD_POINTS)
    rows = Rows(args.json, args.append)
    for method in args.method or method_names():
        config = method_configs(args)[method]
        if args.warmup:  # one short edit of the same method (only the fields it has)
            short = ["lora_steps=1", "optimization_steps=1", "drag_denoise_steps=1", "trackings_per_denoise=1"]
            mine = [a for a in short if a.split("=")[0] in config_fields(config)  # and only steps it takes (no
                    and getattr(config, a.split("=")[0])]  # LoRA for FastDrag's warmup when it has none)
            editor.edit(request, apply_overrides(config, mine))
        base = functools.partial(_base, args, method, model=model, device=device)
        cold = _attempt(rows, base("cold"), functools.partial(measure_edit, editor, probe, base("cold"), request,
                                                              config))
        if not warm_for(args, method):
            continue
        prepared: list = []
        _attempt(rows, base("prepare"), functools.partial(measure_prepare, editor, probe, base("prepare"), request,
                                                          config, prepared))
        for i in range(args.reedits if prepared else 0):
            name = "warm" if i == 0 else f"warm {i + 1}"
            again = request_for(image, mask, args.size, WARM_POINTS[i])
            _attempt(rows, base(name), functools.partial(measure_edit, editor, probe, base(name), again, config,
                                                         prepared[0], cold))
    return rows


def warm_for(args, method: str) -> bool:
    """Whether ``method`` gets the preparation and warm re-edits: ``--warm`` alone, every method; ``--warm A,B``, those."""
    return bool(args.warm) and (args.warm == "all" or method in args.warm.split(","))


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"768x512,512x1024" → [(768, 512), (512, 1024)] (width × height)."""
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]


def run_generated(args, model: DiffusionModel, device) -> Rows:
    """For every size: generate (CFG, the chosen sampler), then drag the generated image with every method."""
    editor = DragEditor(model)
    probe = StageProbe(device)
    with probe.watching(editor):
        return _run_generated(args, editor, probe, model, device)


def _run_generated(args, editor: DragEditor, probe: StageProbe, model: DiffusionModel, device) -> Rows:
    rows = Rows(args.json, args.append)
    for w, h in parse_sizes(args.sizes) if args.sizes else [(args.size, args.size)]:
        gen_config = GenerationConfig(prompt="a photo of a cat", guidance_scale=args.guidance,
                                      scheduler=args.scheduler, width=w, height=h)
        if args.warmup:
            editor.generate(GenerationConfig(num_inference_steps=2, width=w, height=h))
        probe.start()
        generation = editor.generate(gen_config, callback=probe)  # the editor reports its "generation" stage
        probe.finish()
        gen = _measured(probe, (Stage.GENERATION,))
        gen_seconds = generation.timings["total"]
        request = DragRequest(generation.image, handles=[(0.4 * w, 0.5 * h)], targets=[(0.55 * w, 0.5 * h)])
        for method in args.method or method_names():
            config = method_configs(args)[method]
            probe.start()
            result = editor.edit(request, config, callback=probe, generation=generation)
            probe.finish()
            drag = _measured(probe, (Stage.OPTIMIZATION, Stage.DENOISING))
            row = {"mode": "generated", "method": method, "model": model.name, "device": str(device),
                   "dtype": str(model.dtype).replace("torch.", ""), "size": f"{w}x{h}",
                   "threads": torch.get_num_threads(), "guidance": args.guidance, "scheduler": args.scheduler,
                   "seconds": {"generation": round(gen_seconds, 3),
                               **{k: round(result.timings.get(k, 0.0), 3) for k in (Stage.OPTIMIZATION, Stage.DENOISING)},
                               "drag_total": round(result.timings["total"], 3)},
                   **{key: {**gen[key], **drag[key]} for key in ("peak_mib", "unet", "steps")},
                   "adam_steps": result.steps}
            rows.add(row)
    return rows


# --- FLOPs (--flops) --------------------------------------------------------------------------------------------------
PIPELINES = {"sd15": sd15_pipeline, "sdxl": sdxl_pipeline}


def meta_model(arch: str) -> DiffusionModel:
    """The full-size architecture on PyTorch's ``meta`` device: shapes only, nothing is allocated or computed, so
    the FLOPs of the real layers can be counted in seconds, without weights. (Not :meth:`DiffusionModel.from_pipeline`:
    it moves the text encoders to the CPU, and a meta tensor cannot be moved.)"""
    pipe = PIPELINES[arch]("meta")
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.requires_grad_(False).eval()
    return DiffusionModel(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config,
                          f"{arch}-architecture-meta", text_encoder_2=getattr(pipe, "text_encoder_2", None),
                          tokenizer_2=getattr(pipe, "tokenizer_2", None))


def _flops(fn) -> int:
    """FLOPs of ``fn()`` (matmuls, convolutions and attention: 2 per multiply-add), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def call_flops(model: DiffusionModel, size: int) -> dict[str, int]:
    """FLOPs of one call of every kind an edit makes at ``size``², counted through the library's own calls on the
    meta device: ``fwd`` / ``fwd2`` a UNet forward at batch 1 / 2, ``fwd_bwd`` / ``fwd_bwd4`` a forward with the
    backward to its input (frozen UNet: no weight gradients; the LoRA's are negligible) at batch 1 / 4,
    ``kv_record`` / ``kv_replace`` a forward under FastDrag's K/V copy (:mod:`dragkit.kv_copy`), ``partial`` a
    forward that stops at the family's feature block (:meth:`dragkit.stages.FeatureModel.features`), ``encode`` /
    ``decode`` the VAE (one image), ``text`` the prompt's encoding."""
    from dragkit import stages
    from dragkit.features import capture_features
    from dragkit.kv_copy import kv_copy

    side, t, saved = size // model.vae_scale_factor, 601, {}
    text = model.conditioning("a photo", (size, size))

    def z(batch, grad=False):
        return torch.zeros(batch, model.unet.config.in_channels, side, side, device="meta", requires_grad=grad)

    def forward(batch=1):
        with torch.no_grad():
            stages.unet_eps(model, z(batch), t, text)

    def forward_backward(batch):
        with torch.enable_grad():
            stages.unet_eps(model, z(batch, grad=True), t, text).sum().backward()

    def under_kv(mode):
        with kv_copy(model.unet, mode, saved):
            forward()

    def partial():
        with torch.no_grad(), capture_features(model.unet, model.family.feature_block) as capture:
            stages.FeatureModel(model, capture, (size // 2, size // 2)).features(z(1), t, text)

    image = torch.zeros(1, 3, size, size, device="meta")
    return {"fwd": _flops(forward), "fwd2": _flops(lambda: forward(2)),
            "fwd_bwd": _flops(lambda: forward_backward(1)), "fwd_bwd4": _flops(lambda: forward_backward(4)),
            "kv_record": _flops(lambda: under_kv("record")), "kv_replace": _flops(lambda: under_kv("replace")),
            "partial": _flops(partial), "encode": _flops(lambda: model.encode_posterior(image)),
            "decode": _flops(lambda: model.decode(z(1))),
            "text": _flops(lambda: model.conditioning("a photo", (size, size)))}


def stage_calls(config) -> dict[str, dict[str, float]]:
    """{stage: {call kind: how many}} of one cold edit with ``config`` — the most it can make (every drag step run) —
    counted as docs/performance.md does. k = ``config.inverted_steps`` DDIM inversion forwards; the denoising runs
    the k steps back, at batch 2 beside its source branch under reference attention, at batch 1 under the K/V copy."""
    k, method = config.inverted_steps, config.method
    copies_kv = getattr(config, "copies_kv", False)
    lora = {"fwd_bwd4": config.lora_steps * config.lora_batch_size / 4} if config.lora_steps else {}
    if method == "dragdiffusion":
        drag = {"fwd_bwd": config.optimization_steps}
    elif method == "gooddrag":  # J Adam steps per tracking, B trackings per drag timestep; ≈ 2 no-grad forwards per
        # drag timestep (the undragged branch, the next latent)
        drag = {"fwd_bwd": config.drag_denoise_steps * config.trackings_per_denoise
                * config.supervision_steps_per_tracking, "fwd": 2 * config.drag_denoise_steps}
    elif method == "fastdrag":
        drag = {}  # the warp: element-wise, no UNet
    elif method == "soliddrag":
        drag = {"partial": 1}  # the features at t*, then the solid warp (element-wise)
    else:
        raise ValueError(f"no FLOP model for method {method!r}: add it to stage_calls")
    denoise = {"kv_replace": k} if copies_kv else {"fwd2" if config.reference_attention else "fwd": k}
    return {"vae_encode": {"encode": 1, "text": 1}, "lora": lora,
            "lora_recompute": {"fwd": config.lora_steps * config.lora_batch_size} if config.lora_steps else {},
            "inversion": {"kv_record" if copies_kv else "fwd": k}, "drag": drag, "denoising": denoise,
            "vae_decode": {"decode": 1}}


FLOP_STAGES = ("vae_encode", "lora", "lora_recompute", "inversion", "drag", "denoising", "vae_decode")
WARM_STAGES = ("drag", "denoising", "vae_decode")  # a re-edit of a prepared image


def count_flops(args) -> Rows:
    """One row per method: TFLOP per stage of a cold edit at ``args.size``² on the ``args.arch`` architecture (the
    family's defaults resolved), the cold and warm totals, and the per-call FLOPs they are made of."""
    from dragkit.family import resolve

    model = meta_model(args.arch)
    calls = call_flops(model, args.size)
    rows = Rows(args.json, args.append)
    for method, config in method_configs(args).items():
        config = resolve(config, model.family, model.default_size)
        counts = stage_calls(config)
        tflop = {stage: sum(n * calls[kind] for kind, n in counts[stage].items()) / 1e12 for stage in FLOP_STAGES}
        cold = sum(v for stage, v in tflop.items() if stage != "lora_recompute")
        rows.add({"mode": "flops", "method": method, "model": model.name, "size": args.size,
                  "tflop": {k: round(v, 3) for k, v in tflop.items()}, "calls": counts,
                  "cold_tflop": round(cold, 3), "cold_checkpointed_tflop": round(cold + tflop["lora_recompute"], 3),
                  "warm_tflop": round(sum(tflop[s] for s in WARM_STAGES), 3),
                  "call_gflop": {k: round(v / 1e9, 2) for k, v in calls.items()}})
    return rows


def flops_markdown(rows: list[dict]) -> str:
    head = ["method", "model", "size", "VAE enc + text", "LoRA (+ ckpt recompute)", "inversion", "drag", "denoising",
            "VAE dec", "cold TFLOP (ckpt)", "warm TFLOP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r["tflop"]
        lines.append("| " + " | ".join([
            r["method"], r["model"], f"{r['size']}²", f"{t['vae_encode']:.2f}",
            f"{t['lora']:.1f} (+{t['lora_recompute']:.1f})", f"{t['inversion']:.2f}", f"{t['drag']:.2f}",
            f"{t['denoising']:.2f}", f"{t['vae_decode']:.2f}",
            f"**{r['cold_tflop']:.1f}** ({r['cold_checkpointed_tflop']:.1f})", f"{r['warm_tflop']:.1f}"]) + " |")
    if rows:
        lines += ["", "GFLOP per call: " + ", ".join(f"{k} {v:g}" for k, v in rows[0]["call_gflop"].items())]
    return "\n".join(lines)


HEADS = {
    "edit": ["method", "run", "model", "device/dtype", "size", "LoRA s", "inversion s", "optimisation s (Adam steps)",
             "denoising s", "total s", "UNet fwd/bwd (LoRA · inv · opt · den)", "peak MiB (LoRA / inv / opt / den)"],
    "generated": ["method", "model", "device/dtype", "size", "CFG / sampler", "generation s",
                  "optimisation s (Adam steps)", "denoising s", "drag total s", "UNet fwd/bwd (gen · opt · den)",
                  "peak MiB (gen / opt / den)"],
}


def _calls(c: dict | None) -> str:
    """"fwd/bwd", with "+Np" for partial forwards; "—" when not recorded (older rows)."""
    if not c:
        return "—"
    partial = f"+{c['partial']}p" if c.get("partial") else ""
    return f"{c['forward']}{partial}/{c['backward']}"


def _run_cell(r: dict) -> str:
    run = r.get("run", "cold")
    if "vs_cold" in r:
        run += f" ({r['vs_cold']:.2f}× cold)"
    return run


def _cells(r: dict) -> list[str]:
    dev = f"{r['device']}/{r['dtype']}" + (f", compile {r['compile']}" if r.get("compile") else "")
    if r.get("mode") == "generated":
        t, m, u = r["seconds"], r["peak_mib"], r.get("unet", {})
        return [r["method"], r["model"], dev, r["size"], f"{r['guidance']:g} / {r['scheduler']}",
                f"{t['generation']:.2f}", f"{t['optimization']:.2f} ({r['adam_steps']})", f"{t['denoising']:.2f}",
                f"{t['drag_total']:.2f}", " · ".join(_calls(u.get(k)) for k in GENERATED_STAGES),
                " / ".join(f"{m[k]:.0f}" for k in GENERATED_STAGES)]
    cells = [r["method"], _run_cell(r), r["model"], dev, f"{r['size']}²"]
    if "error" in r:
        return cells + ["—"] * 4 + [f"**{r['error']}**"] + ["—"] * 2
    t, m, u = r["seconds"], r["peak_mib"], r.get("unet", {})
    opt = f"{t['optimization']:.2f} ({r['adam_steps']})" if "adam_steps" in r else f"{t['optimization']:.2f}"
    return cells + [f"{t['lora']:.2f}", f"{t['inversion']:.2f}", opt, f"{t['denoising']:.2f}", f"{t['total']:.2f}",
                    " · ".join(_calls(u.get(k)) for k in STAGES), " / ".join(f"{m[k]:.0f}" for k in STAGES)]


def markdown(rows: list[dict]) -> str:
    head = HEADS["generated" if rows and rows[0].get("mode") == "generated" else "edit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_cells(r)) + " |" for r in rows])


def _goal(cold: dict, met: bool) -> str:
    """Issue 16's goal (warm ≤ ⅓ cold) is about the LoRA a warm re-edit reuses; a method without one (FastDrag,
    SolidDrag: a warm re-edit is the denoising half of its UNet calls) is not judged by it."""
    if not cold.get("unet", {}).get("lora", {}).get("forward", 1):
        return " (no LoRA: a re-edit skips the inversion only)"
    return " — goal ≤ 1/3 met" if met else " — goal ≤ 1/3 NOT met"


def warm_summary(rows: list[dict]) -> list[str]:
    """One line per method that has a cold and a warm row: warm ÷ cold (issue 16's goal: ≤ ⅓)."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = {r.get("run"): r for r in rows if r["method"] == method and "error" not in r}
        if "cold" in mine and "warm" in mine:
            cold, warm = mine["cold"]["seconds"]["total"], mine["warm"]["seconds"]["total"]
            prep = mine.get("prepare", {}).get("seconds", {}).get("total")
            lines.append(f"{method}: warm re-edit {warm:.2f} s = {warm / cold:.2f} × cold edit {cold:.2f} s"
                         + (f" (prepare {prep:.2f} s)" if prep is not None else "")
                         + _goal(mine["cold"], warm <= cold / 3))
    return lines


def run_speed(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """``dragkit bench speed``: (this run's rows, as --json has them; the report — the table and the warm ÷ cold
    lines, or with --flops the FLOP table). The command (:mod:`dragkit.cli.bench`) prints the report."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.flops:
        if args.arch not in PIPELINES:
            raise SystemExit("--flops counts a full-size architecture: --arch sd15 or --arch sdxl")
        rows = count_flops(args)
        rows = rows[rows.kept:]
        return rows, [flops_markdown(rows)]
    if args.generated:
        device = select_device(args.device)
        model = load_model(args, device, select_dtype(device, args.dtype))
        if args.compile:
            compile_unet(model.unet, args.compile)
        rows = run_generated(args, model, device)
    else:
        rows = run(args)
    rows = rows[rows.kept:]  # this run's
    return rows, [markdown(rows), *warm_summary(rows)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dragkit bench speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    from ..cli.bench import run_speed as command  # the command prints; this module computes

    return command(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
