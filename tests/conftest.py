import os

from longctx import env

# LONGCTX_KERNEL_CACHE=DIR keeps the GPU tests' compiled kernels between runs, as it does for the CLI's
# commands (set before torch and the kernel libraries are imported).
os.environ.update(env.kernel_cache())

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests never touch a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model CLI runs (2 shared cores: faster, and steadier);
    a module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
