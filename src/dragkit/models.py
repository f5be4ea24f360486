"""Loading a Stable-Diffusion-style model once (SD-1.5 family or SDXL), and the few operations every method needs.

``--model`` accepts a Hub id, a local diffusers folder, or a single-file ``.safetensors`` checkpoint (with a local
config folder when offline). The family is detected from the model itself (:func:`detect_family`). Pickle-based
checkpoints run code when loaded and are refused unless explicitly allowed.

The families differ here in one method, :meth:`DiffusionModel.conditioning`: SD-1.5 is conditioned on one text
encoder's last hidden states; SDXL on both encoders' penultimate hidden states (concatenated), the second encoder's
pooled embedding and six size ids, with a zeroed negative branch for an empty negative prompt where the model's
config says ``force_zeros_for_empty_prompt`` (as diffusers' SDXL pipeline builds them).

Memory (docs/performance.md, "Memory"). The text encoders are needed once per edit, for a few 77-token prompts, and
their weights (SD-1.5 0.23 GiB, SDXL 1.52 GiB in fp16) would otherwise sit on the accelerator through the whole edit:
they live on the CPU in float32 whenever the model runs on an accelerator (:func:`text_encoder_placement`), and only
the embeddings go to the device. The VAE encodes and decodes a large canvas in overlapping tiles (diffusers' tiling,
:func:`use_vae_tiling`) and a batch one image at a time, so no full-resolution activation of a large image is held at
once; the model's own canvas (and anything up to four times its pixels) takes the exact, untiled path.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image

from .errors import first_line
from .family import Family, family_of
from .guidance import TextConditioning
from .hub import DEFAULT_MODEL, offline
from .types import DragError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelLoadError(DragError):
    """The model could not be loaded; the message says why and what to pass instead."""


def select_device(device: Optional[str] = None) -> torch.device:
    """cuda > mps > cpu unless ``device`` names one."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def select_dtype(device: torch.device, dtype: Optional[str | torch.dtype] = None) -> torch.dtype:
    """``dtype`` ("fp32", "fp16", "bf16") if given; else fp16 on CUDA and MPS (fast, and every fp16 hazard is
    handled: a gradient scaler wherever fp16 gradients flow, the VAE in fp32 when its config says ``force_upcast``),
    bf16 on the other accelerators (XPU, NPU, HPU: fp16 kernels missing or unsafe there), fp32 on the CPU (half
    precision is emulated there and slower)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype:
        if dtype not in names:
            raise DragError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
        return names[dtype]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def text_encoder_placement(device: torch.device) -> Optional[tuple[torch.device, torch.dtype]]:
    """(device, dtype) for the text encoders of a model running on ``device``: on an accelerator the CPU in float32
    (encoding a prompt is one forward of a few 77-token sequences per edit; fp16 matmuls are slow and lossy on CPUs),
    so the accelerator keeps its memory for the UNet; None on the CPU (they stay as loaded)."""
    if torch.device(device).type == "cpu":
        return None
    return torch.device("cpu"), torch.float32


def use_vae_tiling(height: int, width: int, tile: int) -> bool:
    """Whether a ``height``×``width`` image goes through the VAE in tiles: when it holds more pixels than four tiles of
    ``tile``² (a square more than twice the model's side: SD-1.5 above 1024², SDXL above 2048²). The VAE's working set
    grows with the pixel count (~0.4 GiB per 512², bf16 on the CPU), so this bounds it near 1.5 GiB for
    SD-1.5; below, the exact path is kept (tiles are blended at their seams, so they change the result slightly)."""
    return height * width > 4 * tile * tile


@contextmanager
def vae_tiling(vae, enabled: bool) -> Iterator[None]:
    """diffusers' tiled encoding/decoding on ``vae`` while the context is open (tiles of its config's
    ``sample_size``, overlapping by a quarter and blended), when ``enabled`` and the VAE supports it; restored to what
    it was afterwards, also on exceptions."""
    switch = enabled and not getattr(vae, "use_tiling", True)
    if switch:
        vae.enable_tiling()
    try:
        yield
    finally:
        if switch:
            vae.disable_tiling()


@dataclass
class DiffusionModel:
    """The frozen components of a latent diffusion model, on one device in one dtype. Loaded once, reused."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: Any
    name: str = ""
    style_lora: Optional[dict] = None  # {path, sha256, scale} of a user's style LoRA loaded into the model, if any
    text_encoder_2: Any = None  # SDXL: the second text encoder (with projection: gives the pooled embedding)
    tokenizer_2: Any = None  # SDXL: its tokenizer
    force_zeros_for_empty_prompt: bool = False  # SDXL pipeline config: an empty negative prompt is a zero embedding

    @property
    def family(self) -> Family:
        """SD-1.5-style or SDXL (:mod:`dragkit.family`), from the UNet's config."""
        return family_of(self.unet)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def default_size(self) -> int:
        """The canvas side the model was made for, as diffusers pipelines take it: ``unet.config.sample_size`` × the
        VAE factor (SD-1.5 512, SDXL 1024)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel, from the VAE config (2^(number of down blocks − 1))."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vae_tile(self) -> int:
        """The canvas side :func:`use_vae_tiling` measures against: the model's own canvas, or the VAE's tile size if
        larger (both 512 for SD-1.5, 1024 for SDXL; tiny test models have a small VAE ``sample_size``)."""
        size = self.vae.config.sample_size
        return max(int(size[0] if isinstance(size, (list, tuple)) else size), self.default_size)

    @classmethod
    def from_pipeline(cls, pipe, name: str = "", style_lora: Optional[dict] = None) -> "DiffusionModel":
        """The pipeline's components, frozen; its text encoders moved where :func:`text_encoder_placement` says."""
        text_encoder_2 = getattr(pipe, "text_encoder_2", None)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, text_encoder_2):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        placement = text_encoder_placement(pipe.unet.device)
        for encoder in (pipe.text_encoder, text_encoder_2):
            if encoder is not None and placement is not None:
                encoder.to(*placement)
        if pipe.unet.dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
            pipe.vae.to(torch.float32)  # SDXL's VAE overflows in fp16 (its config says so): keep it in fp32
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, name, style_lora,
                   text_encoder_2, getattr(pipe, "tokenizer_2", None),
                   bool(pipe.config.get("force_zeros_for_empty_prompt", False)))

    @classmethod
    def from_pretrained(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        vae: Optional[str] = None,
        device: Optional[str] = None,
        dtype: Optional[str | torch.dtype] = None,
        config: Optional[str] = None,
        allow_pickle: bool = False,
        style_lora: Optional[str] = None,
        style_lora_scale: float = 1.0,
        compile: bool | str = False,
    ) -> "DiffusionModel":
        """Load from a Hub id, a local diffusers folder or a single-file checkpoint; see :func:`load_pipeline`.
        ``style_lora``: a user's LoRA weights file (.safetensors), applied with ``style_lora_scale`` to everything
        the model does (generation, identity LoRA, drag) — see :func:`load_style_lora`. ``compile``: torch.compile
        the UNet (True = inductor, or a backend name), see :func:`compile_unet`."""
        dev = select_device(device)
        dt = select_dtype(dev, dtype)
        pipe = load_pipeline(model, torch_dtype=dt, vae=vae, config=config, allow_pickle=allow_pickle)
        style = load_style_lora(pipe, style_lora, style_lora_scale, allow_pickle) if style_lora else None
        for module in (pipe.unet, pipe.vae):  # the text encoders are placed by from_pipeline (never via the device)
            module.to(dev)
        if compile:
            compile_unet(pipe.unet, "inductor" if compile is True else compile)
        return cls.from_pipeline(pipe, name=str(model), style_lora=style)

    # --- the operations every method uses -------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """The hidden states the UNet's cross-attention reads for ``prompt`` (1×77×d)."""
        return self.encode_text(prompt)[0]

    @torch.no_grad()
    def encode_text(self, prompt: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(hidden states, pooled embedding) of ``prompt``, padded to the tokenizers' max length. SD-1.5: the text
        encoder's last hidden state, no pooled embedding. SDXL: both encoders' penultimate hidden states
        concatenated (1×77×2048) and the pooled embedding of the encoder with a projection (1×1280). The encoders
        run where they live (the CPU on accelerators); the embeddings are returned on the model's device and dtype."""
        if self.text_encoder_2 is None:
            ids = self.token_ids(prompt).to(self.text_encoder.device)
            return self.text_encoder(ids)[0].to(self.device, self.dtype), None
        hidden, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds first
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1).to(self.device, self.dtype), pooled.to(self.device, self.dtype)

    def conditioning(self, prompt: str, size_hw: tuple[int, int], negative_prompt: str = "",
                     guidance_scale: float = 1.0) -> TextConditioning:
        """What every UNet evaluation of an edit or a generation is conditioned on — the one place that builds it.

        ``size_hw`` is the (height, width) of the working image: SDXL's size ids are (h, w, 0, 0, h, w) (original
        size = target size, no crop). With ``guidance_scale`` > 1 the negative branch is ``negative_prompt``'s
        encoding — zeros for an empty one where the model config says ``force_zeros_for_empty_prompt`` (SDXL)."""
        cond, pooled = self.encode_text(prompt)
        uncond = uncond_pooled = None
        if guidance_scale > 1:
            if not negative_prompt and self.force_zeros_for_empty_prompt:
                uncond = torch.zeros_like(cond)
                uncond_pooled = None if pooled is None else torch.zeros_like(pooled)
            else:
                uncond, uncond_pooled = self.encode_text(negative_prompt)
        time_ids = None
        if self.family.name == "sdxl":
            h, w = size_hw
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype, device=self.device)
        return TextConditioning(cond, uncond, guidance_scale, pooled, uncond_pooled, time_ids)

    def token_ids(self, prompt: str) -> torch.Tensor:
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        return self.tokenizer(prompt, padding="max_length", max_length=length,
                              truncation=True, return_tensors="pt").input_ids

    def image_to_tensor(self, image: Image.Image) -> torch.Tensor:
        """uint8 RGB → 1×3×H×W in [−1, 1] (x = u8/127.5 − 1), on the model's device in the VAE's dtype."""
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1)
        return x.permute(2, 0, 1)[None].to(self.device, self.vae.dtype)

    def vae_tiled(self, height: int, width: int, tiled: Optional[bool] = None) -> bool:
        """Whether the VAE works on a ``height``×``width`` image in tiles: ``tiled`` if given (True: diffusers' tiling
        on — it tiles what exceeds one VAE tile; False: not switched on), else :func:`use_vae_tiling` against
        :attr:`vae_tile`."""
        return use_vae_tiling(height, width, self.vae_tile) if tiled is None else tiled

    @torch.no_grad()
    def encode_posterior(self, image: torch.Tensor, tiled: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior (mean, std) of images in [−1, 1], both × the VAE's own scaling factor (from its config:
        0.18215 for SD-1.5, 0.13025 for SDXL). One image at a time; a large one in tiles (:meth:`vae_tiled`)."""
        s = self.vae.config.scaling_factor
        with vae_tiling(self.vae, self.vae_tiled(*image.shape[-2:], tiled)):
            dists = [self.vae.encode(x.to(self.vae.dtype)).latent_dist for x in image.split(1)]
        return torch.cat([d.mean for d in dists]) * s, torch.cat([d.std for d in dists]) * s

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: Optional[bool] = None) -> torch.Tensor:
        """Latents → images in [0, 1] (float32, N×3×H×W); the VAE runs in its own dtype (fp32 when its config says
        ``force_upcast`` and the model is fp16), on one latent at a time, on a large image's in tiles
        (:meth:`vae_tiled`)."""
        h, w = (side * self.vae_scale_factor for side in latents.shape[-2:])
        with vae_tiling(self.vae, self.vae_tiled(h, w, tiled)):
            x = torch.cat([self.vae.decode(z.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
                           for z in latents.split(1)])
        return (x.float() / 2 + 0.5).clamp(0, 1)


def compile_unet(unet, backend: str = "inductor") -> None:
    """torch.compile the UNet in place (``nn.Module.compile``: the same module object, so feature hooks, attention
    processors and LoRA adapters attach to it as before). Each new situation compiles once and is then reused: with
    and without gradients, LoRA attached or not, the feature hook on or off, reference attention installed, another
    image size (the first compiles take minutes for SD-1.5 with inductor; later edits run the compiled graphs).

    Dynamo is told to guard on module hooks (``skip_nnmodule_hook_guards = False``): the feature capture is a forward
    hook added and removed around each drag, and by default a graph compiled before the hook existed would be reused
    after it was added, silently without it. The setting is a scoped config patch around the compiled UNet's calls
    only (where dynamo traces and builds its guards), not a process-wide switch: other compiled code in the process
    keeps dynamo's defaults."""
    import torch._dynamo

    unet.compile(backend=backend)
    # nn.Module.compile stores torch.compile(module._call_impl) as the module's compiled call: run it under the patch
    unet._compiled_call_impl = torch._dynamo.config.patch(skip_nnmodule_hook_guards=False)(unet._compiled_call_impl)


def detect_family(model: str, config: Optional[str] = None) -> str:
    """"sdxl" or "sd" for a model argument, without loading weights: a diffusers folder's (or ``config``'s)
    ``model_index.json`` names its pipeline class; a single-file checkpoint's keys show SDXL's second text encoder
    (``conditioner.embedders.1``); a Hub id's ``model_index.json`` comes from the cache or the Hub."""
    import json

    path = Path(model).expanduser()
    index = Path(config).expanduser() / "model_index.json" if config else path / "model_index.json"
    if index.is_file():
        return "sdxl" if "XL" in json.loads(index.read_text()).get("_class_name", "") else "sd"
    if path.is_file() and path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return "sdxl" if any(k.startswith("conditioner.embedders.1.") for k in f.keys()) else "sd"
    if not path.exists() and HUB_ID.match(model):
        from diffusers import DiffusionPipeline

        for local in (True, False):  # the cache first; the Hub only when it answers (no minute of retries)
            if not local:
                if offline():
                    break
                check_hub(model)  # one line, within seconds, when the Hub cannot be reached
            try:
                name = DiffusionPipeline.load_config(model, local_files_only=local).get("_class_name", "")
                return "sdxl" if "XL" in name else "sd"
            except Exception:  # not cached / not on the Hub: loading reports it with a clear line
                continue
    return "sd"


def pipeline_class(family: str):
    """(diffusers pipeline class, its extra keyword arguments) of a family."""
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline, dict(add_watermarker=False)
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline, dict(safety_checker=None, requires_safety_checker=False)


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """The dtype argument of diffusers' ``from_pretrained`` / ``from_single_file``: ``dtype=`` where diffusers takes
    it (it deprecates ``torch_dtype``), ``torch_dtype=`` before that (older diffusers ignore an unknown ``dtype=`` and
    load in float32)."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def load_pipeline(model: str, *, torch_dtype: torch.dtype = torch.float32, vae: Optional[str] = None,
                  config: Optional[str] = None, allow_pickle: bool = False):
    """A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (detected) from a local folder, a single file,
    or the Hub, with clear one-line errors."""
    path = Path(model).expanduser()
    hint = ""  # appended to a failure's message where the user has an obvious fix
    try:
        if path.is_file():
            _check_checkpoint_format(path, allow_pickle)
        cls, extra = pipeline_class(detect_family(model, config))
        kwargs = dict(dtype_kwargs(torch_dtype), **extra)
        if path.is_dir():
            if not (path / "model_index.json").exists() and not (path / "unet").is_dir():
                raise ModelLoadError(f"{model}: not a diffusers model folder (no model_index.json)")
            pipe = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
        elif path.is_file():
            single = dict(kwargs)
            if config:
                single["config"] = config
            else:  # diffusers then looks for the configs in the Hub cache, or downloads them
                hint = ("; a single-file checkpoint needs its diffusers configs: pass --model-config DIR "
                        "(a local diffusers folder of the same architecture, e.g. SD-1.5 or SDXL)")
            pipe = cls.from_single_file(str(path), local_files_only=offline() or bool(config), **single)
            hint = ""
        elif HUB_ID.match(model) and not model.startswith((".", "/", "~")):
            pipe = _from_hub(model, kwargs, cls=cls)
        else:
            raise ModelLoadError(f"model path not found: {model}")
        if vae:
            pipe.vae = _load_vae(vae, torch_dtype, allow_pickle)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers/transformers raise many kinds; the user needs one line
        raise ModelLoadError(f"could not load model {model!r}: {first_line(exc)}{hint}") from exc
    return pipe


def _load_vae(vae: str, torch_dtype: torch.dtype, allow_pickle: bool):
    """A separate VAE (e.g. an fp16-safe SDXL VAE) from a file, a folder or the Hub."""
    from diffusers import AutoencoderKL

    vae_path = Path(vae).expanduser()
    if vae_path.is_file():
        _check_checkpoint_format(vae_path, allow_pickle)
        return AutoencoderKL.from_single_file(str(vae_path), **dtype_kwargs(torch_dtype))
    if vae_path.is_dir():
        return AutoencoderKL.from_pretrained(str(vae_path), **dtype_kwargs(torch_dtype), local_files_only=True)
    if HUB_ID.match(vae):
        return _from_hub(vae, dtype_kwargs(torch_dtype), cls=AutoencoderKL)
    raise ModelLoadError(f"VAE path not found: {vae}")


STYLE_ADAPTER = "dragkit_style"


def load_style_lora(pipe, path: str, scale: float = 1.0, allow_pickle: bool = False) -> dict:
    """Load a user's (style) LoRA into the pipeline's UNet and text encoder with diffusers' ``load_lora_weights``
    (kohya / diffusers / PEFT layouts), as adapter ``dragkit_style`` at ``scale``; it stays on for the model's life.
    Returns ``{path, sha256, scale}`` for records. The identity LoRA of real-image edits is added beside it."""
    import hashlib

    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelLoadError(f"style LoRA not found: {path}")
    _check_checkpoint_format(file, allow_pickle)
    try:
        # folder + weight_name: older diffusers (0.30-0.32 seen) take a bare file path for a Hub repo when offline
        pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=STYLE_ADAPTER)
        pipe.set_adapters([STYLE_ADAPTER], adapter_weights=[scale])
    except Exception as exc:  # diffusers/peft raise many kinds; the user needs one line
        raise ModelLoadError(f"could not load style LoRA {path!r}: {first_line(exc)}") from exc
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    logger.info("style LoRA %s (sha256 %s…) at scale %g", file, digest[:12], scale)
    return {"path": str(file), "sha256": digest, "scale": float(scale)}


def _check_checkpoint_format(path: Path, allow_pickle: bool) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(
            f"{path.name}: pickle-based checkpoints ({suffix}) can run code when loaded; convert it to .safetensors "
            "or pass --allow-pickle if you trust its source")
    if suffix not in PICKLE_SUFFIXES and suffix != ".safetensors":
        raise ModelLoadError(f"{path.name}: unsupported checkpoint format {suffix or '(none)'}; use .safetensors")


def check_hub(model_id: str) -> None:
    """A one-line :class:`ModelLoadError` at once when ``model_id`` cannot be fetched: ``HF_HUB_OFFLINE`` is set, or
    the Hub does not answer within 5 s (one request, no retries — huggingface_hub's downloads retry for half a
    minute, printing each retry)."""
    hint = (f"cannot fetch {model_id!r} from the Hugging Face Hub{' (HF_HUB_OFFLINE is set)' if offline() else ''}; "
            "download it once, or pass a local diffusers folder or a .safetensors file with --model PATH")
    if offline():
        raise ModelLoadError(hint)
    try:
        from huggingface_hub import model_info

        model_info(model_id, timeout=5)
    except Exception as exc:
        raise ModelLoadError(f"{hint} ({type(exc).__name__})") from None


def _from_hub(model_id: str, kwargs: dict, cls):
    """Cached copy first; then the Hub after :func:`check_hub`, so an unreachable Hub fails within seconds."""
    try:
        return cls.from_pretrained(model_id, local_files_only=True, **kwargs)
    except Exception:
        pass
    check_hub(model_id)
    return cls.from_pretrained(model_id, **kwargs)
