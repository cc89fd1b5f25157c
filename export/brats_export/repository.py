"""Publish an export into the Triton model repository: the model files, their configs, a manifest.

Layout written by :func:`publish`::

    <repository>/manifest.json
    <repository>/<model>/config.pbtxt
    <repository>/<model>/configs/gpu.pbtxt        (not for brats_openvino)
    <repository>/brats_onnx/configs/trt.pbtxt
    <repository>/brats_openvino/configs/bf16.pbtxt
    <repository>/<model>/1/<model files>

Everything is built in a staging folder beside the repository and moved into place with ``os.replace``. The
configs come from :mod:`.configs`, the models from :mod:`.catalogue`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from brats_client.atomic import sha256_file, write_text_atomic
from brats_client.contract import DATATYPE, IN_CHANNELS, INPUT_NAME, OUT_CHANNELS, OUTPUT_NAME, SPATIAL_DIVISOR
from brats_client.identity import CHECKPOINT_SHA256_KEY
from google.protobuf import text_format

from .catalogue import CPU_VARIANT, MODELS, TRT_VARIANT, VERSION, flip_companion
from .configs import config_texts, engine_cache_prefix, parse_config, precision, spatial_dims, variant_path
from .errors import RepositoryError

if TYPE_CHECKING:
    from .parity import ParityRow

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def version_dir(root: Path, key: str) -> Path:
    return Path(root) / MODELS[key].name / VERSION


def check_versions_writable(repository: Path, keys: Iterable[str], force: bool = False) -> None:
    """Refuse early: the repository's parent must exist, and no model version may be replaced without force."""
    repository = Path(repository)
    if not repository.absolute().parent.is_dir():
        raise RepositoryError(f"the folder {repository.absolute().parent} does not exist; create it first")
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"{repository} exists and is not a folder; choose another --repository")
    if force:
        return
    existing = [version_dir(repository, key) for key in keys if version_dir(repository, key).exists()]
    if existing:
        one = len(existing) == 1
        raise RepositoryError(
            f"{', '.join(map(str, existing))} already exist{'s' if one else ''}; run brats-export again with "
            f"--force to replace {'it' if one else 'them'} (from Python: force=True)"
        )


@contextlib.contextmanager
def staging(repository: Path) -> Iterator[Path]:
    """A temporary folder beside ``repository`` (same file system, so ``os.replace`` works); removed on exit."""
    parent = Path(repository).absolute().parent
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{Path(repository).name}.staging-", dir=parent))
    except OSError as e:
        raise RepositoryError(f"cannot create a staging folder in {parent}: {e}") from e
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, repository: Path, keys: Iterable[str], *, threads: int | None = None,
            fixed_size: int | None = None, force: bool = False, manifest: dict | None = None,
            shapes: dict[str, tuple[int, ...]] | None = None) -> list[Path]:
    """Move the staged model versions into ``repository`` with their configs, then merge the manifest.

    ``stage/<model>/1/`` must hold each model key's files. An existing ``<model>/1`` is replaced only with
    ``force``; the old one is moved into the stage (deleted with it) before the new one takes its place.
    ``brats_onnx/configs/trt.pbtxt`` is written when the manifest names the checkpoint's sha256 (model.onnx's is
    then taken from its ``files_sha256``); an old one is removed before the new weights arrive, so its engine
    prefix never meets other weights. ``shapes``: a model key's own static spatial shape (the INT8 model's).
    """
    repository, stage = Path(repository), Path(stage)
    keys = list(keys)
    for key in keys:
        missing = [f for f in MODELS[key].files if not (version_dir(stage, key) / f).is_file()]
        if missing:
            raise RepositoryError(f"staged {MODELS[key].name} lacks {missing} in {version_dir(stage, key)}")
    check_versions_writable(repository, keys, force)
    published = []
    try:
        shapes = shapes or {}
        checkpoint = ((manifest or {}).get("checkpoint") or {}).get("sha256")
        configs = {key: {rel: _with_checkpoint(text, checkpoint)
                         for rel, text in config_texts(key, threads, shapes.get(key, fixed_size),
                                                       _engine_prefix(key, manifest),
                                                       companion=flip_companion(key) in keys).items()}
                   for key in keys}
        for key in keys:
            model_stage = stage / MODELS[key].name
            texts = configs[key]
            for rel, text in texts.items():
                write_text_atomic(text, model_stage / rel)
            target = version_dir(repository, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            stale_trt = target.parent / variant_path(TRT_VARIANT)
            if stale_trt.exists():
                os.replace(stale_trt, stage / f"replaced-{MODELS[key].name}-trt.pbtxt")
            if target.exists():
                old = stage / f"replaced-{MODELS[key].name}"
                os.replace(target, old)
                log.info("replacing %s (--force)", target)
            os.replace(version_dir(stage, key), target)
            for rel in texts:
                (target.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(model_stage / rel, target.parent / rel)
            published.append(target)
            log.info("wrote %s", target.parent)
        if manifest is not None:
            merged = _merge_manifest(repository / MANIFEST, manifest)
            write_text_atomic(json.dumps(merged, indent=2, sort_keys=False) + "\n", stage / MANIFEST)
            os.replace(stage / MANIFEST, repository / MANIFEST)
    except OSError as e:
        raise RepositoryError(f"cannot write into {repository}: {e}") from e
    return published


def _with_checkpoint(text: str, checkpoint_sha256: str | None) -> str:
    """A network config that records the checkpoint it was exported from (parameter
    :data:`brats_client.identity.CHECKPOINT_SHA256_KEY`, which brats-client checks against ``--checkpoint-sha256``);
    unchanged without one (``--configs-only``). Every backend ignores the key."""
    if not checkpoint_sha256:
        return text
    lines = text.splitlines(keepends=True)
    header = "".join(line for line in lines if line.startswith("#"))
    cfg = parse_config("".join(line for line in lines if not line.startswith("#")))
    cfg.parameters[CHECKPOINT_SHA256_KEY].string_value = checkpoint_sha256
    return header + text_format.MessageToString(cfg)


def _engine_prefix(key: str, manifest: dict | None) -> str | None:
    """The TensorRT prefix of an ONNX export from the manifest's sha256s, or None (not ONNX, or no checkpoint
    sha256 to key it on)."""
    spec = MODELS[key]
    if TRT_VARIANT not in spec.variants:
        return None
    manifest = manifest or {}
    checkpoint_sha256 = (manifest.get("checkpoint") or {}).get("sha256")
    if not checkpoint_sha256:
        log.info("no checkpoint sha256 in the manifest: %s is not written", variant_path(TRT_VARIANT))
        return None
    files_sha256 = manifest.get("models", {}).get(spec.name, {}).get("files_sha256", {})
    return engine_cache_prefix(checkpoint_sha256, files_sha256.get(spec.files[0]))


def _merge_manifest(path: Path, new: dict) -> dict:
    """Keep entries of models that this run did not export (an earlier run's); replace the rest."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return new
    models = dict(old.get("models", {})) if isinstance(old, dict) else {}
    models.update(new.get("models", {}))
    return {**new, "models": models}


_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ExportRecord:
    """What one export did, for :func:`build_manifest`; checked when made (a wrong value is a bug: ValueError)."""

    checkpoint: Path
    checkpoint_sha256: str
    parity: tuple[ParityRow, ...]
    opset: int  # the ONNX opset of the export
    versions: dict[str, str]  # library -> version
    tolerance: float  # the parity check's max |exported - PyTorch|
    fixed_size: int | None = None  # the static spatial edge, None: dynamic
    files_sha256: dict[str, dict[str, str]] = field(default_factory=dict)  # model key -> file name -> sha256
    openvino_host_precision: str | None = None  # what OpenVINO computes in here by default

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "parity", tuple(self.parity))
        if not _SHA256.fullmatch(self.checkpoint_sha256):
            raise ValueError(f"checkpoint_sha256 must be 64 lower-case hex digits, got {self.checkpoint_sha256!r}")
        if self.opset < 1:
            raise ValueError(f"opset must be >= 1, got {self.opset}")
        if not self.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.fixed_size is not None and (self.fixed_size < 1 or self.fixed_size % SPATIAL_DIVISOR):
            raise ValueError(f"fixed_size must be a positive multiple of {SPATIAL_DIVISOR} or None, "
                             f"got {self.fixed_size}")
        unknown = sorted(set(self.files_sha256) - set(MODELS))
        if unknown:
            raise ValueError(f"files_sha256 names unknown model keys {unknown}; known: {sorted(MODELS)}")
        bad = [f"{key}/{name}" for key, files in self.files_sha256.items() for name, digest in files.items()
               if not _SHA256.fullmatch(digest)]
        if bad:
            raise ValueError(f"files_sha256 of {', '.join(bad)} is not 64 lower-case hex digits")


def build_manifest(keys: Iterable[str], record: ExportRecord) -> dict:
    """Everything a reader needs to trust the repository: source, checks, libraries, tensor contract."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spatial = spatial_dims(record.fixed_size)
    models = {}
    for key in keys:
        spec = MODELS[key]
        entry = {
            "format": spec.format,
            "server_flips": spec.server_flips,
            "version": int(VERSION),
            "platform": spec.platform or None,
            "backend": spec.backend or None,
            "files": list(spec.files),
            "files_sha256": record.files_sha256.get(key, {}),
            "max_batch_size": spec.max_batch_size,
            "checkpoint_sha256": record.checkpoint_sha256,
            "created": created,
            "parity": [row.as_dict() for row in record.parity if row.key == key],
        }
        if spec.format == "onnx":
            entry["opset"] = record.opset
        entry["precision"] = precision(spec, CPU_VARIANT)
        if spec.format == "openvino" and not spec.quantized:
            entry["parity_precision"] = "f32"
            entry["host_default_precision"] = record.openvino_host_precision
        models[spec.name] = entry
    return {
        "created": created,
        "generator": "brats-export",
        "checkpoint": {"path": str(record.checkpoint), "sha256": record.checkpoint_sha256},
        "libraries": record.versions,
        "onnx_opset": record.opset,
        "parity_tolerance": record.tolerance,
        "fixed_size": record.fixed_size,
        "input": {"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, IN_CHANNELS, *spatial],
                  "channels": ["t1", "t1ce", "t2", "flair"]},
        "output": {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, OUT_CHANNELS, *spatial],
                   "channels": ["WT", "TC", "ET"], "activation": "sigmoid"},
        "labels": {"convention": "BraTS 2019", "1": "NCR/NET (necrotic / non-enhancing core)", "2": "ED (edema)",
                   "4": "ET (enhancing tumor)", "regions": {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}},
        "models": models,
    }


def why_export_again(repository: Path, keys: Iterable[str], *, checkpoint_sha256: str,
                     libraries: dict[str, str]) -> str | None:
    """None when ``repository`` holds an export of every model key in ``keys`` from the checkpoint of
    ``checkpoint_sha256`` by these ``libraries`` (name -> version), made with the default checks (no fixed size, no
    skipped check), with its files and configs in place and equal to what ``manifest.json`` records: exporting
    again would write the same. Otherwise why it would not (for the log)."""
    repository = Path(repository)
    try:
        manifest = json.loads((repository / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MANIFEST} in {repository} (nothing exported there yet)"
    except (OSError, ValueError) as e:
        return f"{repository / MANIFEST} cannot be read ({e})"
    if not isinstance(manifest, dict):
        return f"{repository / MANIFEST} is not a JSON object"
    if manifest.get("libraries") != libraries:
        old = manifest.get("libraries") or {}
        changed = [f"{k} {old.get(k)} -> {v}" for k, v in libraries.items() if old.get(k) != v]
        return f"the libraries changed since the export ({', '.join(changed) or 'another set'})"
    if manifest.get("fixed_size") is not None or manifest.get("warnings"):
        return "the export was made with other options (--fixed-size or --skip-full-size-check)"
    models = manifest.get("models") if isinstance(manifest.get("models"), dict) else {}
    for key in keys:
        spec = MODELS[key]
        entry = models.get(spec.name)
        if not isinstance(entry, dict):
            return f"{spec.name} is not in {repository / MANIFEST}"
        if entry.get("checkpoint_sha256") != checkpoint_sha256:
            old, new = str(entry.get("checkpoint_sha256"))[:12], checkpoint_sha256[:12]
            return f"{spec.name} was exported from another checkpoint (sha256 {old}..., this one {new}...)"
        if not (repository / spec.name / "config.pbtxt").is_file():
            return f"{repository / spec.name / 'config.pbtxt'} is missing"
        recorded = entry.get("files_sha256") or {}
        for name in spec.files:
            path = version_dir(repository, key) / name
            if not recorded.get(name) or not path.is_file() or sha256_file(path) != recorded[name]:
                return f"{path} is missing or differs from what {MANIFEST} records"
    return None
