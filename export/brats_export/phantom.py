"""Synthetic BraTS-like cases ("phantoms") built on one real skull-stripped T1 template.

It lives in the export package because the parity check feeds a phantom (:mod:`.parity_inputs`); the demo
writes phantoms as case folders. The only real anatomy is the T1 template in ``data/`` (see ``data/NOTICE.md``).
From it:

1. tissue classes CSF / GM / WM come from a 1D k-means on the brain's T1 intensities (computed once, cached);
2. T1, T1ce, T2 and FLAIR are synthesised by a piecewise-linear map of the template's T1 intensity through
   per-modality class means (so partial volume and the template's texture carry over), with per-case jitter;
3. a tumour is placed at a random point deep inside the brain: an enhancing rim (label 4) around a
   necrotic / non-enhancing core (label 1), inside a larger edema (label 2); each region is a randomly
   oriented ellipsoid whose radius is deformed by a smooth random field; edema does not invade the CSF;
   the surrounding anatomy is pushed outwards a little (mass effect);
4. each modality gets a smooth multiplicative bias field and Rician noise, is zeroed outside the brain and rounded
   to integers (BraTS files are int16).

Everything is in array space (240 x 240 x 155, 1 mm), with a BraTS-like affine for the files. A given seed always
gives the same case (``numpy.random.default_rng(seed)`` drives every random choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ATLAS_PATH = Path(__file__).resolve().parent / "data" / "t1_skullstripped_brats_space.nii.gz"
SHAPE = (240, 240, 155)
MODALITIES = ("t1", "t1ce", "t2", "flair")
# BraTS 2019 files: 1 mm, x and y flipped (LPS-style storage), origin at the far corner of y.
BRATS_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, -0.0], [0.0, -1.0, 0.0, 239.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)

# Mean intensity of each tissue relative to white matter on T1 (= 1.0); rows follow MODALITIES.
# Columns: CSF, GM, WM, edema, enhancing tumour, necrosis.
_TISSUES = ("csf", "gm", "wm", "edema", "enhancing", "necrosis")
_CONTRAST = np.array(
    [
        [0.35, 0.65, 1.00, 0.55, 0.62, 0.30],  # t1: tumour dark, necrosis darkest
        [0.35, 0.68, 0.95, 0.60, 1.70, 0.28],  # t1ce: enhancing rim bright, necrosis dark
        [1.60, 0.95, 0.70, 1.35, 1.05, 1.50],  # t2: CSF, edema and necrosis bright
        [0.30, 1.00, 0.80, 1.55, 1.25, 0.85],  # flair: edema brightest, CSF dark
    ]
)


@dataclass(frozen=True)
class Phantom:
    """One synthetic case in array space.

    ``images`` maps each of ``MODALITIES`` to a float32 ``SHAPE`` array holding non-negative integers (exactly
    representable as int16), zero outside the brain; ``seg`` is uint8 with labels 0/1/2/4; ``affine`` is the
    4x4 voxel-to-world matrix written to every file; ``brain_mask`` is where the images are nonzero.
    """

    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray
    brain_mask: np.ndarray


@dataclass(frozen=True)
class _Anatomy:
    t1: np.ndarray  # float32 SHAPE, template intensities, zero outside the brain
    mask: np.ndarray  # bool SHAPE
    centers: tuple[float, float, float]  # k-means CSF, GM, WM T1 intensities
    depth_mm: np.ndarray  # float32 SHAPE, distance to the outside of the brain
    box: tuple[slice, slice, slice]  # bounding box of the brain; every phantom stays inside it


def _kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 30) -> np.ndarray:
    centers = np.percentile(values, np.linspace(10, 90, k))
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centers[None, :]), axis=1)
        new = np.array([values[assign == i].mean() if np.any(assign == i) else centers[i] for i in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    return np.sort(centers)


@lru_cache(maxsize=1)
def load_anatomy() -> _Anatomy:
    """The template, its brain mask, tissue-class centres and depth map (computed once per process)."""
    image = nib.load(str(ATLAS_PATH))
    t1 = np.asarray(image.dataobj, dtype=np.float32).reshape(SHAPE)
    mask = t1 > 0
    values = t1[mask][::5].astype(np.float64)
    centers = _kmeans_1d(values)
    depth = ndimage.distance_transform_edt(mask).astype(np.float32)
    nz = np.argwhere(mask)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(nz.min(0), nz.max(0), strict=True))
    return _Anatomy(t1=t1, mask=mask, centers=(float(centers[0]), float(centers[1]), float(centers[2])),
                    depth_mm=depth, box=box)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _smooth_field(rng: np.random.Generator, grids: tuple[np.ndarray, ...], wavelength_mm: float,
                  waves: int = 6) -> np.ndarray:
    """A smooth random field of roughly unit amplitude: a sum of random plane waves (random Fourier features)."""
    field = np.zeros(np.broadcast_shapes(*(g.shape for g in grids)), dtype=np.float32)
    for _ in range(waves):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4))
        phase = rng.uniform(0, 2 * np.pi)
        arg = sum(np.float32(k * d) * g for d, g in zip(direction, grids, strict=True)) + np.float32(phase)
        field += np.cos(arg)
    return field * np.float32(np.sqrt(2.0 / waves))


def _ellipsoid_radius(rel: tuple[np.ndarray, ...], rotation: np.ndarray, axes_mm: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of offsets ``rel`` from the centre."""
    total = None
    for row in range(3):
        u = sum(np.float32(rotation[row, col]) * rel[col] for col in range(3)) / np.float32(axes_mm[row])
        total = u * u if total is None else total + u * u
    return np.sqrt(total)


def _mass_effect(rng: np.random.Generator, t1: np.ndarray, box: tuple[slice, ...], rel: tuple[np.ndarray, ...],
                 core_radius_mm: float) -> None:
    """Push the anatomy in ``box`` radially away from the tumour centre (in place)."""
    r = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    push_mm = np.float32(rng.uniform(0.2, 0.5) * core_radius_mm)
    reach = np.float32(1.8 * core_radius_mm)
    shrink = push_mm * np.exp(-((r / reach) ** 2)) / np.maximum(r, np.float32(1.0))
    # rel is the offset from the centre voxel: an output voxel samples the template at centre + rel * (1 - shrink)
    centre = [box[a].start - float(rel[a].min()) for a in range(3)]
    coords = [np.float32(centre[a]) + rel[a] * (1 - shrink) for a in range(3)]
    coords = [np.broadcast_to(c, shrink.shape) for c in coords]
    t1[box] = ndimage.map_coordinates(t1, coords, order=1, mode="constant", cval=0.0)


def _tumour(rng: np.random.Generator, anatomy: _Anatomy, t1: np.ndarray, mask: np.ndarray):
    """Choose a tumour; returns (box, whole, core, necrosis) boolean masks within ``box``; warps ``t1`` in place."""
    csf, gm, wm = anatomy.centers
    core_axes = rng.uniform(8.0, 17.0, size=3)
    core_radius = float(core_axes.max())
    edema_axes = core_axes * rng.uniform(1.5, 2.6, size=3) + rng.uniform(3.0, 8.0)
    # centre: deep enough for the core, in grey or white matter
    candidates = np.flatnonzero((anatomy.depth_mm > core_radius + 6.0) & (anatomy.t1 > 0.5 * (csf + gm)))
    centre = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], SHAPE))
    half = int(np.ceil(edema_axes.max() * 1.35)) + 4
    box = tuple(
        slice(max(b.start, c - half), min(b.stop, c + half + 1)) for c, b in zip(centre, anatomy.box, strict=True)
    )
    rel = tuple(
        (np.arange(s.start, s.stop, dtype=np.float32) - np.float32(c)).reshape([-1 if a == i else 1 for i in range(3)])
        for a, (s, c) in enumerate(zip(box, centre, strict=True))
    )
    _mass_effect(rng, t1, box, rel, core_radius)
    mask[box] = t1[box] > 0

    core_rot = _random_rotation(rng)
    rho_core = _ellipsoid_radius(rel, core_rot, core_axes)
    rho_core /= 1.0 + np.float32(rng.uniform(0.12, 0.25)) * _smooth_field(rng, rel, wavelength_mm=rng.uniform(14, 26))
    core = rho_core < 1.0
    necrotic_fraction = rng.uniform(0.45, 0.8)
    rho_nec = rho_core / (1.0 + np.float32(0.12) * _smooth_field(rng, rel, wavelength_mm=rng.uniform(8, 14)))
    necrosis = rho_nec < necrotic_fraction

    edema_rel = tuple(g - np.float32(rng.normal(0, 3.0)) for g in rel)
    rho_edema = _ellipsoid_radius(edema_rel, _random_rotation(rng), edema_axes)
    rho_edema /= 1.0 + np.float32(rng.uniform(0.2, 0.35)) * _smooth_field(rng, rel, wavelength_mm=rng.uniform(18, 35))
    t1_box = t1[box]
    not_csf = t1_box > np.float32(csf + 0.35 * (gm - csf))
    brain = mask[box]
    core &= brain
    necrosis &= core
    whole = (((rho_edema < 1.0) & not_csf) | core) & brain
    # keep the edema connected to the core (islands cut off by sulci are dropped)
    pieces, _ = ndimage.label(whole, structure=np.ones((3, 3, 3)))
    whole = np.isin(pieces, np.unique(pieces[core]))
    return box, whole, core, necrosis


def _bias_field(rng: np.random.Generator, grids: tuple[np.ndarray, ...], strength: float) -> np.ndarray:
    """exp of a random quadratic polynomial over the box, normalised coordinates in [-1, 1]."""
    log_field = np.zeros(np.broadcast_shapes(*(g.shape for g in grids)), dtype=np.float32)
    terms = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
    for powers in terms:
        term = np.float32(rng.normal(0, strength / 3))
        for g, p in zip(grids, powers, strict=True):
            if p:
                term = term * g**p
        log_field += term
    return np.exp(log_field)


def make_phantom(seed: int) -> Phantom:
    """One synthetic BraTS-like case; the same ``seed`` always gives the same arrays."""
    rng = np.random.default_rng(seed)
    anatomy = load_anatomy()
    t1 = anatomy.t1.copy()
    mask = anatomy.mask.copy()
    box, whole, core, necrosis = _tumour(rng, anatomy, t1, mask)

    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg_box = np.zeros(whole.shape, dtype=np.uint8)
    seg_box[whole] = 2
    seg_box[core] = 4
    seg_box[necrosis] = 1
    seg[box] = seg_box

    # partial-volume fractions of the nested regions (smoothed masks), within the tumour box
    fractions = [ndimage.gaussian_filter(m.astype(np.float32), 0.7) for m in (whole, core, necrosis)]

    # the brain's bounding box: everything below is computed there only
    brain_box = anatomy.box
    grids = tuple(
        np.linspace(-1, 1, s.stop - s.start, dtype=np.float32).reshape([-1 if a == i else 1 for i in range(3)])
        for a, s in enumerate(brain_box)
    )
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, brain_box, strict=True))
    tumour_rel = tuple(
        np.arange(b.stop - b.start, dtype=np.float32).reshape([-1 if a == i else 1 for i in range(3)])
        for a, b in enumerate(box)
    )
    texture = 1.0 + np.float32(0.04) * _smooth_field(rng, tumour_rel, wavelength_mm=rng.uniform(7.0, 12.0), waves=8)

    csf, gm, wm = anatomy.centers
    knots = np.array([0.0, csf, gm, wm, max(anatomy.t1.max(), wm * 1.01)], dtype=np.float64)
    t1_brain = t1[brain_box]
    mask_brain = mask[brain_box]
    images = {}
    for m, name in enumerate(MODALITIES):
        means = _CONTRAST[m] * rng.uniform(0.9, 1.1, size=len(_TISSUES))
        tissue_values = np.array([means[0], means[0], means[1], means[2], means[2] * 1.05])
        img = np.interp(t1_brain, knots, tissue_values).astype(np.float32)
        sub = img[inner]
        edema, enhancing, necrotic = (np.float32(v) for v in means[3:])
        sub = sub + fractions[0] * (edema * texture - sub)
        sub = sub + fractions[1] * (enhancing * texture - sub)
        sub = sub + fractions[2] * (necrotic * texture - sub)
        img[inner] = sub
        img *= _bias_field(rng, grids, strength=rng.uniform(0.1, 0.3))
        sigma = np.float32(rng.uniform(0.015, 0.04))
        noise_re = rng.standard_normal(img.shape, dtype=np.float32) * sigma
        noise_im = rng.standard_normal(img.shape, dtype=np.float32) * sigma
        img = np.sqrt((img + noise_re) ** 2 + noise_im**2)
        scale = np.float32(rng.uniform(300.0, 1200.0))
        img = np.maximum(np.rint(img * scale), 1.0)
        img[~mask_brain] = 0.0
        full = np.zeros(SHAPE, dtype=np.float32)
        full[brain_box] = img
        images[name] = full
    return Phantom(images=images, seg=seg, affine=BRATS_AFFINE.copy(), brain_mask=mask)
