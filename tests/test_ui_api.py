"""The web app's designed API (issue 23): ``dragkit ui`` started in a subprocess with the tiny offline model on a
free 127.0.0.1 port, driven by ``gradio_client`` as a script would: the named endpoints only, an edit through
``/drag`` with points, mask and settings, and a mistake answered with one line."""

import numpy as np
import pytest
from PIL import Image

from ui_server import serve_ui

pytest.importorskip("gradio", reason="the web app needs gradio (pip install -e '.[ui]')")
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from dragkit.testing import save_tiny_model

    root = tmp_path_factory.mktemp("api")
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([xx * 2, yy * 3, 255 - xx * 2], -1).astype(np.uint8)).save(root / "img.png")
    mask = np.zeros((64, 96), np.uint8)
    mask[8:40, 8:48] = 255
    Image.fromarray(mask).save(root / "mask.png")
    model = save_tiny_model(root / "tiny")
    for served in serve_ui(root / "server.log", "--model", str(model), "--lora-steps", "2", "--set",
                           "optimization_steps=3", "--set", "num_inference_steps=10"):
        yield {"url": served["url"], "root": root, "log": root / "server.log"}


@pytest.mark.slow
def test_drag_through_gradio_client(server):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/drag", "/methods"}  # the page's own events are private
    assert not api["unnamed_endpoints"]
    params = [p["label"] for p in api["named_endpoints"]["/drag"]["parameters"]]
    assert params[0] == "image" and params[3] == "prompt" and params[4] == "method"
    assert "dragdiffusion" in client.predict(api_name="/methods")

    root = server["root"]
    image, record = client.predict(handle_file(str(root / "img.png")), handle_file(str(root / "mask.png")),
                                   {"handles": [[20, 20]], "targets": [[60, 20]]}, "a gradient", "dragdiffusion",
                                   {"optimization_steps": 2}, 0, api_name="/drag")
    assert Image.open(image).size == (96, 64)
    assert record["method"] == "dragdiffusion" and record["config"]["optimization_steps"] == 2
    assert record["request"]["handles"] == [[20, 20]] and len(record["final_handles"]) == 1
    # the target lies outside the painted region: the library's notice comes back with the record
    assert any("target 1" in n and "outside the editable region" in n for n in record["notices"])

    with pytest.raises(Exception, match="points must be"):
        client.predict(handle_file(str(root / "img.png")), None, {"handles": [[1, 1]]}, "", "dragdiffusion", {}, 0,
                       api_name="/drag")
