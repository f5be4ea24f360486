"""The web app's pure helpers (no browser, no Gradio server): session transitions, drawing, parameters,
export/import round trips, and the ``dragkit ui`` option handling."""

import argparse
import dataclasses
import io
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from dragkit.config import DragDiffusionConfig
from dragkit.datasets import RestrictedUnpickler
from dragkit.family import SD, resolve
from dragkit.types import DragError, DragRequest, DragResult
from dragkit.ui import drawing, exchange, params
from dragkit.ui import session as ss


def _image(w=96, h=64, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


# --- session transitions ---------------------------------------------------------------------------------------------

def test_points_alternate_handle_target_and_undo_clear():
    s = ss.set_image(ss.Session(), _image())
    assert s.expecting == "handle" and s.mask is None and not s.notice
    s1 = ss.add_point(s, (10, 20))
    assert s1.expecting == "target" and s.points == ()  # transitions never mutate
    s2 = ss.add_point(ss.add_point(s1, (30, 20)), (5, 5))
    assert s2.handles == [(10, 20), (5, 5)] and s2.targets == [(30, 20)]
    with pytest.raises(DragError, match="handle 2 has no target"):
        ss.build_request(s2)
    s3 = ss.undo_point(s2)
    req = ss.build_request(s3, "a cat")
    assert req.handles == ((10.0, 20.0),) and req.targets == ((30.0, 20.0),) and req.prompt == "a cat"
    assert ss.clear_points(s3).points == ()
    assert ss.undo_point(ss.clear_points(s3)).points == ()


def test_bad_requests_have_readable_messages():
    with pytest.raises(DragError, match="upload an image first"):
        ss.build_request(ss.Session())
    with pytest.raises(DragError, match="upload an image first"):
        ss.add_point(ss.Session(), (1, 1))
    s = ss.set_image(ss.Session(), _image())
    with pytest.raises(DragError, match="no points"):
        ss.build_request(s)
    with pytest.raises(DragError, match="outside the 96x64 image"):
        ss.add_point(s, (96, 3))


def test_click_maps_upscaled_view_back_to_pixels():
    assert drawing.view_scale((96, 64)) == 5 and drawing.view_scale((1024, 700)) == 1
    assert ss.click_to_pixel((0, 0), 5, (96, 64)) == (0, 0)
    assert ss.click_to_pixel((204, 104), 5, (96, 64)) == (40, 20)
    assert ss.click_to_pixel((479, 319), 5, (96, 64)) == (95, 63)
    assert ss.click_to_pixel((900, -3), 5, (96, 64)) == (95, 0)  # clamped on the border


def test_large_upload_is_downscaled_whole_with_notice():
    s = ss.set_image(ss.Session(), _image(300, 120), upload_max_side=150)
    assert s.image.size == (150, 60) and s.original_size == (300, 120)
    assert "300×120" in s.notice and "150×60" in s.notice
    small = ss.set_image(ss.Session(), _image(160, 120), upload_max_side=150)
    assert small.image.size == (150, 112)  # aspect kept, nothing cropped


def test_mask_from_brush_layers_and_warnings():
    s = ss.set_image(ss.Session(), _image())
    layer = np.zeros((64, 96, 4), np.uint8)
    assert ss.mask_from_layers([layer], (96, 64)) is None  # nothing painted = whole image editable
    layer[10:30, 20:50, 3] = 200
    m = ss.mask_from_layers([layer, None], (96, 64))
    assert m.dtype == np.uint8 and m.shape == (64, 96) and m.sum() == 20 * 30 and m[15, 25] == 1
    big = np.zeros((128, 192, 4), np.uint8)
    big[20:60, 40:100, 3] = 255  # a layer at twice the size (downscaled upload) is resized to the image
    assert ss.mask_from_layers([big], (96, 64))[15, 25] == 1
    s = ss.set_mask(s, m)
    s = ss.add_point(ss.add_point(s, (25, 15)), (80, 50))
    assert ss.mask_warnings(s) == ["target 1 (80, 50) lies outside the editable region of the mask: it cannot be "
                                   "reached"]
    with pytest.raises(DragError, match="mask is 10x10"):
        ss.set_mask(s, np.ones((10, 10)))
    assert ss.set_mask(s, np.zeros((64, 96))).mask is None


def test_uploads_become_rgb_on_white():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent
    im = ss.upload_image(rgba)
    assert im.mode == "RGB" and im.size == (6, 4)
    assert im.getpixel((0, 0)) == (255, 0, 0) and im.getpixel((1, 1)) == (255, 255, 255)
    assert ss.upload_image(np.full((4, 6), 7, np.uint8)).getpixel((2, 2)) == (7, 7, 7)
    assert ss.upload_image(np.full((4, 6, 3), 9, np.uint8)).getpixel((2, 2)) == (9, 9, 9)


def test_fingerprint_ignores_alpha_and_tells_images_apart():
    im = _image()
    rgba = np.dstack([np.asarray(im), np.full((64, 96), 255, np.uint8)])
    assert ss.fingerprint(im) == ss.fingerprint(rgba)
    assert ss.fingerprint(im) != ss.fingerprint(_image(seed=1))


# --- drawing ---------------------------------------------------------------------------------------------------------

def test_render_view_draws_red_handles_blue_targets_and_mask_tint():
    im = Image.new("RGB", (96, 64), (128, 128, 128))
    mask = np.zeros((64, 96), np.uint8)
    mask[:, :48] = 1
    view = drawing.render_view(im, [(10, 10), (80, 50), (20, 40)], mask)
    assert view.size == (480, 320)
    px = np.asarray(view)
    assert tuple(px[52, 52]) == drawing.HANDLE  # handle 1 centre: (10 + 0.5)·5
    assert tuple(px[252, 402]) == drawing.TARGET  # target 1 centre: (80.5·5, 50.5·5)
    assert tuple(px[202, 102]) == drawing.HANDLE  # lone handle 2 drawn without a target
    assert px[300, 200, 0] > px[300, 300, 0]  # painted half tinted, the rest dimmed
    live = np.asarray(drawing.render_view(im, [(10, 10), (80, 50)], handles=[(40.0, 30.0)]))
    assert tuple(live[152, 202]) == drawing.HANDLE and tuple(live[52, 52]) != drawing.HANDLE
    assert tuple(live[252, 402]) == drawing.TARGET


def test_trajectory_animation_has_one_frame_per_step():
    im = _image()
    gif = drawing.trajectory_animation(im, [(10, 10), (30, 10)], [[(10, 10)], [(20, 10)], [(30, 10)]])
    anim = Image.open(io.BytesIO(gif))
    assert anim.format == "GIF" and anim.n_frames == 3 and anim.size == (480, 320)
    assert drawing.trajectory_animation(im, [(10, 10), (30, 10)], [[(10, 10)]]) is None


# --- parameters ------------------------------------------------------------------------------------------------------

def test_params_come_from_the_config_dataclass_with_paper_comments():
    ps = params.method_params("dragdiffusion", resolve(DragDiffusionConfig(optimization_steps=3), SD), SD)
    by = {p.name: p for p in ps}
    assert [p.name for p in ps] == [f.name for f in dataclasses.fields(DragDiffusionConfig)]
    assert by["optimization_steps"].value == 3 and by["optimization_steps"].paper_default == 80
    assert by["latent_lr"].kind == "float" and "η" in by["latent_lr"].help
    assert by["reference_attention"].kind == "bool" and by["reference_attention_blocks"].kind == "tuple"
    values = [params.format_value(p.kind, p.value) for p in ps]
    assert values[[p.name for p in ps].index("reference_attention_blocks")] == "2, 3"
    cfg = params.config_from_values(DragDiffusionConfig(), ps, values)
    assert cfg == resolve(DragDiffusionConfig(optimization_steps=3), SD)
    assert by["feature_block"].value == by["feature_block"].paper_default == 2  # SD-1.5's choice, filled in
    values[[p.name for p in ps].index("latent_lr")] = -1.0
    with pytest.raises(DragError, match="latent_lr must be > 0"):
        params.config_from_values(DragDiffusionConfig(), ps, values)
    values[[p.name for p in ps].index("latent_lr")] = 0.02
    values[[p.name for p in ps].index("lora_steps")] = None
    with pytest.raises(DragError, match="lora_steps"):
        params.config_from_values(DragDiffusionConfig(), ps, values)


# --- export / import -------------------------------------------------------------------------------------------------

def _request(mask=True):
    m = None
    if mask:
        m = np.zeros((64, 96), np.uint8)
        m[5:40, 10:70] = 1
    return DragRequest(_image(), [(12, 20), (40, 30)], [(30, 22), (41, 10)], m, "a photo")


def test_export_import_round_trip_request_zip(tmp_path):
    req = _request()
    result = DragResult(_image(seed=3), [(29.0, 22.0), (41.0, 12.0)], [[(12, 20), (40, 30)], [(29, 22), (41, 12)]],
                        {"total": 1.0}, 1)
    cfg = DragDiffusionConfig(optimization_steps=3)
    files = exchange.export_edit(tmp_path / "out", req, cfg, result)
    assert [f.name for f in files] == ["edited.png", "request.json", "edit.zip", "dragbench_sample.zip"]
    with zipfile.ZipFile(files[2]) as zf:
        assert sorted(zf.namelist()) == ["edited.png", "mask.png", "original_image.png", "request.json"]
    back, extra = exchange.import_edit([files[2]], tmp_path / "imp")
    assert back.handles == req.handles and back.targets == req.targets and back.prompt == "a photo"
    assert np.array_equal(back.mask, req.mask) and np.array_equal(np.asarray(back.image), np.asarray(req.image))
    assert extra["method"] == "dragdiffusion" and extra["config"]["optimization_steps"] == 3
    # the same JSON uploaded together with its image (the files of an unzipped folder)
    img = tmp_path / "original_image.png"
    req.image.save(img)
    Image.fromarray(req.mask * 255).save(tmp_path / "mask.png")
    again, _ = exchange.import_edit([files[1], img, tmp_path / "mask.png"], tmp_path / "imp2")
    assert again.handles == req.handles and np.array_equal(again.mask, req.mask)


@pytest.mark.parametrize("with_mask", [True, False])
def test_export_import_round_trip_dragbench(tmp_path, with_mask):
    req = _request(with_mask)
    files = exchange.export_edit(tmp_path / "out", req, DragDiffusionConfig())
    sample = files[-1]
    with zipfile.ZipFile(sample) as zf:
        assert sorted(zf.namelist()) == ["meta_data.pkl", "original_image.png"]
        meta = RestrictedUnpickler(io.BytesIO(zf.read("meta_data.pkl"))).load()
    assert meta["points"] == [[12, 20], [30, 22], [40, 30], [41, 10]] and meta["prompt"] == "a photo"
    assert meta["mask"].dtype == np.uint8 and meta["mask"].shape == (64, 96)
    back, extra = exchange.import_edit([sample], tmp_path / "imp")
    assert back.handles == req.handles and back.targets == req.targets and extra == {}
    assert (back.mask is None) == (not with_mask)
    if with_mask:
        assert np.array_equal(back.mask, req.mask)
    sess = ss.from_request(back)
    assert sess.points == ((12, 20), (30, 22), (40, 30), (41, 10)) and ss.build_request(sess, back.prompt).prompt


def test_import_errors_are_one_line(tmp_path):
    fake = tmp_path / "original_image.png"
    fake.write_text("not an image")
    meta = tmp_path / "meta_data.pkl"
    meta.write_bytes(pickle.dumps({"prompt": "", "points": [[1, 1], [2, 2]], "mask": np.zeros((4, 4), np.uint8)}))
    with pytest.raises(DragError, match="cannot read .* as an image"):
        exchange.import_edit([fake, meta], tmp_path / "a")
    bad = tmp_path / "x.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(DragError, match="not a valid zip"):
        exchange.import_edit([bad], tmp_path / "b")
    with pytest.raises(DragError, match="nothing to import"):
        exchange.import_edit([fake], tmp_path / "c")
    sneaky = tmp_path / "sneaky.json"
    sneaky.write_text('{"image": "/etc/hostname", "handles": [[1, 1]], "targets": [[2, 2]]}')
    with pytest.raises(DragError, match="must be a file uploaded with the JSON"):
        exchange.import_edit([sneaky], tmp_path / "e")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "request.json").write_text('{"image": "original_image.png", "handles": [[1, 1]], "targets": [[2, 2]]}')
    with pytest.raises(DragError, match="refers to original_image.png: upload it together"):
        exchange.import_edit([lone / "request.json"], tmp_path / "f")
    odd = tmp_path / "odd"
    odd.mkdir()
    _image().save(odd / "original_image.png")
    (odd / "meta_data.pkl").write_bytes(pickle.dumps({"points": [[1, 1], [2, 2], [3, 3]]}))
    with pytest.raises(DragError, match="odd number of points"):
        exchange.import_edit([odd / "original_image.png", odd / "meta_data.pkl"], tmp_path / "d")


def test_from_request_downscales_points_and_mask():
    big = _image(400, 200)
    mask = np.zeros((200, 400), np.uint8)
    mask[100:, 200:] = 1
    sess = ss.from_request(DragRequest(big, [(300, 150)], [(399, 199)], mask), upload_max_side=200)
    assert sess.image.size == (200, 100) and sess.points == ((150, 75), (199, 99))
    assert sess.mask.shape == (100, 200) and sess.mask[75, 150] == 1 and sess.mask[10, 10] == 0


# --- CLI -------------------------------------------------------------------------------------------------------------

def _ui_args(*argv):
    from dragkit.cli import build_parser

    return build_parser().parse_args(["ui", *argv])


def test_ui_command_defaults_and_overrides():
    from dragkit.cli.ui import method_defaults

    args = _ui_args()
    assert args.host == "127.0.0.1" and args.port == 7860 and not args.share
    d = method_defaults(_ui_args("--lora-steps", "2", "--set", "optimization_steps=3"))
    assert d["dragdiffusion"].lora_steps == 2 and d["dragdiffusion"].optimization_steps == 3
    with pytest.raises(DragError, match="config field"):
        method_defaults(_ui_args("--set", "no_such_field=1"))
    assert isinstance(args, argparse.Namespace)


def test_app_builds_with_a_control_per_config_field():
    gr = pytest.importorskip("gradio", reason="the web app needs gradio")
    from dragkit.ui.app import build_app

    class StubEditor:
        lora_cache = None

    demo = build_app(StubEditor(), {"dragdiffusion": DragDiffusionConfig(optimization_steps=3)})
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    for elem in ("input-editor", "points-view", "result", "status", "run-btn", "cancel-btn", "import-files"):
        assert elem in ids
    for f in dataclasses.fields(DragDiffusionConfig):
        assert f"param-dragdiffusion-{f.name}" in ids
    assert ids["param-dragdiffusion-optimization_steps"].value == 3
    assert "paper default: 80" in ids["param-dragdiffusion-optimization_steps"].info
    run = [d for d in demo.fns.values() if d.name == "on_run"][0]
    assert run.concurrency_limit == 1


def test_same_mask():
    import numpy as np

    from dragkit.ui.session import same_mask

    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[1, 2] = 1
    assert same_mask(None, None) and same_mask(a, a.copy())
    assert not same_mask(a, b) and not same_mask(a, None) and not same_mask(None, b)
    assert not same_mask(a, np.zeros((5, 4), np.uint8))
