"""Information-preserving motion supervision and the λ-term on hand-made tensors (no model)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from dragkit.config import GoodDragConfig, apply_overrides
from dragkit.family import SD, SDXL, resolve
from dragkit.gooddrag import gooddrag_loss, regularized_region
from dragkit.types import DragError

CFG = GoodDragConfig()  # r1 4, β 4, λ 0.2, stop distance 2


def manual_term(ref, cur, h0, pos, r):
    """(2r)²·mean|ref[Ω(h0, r)] − bilinear(cur)[Ω(pos, r)]|, bilinear from four integer-shifted slices (the
    reference code's construction), written independently of dragkit.motion."""
    src = ref[0, :, h0[0] - r:h0[0] + r + 1, h0[1] - r:h0[1] + r + 1]
    r0, c0 = math.floor(pos[0]), math.floor(pos[1])
    wr, wc = pos[0] - r0, pos[1] - c0

    def win(a, b):
        return cur[0, :, a - r:a + r + 1, b - r:b + r + 1]

    tgt = ((1 - wr) * (1 - wc) * win(r0, c0) + wr * (1 - wc) * win(r0 + 1, c0) + (1 - wr) * wc * win(r0, c0 + 1)
           + wr * wc * win(r0 + 1, c0 + 1))
    return (2 * r) ** 2 * (src - tgt).abs().mean()


def loss(features, reference, handles, initial, targets, x_prev=None, x_ref=None, editable=None, cfg=CFG):
    x_prev = torch.zeros(1, 4, 4, 4) if x_prev is None else x_prev
    x_ref = torch.zeros(1, 4, 4, 4) if x_ref is None else x_ref
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return gooddrag_loss(features, reference, t(handles), t(initial), t(targets), x_prev, x_ref, editable, cfg)


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 6, 40, 48, generator=g), torch.randn(1, 6, 40, 48, generator=g)


def test_term_is_zero_when_the_shifted_patch_carries_the_original_content(maps):
    reference, _ = maps
    # handle at its initial position, target 10 px to the right: d = (0, min(β, 10)) = (0, 4)
    current = torch.roll(reference, shifts=(0, 4), dims=(2, 3))  # content moved 4 px right
    terms = loss(current, reference, [[20, 20]], [[20, 20]], [[20, 30]])
    assert terms.active == [0]
    assert terms.motion == [0.0] and terms.total.item() == 0.0


def test_source_is_the_undragged_map_at_the_initial_handle_and_the_step_is_beta_clamped(maps):
    reference, current = maps
    handles, initial, targets = [[26.0, 30.0]], [[8, 8]], [[29.0, 34.0]]  # ‖g − h‖ = 5 → d = (0.6, 0.8)·4
    terms = loss(current, reference, handles, initial, targets)
    expected = manual_term(reference, current, (8, 8), (26 + 2.4, 30 + 3.2), 4)
    assert terms.motion[0] == pytest.approx(expected.item(), rel=1e-6)
    assert terms.motion_means[0] == pytest.approx(expected.item() / 64, rel=1e-6)  # factor (2r1)² = 64, not 81
    # the current features around the initial handle play no role, the undragged ones do
    other = current.clone()
    other[..., 4:13, 4:13] += 5.0
    assert loss(other, reference, handles, initial, targets).motion[0] == pytest.approx(terms.motion[0], rel=1e-6)


def test_step_shorter_than_beta_lands_on_the_target(maps):
    reference, current = maps
    terms = loss(current, reference, [[20.0, 20.0]], [[20, 20]], [[22.0, 21.5]])  # distance 2.5 < β
    expected = manual_term(reference, current, (20, 20), (22.0, 21.5), 4)
    assert terms.motion[0] == pytest.approx(expected.item(), rel=1e-6)


def test_without_information_preserving_the_source_is_the_current_map_at_the_current_handle(maps):
    """The "w/o IP" ablation (paper Eq. 7): sg(F) around the current handle h, not F_orig around h⁰; still detached."""
    import dataclasses

    reference, current = maps
    cfg = dataclasses.replace(CFG, information_preserving=False)
    handles, initial, targets = [[26.0, 30.0]], [[8, 8]], [[29.0, 34.0]]  # d = (0.6, 0.8)·4
    terms = loss(current, reference, handles, initial, targets, cfg=cfg)
    expected = manual_term(current, current, (26, 30), (26 + 2.4, 30 + 3.2), 4)
    assert terms.motion[0] == pytest.approx(expected.item(), rel=1e-6)
    assert loss(current, reference + 5.0, handles, initial, targets, cfg=cfg).motion[0] == pytest.approx(
        terms.motion[0], rel=1e-6)  # the undragged map plays no role
    cur = current.clone().requires_grad_(True)
    loss(cur, reference, [[20.0, 20.0]], [[8, 8]], [[20.0, 30.0]], cfg=cfg).total.backward()
    rows, cols = (cur.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (16, 24, 20, 28)
    assert apply_overrides(CFG, ["information_preserving=false"]).information_preserving is False


def test_gradient_flows_only_into_the_current_features_at_the_shifted_patch(maps):
    reference, current = (m.clone().requires_grad_(True) for m in maps)
    terms = loss(current, reference, [[20.0, 20.0]], [[20, 20]], [[20.0, 30.0]])
    terms.total.backward()
    assert reference.grad is None
    touched = current.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = touched.nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (16, 24, 20, 28)


def test_pairs_within_the_stop_distance_are_skipped(maps):
    reference, current = maps
    terms = loss(current, reference, [[20.0, 20.0], [10.0, 10.0]], [[20, 20], [10, 10]], [[21.0, 21.0], [10, 30]])
    assert terms.active == [1] and len(terms.motion) == 1
    expected = manual_term(reference, current, (10, 10), (10.0, 14.0), 4)
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_regulariser_is_a_weighted_l1_sum_outside_the_editable_region(maps):
    reference, current = maps
    g = torch.Generator().manual_seed(1)
    x_prev, x_ref = torch.randn(1, 4, 5, 6, generator=g), torch.randn(1, 4, 5, 6, generator=g)
    editable = torch.zeros(1, 1, 5, 6)
    editable[..., 1:4, 2:5] = 1
    far = dict(handles=[[20.0, 20.0]], initial=[[20, 20]], targets=[[20.0, 30.0]])
    motion = loss(current, reference, **far).total.item()
    masked = loss(current, reference, **far, x_prev=x_prev, x_ref=x_ref, editable=editable).total.item()
    outside = ((x_prev - x_ref).abs() * (1 - editable)).sum().item()
    assert masked - motion == pytest.approx(0.2 * outside, rel=1e-5)
    pinned = loss(current, reference, **far, x_prev=x_prev, x_ref=x_ref, editable=torch.zeros(1, 1, 5, 6))
    assert pinned.total.item() - motion == pytest.approx(0.2 * (x_prev - x_ref).abs().sum().item(), rel=1e-5)
    dropped = loss(current, reference, **far, x_prev=x_prev, x_ref=x_ref, editable=None)
    assert dropped.total.item() == pytest.approx(motion, rel=1e-7)


def test_regularised_region_follows_the_reference_when_no_mask_is_drawn():
    editable = torch.ones(1, 1, 4, 4)
    no_mask = SimpleNamespace(has_mask=False, editable_latent=editable)
    assert torch.equal(regularized_region(no_mask, GoodDragConfig()), torch.zeros(1, 1, 4, 4))  # whole latent pinned
    assert regularized_region(no_mask, GoodDragConfig(regularize_without_mask=False)) is None
    drawn = SimpleNamespace(has_mask=True, editable_latent=editable * 0.5)
    assert regularized_region(drawn, GoodDragConfig()) is drawn.editable_latent


def test_config_defaults_validation_and_overrides():
    cfg = GoodDragConfig()
    assert cfg.method == "gooddrag" and cfg.inverted_steps == 38
    assert (cfg.drag_denoise_steps, cfg.trackings_per_denoise, cfg.supervision_steps_per_tracking) == (7, 10, 3)
    assert (cfg.motion_radius, cfg.tracking_radius, cfg.drag_step_size, cfg.mask_weight) == (4, 12, 4, 0.2)
    assert (cfg.latent_lr, cfg.early_stop_trackings, cfg.lora_steps, cfg.stop_distance) == (0.02, 10, 70, 2.0)
    assert cfg.reference_attention_blocks is None and cfg.feature_block is None and not cfg.animation  # family's
    assert (resolve(cfg, SD).feature_block, resolve(cfg, SD).reference_attention_blocks) == (2, (2, 3))
    assert (resolve(cfg, SDXL).feature_block, resolve(cfg, SDXL).reference_attention_blocks) == (1, (0, 1))
    changed = apply_overrides(cfg, ["drag_denoise_steps=3", "regularize_without_mask=false", "drag_step_size=2.5"])
    assert (changed.drag_denoise_steps, changed.regularize_without_mask, changed.drag_step_size) == (3, False, 2.5)
    for bad in (dict(supervision_steps_per_tracking=0), dict(early_stop_trackings=0), dict(drag_step_size=0),
                dict(drag_denoise_steps=-1), dict(latent_lr=0)):
        with pytest.raises(DragError):
            GoodDragConfig(**bad)
