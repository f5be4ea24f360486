import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DRAGKIT_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "model" / "model_index.json").exists():
        pytest.skip(f"golden fixtures not found at {GOLDEN} (../shared/golden beside the repo)")
    return GOLDEN


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark samples not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def golden_model(golden_dir):
    from dragkit.models import DiffusionModel

    torch.set_num_threads(2)
    return DiffusionModel.from_pretrained(str(golden_dir / "model"), device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from dragkit.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from dragkit.models import DiffusionModel

    return DiffusionModel.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def shapes_model_dir() -> Path:
    """The shipped shapes model (``DRAGKIT_SHAPES_MODEL`` may point at another trained diffusers folder)."""
    from dragkit.shapes.model import WEIGHTS_DIR

    path = Path(os.environ.get("DRAGKIT_SHAPES_MODEL", WEIGHTS_DIR))
    if not (path / "model_index.json").exists():
        pytest.skip(f"trained shapes model not found at {path} (train it: python -m dragkit.shapes.train)")
    return path
