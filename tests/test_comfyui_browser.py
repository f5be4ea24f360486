"""The ComfyUI points widget (dragkit/comfyui/web/dragkit_points.js) in a real browser: Playwright drives Debian's
headless Chromium against a small static page that stubs ComfyUI's ``app`` / ``api`` modules (served at ComfyUI's
paths, so the extension's own imports resolve), a Load Image node feeding the drag node, and ComfyUI's ``/view``.

Skipped (with the reason) when playwright or /usr/bin/chromium is missing. Set DRAGKIT_COMFYUI_SCREENSHOT=docs/
comfyui.png to also refresh the README's screenshot.
"""

import base64
import io
import json
import os
import shutil
import threading
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from dragkit.comfyui import nodes
from dragkit.shapes.tasks import make_tasks

pytestmark = pytest.mark.browser

WEB = Path(nodes.__file__).parent / "web"

from browser_support import browser, expect  # noqa: E402,F401  (browser: the module's fixture)

APP_JS = """
export const app = {
  extensions: [],
  graph: null,
  registerExtension(ext) { this.extensions.push(ext); },
};
"""
API_JS = "export const api = { apiURL: (path) => path };\n"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>dragkit points widget</title>
<style>
  body { background: #202020; margin: 0; padding: 24px; font: 13px sans-serif; color: #ddd; display: flex; gap: 32px; }
  .node { background: #353535; border-radius: 8px; box-shadow: 0 4px 14px #0008; width: 340px; }
  .title { background: #2a2a2a; border-radius: 8px 8px 0 0; padding: 6px 10px; color: #eee; font-weight: bold; }
  .title.load { border-left: 4px solid #4a8; } .title.drag { border-left: 4px solid #c63; }
  .body { padding: 8px 10px; display: flex; flex-direction: column; gap: 6px; }
  .slot { color: #aaa; } .slot::before { content: "\\25CF  "; color: #8c8; }
  .widget { background: #222; border-radius: 10px; padding: 3px 10px; display: flex; justify-content: space-between; }
  textarea { background: #222; color: #ddd; border: 1px solid #444; border-radius: 4px; width: 100%;
             box-sizing: border-box; font: 12px monospace; }
  button { background: #444; color: #eee; border: 1px solid #555; border-radius: 4px; padding: 2px 8px; }
  #load img { width: 100%; image-rendering: pixelated; }
  canvas { image-rendering: pixelated; }
</style></head>
<body>
  <div class="node" id="load"><div class="title load">Load Image</div><div class="body">
    <div class="widget"><span>image</span><span>dragkit_shapes_scene.png</span></div>
    <img id="load-preview" src="/view?filename=dragkit_shapes_scene.png&amp;type=input&amp;subfolder="></div></div>
  <div class="node"><div class="title drag">Drag image (dragkit)</div><div class="body" id="drag">
    <div class="slot">editor</div><div class="slot">image</div><div class="slot">mask</div>
    <textarea id="points" rows="3"></textarea>
    <div class="widget"><span>prompt</span><span>magenta square, purple diamond, …</span></div>
    <div class="widget"><span>method</span><span>gooddrag</span></div>
    <div class="widget"><span>seed</span><span>0</span></div>
    <div class="widget"><span>lora_steps</span><span>-1</span></div>
  </div></div>
<script type="module">
  import { app } from "/scripts/app.js";
  await import("/extensions/dragkit/dragkit_points.js");

  class Node {  // the few LGraphNode members the extension uses
    constructor(id) { this.id = id; this.widgets = []; this.inputs = []; this.graph = app.graph; }
    addDOMWidget(name, type, element, options) {
      document.getElementById("drag").insertBefore(element, document.getElementById("points").nextSibling);
      const w = { name, type, element, options };
      this.widgets.push(w);
      return w;
    }
    setDirtyCanvas() {}
  }
  class DragkitDrag extends Node {}
  const load = new Node(1);
  load.widgets.push({ name: "image", value: "dragkit_shapes_scene.png" });
  const links = new Map([[7, { id: 7, origin_id: 1, origin_slot: 0, target_id: 2, target_slot: 1 }]]);
  app.graph = { links, getNodeById: (id) => (id === 1 ? load : id === 2 ? window.dragNode : null) };
  load.graph = app.graph;
  for (const ext of app.extensions) await ext.beforeRegisterNodeDef?.(DragkitDrag, { name: "DragkitDrag" }, app);
  const node = new DragkitDrag(2);
  node.graph = app.graph;
  window.dragNode = node;
  node.inputs = [{ name: "editor", link: 3 }, { name: "image", link: 7 }, { name: "mask", link: null }];
  const area = document.getElementById("points");
  area.value = '{"handles": [], "targets": []}';
  node.widgets.push({  // ComfyUI's multiline STRING widget: its value is the textarea's
    name: "points", inputEl: area,
    get value() { return area.value; }, set value(v) { area.value = v; },
  });
  node.onNodeCreated?.();
  window.ready = true;
</script></body></html>
"""


class _Handler(SimpleHTTPRequestHandler):
    """ComfyUI's layout: /scripts/{app,api}.js, /extensions/dragkit/<WEB_DIRECTORY files>, /view?filename=…"""

    def __init__(self, *args, root: Path, **kwargs):
        self.root = root
        super().__init__(*args, directory=str(root), **kwargs)

    def translate_path(self, path):
        url = urllib.parse.urlparse(path)
        if url.path == "/view":
            name = urllib.parse.parse_qs(url.query)["filename"][0]
            return str(self.root / "input" / Path(name).name)
        if url.path.startswith("/extensions/dragkit/"):
            return str(WEB / Path(url.path).name)
        return super().translate_path(path)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy_page")
    (root / "scripts").mkdir()
    (root / "scripts" / "app.js").write_text(APP_JS)
    (root / "scripts" / "api.js").write_text(API_JS)
    (root / "index.html").write_text(PAGE)
    (root / "input").mkdir()
    shutil.copy(WEB.parent / "examples" / "dragkit_shapes_scene.png", root / "input")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, root=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": 820, "height": 720}, device_scale_factor=1)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site)
    page.wait_for_function("window.ready === true")
    yield page
    assert not errors, errors
    context.close()


def _status(page):
    return expect(page.locator(".dragkit-status"))


def _points(page) -> dict:
    return json.loads(page.locator("#points").input_value())


def _click(page, x, y, size=(64, 64)):
    """Click image pixel (x, y) on the widget's canvas."""
    box = page.locator(".dragkit-points canvas").bounding_box()
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / size[0], box["y"] + (y + 0.5) * box["height"] / size[1])


def test_click_pairs_undo_clear(page):
    _status(page).to_contain_text("0 pairs · 64×64")  # the Load Image node's file, through ComfyUI's /view
    _click(page, 50, 40)
    _status(page).to_contain_text("click the target")
    assert _points(page) == {"handles": [], "targets": []}  # a pending handle is never written
    _click(page, 34, 44)
    _status(page).to_contain_text("1 pair ·")
    assert _points(page) == {"handles": [[50, 40]], "targets": [[34, 44]]}
    assert nodes.parse_points(page.locator("#points").input_value()) == ([[50, 40]], [[34, 44]])
    shot = page.screenshot(full_page=True)
    if os.environ.get("DRAGKIT_COMFYUI_SCREENSHOT"):
        Path(os.environ["DRAGKIT_COMFYUI_SCREENSHOT"]).write_bytes(shot)
    _click(page, 10, 10)
    _click(page, 20, 12)
    assert _points(page)["handles"] == [[50, 40], [10, 10]]
    page.click(".dragkit-undo")
    assert _points(page) == {"handles": [[50, 40]], "targets": [[34, 44]]}
    _click(page, 5, 5)
    page.click(".dragkit-undo")  # drops the pending handle only
    _status(page).to_contain_text("1 pair ·")
    page.click(".dragkit-clear")
    assert _points(page) == {"handles": [], "targets": []}
    _status(page).to_contain_text("0 pairs")


def test_typed_json_is_drawn_and_kept(page):
    _status(page).to_contain_text("64×64")
    page.locator("#points").fill('{"handles": [[1, 2], [3, 4]], "targets": [[5, 6], [7, 8]]}')
    _status(page).to_contain_text("2 pairs")
    page.locator("#points").fill("{not json")
    _status(page).to_contain_text("not a points JSON")
    _click(page, 10, 10)
    _click(page, 20, 20)
    assert page.locator("#points").input_value() == "{not json"  # never overwritten by clicks
    page.click(".dragkit-clear")
    assert _points(page) == {"handles": [], "targets": []}


def test_image_from_the_run_message(page):
    """Without a Load Image upstream, the image the node sent after a run (a thumbnail, with the full size) is shown,
    and clicks are pixels of the full-size image."""
    thumb = Image.fromarray(make_tasks(1)[0].image()).resize((48, 24))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    page.evaluate("""(url) => {
        const node = window.dragNode;
        node.inputs[1].link = null;
        node.onConnectionsChange();
        node.onExecuted({ dragkit_input: [{ image: url, width: 960, height: 480 }] });
    }""", url)
    _status(page).to_contain_text("960×480")
    _click(page, 480, 240, (960, 480))
    _click(page, 900, 30, (960, 480))
    (hx, hy), (tx, ty) = _points(page)["handles"][0], _points(page)["targets"][0]
    assert abs(hx - 480) <= 2 and abs(hy - 240) <= 2 and abs(tx - 900) <= 2 and abs(ty - 30) <= 2
