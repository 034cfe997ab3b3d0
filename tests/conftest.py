"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """torch runs on one intra-op thread during the test. Tiny tensors are fastest on one thread, and on a loaded
    2-core machine idle OpenMP workers spinning for a core make many small ops 10-100x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
