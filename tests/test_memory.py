"""Memory by design (docs/performance.md, "Memory"): gradient checkpointing of the identity-LoRA step, text encoders
off the accelerator, VAE tiling of large canvases — each checked on tiny offline models to change nothing it must not.
"""

import pytest
import torch

from dragkit import models as models_module
from dragkit.guidance import TextConditioning
from dragkit.lora import checkpointing_by_default, gradient_checkpointing, train_identity_lora
from dragkit.models import DiffusionModel, text_encoder_placement, use_vae_tiling
from dragkit.testing import build_tiny_pipeline, build_tiny_sdxl_pipeline

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def model():
    """A private tiny model (these tests switch the UNet's and the VAE's modes; the shared fixture stays clean)."""
    return DiffusionModel.from_pipeline(build_tiny_pipeline(seed=3), name="tiny-memory")


# --- identity LoRA: gradient checkpointing ------------------------------------------------------------------------


def _train(model, checkpointing, steps=3, callback=None):
    mean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    std = torch.full_like(mean, 0.05)
    return train_identity_lora(model.unet, model.scheduler_config, mean, std,
                               TextConditioning(model.encode_prompt("a cat")), steps=steps, rank=4, lr=1e-2,
                               batch_size=4, weight_decay=1e-2, generator=torch.Generator().manual_seed(0),
                               callback=callback, checkpointing=checkpointing)


def test_checkpointing_default_is_on_for_accelerators_only():
    assert not checkpointing_by_default(torch.device("cpu"))
    assert checkpointing_by_default(torch.device("cuda")) and checkpointing_by_default(torch.device("mps"))


def test_lora_weights_are_the_same_with_and_without_checkpointing(model):
    seen = []
    plain = _train(model, checkpointing=False, callback=lambda e: seen.append(model.unet.is_gradient_checkpointing))
    checkpointed = _train(model, checkpointing=True,
                          callback=lambda e: seen.append(model.unet.is_gradient_checkpointing))
    assert seen == [False] * 3 + [True] * 3  # it really ran checkpointed
    assert not model.unet.is_gradient_checkpointing  # and is off again for the drag
    assert plain.keys() == checkpointed.keys()
    assert any(v.abs().max() > 0 for k, v in plain.items() if "lora_B" in k)  # training moved the weights
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-6, rtol=1e-5)


def _saved_activation_bytes(unet, checkpointing: bool) -> int:
    """Bytes autograd holds for the backward after one LoRA-step forward at batch 4 (parameters not counted)."""
    from torch.autograd.graph import saved_tensors_hooks

    from dragkit.lora import attached_lora

    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    text = torch.zeros(4, 77, unet.config.cross_attention_dim)
    with attached_lora(unet, 4), gradient_checkpointing(unet, checkpointing), saved_tensors_hooks(pack, lambda t: t):
        unet.train()
        try:
            unet(torch.randn(4, 4, 16, 16), torch.tensor([10, 200, 500, 900]), text).sample.mean().backward()
        finally:
            unet.eval()
    return sum(saved.values())


def test_checkpointing_holds_a_fraction_of_the_activations(model):
    """The point of it: what the LoRA step keeps for its backward (docs/performance.md: SD-1.5 at 512², batch 4,
    3.9 GiB → 0.56 GiB)."""
    plain, checkpointed = _saved_activation_bytes(model.unet, False), _saved_activation_bytes(model.unet, True)
    assert checkpointed < 0.3 * plain


def test_checkpointing_is_switched_off_after_an_exception(model):
    def fail(event):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        _train(model, checkpointing=True, callback=fail)
    assert not model.unet.is_gradient_checkpointing
    assert not any("lora" in n for n, _ in model.unet.named_modules())


def test_checkpointing_already_on_is_left_on(model):
    model.unet.enable_gradient_checkpointing()
    try:
        with gradient_checkpointing(model.unet, True):
            assert model.unet.is_gradient_checkpointing
        with gradient_checkpointing(model.unet, False):
            assert model.unet.is_gradient_checkpointing
        assert model.unet.is_gradient_checkpointing  # the caller's setting, not ours to undo
    finally:
        model.unet.disable_gradient_checkpointing()


# --- text encoders off the device -----------------------------------------------------------------------------------


def test_text_encoder_placement():
    assert text_encoder_placement(torch.device("cpu")) is None  # CPU models: nothing moves
    assert text_encoder_placement(torch.device("cuda")) == (torch.device("cpu"), torch.float32)
    assert text_encoder_placement(torch.device("mps")) == (torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("build", [build_tiny_pipeline, build_tiny_sdxl_pipeline], ids=["sd", "sdxl"])
def test_text_encoders_placed_apart_still_condition_the_model(build, monkeypatch):
    """Where the encoders live (here: fp32 beside a float64 model, standing in for "the CPU in fp32 beside an fp16
    accelerator model"; not float64 encoders: transformers 4.x's CLIP cannot build its causal mask in float64)
    changes where they run, not what the UNet is conditioned on: embeddings come back in the model's device/dtype."""
    reference = DiffusionModel.from_pipeline(build(seed=5)).conditioning("a red disc", (64, 64), "blur", 3.0)
    monkeypatch.setattr(models_module, "text_encoder_placement", lambda device: (torch.device("cpu"), torch.float32))
    moved = DiffusionModel.from_pipeline(build(seed=5).to(torch.float64))
    encoders = [e for e in (moved.text_encoder, moved.text_encoder_2) if e is not None]
    assert all(e.dtype == torch.float32 for e in encoders) and moved.unet.dtype == torch.float64
    text = moved.conditioning("a red disc", (64, 64), "blur", 3.0)
    for name in ("cond", "uncond", "pooled", "uncond_pooled"):
        got, want = getattr(text, name), getattr(reference, name)
        if want is None:
            assert got is None
            continue
        assert got.dtype == moved.dtype == torch.float64 and got.device == moved.device
        torch.testing.assert_close(got, want.to(got.dtype), atol=1e-5, rtol=1e-5)


# --- VAE tiling of large canvases ------------------------------------------------------------------------------------


def test_vae_tiling_threshold():
    assert not use_vae_tiling(512, 512, 512) and not use_vae_tiling(1024, 1024, 512)  # up to 4 tiles' pixels: exact
    assert not use_vae_tiling(1536, 512, 512)  # a wide canvas of 3 tiles' pixels
    assert use_vae_tiling(1032, 1024, 512) and use_vae_tiling(2048, 2048, 512)
    assert not use_vae_tiling(192, 128, 128)  # the golden non-square case stays exact
    assert not use_vae_tiling(2048, 2048, 1024) and use_vae_tiling(2056, 2048, 1024)  # SDXL


def _encoder_inputs(vae):
    """(spatial shapes the VAE encoder saw, whether tiling was on) per call, recorded with a forward pre-hook."""
    seen = []
    handle = vae.encoder.register_forward_pre_hook(lambda m, args: seen.append((tuple(args[0].shape[-2:]),
                                                                                vae.use_tiling)))
    return seen, handle


def _smooth_image(size: int) -> torch.Tensor:
    """A smooth 1×3×size×size image in [−1, 1] (tiling's seams are small on smooth content)."""
    ramp = torch.linspace(-0.8, 0.8, size)
    return torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                        torch.full((size, size), 0.2)])[None]


def test_small_images_take_the_exact_vae_path(model):
    assert model.vae_tile == 128  # the tiny model's canvas (its VAE's own sample_size is 32)
    x = _smooth_image(128)
    seen, handle = _encoder_inputs(model.vae)
    try:
        mean, std = model.encode_posterior(x)
    finally:
        handle.remove()
    assert seen == [((128, 128), False)]
    with torch.no_grad():
        dist = model.vae.encode(x).latent_dist
        direct = (model.vae.decode(mean / model.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    s = model.vae.config.scaling_factor
    assert torch.equal(mean, dist.mean * s) and torch.equal(std, dist.std * s)
    assert torch.equal(model.decode(mean), direct)


def test_large_canvases_go_through_the_vae_in_tiles(model):
    size = 264  # > 2 × 128 per side: tiled, in the VAE's own 32-pixel tiles
    x = _smooth_image(size)
    seen, handle = _encoder_inputs(model.vae)
    try:
        mean, std = model.encode_posterior(x)
        assert not model.vae.use_tiling  # switched off again
        exact_mean, _ = model.encode_posterior(x, tiled=False)
    finally:
        handle.remove()
    tiles = [shape for shape, tiling in seen if tiling]
    assert len(tiles) == len(seen) - 1 > 1 and max(max(s) for s in tiles) <= model.vae.config.sample_size
    assert seen[-1] == ((size, size), False)  # tiled=False: one untiled pass
    assert mean.shape == std.shape == exact_mean.shape == (1, 4, size // 8, size // 8)
    decoded = model.decode(exact_mean)
    assert not model.vae.use_tiling
    assert decoded.shape == (1, 3, size, size) and torch.isfinite(decoded).all()


def test_tiled_vae_is_close_to_exact_on_a_trained_vae(shapes_model_dir):
    """Tiles are blended at their seams and normalised on their own, so tiling is close to the exact path only for
    a trained VAE (a random one is not smooth enough): the shipped shapes VAE (64-pixel tiles) on a 192² scene."""
    import numpy as np

    from dragkit.shapes.scenes import random_scene

    shapes = DiffusionModel.from_pretrained(str(shapes_model_dir), device="cpu", dtype="fp32")
    assert shapes.vae_tiled(192, 192) and not shapes.vae_tiled(128, 128)
    image = random_scene(11, size=192).image()
    x = torch.from_numpy(image.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    tiled = shapes.decode(shapes.encode_posterior(x)[0])
    exact = shapes.decode(shapes.encode_posterior(x, tiled=False)[0], tiled=False)
    original = (x + 1) / 2
    error_tiled, error_exact = (tiled - original).abs().mean(), (exact - original).abs().mean()
    assert error_tiled < error_exact + 0.01  # measured: 0.026 vs 0.021
    assert (tiled - exact).abs().mean() < 0.02  # measured: 0.012


def test_a_batch_is_decoded_one_latent_at_a_time(model):
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    batch = model.decode(z)
    assert batch.shape == (3, 3, 128, 128)
    for i in range(3):
        assert torch.equal(batch[i:i + 1], model.decode(z[i:i + 1]))
    mean, std = model.encode_posterior(batch * 2 - 1)
    assert mean.shape == std.shape == (3, 4, 16, 16)
    assert torch.equal(mean[1:2], model.encode_posterior(batch[1:2] * 2 - 1)[0])
