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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import brats_client
from brats_client import identity
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

from .catalogue import MODELS, SERVER_FLIPS, VERSION
from .errors import RepositoryError
from .repository import MANIFEST

NAME = "brats_segment"
DEFAULT_NETWORK = ("openvino", "onnx", "torchscript")  # the first of these exported is called by default
PACKAGE = Path(brats_client.__file__).resolve().parent
MODEL_PY = '''"""{name}: the whole brats-triton pipeline in Triton's python backend (written by brats-export).

The code is the brats_client package copied beside this file: brats_client/served.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from brats_client.served import TritonPythonModel  # noqa: E402,F401
'''


# How many requests run side by side, and how many may wait. Measured (docs/benchmarks.md, "The served pipeline
# for many clients"): one instance holds up to about 0.7 GiB for a BraTS-size case (its stub process's peak
# resident memory, VmHWM), beside the network's own process. Two instances let one case's reading, preprocessing
# and writing (single-threaded Python and numpy) run while another's tiles are in the network; more would wait for
# the same network instance while each held a case. Raise instances with the network's instances and memory.
INSTANCES = 2
MAX_QUEUE = 4  # requests waiting for an instance; one more is refused at once: UNAVAILABLE / HTTP 503 (busy, retry)
QUEUE_TIMEOUT_S = 120.0  # a request waiting longer is refused the same way; a client's own timeout may lower it


@dataclass(frozen=True)
class PipelineSettings:
    """Concurrency and backpressure of the pipeline model (``brats-export --pipeline-instances`` ...)."""

    instances: int = INSTANCES
    max_queue: int = MAX_QUEUE
    queue_timeout_s: float = QUEUE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise RepositoryError(f"pipeline instances must be >= 1, got {self.instances}")
        if self.max_queue < 1:
            raise RepositoryError(f"the pipeline's queue must hold >= 1 request, got {self.max_queue}")
        if not self.queue_timeout_s > 0:
            raise RepositoryError(f"the pipeline's queue timeout must be > 0 s, got {self.queue_timeout_s}")


@dataclass(frozen=True)
class Networks:
    """The network models a pipeline may call (their configs are read live, at load time) and the default."""

    default: str
    names: tuple[str, ...]

    @classmethod
    def of_keys(cls, keys: Iterable[str]) -> Networks:
        """Those of the exported model ``keys``; the default is the first of :data:`DEFAULT_NETWORK` there."""
        keys = list(keys)
        default = next((MODELS[k].name for k in DEFAULT_NETWORK if k in keys), None)
        if default is None:
            raise RepositoryError(f"the pipeline model needs a network model; none of {', '.join(DEFAULT_NETWORK)} "
                                  f"is among {', '.join(keys) or 'the models written'}")
        return cls(default, tuple(MODELS[k].name for k in keys))


def code_identity(package: Path = PACKAGE) -> dict[str, str]:
    """The version and client-code hash recorded for the ``brats_client`` copy from ``package``."""
    return {identity.VERSION_KEY: identity.version(), identity.CLIENT_SHA256_KEY: identity.package_sha256(package)}


def config_text(networks: Networks | Iterable[str], settings: PipelineSettings = PipelineSettings()) -> str:
    """``config.pbtxt`` of the pipeline model calling ``networks`` (or the networks of the exported keys)."""
    if not isinstance(networks, Networks):
        networks = Networks.of_keys(networks)
    cfg = mc.ModelConfig(name=NAME, backend="python", max_batch_size=0)
    for ch in CHANNELS:
        cfg.input.add(name=ch, data_type=mc.TYPE_STRING, dims=[1])
    for name in (OUTPUT_SEGMENTATION, OUTPUT_REPORT):
        cfg.output.add(name=name, data_type=mc.TYPE_STRING, dims=[1])
    cfg.instance_group.add(count=settings.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
    # No batching (max_batch_size 0): the dynamic batcher is here for its queue policy only.
    policy = cfg.dynamic_batching.default_queue_policy
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = round(settings.queue_timeout_s * 1e6)
    policy.allow_timeout_override = True
    policy.max_queue_size = settings.max_queue
    values = {PIPELINE_KEY: PIPELINE, NETWORK_KEY: networks.default, NETWORKS_KEY: json.dumps(list(networks.names)),
              **code_identity()}
    for key, value in values.items():
        cfg.parameters[key].string_value = value
    header = (f"# {NAME}: the four modality files in (BYTES {', '.join(CHANNELS)}), the segmentation (.nii.gz)\n"
              f"# and the JSON report out; calls {networks.default} (or the request's model) through BLS,\n"
              f"# {SERVER_FLIPS} on its companion when the request's tta and server_flips allow\n"
              "# (brats_client.served). Written by brats_export.pipeline_model.\n"
              f"# {settings.instances} instances run requests side by side; up to {settings.max_queue} wait, each "
              f"at most {settings.queue_timeout_s:g} s;\n"
              "# beyond that a request is refused at once: UNAVAILABLE / HTTP 503 (busy, retry).\n")
    return header + text_format.MessageToString(cfg)


def write(repository: Path, networks: Networks | Iterable[str], force: bool = False,
          settings: PipelineSettings = PipelineSettings()) -> Path:
    """Write ``repository/brats_segment`` (config, ``1/model.py``, ``1/brats_client/``) calling ``networks`` (or
    the networks of the exported keys), and its entry in the repository's manifest; a version that exists is
    replaced only with ``force``. Returns the model folder."""
    if not isinstance(networks, Networks):
        networks = Networks.of_keys(networks)
    text = config_text(networks, settings)
    model_dir = Path(repository) / NAME
    version = model_dir / VERSION
    if version.exists() and not force:
        raise RepositoryError(f"{version} exists; pass --force to replace it")
    stage = model_dir / f".{VERSION}.staging"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        (stage / "model.py").write_text(MODEL_PY.format(name=NAME))
        shutil.copytree(PACKAGE, stage / "brats_client", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if version.exists():
            shutil.rmtree(version)
        stage.rename(version)
        write_text_atomic(text, model_dir / "config.pbtxt")
        _record(Path(repository), networks, settings)
    except OSError as e:
        raise RepositoryError(f"cannot write the pipeline model under {model_dir}: {e}") from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return model_dir


def _record(repository: Path, networks: Networks, settings: PipelineSettings) -> None:
    """The pipeline's entry in ``repository/manifest.json`` (the other entries kept)."""
    path = repository / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    manifest.setdefault("models", {})[NAME] = {
        "backend": "python", "version": int(VERSION), **code_identity(),
        "network_default": networks.default, "networks": list(networks.names),
        "instances": settings.instances, "max_queue_size": settings.max_queue,
        "queue_timeout_s": settings.queue_timeout_s,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(json.dumps(manifest, indent=2) + "\n", path)
