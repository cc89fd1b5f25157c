"""Fixtures shared by tests/unit, tests/cli and tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with one model folder, a config and a model file (enough for the pre-flight checks)."""
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text('backend: "onnxruntime"\n')
    (tmp_path / "repo" / "m" / "1" / "model.onnx").write_bytes(b"")
    return tmp_path / "repo"
