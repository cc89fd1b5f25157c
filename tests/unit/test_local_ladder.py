"""The whole ladder of brats_client.pipeline (prepare -> infer -> finish, and segment_case) on a LocalTransport:
what it needs of a transport is the Transport protocol only, not TritonTransport's internals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from brats_client import pipeline, postprocess, server_flips
from brats_client.errors import ServerError
from brats_client.local import LocalTransport


@pytest.mark.parametrize("tta", ["none", "flip4"])
def test_segment_case_runs_on_a_local_transport(tmp_path, tta, brain_case, above_mean):
    files = brain_case
    outputs = pipeline.CaseOutputs(tmp_path / "seg.nii.gz", report=tmp_path / "report.json")
    options = pipeline.SegmentOptions(tta=tta, tile=None)
    with LocalTransport(above_mean, "above_mean") as transport:
        transport = server_flips.open_for(transport, tta, options.server_flips)  # no companion: itself
        report = pipeline.segment_case(files, outputs, transport, options)

    assert report["server"] == {"url": "in-process", "shared_memory": False, "concurrency": 1, "model": "above_mean",
                                "version": "1", "platform": "in-process", "server_flips": None,
                                "precision": "not stated by the model's config (an older export?)"}
    assert report["server_compute_s"] is None and report["labels"]["convention"] == "brats2019"
    written = nib.load(outputs.segmentation)
    np.testing.assert_array_equal(written.affine, nib.load(files.paths["t1"]).affine)
    labels = np.asarray(written.dataobj)
    assert labels.shape == nib.load(files.paths["t1"]).shape and set(np.unique(labels)) == {0, 1, 2, 4}

    # the same stages by hand on the same prepared volume
    prepared = pipeline.prepare_case(files, options)
    probabilities = above_mean(prepared.volume[None])[0]
    crop = postprocess.unpad(probabilities, prepared.record)
    crop = postprocess.labels_from_probabilities(crop, convention="brats2019")
    np.testing.assert_array_equal(labels, postprocess.paste(crop, prepared.record))


def test_a_local_transport_has_no_companion(above_mean):
    transport = LocalTransport(above_mean, "above_mean")
    with pytest.raises(ServerError, match="one model"):
        transport.open_model("above_mean_flip4")
