"""The client package must import without torch and without the export package."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = [
    "brats_client",
    "brats_client.errors",
    "brats_client.modalities",
    "brats_client.io",
    "brats_client.preprocess",
    "brats_client.tiling",
    "brats_client.postprocess",
    "brats_client.server_options",
    "brats_client.endpoints",
    "brats_client.model_info",
    "brats_client.shm",
    "brats_client.stream",
    "brats_client.transport",
    "brats_client.pipeline",
    "brats_client.metrics",
    "brats_client.evaluate",
    "brats_client.cli",
]

SCRIPT = """
import importlib, importlib.util, json, sys
imported = []
for name in {modules!r}:
    if name != "brats_client" and importlib.util.find_spec(name) is None:
        continue  # a module not written yet
    importlib.import_module(name)
    imported.append(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "brats_export"))
print(json.dumps({{"imported": imported, "heavy": heavy}}))
"""


def test_client_imports_neither_torch_nor_brats_export() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(modules=MODULES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"brats_client.tiling", "brats_client.postprocess", "brats_client.io"} <= set(report["imported"])
    assert report["heavy"] == [], f"the client imported {report['heavy']}"
