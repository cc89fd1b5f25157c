"""The whole ladder of brats_client.pipeline (prepare -> infer -> finish, and segment_case) on a LocalTransport:
what it needs of a transport is the Transport protocol only, not TritonTransport's internals."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import pipeline, postprocess, server_flips
from brats_client.errors import ServerError
from brats_client.local import LocalTransport
from brats_client.modalities import CHANNELS, CaseFiles

SHAPE = (44, 52, 38)
AFFINE = np.array([[-1.0, 0.0, 0.0, 30.0], [0.0, -1.0, 0.0, 40.0], [0.0, 0.0, 1.0, -10.0], [0.0, 0.0, 0.0, 1.0]])


def _brain_case(folder: Path) -> CaseFiles:
    """An ellipsoid 'brain' on a zero background (as BraTS gives it), a bright blob in each modality: nested
    spheres, largest in the first channel (whole tumour), smallest in the third (enhancing)."""
    folder.mkdir(parents=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    rng = np.random.default_rng(3)
    paths = {}
    for i, channel in enumerate(CHANNELS):
        blob = ((grid - np.array([0.2, -0.1, 0.1])[:, None, None, None]) ** 2).sum(0) < 0.03 * (4 - i)
        data = np.where(brain, 100.0 + 10 * rng.random(SHAPE) + 200.0 * blob, 0.0).astype(np.float32)
        paths[channel] = folder / f"case_{channel}.nii.gz"
        nib.Nifti1Image(data, AFFINE).to_filename(str(paths[channel]))
    return CaseFiles("case", paths, "brats2019")


def _above_mean(batch: np.ndarray) -> np.ndarray:
    """A pointwise stand-in for the network (commutes with flips): region c where channel c is above its mean."""
    return (batch[:, :3] > 0).astype(np.float32)


@pytest.mark.parametrize("tta", ["none", "flip4"])
def test_segment_case_runs_on_a_local_transport(tmp_path, tta):
    files = _brain_case(tmp_path / "in")
    outputs = pipeline.CaseOutputs(tmp_path / "seg.nii.gz", report=tmp_path / "report.json")
    options = pipeline.SegmentOptions(tta=tta, tile=None)
    with LocalTransport(_above_mean, "above_mean") as transport:
        transport = server_flips.open_for(transport, tta, options.server_flips)  # no companion: itself
        report = pipeline.segment_case(files, outputs, transport, options)

    assert report["server"] == {"url": "in-process", "shared_memory": False, "concurrency": 1, "model": "above_mean",
                                "version": "1", "platform": "in-process", "server_flips": None}
    assert report["server_compute_s"] is None and report["labels"]["convention"] == "brats2019"
    written = nib.load(outputs.segmentation)
    np.testing.assert_array_equal(written.affine, AFFINE)
    labels = np.asarray(written.dataobj)
    assert labels.shape == SHAPE and set(np.unique(labels)) == {0, 1, 2, 4}

    # the same stages by hand on the same prepared volume
    prepared = pipeline.prepare_case(files, options)
    probabilities = _above_mean(prepared.volume[None])[0]
    crop = postprocess.unpad(probabilities, prepared.record)
    crop = postprocess.labels_from_probabilities(crop, convention="brats2019")
    np.testing.assert_array_equal(labels, postprocess.paste(crop, prepared.record))


def test_a_local_transport_has_no_companion():
    transport = LocalTransport(_above_mean, "above_mean")
    with pytest.raises(ServerError, match="one model"):
        transport.open_model("above_mean_flip4")
