"""``make demo`` run twice reuses its export when the checkpoint and the library versions are those its manifest.json
records (brats_demo.run._export); the served pipeline is rewritten either way. The export itself is replaced by a
fake: the decision and what follows from it are under test (the decision's cases: tests/unit/test_repository.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch  # brats_export; importing the runtimes for their versions runs ldconfig (a process)

FORMAT = "openvino"


def _published(repo: Path, checkpoint_sha256: str) -> Path:
    """A repository as brats-export leaves it for the demo's models (fake weights, a true manifest)."""
    from brats_export import catalogue, repository
    from brats_export.exporters import library_versions

    keys = catalogue.model_keys([FORMAT])
    with repository.staging(repo) as stage:
        files = {}
        for key in keys:
            folder = repository.version_dir(stage, key)
            folder.mkdir(parents=True)
            for name in catalogue.MODELS[key].files:
                (folder / name).write_bytes(key.encode())
            files[key] = {name: hashlib.sha256(key.encode()).hexdigest() for name in catalogue.MODELS[key].files}
        manifest = repository.build_manifest(keys, repository.ExportRecord(
            checkpoint=Path("demo.pth"), checkpoint_sha256=checkpoint_sha256, parity=(), opset=17,
            versions=library_versions(), tolerance=1e-4, files_sha256=files,
        ))
        repository.publish(stage, repo, keys, threads=1, manifest=manifest)
    return repo


def test_the_second_run_reuses_an_unchanged_export_and_a_changed_checkpoint_exports_again(tmp_path, monkeypatch):
    from brats_demo import run
    from brats_export import cli as export_cli
    from brats_export.checkpoint import checkpoint_sha256

    calls: list[list[str]] = []
    monkeypatch.setattr(export_cli, "main", lambda argv: calls.append(argv) or 0)
    repo = _published(tmp_path / "model_repository", checkpoint_sha256(run.DEFAULT_CHECKPOINT))
    assert run._export(run.DEFAULT_CHECKPOINT, repo, FORMAT) is True
    assert calls == []  # nothing exported
    assert (repo / "brats_segment" / "1" / "brats_client" / "pipeline.py").is_file()  # the pipeline, rewritten

    other = tmp_path / "other.pth"
    other.write_bytes(run.DEFAULT_CHECKPOINT.read_bytes() + b"\0")
    assert run._export(other, repo, FORMAT) is False
    assert calls == [["--checkpoint", str(other), "--repository", str(repo), "--formats", FORMAT, "--force",
                      "--pipeline"]]
    assert run._export(run.DEFAULT_CHECKPOINT, tmp_path / "fresh", FORMAT) is False  # nothing there yet
