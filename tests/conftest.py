import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (papermill notebooks, training runs)")
    config.addinivalue_line("markers", "browser: drives JupyterLab in a real browser")


@pytest.fixture
def shared_ref():
    """The folder with the large ``*_intermediates.pt``; skips with the reason when absent."""
    from ferlib.testing import shared_ref_dir

    d = shared_ref_dir()
    if d is None:
        pytest.skip("../shared/ref with *_intermediates.pt is absent (set FERLIB_SHARED_REF); CI has it")
    return d


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the parity runs compare fp32 results whose rounding depends on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
