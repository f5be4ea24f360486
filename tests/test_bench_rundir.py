"""``run.json`` of a benchmark folder: one check for the dataset runner and the shapes benchmark."""

import json

import pytest

from dragkit.benchmark.rundir import RUN_META, check_run_dir, write_run_meta
from dragkit.benchmark.runner import check_run
from dragkit.types import DragError


def test_new_folder_takes_the_meta_and_nothing_is_written(tmp_path):
    meta = {"seed": 0, "config": {"a": 1}}
    assert check_run_dir(tmp_path, meta) == meta
    assert not (tmp_path / RUN_META).exists()
    write_run_meta(tmp_path, meta)
    assert json.loads((tmp_path / RUN_META).read_text()) == meta


def test_recorded_settings_must_agree(tmp_path):
    write_run_meta(tmp_path, {"seed": 0, "config": {"a": 1}, "resize": None})
    assert check_run_dir(tmp_path, {"seed": 0, "config": {"a": 1}, "resize": None})["seed"] == 0
    with pytest.raises(DragError, match=r"different config, resize; use another --out"):
        check_run_dir(tmp_path, {"seed": 0, "config": {"a": 2}, "resize": 64})


def test_merged_entries_and_open_keys(tmp_path):
    write_run_meta(tmp_path, {"seed": 0, "model": None, "variants": {"identity": {"config": None}}})
    meta = check_run_dir(tmp_path, {"seed": 0, "model": "m", "variants": {"dd": {"config": {"a": 1}}}},
                         merge=("variants",), open_keys=("model",))
    assert meta == {"seed": 0, "model": "m", "variants": {"identity": {"config": None}, "dd": {"config": {"a": 1}}}}
    write_run_meta(tmp_path, meta)
    # an identity-only run (no model) keeps the recorded model; another model or config is refused
    assert check_run_dir(tmp_path, {"seed": 0, "model": None, "variants": {}}, merge=("variants",),
                         open_keys=("model",))["model"] == "m"
    with pytest.raises(DragError, match="different model"):
        check_run_dir(tmp_path, {"seed": 0, "model": "n", "variants": {}}, merge=("variants",), open_keys=("model",))
    with pytest.raises(DragError, match="different 'dd' in variants"):
        check_run_dir(tmp_path, {"seed": 0, "model": "m", "variants": {"dd": {"config": {"a": 2}}}},
                      merge=("variants",), open_keys=("model",))


def test_dataset_runs_may_read_the_data_from_elsewhere(tmp_path):
    write_run_meta(tmp_path, {"dataset": "drag100", "data": "/old/place", "seed": 0})
    assert check_run(tmp_path, {"dataset": "drag100", "data": "/new/place", "seed": 0})["data"] == "/old/place"
    with pytest.raises(DragError, match="different dataset"):
        check_run(tmp_path, {"dataset": "dragbench", "data": "/old/place", "seed": 0})
