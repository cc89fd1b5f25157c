"""Import boundaries, each checked in a fresh interpreter: the client package imports without torch and without the
export package (every module of it); brats_client.atomic needs only the standard library."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

# Modules that must be among those found (a renamed or lost file fails here instead of going untested).
EXPECTED = {
    "brats_client", "brats_client.atomic", "brats_client.batch", "brats_client.cli", "brats_client.commands",
    "brats_client.contract", "brats_client.endpoints", "brats_client.errors", "brats_client.evaluate",
    "brats_client.io", "brats_client.local", "brats_client.metrics", "brats_client.modalities",
    "brats_client.model_info", "brats_client.perf", "brats_client.pipeline", "brats_client.postprocess",
    "brats_client.protocol", "brats_client.conventions", "brats_client.dataset_json", "brats_client.input_checks",
    "brats_client.served", "brats_client.served_client", "brats_client.exit_codes",
    "brats_client.preprocess", "brats_client.preview", "brats_client.server_flips", "brats_client.server_options",
    "brats_client.shm", "brats_client.stream", "brats_client.tiling", "brats_client.transport", "brats_client.tta",
}

SCRIPT = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)  # a module that cannot be imported fails the test
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "brats_export"}})
print(json.dumps({{"imported": {modules!r}, "heavy": heavy}}))
"""


def client_modules() -> list[str]:
    """Every module of the package, from its files (``__main__`` excluded: importing it runs the CLI)."""
    spec = importlib.util.find_spec("brats_client")
    assert spec is not None and spec.origin is not None, "brats_client is not importable"
    root = Path(spec.origin).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(("brats_client", *parts)))
    return names


def test_every_client_module_is_listed() -> None:
    found = set(client_modules())
    assert found >= EXPECTED, f"not found in the package: {sorted(EXPECTED - found)}"


def test_client_imports_neither_torch_nor_brats_export() -> None:
    modules = client_modules()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(modules=modules)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["imported"] == modules
    assert report["heavy"] == [], f"the client imported {report['heavy']}"


def test_the_atomic_module_imports_only_the_standard_library() -> None:
    script = (
        "import json, sys; import brats_client.atomic; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'nibabel', 'torch', 'tritonclient', 'brats_export', 'scipy', 'matplotlib'})))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
