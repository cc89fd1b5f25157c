"""The eager reference pipeline (brats_export.reference) against the client's numpy stages, on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brats_client import pipeline, postprocess, preprocess
from brats_client.local import LocalTransport
from brats_export.model import build_model
from brats_export.reference import reference_segment
from scipy import ndimage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _volume(shape=(21, 26, 13), seed=0) -> np.ndarray:
    """A head-like ellipsoid of noise in four channels with a bright off-centre blob (the "tumour")."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    head = (grid**2).sum(0) < 0.8
    blob = ((grid - np.array([0.3, -0.2, 0.1])[:, None, None, None]) ** 2).sum(0) < 0.15
    v = rng.uniform(20, 60, size=(4, *shape)).astype(np.float32) * head
    v[:, blob] += np.array([10, 120, 40, 150], np.float32)[:, None]
    return v


def _model(kernel: int) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 3, kernel, padding=kernel // 2)
    with torch.no_grad():
        conv.weight.normal_(0, 0.6)
        conv.bias.copy_(torch.tensor([0.5, -0.5, -1.0]))
    return torch.nn.Sequential(conv, torch.nn.Sigmoid()).eval()


def _client_segment(volume, model, *, keep_last_slice=False, tta="flip4", tile=None, overlap=0.0, blend="constant"):
    """The client's own stages (preprocess, ``pipeline.predict`` with its tiles and flips, labels) with the model
    in this process behind a LocalTransport instead of Triton."""
    x, record = preprocess.preprocess(volume, keep_last_slice=keep_last_slice)

    def predictor(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    options = pipeline.SegmentOptions(tile=tile, overlap=overlap, blend=blend, tta=tta)
    prob = pipeline.predict(x, LocalTransport(predictor), options, pad_value=record.pad_value).probabilities
    crop = postprocess.unpad(prob, record)
    labels = postprocess.paste(postprocess.labels_from_probabilities(crop), record)
    return labels, crop, record


@pytest.mark.parametrize("keep_last_slice", [True, False])
@pytest.mark.parametrize("tta", ["none", "flip4", "flip8"])
def test_reference_and_client_agree_whole_volume(keep_last_slice: bool, tta: str) -> None:
    volume, model = _volume(), _model(3)
    ref_labels, ref_prob = reference_segment(volume, model, keep_last_slice=keep_last_slice, tta=tta)
    labels, prob, record = _client_segment(volume, model, keep_last_slice=keep_last_slice, tta=tta)
    assert ref_prob.shape == prob.shape == (3, *record.crop_shape)
    np.testing.assert_allclose(prob, ref_prob, rtol=1e-5, atol=1e-6)
    assert ref_labels.dtype == labels.dtype == np.uint8
    assert labels.shape == volume.shape[1:]
    assert (labels != ref_labels).sum() == 0
    assert set(np.unique(labels)) == {0, 1, 2, 4}


def _seed_steps(volume: np.ndarray, model: torch.nn.Module) -> np.ndarray:
    """The seed's test.py, step by step as its code does them (per-modality boxes, sums over all voxels divided by
    the count of voxels > 0, flips of the first two spatial axes, ``reject_small_regions`` counting the largest
    label as background), without the reference's guards."""
    boxes = []
    for channel in volume:
        idx = [np.flatnonzero(np.any(channel, axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
        boxes.append([[i[0] for i in idx], [i[-1] for i in idx]])
    boxes = np.array(boxes)
    lo, hi = boxes[:, 0].min(axis=0), boxes[:, 1].max(axis=0)
    crop = volume[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    diff = np.array([-(-s // 16) * 16 for s in crop.shape[1:]]) - np.array(crop.shape[1:])
    left, right = diff // 2, diff - diff // 2
    data = np.pad(crop, ((0, 0), *zip(left, right, strict=True)), mode="constant", constant_values=0)
    n = np.sum(data > 0, axis=(1, 2, 3))
    mean = np.sum(data / n[:, None, None, None], axis=(1, 2, 3))
    mean2 = np.sum(np.square(data) / n[:, None, None, None], axis=(1, 2, 3))
    data = (data - mean[:, None, None, None]) / np.sqrt(mean2 - mean * mean)[:, None, None, None]
    outputs = []
    for flip in ((), (1,), (2,), (1, 2)):
        x = torch.from_numpy(np.flip(data, flip).copy()[None]).float()
        with torch.no_grad():
            outputs.append(np.flip(model(x).numpy()[0], flip))
    out = (sum(outputs) / 4)[:, left[0]:-right[0] or None, left[1]:-right[1] or None, left[2]:-right[2] or None] > 0.5
    seg = np.zeros(out.shape[1:], np.uint8)
    seg[out[0]] = 2
    seg[out[1]] = 1
    if out[2].sum() > 32:
        seg[out[2]] = 4
    components, _ = ndimage.label(seg > 0, structure=np.ones((3, 3, 3)))
    unique, counts = np.unique(components, return_counts=True)
    nonzero = components.size - counts.max()
    for u, c in zip(unique, counts, strict=True):
        if c < 0.1 * nonzero:
            seg[components == u] = 0
    labels = np.zeros(volume.shape[1:], np.uint8)
    labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = seg
    return labels


@pytest.mark.parametrize("negative", [False, True])
def test_reference_is_the_seeds_test_py(negative: bool) -> None:
    """Default options reproduce the seed's steps exactly, also with negative intensities (float data after bias
    correction), where the seed's z-score is not the mean over voxels > 0."""
    volume, model = _volume((30, 34, 21)), _model(3)
    if negative:
        volume[:, 8:14, 9:15, 5:9] = -35.0
    expected = _seed_steps(volume, model)
    labels, _ = reference_segment(volume, model)
    assert set(np.unique(expected)) >= {0, 1, 2}
    np.testing.assert_array_equal(labels, expected)
    client_labels, _, _ = _client_segment(volume, model)
    np.testing.assert_array_equal(client_labels, expected)


def test_seed_crop_drops_the_last_nonzero_slice() -> None:
    volume = _volume()
    nz = np.argwhere(np.any(volume != 0, axis=0))
    extent = nz.max(0) - nz.min(0)
    _, seed_prob = reference_segment(volume, _model(1), keep_last_slice=False, tta="none")
    _, kept_prob = reference_segment(volume, _model(1), keep_last_slice=True, tta="none")
    assert seed_prob.shape[1:] == tuple(extent)
    assert kept_prob.shape[1:] == tuple(extent + 1)


def test_tiled_pointwise_model_equals_whole_volume() -> None:
    """A 1x1x1 model has no context: tiles, overlaps and blends must reassemble to the whole-volume answer."""
    volume, model = _volume((40, 35, 20)), _model(1)
    ref_labels, ref_prob = reference_segment(volume, model)
    for overlap, blend in ((0.0, "constant"), (0.5, "gaussian")):
        labels, prob, _ = _client_segment(volume, model, tile=16, overlap=overlap, blend=blend)
        np.testing.assert_allclose(prob, ref_prob, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(labels, ref_labels)


def test_seed_network_whole_volume_agrees() -> None:
    torch.manual_seed(0)
    model = build_model()
    volume = _volume((14, 17, 12))
    ref_labels, ref_prob = reference_segment(volume, model, tta="flip4")
    labels, prob, _ = _client_segment(volume, model, tta="flip4")
    assert prob.shape == ref_prob.shape
    np.testing.assert_allclose(prob, ref_prob, rtol=1e-4, atol=1e-5)


def test_reference_rejects_bad_options_and_empty_volume() -> None:
    with pytest.raises(ValueError, match="all-zero"):
        reference_segment(np.zeros((4, 8, 8, 8), np.float32), _model(1))
    with pytest.raises(ValueError, match="tta must be one of"):
        reference_segment(_volume(), _model(1), tta="flip2")
    labels, _ = reference_segment(_volume(), _model(1), convention="brats2023")
    assert 4 not in labels and 3 in labels
