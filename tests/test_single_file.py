"""A single-file, original-layout (CompVis / A1111) SD-1.5 ``.safetensors`` checkpoint loads through dragkit's loader.

No such file exists offline, so the golden tiny model (a diffusers folder with SD-1.5 topology) is converted to the
original key layout (``tests/sd_original_layout.py``), saved as one ``.safetensors`` file, and loaded back with
``--model FILE --model-config GOLDEN_FOLDER``; every weight and a UNet forward must equal the golden model's.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sd_original_layout import pipeline_to_original

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.golden  # built from ../shared/golden/model; skipped when absent

# a few keys every SD-1.5 single-file checkpoint has (the real names), one per kind of renaming
SD15_KEYS = [
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.3.0.op.weight",
    "model.diffusion_model.input_blocks.7.0.skip_connection.weight",
    "model.diffusion_model.middle_block.1.proj_in.weight",
    "model.diffusion_model.middle_block.2.out_layers.3.weight",
    "model.diffusion_model.output_blocks.2.1.conv.weight",
    "model.diffusion_model.output_blocks.5.2.conv.weight",
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.encoder.down.0.downsample.conv.weight",
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
    "first_stage_model.encoder.mid.attn_1.q.weight",
    "first_stage_model.decoder.mid.block_2.conv2.weight",
    "first_stage_model.decoder.up.3.upsample.conv.weight",
    "first_stage_model.decoder.up.0.block.2.conv1.weight",
    "first_stage_model.decoder.norm_out.weight",
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
    "cond_stage_model.transformer.text_model.final_layer_norm.weight",
]


@pytest.fixture(scope="module")
def golden_folder(golden_dir) -> Path:
    return golden_dir / "model"


@pytest.fixture(scope="module")
def checkpoint(golden_folder, tmp_path_factory) -> Path:
    """The golden model as one original-layout SD-1.5 ``.safetensors`` file."""
    state = pipeline_to_original(load_file(str(golden_folder / "unet" / "diffusion_pytorch_model.safetensors")),
                                 load_file(str(golden_folder / "vae" / "diffusion_pytorch_model.safetensors")),
                                 load_file(str(golden_folder / "text_encoder" / "model.safetensors")))
    path = tmp_path_factory.mktemp("single") / "tiny-sd15.safetensors"
    save_file(state, str(path))
    return path


def test_checkpoint_has_the_original_layout(checkpoint):
    keys = set(load_file(str(checkpoint)))
    assert set(SD15_KEYS) <= keys, sorted(set(SD15_KEYS) - keys)
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in keys)
    diffusers_names = ("down_blocks", "up_blocks", "mid_block", "resnets", "time_embedding", "conv_norm_out")
    assert not [k for k in keys if any(n in k for n in diffusers_names)]
    vae_attention = load_file(str(checkpoint))["first_stage_model.decoder.mid.attn_1.proj_out.weight"]
    assert vae_attention.ndim == 4 and vae_attention.shape[2:] == (1, 1)  # 1×1 conv weights, as in the original


def test_single_file_loads_identically(checkpoint, golden_folder, golden_model):
    from dragkit.models import DiffusionModel

    model = DiffusionModel.from_pretrained(str(checkpoint), config=str(golden_folder), device="cpu", dtype="fp32")
    for name in ("unet", "vae", "text_encoder"):
        got, want = getattr(model, name).state_dict(), getattr(golden_model, name).state_dict()
        assert set(got) == set(want), name
        for key, value in want.items():
            assert got[key].shape == value.shape and not got[key].is_meta, f"{name}.{key}"
            assert torch.equal(got[key], value), f"{name}.{key}: max |Δ| {(got[key] - value).abs().max():.3g}"
    assert dict(model.scheduler_config) == dict(golden_model.scheduler_config)
    assert model.token_ids("a photo of a cat").tolist() == golden_model.token_ids("a photo of a cat").tolist()

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    context = torch.randn(1, 77, model.text_encoder.config.hidden_size, generator=gen)
    with torch.no_grad():
        got = model.unet(latents, 500, encoder_hidden_states=context).sample
        want = golden_model.unet(latents, 500, encoder_hidden_states=context).sample
    assert (got - want).abs().max() <= 1e-6


def dragkit(*args, cwd=None, **env_vars):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", **env_vars)
    return subprocess.run([sys.executable, "-m", "dragkit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_cli_edit_with_single_file_and_model_config(checkpoint, golden_folder, photo, tmp_path):
    out = tmp_path / "edited.png"
    r = dragkit("edit", photo, "--drag", "20,30:28,30", "--model", checkpoint, "--model-config", golden_folder,
                "--out", out, "--lora-steps", "0", "--set", "num_inference_steps=4", "--set", "optimization_steps=2",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (64, 64)


def test_cli_single_file_without_model_config_offline_is_one_clear_line(checkpoint, photo, tmp_path):
    out = tmp_path / "edited.png"
    # offline, with an empty Hub cache: diffusers cannot find SD-1.5's configs anywhere
    r = dragkit("edit", photo, "--drag", "20,30:28,30", "--model", checkpoint, "--out", out, cwd=tmp_path,
                HF_HOME=str(tmp_path / "hf"))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dragkit: error: "), r.stderr
    assert checkpoint.name in lines[0] and "--model-config" in lines[0]
    assert not out.exists()
