"""dragkit's ComfyUI nodes: a thin layer over :class:`dragkit.editor.DragEditor`.

- **Load dragkit model** (``DragkitLoader``) → ``DRAGKIT_EDITOR``: the editor of a model (Hub id, diffusers folder,
  single-file ``.safetensors``, ``shapes`` / ``shapes-xl``), loaded exactly as ``dragkit edit --model`` loads it, on
  ComfyUI's device when ComfyUI is there.
- **Drag image (dragkit)** (``DragkitDrag``): IMAGE ``[B,H,W,C]`` float 0..1, optional MASK ``[B,H,W]`` (nonzero =
  may change: paint it in ComfyUI's mask editor), points as a STRING ``{"handles": [[x, y], …], "targets": [[x, y],
  …]}`` (pixels of the input image), prompt, method, a few settings, seed → IMAGE. Settings left at -1 are the
  method's defaults (the library's); ``settings`` takes more ``FIELD=VALUE`` lines, as ``dragkit edit --set``.

The request and the config are built by dragkit's own code (:class:`dragkit.types.DragRequest`,
:func:`dragkit.config.apply_overrides`), so the node refuses what the CLI refuses, with the same one-line
:class:`dragkit.types.DragError`, and a node run gives the image ``dragkit edit`` gives with the same inputs.

ComfyUI modules (``comfy.*``) are imported only while a node runs, and only when they are there: ``import
dragkit.comfyui`` works without ComfyUI (tests, API users). Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
from PIL import Image

from dragkit.config import METHODS, apply_overrides, default_config
from dragkit.types import DragError, DragRequest, ProgressEvent

logger = logging.getLogger(__name__)

CATEGORY = "dragkit"
EDITOR_TYPE = "DRAGKIT_EDITOR"
DEFAULT_PREPARED = 4  # prepared images an editor keeps (LRU): each holds a LoRA (CPU) and latents (device)
EMPTY_POINTS = '{"handles": [], "targets": []}'
PREVIEW_SIDE = 1024  # the input image is sent to the node's widget at most this large (JPEG, in the ui message)
SEED_MAX = 0xFFFF_FFFF_FFFF_FFFF


def _comfy(module: str):
    """``comfy.<module>`` when ComfyUI is importable, else None (tests, API users)."""
    try:
        return __import__(f"comfy.{module}", fromlist=["_"])
    except Exception:  # noqa: BLE001 — not in ComfyUI (or a broken one): dragkit's own defaults
        return None


def comfy_device() -> Optional[str]:
    """The torch device ComfyUI computes on (``comfy.model_management.get_torch_device()``), None without ComfyUI."""
    mm = _comfy("model_management")
    if mm is None:
        return None
    try:
        return str(mm.get_torch_device())
    except Exception:  # noqa: BLE001
        return None


# --- the editor a loader returns ---------------------------------------------------------------------------------

class DragkitEditor:
    """A :class:`dragkit.editor.DragEditor` with an explicit, bounded cache of prepared images (LRU, ``keep``
    entries) keyed by image content + prompt + model: a queue run on an image already dragged with these LoRA and
    inversion settings only drags and denoises (the web app's warm re-edit)."""

    def __init__(self, editor, keep: int = DEFAULT_PREPARED):
        self.editor = editor
        self.keep = keep
        self.prepared: OrderedDict[tuple, Any] = OrderedDict()

    def prepared_for(self, request: DragRequest):
        """The prepared image of ``request``'s image and prompt on this model (new, or the cached one); None when the
        cache is off (``keep`` = 0)."""
        from dragkit.prepared import PreparedImage, image_digest

        if self.keep <= 0:
            return None
        model = self.editor.model
        key = (image_digest(request.image), request.prompt, model.name, str(model.dtype))
        if key in self.prepared:
            self.prepared.move_to_end(key)
            return self.prepared[key]
        prepared = self.prepared[key] = PreparedImage.of(model, request.image, request.prompt)
        while len(self.prepared) > self.keep:
            self.prepared.popitem(last=False)
        return prepared

    def edit(self, request: DragRequest, config, seed: int, callback=None):
        """``DragEditor.edit`` with this image's prepared image (filled by the edit where it lacks a piece)."""
        return self.editor.edit(request, config, callback=callback, seed=seed, prepared=self.prepared_for(request))

    def __repr__(self) -> str:
        return f"DragkitEditor({self.editor.model.name}, {self.editor.model.dtype}, {len(self.prepared)} prepared)"


# --- conversions ComfyUI ↔ dragkit -------------------------------------------------------------------------------

def images_from_tensor(image) -> list[Image.Image]:
    """ComfyUI IMAGE ``[B,H,W,C]`` float 0..1 (C = 3, or 4/1) → B PIL images (8-bit: round(255·v))."""
    if getattr(image, "ndim", None) != 4 or image.shape[0] < 1 or image.shape[-1] not in (1, 3, 4):
        raise DragError(f"image must be a ComfyUI IMAGE [B,H,W,C] with C = 1, 3 or 4, got shape "
                        f"{tuple(getattr(image, 'shape', ()))}")
    arr = np.asarray(image.detach().float().cpu().clamp(0, 1).numpy() if hasattr(image, "detach") else image,
                     dtype=np.float32)
    arr = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    return [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in arr]


def tensor_from_images(images: list[Image.Image]):
    """B RGB PIL images of one size → ComfyUI IMAGE ``[B,H,W,3]`` float32 0..1 on the CPU."""
    import torch

    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]))


def masks_from_tensor(mask, batch: int) -> list[Optional[np.ndarray]]:
    """ComfyUI MASK (``[B,H,W]``, ``[1,H,W]`` or ``[H,W]``, nonzero = may change) → one H×W array per image (a
    single mask applies to every image); None → no mask. Sizes are checked by :class:`DragRequest`."""
    if mask is None:
        return [None] * batch
    m = mask.detach().float().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask, dtype=np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise DragError(f"mask must be a ComfyUI MASK [B,H,W], got shape {tuple(m.shape)}")
    if m.shape[0] not in (1, batch):
        raise DragError(f"{m.shape[0]} masks for {batch} images: give one mask, or one per image")
    return [m[i if m.shape[0] > 1 else 0] for i in range(batch)]


def parse_points(text: str) -> tuple[list, list]:
    """The points STRING ``{"handles": [[x, y], …], "targets": [[x, y], …]}`` → (handles, targets), checked as a
    request JSON's points (:mod:`dragkit.io`); counts, ranges and pairs are checked by :class:`DragRequest`."""
    from dragkit.io import _json_points

    try:
        data = json.loads(text) if isinstance(text, str) else text
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DragError(f"points: not valid JSON ({exc.__class__.__name__}); expected "
                        '{"handles": [[x, y], ...], "targets": [[x, y], ...]}') from None
    if not isinstance(data, dict) or not {"handles", "targets"} <= set(data):
        raise DragError('points must be {"handles": [[x, y], ...], "targets": [[x, y], ...]} (pixels of the image)')
    return _json_points(data, "handles"), _json_points(data, "targets")


def build_config(method: str, lora_steps: int = -1, num_inference_steps: int = -1, inversion_strength: float = -1,
                 settings: str = ""):
    """The method's defaults with the node's settings applied (-1 = the default), then its ``FIELD=VALUE`` lines:
    :func:`dragkit.config.apply_overrides`, as ``dragkit edit --lora-steps N --set …``."""
    assignments = [f"{name}={value}" for name, value in (("lora_steps", lora_steps),
                                                          ("num_inference_steps", num_inference_steps),
                                                          ("inversion_strength", inversion_strength)) if value != -1]
    assignments += [line.strip() for line in (settings or "").replace(";", "\n").splitlines()
                    if line.strip() and not line.strip().startswith("#")]
    return apply_overrides(default_config(method), assignments)


def preview(image: Image.Image) -> dict:
    """The input image for the node's points widget (sent in the ui message, nothing written): a JPEG data URL at
    most :data:`PREVIEW_SIDE` px, with the image's own size (points are its pixels)."""
    small = image.convert("RGB")
    if max(small.size) > PREVIEW_SIDE:
        small = small.copy()
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=90)
    return {"image": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "width": image.size[0], "height": image.size[1]}


class ComfyProgress:
    """A dragkit progress callback for ComfyUI: one ``comfy.utils.ProgressBar`` per stage (and image), and
    ComfyUI's interrupt (``throw_exception_if_processing_interrupted``) checked at every step; its exception
    propagates through the editor unchanged, so ComfyUI reports an interrupt, not an error."""

    def __init__(self, prefix: str = ""):
        self.utils, self.mm = _comfy("utils"), _comfy("model_management")
        self.prefix, self.stage, self.bar = prefix, None, None

    def check_interrupt(self) -> None:
        if self.mm is not None and hasattr(self.mm, "throw_exception_if_processing_interrupted"):
            self.mm.throw_exception_if_processing_interrupted()

    def __call__(self, event: ProgressEvent) -> None:
        self.check_interrupt()
        if self.utils is None:
            return
        if event.stage != self.stage or self.bar is None:
            self.stage, self.bar = event.stage, self.utils.ProgressBar(max(event.total, 1))
        self.bar.update_absolute(min(event.step, event.total), max(event.total, 1))


# --- the nodes ---------------------------------------------------------------------------------------------------

class DragkitLoader:
    """Load a model for dragging (the same loading as ``dragkit edit --model``)."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (EDITOR_TYPE,)
    RETURN_NAMES = ("editor",)
    DESCRIPTION = "Loads a diffusion model for dragkit: a Hub id, a local diffusers folder, a single-file " \
                  ".safetensors checkpoint, or 'shapes' (the small offline toy model shipped with dragkit)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("STRING", {"default": "shapes", "multiline": False,
                                     "tooltip": "Hub id, local diffusers folder, single-file .safetensors, or "
                                                "'shapes' / 'shapes-xl' (toy models shipped with dragkit)"}),
                "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                              "tooltip": "auto: fp16 on CUDA/MPS, fp32 on CPU"}),
            },
            "optional": {
                "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's device"}),
                "model_config": ("STRING", {"default": "", "tooltip": "local diffusers config folder for a "
                                                                      "single-file checkpoint (offline)"}),
                "vae": ("STRING", {"default": "", "tooltip": "optional separate VAE (Hub id, folder or "
                                                             ".safetensors)"}),
                "keep_prepared": ("INT", {"default": DEFAULT_PREPARED, "min": 0, "max": 64,
                                          "tooltip": "images whose LoRA and inversion are kept for re-drags "
                                                     "(0 = none)"}),
            },
        }

    def load(self, model: str, dtype: str = "auto", device: str = "auto", model_config: str = "", vae: str = "",
             keep_prepared: int = DEFAULT_PREPARED):
        from dragkit.cli.common import load_editor

        if not isinstance(model, str) or not model.strip():
            raise DragError("model: give a Hub id, a local folder, a .safetensors file or 'shapes'")
        args = argparse.Namespace(model=model.strip(), vae=vae.strip() or None,
                                  model_config=model_config.strip() or None,
                                  device=comfy_device() if device == "auto" else device,
                                  dtype=None if dtype == "auto" else dtype, allow_pickle=False, style_lora=None,
                                  style_lora_scale=1.0, compile=False)
        editor = load_editor(args)
        logger.info("dragkit: loaded %s on %s (%s)", args.model, editor.model.device, editor.model.dtype)
        return (DragkitEditor(editor, keep_prepared),)


class DragkitDrag:
    """Drag the content under each handle to its target (dragkit's methods)."""

    CATEGORY = CATEGORY
    FUNCTION = "drag"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    DESCRIPTION = "Point-based drag editing: moves what is under each handle point to its target point. Click " \
                  "handle → target pairs on the image shown on the node (or type the points JSON)."

    @classmethod
    def INPUT_TYPES(cls):
        methods = list(METHODS)  # read when ComfyUI asks: every method dragkit has
        return {
            "required": {
                "editor": (EDITOR_TYPE,),
                "image": ("IMAGE",),
                "points": ("STRING", {"default": EMPTY_POINTS, "multiline": True,
                                      "tooltip": '{"handles": [[x, y], ...], "targets": [[x, y], ...]}: pixels of '
                                                 "the input image, one target per handle"}),
                "prompt": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "text prompt describing the image"}),
                "method": (methods, {"default": methods[0]}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX,
                                 "tooltip": "seed of the identity-LoRA noise"}),
                "lora_steps": ("INT", {"default": -1, "min": -1, "max": 100_000,
                                       "tooltip": "identity-LoRA steps (0 = no LoRA; -1 = the method's default)"}),
                "num_inference_steps": ("INT", {"default": -1, "min": -1, "max": 1000,
                                                "tooltip": "DDIM steps of the full schedule (-1 = the method's "
                                                           "default)"}),
                "inversion_strength": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.01,
                                                 "tooltip": "fraction of the schedule inverted: how much may change "
                                                            "(-1 = the method's default)"}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "editable region (nonzero = may change); none = the whole image"}),
                "settings": ("STRING", {"default": "", "multiline": True,
                                        "tooltip": "more config fields, FIELD=VALUE per line (as dragkit edit "
                                                   "--set), e.g. latent_lr=0.02"}),
            },
        }

    def drag(self, editor: DragkitEditor, image, points: str, prompt: str, method: str, seed: int,
             lora_steps: int = -1, num_inference_steps: int = -1, inversion_strength: float = -1.0, mask=None,
             settings: str = ""):
        results, pictures = self.run(editor, image, points, prompt, method, seed, lora_steps, num_inference_steps,
                                     inversion_strength, mask, settings)
        return {"ui": {"dragkit_input": [preview(pictures[0])]},
                "result": (tensor_from_images([r.image for r in results]),)}

    def run(self, editor: DragkitEditor, image, points: str, prompt: str, method: str, seed: int,
            lora_steps: int = -1, num_inference_steps: int = -1, inversion_strength: float = -1.0, mask=None,
            settings: str = ""):
        """(the DragResult of each image of the batch, the input images): every request is checked before the
        first edit starts."""
        if not isinstance(editor, DragkitEditor):
            raise DragError("editor: connect a 'Load dragkit model' node")
        if method not in METHODS:
            raise DragError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        config = build_config(method, lora_steps, num_inference_steps, inversion_strength, settings)
        pictures = images_from_tensor(image)
        handles, targets = parse_points(points)
        masks = masks_from_tensor(mask, len(pictures))
        requests = [DragRequest(pic, handles, targets, m, prompt or "") for pic, m in zip(pictures, masks)]
        for request in requests:
            editor.editor.check(request, config)
        results = []
        for i, request in enumerate(requests):
            progress = ComfyProgress()
            progress.check_interrupt()
            if len(requests) > 1:
                logger.info("dragkit: image %d of %d", i + 1, len(requests))
            results.append(editor.edit(request, config, int(seed), progress))
        return results, pictures


NODE_CLASS_MAPPINGS = {"DragkitLoader": DragkitLoader, "DragkitDrag": DragkitDrag}
NODE_DISPLAY_NAME_MAPPINGS = {"DragkitLoader": "Load dragkit model", "DragkitDrag": "Drag image (dragkit)"}
