"""Phantoms (``brats_export.phantom``, the generator) written as case folders: the BraTS 2019 layout or the
Medical Segmentation Decathlon's."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from brats_client.atomic import atomic_path
from brats_export.phantom import MODALITIES, Phantom

log = logging.getLogger(__name__)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(image, tmp)


def write_case(phantom: Phantom, out_dir: str | Path, case_id: str) -> Path:
    """Write ``<out_dir>/<case_id>/<case_id>_{t1,t1ce,t2,flair,seg}.nii.gz`` (int16 images, uint8 seg)."""
    case_dir = Path(out_dir) / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    for name in MODALITIES:
        _save(phantom.images[name].astype(np.int16), phantom.affine, case_dir / f"{case_id}_{name}.nii.gz")
    _save(phantom.seg.astype(np.uint8), phantom.affine, case_dir / f"{case_id}_seg.nii.gz")
    log.info("wrote %s", case_dir)
    return case_dir


# The Medical Segmentation Decathlon's Task01_BrainTumour: channel order and labels of its dataset.json.
MSD_MODALITY = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
MSD_CHANNEL_FILES = ("flair", "t1", "t1ce", "t2")
MSD_LABELS = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
BRATS2019_TO_MSD = np.array([0, 2, 1, 0, 3], dtype=np.uint8)  # index: BraTS 2019 label (1 core, 2 edema, 4 ET)


def write_msd_case(phantom: Phantom, root: str | Path, case_id: str) -> Path:
    """The phantom in the MSD layout: ``<root>/imagesTr/<case_id>.nii.gz`` (4-D: FLAIR, T1w, t1gd, T2w),
    ``<root>/labelsTr/<case_id>.nii.gz`` (MSD labels: 1 edema, 2 non-enhancing, 3 enhancing) and
    ``<root>/dataset.json``. Returns the image file."""
    import json

    root = Path(root)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    stacked = np.stack([phantom.images[m].astype(np.int16) for m in MSD_CHANNEL_FILES], axis=-1)
    image = root / "imagesTr" / f"{case_id}.nii.gz"
    _save(stacked, phantom.affine, image)
    _save(BRATS2019_TO_MSD[phantom.seg.astype(np.intp)], phantom.affine, root / "labelsTr" / f"{case_id}.nii.gz")
    dataset = {
        "name": "BRATS (brats-triton phantoms in the Decathlon's layout)", "tensorImageSize": "4D",
        "modality": MSD_MODALITY, "labels": MSD_LABELS, "numTraining": 1, "numTest": 0,
        "training": [{"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}],
        "test": [],
    }
    with atomic_path(root / "dataset.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(dataset, indent=2) + "\n")
    log.info("wrote %s", image)
    return image


def case_id(seed: int) -> str:
    """The case id of the phantom made from ``seed``: ``Phantom_9001`` (at least four digits)."""
    return f"Phantom_{seed:04d}"
