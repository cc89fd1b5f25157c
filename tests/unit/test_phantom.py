"""The phantom generator: determinism, labels, anatomy masks, the written case folder."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from brats_demo.cli import main
from brats_demo.phantom import write_case
from brats_export.phantom import MODALITIES, SHAPE, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(7)


def test_same_seed_same_arrays(phantom):
    again = make_phantom(7)
    np.testing.assert_array_equal(again.seg, phantom.seg)
    for name in MODALITIES:
        np.testing.assert_array_equal(again.images[name], phantom.images[name])
    np.testing.assert_array_equal(again.affine, phantom.affine)


def test_different_seeds_differ(phantom):
    other = make_phantom(8)
    assert not np.array_equal(other.seg, phantom.seg)
    for name in MODALITIES:
        assert not np.array_equal(other.images[name], phantom.images[name])


def test_shapes_and_dtypes(phantom):
    assert phantom.seg.shape == SHAPE and phantom.seg.dtype == np.uint8
    assert set(phantom.images) == set(MODALITIES)
    for img in phantom.images.values():
        assert img.shape == SHAPE and img.dtype == np.float32
        assert np.all(img >= 0) and np.array_equal(img, np.rint(img)) and img.max() < 32768


def test_labels_all_present(phantom):
    assert set(np.unique(phantom.seg).tolist()) == {0, 1, 2, 4}
    assert np.count_nonzero(phantom.seg == 4) > 32  # survives the ET rule of the postprocessing


def test_tumour_inside_brain_and_zero_outside(phantom):
    brain = phantom.brain_mask
    assert np.all(brain[phantom.seg > 0])
    for img in phantom.images.values():
        assert np.all(img[~brain] == 0)
        assert np.all(img[brain] > 0)


def test_enhancing_rim_is_bright_on_t1ce(phantom):
    t1ce = phantom.images["t1ce"]
    assert t1ce[phantom.seg == 4].mean() > 1.3 * t1ce[phantom.brain_mask & (phantom.seg == 0)].mean()
    assert t1ce[phantom.seg == 1].mean() < t1ce[phantom.seg == 4].mean()


def test_write_case_files(phantom, tmp_path):
    case_dir = write_case(phantom, tmp_path, "Phantom_0001")
    assert case_dir == tmp_path / "Phantom_0001"
    names = sorted(p.name for p in case_dir.iterdir())
    assert names == sorted(f"Phantom_0001_{s}.nii.gz" for s in (*MODALITIES, "seg"))
    affines = []
    for name in (*MODALITIES, "seg"):
        image = nib.load(str(case_dir / f"Phantom_0001_{name}.nii.gz"))
        affines.append(image.affine)
        data = np.asarray(image.dataobj)
        if name == "seg":
            assert data.dtype == np.uint8
            np.testing.assert_array_equal(data, phantom.seg)
        else:
            np.testing.assert_array_equal(data.astype(np.float32), phantom.images[name])
    for affine in affines:
        np.testing.assert_array_equal(affine, affines[0])
    np.testing.assert_allclose(np.abs(np.diag(affines[0])[:3]), 1.0)


def test_cli_phantoms(tmp_path):
    assert main(["phantoms", "--out", str(tmp_path), "--n", "2", "--seed", "9002"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Phantom_9002", "Phantom_9003"]  # named by their seed
    assert (tmp_path / "Phantom_9002" / "Phantom_9002_flair.nii.gz").is_file()
    with pytest.raises(SystemExit):
        main(["phantoms", "--out", str(tmp_path), "--n", "0"])
