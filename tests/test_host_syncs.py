"""No host sync per step that the algorithm does not need (issue 16): each DragDiffusion step reads the device twice —
the stop test (carrying the handles for the progress event) and the loss for the progress event / NaN guard — and a
GoodDrag supervision step once (its stop test and handles are refreshed at each tracking, one read per tracking).

Counted at the Python level (``Tensor.item/tolist/cpu/numpy/__bool__/__float__/__int__`` called from dragkit's code)
while the optimisation stage runs, in fp32 (fp16 adds the gradient scaler's two reads). Before this was fixed a
DragDiffusion step made 5 such reads plus one per pair and window (boolean-mask indexing of clipped windows)."""

import dataclasses
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import dragkit
from dragkit.config import default_config
from dragkit.editor import DragEditor
from dragkit.types import DragRequest

pytestmark = pytest.mark.device

# dragkit's own files (not "dragkit" anywhere in the path: a venv such as /tmp/dragkit-floors holds the libraries)
DRAGKIT_SRC = os.path.dirname(os.path.abspath(dragkit.__file__)) + os.sep
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


class ReadCounter:
    def __init__(self, monkeypatch):
        self.n = 0
        for name in READS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original):
        def read(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            # ours, of float data: torch's own (Adam's step counter) and integer reads (the scheduler's timesteps)
            # are of CPU-resident tensors, never device reads on a GPU
            if caller.startswith(DRAGKIT_SRC) and tensor.is_floating_point():
                self.n += 1
            return original(tensor, *args, **kwargs)
        return read


@pytest.mark.parametrize("method, per_step", [("dragdiffusion", 2), ("gooddrag", 1)])
def test_reads_per_optimisation_step(tiny_model, monkeypatch, method, per_step):
    config = dataclasses.replace(default_config(method), lora_steps=0, num_inference_steps=10)
    if method == "dragdiffusion":
        config = dataclasses.replace(config, optimization_steps=6)
    else:
        config = dataclasses.replace(config, drag_denoise_steps=1, trackings_per_denoise=2,
                                     supervision_steps_per_tracking=3, early_stop_trackings=100)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    request = DragRequest(image, [(10, 10)], [(54, 54)])  # far: no early stop
    counter = ReadCounter(monkeypatch)
    reads = []

    def on_event(event):
        if event.stage == "optimization":
            reads.append(counter.n)

    DragEditor(tiny_model).edit(request, config, callback=on_event)
    between = np.diff(reads).tolist()
    if method == "dragdiffusion":
        assert between == [per_step] * (len(reads) - 1), between
    else:  # J = 3 supervision steps per tracking: one read each, plus the tracking's own
        assert between == [per_step, per_step, per_step + 1, per_step, per_step], between
