import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# Tests never reach a hub: tiny models are built locally, weights are random.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

# Property tests (test_properties.py): no example database and no failure patches in the checkout, and no
# per-example deadline (the first torch call of a process is slow on a loaded machine). `make mutate`
# selects the "mutation" profile: derandomised, so every mutant meets the same examples.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "leaf-hypothesis"))
settings.register_profile("leaf", database=None, deadline=None)
settings.register_profile("mutation", database=None, deadline=None, derandomize=True, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "leaf"))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run wherever torch sees a CUDA device and are skipped, with the reason, elsewhere."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _tiny_model_cache(tmp_path_factory):
    """Tiny teacher checkpoints (`tiny:<arch>`) are built once per session, in the session's temp
    folder: not in the checkout, not in the user's ~/.cache/leaf."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEAF_CACHE", str(tmp_path_factory.mktemp("leaf_cache")))
        yield


@pytest.fixture(autouse=True, scope="module")
def _torch_threads_restored(request):
    """A test file that changes torch's thread count must put it back: every later file would run
    single-threaded (and time differently) otherwise."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        threads = torch.get_num_threads()
        torch.set_num_threads(before)
        pytest.fail(f"{request.module.__name__} left torch.set_num_threads({threads}) (was {before})")
