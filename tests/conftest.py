import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Property-based tests (hypothesis): HYPOTHESIS_PROFILE=ci (default, a few dozen cases per property) or big (the
# documented 10 000+ case run of tests/test_fuzz.py, see the README).
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
    _hypothesis_settings.register_profile("big", max_examples=1000, deadline=None)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; without it the fuzz tests skip
    pass

REPO = Path(__file__).resolve().parents[1]
# The one place that knows where ../shared is: $DRAGKIT_SHARED, else the folder beside the checkout.
SHARED = Path(os.environ.get("DRAGKIT_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"
# Under CI a missing ../shared is a failure, never a silent skip: the parity tests are the point of the suite.
REQUIRE_SHARED = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The device of the device-relevant tests (half precision, compile, scaler): cpu, unless scripts/device_check.sh runs
# them on a GPU with DRAGKIT_TEST_DEVICE=cuda.
TEST_DEVICE = os.environ.get("DRAGKIT_TEST_DEVICE", "cpu")


def pytest_configure(config):
    """One thread count for the whole suite: $DRAGKIT_TEST_THREADS, else torch's default (which honours
    $OMP_NUM_THREADS). Every tolerance holds at 1 and 2 threads (golden README §7.2); no test sets its own."""
    if os.environ.get("DRAGKIT_TEST_THREADS"):
        torch.set_num_threads(int(os.environ["DRAGKIT_TEST_THREADS"]))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture(autouse=True)
def _one_thread_count_for_every_test():
    """The suite's thread count survives every test: a CLI command run in-process (``dragkit.cli.main``) sets
    torch's threads and the OpenMP variables for its process, which here is the test session — without this, a later
    test (the Ray workers', whose floats must be this process's) would run at another count."""
    threads, env = torch.get_num_threads(), {name: os.environ.get(name) for name in THREAD_VARIABLES}
    yield
    torch.set_num_threads(threads)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_collection_modifyitems(config, items):
    """Browser and Ray tests belong to the slow tier: ``-m "not slow"`` leaves them out without marking them twice."""
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.slow)


def require_shared(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise skip with a reason (a user's checkout) or fail (CI=true)."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (../shared beside the checkout, or set DRAGKIT_SHARED)"
    if REQUIRE_SHARED:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def test_device() -> str:
    """$DRAGKIT_TEST_DEVICE (default cpu); skips when that device is not here."""
    from dragkit.checks import available_devices

    if TEST_DEVICE not in available_devices() and TEST_DEVICE + ":0" not in available_devices():
        pytest.skip(f"DRAGKIT_TEST_DEVICE={TEST_DEVICE} is not available here")
    return TEST_DEVICE


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    require_shared(GOLDEN / "model" / "model_index.json", "golden fixtures")
    return GOLDEN


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_shared(DATA, "benchmark samples")


@pytest.fixture(scope="session")
def dragbench_dir(data_dir) -> Path:
    return require_shared(data_dir / "dragbench_dev", "DragBench samples")


@pytest.fixture(scope="session")
def drag100_dir(data_dir) -> Path:
    return require_shared(data_dir / "drag100_dev", "Drag100 samples")


@pytest.fixture(scope="session")
def golden_model(golden_dir):
    from dragkit.models import DiffusionModel

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
