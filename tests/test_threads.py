"""threads.one_thread: one torch and one BLAS thread inside, the previous counts restored after,
also when the block raises; as a decorator too."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from alignment_dynamics import threads


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_one_thread_inside_and_restored_after_even_on_error(two_threads):
    with threads.one_thread():
        assert torch.get_num_threads() == 1
        assert _blas_threads() <= {1}
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with threads.one_thread():
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2

    @threads.one_thread()
    def inner():
        return torch.get_num_threads()

    assert inner() == 1 and torch.get_num_threads() == 2
