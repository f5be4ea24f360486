"""What dragkit accepts, and how: image modes and EXIF orientation, masks with alpha, degenerate-but-legal requests
(each with its notice), inline masks in edit records, outputs written as one transaction with the user's umask, and
the offline first contact (``--model shapes``, ``dragkit shapes example``)."""

import json
import logging
import os
import pickle
import shlex
import stat

import numpy as np
import pytest
from PIL import Image

from dragkit import io as dio
from dragkit.cli import main
from dragkit.types import DragError, DragRequest

FAST = ["--lora-steps", "0", "--set", "optimization_steps=2", "--set", "num_inference_steps=5", "--no-progress"]


# --- image modes -------------------------------------------------------------------------------------------------------

def _saved(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_transparency_is_composited_over_white_with_a_notice(tmp_path, caplog):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255  # left half opaque red, right half fully transparent
    with caplog.at_level(logging.WARNING, logger="dragkit.io"):
        im = dio.load_image(_saved(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    arr = np.asarray(im)
    assert im.mode == "RGB" and tuple(arr[0, 0]) == (200, 0, 0) and tuple(arr[0, 5]) == (255, 255, 255)
    assert "composited over white" in caplog.text
    la = dio.load_image(_saved(tmp_path, "la.png", Image.new("LA", (3, 3), (0, 0))))
    assert tuple(np.asarray(la)[1, 1]) == (255, 255, 255)
    opaque = dio.load_image(_saved(tmp_path, "o.png", Image.new("RGBA", (3, 3), (1, 2, 3, 255))))
    assert tuple(np.asarray(opaque)[0, 0]) == (1, 2, 3)


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path, caplog):
    grey = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    with caplog.at_level(logging.WARNING, logger="dragkit.io"):
        im = dio.load_image(_saved(tmp_path, "g16.png", Image.fromarray(grey)))
    arr = np.asarray(im)[..., 0].astype(int)
    assert abs(arr.mean() - 127.5) < 1 and arr.max() == 255 and (arr == 255).mean() < 0.01  # was 99.6 % white
    assert "16-bit" in caplog.text
    floats = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    f = np.asarray(dio.load_image(_saved(tmp_path, "f.tif", Image.fromarray(floats))))[..., 0]
    assert f[0, 0] == 0 and f[-1, -1] == 255
    wide = np.asarray(dio.load_image(_saved(tmp_path, "i.tif", Image.fromarray(grey.astype(np.int32)))))[..., 0]
    assert wide.max() == 255 and abs(wide.mean() - 127.5) < 1
    with pytest.raises(DragError, match="brightness range"):
        dio.load_image(_saved(tmp_path, "neg.tif", Image.fromarray(floats - 2)))


def test_palette_cmyk_grey_and_bilevel(tmp_path, caplog):
    pal = Image.new("P", (4, 4))
    pal.putpalette([10, 20, 30] + [0] * 765)
    assert tuple(np.asarray(dio.load_image(_saved(tmp_path, "p.png", pal)))[0, 0]) == (10, 20, 30)
    clear = Image.new("P", (4, 4))
    clear.putpalette([10, 20, 30] * 256)
    clear.info["transparency"] = 0
    assert tuple(np.asarray(dio.load_image(_saved(tmp_path, "pt.png", clear, transparency=0)))[0, 0]) == (255,) * 3
    with caplog.at_level(logging.WARNING, logger="dragkit.io"):
        cmyk = dio.load_image(_saved(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0))))
    assert cmyk.mode == "RGB" and np.asarray(cmyk)[..., 0].mean() > 200 and "CMYK" in caplog.text
    assert dio.load_image(_saved(tmp_path, "l.png", Image.new("L", (3, 2), 77))).getpixel((0, 0)) == (77, 77, 77)
    assert dio.load_image(_saved(tmp_path, "b.png", Image.new("1", (3, 2), 1))).getpixel((0, 0)) == (255, 255, 255)


def test_an_animation_gives_its_first_frame_with_a_notice(tmp_path, caplog):
    frames = [Image.new("RGB", (5, 5), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with caplog.at_level(logging.WARNING, logger="dragkit.io"):
        im = dio.load_image(path)
    assert im.getpixel((2, 2))[0] > 200 and im.getpixel((2, 2))[2] < 50
    assert "3 frames" in caplog.text


def test_exif_orientation_is_honoured_for_images_points_and_masks(tmp_path):
    """A phone photo: pixels stored sideways with EXIF Orientation 6 (rotate 90° clockwise to display). Displayed it
    is 40×20 with a red marker at (30, 5); points and masks are in that displayed orientation."""
    shown = np.full((20, 40, 3), 40, np.uint8)
    shown[3:8, 28:33] = (250, 20, 20)
    stored = Image.fromarray(np.rot90(shown, k=1).copy())  # 20×40, what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    im = dio.load_image(path)
    assert im.size == (40, 20)
    r, g, _ = im.getpixel((30, 5))
    assert r > 200 and g < 80  # the marker where the user sees it
    mask_shown = np.zeros((20, 40), np.uint8)
    mask_shown[:, 20:] = 255
    Image.fromarray(np.rot90(mask_shown, k=1).copy()).save(tmp_path / "m.jpg", exif=exif.tobytes(), quality=95)
    mask = dio.load_mask(tmp_path / "m.jpg")
    assert mask.shape == (20, 40) and mask[:, 25:].all() and not mask[:, :15].any()
    request = DragRequest(im, [(30, 5)], [(35, 15)], mask)  # (35, 15) lies outside the stored 20×40 frame
    assert request.size == (40, 20)


# --- masks and degenerate requests --------------------------------------------------------------------------------------

def test_mask_arrays_use_alpha_when_it_varies():
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere (a brush layer's colour) ...
    rgba[2:4, 2:6, 3] = 255  # ... painted (opaque) only here
    mask = DragRequest(Image.new("RGB", (8, 6)), [(0, 0)], [(7, 5)], rgba).mask
    assert mask.sum() == 8 and mask[2:4, 2:6].all()  # the red channel would have made everything editable
    opaque = np.zeros((6, 8, 4), np.uint8)
    opaque[..., 3] = 255
    opaque[1, 1, 1] = 9  # an opaque black-and-white mask saved with alpha: its colour decides
    assert dio.mask_from_array(opaque).sum() == 1
    assert dio.mask_from_array(np.dstack([np.zeros((2, 2)), [[0, 1], [1, 1]]])).sum() == 3  # grey + alpha
    assert dio.mask_from_array(np.dstack([np.zeros((2, 2)), np.zeros((2, 2)), [[0, 5], [0, 0]]])).sum() == 1


def test_degenerate_requests_are_decided(caplog):
    image = Image.new("RGB", (16, 16))
    with caplog.at_level(logging.WARNING, logger="dragkit.types"):
        empty = DragRequest(image, [(1, 1)], [(9, 9)], np.zeros((16, 16), np.uint8))
        anchored = DragRequest(image, [(1, 1), (5, 5)], [(9, 9), (5, 5)])
        shared = DragRequest(image, [(1, 1), (3, 3)], [(9, 9), (9, 9)])
    assert empty.mask is None and "whole image is editable" in caplog.text
    assert anchored.handles == ((1, 1), (5, 5)) and "drag 2: the handle is its target" in caplog.text
    assert len(shared.handles) == 2  # two handles to one target: legal (e.g. pinching), no notice
    for handles, targets, reason in (([(1, 1)], [(1, 1)], "nothing to drag"), ([(1, 1)] * 2, [(2, 2)] * 2, "repeats"),
                                     ([(1, 1)] * 2, [(2, 2), (3, 3)], "same handle")):
        with pytest.raises(DragError, match=reason):
            DragRequest(image, handles, targets)


def test_inline_masks_keep_a_masked_sample_replayable(tmp_path):
    """A benchmark result (or `edit --dragbench --json`) of a masked sample has no mask file: the record holds the
    mask inline, and replaying it with --request drags with that mask."""
    mask = np.zeros((12, 16), np.uint8)
    mask[2:9, 3:11] = 1
    image = Image.new("RGB", (16, 12), (9, 9, 9))
    image.save(tmp_path / "im.png")
    request = DragRequest(image, [(4, 4)], [(8, 5)], mask, "p")
    record = dio.edit_record(request, "im.png", None)
    assert record["request"]["mask"]["size"] == [16, 12]
    (tmp_path / "r.json").write_text(json.dumps(record))
    again, _, mask_path = dio.read_request_file(tmp_path / "r.json")
    assert mask_path is None and np.array_equal(again.mask, mask) and again.prompt == "p"


# --- outputs -----------------------------------------------------------------------------------------------------------

def test_outputs_are_one_transaction(tmp_path):
    folder = tmp_path / "new" / "deeper"
    paths = [folder / "a.png", folder / "b.json", tmp_path / "c.gif"]
    with pytest.raises(OSError):
        with dio.atomic_paths(*paths) as temps:
            temps[0].write_text("a")
            temps[1].write_text("b")
            raise OSError("disk full")
    assert not any(p.exists() for p in paths) and not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left either
    with dio.atomic_paths(*paths) as temps:
        for t in temps:
            t.write_text("ok")
    assert all(p.read_text() == "ok" for p in paths)


def test_files_get_the_users_umask_and_a_replaced_file_keeps_its_mode(tmp_path):
    old = os.umask(0o027)
    try:
        dio.save_json_atomic({"a": 1}, tmp_path / "new.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640  # not mkstemp's 0600
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    existing.chmod(0o604)
    dio.save_json_atomic({"a": 2}, existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o604 and json.loads(existing.read_text()) == {"a": 2}


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_failed_write_leaves_no_file(tiny_model_dir, photo, tmp_path, capsys, monkeypatch):
    """The edit succeeds but its JSON cannot be written: the PNG must not appear alone (exit 2, one line)."""
    import dragkit.cli.edit as edit_cli

    def fail(data, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(edit_cli, "write_json", fail)
    out, js = tmp_path / "out" / "e.png", tmp_path / "out" / "e.json"
    code = main(["edit", str(photo), "--drag", "10,10:20,12", "--model", str(tiny_model_dir), "--out", str(out),
                 "--json", str(js), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_the_input_keeping_its_mode(tiny_model_dir, photo, tmp_path, capsys, caplog):
    """Also: an anchor (handle = target) among moving drags is done, with a notice."""
    photo.chmod(0o640)
    before = photo.read_bytes()
    with caplog.at_level(logging.WARNING, logger="dragkit.types"):
        code = main(["edit", str(photo), "--drag", "10,10:20,12", "--drag", "40,30:40,30", "--model",
                     str(tiny_model_dir), "--out", str(photo), "--overwrite", *FAST])
    assert code == 0, capsys.readouterr().err
    assert "the handle is its target" in caplog.text
    assert photo.read_bytes() != before and stat.S_IMODE(photo.stat().st_mode) == 0o640
    assert Image.open(photo).size == (64, 48)


def test_dragbench_json_replays_with_its_mask(tiny_model_dir, photo, tmp_path, capsys):
    sample = tmp_path / "cat" / "s1"
    sample.mkdir(parents=True)
    Image.open(photo).save(sample / "original_image.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[5:40, 5:60] = 1
    (sample / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "a", "points": [[10, 10], [20, 12]],
                                                         "mask": mask}))
    js = tmp_path / "e.json"
    assert main(["edit", "--dragbench", str(sample), "--model", str(tiny_model_dir), "--out", str(tmp_path / "e.png"),
                 "--json", str(js), *FAST]) == 0
    recorded = json.loads(js.read_text())["request"]["mask"]
    assert isinstance(recorded, dict)  # no longer "mask": null
    request, _, _ = dio.read_request_file(js)
    assert np.array_equal(request.mask, mask)


# --- first contact -----------------------------------------------------------------------------------------------------

def test_shapes_example_prints_a_command_that_runs_offline_anywhere(tmp_path, capsys, monkeypatch):
    from dragkit.cli.common import resolve_model
    from dragkit.shapes.model import WEIGHTS_DIR

    assert resolve_model("shapes") == str(WEIGHTS_DIR) and resolve_model("./shapes") == "./shapes"
    monkeypatch.chdir(tmp_path)  # not the repository: the name must not depend on where dragkit is run from
    assert main(["shapes", "example", "--out", "scene.png"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("# wrote scene.png") and Image.open("scene.png").size == (64, 64)
    assert stat.S_IMODE(os.stat("scene.png").st_mode) == 0o666 & ~_umask()
    command = shlex.split(out[1])
    assert command[:4] == ["dragkit", "edit", "scene.png", "--model"] and command[4] == "shapes"
    assert command[command.index("--prompt") + 1] == "yellow disc, stripes background"
    assert main([*command[1:], *FAST]) == 0, capsys.readouterr().err  # the shipped model, fast settings
    assert Image.open("scene-edited.png").size == (64, 64)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_large_photo_is_edited_at_max_side_and_returned_at_its_size(tiny_model):
    """``max_side`` (default: twice the model's native size) caps the working image: a 12-MP photo would need
    ~200 GiB in the LoRA stage at full size. The result comes back at the input size, points in its pixels."""
    import dataclasses

    import numpy as np
    from PIL import Image

    from dragkit import stages
    from dragkit.config import DragDiffusionConfig
    from dragkit.editor import DragEditor
    from dragkit.types import DragRequest

    editor = DragEditor(tiny_model)
    assert editor.check(DragRequest(Image.new("RGB", (64, 64)), [(1, 1)], [(5, 5)]), None).max_side == \
        2 * tiny_model.default_size
    assert stages.working_size((4000, 3000), 8, 1024) == (1024, 768)
    assert stages.working_size((500, 300), 8, 1024) == (496, 304)  # smaller images: only rounded (half to even)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 240, 3), dtype=np.uint8))
    config = dataclasses.replace(DragDiffusionConfig(lora_steps=0, num_inference_steps=10, optimization_steps=2),
                                 max_side=64)
    request = DragRequest(big, [(120, 80)], [(150, 80)])
    edit = stages.start_edit(tiny_model, request, editor.check(request, config), None)
    assert edit.working_size == (64, 40)
    result = editor.edit(request, config)
    assert result.image.size == (240, 160)
    assert all(0 <= x < 240 and 0 <= y < 160 for x, y in result.final_handles)


def test_the_pixel_limit_is_read_from_the_header_and_pils_own_limit_is_left_alone(tmp_path, monkeypatch):
    """Issue 22: dragkit checks an image's size from its header (before decoding) and never switches PIL's
    process-wide ``Image.MAX_IMAGE_PIXELS`` off around its own reads — another thread's guard stays on."""
    path = _saved(tmp_path, "big.png", Image.new("RGB", (40, 30)))
    seen = []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: seen.append(self.size) or None)
    with pytest.raises(DragError, match=r"big.png is 40x30 = 1,200 pixels, more than the limit of 1,000"):
        dio.load_image(path, max_pixels=1000)
    assert seen == []  # refused before a pixel was decoded
    monkeypatch.undo()

    writes = []

    class Watched(type(Image)):  # a module type that records every assignment to PIL's global
        def __setattr__(self, name, value):
            writes.append(name)
            super().__setattr__(name, value)

    monkeypatch.setattr(Image, "__class__", Watched)
    assert dio.load_image(path).size == (40, 30)
    assert "MAX_IMAGE_PIXELS" not in writes
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # an application's stricter limit: PIL refuses above 1 000
    with pytest.raises(DragError, match="image library's own limit"):
        dio.load_image(path, max_pixels=10_000)
