"""NIfTI in and out: load and validate the four modalities, write results atomically.

Every input problem is one :class:`~brats_client.errors.InputError` line naming the file; every output problem an
:class:`~brats_client.errors.OutputError` naming the path. Outputs are written to a hidden temporary file in the
destination folder and renamed into place, so a reader never sees half a file and a crash leaves none.

An all-zero case is loaded without complaint (:attr:`LoadedCase.is_empty` says so); the pipeline refuses it
(:func:`brats_client.pipeline.prepare_case` raises an InputError naming the files) before any request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from . import atomic
from .errors import InputError, OutputError
from .modalities import CHANNELS, NIFTI_SUFFIXES, CaseFiles

log = logging.getLogger(__name__)

MAX_VOXELS = 2**26  # per modality (about 400^3): four float32 channels of that size take 1 GiB
AFFINE_ATOL = 1e-3  # mm; modalities whose affines differ by more are not on one grid
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)
# The grid of the BraTS training data: 240 x 240 x 155 voxels of 1 mm (SRI24 atlas space).
BRATS_SHAPE = (240, 240, 155)
BRATS_VOXEL_MM = 1.0
VOXEL_TOLERANCE_MM = 0.1  # "about 1 mm"


@dataclass
class LoadedCase:
    """The four modalities stacked ``[4, X, Y, Z]`` float32 in CHANNELS order, and the t1's geometry."""

    volume: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    reference_path: Path
    sha256: dict[str, str]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume.shape[1:])  # type: ignore[return-value]

    @property
    def is_empty(self) -> bool:
        """True when every voxel of every modality is zero (nothing to segment)."""
        return not np.any(self.volume)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.header.get_zooms()[:3]))


def grid_warning(path: Path, shape: tuple[int, ...], zooms: tuple[float, ...]) -> str | None:
    """What differs from the BraTS grid (voxel size in mm, shape) and what to do; None on that grid."""
    zooms = tuple(float(z) for z in zooms)
    differs = []
    if any(abs(z - BRATS_VOXEL_MM) > VOXEL_TOLERANCE_MM for z in zooms):
        differs.append(f"voxels of {' x '.join(f'{z:g}' for z in zooms)} mm")
    if tuple(shape) != BRATS_SHAPE:
        differs.append(f"shape {'x'.join(map(str, shape))}")
    if not differs:
        return None
    return (
        f"{path} has {' and '.join(differs)}; the network was trained only on BraTS data "
        f"(co-registered, skull-stripped, 1 mm isotropic, {'x'.join(map(str, BRATS_SHAPE))}): resample the four "
        f"modalities to 1 mm (BraTS registers them to the SRI24 atlas) or expect poorer labels"
    )


def _one_line(error: BaseException) -> str:
    """An exception's text on one line (nibabel's messages can span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def open_nifti(
    channel: str, path: Path, max_voxels: int, *, channels: int = 0, labels: bool = False
) -> tuple[nib.Nifti1Image, tuple[int, ...]]:
    """Open the header of a NIfTI image and check it is 3-D (``channels`` 0) or 3-D with ``channels`` on its
    4th axis, under the voxel limit. Returns the image and its spatial shape. ``channel`` names it in errors,
    ``labels`` says it is a label map."""
    what = f"{channel} file {path}"
    if not path.exists():
        raise InputError(f"{what} does not exist")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as e:
        raise InputError(f"{what} is not a readable NIfTI file: {_one_line(e)}") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{what} is a {type(img).__name__}, not NIfTI; convert it to .nii.gz")
    shape = tuple(int(s) for s in img.shape)
    extra = [s for s in shape[3:] if s != 1]  # trailing time/vector axes of length 1 do not count
    if len(shape) < 3 or extra != ([channels] if channels else []):
        if channels:
            need = f"a 4-D file with {channels} channels on its 4th axis"
        elif labels:
            need = "a 3-D label map"
        else:
            need = ("a 3-D volume (one modality per file; a 4-D file of the four channels goes alone as INPUT, "
                    "the MSD layout)")
        raise InputError(f"{what} has shape {tuple(img.shape)}; {need} is needed")
    shape = shape[:3]
    voxels = int(np.prod(shape))
    if voxels > max_voxels:
        raise InputError(f"{what} has {voxels} voxels {shape}, more than the limit {max_voxels}; resample it first")
    return img, shape


def _read_data(channel: str, path: Path, img: nib.Nifti1Image, shape: tuple[int, ...]) -> np.ndarray:
    """The image's values as float32, spatial shape ``shape`` (and a last axis of channels if it has one)."""
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except _READ_ERRORS as e:  # truncated .nii.gz: EOFError / zlib.error; short .nii: ValueError
        raise InputError(f"{channel} file {path} cannot be read (truncated or corrupt?): {_one_line(e)}") from e
    data = data.reshape(*shape, -1) if data.size != np.prod(shape) else data.reshape(shape)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(f"{channel} file {path} has {bad} NaN/Inf voxels; fix or replace them (e.g. with 0)")
    return data


def _load_4d(files: CaseFiles, max_voxels: int) -> LoadedCase:
    """The MSD layout: one file, the channels on its 4th axis at ``files.channel_index``."""
    path = files.paths[CHANNELS[0]]
    img, shape = open_nifti("4-D", path, max_voxels, channels=len(CHANNELS))
    data = _read_data("4-D", path, img, shape)
    index = files.channel_index or {}
    volume = np.stack([data[..., index[ch]] for ch in CHANNELS])
    del data
    digest = atomic.sha256_file(path)
    header = img.header.copy()
    header.set_data_shape(shape)
    return LoadedCase(volume, np.asarray(img.affine, dtype=np.float64), header, path, {ch: digest for ch in CHANNELS})


def load_case(files: CaseFiles, *, max_voxels: int = MAX_VOXELS, affine_atol: float = AFFINE_ATOL) -> LoadedCase:
    """Read, check and stack the four modalities of a case.

    Checks: readable NIfTI, 3-D (a trailing singleton 4th axis is squeezed), at most ``max_voxels`` voxels, finite
    values, one shape and one affine (within ``affine_atol`` mm) across modalities. The t1's affine and header
    are kept for the outputs. A 4-D file (``files.naming == "msd"``) is read once and split by
    ``files.channel_index``.
    """
    if files.channel_index is not None:
        return _load_4d(files, max_voxels)
    ref_channel = CHANNELS[0]
    ref_path = files.paths[ref_channel]
    ref_img, ref_shape = open_nifti(ref_channel, ref_path, max_voxels)
    ref_affine = np.asarray(ref_img.affine, dtype=np.float64)
    images = {ref_channel: ref_img}
    for ch in CHANNELS[1:]:
        path = files.paths[ch]
        img, shape = open_nifti(ch, path, max_voxels)
        if problem := grid_problem(shape, img.affine, ref_shape, ref_affine, affine_atol):
            raise InputError(f"{ch} file {path} and {ref_channel} file {ref_path} have {problem}; "
                             f"the modalities must be co-registered on one grid")
        images[ch] = img
    volume = np.empty((len(CHANNELS), *ref_shape), dtype=np.float32)
    sha = {}
    for i, ch in enumerate(CHANNELS):
        path = files.paths[ch]
        volume[i] = _read_data(ch, path, images[ch], ref_shape)
        sha[ch] = atomic.sha256_file(path)
    header = ref_img.header.copy()
    log.debug("loaded %s: shape %s, zooms %s", files.case_id, ref_shape, header.get_zooms()[:3])
    return LoadedCase(volume, ref_affine, header, ref_path, sha)


def grid_problem(
    shape: tuple[int, ...], affine: np.ndarray, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
    atol: float = AFFINE_ATOL,
) -> str | None:
    """How two images' grids differ (shape, or affines more than ``atol`` mm apart), or None: the one same-grid
    rule of the client (modalities, prediction against truth, preview layers)."""
    if tuple(shape) != tuple(ref_shape):
        return f"shapes {tuple(shape)} and {tuple(ref_shape)}"
    diff = float(np.max(np.abs(np.asarray(affine, dtype=np.float64) - np.asarray(ref_affine, dtype=np.float64))))
    if diff > atol:
        return f"affines differing by up to {diff:.4g} mm (more than {atol})"
    return None


@dataclass
class LabelMap:
    """A segmentation: integer labels ``[X, Y, Z]`` and the geometry of its file."""

    labels: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]
    path: Path
    descrip: str = ""  # the header's description; brats-client marks its label convention there


def load_label_map(path: str | Path, what: str = "segmentation", *, max_voxels: int = MAX_VOXELS) -> LabelMap:
    """Read a 3-D label NIfTI; ``what`` names it in errors (e.g. "prediction"). Non-integer values are refused."""
    path = Path(path)
    img, shape = open_nifti(what, path, max_voxels, labels=True)
    data = _read_data(what, path, img, shape)
    fractional = data != np.rint(data)
    if fractional.any():
        example = float(data[fractional][0])
        raise InputError(f"{what} file {path} holds non-integer values (e.g. {example:g}); a label map is needed, "
                         f"not probabilities")
    zx, zy, zz = (float(z) for z in img.header.get_zooms()[:3])
    descrip = bytes(img.header["descrip"]).split(b"\0")[0].decode("latin-1").strip()
    return LabelMap(data.astype(np.int16), np.asarray(img.affine, dtype=np.float64), (zx, zy, zz), path, descrip)


# ---------------------------------------------------------------------------------------------------- outputs


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None when one can). ``os.access`` alone is not enough: root passes
    it everywhere, and it ignores read-only or special file systems; so create and remove an empty probe file."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, probe = tempfile.mkstemp(prefix=".brats-probe-", dir=folder)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def check_folder_writable(folder: str | Path) -> None:
    """Raise OutputError unless ``folder`` is an existing folder in which files can be created."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist or is not a folder")
    why = _cannot_create_in(folder)
    if why is not None:
        raise OutputError(f"output folder {folder} is not writable ({why})")


def check_writable(path: str | Path, *, overwrite: bool = False) -> None:
    """Check before any work that ``path`` can be written: not an existing file unless ``overwrite``, not a folder,
    and its nearest existing parent is a writable folder (missing parents are created on writing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} exists; pass --overwrite to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create output {path}: {parent} is not a folder")
    why = _cannot_create_in(parent)
    if why is not None:
        raise OutputError(f"cannot create output {path}: folder {parent} is not writable ({why})")


@contextlib.contextmanager
def _atomic_path(path: Path, *, overwrite: bool, suffix: str) -> Iterator[Path]:
    """:func:`brats_client.atomic.atomic_path` after :func:`check_writable`, its errors as OutputErrors.

    Without ``overwrite`` the final step is a hard link, which fails if ``path`` appeared meanwhile.
    """
    check_writable(path, overwrite=overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {path.parent}: {e.strerror or e}") from e
    try:
        with atomic.atomic_path(path, overwrite=overwrite, suffix=suffix) as tmp:
            yield tmp
    except atomic.TargetExistsError as e:
        raise OutputError(f"output {path} exists; pass --overwrite to replace it") from e
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


def _nifti_suffix(path: Path) -> str:
    lower = path.name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    raise OutputError(f"output {path} must end in .nii or .nii.gz")


def output_header(
    array: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None, descrip: str | None = None
) -> nib.Nifti1Header:
    """The input header adapted to ``array``: its dtype (uint8 labels / float32 otherwise), shape, no intensity
    scaling or display range, ``affine`` in the sform/qform with the input's codes, and ``descrip`` if given."""
    hdr = header.copy() if isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)) else nib.Nifti1Header()
    if descrip is not None:
        hdr["descrip"] = descrip.encode("ascii")[:79]
    hdr.set_data_shape(array.shape)
    hdr.set_data_dtype(array.dtype)
    hdr.set_slope_inter(None, None)
    hdr["cal_min"] = hdr["cal_max"] = 0
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code == 0 and qform_code == 0:
        sform_code, qform_code = 2, 0  # nibabel's default for a new image: "aligned" sform, unknown qform
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)
    return hdr


def _output_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"labels must be in 0..255 to be written as uint8, got {array.min()}..{array.max()}")
        return np.ascontiguousarray(array, dtype=np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.ascontiguousarray(array, dtype=np.float32)
    raise ValueError(f"cannot write an array of dtype {array.dtype} as NIfTI")


def save_nifti_atomic(
    array: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None,
    path: str | Path,
    *,
    overwrite: bool = False,
    descrip: str | None = None,
) -> Path:
    """Write ``array`` (integers -> uint8 labels, floats -> float32) with exactly ``affine`` and the input
    ``header`` (see :func:`output_header`) to ``path`` (.nii or .nii.gz), atomically."""
    path = Path(path)
    suffix = _nifti_suffix(path)
    data = _output_array(array)
    affine = np.asarray(affine, dtype=np.float64)
    hdr = output_header(data, affine, header, descrip)
    image_class = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = image_class(data, affine, header=hdr)
    with _atomic_path(path, overwrite=overwrite, suffix=suffix) as tmp:
        img.to_filename(str(tmp))
    log.debug("wrote %s %s %s", path, data.shape, data.dtype)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_text_atomic(text: str, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically, with the client's output checks and OutputError."""
    path = Path(path)
    with _atomic_path(path, overwrite=overwrite, suffix=path.suffix) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(obj: Any, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON (numpy values and paths converted) to ``path``, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
    return save_text_atomic(text, path, overwrite)
