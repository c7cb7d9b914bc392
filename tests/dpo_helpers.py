"""Shared pieces of the DPO kernel tests (imported by tests/test_dpo_*.py; not a test module)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin contention on a busy 2-core machine.

    Autouse in every module that imports it; restores the thread count afterwards.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
