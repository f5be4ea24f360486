"""``dragkit bench speed`` (:mod:`dragkit.benchmark.speed`): the UNet call counter (public hooks, scoped by a ``with``
block) and a short run on the tiny model; the full-size rows are scripts/device_check.sh's (tests/test_device_check.py)."""

import json

import pytest
import torch

from dragkit.benchmark.speed import UNetCallCounter, main
from dragkit.testing import build_tiny_pipeline
from dragkit.types import Stage


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_tiny_pipeline().unet.requires_grad_(False)


def _inputs(unet, grad=False):
    sample = torch.randn(1, unet.config.in_channels, 8, 8, requires_grad=grad)
    text = torch.randn(1, 77, unet.config.cross_attention_dim)
    return sample, text


def test_counter_counts_forwards_and_backwards_and_restores_the_unet(unet):
    sample, text = _inputs(unet)
    before = unet(sample, 10, text).sample
    stage = ["lora"]
    with UNetCallCounter(unet, lambda: stage[0]) as counter:
        with torch.no_grad():
            out = unet(sample, 10, encoder_hidden_states=text).sample  # keyword-free and keyword calls alike
        assert torch.equal(out, before.detach())  # counting changes nothing the UNet computes
        stage[0] = "optimization"
        latent, _ = _inputs(unet, grad=True)
        unet(latent, 10, text).sample.sum().backward()  # one backward, reaching output and input: counted once
        unet(sample=latent, timestep=10, encoder_hidden_states=text).sample.mean().backward()
        assert latent.grad is not None
    assert counter.calls == {"lora": {"forward": 1, "partial": 0, "backward": 0},
                             "optimization": {"forward": 2, "partial": 0, "backward": 2}}
    unet(sample, 10, text)  # after the block: nothing is counted, nothing is left on the UNet
    assert counter.calls["lora"]["forward"] == 1
    assert torch.equal(unet(sample, 10, text).sample, before)


def test_counter_counts_a_partial_forward_and_its_backward(unet):
    from dragkit.features import FeaturesReady, capture_features

    latent, text = _inputs(unet, grad=True)
    with UNetCallCounter(unet) as counter, capture_features(unet, 0) as capture:
        capture.stop = True
        with pytest.raises(FeaturesReady):
            unet(latent, 10, text)
        capture.pop().sum().backward()  # the features lead back to the input latent
    assert counter.calls == {"other": {"forward": 0, "partial": 1, "backward": 1}}


def test_bench_speed_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(["--size", "64", "--method", "dragdiffusion", "--method", "fastdrag", "--warm", "--threads", "1",
               "--set", "lora_steps=2", "--set", "optimization_steps=2", "--set", "num_inference_steps=10",
               "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [(r["method"], r["run"]) for r in rows] == [(m, run) for m in ("dragdiffusion", "fastdrag")
                                                       for run in ("cold", "prepare", "warm")]
    cold, prepare, warm = rows[:3]
    assert set(cold["seconds"]) == {*(s.value for s in (Stage.LORA, Stage.INVERSION, Stage.OPTIMIZATION,
                                                         Stage.DENOISING)), "total"}
    assert cold["unet"]["lora"] == {"forward": 2, "partial": 0, "backward": 2} == prepare["unet"]["lora"]
    assert cold["unet"]["optimization"]["backward"] == cold["adam_steps"] > 0
    assert prepare["seconds"]["lora"] > 0 and prepare["seconds"]["inversion"] > 0
    assert warm["unet"]["lora"]["forward"] == warm["unet"]["inversion"]["forward"] == 0 and "vs_cold" in warm
    assert all(v > 0 for v in cold["peak_mib"].values())
    table = capsys.readouterr().out
    assert "| dragdiffusion | warm (" in table and "UNet fwd/bwd" in table
