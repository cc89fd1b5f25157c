"""The preview's geometry and labels: one anatomical orientation whatever the storage order, true voxel aspect,
colours and legend from the label convention (tiny NIfTI files; no plotting except in the last test)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from brats_client import preview
from brats_client.errors import InputError

SHAPE = (20, 24, 16)  # RAS voxel axes; three different sizes, so a transposed view cannot pass


def _save(path, data, codes="RAS", zooms=(1.0, 1.0, 1.0), descrip=""):
    """Save ``data`` (indexed in RAS+) stored in the axis order ``codes``, on the same physical grid whatever
    ``codes`` is."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (-10.0, 12.0, -5.0)
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = descrip
    img = img.as_reoriented(nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes)))
    assert "".join(nib.aff2axcodes(img.affine)) == codes
    nib.save(img, str(path))
    return path


def _case():
    rng = np.random.default_rng(0)
    image = rng.uniform(10, 100, SHAPE).astype(np.float32)
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:12, 14:20, 6:12] = 2
    seg[6:10, 15:19, 7:11] = 1
    seg[7:9, 16:18, 8:10] = 4
    truth = np.zeros(SHAPE, np.uint8)
    truth[5:11, 13:19, 6:11] = 1
    return image, seg, truth


def _write_case(folder, codes, zooms=(1.0, 1.0, 1.0), seg_codes=None):
    folder.mkdir()
    image, seg, truth = _case()
    return (_save(folder / "flair.nii.gz", image, codes, zooms), _save(folder / "seg.nii.gz", seg, seg_codes or codes,
            zooms), _save(folder / "truth.nii.gz", truth, codes, zooms))


@pytest.mark.parametrize(("codes", "seg_codes"), [("LPS", None), ("PIR", None), ("LPS", "RAS")])
def test_the_same_case_renders_the_same_whatever_its_storage_order(tmp_path, codes, seg_codes):
    reference = preview.render(*_write_case(tmp_path / "ras", "RAS"))
    other = preview.render(*_write_case(tmp_path / "other", codes, seg_codes=seg_codes))
    for a, b in zip(reference.views, other.views, strict=True):
        assert a.rgb.shape == b.rgb.shape
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.truth, b.truth)
        assert (a.title, a.aspect, a.marks) == (b.title, b.aspect, b.marks)
    assert [v.rgb.shape[:2] for v in reference.views] == [(24, 20), (16, 20), (16, 24)]  # rows, columns
    assert np.any(np.all(reference.views[0].rgb == reference.views[0].rgb[..., :1], axis=-1))  # grey is drawn
    assert not np.all(np.all(reference.views[0].rgb == reference.views[0].rgb[..., :1], axis=-1))  # and labels


@pytest.mark.parametrize(
    ("bright_half", "expected"),  # the half of the head made bright -> where it must show, per view
    [
        ("R", {"axial": "left", "coronal": "left"}),  # radiological: the patient's right on the image's left
        ("A", {"axial": "top", "sagittal": "left"}),
        ("S", {"coronal": "top", "sagittal": "top"}),
    ],
)
def test_views_follow_the_radiological_convention_from_a_file_stored_in_lps(tmp_path, bright_half, expected):
    axis = "RAS".index(bright_half)
    image = np.ones(SHAPE, np.float32)
    image[(slice(None),) * axis + (slice(SHAPE[axis] // 2, None),)] = 2.0
    img = _save(tmp_path / "t1.nii.gz", image, "LPS")
    seg = _save(tmp_path / "seg.nii.gz", np.zeros(SHAPE, np.uint8), "LPS")  # empty: slices through the middle
    views = {v.title.split(",")[0]: v for v in preview.render(img, seg).views}
    for name, side in expected.items():
        grey = views[name].rgb[..., 0]
        rows, cols = grey.shape
        first, second = (grey[:, : cols // 2], grey[:, cols // 2 :]) if side == "left" else (
            grey[: rows // 2], grey[rows // 2 :])
        assert first.mean() > 0.9 and second.mean() < 0.1, (name, side)
    assert {v.marks for v in views.values()} == {"RLAP", "RLSI", "APSI"}


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR"])
def test_pixels_keep_the_true_voxel_aspect(tmp_path, codes):
    img, seg, _ = _write_case(tmp_path / "case", codes, zooms=(1.0, 1.5, 2.0))  # R-L 1, A-P 1.5, S-I 2 mm
    views = preview.render(img, seg).views
    assert [v.aspect for v in views] == pytest.approx([1.5, 2.0, 2.0 / 1.5])  # axial, coronal, sagittal


def _msd_seg(folder, descrip=""):
    folder.mkdir()
    image, seg, _ = _case()
    seg[seg == 4] = 3  # values {1, 2, 3}: BraTS 2023 or MSD
    return _save(folder / "t1ce.nii.gz", image), _save(folder / "labels.nii.gz", seg, descrip=descrip)


def test_an_msd_segmentation_gets_msd_names_and_colours(tmp_path):
    img, seg = _msd_seg(tmp_path / "option")
    shown = preview.render(img, seg, labels="msd")
    assert shown.labels.convention == "msd"
    assert [text for text, _ in shown.legend] == ["1: edema", "2: necrotic / non-enhancing core", "3: enhancing tumour"]
    assert [colour for _, colour in shown.legend] == [preview.KINDS[k][1] for k in ("edema", "core", "enhancing")]
    assert preview.render(img, seg, labels="brats2023").legend[0][0] == "1: necrotic / non-enhancing core"
    img, seg = _msd_seg(tmp_path / "marked", descrip="brats-triton labels=msd")  # the mark brats-client writes
    marked = preview.render(img, seg)
    assert (marked.labels.convention, marked.legend) == ("msd", shown.legend)


def test_an_ambiguous_segmentation_is_refused_naming_the_choices(tmp_path):
    img, seg = _msd_seg(tmp_path / "case")
    with pytest.raises(InputError, match=r"labels.nii.gz.*brats2023.*msd.*pass --labels"):
        preview.render(img, seg)
    out = tmp_path / "p.png"
    with pytest.raises(InputError):
        preview.write_preview(img, seg, out)
    assert not out.exists()


def test_a_segmentation_off_the_image_grid_is_refused(tmp_path):
    image, seg, _ = _case()
    img = _save(tmp_path / "flair.nii.gz", image)
    affine = nib.load(str(img)).affine.copy()
    affine[0, 3] += 0.01  # 10 micrometres: more than io.AFFINE_ATOL
    nib.save(nib.Nifti1Image(seg, affine), str(tmp_path / "seg.nii.gz"))
    with pytest.raises(InputError, match=r"segmentation .*seg.nii.gz is not on the grid of image .*flair.nii.gz"):
        preview.render(img, tmp_path / "seg.nii.gz")


def test_write_preview_returns_the_png_it_wrote(tmp_path):
    img, seg, truth = _write_case(tmp_path / "case", "LPS", zooms=(1.0, 1.0, 2.0))
    out = tmp_path / "preview.png"
    assert preview.write_preview(img, seg, out, truth=truth, labels="brats2019") == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
