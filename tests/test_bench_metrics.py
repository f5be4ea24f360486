"""Metrics on hand-made inputs with known answers: DAI, Mean Distance (DIFT matching), LPIPS / Image Fidelity."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dragkit.metrics.dai import dai, dai_all
from dragkit.metrics.lpips import (ALEXNET_URL, LPIPS, LPIPS_ALEX_URL, image_fidelity, load_lpips,
                                   to_lpips_input)
from dragkit.metrics.mean_distance import (DiftFeaturizer, bilinear_taps, cosine_maps, match_handles,
                                           point_distances, upsampled_at)
from dragkit.types import DragError


# --- DAI -------------------------------------------------------------------------------------------------------------

def _rgb(arr):
    return Image.fromarray(np.asarray(arr, np.uint8))


def test_dai_of_image_with_itself_is_zero():
    img = _rgb(np.random.default_rng(0).integers(0, 256, (40, 50, 3)))
    pts = [(10, 12), (30, 20)]
    assert dai_all(img, img, pts, pts) == {"dai_1": 0.0, "dai_5": 0.0, "dai_10": 0.0, "dai_20": 0.0}


def test_dai_of_a_shifted_image_is_zero_at_the_shifted_point_and_not_elsewhere():
    arr = np.random.default_rng(1).integers(0, 256, (60, 60, 3))
    shifted = np.roll(arr, shift=(4, 7), axis=(0, 1))  # content at (x, y) moves to (x + 7, y + 4)
    a, b = _rgb(arr), _rgb(shifted)
    assert dai(a, b, [(20, 25)], [(27, 29)], gamma=5) == 0.0
    assert dai(a, b, [(20, 25)], [(20, 25)], gamma=5) > 0.01


def test_dai_known_values_and_normalisations():
    orig = np.zeros((30, 30, 3), np.uint8)
    edit = orig.copy()
    edit[9:12, 19:22] = 255  # a white 3×3 square centred on (20, 10)
    # γ=1: 9 pixels × 3 channels × 1² / 9 = 3 for the pair landing on the square; 0 for the other
    assert dai(orig, edit, [(5, 5)], [(20, 10)], 1) == pytest.approx(3.0)
    two = ([(5, 5), (5, 25)], [(20, 10), (5, 25)])
    assert dai(orig, edit, *two, gamma=1, official=False) == pytest.approx(1.5)
    assert dai(orig, edit, *two, gamma=1) == pytest.approx(0.75)  # official code: sum / N / (2γ+1)² / N
    # γ=5 at the square: 27 / 121
    assert dai(orig, edit, [(5, 5)], [(20, 10)], 5) == pytest.approx(27 / 121)


def test_dai_is_boundary_safe():
    orig = np.zeros((20, 20, 3), np.uint8)
    edit = np.full((20, 20, 3), 255, np.uint8)
    # corner points: only the 6×6 valid offsets of an 11×11 patch are compared; every value differs by 1
    assert dai(orig, edit, [(0, 0)], [(19, 19)], 5) == pytest.approx(3.0)
    assert dai(orig, edit, [(0, 19)], [(0, 19)], 20) == pytest.approx(3.0)
    with pytest.raises(DragError, match="the original 20x20"):
        dai(orig, edit[:10], [(0, 0)], [(1, 1)], 1)


# --- Mean Distance ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_in,n_out", [(5, 37), (8, 128), (7, 7), (3, 50)])
def test_bilinear_taps_reproduce_interpolate(n_in, n_out):
    x = torch.randn(1, 1, n_in, 3)
    ref = F.interpolate(x, size=(n_out, 3), mode="bilinear", align_corners=False)[0, 0, :, 0]
    i0, i1, w0, w1 = bilinear_taps(n_in, n_out)
    col = x[0, 0, :, 0]
    torch.testing.assert_close(w0 * col[i0] + w1 * col[i1], ref, rtol=0, atol=1e-6)


def _naive_cosine(vectors, features, size_hw):
    up = F.interpolate(features[None], size=size_hw, mode="bilinear", align_corners=False)[0]
    return torch.stack([F.cosine_similarity(v[:, None, None], up, dim=0) for v in vectors])


@pytest.mark.parametrize("hw,size", [((5, 7), (37, 53)), ((4, 4), (64, 64)), ((6, 3), (6, 3))])
def test_cosine_maps_equal_the_upsample_first_definition(hw, size):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(32, *hw, generator=g) + 0.5
    pts = [(0, 0), (size[1] - 1, size[0] - 1), (size[1] // 2, size[0] // 3)]
    up = F.interpolate(feats[None], size=size, mode="bilinear", align_corners=False)[0]
    vec = upsampled_at(feats, pts, size)
    torch.testing.assert_close(vec, torch.stack([up[:, y, x] for x, y in pts]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cosine_maps(vec, feats, size), _naive_cosine(vec, feats, size), rtol=1e-5, atol=1e-5)


def test_matching_recovers_a_known_shift():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(64, 12, 12, generator=g)
    dst = torch.roll(src, shifts=(2, 3), dims=(1, 2))  # 2 cells down, 3 right; 1 cell = 8 px at 96×96
    handles = [(30, 40), (20, 25), (45, 37)]
    matches = match_handles(src, dst, handles, (96, 96))
    assert matches == [(x + 24, y + 16) for x, y in handles]
    targets = [(54, 56), (44, 41), (45, 37)]  # exact, exact, and one that stayed put
    assert point_distances(src, dst, handles, targets, (96, 96)) == pytest.approx([0, 0, math.hypot(24, 16)])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from dragkit.models import DiffusionModel
    from dragkit.testing import save_tiny_model

    return DiffusionModel.from_pretrained(str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "m")), device="cpu")


def test_dift_features_stop_after_the_hooked_block(tiny_model):
    calls = []
    handle = tiny_model.unet.up_blocks[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        dift = DiftFeaturizer(tiny_model, ensemble=3)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8))
        f = dift.features(image, "a cat", seed=3)
    finally:
        handle.remove()
    assert not calls  # the UNet forward stopped after up_blocks[1]
    assert f.shape == (tiny_model.unet.up_blocks[1].resnets[-1].out_channels, 48 // 8 // 2, 64 // 8 // 2)
    torch.testing.assert_close(f, dift.features(image, "a cat", seed=3))
    assert not torch.equal(f, dift.features(image, "a cat", seed=4))
    with pytest.raises(DragError, match="up blocks"):
        DiftFeaturizer(tiny_model, block=9)


# --- LPIPS / Image Fidelity ------------------------------------------------------------------------------------------

TORCHVISION_ALEXNET_FEATURE_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")]


def _random_lpips(seed=0):
    torch.manual_seed(seed)
    model = LPIPS()
    for i in range(5):
        lin = getattr(model, f"lin{i}").model[1]
        lin.weight.data = lin.weight.data.abs()  # the published lin weights are non-negative
    return model


def test_alexnet_trunk_has_torchvision_parameter_names():
    assert list(LPIPS().net.state_dict()) == TORCHVISION_ALEXNET_FEATURE_KEYS
    lin_keys = [k for k in LPIPS().state_dict() if k.startswith("lin")]
    assert lin_keys == [f"lin{i}.model.1.weight" for i in range(5)]


def test_lpips_properties_with_random_weights():
    model = _random_lpips()
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    d = model(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(d, model(b, a))
    assert torch.equal(model(a, a), torch.zeros(2))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8))
    other = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 40, 3), np.uint8))
    assert image_fidelity(model, img, img) == 1.0
    assert image_fidelity(model, img, other) == pytest.approx(image_fidelity(model, other, img))
    assert image_fidelity(model, img, other) < 1.0
    x = to_lpips_input(img)
    assert x.shape == (1, 3, 224, 224) and -1 <= x.min() and x.max() <= 1


def test_lpips_loads_published_files_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = _random_lpips(seed=5)
    alex = {k: v for k, v in src.net.state_dict().items()}
    alex["classifier.1.weight"] = torch.zeros(4096, 9216 // 1024)  # ignored, as torchvision's classifier
    torch.save(alex, tmp_path / ALEXNET_URL.rsplit("/", 1)[-1])
    with pytest.raises(DragError) as err:  # the lin file is still missing and we are offline
        load_lpips(tmp_path)
    assert "alex.pth" in str(err.value) and LPIPS_ALEX_URL in str(err.value) and str(tmp_path) in str(err.value)
    torch.save({k: v for k, v in src.state_dict().items() if k.startswith("lin")}, tmp_path / "alex.pth")
    loaded = load_lpips(tmp_path)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
