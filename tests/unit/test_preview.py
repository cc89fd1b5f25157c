"""``brats-client preview``: a PNG through the tumour centre, clear errors for bad inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from brats_client import cli, exit_codes
from brats_client.preview import tumour_centre


def _write(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def test_preview_writes_a_png_centred_on_the_tumour(tmp_path):
    image = np.random.default_rng(0).uniform(0, 100, (40, 48, 32)).astype(np.float32)
    seg = np.zeros((40, 48, 32), np.uint8)
    seg[10:14, 30:36, 20:24] = 2
    seg[11:13, 32:34, 21:23] = 4
    img, sg = _write(tmp_path / "flair.nii.gz", image), _write(tmp_path / "seg.nii.gz", seg)
    out = tmp_path / "p.png"
    assert cli.main(["--quiet", "preview", str(img), str(sg), "-o", str(out), "--truth", str(sg)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tumour_centre(seg) == (12, 32, 22)  # centre of mass 11.5, 32.5, 21.5, rounded half to even
    assert cli.main(["--quiet", "preview", str(img), str(sg), "-o", str(out)]) == exit_codes.EXIT_OUTPUT  # kept
    assert cli.main(["--quiet", "preview", str(img), str(sg), "-o", str(out), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_preview_refuses_mismatched_shapes_and_missing_files(tmp_path, capsys):
    img = _write(tmp_path / "flair.nii.gz", np.ones((8, 8, 8), np.float32))
    sg = _write(tmp_path / "seg.nii.gz", np.zeros((8, 8, 9), np.uint8))
    out = tmp_path / "p.png"
    assert cli.main(["preview", str(img), str(sg), "-o", str(out)]) == exit_codes.EXIT_INPUT
    assert "seg.nii.gz" in capsys.readouterr().err
    assert cli.main(["preview", str(tmp_path / "nope.nii.gz"), str(sg), "-o", str(out)]) == exit_codes.EXIT_INPUT
    assert not out.exists()
