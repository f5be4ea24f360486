"""FastDrag parity with the official code on the golden fixtures (../shared/golden README §10, protocol §10.9,
tolerances §10.8):

1. the warp alone (LWF + relocation + BNNI) on all 7 ``fastdrag_warp`` subcases: P, destinations, statuses, the
   pre-fill latent and the null mask exactly; the filled latent to 1e-6; the circle to 1e-6; the scale factors to
   rtol 1e-5 with NaN at the same entries;
2. step-wise on ``fastdrag_full``: each inversion step and the K/V it saves, the warp of the stored inverted latent,
   each sampling step from the stored latent with the stored K/V;
3. end to end through :meth:`DragEditor.edit`, and a counterfactual without K/V copy that the tolerances reject.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dragkit import latent_warp

pytestmark = pytest.mark.golden

SUBCASES = ["sq_1pair", "sq_2pair", "sq_3pair", "ns_1pair", "ns_2pair", "ns_3pair", "edge_2pair"]
# s_i(C) of a pixel C on the circle is a float32 cancellation (‖Q − C‖ ≈ 0, a few ULP of R): there a relative
# tolerance is meaningless, so entries are also accepted within 1e-6 absolute (they move a pixel by < 1e-5 px).
SCALE_ATOL = 1e-6


@pytest.fixture(scope="module")
def warp_outputs(golden_dir):
    return load_file(str(golden_dir / "fastdrag_warp" / "outputs.safetensors"))


@pytest.fixture(scope="module")
def full(golden_dir):
    d = golden_dir / "fastdrag_full"
    return (json.loads((d / "inputs.json").read_text()), json.loads((d / "trajectory.json").read_text()),
            load_file(str(d / "outputs.safetensors")))


def check_warp(result: latent_warp.Warp, ref: dict) -> None:
    """``result`` against the reference's recorded intermediates (keys as in fastdrag_warp, README §10.6)."""
    assert torch.equal(result.points, ref["mask_points_rc"])
    torch.testing.assert_close(result.center, ref["circle_center_rc"], atol=1e-6, rtol=0)
    torch.testing.assert_close(result.radius.reshape(1), ref["circle_radius"], atol=1e-6, rtol=0)
    assert torch.equal(torch.isnan(result.scale), torch.isnan(ref["scale_factors"]))
    torch.testing.assert_close(result.scale, ref["scale_factors"], rtol=1e-5, atol=SCALE_ATOL, equal_nan=True)
    assert torch.equal(result.destinations_unclamped, ref["dest_unclamped_rc"])
    assert torch.equal(result.destinations, ref["dest_rc"])
    assert torch.equal(result.status, ref["dest_status"])
    assert torch.equal(result.null_mask, ref["null_mask"])


@pytest.mark.parametrize("subcase", SUBCASES)
def test_warp_subcases(warp_outputs, subcase):
    ref = {k.split("/", 1)[1]: v for k, v in warp_outputs.items() if k.startswith(subcase + "/")}
    # half-resolution (row, col) → latent: ÷ 4, not rounded (README §10.3 step 4)
    result = latent_warp.warp(ref["latent_in"], ref["mask_latent_res"], ref["handles_sup_rc"] / 4,
                              ref["targets_sup_rc"] / 4)
    check_warp(result, ref)
    assert torch.equal(result.prefill, ref["warped_prefill"])  # values are copied: exact given the input latent
    torch.testing.assert_close(result.filled, ref["filled"], atol=1e-6, rtol=0)


def test_edge_case_handle_on_pixel_is_skipped_and_filled(warp_outputs):
    """edge_2pair: handle 0 sits on latent pixel (6, 13): the reference's NaN skip — not moved (its place is zeroed,
    then written by another point's move here, or filled by BNNI)."""
    ref = {k.split("/", 1)[1]: v for k, v in warp_outputs.items() if k.startswith("edge_2pair/")}
    result = latent_warp.warp(ref["latent_in"], ref["mask_latent_res"], ref["handles_sup_rc"] / 4,
                              ref["targets_sup_rc"] / 4)
    (i,) = (result.status == latent_warp.NOT_MOVED).nonzero()[0].tolist()
    assert result.points[i].tolist() == [6, 13]
    assert torch.isfinite(result.filled).all() and result.filled[0, 0, 6, 13] != ref["latent_in"][0, 0, 6, 13]


def test_edge_case_handle_on_first_region_pixel_does_not_crash():
    """The reference crashes when the NaN pixel is the first of P (an unbound local); here it is the same skip."""
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    region = torch.zeros(8, 8)
    region[2:6, 2:6] = 1
    result = latent_warp.warp(z, region, torch.tensor([[2.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
    assert result.status[0] == latent_warp.NOT_MOVED and result.points[0].tolist() == [2, 2]
    assert torch.isfinite(result.filled).all() and result.filled[0, 0, 2, 2] != 0


def test_edge_case_empty_region_is_identity():
    z = torch.randn(1, 4, 8, 8)
    result = latent_warp.warp(z, torch.zeros(8, 8), torch.tensor([[2.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(result.filled, z) and len(result.points) == 0 and not result.null_mask.any()


def test_confine_keeps_values_outside_the_region(warp_outputs):
    """sq_1pair moves 9 values outside the mask (README §10.6); ``confine`` drops those moves instead."""
    ref = {k.split("/", 1)[1]: v for k, v in warp_outputs.items() if k.startswith("sq_1pair/")}
    z, region = ref["latent_in"], ref["mask_latent_res"]
    args = (ref["handles_sup_rc"] / 4, ref["targets_sup_rc"] / 4)
    faithful, confined = latent_warp.warp(z, region, *args), latent_warp.warp(z, region, *args, confine=True)
    outside = (region[0, 0] == 0)
    assert not torch.equal(faithful.filled[..., outside], z[..., outside])  # the reference overwrites 9 pixels
    assert torch.equal(confined.filled[..., outside], z[..., outside])
    assert (confined.status == latent_warp.DROPPED).sum() > (faithful.status == latent_warp.DROPPED).sum()


def test_bnni_is_fast_on_a_64x64_latent():
    """The sequential fill of an SD-1.5 512² latent (64²) with a large hole: well under a second."""
    import time

    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    z[..., 8:56, 8:56] = 0  # 2304 null pixels
    start = time.perf_counter()
    filled, null = latent_warp.bnni(z)
    assert time.perf_counter() - start < 0.5
    assert null.sum() == 48 * 48 and (filled[0, 0] != 0).all()


# --- 2. step-wise on fastdrag_full -------------------------------------------------------------------------------------

def kv_of(out: dict, t: int) -> dict:
    """The stored K/V of timestep ``t`` as a :data:`dragkit.kv_copy.SavedKV` entry (processor names)."""
    layers = sorted({k.split("/")[1] for k in out if k.startswith("kv/")})
    return {f"{layer}.processor": (out[f"kv/{layer}/t{t:03d}/key"], out[f"kv/{layer}/t{t:03d}/value"])
            for layer in layers}


@pytest.fixture(scope="module")
def full_edit(golden_model, golden_dir, full):
    from dragkit import stages
    from dragkit.config import FastDragConfig
    from dragkit.editor import DragEditor
    from dragkit.io import load_image, load_mask
    from dragkit.types import DragRequest

    inputs, _, _ = full
    d = golden_dir / "fastdrag_full"
    request = DragRequest(load_image(d / inputs["image"]), inputs["handles_xy"], inputs["targets_xy"],
                          load_mask(d / inputs["mask"]), inputs["prompt"])
    config = DragEditor(golden_model).check(request, FastDragConfig())
    return request, config, stages.start_edit(golden_model, request, config)


def test_schedule_mask_and_points(full, full_edit):
    from dragkit import fastdrag, points

    _, traj, out = full
    _, config, edit = full_edit
    assert (config.num_inference_steps, config.inverted_steps) == (10, traj["n_actual_inference_step"]) == (10, 7)
    assert edit.scheduler.timesteps.tolist() == traj["ddim_timesteps"] and edit.t_star == traj["t_star"] == 601
    assert not config.reference_attention and config.lora_steps == 0 and config.copies_kv
    assert torch.equal(points.mask_to_grid(edit.request.mask, edit.grid_hw), out["mask_sup_res"])
    assert torch.equal(fastdrag.warp_region(edit, (16, 16)), out["mask_latent_res"])
    assert torch.equal(edit.handles, out["handles_sup_rc"]) and torch.equal(edit.targets, out["targets_sup_rc"])
    a, b = fastdrag.latent_points(edit, (16, 16))
    assert a.tolist() == traj["handles_latent_rc"] and b.tolist() == traj["targets_latent_rc"]


def test_inversion_steps_save_the_reference_kv(golden_model, full, full_edit):
    """Each inversion step from the stored previous latent (1e-5), and the K/V it saves (1e-5): 9 decoder layers ×
    7 timesteps = 63 saves, keyed by the timestep the UNet is queried at."""
    from dragkit import kv_copy, stages
    from dragkit.ddim import ddim_inversion_step, inversion_timesteps
    from dragkit.guidance import TextConditioning

    _, traj, out = full
    _, config, edit = full_edit
    text = TextConditioning(out["text_embedding"])
    path, saved = out["inversion_path"], {}
    with torch.no_grad(), kv_copy.kv_copy(golden_model.unet, "record", saved) as control:
        for i, t in enumerate(inversion_timesteps(edit.scheduler, config.inverted_steps)):
            x = ddim_inversion_step(lambda x, t: stages.unet_eps(golden_model, x, t, text), edit.scheduler,
                                    path[i:i + 1], t)
            torch.testing.assert_close(x, path[i + 1:i + 2], atol=1e-5, rtol=0)
    assert control.saves == traj["attention"]["saves_during_inversion"] == 63
    assert sorted(saved) == traj["inversion_timesteps"]
    for t in saved:
        reference = kv_of(out, t)
        assert set(saved[t]) == set(reference) == {f"{n}.processor" for n in traj["kv_layers"]}
        for name, (k, v) in saved[t].items():
            torch.testing.assert_close(k, reference[name][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(v, reference[name][1], atol=1e-5, rtol=0)


def test_warp_of_stored_inverted_latent(full, full_edit):
    from dragkit import fastdrag

    _, _, out = full
    _, config, edit = full_edit
    result = fastdrag.warp_latent(edit, out["inverted_latent"], config)
    check_warp(result, {k.removeprefix("lwf/"): v for k, v in out.items()} | {"null_mask": out["null_mask"]})
    assert torch.equal(result.prefill, out["warped_prefill"])
    torch.testing.assert_close(result.filled, out["warped_filled"], atol=1e-6, rtol=0)


def test_sampling_steps_with_stored_kv(golden_model, full, full_edit):
    """Each sampling step from ``denoise_latents[i, 1]`` with the stored K/V of its t replacing the decoder
    self-attention's own (63 replacements), to 1e-5."""
    from dragkit import kv_copy, stages
    from dragkit.guidance import TextConditioning

    _, traj, out = full
    _, _, edit = full_edit
    text = TextConditioning(out["text_embedding"])
    timesteps = edit.scheduler.timesteps[edit.t_index:].tolist()
    assert timesteps == traj["denoise_timesteps"]
    saved = {t: kv_of(out, t) for t in timesteps}
    latents = out["denoise_latents"]
    with torch.no_grad(), stages.attention_control(golden_model, None, saved) as control:
        for i, t in enumerate(timesteps):
            eps = stages.unet_eps(golden_model, latents[i, 1:2], t, text)
            torch.testing.assert_close(eps, out["denoise_eps"][i, 1:2], atol=1e-5, rtol=0)
            x = edit.step(eps, edit.t_index + i, latents[i, 1:2])
            torch.testing.assert_close(x, latents[i + 1, 1:2], atol=1e-5, rtol=0)
    assert control.replacements == traj["attention"]["replacements_during_sampling"] == 63
    # the processors are gone again: the plain UNet differs from the K/V-copied step
    plain = stages.unet_eps(golden_model, latents[0, 1:2], timesteps[0], text)
    assert (plain - out["denoise_eps"][0, 1:2]).abs().max() > 1e-3


# --- 3. end to end ------------------------------------------------------------------------------------------------------

def test_end_to_end(golden_model, full, full_edit):
    """DragEditor.edit with FastDrag's defaults: inverted latent and warp 1e-4, saved K/V 5e-4, final latent 5e-4,
    image 1e-3 (README §10.8); the result declares the handles at their targets after [handles, targets]."""
    from dragkit import fastdrag
    from dragkit.editor import DragEditor
    from dragkit.prepared import PreparedImage

    _, _, out = full
    request, config, edit = full_edit
    prepared = PreparedImage.of(golden_model, request.image, request.prompt)
    result = DragEditor(golden_model).edit(request, config, prepared=prepared)
    key = prepared.inversion_key(config, 0)
    torch.testing.assert_close(prepared.latents[key], out["inverted_latent"], atol=1e-4, rtol=0)
    for t, layers in prepared.kv[key].items():
        for name, (k, v) in layers.items():
            reference = kv_of(out, t)[name]
            torch.testing.assert_close(k, reference[0], atol=5e-4, rtol=0)
            torch.testing.assert_close(v, reference[1], atol=5e-4, rtol=0)
    warped = fastdrag.warp_latent(edit, prepared.latents[key], config)
    torch.testing.assert_close(warped.filled, out["warped_filled"], atol=1e-4, rtol=0)
    torch.testing.assert_close(result.latent, out["final_latent_edit"], atol=5e-4, rtol=0)
    torch.testing.assert_close(golden_model.decode(result.latent), out["image_edit"], atol=1e-3, rtol=0)
    assert result.steps == 0
    assert result.final_handles == edit.to_image_points(edit.targets)
    assert result.trajectory == [edit.to_image_points(edit.handles), edit.to_image_points(edit.targets)]


def test_without_kv_copy_is_rejected(golden_model, full, full_edit):
    """kv_copy=False reproduces the reference's counterfactual and misses the K/V-copied result by ~0.067: the
    end-to-end tolerance tells the two apart."""
    import dataclasses

    from dragkit.editor import DragEditor

    _, _, out = full
    request, config, _ = full_edit
    result = DragEditor(golden_model).edit(request, dataclasses.replace(config, kv_copy=False))
    torch.testing.assert_close(result.latent, out["final_latent_edit_no_kv_copy"], atol=5e-4, rtol=0)
    assert (result.latent - out["final_latent_edit"]).abs().max() > 10 * 5e-4
