"""Half precision, correct by construction (issue 16): whole edits in fp16 / bf16 land where fp32 lands.

The UNet, VAE and text encoders run in the model dtype; the optimised latent, Adam state, loss accumulation and the
identity LoRA's trainable weights stay float32 (:mod:`dragkit.optim`); an fp16 gradient overflow skips the step, which
is drawn again and reported, never counted. Measured on this CPU (AMD EPYC, 1 thread; figures quoted per test):

* golden ``dragdiffusion_full`` (random tiny model, no LoRA as recorded): fp16 follows fp32 for the first trackings,
  then the random model's chaos takes over: final handles 1 feature px from fp32's at 1 thread, 3 at 2 threads (image
  PSNR vs fp32 17.3 dB; its handles jitter by 2–4 px per step even in fp32; with an identity LoRA, fp32 runs with 3,
  5, 10 LoRA steps end 1–5 px apart from each other).
  bf16 does *not* hold there: its features are 1.7 % off fp32 (fp16: 0.2 %), enough for the random model's tracking to
  lose the second handle (4 feature px off after 20 steps, 9 after 80). On the trained shapes model, where features
  mean something, bf16 lands on fp32's handles — that is the bf16 test.
* shapes model, 3 tasks × 2 methods, LoRA 20 steps, 25 DDIM steps: bf16 and fp16 final handles = fp32's on all 6
  edits; image PSNR vs fp32 49–52 dB (bf16; one GoodDrag edit 22 dB: same final handle but it stopped after 60 of
  fp32's 126 steps), 58–64 dB (fp16; GoodDrag skipped 1–2 overflowing steps per edit). Generated images: same handles,
  42–49 dB (bf16), 56 dB (fp16).
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dragkit import optim
from dragkit.config import GenerationConfig, default_config
from dragkit.editor import DragEditor
from dragkit.models import DiffusionModel
from dragkit.types import DragError, DragRequest

sys.path.insert(0, str(Path(__file__).parent))
from test_golden_dragdiffusion import case_config, load_case  # noqa: E402

pytestmark = pytest.mark.device

SHAPES_GRID = 2  # image px per feature px on the 64 px shapes scenes (grid 32²) and the golden 128 px case (64²)


def psnr(a, b) -> float:
    mse = ((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2).mean()
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def feature_px(result, reference) -> float:
    """Largest per-coordinate distance between the two edits' final handles, in feature px."""
    return max(abs(a - b) for p, q in zip(result.final_handles, reference.final_handles) for a, b in zip(p, q)) \
        / SHAPES_GRID


@pytest.mark.slow
def test_golden_dragdiffusion_in_fp16_follows_fp32_until_the_random_model_turns_chaotic(golden_dir, test_device):
    """The golden DragDiffusion case as recorded (no LoRA, K = 20), latent optimisation through the fp16 UNet: the
    start and the first two trackings are fp32's exactly (measured: the first 3 entries at 2 threads, the first 4 at
    1); after that the random model's tracking is chaotic — fp32's own handles jump 2–4 px per step — and fp16's
    0.2 % feature error puts it on another path: its final handles end 1 feature px (1 thread) to 3 (2 threads) from
    fp32's. So the issue's "within 1 feature px on the golden case" is not a property this random model can show at
    every thread count; the bound is asserted loosely here (≤ 3) and tightly (≤ 1) on the trained shapes model."""
    inputs, _, _, request = load_case(golden_dir, "dragdiffusion_full")
    config = case_config(inputs)
    results = {}
    for dtype in ("fp32", "fp16"):
        model = DiffusionModel.from_pretrained(str(golden_dir / "model"), device=test_device, dtype=dtype)
        results[dtype] = DragEditor(model).edit(request, config)
    assert results["fp16"].trajectory[:3] == results["fp32"].trajectory[:3]
    assert feature_px(results["fp16"], results["fp32"]) <= 3, (results["fp16"].final_handles,
                                                               results["fp32"].final_handles)


@pytest.fixture(scope="module")
def shapes_editors(shapes_model_dir, test_device):
    return {dtype: DragEditor(DiffusionModel.from_pretrained(str(shapes_model_dir), device=test_device, dtype=dtype))
            for dtype in ("fp32", "bf16")}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dragdiffusion", "gooddrag"])
def test_bf16_real_image_edit_lands_where_fp32_lands(shapes_editors, method):
    """A shapes task (LoRA 20 steps included, 25 DDIM steps): bf16 ends on fp32's handles (within 1 feature px;
    measured 0) and its image is close to fp32's (measured 48.9 dB DragDiffusion, 48.7 dB GoodDrag)."""
    from dragkit.shapes.tasks import make_tasks

    task = make_tasks(3, seed=0)[2]
    config = dataclasses.replace(default_config(method), lora_steps=20, num_inference_steps=25)
    fp32, bf16 = (shapes_editors[d].edit(task.request(), config) for d in ("fp32", "bf16"))
    assert feature_px(bf16, fp32) <= 1
    assert psnr(bf16.image, fp32.image) > 35
    assert bf16.skipped_steps == {}  # bf16 has fp32's range: the scaler is off


@pytest.mark.parametrize("method", ["dragdiffusion", "gooddrag"])
def test_bf16_generated_image_edit_lands_where_fp32_lands(shapes_editors, method):
    """Generate in each dtype, drag the generation (no LoRA, no inversion): same final handles; images close
    (measured 42.0 / 48.8 dB; the generations themselves 47.5 dB apart)."""
    from dragkit.shapes.tasks import make_tasks

    gen_config = GenerationConfig(prompt=make_tasks(1, seed=0)[0].prompt, num_inference_steps=25, seed=1)
    results = {}
    for dtype, editor in shapes_editors.items():
        generation = editor.generate(gen_config)
        request = DragRequest(generation.image, [(20, 30)], [(28, 30)], prompt=gen_config.prompt)
        results[dtype] = editor.edit(request, default_config(method), generation=generation)
    assert feature_px(results["bf16"], results["fp32"]) <= 1
    assert psnr(results["bf16"].image, results["fp32"].image) > 35


# --- the gradient scaler: skipped steps are drawn again, reported, never counted ------------------------------------

def huge_scale(device, dtype):
    """A scaler whose first scales overflow fp16 for sure (2²⁸ × any gradient above 2.4e-4 exceeds 65504)."""
    return torch.amp.GradScaler(torch.device(device).type, init_scale=2.0 ** 28, enabled=dtype == torch.float16)


def test_a_skipped_step_changes_nothing_and_is_not_counted(test_device):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8).to(test_device, torch.float16)
    x = torch.zeros(1, 8, device=test_device, requires_grad=True)  # the fp32 master copy
    stepper = optim.ScaledStepper(torch.optim.Adam([x], lr=0.1), x.device, torch.float16, "test")
    stepper.scaler = huge_scale(x.device, torch.float16)
    taken = 0
    while taken < 3:
        before = x.detach().clone()
        loss = layer(x.half()).float().square().sum()
        if stepper.step(loss):
            taken += 1
            assert not torch.equal(x, before)
        else:
            assert torch.equal(x, before)
    assert stepper.skipped > 0 and taken == 3


def test_fp16_steps_that_always_overflow_give_one_line_error(test_device):
    x = torch.zeros(2, device=test_device, requires_grad=True)
    stepper = optim.ScaledStepper(torch.optim.Adam([x], lr=0.1), x.device, torch.float16, "latent optimisation")
    with pytest.raises(DragError, match="overflows in fp16 at every step.*--dtype bf16"):
        for _ in range(optim.MAX_CONSECUTIVE_SKIPS):
            stepper.step((x * float("inf")).sum())


def test_bf16_and_fp32_have_no_scaler(test_device):
    for dtype in (torch.float32, torch.bfloat16):
        assert not optim.grad_scaler(test_device, dtype).is_enabled()
    assert optim.grad_scaler(test_device, torch.float16).is_enabled()


@pytest.mark.parametrize("method", ["dragdiffusion", "gooddrag"])
def test_fp16_edit_reports_skipped_steps_and_counts_only_applied_ones(tiny_model_dir, test_device, monkeypatch,
                                                                      method):
    """With a scaler that starts far too high, the LoRA and the drag both skip steps: each is drawn again, the LoRA
    still takes exactly ``lora_steps`` applied steps, and the result reports the skips per stage."""
    monkeypatch.setattr(optim, "grad_scaler", huge_scale)
    model = DiffusionModel.from_pretrained(str(tiny_model_dir), device=test_device, dtype="fp16")
    lora_events = []
    config = dataclasses.replace(default_config(method), lora_steps=4, num_inference_steps=10)
    if method == "dragdiffusion":
        config = dataclasses.replace(config, optimization_steps=3)
    else:
        config = dataclasses.replace(config, drag_denoise_steps=1, trackings_per_denoise=1,
                                     supervision_steps_per_tracking=3)
    request = DragRequest(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (64, 64), (120, 80, 40)),
                          [(20, 20)], [(44, 20)])
    result = DragEditor(model).edit(request, config, callback=lambda e: e.stage == "lora" and lora_events.append(e))
    assert [e.step for e in lora_events] == [1, 2, 3, 4]
    assert result.skipped_steps.get("lora", 0) > 0 and result.skipped_steps.get("optimization", 0) > 0
    assert result.steps == 3
