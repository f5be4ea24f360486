"""The web app in a real browser: Playwright drives Debian's headless Chromium against ``dragkit ui`` started in a
subprocess with the tiny offline model on a free 127.0.0.1 port.

Skipped (with the reason) when gradio, playwright or /usr/bin/chromium is missing; CI installs all three.
Set DRAGKIT_UI_SCREENSHOT=docs/ui.png to also refresh the README's screenshot.
"""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dragkit.ui.drawing import view_scale
from ui_server import serve_ui

pytestmark = pytest.mark.browser


pytest.importorskip("gradio", reason="the web app needs gradio (pip install -e '.[ui]')")
from browser_support import browser, expect  # noqa: E402,F401  (browser: the module's fixture)


def _picture(w, h, seed=0):
    """A small synthetic photo: a gradient with a disc and a bar, so that edits and screenshots show something."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([80 + 100 * xx / w, 120 + 80 * yy / h, 170 - 60 * xx / w], -1).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    d.ellipse([w * 0.2, h * 0.3, w * 0.45, h * 0.7], fill=(220, 60 + 40 * seed, 40))
    d.rectangle([w * 0.6, h * 0.2, w * 0.75, h * 0.8], fill=(250, 220, 60))
    return im


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from dragkit.testing import save_tiny_model

    root = tmp_path_factory.mktemp("ui")
    _picture(96, 64).save(root / "small.png")
    _picture(160, 120, seed=1).save(root / "wide.png")
    (root / "not_an_image.png").write_text("this is text, not a picture")
    return {"root": root, "model": save_tiny_model(root / "tiny")}


@pytest.fixture(scope="module")
def server(assets):
    yield from serve_ui(assets["root"] / "server.log", "--model", str(assets["model"]), "--lora-steps", "2",
                      "--set", "optimization_steps=3", "--set", "num_inference_steps=10",
                      "--lora-cache", str(assets["root"] / "lora"))


@pytest.fixture(scope="module")
def shapes_server(assets, shapes_model_dir):
    """The app on the shapes model, SolidDrag selected (a one-step method: Live on)."""
    yield from serve_ui(assets["root"] / "shapes_server.log", "--model", str(shapes_model_dir), "--method",
                      "soliddrag", "--lora-cache", "")


def _open(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server["url"])
    page.wait_for_selector("#input-editor canvas", state="attached")
    page.wait_for_timeout(1500)  # let the canvas editor finish initialising before the first upload
    return context, page


def _status(page):
    return expect(page.locator("#status"))


def _prep(page):
    """The background preparation's line (identity LoRA and inversion, started when the image is set)."""
    return expect(page.locator("#prepare-status"))


def _upload(page, path: Path):
    w, h = Image.open(path).size
    page.locator("#input-editor input[type=file]").set_input_files(str(path))
    _status(page).to_contain_text(f"Image {w}×{h}.")
    page.dragkit_size = (w, h)


def _paint(page):
    box = page.locator("#input-editor canvas").first.bounding_box()
    x0, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5
    for attempt in range(2):  # a stroke made while the canvas is still settling can be dropped by the editor
        page.mouse.move(x0, y)
        page.mouse.down()
        for k in range(12):
            page.mouse.move(x0 + k * box["width"] * 0.04, y + (k % 2) * 2)
        page.mouse.up()
        try:
            _status(page).to_contain_text("Editable region: painted.", timeout=10_000 * (attempt + 1))
            return
        except AssertionError:
            if attempt:
                raise


def _click(page, x, y, expected: str):
    """Click image pixel (x, y) on the points view (which shows the image upscaled by an integer factor)."""
    page.wait_for_function("(() => { const e = document.querySelector('#points-view img');"
                           " return e && e.complete && e.naturalWidth > 0; })()", timeout=90_000)
    img = page.locator("#points-view img")
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = view_scale(page.dragkit_size)
    assert (nw, nh) == (page.dragkit_size[0] * scale, page.dragkit_size[1] * scale)
    page.mouse.click(box["x"] + (x + 0.5) * scale * box["width"] / nw,
                     box["y"] + (y + 0.5) * scale * box["height"] / nh)
    _status(page).to_contain_text(expected)


def io_bytes(page, src):
    import io

    return io.BytesIO(page.request.get(src).body())


def _result_size(page):
    src = page.locator("#result img").get_attribute("src")
    return Image.open(io_bytes(page, src)).size


def test_edit_in_the_browser(browser, server, assets, tmp_path):
    context, page = _open(browser, server)
    _upload(page, assets["root"] / "wide.png")
    _paint(page)
    _click(page, 50, 60, "Click the target of handle 1.")
    _click(page, 70, 60, "1 drag.")
    _click(page, 120, 30, "Click the target of handle 2.")
    page.click("#undo-btn")  # undo the unpaired third point
    _status(page).to_contain_text("1 drag. Click another handle, or Run.")
    page.click("#run-btn")  # the upload started the preparation: Run waits for it (if need be), then only drags
    _status(page).to_contain_text("Done", timeout=90_000)
    text = page.locator("#status").inner_text()
    assert "identity LoRA and inversion reused" in text and "Final handles:" in text
    _prep(page).to_contain_text("Ready · identity LoRA and inversion prepared: Run only drags.")
    assert _result_size(page) == (160, 120)  # same size as the (non-square) input
    names = page.locator("#downloads").inner_text().replace("\n", "")
    for name in ("edited.png", "request.json", "edit.zip", "dragbench_sample.zip"):
        assert name in names
    link = page.locator('#downloads a[download="request.json"]').get_attribute("href")
    exported = json.loads(page.request.get(link).body())
    assert exported["request"]["handles"] == [[50, 60]] and exported["request"]["targets"] == [[70, 60]]
    assert exported["config"]["optimization_steps"] == 3 and exported["request"]["mask"] == "mask.png"
    shot = tmp_path / "ui_finished.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("DRAGKIT_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["DRAGKIT_UI_SCREENSHOT"])
    # a re-edit with new points: warm as well
    page.click("#clear-btn")
    _status(page).to_contain_text("0 drags.")
    _click(page, 40, 40, "Click the target of handle 1.")
    _click(page, 60, 50, "1 drag.")
    page.click("#run-btn")
    _status(page).to_contain_text("Done", timeout=90_000)
    assert "identity LoRA and inversion reused" in page.locator("#status").inner_text()
    context.close()


def test_sessions_are_independent(browser, server, assets):
    ctx_a, a = _open(browser, server)
    ctx_b, b = _open(browser, server)
    _upload(a, assets["root"] / "small.png")
    _click(a, 20, 30, "Click the target of handle 1.")
    _status(b).to_contain_text("Upload an image to start.")
    assert b.locator("#points-view img").count() == 0
    _upload(b, assets["root"] / "wide.png")
    _click(b, 10, 10, "Click the target of handle 1.")
    _click(b, 20, 20, "1 drag.")
    _click(b, 30, 30, "Click the target of handle 2.")
    # A still edits its own 96×64 image with its own single handle
    _click(a, 40, 30, "Image 96×64. 1 drag. Click another handle, or Run.")
    a.click("#run-btn")
    _status(a).to_contain_text("Done", timeout=90_000)
    assert _result_size(a) == (96, 64)
    _status(b).to_contain_text("Image 160×120. 1 drag. Click the target of handle 2.")
    assert b.locator("#result img").count() == 0
    ctx_a.close()
    ctx_b.close()


def test_bad_input_shows_a_message_and_import_replays(browser, server, assets, tmp_path):
    from dragkit.types import DragRequest
    from dragkit.config import DragDiffusionConfig
    from dragkit.ui import exchange

    context, page = _open(browser, server)
    page.click("#run-btn")
    _status(page).to_contain_text("Error: upload an image first")
    page.locator("#import-files input[type=file]").set_input_files(str(assets["root"] / "not_an_image.png"))
    # wait for this import's own message (the status already starts with "Error:"; a late one would overwrite the next)
    _status(page).to_contain_text("Error: nothing to import")
    page.locator("#input-editor input[type=file]").set_input_files(str(assets["root"] / "not_an_image.png"))
    _status(page).to_contain_text("could not be read as an image")
    _upload(page, assets["root"] / "small.png")
    page.click("#run-btn")
    _status(page).to_contain_text("Error: no points")
    _click(page, 30, 30, "Click the target of handle 1.")
    page.click("#run-btn")
    _status(page).to_contain_text("Error: handle 1 has no target")
    _paint(page)
    _click(page, 1, 1, "target 1 (1, 1) lies outside the editable region")
    page.click("#clear-btn")
    _status(page).to_contain_text("0 drags.")
    # replay a DragBench-style sample exported earlier (points, prompt, mask)
    mask = np.zeros((120, 160), np.uint8)
    mask[30:100, 20:120] = 1
    req = DragRequest(_picture(160, 120, seed=1), [(40, 60)], [(60, 60)], mask, "a red disc")
    files = exchange.export_edit(tmp_path / "exp", req, DragDiffusionConfig())
    page.locator("#import-files input[type=file]").set_input_files(str(files[-1]))
    _status(page).to_contain_text("Imported 1 drag(s).")
    _status(page).to_contain_text("Image 160×120. 1 drag.")
    page.dragkit_size = (160, 120)
    _status(page).to_contain_text("Editable region: painted.")
    expect(page.locator("#prompt textarea")).to_have_value("a red disc")
    page.click("#run-btn")
    _status(page).to_contain_text("Done", timeout=90_000)
    assert _result_size(page) == (160, 120)
    context.close()
    assert server["proc"].poll() is None  # nothing above took the server down


def test_cancel_stops_the_preparation_and_the_edit_and_frees_the_device(browser, server, assets):
    context, page = _open(browser, server)
    _upload(page, assets["root"] / "small.png")
    _click(page, 30, 30, "Click the target of handle 1.")
    _click(page, 40, 30, "1 drag.")
    _prep(page).to_contain_text("Ready", timeout=90_000)
    page.get_by_text("Advanced parameters").click()
    steps = page.locator("#param-dragdiffusion-lora_steps input")
    steps.fill("100000")
    steps.press("Tab")  # an entered setting the preparation depends on: it prepares again, far too long to finish
    _prep(page).to_contain_text("/100000", timeout=30_000)
    page.click("#run-btn")  # waits in the device queue behind the preparation
    _status(page).to_contain_text("Queued")
    page.click("#cancel-btn")  # stops both
    _status(page).to_contain_text("Cancelled.")
    _prep(page).to_contain_text("Preparation cancelled")
    # the cancelled preparation stays cancelled: Run trains the LoRA itself, and Cancel stops that edit too
    for attempt in range(3):  # a click while the cancelled Run has not yet answered is dropped by the page
        page.click("#run-btn")
        try:
            _status(page).to_contain_text("identity LoRA — step", timeout=15_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    page.click("#cancel-btn")
    _status(page).to_contain_text("Cancelled.")
    steps.fill("2")
    steps.press("Tab")  # back to the prepared setting: ready at once
    _prep(page).to_contain_text("Ready", timeout=30_000)
    page.click("#run-btn")  # runs only once the cancelled edit has released the model
    _status(page).to_contain_text("Done", timeout=90_000)
    assert "identity LoRA and inversion reused" in page.locator("#status").inner_text()
    assert _result_size(page) == (96, 64)
    context.close()


def test_generate_then_drag_the_generated_image(browser, server, assets):
    context, page = _open(browser, server)
    page.get_by_role("tab", name="Generate").click()
    for name, value in (("prompt", "a red disc"), ("num_inference_steps", "10"), ("width", "96"), ("height", "64")):
        box = page.locator(f"#gen-{name} textarea, #gen-{name} input").first
        box.fill(value)
        box.press("Tab")
    page.wait_for_timeout(500)  # let the values reach the app before Generate reads them
    page.click("#gen-btn")
    expect(page.locator("#gen-status")).to_contain_text("Done", timeout=90_000)
    expect(page.locator("#gen-status")).to_contain_text("96×64")
    page.click("#gen-to-drag")
    _status(page).to_contain_text("Generated image: it is dragged from its saved latents.")
    _status(page).to_contain_text("Image 96×64.")
    page.dragkit_size = (96, 64)
    _click(page, 30, 30, "Click the target of handle 1.")
    _click(page, 45, 32, "1 drag.")
    page.click("#run-btn")
    _status(page).to_contain_text("Done", timeout=90_000)
    _status(page).to_contain_text("generated image: dragged from its saved latents")
    assert _result_size(page) == (96, 64)
    context.close()


def test_a_huge_upload_is_downscaled_in_the_browser_with_a_note(browser, server, tmp_path):
    """A 12-megapixel photo would keep the canvas editor busy for a minute or more at full size; the page hands it
    a copy downscaled to --upload-max-side (1024) at once, and says so under the editor."""
    big = tmp_path / "big.jpg"
    _picture(4096, 3072).save(big, quality=85)
    context, page = _open(browser, server)
    page.locator("#input-editor input[type=file]").set_input_files(str(big))
    _status(page).to_contain_text("Image 1024×768.", timeout=30_000)
    expect(page.locator("#dragkit-upload-note")).to_contain_text("The image is 4096×3072")
    context.close()
    assert server["proc"].poll() is None


def test_live_re_edit_with_a_one_step_method(browser, shapes_server, assets):
    """SolidDrag on the shapes model: completing a pair runs the drag at once (Live is on), no Run."""
    context, page = _open(browser, shapes_server)
    expect(page.locator("#live input")).to_be_checked()
    _upload(page, assets["root"] / "small.png")
    _prep(page).to_contain_text("Ready", timeout=90_000)
    _click(page, 30, 30, "Click the target of handle 1.")
    _click(page, 40, 30, "Live re-edit")
    _status(page).to_contain_text("inversion reused")
    assert _result_size(page) == (96, 64)
    first = page.locator("#result img").get_attribute("src")
    _click(page, 70, 20, "Click the target of handle 2.")
    _click(page, 75, 30, "Live re-edit")
    _status(page).to_contain_text(re.compile(r"Final handles: \(\d+, \d+\), \(\d+, \d+\)\."))  # both pairs
    expect(page.locator("#result img")).not_to_have_attribute("src", first)
    context.close()
    assert shapes_server["proc"].poll() is None
