"""`--ray`: benchmark samples spread over a local Ray cluster of two CPU workers with the tiny model — the same files
as a single-process run, a worker killed mid-run replaced and its sample redone — and the one-line error without
Ray. The Ray tests are skipped (with the reason) when Ray is not installed (``pip install 'dragkit[cluster]'``)."""

import functools
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from dragkit.benchmark.runner import run_benchmark
from dragkit.editor import DragEditor
from dragkit.config import DragDiffusionConfig
from dragkit.types import DragError, DragResult

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'dragkit[cluster]')")
FAST = DragDiffusionConfig(lora_steps=2, optimization_steps=2, num_inference_steps=6)
THREADS = torch.get_num_threads()  # the workers use as many, so that their floats are this process's floats
# DragBench dev samples compared (CI: the first 4, ~30 s with Ray's start; DRAGKIT_TEST_RAY_SAMPLES=20: all of them)
SAMPLES = int(os.environ.get("DRAGKIT_TEST_RAY_SAMPLES", "4"))


def test_ray_flag_without_ray_is_one_line(monkeypatch, capsys, tmp_path):
    from dragkit.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    (tmp_path / "d" / "a_0").mkdir(parents=True)
    code = main(["bench", "drag100", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'dragkit[cluster]'" in err[0]


class EchoEditor:
    """Returns the input unchanged; its second edit fails."""

    def __init__(self):
        self.calls = 0

    def edit(self, request, config, callback=None, seed=0):
        self.calls += 1
        if self.calls == 2:
            raise DragError("cannot drag this one")
        return DragResult(request.image, list(request.handles), [], timings={"total": 0.1}, steps=1)


def test_a_pool_driven_run_writes_what_a_plain_run_writes(dragbench_dir, tmp_path):
    """The driver's side of --ray, without Ray: LocalPool runs the jobs in this process."""
    from dragkit.benchmark.cluster import LocalPool

    args = dict(resize=64, limit=3)
    plain = run_benchmark(EchoEditor(), FAST, "dragbench", dragbench_dir, tmp_path / "plain", **args)
    with LocalPool(EchoEditor) as pool:
        pooled = run_benchmark(None, FAST, "dragbench", dragbench_dir, tmp_path / "pool", pool=pool, **args)
    assert (pooled.done, pooled.failed) == (plain.done, plain.failed) and len(plain.done) == 2
    [(failed, message)] = plain.failed.items()
    assert message == "cannot drag this one"
    assert (tmp_path / "pool" / failed / "error.json").read_text() == (tmp_path / "plain" / failed / "error.json"
                                                                        ).read_text()
    assert _records(tmp_path / "pool") == _records(tmp_path / "plain")
    record = json.loads((tmp_path / "pool" / plain.done[0] / "result.json").read_text())
    assert record["request"]["mask"] == "mask.png" and record["request"]["image"] == "input.png"


class KillSecondEdit:
    """A DragEditor whose process dies (SIGKILL) at the second edit of the whole cluster (a marker file decides)."""

    def __init__(self, model_dir: str, marker_dir: str):
        self.editor = DragEditor.from_pretrained(model_dir, device="cpu", dtype="fp32")
        self.marker_dir = Path(marker_dir)

    def edit(self, request, config, callback=None, seed=0):
        for i in range(1, 1000):
            try:
                os.close(os.open(self.marker_dir / f"edit-{i}", os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                continue
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.editor.edit(request, config, callback=callback, seed=seed)


def _records(run: Path) -> dict:
    out = {}
    for path in sorted(run.rglob("result.json")):
        record = json.loads(path.read_text())
        record.pop("timings")
        out[path.parent.relative_to(run).as_posix()] = (record, (path.parent / "dragged_image.png").read_bytes(),
                                                        (path.parent / "mask.png").read_bytes())
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2 * THREADS, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.ray
@needs_ray
def test_two_ray_workers_give_the_single_process_results_and_survive_a_killed_worker(
        tiny_model_dir, dragbench_dir, tmp_path, local_ray):
    from dragkit.benchmark.cluster import RayPool

    args = dict(model="tiny", seed=0, resize=64, limit=SAMPLES)
    editor = DragEditor.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    single = run_benchmark(editor, FAST, "dragbench", dragbench_dir, tmp_path / "single", **args)
    assert len(single.done) == min(SAMPLES, 20) and not single.failed

    (tmp_path / "marks").mkdir()
    seen = []
    load = functools.partial(KillSecondEdit, str(tiny_model_dir), str(tmp_path / "marks"))
    with RayPool(load, workers=2, cpus_per_worker=THREADS) as pool:
        summary = run_benchmark(None, FAST, "dragbench", dragbench_dir, tmp_path / "ray", pool=pool,
                                on_sample=lambda sid, status: seen.append(status), **args)
        replaced, workers = pool.replaced, len(pool.actors)
    assert replaced >= 1 and workers == 2, (replaced, workers)  # the killed worker was replaced
    assert sorted(summary.done) == sorted(single.done) and not summary.failed and seen == ["done"] * len(single.done)
    marks = len(list((tmp_path / "marks").iterdir()))
    assert marks >= len(single.done) + 1  # every sample, plus the one redone after the kill
    assert json.loads((tmp_path / "ray" / "run.json").read_text()) == \
        json.loads((tmp_path / "single" / "run.json").read_text())
    assert _records(tmp_path / "ray") == _records(tmp_path / "single")  # same images, handles, DAI, masks
    assert not list((tmp_path / "ray").rglob(".*"))  # no half-written temporary files

    with RayPool(load, workers=2, cpus_per_worker=THREADS) as pool:  # resuming: nothing left, no worker started
        again = run_benchmark(None, FAST, "dragbench", dragbench_dir, tmp_path / "ray", pool=pool, **args)
        assert len(again.skipped) == len(single.done) and not pool.actors


@pytest.mark.ray
@needs_ray
def test_an_editor_that_cannot_load_stops_the_ray_run_in_one_line(tmp_path, dragbench_dir, local_ray):
    from dragkit.benchmark.cluster import RayPool

    from dragkit.io import load_json

    load = functools.partial(load_json, tmp_path / "missing.json", "model")  # fails fast, as a missing model would
    with RayPool(load, workers=1) as pool, pytest.raises(DragError, match="could not load the model: model not found"):
        run_benchmark(None, FAST, "dragbench", dragbench_dir, tmp_path / "run", limit=1, pool=pool)
    with pytest.raises(DragError, match="do not fit the cluster"):
        RayPool(load, workers=64).plan({"CPU": 2.0}, jobs=100)
