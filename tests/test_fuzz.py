"""Property-based fuzzing (hypothesis) of what users type and of the geometry under every edit.

Request parsing — ``--drag``, request JSON, mask arrays and inline masks, image files, sizes, ``--set`` — must end in
a value or dragkit's own :class:`DragError` (one line), never another exception. The geometry — points ↔ grid
(:mod:`dragkit.points`), patches and windows (:mod:`dragkit.motion`), tracking (:mod:`dragkit.tracking`) — is pure
functions on small random tensors, checked for their invariants.

CI runs the "ci" profile (40 cases per property, derandomised); the documented big run is
``HYPOTHESIS_PROFILE=big python -m pytest -q -p no:cacheprovider tests/test_fuzz.py --hypothesis-show-statistics``
(1000 cases per property, over 10 000 in all). Profiles: tests/conftest.py.
"""

import io
import json
import math
import string

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from dragkit import io as dio  # noqa: E402
from dragkit import motion, points, tracking  # noqa: E402
from dragkit.cli import join_signed_values  # noqa: E402
from dragkit.config import DragDiffusionConfig, GoodDragConfig, apply_overrides  # noqa: E402
from dragkit.types import DragError, DragRequest  # noqa: E402

SHARED_FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["1", "x", "", "nan", "1e400"]), st.booleans(), st.none())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4),
                           max_leaves=12)


def ends_well(fn, *args, **kwargs):
    """``fn(*args)``'s value, or None when it raised a DragError with a one-line message; anything else fails."""
    try:
        return fn(*args, **kwargs)
    except DragError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()
        return None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    Image.fromarray((np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8)).save(root / "im.png")
    Image.fromarray(np.full((12, 16), 255, np.uint8)).save(root / "mask.png")
    return root


# --- request parsing -------------------------------------------------------------------------------------------------

drag_texts = st.one_of(
    st.text(max_size=30),
    st.builds(lambda a, b, c, d, s1, s2: f"{a}{s1}{b}:{c}{s2}{d}", numbers, numbers, numbers, numbers,
              st.sampled_from([",", ";", " ", ",,"]), st.sampled_from([",", ":", ""])),
    st.text(alphabet=string.digits + ",:.-e", max_size=24))


@given(drag_texts)
def test_drag_option_parses_or_says_why(text):
    parsed = ends_well(dio.parse_drag, text)
    if parsed is not None:
        assert all(math.isfinite(v) for p in parsed for v in p)


@SHARED_FIXTURES
@given(image=st.one_of(st.just("im.png"), st.just("missing.png"), json_values),
       mask=st.one_of(st.none(), st.just("mask.png"), st.just("im.png"), json_values,
                      st.fixed_dictionaries({"size": st.just([16, 12]), "rle": st.lists(st.integers(-1, 200))})),
       handles=st.one_of(json_values, st.lists(st.lists(numbers, min_size=1, max_size=3), max_size=3)),
       targets=st.one_of(json_values, st.lists(st.lists(numbers, min_size=1, max_size=3), max_size=3)),
       prompt=json_values, wrap=st.booleans())
def test_request_json_gives_a_request_or_one_line(files, image, mask, handles, targets, prompt, wrap):
    data = {"image": image, "mask": mask, "handles": handles, "targets": targets, "prompt": prompt}
    path = files / "request.json"
    path.write_text(json.dumps({"request": data} if wrap else data))
    result = ends_well(dio.read_request_file, path)
    if result is not None:
        request = result[0]
        assert request.size == (16, 12) and len(request.handles) == len(request.targets) >= 1


@given(json_values)
def test_any_json_document_as_a_request(data):
    ends_well(dio.request_from_json, data)


@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, np.float64, np.bool_]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_mask_arrays(array):
    mask = ends_well(dio.mask_from_array, array)
    if mask is not None:
        assert mask.ndim == 2 and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20), elements=st.integers(0, 1)))
def test_inline_mask_round_trip(mask):
    assert np.array_equal(dio.mask_from_json(json.loads(json.dumps(dio.mask_to_json(mask)))), mask)


@given(json_values)
def test_any_inline_mask(data):
    ends_well(dio.mask_from_json, data)


@given(w=st.integers(1, 24), h=st.integers(1, 24),
       pairs=st.lists(st.tuples(numbers, numbers, numbers, numbers), min_size=0, max_size=4),
       mask=st.one_of(st.none(), hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, max_side=24))),
       prompt=st.one_of(st.text(max_size=5), st.integers()))
def test_api_request(w, h, pairs, mask, prompt):
    image = Image.new("RGB", (w, h))
    request = ends_well(DragRequest, image, [p[:2] for p in pairs], [p[2:] for p in pairs], mask, prompt)
    if request is not None:
        for x, y in (*request.handles, *request.targets):
            assert 0 <= x <= w - 1 and 0 <= y <= h - 1
        assert request.mask is None or (request.mask.shape == (h, w) and request.mask.any())


@SHARED_FIXTURES
@given(st.binary(max_size=64), st.integers(0, 400), st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF"]))
def test_corrupted_image_files(files, noise, cut, fmt):
    buf = io.BytesIO()
    Image.new("RGB", (9, 7), (200, 30, 30)).save(buf, format=fmt)
    data = buf.getvalue()
    data = data[:cut] + noise + data[cut + len(noise):]
    path = files / f"broken.{fmt.lower()}"
    path.write_bytes(data)
    image = ends_well(dio.load_image, path)
    mask = ends_well(dio.load_mask, path)
    assert image is None or (image.mode == "RGB" and min(image.size) >= 1)
    assert mask is None or mask.ndim == 2


@given(w=st.integers(0, 10**6), h=st.integers(0, 10**6), limit=st.integers(1, 10**9))
def test_size_limit(w, h, limit):
    refused = ends_well(lambda: dio.check_pixels((w, h), limit, "image") or "ok") is None
    assert refused == (w * h > limit)


@given(st.lists(st.sampled_from(["latent_lr", "feature_block", "reference_attention_blocks", "lora_steps",
                                 "num_inference_steps", "stop_distance", "mask_weight", "nope", "drag_step_size",
                                 "reference_attention", "inversion_strength"]), max_size=3),
       st.lists(st.one_of(st.text(max_size=8), numbers.map(str)), min_size=3, max_size=3),
       st.sampled_from([DragDiffusionConfig, GoodDragConfig]))
def test_set_assignments(names, values, cls):
    config = ends_well(apply_overrides, cls(), [f"{n}={v}" for n, v in zip(names, values)])
    if config is not None:
        for name in ("latent_lr", "mask_weight", "stop_distance"):
            assert math.isfinite(getattr(config, name))


@given(st.lists(st.one_of(st.sampled_from(["--drag", "--freeu", "-v", "--set"]), st.text(max_size=6)), max_size=8))
def test_negative_values_join(argv):
    joined = join_signed_values(argv)
    assert "".join(joined).replace("=", "") == "".join(argv).replace("=", "")


# --- geometry --------------------------------------------------------------------------------------------------------

sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))
grids = st.tuples(st.integers(1, 40), st.integers(1, 40))


@given(sizes, grids, st.data())
def test_points_to_grid_and_back(size, grid, data):
    w, h = size
    gw, gh = grid
    xy = data.draw(st.lists(st.tuples(st.floats(0, w - 1), st.floats(0, h - 1)), min_size=1, max_size=5))
    rc = points.to_grid(xy, size, grid)
    assert rc.shape == (len(xy), 2)
    assert (rc[:, 0] >= 0).all() and (rc[:, 0] <= gh - 1).all() and (rc[:, 1] >= 0).all() and (rc[:, 1] <= gw - 1).all()
    back = points.to_image(rc, size, grid)
    for (x, y), (bx, by) in zip(xy, back):
        assert abs(bx - x) <= w / gw + 1e-4 and abs(by - y) <= h / gh + 1e-4  # within one grid cell


@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=30)), grids)
def test_mask_to_grid(mask, grid):
    out = points.mask_to_grid(mask, (grid[1], grid[0]))
    assert out.shape == (1, 1, grid[1], grid[0]) and set(out.unique().tolist()) <= {0.0, 1.0}


def feature_maps(max_side=8):
    return st.tuples(st.integers(1, 4), st.integers(1, max_side), st.integers(1, max_side), st.integers(0, 2**16)) \
        .map(lambda t: torch.randn(1, t[0], t[1], t[2], generator=torch.Generator().manual_seed(t[3])))


@given(feature_maps(), st.lists(st.tuples(st.floats(-20, 20), st.floats(-20, 20)), min_size=1, max_size=6))
def test_patch_sampling_is_bounded_and_exact_on_the_grid(features, rc):
    _, c, h, w = features.shape
    pos = torch.tensor(rc, dtype=torch.float32)
    out = motion.sample_points(features, pos)
    assert out.shape == (c, len(rc)) and torch.isfinite(out).all()
    lo, hi = features.amin(dim=(2, 3))[0], features.amax(dim=(2, 3))[0]
    assert ((out >= lo[:, None] - 1e-5) & (out <= hi[:, None] + 1e-5)).all()  # a convex mix of map values
    grid_pos = pos.round().clamp(min=0)
    grid_pos[:, 0] = grid_pos[:, 0].clamp(max=h - 1)
    grid_pos[:, 1] = grid_pos[:, 1].clamp(max=w - 1)
    exact = motion.sample_points(features, grid_pos)
    expected = features[0][:, grid_pos[:, 0].long(), grid_pos[:, 1].long()]
    torch.testing.assert_close(exact, expected)


@given(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), st.integers(0, 6), grids)
def test_windows_stay_on_the_map(center, radius, grid):
    size_hw = (grid[1], grid[0])
    window = motion.clipped_window(torch.tensor(center), radius, size_hw)
    assert window.shape[1] == 2 and len(window) <= (2 * radius + 1) ** 2
    assert (window >= 0).all() and (window[:, 0] < size_hw[0]).all() and (window[:, 1] < size_hw[1]).all()
    assert torch.equal(window, window.round())


@given(feature_maps(), st.integers(0, 5), st.data())
def test_tracking_stays_in_its_window(features, radius, data):
    _, c, h, w = features.shape
    n = data.draw(st.integers(1, 4))
    handles = torch.tensor(data.draw(st.lists(st.tuples(st.integers(0, h - 1), st.integers(0, w - 1)), min_size=n,
                                              max_size=n)), dtype=torch.float32)
    ref = tracking.reference_vectors_at(features, handles)
    assert ref.shape == (n, c)
    new = tracking.track_points(ref, features, handles, radius)
    assert new.shape == handles.shape
    assert (new[:, 0] >= 0).all() and (new[:, 0] < h).all() and (new[:, 1] >= 0).all() and (new[:, 1] < w).all()
    assert ((new - handles.round()).abs().amax(dim=1) <= radius).all()
    # the handle's own feature is in its window at distance 0: on an unchanged map every handle finds a perfect match
    dist = (features[0][:, new[:, 0].long(), new[:, 1].long()].T - ref).abs().sum(dim=1)
    assert torch.allclose(dist, torch.zeros_like(dist))


@given(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), st.tuples(st.floats(-100, 100), st.floats(-100, 100)),
       st.one_of(st.none(), st.floats(0.1, 10)))
def test_drag_direction(handle, target, beta):
    h, t = torch.tensor(handle), torch.tensor(target)
    assume(float((t - h).norm()) > 1e-3)
    d = motion.drag_direction(h, t, beta)
    expected = 1.0 if beta is None else min(beta, float((t - h).norm()))
    assert math.isclose(float(d.norm()), expected, rel_tol=1e-4)
