"""scripts/device_check.sh, the one prepared device check, on its CPU path: every row (eager and compiled, each a cold
edit, the preparation and a warm re-edit per method) runs under a timeout inside the run's budget, and the summary
(environment, step outcomes, benchmark tables with UNet calls, warm ÷ cold) is always written."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from dragkit.config import default_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "device_check.sh"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def check(out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--arch", "tiny", "--size", "64", "--quick",
                           "--no-tests", "--out", str(out), *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


@pytest.mark.slow
def test_device_check_cpu_path_writes_its_summary(tmp_path):
    """The eager rows only: the compiled rows are the same command with --compile (dynamo's tracing of the tiny UNet
    costs ≈ 30 s here; compiling is tested in tests/test_compile.py, and the compiled counts on the GPU). The
    fastdrag row adds the one-step methods' rows, at paper defaults, to the same file."""
    out = tmp_path / "dc"
    r = check(out, "--only", "fp32,fastdrag")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "- environment: ok" in summary and "- bench tiny fp32: ok" in summary, summary
    assert "- bench tiny fp32 fastdrag soliddrag: ok" in summary and "| soliddrag | warm 2 (" in summary, summary
    assert "| gooddrag | warm (" in summary and "UNet fwd/bwd" in summary and "× cold edit" in summary
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["diffusers"]
    steps = json.loads((out / "steps.json").read_text())
    assert all(s["outcome"] == "ok" for s in steps["steps"]) and steps["elapsed_s"] <= steps["budget_s"]

    eager = json.loads((out / "bench_tiny_fp32.json").read_text())
    founding, onestep = eager[:6], eager[6:]
    for rows, methods in ((founding, ("dragdiffusion", "gooddrag")),):
        assert [(r["method"], r["run"]) for r in rows] == [(m, run) for m in methods
                                                           for run in ("cold", "prepare", "warm")]
        for cold, prepare, warm in zip(rows[::3], rows[1::3], rows[2::3]):
            assert cold["seconds"]["total"] > 0 and warm["seconds"]["total"] > 0 and "vs_cold" in warm
            lora = cold["unet"]["lora"]
            assert lora["forward"] == lora["backward"] == 2  # --quick: lora_steps=2, one call per batch
            assert prepare["unet"]["lora"] == lora and prepare["unet"]["optimization"]["forward"] == 0
            assert warm["lora_cached"] and warm["inversion_cached"]
            assert warm["unet"]["lora"]["forward"] == warm["unet"]["inversion"]["forward"] == 0
            for row in (cold, warm):  # one backward per Adam step, and the forwards that ended the drag
                drag = row["unet"]["optimization"]
                assert drag["backward"] == row["adam_steps"] > 0 and drag["forward"] >= drag["backward"]
    assert not any(r["compile"] for r in eager)

    # FastDrag and SolidDrag at paper defaults (--quick cuts nothing of theirs): no LoRA, k = round(T·strength)
    # inversion forwards (FastDrag 7), no optimiser step (SolidDrag: one partial forward to the feature block), k
    # denoising forwards; a warm re-edit makes no inversion call.
    assert [(r["method"], r["run"]) for r in onestep] == [(m, run) for m in ("fastdrag", "soliddrag")
                                                          for run in ("cold", "prepare", "warm", "warm 2")]
    for cold, prepare, *warms in (onestep[:4], onestep[4:]):
        partial, k = int(cold["method"] == "soliddrag"), default_config(cold["method"]).inverted_steps
        assert cold["unet"]["lora"]["forward"] == 0 and cold["adam_steps"] == 0
        assert cold["unet"]["inversion"] == {"forward": k, "partial": 0, "backward": 0} == prepare["unet"]["inversion"]
        for row in (cold, *warms):
            assert row["unet"]["optimization"] == {"forward": 0, "partial": partial, "backward": 0}
            assert row["unet"]["denoising"]["forward"] == k
        for warm in warms:
            assert warm["inversion_cached"] and warm["unet"]["inversion"]["forward"] == 0 and "vs_cold" in warm


@pytest.mark.slow
def test_device_check_keeps_to_its_budget(tmp_path):
    out = tmp_path / "dc"
    r = check(out, "--budget", "25", "--only", "fp32,fp32-compile", timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    steps = json.loads((out / "steps.json").read_text())["steps"]
    assert [s["outcome"] for s in steps] == ["skipped"] * 3  # environment and both rows: too little time left
    assert "bench tiny fp32: skipped" in (out / "summary.md").read_text()


def test_device_check_refuses_an_unknown_option():
    r = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
