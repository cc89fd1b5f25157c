"""A model repository with one instant stand-in model (``instant_backend/model.py``) for the real ``tritonserver``:
the tensors of the served models (``INPUT__0 [N, 4, D, H, W]`` -> ``OUTPUT__0 [N, 3, D, H, W]``, FP32), no network.
Used by benchmarks/bench_batch.py and tests/integration/test_batch_segment.py."""

from __future__ import annotations

import shutil
from pathlib import Path

NAME = "brats_instant"
BACKEND = Path(__file__).resolve().parent / "instant_backend" / "model.py"

CONFIG = """\
# {name}: OUTPUT__0 = INPUT__0[:, :3] > 0 (benchmarks/instant_backend/model.py), after delay_s.
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [4, -1, -1, -1] }}
output {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [3, -1, -1, -1] }}
instance_group {{ count: 1 kind: KIND_CPU }}
parameters {{ key: "delay_s" value {{ string_value: "{delay_s}" }} }}
"""


def write_repository(root: str | Path, name: str = NAME, max_batch_size: int = 4, delay_s: float = 0.0) -> Path:
    """Write ``root/<name>/config.pbtxt`` and ``root/<name>/1/model.py``; returns ``root``. ``delay_s``: each
    execution waits that long (one request at a time: one instance, no dynamic batching)."""
    root = Path(root)
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BACKEND, version / "model.py")
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, max_batch_size=max_batch_size, delay_s=delay_s))
    return root
