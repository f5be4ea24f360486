"""scripts/device_check.sh, the one prepared device check, on its CPU path: every step runs under a timeout and the
summary (environment, step outcomes, benchmark tables) is always written."""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_cpu_path_writes_its_summary(tmp_path):
    out = tmp_path / "dc"
    r = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--device", "cpu", "--arch", "tiny",
                        "--size", "64", "--quick", "--no-tests", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "- environment: ok" in summary and "- bench tiny fp32: ok" in summary and "| gooddrag |" in summary
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] and env["diffusers"]
    rows = json.loads((out / "bench_tiny_fp32.json").read_text())
    assert [row["method"] for row in rows] == ["dragdiffusion", "gooddrag"]
    assert all(row["seconds"]["total"] > 0 for row in rows)


def test_device_check_refuses_an_unknown_option():
    r = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--bogus"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
