"""A PNG of three orthogonal slices through the tumour centre, labels coloured over an MRI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .atomic import TargetExistsError, atomic_path
from .errors import InputError, OutputError

# label -> (name, RGB); 3 is BraTS 2023's enhancing tumour
COLOURS = {
    1: ("necrotic / non-enhancing core", (0.90, 0.10, 0.10)),
    2: ("edema", (0.10, 0.80, 0.20)),
    3: ("enhancing tumour", (1.00, 0.85, 0.00)),
    4: ("enhancing tumour", (1.00, 0.85, 0.00)),
}


def _load(path: Path, what: str) -> np.ndarray:
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except FileNotFoundError as e:
        raise InputError(f"{what} {path} does not exist") from e
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as e:
        raise InputError(f"{what} {path} is not a readable NIfTI file: {e}") from e
    data = np.squeeze(data)
    if data.ndim != 3:
        raise InputError(f"{what} {path} has shape {data.shape}; a 3-D volume is needed")
    return data


def tumour_centre(seg: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass of the labelled voxels, or the volume centre when there are none."""
    idx = np.argwhere(seg > 0)
    if len(idx) == 0:
        return tuple(s // 2 for s in seg.shape)  # type: ignore[return-value]
    return tuple(int(round(v)) for v in idx.mean(axis=0))  # type: ignore[return-value]


def _overlay(background: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    lo, hi = np.percentile(background[background > 0], (1, 99)) if np.any(background > 0) else (0.0, 1.0)
    grey = np.clip((background - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for label, (_, colour) in COLOURS.items():
        mask = labels == label
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour)
    return rgb


def write_preview(
    image: Path, seg: Path, output: Path, *, truth: Path | None = None, overwrite: bool = False
) -> Path:
    """Write axial, coronal and sagittal slices through the tumour centre, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite to replace it")
    background = _load(Path(image), "image").astype(np.float32)
    labels = _load(Path(seg), "segmentation").astype(np.int16)
    if background.shape != labels.shape:
        raise InputError(f"image {image} has shape {background.shape} but segmentation {seg} has {labels.shape}")
    truth_labels = _load(Path(truth), "truth").astype(np.int16) if truth is not None else None
    centre = tumour_centre(labels if np.any(labels) else (truth_labels if truth_labels is not None else labels))
    views = [("axial", 2), ("coronal", 1), ("sagittal", 0)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), facecolor="black")
    for ax, (name, axis) in zip(axes, views, strict=True):
        sl = [slice(None)] * 3
        sl[axis] = centre[axis]
        rgb = _overlay(background[tuple(sl)], labels[tuple(sl)])
        ax.imshow(np.rot90(rgb), interpolation="nearest")
        if truth_labels is not None:
            ax.contour(np.rot90(truth_labels[tuple(sl)] > 0), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{name} {centre[axis]}", color="white", fontsize=10)
        ax.axis("off")
    present = sorted({int(v) for v in np.unique(labels)} - {0})
    handles = [Patch(color=COLOURS[v][1], label=f"{v}: {COLOURS[v][0]}") for v in present if v in COLOURS]
    if truth_labels is not None:
        handles.append(Patch(facecolor="none", edgecolor="white", label="truth (outline)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    fig.suptitle(f"{Path(seg).name} over {Path(image).name} (not for clinical use)", color="white", fontsize=10)
    try:
        with atomic_path(output, overwrite=overwrite, suffix=".png") as tmp:  # a PNG whatever the name
            fig.savefig(tmp, dpi=100, facecolor="black")
    except TargetExistsError as e:  # appeared while drawing
        raise OutputError(f"{output} exists; pass --overwrite to replace it") from e
    finally:
        plt.close(fig)
    return output
