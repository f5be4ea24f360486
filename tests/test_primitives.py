"""The maths on hand-made tensors: point mapping, bilinear patches, motion terms, tracking."""

import numpy as np
import pytest
import torch

from dragkit import points
from dragkit.motion import (active_pairs, clipped_window, dragdiffusion_motion_term, drag_direction,
                            gooddrag_motion_term, masked_latent_term, sample_points, square_offsets)
from dragkit.tracking import reference_vectors_at, track_points


def test_point_mapping_rounds_half_to_even_and_clamps():
    rc = points.to_grid([(77, 69), (86, 103), (0, 0), (127, 127)], (128, 192), (64, 96))
    assert rc.tolist() == [[34.0, 38.0], [52.0, 43.0], [0.0, 0.0], [64.0, 63.0]]
    # x=127 → col 63.5 → 64 (half to even) → clamped to 63 so border points stay on the grid
    back = points.to_image(torch.tensor([[34.0, 38.0]]), (128, 192), (64, 96))
    assert back == [(76.0, 68.0)]
    # non-integer scales: a 512×325 image on a 256×164 grid
    rc = points.to_grid([(511, 324)], (512, 325), (256, 164))
    assert rc.tolist() == [[163.0, 255.0]]


def test_mask_to_grid_is_nearest_and_none_is_all_editable():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255
    grid = points.mask_to_grid(mask, (4, 4))
    assert grid[0, 0].tolist() == [[0, 0, 1, 1]] * 4
    assert points.mask_to_grid(None, (3, 5)).sum() == 15


def test_bilinear_sample_matches_hand_computation():
    f = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    # at (row 1.25, col 2.5): (1−.25)(1−.5)f[1,2] + .25(.5)f[2,2]·… by hand for channel 0
    r, c = 1.25, 2.5
    v = lambda rr, cc: float(f[0, 0, rr, cc])  # noqa: E731
    expected = (1 - .25) * (1 - .5) * v(1, 2) + .25 * (1 - .5) * v(2, 2) + (1 - .25) * .5 * v(1, 3) + .25 * .5 * v(2, 3)
    got = sample_points(f, torch.tensor([[r, c]]))
    assert got.shape == (2, 1)
    assert got[0, 0].item() == pytest.approx(expected)
    assert got[1, 0].item() == pytest.approx(expected + 20)
    # integer positions are exact; positions outside are clamped to the border (no crash, no wrap-around)
    assert sample_points(f, torch.tensor([[3.0, 4.0]]))[0, 0].item() == v(3, 4)
    assert sample_points(f, torch.tensor([[-2.5, 7.0]]))[0, 0].item() == v(0, 4)


def test_windows_are_clipped_at_borders():
    assert square_offsets(1).shape == (9, 2)
    w = clipped_window(torch.tensor([0.0, 0.0]), 1, (10, 10))
    assert w.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert clipped_window(torch.tensor([5.0, 5.0]), 3, (10, 10)).shape == (49, 2)


def test_drag_direction_unit_and_clamped_step():
    h, g = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])
    assert drag_direction(h, g).tolist() == pytest.approx([0.6, 0.8])
    assert drag_direction(h, g, max_step=4.0).tolist() == pytest.approx([2.4, 3.2])
    assert drag_direction(h, g, max_step=10.0).tolist() == pytest.approx([3.0, 4.0])
    assert active_pairs(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), torch.tensor([[1.0, 1.0], [9.0, 9.0]]), 2.0) == [1]


def test_dragdiffusion_motion_term_on_a_ramp():
    # F = column index: shifting the patch by d = (0, 1) changes every value by exactly 1 → mean 1, term (2r+1)²
    f = torch.arange(10, dtype=torch.float32).repeat(1, 3, 10, 1).requires_grad_(True)
    term, mean = dragdiffusion_motion_term(f, torch.tensor([5.0, 5.0]), torch.tensor([5.0, 9.0]), radius=1)
    assert mean.item() == pytest.approx(1.0)
    assert term.item() == pytest.approx(9.0)
    term.backward()
    # gradient flows only through the shifted patch: columns 5..7 of rows 4..6
    nz = f.grad[0, 0].nonzero().tolist()
    assert {tuple(p) for p in nz} == {(r, c) for r in (4, 5, 6) for c in (5, 6, 7)}
    # at a corner the window is clipped but the factor stays (2r+1)² (reference behaviour) — and nothing breaks
    term, mean = dragdiffusion_motion_term(f, torch.tensor([0.0, 0.0]), torch.tensor([9.0, 9.0]), radius=1)
    assert torch.isfinite(term)


def test_gooddrag_motion_term_uses_original_features_at_initial_handle():
    ref = torch.zeros(1, 2, 20, 20)
    ref[:, :, 5, 5] = 1.0
    cur = torch.zeros(1, 2, 20, 20)
    cur[:, :, 5, 9] = 1.0  # content already moved 4 px right
    # handle at (5,5), target (5,15): d = min(β=4, 10) → shifted patch centred at (5,9) equals the source patch
    term, mean = gooddrag_motion_term(cur, ref, torch.tensor([5.0, 5.0]), torch.tensor([5.0, 5.0]),
                                      torch.tensor([5.0, 15.0]), radius=2, max_step=4.0)
    assert term.item() == 0.0
    # not moved yet: the source's bright pixel is missing from the shifted patch → |diff| sums to 2 over 2×25 values
    term, mean = gooddrag_motion_term(ref, ref, torch.tensor([5.0, 5.0]), torch.tensor([5.0, 5.0]),
                                      torch.tensor([5.0, 15.0]), radius=2, max_step=4.0)
    assert mean.item() == pytest.approx(2 / (2 * 25))
    assert term.item() == pytest.approx(16 * mean.item())


def test_masked_latent_term_is_a_sum_outside_the_mask():
    x = torch.ones(1, 4, 2, 2)
    editable = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert masked_latent_term(x, torch.zeros_like(x), editable).item() == 12.0


def test_tracking_recovers_a_known_shift():
    g = torch.Generator().manual_seed(0)
    f0 = torch.randn(1, 8, 24, 24, generator=g)
    f1 = torch.roll(f0, shifts=(2, -3), dims=(2, 3))  # content moved down 2, left 3
    handles = torch.tensor([[10.0, 10.0], [12.0, 15.0]])
    ref = reference_vectors_at(f0, handles)
    new = track_points(ref, f1, handles, radius=3)
    assert new.tolist() == [[12.0, 7.0], [14.0, 12.0]]
    assert handles.tolist() == [[10.0, 10.0], [12.0, 15.0]]  # inputs untouched


def test_tracking_at_the_border_and_ties():
    f = torch.zeros(1, 2, 6, 6)
    handles = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    ref = torch.zeros(2, 2)
    # all candidates tie → first in row-major order of the clipped window
    assert track_points(ref, f, handles, radius=3).tolist() == [[0.0, 0.0], [2.0, 2.0]]


def test_lazy_feature_map_equals_the_resized_map_and_its_gradient():
    """FeatureMap reads F on the grid without building it: same values as F.interpolate (bilinear, align_corners
    False) at every grid point, and the same gradient into the block's output; CFG halves weighted (1 − c, c)."""
    from dragkit.features import FeatureMap, resize_features

    g = torch.Generator().manual_seed(0)
    for raw_hw, grid_hw, weights in [((8, 12), (32, 48), None), ((13, 9), (30, 21), (0.4, 0.6)),
                                      ((6, 6), (6, 6), None)]:
        raw = torch.randn(1 if weights is None else 2, 5, *raw_hw, generator=g, requires_grad=True)
        fm = FeatureMap(raw, grid_hw, weights)
        dense = fm.dense()
        rows, cols = torch.meshgrid(torch.arange(grid_hw[0]), torch.arange(grid_hw[1]), indexing="ij")
        lazy = fm.at(rows.reshape(-1), cols.reshape(-1)).reshape(dense.shape[1:])
        torch.testing.assert_close(lazy, dense[0], atol=1e-5, rtol=0)  # float rounding of the source index
        if weights is None:
            torch.testing.assert_close(dense, resize_features(raw, grid_hw), atol=0, rtol=0)
        points = torch.tensor([[3.3, 4.6], [0.0, 0.2], [grid_hw[0] - 1.0, grid_hw[1] - 1.5]])
        (grad_lazy,) = torch.autograd.grad(sample_points(fm, points).square().sum(), raw)
        (grad_dense,) = torch.autograd.grad(sample_points(dense, points).square().sum(), raw)
        torch.testing.assert_close(grad_lazy, grad_dense, atol=1e-5, rtol=1e-5)
