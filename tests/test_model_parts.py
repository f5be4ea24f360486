"""DDIM, features, reference attention and LoRA on a tiny offline model."""

import pytest
import torch

from dragkit.ddim import ddim_invert, make_scheduler
from dragkit.features import capture_features
from dragkit.guidance import TextConditioning
from dragkit.lora import LoraCache, attached_lora, train_identity_lora
from dragkit.reference_attention import controlled_layer_names, reference_attention


def test_reference_timesteps():
    cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    s = make_scheduler(cfg, 50)
    assert s.timesteps[:3].tolist() == [981, 961, 941] and s.timesteps[-1] == 1
    assert s.timesteps[50 - 35] == 681 and s.timesteps[50 - 38] == 741


def test_inversion_then_denoising_reconstructs():
    """With a smooth ε-model DDIM inversion is (nearly) exact: inverting then denoising returns z0."""
    cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    scheduler = make_scheduler(cfg, 50)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eps_model = lambda x, t: 0.1 * torch.tanh(x)  # noqa: E731
    z_t = ddim_invert(eps_model, scheduler, z0, 35)
    assert (z_t - z0).abs().max() > 0.5  # it really moved
    x = z_t
    from dragkit.ddim import ddim_step

    for t in scheduler.timesteps[15:].tolist():
        x = ddim_step(scheduler, eps_model(x, t), t, x)
    assert (x - z0).abs().max() < 0.02 * z0.abs().max()


def test_feature_hook_is_removed(tiny_model):
    unet = tiny_model.unet
    before = len(unet.up_blocks[2]._forward_hooks)
    with capture_features(unet, 2) as cap:
        assert len(unet.up_blocks[2]._forward_hooks) == before + 1
        unet(torch.randn(1, 4, 8, 8), 10, tiny_model.encode_prompt(""))
        assert cap.pop().shape[-2:] == (8, 8)
    assert len(unet.up_blocks[2]._forward_hooks) == before


def test_reference_attention_installs_by_name_and_is_removed(tiny_model):
    unet = tiny_model.unet
    original = unet.attn_processors
    names = controlled_layer_names(unet, (2, 3))
    assert names and all(n.startswith(("up_blocks.2", "up_blocks.3")) and ".attn1." in n for n in names)
    text = tiny_model.encode_prompt("")
    src, edit = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        plain_src = unet(src, 500, text).sample
        with reference_attention(unet, (2, 3)) as proc:
            pair = unet(torch.cat([src, edit]), 500, text.expand(2, -1, -1)).sample
            assert all(type(p).__name__ == "MutualSelfAttentionProcessor" for n, p in unet.attn_processors.items()
                       if n in names)
        plain_edit = unet(edit, 500, text).sample
    assert proc.calls == len(names)
    torch.testing.assert_close(pair[:1], plain_src, atol=1e-5, rtol=0)  # the source attends to itself
    assert (pair[1:] - plain_edit).abs().max() > 1e-4  # the edited branch reads the source's K/V
    after = unet.attn_processors
    assert all(after[n] is original[n] for n in original)
    with pytest.raises(RuntimeError):
        with reference_attention(unet, (2, 3)):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[n] is original[n] for n in original)


def test_lora_training_lowers_loss_and_touches_only_lora(tiny_model, tmp_path):
    unet = tiny_model.unet
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    mean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    std = torch.full_like(mean, 0.01)
    text = tiny_model.encode_prompt("")
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(tiny_model.scheduler_config)
    g = torch.Generator().manual_seed(7)
    noise, t = torch.randn(16, 4, 8, 8, generator=g), torch.randint(0, 1000, (16,), generator=g)
    noisy = noise_scheduler.add_noise(mean.expand(16, -1, -1, -1), noise, t)

    def eval_loss():
        with torch.no_grad():
            return torch.nn.functional.mse_loss(unet(noisy, t, text.expand(16, -1, -1)).sample, noise).item()

    before = eval_loss()
    losses = []
    weights = train_identity_lora(unet, tiny_model.scheduler_config, mean, std, TextConditioning(text),
                                  steps=60, rank=4, lr=1e-2, batch_size=4, weight_decay=0.0,
                                  generator=torch.Generator().manual_seed(0), callback=lambda e: losses.append(e.loss))
    assert len(losses) == 60
    with attached_lora(unet, 4, weights):
        tuned = eval_loss()
    assert tuned < 0.92 * before
    assert weights and all("lora" in k for k in weights)
    after = unet.state_dict()
    assert set(after) == set(base)
    assert all(torch.equal(after[k], base[k]) for k in base)
    assert not any("lora" in n or "base_layer" in n for n, _ in unet.named_modules())
    # attaching the trained weights changes the UNet's output; detaching restores it exactly
    x, text = torch.randn(1, 4, 8, 8), tiny_model.encode_prompt("")
    with torch.no_grad():
        plain = unet(x, 100, text).sample
        with attached_lora(unet, 4, weights):
            tuned = unet(x, 100, text).sample
        again = unet(x, 100, text).sample
    assert (tuned - plain).abs().max() > 1e-4
    assert torch.equal(again, plain)
    cache = LoraCache(tmp_path)
    key = LoraCache.key(b"image", "prompt", 4)
    assert cache.get(key) is None
    cache.put(key, weights)
    assert all(torch.equal(cache.get(key)[k], weights[k]) for k in weights)
