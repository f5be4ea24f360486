"""One word, one meaning (issue 22): names that used to mean two things now name one each. Light: no model."""

import pytest


def test_edit_job_is_the_ray_payload_and_the_ui_runs_have_their_own_names():
    from dragkit.benchmark.cluster import EditJob
    from dragkit.ui import job

    assert EditJob.__module__ == "dragkit.benchmark.cluster"  # the benchmark's (request, config, seed) payload
    assert issubclass(job.EditRun, job.DeviceRun) and issubclass(job.PrepareRun, job.DeviceRun)
    assert not hasattr(job, "EditJob") and not hasattr(job, "PrepareJob")


@pytest.mark.parametrize("flag", ["--upload-max-side", "--max-side"])
def test_the_web_apps_upload_cap_is_upload_max_side_and_max_side_stays_its_old_flag(flag):
    from dragkit.cli import build_parser

    args = build_parser().parse_args(["ui", flag, "300"])
    assert args.upload_max_side == 300 and not hasattr(args, "max_side")  # the config's max_side is --set max_side=N


def test_the_ui_sessions_int_points_are_pixel_points():
    from dragkit import types
    from dragkit.ui import session as ss

    assert types.Point == tuple[float, float] and ss.PixelPoint == tuple[int, int]
    assert not hasattr(ss, "Point")


def test_the_jobs_failure_status_is_worded_in_texts():
    from pathlib import Path

    from dragkit.types import DragError, EditCancelled
    from dragkit.ui import job, texts

    assert texts.failure(EditCancelled()) == texts.CANCELLED == "Cancelled."
    assert texts.failure(DragError("bad point\nmore")) == "**Error:** bad point"
    failed = "**Error:** the preparation failed: OSError: disk full"
    assert texts.failure(OSError("disk full"), "preparation") == failed
    assert texts.failure(RuntimeError()) == "**Error:** the edit failed: RuntimeError"
    source = Path(job.__file__).read_text()
    assert "\"**" not in source and "failed:" not in source and "Cancelled.\"" not in source  # worded in texts.py
