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


@pytest.fixture
def restore_threads():
    """The test may set torch's intra-op thread count (tests parametrized over thread counts); it is put back after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """``smoke_study(name) -> (report path, docs dir, runs root)``: study ``name`` run once per test session at its
    smoke budget (``onebit study NAME --smoke``) into a temporary folder shared by every study test."""
    import io

    from rich.console import Console

    from onebit.studies import run_study

    tmp = tmp_path_factory.mktemp("studies")
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                path = run_study(
                    name, smoke=True, root=tmp / "runs", docs=tmp / "docs", console=Console(file=io.StringIO())
                )
            finally:
                torch.set_num_threads(n)
            cache[name] = (path, tmp / "docs", tmp / "runs")
        return cache[name]

    return get
