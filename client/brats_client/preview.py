"""A PNG of three orthogonal slices through the tumour centre, labels coloured over an MRI.

Image, segmentation and truth are reoriented to RAS+ (nibabel's closest canonical: voxel axes towards the
patient's Right, Anterior, Superior) whatever their storage order, then drawn in the **radiological convention**:
the patient's right on the image's left (as if looking up from the feet, or facing the patient), anterior at the
top of the axial view, superior at the top of the coronal and sagittal views, anterior on the left of the
sagittal view. Letters at the image edges say so, and pixels keep the true voxel aspect (voxel sizes in mm).

Colours follow the label convention (:mod:`brats_client.conventions`): edema green, necrotic / non-enhancing
core red, enhancing tumour yellow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from . import conventions, io
from .atomic import TargetExistsError, atomic_path
from .errors import InputError, OutputError

DISPLAY_NOTE = "radiological convention: the patient's right is on the image's left"
KINDS = {  # region kind -> (legend name, RGB)
    "edema": ("edema", (0.10, 0.80, 0.20)),
    "core": ("necrotic / non-enhancing core", (0.90, 0.10, 0.10)),
    "enhancing": ("enhancing tumour", (1.00, 0.85, 0.00)),
}
# name, RAS axis held fixed, edge letters (left, right, top, bottom) on screen
VIEWS = (("axial", 2, "RLAP"), ("coronal", 1, "RLSI"), ("sagittal", 0, "APSI"))
EDGES = (  # where those letters go: axes fractions x, y and the text alignment
    (0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
    (0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom"),
)


@dataclass(frozen=True)
class View:
    """One slice as drawn: ``rgb [rows, cols, 3]`` in screen orientation, ``aspect`` = pixel height / width."""

    title: str  # e.g. "axial, z = +12.0 mm" (scanner coordinates, RAS+)
    rgb: np.ndarray
    truth: np.ndarray | None  # truth > 0 on the same pixels, drawn as an outline
    aspect: float
    marks: str  # letters at the left, right, top and bottom edges


@dataclass(frozen=True)
class Preview:
    """What :func:`write_preview` draws, before any plotting."""

    views: tuple[View, ...]  # axial, coronal, sagittal
    labels: conventions.Decision
    legend: tuple[tuple[str, tuple[float, float, float]], ...]  # ("<value>: <name>", RGB) per label present


def _canonical(path: Path, what: str) -> nib.Nifti1Image:
    """``path`` (checked by :func:`brats_client.io.open_nifti`) reoriented to RAS+ (voxel axes towards the
    patient's Right, Anterior, Superior)."""
    img, _ = io.open_nifti(what, Path(path), io.MAX_VOXELS, labels=what != "image")
    return nib.as_closest_canonical(nib.squeeze_image(img))


def _check_grid(img: nib.Nifti1Image, path: Path, what: str, ref: nib.Nifti1Image, image: Path) -> None:
    """Both reoriented to RAS+: the same shape, affines within :data:`brats_client.io.AFFINE_ATOL` mm."""
    if problem := io.grid_problem(img.shape, img.affine, ref.shape, ref.affine):
        raise InputError(
            f"{what} {path} is not on the grid of image {image} (reoriented to RAS, they have {problem}): pass "
            f"the image the {what} was drawn on, or resample one onto the other"
        )


def tumour_centre(seg: np.ndarray) -> tuple[int, int, int]:
    """Centre of mass of the labelled voxels, or the volume centre when there are none."""
    idx = np.argwhere(seg > 0)
    if len(idx) == 0:
        return tuple(s // 2 for s in seg.shape)  # type: ignore[return-value]
    return tuple(int(round(v)) for v in idx.mean(axis=0))  # type: ignore[return-value]


def label_colours(convention: conventions.Convention) -> dict[int, tuple[str, tuple[float, float, float]]]:
    """Label value -> (legend name, RGB) under ``convention``."""
    return {getattr(convention, kind): KINDS[kind] for kind in ("edema", "core", "enhancing")}


def _overlay(background: np.ndarray, labels: np.ndarray, colours: dict, alpha: float = 0.5) -> np.ndarray:
    lo, hi = np.percentile(background[background > 0], (1, 99)) if np.any(background > 0) else (0.0, 1.0)
    grey = np.clip((background - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for label, (_, colour) in colours.items():
        mask = labels == label
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour)
    return rgb


def _to_screen(plane: np.ndarray) -> np.ndarray:
    """A RAS plane ``[a, b, ...]`` (a before b) as ``[rows, cols, ...]``: b upwards, a decreasing to the right."""
    return np.ascontiguousarray(np.swapaxes(plane, 0, 1)[::-1, ::-1])


def render(image: Path, seg: Path, truth: Path | None = None, *, labels: str | None = None) -> Preview:
    """The three views through the tumour centre (of ``seg``, or of ``truth`` when ``seg`` is empty), and the label
    convention: ``labels``, or :func:`brats_client.conventions.decide` on the values and header of ``seg``."""
    ref = _canonical(Path(image), "image")
    seg_img = _canonical(Path(seg), "segmentation")
    _check_grid(seg_img, Path(seg), "segmentation", ref, Path(image))
    truth_img = None
    if truth is not None:
        truth_img = _canonical(Path(truth), "truth")
        _check_grid(truth_img, Path(truth), "truth", ref, Path(image))
    background = ref.get_fdata(dtype=np.float32)
    seg_data = np.asanyarray(seg_img.dataobj).astype(np.int16)
    truth_data = np.asanyarray(truth_img.dataobj).astype(np.int16) if truth_img is not None else None
    present = [int(v) for v in np.unique(seg_data) if v != 0]
    descrip = seg_img.header["descrip"].item().decode("latin-1").strip()
    decision = conventions.decide(
        present, path=Path(seg), role="segmentation", option=labels, option_flag="--labels", descrip=descrip,
        name_hint=None,
    )
    colours = label_colours(conventions.get(decision.convention))
    centre = tumour_centre(seg_data if np.any(seg_data) or truth_data is None else truth_data)
    world = ref.affine[:3] @ np.array([*centre, 1.0])
    zooms = nib.affines.voxel_sizes(ref.affine)
    views = []
    for name, axis, marks in VIEWS:
        sl = tuple(centre[axis] if a == axis else slice(None) for a in range(3))
        a, b = (x for x in range(3) if x != axis)
        views.append(View(
            title=f"{name}, {'xyz'[axis]} = {world[axis]:+.1f} mm",
            rgb=_to_screen(_overlay(background[sl], seg_data[sl], colours)),
            truth=_to_screen(truth_data[sl] > 0) if truth_data is not None else None,
            aspect=float(zooms[b] / zooms[a]),
            marks=marks,
        ))
    legend = tuple((f"{v}: {colours[v][0]}", colours[v][1]) for v in present)
    return Preview(tuple(views), decision, legend)


def write_preview(
    image: Path, seg: Path, output: Path, *, truth: Path | None = None, overwrite: bool = False,
    labels: str | None = None,
) -> Path:
    """Write axial, coronal and sagittal slices through the tumour centre, in the radiological convention (the
    patient's right on the image's left), with orientation letters and a legend; returns ``output``.

    ``labels`` names the label convention (one of :data:`brats_client.conventions.NAMES`); None decides it from
    the segmentation's header and values, and refuses (InputError naming the choices) when they do not decide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite to replace it")
    preview = render(image, seg, truth, labels=labels)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.8), facecolor="black")
    for ax, view in zip(axes, preview.views, strict=True):
        ax.imshow(view.rgb, interpolation="nearest", aspect=view.aspect)
        if view.truth is not None:
            ax.contour(view.truth, levels=[0.5], colors="white", linewidths=0.8)
        for letter, (x, y, ha, va) in zip(view.marks, EDGES, strict=True):
            ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, color="white", fontsize=10,
                    fontweight="bold")
        ax.set_title(view.title, color="white", fontsize=10)
        ax.axis("off")
    handles = [Patch(color=colour, label=text) for text, colour in preview.legend]
    if truth is not None:
        handles.append(Patch(facecolor="none", edgecolor="white", label="truth (outline)"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    fig.text(0.01, 0.01, f"{DISPLAY_NOTE}; labels: {preview.labels.convention} ({preview.labels.source})",
             color="grey", fontsize=7)
    fig.suptitle(f"{Path(seg).name} over {Path(image).name} (not for clinical use)", color="white", fontsize=10)
    try:
        with atomic_path(output, overwrite=overwrite, suffix=".png") as tmp:  # a PNG whatever the name
            fig.savefig(tmp, dpi=100, facecolor="black")
    except TargetExistsError as e:  # appeared while drawing
        raise OutputError(f"{output} exists; pass --overwrite to replace it") from e
    finally:
        plt.close(fig)
    return output
