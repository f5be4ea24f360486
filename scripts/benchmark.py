"""Per-stage wall time and peak memory of an edit (LoRA, inversion, optimisation, denoising), for every method.

    python scripts/benchmark.py                          # tiny offline model, CPU, 512×512, paper defaults
    python scripts/benchmark.py --arch sd15 --device cuda  # full-size SD-1.5 architecture, random weights (GPU)
    python scripts/benchmark.py --model PATH_OR_HUB_ID   # any real model

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

from dragkit.config import apply_overrides  # noqa: E402
from dragkit.editor import DragEditor, default_config, method_names  # noqa: E402
from dragkit.models import DiffusionModel, select_device, select_dtype  # noqa: E402
from dragkit.types import DragRequest, ProgressEvent  # noqa: E402

STAGES = ("lora", "inversion", "optimization", "denoising")


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

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, bos_token_id=512,
                                        eos_token_id=513, pad_token_id=513))
    pipe = build_tiny_pipeline()
    pipe.unet, pipe.vae, pipe.text_encoder = unet, vae, text
    pipe.to(device, dtype)
    return DiffusionModel.from_pipeline(pipe, name="sd15-architecture-random")


def test_image(size: int) -> tuple[Image.Image, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(8 * xx) * np.cos(6 * yy)], -1)
    disc = (xx - 0.4) ** 2 + (yy - 0.5) ** 2 < 0.02
    rgb[disc] = [0.9, 0.2, 0.1]
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: 3 * size // 4, size // 5: 4 * size // 5] = 1
    return Image.fromarray((rgb * 255).astype(np.uint8)), mask


def run(args) -> list[dict]:
    device = select_device(args.device)
    dtype = select_dtype(device, args.dtype)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.arch == "sd15":
        model = build_sd15_random(device, dtype)
    elif args.model:
        model = DiffusionModel.from_pretrained(args.model, device=str(device), dtype=dtype)
    else:
        from dragkit.testing import build_tiny_pipeline

        model = DiffusionModel.from_pipeline(build_tiny_pipeline().to(device, dtype), name="tiny-random")
    editor = DragEditor(model)
    image, mask = test_image(args.size)
    s = args.size
    request = DragRequest(image, handles=[(0.4 * s, 0.5 * s)], targets=[(0.6 * s, 0.5 * s)], mask=mask)
    rows = []
    for method in args.method or method_names():
        config = apply_overrides(default_config(method), args.overrides)
        if args.warmup:
            editor.edit(request, apply_overrides(config, ["lora_steps=1", "optimization_steps=1"]))
        monitor = StageMemory(device)
        result = editor.edit(request, config, callback=monitor)
        monitor.finish()
        row = {"method": method, "model": model.name, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
               "size": s, "threads": torch.get_num_threads(),
               "seconds": {k: round(result.timings.get(k, 0.0), 3) for k in (*STAGES, "total")},
               "peak_mib": {k: round(monitor.peaks.get(k, 0.0), 1) for k in STAGES},
               "steps": {k: monitor.steps.get(k, 0) for k in STAGES}, "adam_steps": result.steps}
        rows.append(row)
        logging.info("%s", json.dumps(row))
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| method | model | device/dtype | size | LoRA s | inversion s | optimisation s (Adam steps) | denoising s "
            "| total s | peak MiB (LoRA / inv / opt / den) |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        t, m = r["seconds"], r["peak_mib"]
        lines.append(f"| {r['method']} | {r['model']} | {r['device']}/{r['dtype']} | {r['size']}² | {t['lora']:.2f} | "
                     f"{t['inversion']:.2f} | {t['optimization']:.2f} ({r['adam_steps']}) | {t['denoising']:.2f} | "
                     f"{t['total']:.2f} | {m['lora']:.0f} / {m['inversion']:.0f} / {m['optimization']:.0f} / "
                     f"{m['denoising']:.0f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model to load (default: the tiny offline model)")
    p.add_argument("--arch", choices=["tiny", "sd15"], default="tiny", help="random-weight architecture to build")
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--method", action="append", choices=method_names())
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--warmup", action="store_true", help="one short edit first (CUDA kernels, allocator)")
    p.add_argument("--json", help="write the rows as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run(args)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
