"""Benchmark dataset readers on the shared DragBench / Drag100 samples, and the pickle guard."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit.datasets import (iter_samples, read_drag100_sample, read_dragbench_sample, read_sample, resize_request,
                              sample_ids)
from dragkit.types import DragError, DragRequest


def test_dragbench_reads_every_sample_with_category_and_id(dragbench_dir):
    samples = list(iter_samples("dragbench", dragbench_dir))
    assert len(samples) == 20
    sizes, pair_counts = set(), set()
    for s in samples:
        category, name = s.sample_id.split("/")
        assert s.category == category and (dragbench_dir / s.sample_id / "meta_data.pkl").is_file()
        req = s.request
        assert isinstance(req, DragRequest) and req.prompt
        w, h = req.size
        assert w == 512 and req.mask is not None and req.mask.shape == (h, w) and set(np.unique(req.mask)) <= {0, 1}
        sizes.add(h)
        pair_counts.add(len(req.handles))
    assert {325, 768} <= sizes and any(h % 8 for h in sizes)  # odd heights are read as they are
    assert max(pair_counts) >= 3  # multi-point samples
    assert len({s.category for s in samples}) == 10


def test_dragbench_points_alternate_handle_target(dragbench_dir):
    sid = sample_ids("dragbench", dragbench_dir)[0]
    meta = pickle.load(open(dragbench_dir / sid / "meta_data.pkl", "rb"))  # trusted local test data
    req = read_sample("dragbench", dragbench_dir, sid).request
    pts = [tuple(map(float, p)) for p in meta["points"]]
    assert list(req.handles) == pts[0::2] and list(req.targets) == pts[1::2]
    assert req.prompt == meta["prompt"]


def test_drag100_reads_every_sample(drag100_dir):
    samples = list(iter_samples("drag100", drag100_dir))
    assert len(samples) == 80
    heights = set()
    for s in samples:
        assert s.category is None and "/" not in s.sample_id
        req = s.request
        pts = json.loads((drag100_dir / s.sample_id / "points.json").read_text())["points"]
        assert len(req.handles) == len(pts) // 2 and list(req.handles[0]) == [float(v) for v in pts[0]]
        assert req.prompt == "" and req.mask.shape == (req.size[1], req.size[0])
        assert set(np.unique(req.mask)) <= {0, 1} and req.mask.any()
        heights.add(req.size[1])
    assert len(heights) > 1


def _write_drag100(root: Path, points, size=(40, 30)) -> Path:
    d = root / "s0"
    d.mkdir(parents=True)
    Image.new("RGB", size, (10, 20, 30)).save(d / "original.jpg")
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[5:10, 5:10] = 255
    Image.fromarray(mask).save(d / "mask.png")
    (d / "points.json").write_text(json.dumps({"points": points}))
    return d


def test_drag100_reader_on_hand_made_sample(tmp_path):
    d = _write_drag100(tmp_path, [[1, 2], [3, 4], [5, 6], [7, 8]])
    req = read_drag100_sample(d)
    assert req.handles == ((1.0, 2.0), (5.0, 6.0)) and req.targets == ((3.0, 4.0), (7.0, 8.0))
    assert req.mask.sum() == 25 and req.mask[5, 5] == 1
    assert sample_ids("drag100", tmp_path) == ["s0"]


def test_drag100_reader_errors_are_one_line(tmp_path):
    d = _write_drag100(tmp_path, [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(DragError, match="odd number of points"):
        read_drag100_sample(d)
    (d / "points.json").write_text("{not json")
    with pytest.raises(DragError, match="not valid JSON"):
        read_drag100_sample(d)
    with pytest.raises(DragError, match="no drag100 samples"):
        sample_ids("drag100", tmp_path / "s0")
    with pytest.raises(DragError, match="data folder not found"):
        sample_ids("drag100", tmp_path / "missing")
    with pytest.raises(DragError, match="unknown dataset"):
        sample_ids("dragbenchx", tmp_path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_dragbench_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    d = tmp_path / "cat" / "evil"
    d.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(d / "original_image.png")
    (d / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "x", "points": _RunsCode(marker)}))
    with pytest.raises(DragError) as err:
        read_dragbench_sample(d)
    msg = str(err.value)
    assert "refusing to load" in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()
    # a genuine pickle of numpy arrays and builtins is read
    (d / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "p", "points": [[1, 2], [3, 4]],
                                                    "mask": np.ones((16, 16), np.uint8)}))
    assert read_sample("dragbench", tmp_path, "cat/evil").request.handles == ((1.0, 2.0),)


def test_resize_request_scales_points_and_mask():
    mask = np.zeros((60, 80), np.uint8)
    mask[:, 40:] = 1
    req = DragRequest(Image.new("RGB", (80, 60)), [(0, 0), (79, 59)], [(40, 30), (10, 20)], mask, "p")
    small = resize_request(req, 40)
    assert small.size == (40, 30) and small.mask.shape == (30, 40)
    assert small.mask[:, 20:].all() and not small.mask[:, :20].any()
    assert small.handles == ((0.0, 0.0), (39.0, 29.0)) and small.targets == ((20.0, 15.0), (5.0, 10.0))
    assert small.prompt == "p" and resize_request(req, 80) is req
