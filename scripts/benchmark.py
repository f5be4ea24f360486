"""Per-stage wall time and peak memory of an edit (LoRA, inversion, optimisation, denoising), for every method.

    python scripts/benchmark.py                          # tiny offline model, CPU, 512×512, paper defaults
    python scripts/benchmark.py --arch sd15 --device cuda  # full-size SD-1.5 architecture, random weights (GPU)
    python scripts/benchmark.py --arch sdxl --size 1024 --device cuda --dtype fp16   # full-size SDXL architecture
    python scripts/benchmark.py --model PATH_OR_HUB_ID   # any real model
    python scripts/benchmark.py --generated --sizes 768x512,512x1024   # generation + generated-image drag

Cost does not depend on weight values, so ``--arch sd15`` (the real SD-1.5 UNet/VAE/CLIP sizes with random
weights, built offline) is a valid speed and memory benchmark. Memory: peak process RSS per stage on CPU (sampled),
peak ``torch.cuda.max_memory_allocated`` per stage on CUDA. It drives the library through the same progress callback
the CLI and the UI use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dragkit.config import (GenerationConfig, apply_overrides, config_fields, configs_with_overrides,  # noqa: E402
                            default_config, method_names)
from dragkit.editor import DragEditor  # noqa: E402
from dragkit.models import DiffusionModel, select_device, select_dtype  # noqa: E402
from dragkit.types import DragRequest, ProgressEvent  # noqa: E402

STAGES = ("lora", "inversion", "optimization", "denoising")
GENERATED_STAGES = ("generation", "optimization", "denoising")


class StageMemory:
    """Progress callback that attributes peak memory to the stage currently running."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stage = "setup"
        self.peaks: dict[str, float] = {}
        self.steps: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = None
        if device.type == "cpu":
            import psutil

            self._proc = psutil.Process()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        elif device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _sample(self):
        while not self._stop.is_set():
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), self._rss())
            time.sleep(0.02)

    def _close_stage(self):
        if self.device.type == "cuda":
            self.peaks[self.stage] = torch.cuda.max_memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)

    def __call__(self, event: ProgressEvent):
        if event.stage != self.stage:
            self._close_stage()
            self.stage = event.stage
        self.steps[event.stage] = event.step

    def finish(self):
        self._close_stage()
        self._stop.set()
        if self._thread:
            self._thread.join()


def build_sd15_random(device, dtype) -> DiffusionModel:
    """SD-1.5's UNet, VAE and CLIP-L text encoder at full size with random weights (no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dragkit.testing import build_tiny_pipeline
    from dragkit.tokenizer import VOCAB_SIZE

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=512, eos_token_id=513, pad_token_id=513))
    pipe = build_tiny_pipeline()
    pipe.unet, pipe.vae, pipe.text_encoder = unet, vae, text
    pipe.to(device, dtype)
    return DiffusionModel.from_pipeline(pipe, name="sd15-architecture-random")


def build_sdxl_random(device, dtype) -> DiffusionModel:
    """SDXL base's UNet (2.6 B), VAE (scaling 0.13025, force_upcast) and both text encoders (CLIP-L 768 and
    OpenCLIP-bigG 1280 with projection) at full size with random weights (no download)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dragkit.testing import build_tiny_sdxl_pipeline
    from dragkit.tokenizer import VOCAB_SIZE

    torch.manual_seed(0)
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

    pipe = build_tiny_sdxl_pipeline()
    pipe.unet, pipe.vae = unet, vae
    pipe.text_encoder = CLIPTextModel(text(768, 12, 12))
    pipe.text_encoder_2 = CLIPTextModelWithProjection(text(1280, 32, 20, projection_dim=1280))
    pipe.to(device, dtype)
    return DiffusionModel.from_pipeline(pipe, name="sdxl-architecture-random")


def test_image(size: int) -> tuple[Image.Image, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(8 * xx) * np.cos(6 * yy)], -1)
    disc = (xx - 0.4) ** 2 + (yy - 0.5) ** 2 < 0.02
    rgb[disc] = [0.9, 0.2, 0.1]
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 5: 4 * size // 5] = 1
    return Image.fromarray((rgb * 255).astype(np.uint8)), mask


def load_model(args, device, dtype) -> DiffusionModel:
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
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


def run(args) -> list[dict]:
    device = select_device(args.device)
    model = load_model(args, device, select_dtype(device, args.dtype))
    editor = DragEditor(model)
    image, mask = test_image(args.size)
    s = args.size
    request = DragRequest(image, handles=[(0.4 * s, 0.5 * s)], targets=[(0.6 * s, 0.5 * s)], mask=mask)
    rows = []
    for method in args.method or method_names():
        config = method_configs(args)[method]
        if args.warmup:  # one short edit of the same method (only the fields it has)
            short = ["lora_steps=1", "optimization_steps=1", "drag_denoise_steps=1", "trackings_per_denoise=1"]
            mine = [a for a in short if a.split("=")[0] in config_fields(config)]
            editor.edit(request, apply_overrides(config, mine))
        monitor = StageMemory(device)
        result = editor.edit(request, config, callback=monitor)
        monitor.finish()
        row = {"method": method, "model": model.name, "device": str(device),
               "dtype": str(model.dtype).replace("torch.", ""), "size": s, "threads": torch.get_num_threads(),
               "seconds": {k: round(result.timings.get(k, 0.0), 3) for k in (*STAGES, "total")},
               "peak_mib": {k: round(monitor.peaks.get(k, 0.0), 1) for k in STAGES},
               "steps": {k: monitor.steps.get(k, 0) for k in STAGES}, "adam_steps": result.steps}
        rows.append(row)
        logging.info("%s", json.dumps(row))
    return rows


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"768x512,512x1024" → [(768, 512), (512, 1024)] (width × height)."""
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]


def run_generated(args, model: DiffusionModel, device) -> list[dict]:
    """For every size: generate (CFG, the chosen sampler), then drag the generated image with every method."""
    editor = DragEditor(model)
    rows = []
    for w, h in parse_sizes(args.sizes) if args.sizes else [(args.size, args.size)]:
        gen_config = GenerationConfig(prompt="a photo of a cat", guidance_scale=args.guidance,
                                      scheduler=args.scheduler, width=w, height=h)
        if args.warmup:
            editor.generate(GenerationConfig(num_inference_steps=2, width=w, height=h))
        monitor = StageMemory(device)
        generation = editor.generate(gen_config, callback=monitor)
        monitor.finish()
        gen_peak, gen_seconds = monitor.peaks.get("generation", 0.0), generation.timings["total"]
        request = DragRequest(generation.image, handles=[(0.4 * w, 0.5 * h)], targets=[(0.55 * w, 0.5 * h)])
        for method in args.method or method_names():
            config = method_configs(args)[method]
            monitor = StageMemory(device)
            result = editor.edit(request, config, callback=monitor, generation=generation)
            monitor.finish()
            row = {"mode": "generated", "method": method, "model": model.name, "device": str(device),
                   "dtype": str(model.dtype).replace("torch.", ""), "size": f"{w}x{h}",
                   "threads": torch.get_num_threads(), "guidance": args.guidance, "scheduler": args.scheduler,
                   "seconds": {"generation": round(gen_seconds, 3),
                               **{k: round(result.timings.get(k, 0.0), 3) for k in ("optimization", "denoising")},
                               "drag_total": round(result.timings["total"], 3)},
                   "peak_mib": {"generation": round(gen_peak, 1),
                                **{k: round(monitor.peaks.get(k, 0.0), 1) for k in ("optimization", "denoising")}},
                   "adam_steps": result.steps}
            rows.append(row)
            logging.info("%s", json.dumps(row))
    return rows


HEADS = {
    "edit": ["method", "model", "device/dtype", "size", "LoRA s", "inversion s", "optimisation s (Adam steps)",
             "denoising s", "total s", "peak MiB (LoRA / inv / opt / den)"],
    "generated": ["method", "model", "device/dtype", "size", "CFG / sampler", "generation s",
                  "optimisation s (Adam steps)", "denoising s", "drag total s", "peak MiB (gen / opt / den)"],
}


def _cells(r: dict) -> list[str]:
    t, m = r["seconds"], r["peak_mib"]
    cells = [r["method"], r["model"], f"{r['device']}/{r['dtype']}"]
    if r.get("mode") == "generated":
        return cells + [r["size"], f"{r['guidance']:g} / {r['scheduler']}", f"{t['generation']:.2f}",
                        f"{t['optimization']:.2f} ({r['adam_steps']})", f"{t['denoising']:.2f}",
                        f"{t['drag_total']:.2f}", " / ".join(f"{m[k]:.0f}" for k in GENERATED_STAGES)]
    return cells + [f"{r['size']}²", f"{t['lora']:.2f}", f"{t['inversion']:.2f}",
                    f"{t['optimization']:.2f} ({r['adam_steps']})", f"{t['denoising']:.2f}", f"{t['total']:.2f}",
                    " / ".join(f"{m[k]:.0f}" for k in STAGES)]


def markdown(rows: list[dict]) -> str:
    head = HEADS["generated" if rows and rows[0].get("mode") == "generated" else "edit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_cells(r)) + " |" for r in rows])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model to load (default: the tiny offline model)")
    p.add_argument("--arch", choices=["tiny", "sd15", "sdxl"], default="tiny",
                   help="random-weight architecture to build (sdxl: use --size 1024)")
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--method", action="append", choices=method_names())
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores; 1 on a machine shared with "
                   "other jobs, where oversubscribed threads slow everything down)")
    p.add_argument("--warmup", action="store_true", help="one short edit first (CUDA kernels, allocator)")
    p.add_argument("--json", help="write the rows as JSON here")
    g = p.add_argument_group("generated-image mode")
    g.add_argument("--generated", action="store_true",
                   help="time a generation, then the drag of the generated image (no LoRA, no inversion)")
    g.add_argument("--sizes", help="WxH list for --generated, e.g. 768x512,512x1024 (default: --size square)")
    g.add_argument("--guidance", type=float, default=7.5, help="CFG scale of the generation (default: %(default)s)")
    g.add_argument("--scheduler", default="ddim", help="sampler of the generation (default: %(default)s)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.generated:
        device = select_device(args.device)
        rows = run_generated(args, load_model(args, device, select_dtype(device, args.dtype)), device)
    else:
        rows = run(args)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
