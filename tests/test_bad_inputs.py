"""Issue #14's catalogue: every bad input — on the command line, through the Python API, in the web app's handlers —
gets one clear line and leaves nothing half-written.

CLI cases run ``dragkit.cli.main`` in-process: exit code 2, exactly one line on stderr ("dragkit: error: …"), no
traceback, no file in the output folder and the inputs untouched. The tiny model is loaded once for the session and
handed to every command that names it (``DragEditor.from_pretrained`` patched), so that cases that fail after loading
cost milliseconds. API cases expect a one-line :class:`DragError`; web-app cases a one-line "**Error:** …" in the
page.
"""

import dataclasses
import hashlib
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.cli import main
from dragkit.types import DragError, DragRequest

TINY_SHORT = "tiny-with-100-train-timesteps"  # a model name the patched loader answers with a 100-timestep scheduler
FAST = ["--lora-steps", "0", "--set", "optimization_steps=3", "--set", "num_inference_steps=10", "--no-progress"]


@pytest.fixture
def cached_models(tiny_model, tiny_model_dir, monkeypatch):
    """``DragEditor.from_pretrained`` answering the tiny model's folder (and :data:`TINY_SHORT`) from memory."""
    from dragkit.editor import DragEditor

    original = DragEditor.from_pretrained.__func__
    short = dataclasses.replace(tiny_model, scheduler_config={**dict(tiny_model.scheduler_config),
                                                              "num_train_timesteps": 100})

    def from_pretrained(cls, model="", *, lora_cache_dir=None, **kwargs):
        if str(model) == str(tiny_model_dir):
            return cls(tiny_model)
        if str(model) == TINY_SHORT:
            return cls(short)
        return original(cls, model, lora_cache_dir=lora_cache_dir, **kwargs)

    monkeypatch.setattr(DragEditor, "from_pretrained", classmethod(from_pretrained))
    return tiny_model_dir


def _png_header(path: Path, w: int, h: int) -> None:
    """A PNG that declares w×h pixels and holds none (enough for a reader that checks sizes before decoding)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(data + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(d / "photo.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[8:40, 8:56] = 255
    Image.fromarray(mask).save(d / "mask.png")
    Image.new("L", (10, 10), 255).save(d / "small_mask.png")
    Image.new("L", (10, 10), 0).save(d / "small_empty_mask.png")  # empty AND the wrong size: refused all the same
    dot = np.zeros((48, 64), np.uint8)
    dot[20, 30] = 255  # one painted pixel: no latent cell of the 8×6 latent grid
    Image.fromarray(dot).save(d / "dot_mask.png")
    Image.new("RGB", (4, 4), (10, 20, 30)).save(d / "tiny.png")
    Image.new("RGB", (1, 1)).save(d / "one.png")
    _png_header(d / "huge.png", 20000, 20000)
    (d / "text.png").write_text("not an image")
    (d / "truncated.png").write_bytes((d / "photo.png").read_bytes()[:200])
    (d / "folder.png").mkdir()
    (d / "folder.gif").mkdir()
    (d / "model.ckpt").write_bytes(b"\x80\x04K\x01.")
    for name, req in {"three_coords": {"handles": [[1, 2, 3]], "targets": [[4, 5]]},
                      "image_number": {"image": 7}, "no_image": {"handles": [[1, 2]], "targets": [[3, 4]]},
                      "mask_number": {"mask": 5}, "prompt_list": {"prompt": ["a"]},
                      "bad_inline_mask": {"mask": {"size": [64, 48], "rle": [5]}},
                      "handles_string": {"handles": "1,2"}}.items():
        base = {"image": "photo.png", "handles": [[10, 10]], "targets": [[20, 12]]}
        (d / f"{name}.json").write_text(json.dumps({k: v for k, v in {**base, **req}.items()
                                                    if not (name == "no_image" and k == "image")}))
    (d / "not_json.json").write_text("{not json")
    (d / "ok.json").write_text(json.dumps({"image": "photo.png", "handles": [[10, 10]], "targets": [[20, 12]]}))
    return d


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


# name → argv (``{in}``: the inputs folder, ``{out}``: the output folder, which must stay empty; ``{model}``)
I, O, M = "{in}", "{out}", "{model}"
EDIT = ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", M, *FAST]
GOODDRAG = ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", M, "--method", "gooddrag", "--lora-steps", "0",
            "--no-progress"]
CLI_CASES = {
    # sizes and modes of the image
    "image_4x4": ["edit", f"{I}/tiny.png", "--drag", "0,0:3,3", "--model", M, "--out", f"{O}/e.png", *FAST],
    "image_1x1": ["edit", f"{I}/one.png", "--drag", "0,0:0,0", "--model", M, "--out", f"{O}/e.png"],
    "image_20000x20000": ["edit", f"{I}/huge.png", "--drag", "1,1:5,5", "--model", M, "--out", f"{O}/e.png"],
    "image_over_max_pixels": [*EDIT, "--max-pixels", "1000", "--out", f"{O}/e.png"],
    "lora_lr_1e30_gives_nan": [*EDIT, "--lora-steps", "4", "--set", "lora_lr=1e30", "--out", f"{O}/e.png"],
    "steps_beyond_the_scheduler": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", TINY_SHORT,
                                   "--set", "num_inference_steps=200", "--out", f"{O}/e.png"],
    # devices
    "device_cuda_99": [*EDIT, "--device", "cuda:99", "--out", f"{O}/e.png"],
    "device_tpu9": [*EDIT, "--device", "tpu9", "--out", f"{O}/e.png"],
    # outputs
    "out_is_a_folder": [*EDIT, "--out", f"{I}/folder.png"],
    "out_under_a_file": [*EDIT, "--out", f"{I}/photo.png/e.png"],
    "out_unwritable": [*EDIT, "--out", "/proc/dragkit-e.png"],
    "out_is_the_input": [*EDIT, "--out", f"{I}/photo.png"],
    "out_is_the_mask": [*EDIT, "--mask", f"{I}/mask.png", "--out", f"{I}/mask.png"],
    "out_not_an_image_name": [*EDIT, "--out", f"{O}/e.txt"],
    "json_is_a_folder": [*EDIT, "--out", f"{O}/e.png", "--json", f"{I}/folder.png"],
    "json_under_a_file": [*EDIT, "--out", f"{O}/e.png", "--json", f"{I}/photo.png/e.json"],
    "json_unwritable": [*EDIT, "--out", f"{O}/e.png", "--json", "/proc/dragkit-e.json"],
    "json_is_a_device": [*EDIT, "--out", f"{O}/e.png", "--json", "/dev/null"],
    "json_equals_out": [*EDIT, "--out", f"{O}/e.png", "--json", f"{O}/e.png"],
    "json_is_the_request": ["edit", "--request", f"{I}/ok.json", "--model", M, "--out", f"{O}/e.png", "--json",
                            f"{I}/ok.json"],
    "trajectory_is_a_folder": [*GOODDRAG, "--out", f"{O}/e.png", "--trajectory", f"{I}/folder.gif"],
    "trajectory_not_gif": [*GOODDRAG, "--out", f"{O}/e.png", "--trajectory", f"{O}/t.mp4"],
    "trajectory_equals_json": [*GOODDRAG, "--out", f"{O}/e.png", "--json", f"{O}/t.gif", "--trajectory", f"{O}/t.gif"],
    "trajectory_dragdiffusion": [*EDIT, "--out", f"{O}/e.png", "--trajectory", f"{O}/t.gif"],
    # drags and masks
    "drag_unequal": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--drag", "1,2", "--model", M, "--out",
                     f"{O}/e.png"],
    "drag_none": ["edit", f"{I}/photo.png", "--model", M, "--out", f"{O}/e.png"],
    "drag_outside": ["edit", f"{I}/photo.png", "--drag", "10,10:64,12", "--model", M, "--out", f"{O}/e.png"],
    "drag_negative_coordinate": ["edit", f"{I}/photo.png", "--drag", "-1,10:20,12", "--model", M, "--out",
                                 f"{O}/e.png"],
    "drag_syntax": ["edit", f"{I}/photo.png", "--drag", "10;10->20,12", "--model", M, "--out", f"{O}/e.png"],
    "drag_nan": ["edit", f"{I}/photo.png", "--drag", "nan,10:20,12", "--model", M, "--out", f"{O}/e.png"],
    "drag_handle_is_target": ["edit", f"{I}/photo.png", "--drag", "10,10:10,10", "--model", M, "--out",
                              f"{O}/e.png"],
    "drag_duplicate_pairs": [*EDIT, "--drag", "10,10:20,12", "--out", f"{O}/e.png"],
    "drag_one_handle_two_targets": [*EDIT, "--drag", "10,10:30,30", "--out", f"{O}/e.png"],
    "mask_other_size": [*EDIT, "--mask", f"{I}/small_mask.png", "--out", f"{O}/e.png"],
    "mask_other_size_empty": [*EDIT, "--mask", f"{I}/small_empty_mask.png", "--out", f"{O}/e.png"],
    "mask_covers_no_latent_cell": [*EDIT, "--mask", f"{I}/dot_mask.png", "--out", f"{O}/e.png"],
    "mask_not_an_image": [*EDIT, "--mask", f"{I}/text.png", "--out", f"{O}/e.png"],
    # request files and other inputs
    "request_three_coordinates": ["edit", "--request", f"{I}/three_coords.json", "--model", M, "--out", f"{O}/e.png"],
    "request_image_not_a_string": ["edit", "--request", f"{I}/image_number.json", "--model", M, "--out",
                                   f"{O}/e.png"],
    "request_without_image": ["edit", "--request", f"{I}/no_image.json", "--model", M, "--out", f"{O}/e.png"],
    "request_mask_a_number": ["edit", "--request", f"{I}/mask_number.json", "--model", M, "--out", f"{O}/e.png"],
    "request_prompt_a_list": ["edit", "--request", f"{I}/prompt_list.json", "--model", M, "--out", f"{O}/e.png"],
    "request_bad_inline_mask": ["edit", "--request", f"{I}/bad_inline_mask.json", "--model", M, "--out",
                                f"{O}/e.png"],
    "request_handles_a_string": ["edit", "--request", f"{I}/handles_string.json", "--model", M, "--out",
                                 f"{O}/e.png"],
    "request_not_json": ["edit", "--request", f"{I}/not_json.json", "--model", M, "--out", f"{O}/e.png"],
    "request_is_a_folder": ["edit", "--request", f"{I}/folder.png", "--model", M, "--out", f"{O}/e.png"],
    "request_and_image": ["edit", f"{I}/photo.png", "--request", f"{I}/ok.json", "--model", M, "--out",
                          f"{O}/e.png"],
    "dragbench_with_drag": ["edit", "--dragbench", I, "--drag", "1,1:2,2", "--model", M, "--out", f"{O}/e.png"],
    "generated_without_record": [*EDIT, "--generated", "--out", f"{O}/e.png"],
    # models
    "model_missing": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", f"{I}/no_model", "--out",
                      f"{O}/e.png"],
    "model_pickle": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", f"{I}/model.ckpt", "--out",
                     f"{O}/e.png"],
    # generate
    "generate_guidance_nan": ["generate", "--prompt", "x", "--guidance", "nan", "--model", M, "--out", f"{O}/g.png"],
    "generate_freeu_nan": ["generate", "--prompt", "x", "--freeu", "nan,1,1,1", "--model", M, "--out", f"{O}/g.png"],
    "generate_freeu_three": ["generate", "--prompt", "x", "--freeu", "1,1,1", "--model", M, "--out", f"{O}/g.png"],
    "generate_steps_0": ["generate", "--prompt", "x", "--steps", "0", "--model", M, "--out", f"{O}/g.png"],
    "generate_steps_beyond_the_scheduler": ["generate", "--prompt", "x", "--steps", "200", "--model", TINY_SHORT,
                                            "--out", f"{O}/g.png"],
    "generate_size_not_a_multiple": ["generate", "--prompt", "x", "--width", "100", "--height", "64", "--model", M,
                                     "--out", f"{O}/g.png"],
    "generate_too_many_pixels": ["generate", "--prompt", "x", "--width", "8192", "--height", "8192", "--model", M,
                                 "--out", f"{O}/g.png"],
    "generate_jpeg": ["generate", "--prompt", "x", "--model", M, "--out", f"{O}/g.jpg"],
    "generate_out_is_a_folder": ["generate", "--prompt", "x", "--model", M, "--out", f"{I}/folder.png"],
    "generate_device_tpu9": ["generate", "--prompt", "x", "--model", M, "--device", "tpu9", "--out", f"{O}/g.png"],
    # the web app and the example
    "ui_max_side_too_small": ["ui", "--model", M, "--max-side", "8"],  # the old name of --upload-max-side
    "ui_upload_max_side_too_small": ["ui", "--model", M, "--upload-max-side", "8"],
    # FastDrag: K/V copy and reference attention both control the decoder self-attention
    "fastdrag_with_reference_attention": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", M, "--method",
                                          "fastdrag", "--set", "reference_attention=true", "--no-progress", "--out",
                                          f"{O}/e.png"],
    "fastdrag_unknown_field": ["edit", f"{I}/photo.png", "--drag", "10,10:20,12", "--model", M, "--method",
                               "fastdrag", "--set", "optimization_steps=3", "--no-progress", "--out", f"{O}/e.png"],
    "shapes_example_not_png": ["shapes", "example", "--out", f"{O}/scene.jpg"],
}
# unreadable images: name → file in the inputs folder
CLI_CASES.update({name: ["edit", f"{I}/{file}", "--drag", "1,1:5,5", "--model", M, "--out", f"{O}/e.png"]
                  for name, file in {"image_not_an_image": "text.png", "image_truncated": "truncated.png",
                                     "image_missing": "nope.png", "image_is_a_folder": "folder.png"}.items()})
# config values: name → --set FIELD=VALUE (the last three fail only against the loaded model, or while it runs)
CLI_CASES.update({name: [*EDIT, "--set", assignment, "--out", f"{O}/e.png"] for name, assignment in {
    "latent_lr_nan": "latent_lr=nan", "latent_lr_inf": "latent_lr=inf", "stop_distance_nan": "stop_distance=nan",
    "stop_distance_negative": "stop_distance=-1", "mask_weight_inf": "mask_weight=inf",
    "feature_block_negative": "feature_block=-1", "steps_100000000": "num_inference_steps=100000000",
    "unknown_field": "no_such_field=1", "unreadable_value": "latent_lr=fast", "set_without_equals": "latent_lr",
    "feature_block_99": "feature_block=99", "reference_blocks_7_9": "reference_attention_blocks=7,9",
    "reference_block_without_attention": "reference_attention_blocks=0",
    "reference_blocks_empty": "reference_attention_blocks=()", "supervision_scale_tiny": "supervision_scale=0.001",
    "latent_lr_1e30_gives_nan": "latent_lr=1e30"}.items()})
if not torch.cuda.is_available():
    CLI_CASES["device_cuda_without_cuda"] = [*EDIT, "--device", "cuda", "--out", f"{O}/e.png"]


def _expand(argv, inputs, out, model):
    return [a.replace(I, str(inputs)).replace(O, str(out)).replace(M, str(model)) for a in argv]


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input(case, cached_models, inputs, tmp_path, capsys):
    if "unwritable" in case and not Path("/proc").is_dir():
        pytest.skip("needs /proc (a folder no one can create files in)")
    out = tmp_path / "out"
    before = _snapshot(inputs)
    code = main(_expand(CLI_CASES[case], inputs, out, cached_models))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dragkit: error: "), err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    assert _snapshot(inputs) == before  # inputs untouched, no temporary left beside them


# --- the Python API ---------------------------------------------------------------------------------------------------

def _image(w=64, h=48):
    return Image.fromarray((np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8))


API_CASES = {
    "image_a_path": lambda: DragRequest("photo.png", [(1, 1)], [(2, 2)]),
    "handle_three_coordinates": lambda: DragRequest(_image(), [(1, 2, 3)], [(2, 2)]),
    "handles_a_string": lambda: DragRequest(_image(), "1,2", [(2, 2)]),
    "handle_not_a_number": lambda: DragRequest(_image(), [("a", 2)], [(2, 2)]),
    "handle_nan": lambda: DragRequest(_image(), [(float("nan"), 2)], [(2, 2)]),
    "target_outside": lambda: DragRequest(_image(), [(1, 1)], [(64, 2)]),
    "no_pairs": lambda: DragRequest(_image(), [], []),
    "unequal_pairs": lambda: DragRequest(_image(), [(1, 1), (3, 3)], [(2, 2)]),
    "every_handle_at_its_target": lambda: DragRequest(_image(), [(1, 1), (5, 5)], [(1, 1), (5, 5)]),
    "duplicate_pair": lambda: DragRequest(_image(), [(1, 1), (1, 1)], [(9, 9), (9, 9)]),
    "one_handle_two_targets": lambda: DragRequest(_image(), [(1, 1), (1, 1)], [(9, 9), (7, 7)]),
    "mask_1d": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], np.ones(48)),
    "mask_strings": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], np.full((48, 64), "x")),
    "mask_five_channels": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], np.ones((48, 64, 5))),
    "mask_other_size": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], np.ones((10, 10))),
    "mask_other_size_empty": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], np.zeros((10, 10))),
    "prompt_a_list": lambda: DragRequest(_image(), [(1, 1)], [(2, 2)], prompt=["a"]),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_request_bad_input(case):
    with pytest.raises(DragError) as info:
        API_CASES[case]()
    assert str(info.value).strip() and "\n" not in str(info.value)


def _editor_check(tiny_model, request, **changes):
    from dragkit.config import DragDiffusionConfig
    from dragkit.editor import DragEditor

    DragEditor(tiny_model).check(request, DragDiffusionConfig(**changes))


EDITOR_CASES = {
    "feature_block_99": (lambda: DragRequest(_image(), [(1, 1)], [(9, 9)]), {"feature_block": 99}),
    "reference_block_0": (lambda: DragRequest(_image(), [(1, 1)], [(9, 9)]), {"reference_attention_blocks": (0,)}),
    "image_3x3": (lambda: DragRequest(_image(3, 3), [(0, 0)], [(2, 2)]), {}),
    "mask_one_pixel": (lambda: DragRequest(_image(), [(1, 1)], [(9, 9)], np.pad([[1]], ((5, 42), (5, 58)))), {}),
}


@pytest.mark.parametrize("case", sorted(EDITOR_CASES))
def test_editor_check_bad_input(case, tiny_model):
    make, changes = EDITOR_CASES[case]
    with pytest.raises(DragError) as info:
        _editor_check(tiny_model, make(), **changes)
    assert "\n" not in str(info.value)


def test_the_smallest_image_a_unet_can_run_is_known_before_running_it():
    """GroupNorm needs more than one value per group: the size rule of checks.check_image_size agrees with what a
    UNet with one channel per group (as the golden test model) actually runs, latent side by latent side."""
    import re
    from types import SimpleNamespace

    from diffusers import UNet2DConditionModel

    from dragkit.checks import _norms_fit, check_image_size

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
                                cross_attention_dim=8, attention_head_dim=2, layers_per_block=1)
    for side in range(1, 10):
        try:
            with torch.no_grad():
                unet(torch.zeros(1, 4, side, side), 10, torch.zeros(1, 3, 8))
            runs = True
        except ValueError:
            runs = False
        assert _norms_fit(unet, (side, side)) == runs, side
    model = SimpleNamespace(vae_scale_factor=8, unet=unet)
    with pytest.raises(DragError, match="too small for this model's UNet") as info:
        check_image_size(model, (16, 16), (16, 16))
    side = int(re.search(r"at least (\d+)x", str(info.value)).group(1))
    check_image_size(model, (side, side), (side, side))
    with pytest.raises(DragError):
        check_image_size(model, (side - 8, side - 8), (side - 8, side - 8))


@pytest.mark.parametrize("name", ["cuda:3", "tpu9", "mps", "cuda"])
def test_devices_that_do_not_exist(name):
    from dragkit.checks import check_device

    with pytest.raises(DragError, match="available here: cpu$"):
        check_device(name, available=["cpu"])
    check_device("cpu", available=["cpu"])
    check_device(None, available=["cpu"])


# --- the web app's handlers -------------------------------------------------------------------------------------------

gr = pytest.importorskip("gradio", reason="the web app needs gradio")


class NoEditor:
    """Every web-app case below fails before an edit or a generation starts."""

    def edit(self, *args, **kwargs):
        raise AssertionError("no edit should start")

    def generate(self, *args, **kwargs):
        raise AssertionError("no generation should start")


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _ui_cases(tmp: Path) -> dict:
    """name → (handler, its arguments after ctx, the status key that must hold the error)."""
    from dragkit.ui import handlers
    from dragkit.ui import session as ss

    image = ss.set_image(ss.Session(), _image())
    with_handle = ss.add_point(image, (3, 3))
    junk = tmp / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not a zip")
    request_outside = json.dumps({"image": "../../secret.png", "handles": [[1, 1]], "targets": [[2, 2]]})
    return {
        "upload_not_an_image": (handlers.on_editor, ({"background": None, "layers": []}, ss.Session()), "status"),
        "run_without_image": (handlers.on_run, ({"session": ss.Session()},), "status"),
        "run_without_points": (handlers.on_run, ({"session": image},), "status"),
        "run_handle_without_target": (handlers.on_run, ({"session": with_handle},), "status"),
        "run_latent_lr_nan": (handlers.on_run, ({"session": ss.add_point(with_handle, (9, 9)),
                                                 "param-dragdiffusion-latent_lr": float("nan")},), "status"),
        "run_seed_not_whole": (handlers.on_run, ({"session": ss.add_point(with_handle, (9, 9)), "seed": 1.5},),
                               "status"),
        "import_junk": (handlers.on_import, ([str(junk)],), "status"),
        "import_zip_bomb": (handlers.on_import, ([str(_zip(tmp / "bomb.zip",
                                                           {"request.json": b"\0" * (4 << 20)}))],), "status"),
        "import_many_files": (handlers.on_import, ([str(_zip(tmp / "many.zip",
                                                            {f"{i}.png": b"x" for i in range(100)}))],), "status"),
        "import_path_outside": (handlers.on_import, ([str(_zip(tmp / "up.zip",
                                                              {"../../request.json": request_outside}))],),
                                "status"),
        "import_nothing_usable": (handlers.on_import, ([str(_zip(tmp / "empty.zip", {"notes.txt": b"hi"}))],),
                                  "status"),
        "generate_guidance_nan": (handlers.on_generate, ({"gen-guidance_scale": float("nan")},), "gen_status"),
        "send_without_generation": (handlers.on_send, (None,), "gen_status"),
    }


UI_CASES = ["upload_not_an_image", "run_without_image", "run_without_points", "run_handle_without_target",
            "run_latent_lr_nan", "run_seed_not_whole", "import_junk", "import_zip_bomb", "import_many_files",
            "import_path_outside", "import_nothing_usable", "generate_guidance_nan", "send_without_generation"]


@pytest.mark.parametrize("case", UI_CASES)
def test_web_app_bad_input(case, tmp_path):
    from dragkit.config import DragDiffusionConfig
    from dragkit.ui.context import AppContext
    from dragkit.ui.params import format_value, gen_id, param_id

    ctx = AppContext.create(NoEditor(), {"dragdiffusion": DragDiffusionConfig(lora_steps=2)}, upload_max_side=256,
                            work_dir=str(tmp_path / "work"))
    handler, args, key = _ui_cases(tmp_path)[case]
    if handler.__name__ in ("on_run",):
        form = {"method": "dragdiffusion", "prompt": "", "seed": 0, "gen_state": None, "last_edit": None}
        for m, ps in ctx.params.items():
            form.update({param_id(m, p.name): format_value(p.kind, p.value) for p in ps})
        args = ({**form, **args[0]}, None)
    if handler.__name__ == "on_generate":
        form = {gen_id(n): format_value(p.kind, p.value) for n, p in ctx.gen_params.items()}
        args = ({**form, **args[0]},)
    result = handler(ctx, *args)
    updates = list(result) if hasattr(result, "__next__") else [result]
    text = updates[-1][key]
    assert (text.startswith("**Error:**") or text.startswith("No image yet")) and "\n" not in text, text
    if handler.__name__ == "on_import":
        assert updates[-1]["import_files"] is None  # the box is emptied: the next import is read on its own
    assert not list(tmp_path.glob("secret*")) and not (tmp_path / "work" / ".." / "request.json").exists()
