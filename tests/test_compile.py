"""``--compile`` (torch.compile of the UNet, off by default) on both methods: same edits as without it.

Run with dynamo's ``eager`` backend: it captures the same graphs (and the same recompilations: with and without
gradients, LoRA attached, the feature hook, reference attention) that inductor would then generate code for, in a
fraction of the time; inductor itself is exercised by ``scripts/device_check.sh``. Measured here (1 thread, tiny
model): the first compiled GoodDrag edit ≈ 60 s of tracing with a LoRA, the next edits 1 s as uncompiled; the test
runs without the LoRA (its training and attached graphs are traced on the GPU by the device check's compile rows).

The regression it guards: a graph compiled before the feature hook existed (inversion) was reused by default after the
hook was added (GoodDrag's no-grad denoising forward) and the hook silently did not run.
"""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.config import default_config
from dragkit.editor import DragEditor
from dragkit.models import DiffusionModel, compile_unet
from dragkit.testing import build_tiny_pipeline
from dragkit.types import DragRequest

pytestmark = [pytest.mark.device, pytest.mark.slow]


def test_compiled_unet_gives_the_same_edits_for_both_methods(test_device):
    model = DiffusionModel.from_pipeline(build_tiny_pipeline(0).to(test_device), name="tiny")
    editor = DragEditor(model)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    request = DragRequest(image, [(20, 20)], [(30, 24)], prompt="x")
    configs = [dataclasses.replace(default_config(m), lora_steps=0, num_inference_steps=10)
               for m in ("gooddrag", "dragdiffusion")]
    configs[0] = dataclasses.replace(configs[0], drag_denoise_steps=2)
    eager = [editor.edit(request, c) for c in configs]
    hook_guards = torch._dynamo.config.skip_nnmodule_hook_guards
    compile_unet(model.unet, "eager")
    try:
        compiled = [editor.edit(request, c) for c in configs]
        # the hook guards are a scoped patch around the UNet's compiled calls, never a process-wide switch
        assert torch._dynamo.config.skip_nnmodule_hook_guards == hook_guards
    finally:
        model.unet._compiled_call_impl = None  # nn.Module.compile's switch: back to the plain forward
        torch._dynamo.reset()
    for a, b in zip(compiled, eager):
        assert a.final_handles == b.final_handles and a.steps == b.steps
        torch.testing.assert_close(a.latent, b.latent, rtol=0, atol=1e-5)


def test_the_cli_has_the_flag(capsys):
    from dragkit.cli import main

    for command in ("edit", "generate", "ui"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--compile" in capsys.readouterr().out
