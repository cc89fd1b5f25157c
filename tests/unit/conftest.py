"""Shared fixtures of the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Two shared cores: torch's thread pool spinning beside other processes is slower than one thread."""
    import torch  # here, not at the top: the client's unit tests run without torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
