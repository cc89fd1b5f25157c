"""The served pipeline model (``brats_segment``, Triton's python backend; :mod:`brats_client.served`): its config,
its ``model.py`` and a copy of the ``brats_client`` package beside it, so that the model folder carries the code it
runs. Standard library and protobuf only: ``--configs-only --pipeline`` writes it without torch.

What the python backend's interpreter must have besides: numpy, scipy and nibabel (the client's dependencies
without tritonclient). The local server (``brats-serve``) runs the stub with this environment's Python, which has
them; the NGC container's Python does not ship nibabel or scipy (see docs/pipeline.md).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import brats_client
from brats_client.atomic import write_text_atomic
from brats_client.contract import CHANNELS
from brats_client.served import (
    NETWORK_KEY,
    NETWORKS_KEY,
    OUTPUT_REPORT,
    OUTPUT_SEGMENTATION,
    PIPELINE,
    PIPELINE_KEY,
)
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .catalogue import MODELS, SERVER_FLIPS, VERSION, flip_companion
from .errors import RepositoryError

NAME = "brats_segment"
DEFAULT_NETWORK = ("openvino", "onnx", "torchscript")  # the first of these exported is called by default
MODEL_PY = '''"""{name}: the whole brats-triton pipeline in Triton's python backend (written by brats-export).

The code is the brats_client package copied beside this file: brats_client/served.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brats_client.served import TritonPythonModel  # noqa: E402,F401
'''


def networks(keys: Iterable[str]) -> dict[str, dict[str, object]]:
    """The :data:`brats_client.served.NETWORKS_KEY` table of the exported model ``keys``: batch size, and the
    companion that each plain model names (or the flips a companion applies), as their configs say."""
    keys = list(keys)
    table: dict[str, dict[str, object]] = {}
    for key in keys:
        spec = MODELS[key]
        entry: dict[str, object] = {"max_batch_size": spec.max_batch_size}
        if spec.server_flips is not None:
            entry["server_flips"] = spec.server_flips
        elif flip_companion(key) in keys:
            entry["companion"] = MODELS[flip_companion(key)].name
        table[spec.name] = entry
    return table


def config_text(keys: Iterable[str]) -> str:
    """``config.pbtxt`` of the pipeline model calling the exported ``keys``."""
    keys = list(keys)
    default = next((MODELS[k].name for k in DEFAULT_NETWORK if k in keys), None)
    if default is None:
        raise RepositoryError(f"the pipeline model needs a network model; none of {', '.join(DEFAULT_NETWORK)} "
                              f"is among {', '.join(keys) or 'the models written'}")
    cfg = mc.ModelConfig(name=NAME, backend="python", max_batch_size=0)
    for ch in CHANNELS:
        cfg.input.add(name=ch, data_type=mc.TYPE_STRING, dims=[1])
    for name in (OUTPUT_SEGMENTATION, OUTPUT_REPORT):
        cfg.output.add(name=name, data_type=mc.TYPE_STRING, dims=[1])
    cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    values = {PIPELINE_KEY: PIPELINE, NETWORK_KEY: default, NETWORKS_KEY: json.dumps(networks(keys))}
    for key, value in values.items():
        cfg.parameters[key].string_value = value
    header = (f"# {NAME}: the four modality files in (BYTES {', '.join(CHANNELS)}), the segmentation (.nii.gz) and\n"
              f"# the JSON report out; calls {default} (or the request's model) through BLS, {SERVER_FLIPS} on its\n"
              "# companion when the request's tta and server_flips allow (brats_client.served). Written by\n"
              "# brats_export.pipeline_model.\n")
    return header + text_format.MessageToString(cfg)


def write(repository: Path, keys: Iterable[str], force: bool = False) -> Path:
    """Write ``repository/brats_segment`` (config, ``1/model.py``, ``1/brats_client/``) for the network ``keys``;
    a version that exists is replaced only with ``force``. Returns the model folder."""
    text = config_text(keys)
    model_dir = Path(repository) / NAME
    version = model_dir / VERSION
    if version.exists() and not force:
        raise RepositoryError(f"{version} exists; pass --force to replace it")
    package = Path(brats_client.__file__).resolve().parent
    stage = model_dir / f".{VERSION}.staging"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        (stage / "model.py").write_text(MODEL_PY.format(name=NAME))
        shutil.copytree(package, stage / "brats_client", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if version.exists():
            shutil.rmtree(version)
        stage.rename(version)
        write_text_atomic(text, model_dir / "config.pbtxt")
    except OSError as e:
        raise RepositoryError(f"cannot write the pipeline model under {model_dir}: {e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return model_dir
