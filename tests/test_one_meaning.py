"""One word, one meaning (issue 22): names that used to mean two things now name one each. Light: no model."""


def test_edit_job_is_the_ray_payload_and_the_ui_runs_have_their_own_names():
    from dragkit.benchmark.cluster import EditJob
    from dragkit.ui import job

    assert EditJob.__module__ == "dragkit.benchmark.cluster"  # the benchmark's (request, config, seed) payload
    assert issubclass(job.EditRun, job.DeviceRun) and issubclass(job.PrepareRun, job.DeviceRun)
    assert not hasattr(job, "EditJob") and not hasattr(job, "PrepareJob")

