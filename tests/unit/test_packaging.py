"""pyproject.toml declares every folder that ships as a package: setuptools warns once per undeclared folder that
holds files (``BuildBackendWarning: Package 'brats_export.data' is absent from the packages configuration``), about
150 lines of them on every install."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_folder_with_files_is_a_declared_package() -> None:
    config = _setuptools()
    declared = set(config["packages"])
    found = set()
    for top, folder in config["package-dir"].items():
        for path in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if path.name == "__pycache__" or not any(f.is_file() for f in path.iterdir()):
                continue
            found.add(".".join([top, *path.relative_to(ROOT / folder).parts]))
    assert found - declared == set(), "add these folders to [tool.setuptools] packages in pyproject.toml"
    assert declared - found == set(), "these declared packages have no folder"


def test_data_files_are_package_data() -> None:
    patterns = _setuptools()["package-data"]["brats_export.data"]
    data = ROOT / "export" / "brats_export" / "data"
    files = [p.name for p in data.iterdir() if p.is_file()]
    assert files and all(any(Path(name).match(pattern) for pattern in patterns) for name in files), files
