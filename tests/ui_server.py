"""``dragkit ui`` as a test server: started in a subprocess on a free 127.0.0.1 port with this checkout's sources, one
CPU thread, offline; the module's tests use it until they are done."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dragkit.testing import free_port

SRC = Path(__file__).resolve().parents[1] / "src"


def serve_ui(log_path: Path, *args: str):
    """``dragkit ui ARGS`` on a free port, until the test module is done: yields its url and process."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "dragkit", "ui", "--port", str(port), *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail("dragkit ui exited: " + log_path.read_text()[-2000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("dragkit ui did not start in 120 s")
            time.sleep(0.5)
    yield {"url": url, "proc": proc}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
