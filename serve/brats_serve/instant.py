"""A model repository with one instant stand-in model (``instant_backend/model.py``) for the real ``tritonserver``:
the tensors of the served models (``INPUT__0 [N, 4, D, H, W]`` -> ``OUTPUT__0 [N, 3, D, H, W]``, FP32), no network.
For measuring the client and the server's own handling: benchmarks/bench_batch.py and the tests that need a
served model without a network (tests/integration/test_batch_segment.py, test_serve_dead_backend.py).

With ``server_flips`` it also writes a server-side-flip companion ``<name>_flip4``, configured as ``brats-export``
configures the real ones (``export/brats_export/configs.py``): ``max_batch_size: 1``, parameter
``brats_server_flips: flip4``, and the plain model's config names it with ``brats_server_flips_model``, so the client
(``brats_client.server_flips.open_for``) sends one request per tile to it. It runs the same backend code: the map
``INPUT__0[:, :3] > 0`` commutes with flips and is 0/1, so the average of its four flipped-and-restored outputs is the
map itself, exactly, and the labels equal those of the client's own flips.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from brats_client.contract import IN_CHANNELS, INPUT_NAME, OUT_CHANNELS, OUTPUT_NAME
from brats_client.server_flips import COMPANION_KEY, SERVER_FLIPS_KEY

NAME = "brats_instant"
BACKEND = Path(__file__).resolve().parent / "instant_backend" / "model.py"
SERVER_FLIPS = "flip4"  # what the companion applies (brats_export.catalogue.SERVER_FLIPS)

CONFIG = """\
# {name}: {output} = {input}[:, :{out_channels}] > 0 (brats_serve/instant_backend/model.py), after delay_s.
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input {{ name: "{input}" data_type: TYPE_FP32 dims: [{in_channels}, -1, -1, -1] }}
output {{ name: "{output}" data_type: TYPE_FP32 dims: [{out_channels}, -1, -1, -1] }}
instance_group {{ count: 1 kind: KIND_CPU }}
parameters {{ key: "delay_s" value {{ string_value: "{delay_s}" }} }}
"""
PARAMETER = 'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'


def companion_name(name: str = NAME) -> str:
    """The name of ``name``'s server-side-flip companion, as brats-export names them (``brats_onnx_flip4``)."""
    return f"{name}_{SERVER_FLIPS}"


def _write_model(root: Path, name: str, max_batch_size: int, delay_s: float, parameters: dict[str, str]) -> None:
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BACKEND, version / "model.py")
    text = CONFIG.format(name=name, max_batch_size=max_batch_size, delay_s=delay_s, input=INPUT_NAME,
                         output=OUTPUT_NAME, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS)
    text += "".join(PARAMETER.format(key=k, value=v) for k, v in parameters.items())
    (root / name / "config.pbtxt").write_text(text)


def write_repository(root: str | Path, name: str = NAME, max_batch_size: int = 4, delay_s: float = 0.0, *,
                     server_flips: bool = False, companion_delay_s: float | None = None) -> Path:
    """Write ``root/<name>/config.pbtxt`` and ``root/<name>/1/model.py``; returns ``root``. ``delay_s``: each
    execution waits that long (one request at a time: one instance, no dynamic batching). ``server_flips``: also
    ``root/<name>_flip4`` (batch 1, flips applied "on the server"), named by ``<name>``'s config; it waits
    ``companion_delay_s`` per execution (default ``delay_s``)."""
    root = Path(root)
    parameters = {}
    if server_flips:
        companion = companion_name(name)
        _write_model(root, companion, 1, delay_s if companion_delay_s is None else companion_delay_s,
                     {SERVER_FLIPS_KEY: SERVER_FLIPS})
        parameters[COMPANION_KEY] = companion
    _write_model(root, name, max_batch_size, delay_s, parameters)
    return root
