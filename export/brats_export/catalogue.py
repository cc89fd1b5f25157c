"""The models that brats-export writes, by model key: a format (``onnx``, ``torchscript``, ``openvino``) or a
format's server-side-flip companion (``onnx_flip4``, ...).

The exporters, the config writer (:mod:`.configs`), the publisher (:mod:`.repository`) and the CLI all take their
model names, files, batch sizes and config variants from here. Standard library only: ``--configs-only`` runs
without torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VERSION = "1"  # the model version folder: <repository>/<model>/1
MAX_BATCH_SIZE = 4  # one case's flip4 in one request (the client caps --flips-per-request at this)
CPU_VARIANT = "cpu"  # config.pbtxt
GPU_VARIANT = "gpu"
TRT_VARIANT = "trt"
BF16_VARIANT = "bf16"  # brats_openvino only: HINT_BF16 (about twice as fast on CPUs with AVX512-BF16 or AMX)
VARIANTS = (CPU_VARIANT, GPU_VARIANT, TRT_VARIANT, BF16_VARIANT)
SERVER_FLIPS = "flip4"  # what the companions run inside the graph: the seed's four test-time flips
INT8 = "openvino_int8"  # the quantized IR (brats-export --int8 CASES; brats_export.int8): a static input shape


@dataclass(frozen=True)
class ModelSpec:
    format: str  # the file format: onnx, torchscript or openvino
    name: str
    platform: str  # empty where ``backend`` names it
    backend: str
    files: tuple[str, ...]
    max_batch_size: int
    variants: tuple[str, ...]
    server_flips: str | None = None  # "flip4": the graph runs the seed's four flips itself and averages them
    quantized: bool = False  # INT8 convolutions (not a --formats choice: written by --int8)


MODELS: dict[str, ModelSpec] = {
    "onnx": ModelSpec("onnx", "brats_onnx", "onnxruntime_onnx", "", ("model.onnx",), MAX_BATCH_SIZE,
                      (CPU_VARIANT, GPU_VARIANT, TRT_VARIANT)),
    "torchscript": ModelSpec("torchscript", "brats_torchscript", "pytorch_libtorch", "", ("model.pt",),
                             MAX_BATCH_SIZE, (CPU_VARIANT, GPU_VARIANT)),
    "openvino": ModelSpec("openvino", "brats_openvino", "", "openvino", ("model.xml", "model.bin"), 1,
                          (CPU_VARIANT, BF16_VARIANT)),
}
# Companions that flip on the server (one request per tile instead of four; batch 1: four crops inside)
for _key, _spec in list(MODELS.items()):
    MODELS[f"{_key}_{SERVER_FLIPS}"] = ModelSpec(
        _spec.format, f"{_spec.name}_{SERVER_FLIPS}", _spec.platform, _spec.backend, _spec.files, 1,
        tuple(v for v in _spec.variants if v != TRT_VARIANT), SERVER_FLIPS)
FORMATS = tuple(key for key, spec in MODELS.items() if spec.server_flips is None)  # what --formats names
MODELS[INT8] = ModelSpec("openvino", "brats_openvino_int8", "", "openvino", ("model.xml", "model.bin"), 1,
                         (CPU_VARIANT, BF16_VARIANT), quantized=True)


def flip_companion(fmt: str) -> str:
    """The model key of ``fmt``'s server-side-flip companion (``onnx`` -> ``onnx_flip4``)."""
    return f"{fmt}_{SERVER_FLIPS}"


def model_keys(formats: Iterable[str], server_flips: bool = True) -> list[str]:
    """The model keys of ``formats``, each followed by its flip4 companion when ``server_flips``."""
    return [k for fmt in formats for k in ((fmt, flip_companion(fmt)) if server_flips else (fmt,))]
