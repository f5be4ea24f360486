"""FastDrag beside the other methods (issue 20, deliverable 2): the registry, prepared images (a warm re-edit is warp +
denoising only), generated images (K/V from the generation's latents, CFG batch layout), SDXL, half precision, the
CLI with --json, the benchmarks' pool payloads, the web app's method choice and the edge cases of the mask.
The parity with the official code is tests/test_fastdrag_golden.py."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import fastdrag, kv_copy, stages
from dragkit.config import METHODS, FastDragConfig, GenerationConfig, default_config
from dragkit.editor import OPTIMIZE, DragEditor
from dragkit.types import DragError, DragRequest

FAST = FastDragConfig(num_inference_steps=6, inversion_strength=0.5)  # 3 inverted, 3 denoising steps


def photo(w=64, h=48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8))


def request(mask=True, w=64, h=48) -> DragRequest:
    m = None
    if mask:
        m = np.zeros((h, w), np.uint8)
        m[8:40, 10:50] = 1
    return DragRequest(photo(w, h), [(20, 20), (40, 30)], [(30, 22), (36, 36)], m)


class UNetCalls:
    """Counts the UNet's forward calls while installed (a forward hook)."""

    def __init__(self, unet):
        self.n, self.unet = 0, unet

    def __enter__(self):
        self.hook = self.unet.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def test_registry_and_official_defaults():
    assert METHODS["fastdrag"] is FastDragConfig and OPTIMIZE["fastdrag"] is fastdrag.optimize
    c = default_config("fastdrag")
    assert (c.num_inference_steps, c.inversion_strength, c.inverted_steps, c.lora_steps) == (10, 0.7, 7, 0)
    assert not c.reference_attention and c.kv_copy and c.copies_kv and not c.confine_to_mask
    assert not default_config("dragdiffusion").copies_kv
    for name in ("kv_copy", "confine_to_mask"):
        assert dataclasses.fields(FastDragConfig)[[f.name for f in dataclasses.fields(FastDragConfig)].index(name)] \
            .metadata["help"]
    with pytest.raises(DragError, match="one off"):
        FastDragConfig(reference_attention=True)
    assert FastDragConfig(reference_attention=True, kv_copy=False).reference_attention  # MasaCtrl instead: allowed
    assert pickle.loads(pickle.dumps(c)) == c  # pool / Ray payloads carry the config


def test_kv_processors_are_restored_also_on_exceptions(tiny_model):
    unet = tiny_model.unet
    before = {n: type(p) for n, p in unet.attn_processors.items()}
    with pytest.raises(RuntimeError, match="boom"):
        with kv_copy.kv_copy(unet, "record", {}):
            assert all(type(unet.attn_processors[n]) is kv_copy.KVCopyProcessor
                       for n in kv_copy.decoder_self_attention_names(unet))
            raise RuntimeError("boom")
    assert {n: type(p) for n, p in unet.attn_processors.items()} == before
    assert not unet._forward_pre_hooks


def test_record_then_replace_with_own_kv_is_the_plain_unet(tiny_model):
    """Replacing a layer's K/V by the ones it saved on the same input changes nothing (the processor is exact)."""
    text = tiny_model.conditioning("", (32, 32))
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = stages.unet_eps(tiny_model, z, 501, text)
        saved = {}
        with kv_copy.kv_copy(tiny_model.unet, "record", saved) as rec:
            recorded = stages.unet_eps(tiny_model, z, 501, text)
        with kv_copy.kv_copy(tiny_model.unet, "replace", saved) as rep:
            replaced = stages.unet_eps(tiny_model, torch.cat([z, z]), 501, text)  # repeated over a batch of 2
    assert list(saved) == [501] and rec.saves == rep.replacements == len(saved[501])
    torch.testing.assert_close(recorded, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(replaced, plain.expand(2, -1, -1, -1), atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="timestep 1"):
        with torch.no_grad(), kv_copy.kv_copy(tiny_model.unet, "replace", saved):
            stages.unet_eps(tiny_model, z, 1, text)


def test_warm_re_edit_is_warp_and_denoising_only(tiny_model):
    editor = DragEditor(tiny_model)
    req = request()
    config = editor.check(req, FAST)
    prepared = editor.prepare(req.image, req.prompt, FAST)
    assert prepared.holds(config, 0) and len(prepared.kv) == 1
    with UNetCalls(tiny_model.unet) as calls:
        warm = editor.edit(req, FAST, prepared=prepared)
    assert warm.inversion_cached and calls.n == 3  # the 3 denoising steps: no inversion, no LoRA, no optimisation
    cold = editor.edit(req, FAST)
    assert not cold.inversion_cached
    torch.testing.assert_close(warm.latent, cold.latent, atol=0, rtol=0)
    # a prepared image without the K/V (another method prepared it with the same inversion settings) records them
    dd = METHODS["dragdiffusion"](num_inference_steps=6, inversion_strength=0.5, lora_steps=0)
    other = editor.prepare(req.image, req.prompt, dd)
    assert not other.holds(config, 0)
    again = editor.edit(req, FAST, prepared=other)
    assert not again.inversion_cached and other.holds(config, 0)
    torch.testing.assert_close(again.latent, cold.latent, atol=0, rtol=0)


def test_result_is_one_step(tiny_model):
    editor = DragEditor(tiny_model)
    req = request()
    events = []
    result = editor.edit(req, FAST, callback=events.append)
    edit = stages.start_edit(tiny_model, req, result.config)
    assert result.steps == 0
    assert result.final_handles == edit.to_image_points(edit.targets)
    assert result.trajectory == [edit.to_image_points(edit.handles), edit.to_image_points(edit.targets)]
    assert [e.stage for e in events].count("optimization") == 1
    assert [e.stage for e in events].count("denoising") == 3


@pytest.mark.parametrize("mask", ["none", "thin"])
def test_mask_edge_cases(tiny_model, mask):
    """No mask: the whole latent warps. A mask whose bilinear resize reaches no latent pixel (one half-resolution
    pixel at 4i): its nearest-mapped cell warps. Neither crashes."""
    req = request(mask=False)
    if mask == "thin":
        m = np.zeros((48, 64), np.uint8)
        m[16:18, 32:34] = 1  # half-res pixel (8, 16): nearest → latent cell (2, 4); bilinear reads 4i+1, 4i+2 only
        req = DragRequest(req.image, req.handles, req.targets, m)
    config = DragEditor(tiny_model).check(req, FAST)
    edit = stages.start_edit(tiny_model, req, config)
    region = fastdrag.warp_region(edit, (6, 8))
    if mask == "none":
        assert region.shape == (1, 1, 6, 8) and bool((region > 0).all())
    else:
        assert torch.equal(region > 0, edit.editable_latent > 0) and int((region > 0).sum()) == 1
    result = DragEditor(tiny_model).edit(req, FAST)
    assert np.isfinite(np.asarray(result.image, dtype=float)).all()


def test_handle_on_the_first_mask_pixel_does_not_crash(tiny_model):
    """A handle exactly on a latent pixel that is the first of the region (the reference crashes): skipped, filled."""
    m = np.zeros((48, 64), np.uint8)
    m[8:40, 16:48] = 1  # latent cells rows 1-4, cols 2-5: the first is (1, 2) = image (16, 8)
    req = DragRequest(photo(), [(16, 8)], [(30, 20)], m)
    config = DragEditor(tiny_model).check(req, FAST)
    edit = stages.start_edit(tiny_model, req, config)
    warped = fastdrag.warp_latent(edit, torch.randn(1, 4, 6, 8), config)
    assert warped.points[0].tolist() == [1, 2] and warped.status[0] == -1
    assert torch.isfinite(DragEditor(tiny_model).edit(req, FAST).latent).all()


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++2m"])
def test_generated_image_kv_from_the_generation_latents(tiny_model, scheduler):
    """A generated image: no inversion; the K/V come from the UNet on the generation's latents (one level below each
    t, as an inversion would query it), with the CFG batch [uncond, cond] the denoising uses."""
    editor = DragEditor(tiny_model)
    gen = editor.generate(GenerationConfig(prompt="a disc", num_inference_steps=6, guidance_scale=5.0,
                                           scheduler=scheduler, width=64, height=48))
    req = DragRequest(gen.image, [(20, 20)], [(30, 22)])
    config = editor.check(req, FAST, gen)
    edit = stages.start_edit(tiny_model, req, config, gen)
    saved = stages.generation_kv(tiny_model, edit, gen.latents)
    assert sorted(saved, reverse=True) == edit.scheduler.timesteps[edit.t_index:].tolist()
    k, v = next(iter(saved.values()))[kv_copy.decoder_self_attention_names(tiny_model.unet)[0]]
    assert k.shape[0] == v.shape[0] == 2  # [uncond, cond]
    result = editor.edit(req, FAST, generation=gen)
    assert result.image.size == (64, 48) and torch.isfinite(result.latent).all() and result.config.lora_steps == 0


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_follows_fp32(tiny_model_dir, dtype):
    """bf16 / fp16 UNet, fp32 master latent: the result stays near fp32's (the random tiny model amplifies bf16's
    rounding: ~10 % of the latent's norm; a dtype bug — a NaN, a quantised master latent — is far off)."""
    from dragkit.models import DiffusionModel

    req = request()
    results = {}
    for d in ("fp32", dtype):
        model = DiffusionModel.from_pretrained(str(tiny_model_dir), device="cpu", dtype=d)
        results[d] = DragEditor(model).edit(req, FAST)
    assert results[dtype].latent.dtype == torch.float32
    a, b = results[dtype].latent, results["fp32"].latent
    assert float((a - b).norm() / b.norm()) < 0.25, float((a - b).norm() / b.norm())


def test_sdxl_real_and_generated(tmp_path_factory):
    from dragkit.models import DiffusionModel
    from dragkit.testing import save_tiny_sdxl_model

    sdxl = DiffusionModel.from_pretrained(str(save_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "m")),
                                          device="cpu", dtype="fp32")
    editor = DragEditor(sdxl)
    names = kv_copy.decoder_self_attention_names(sdxl.unet)
    assert names and all(n.startswith("up_blocks.") and n.endswith("attn1.processor") for n in names)
    req = DragRequest(photo(61, 45), [(20, 20)], [(34, 24)], prompt="a red disc")
    prepared = editor.prepare(req.image, req.prompt, FAST)
    (kv,) = prepared.kv.values()
    assert all(set(layers) == set(names) for layers in kv.values())
    result = editor.edit(req, FAST, prepared=prepared)
    assert result.image.size == (61, 45) and result.inversion_cached
    gen = editor.generate(GenerationConfig(prompt="a red disc", num_inference_steps=6, width=64, height=48))
    result = editor.edit(DragRequest(gen.image, [(20, 20)], [(34, 24)]), FAST, generation=gen)
    assert torch.isfinite(result.latent).all()


def test_cli_method_fastdrag_json(tiny_model_dir, tmp_path):
    from dragkit.cli import main

    img = tmp_path / "photo.png"
    photo(101, 75).save(img)
    out, js = tmp_path / "e.png", tmp_path / "e.json"
    code = main(["edit", str(img), "--drag", "30,40:50,40", "--model", str(tiny_model_dir), "--method", "fastdrag",
                 "--set", "num_inference_steps=6", "--out", str(out), "--json", str(js), "--no-progress"])
    assert code == 0
    data = json.loads(js.read_text())
    assert data["method"] == "fastdrag" and data["config"]["kv_copy"] is True and data["steps"] == 0
    assert len(data["trajectory"]) == 2 and data["final_handles"] == data["trajectory"][1]
    assert np.allclose(data["final_handles"], data["request"]["targets"], atol=101 / 52 + 1e-6)


def test_web_app_offers_fastdrag(tiny_model):
    from dragkit.ui.context import AppContext

    ctx = AppContext.create(DragEditor(tiny_model))
    try:
        assert "fastdrag" in ctx.params and {p.name for p in ctx.params["fastdrag"]} >= {"kv_copy", "confine_to_mask"}
    finally:
        ctx.close()


def test_benchmark_runner_with_fastdrag(tiny_model, dragbench_dir, tmp_path):
    """`dragkit bench dragbench --method fastdrag`'s runner, in-process and through the pool protocol (what --ray
    sends): the same records."""
    from dragkit.benchmark.cluster import LocalPool
    from dragkit.benchmark.runner import run_benchmark

    config = FastDragConfig(num_inference_steps=6)
    plain = run_benchmark(DragEditor(tiny_model), config, "dragbench", dragbench_dir, tmp_path / "plain", resize=64,
                          limit=2)
    with LocalPool(lambda: DragEditor(tiny_model)) as pool:
        pooled = run_benchmark(None, config, "dragbench", dragbench_dir, tmp_path / "pool", pool=pool, resize=64,
                               limit=2)
    assert plain.done == pooled.done and len(plain.done) == 2 and not plain.failed
    record = json.loads((tmp_path / "plain" / plain.done[0] / "result.json").read_text())
    assert record["config"]["kv_copy"] is True
