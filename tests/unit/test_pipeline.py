"""Pure logic of the pipeline: tiles x flips travel as batches and come back in place (fake transport)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from brats_client import pipeline
from brats_client.model_info import ModelInfo


@dataclass
class FakeTransport:
    """Stands in for TritonTransport: a pointwise 'network' plus a term that no flip of its input changes.

    Output channel c = 2 x input channel c (so the right answer is known for any tiling, and a pass not flipped
    back lands mirrored) + ``ramp`` x a ramp from -1 to 1 along the tile's X. The ramp is what a real network's
    own asymmetry looks like: flipped back, a pass flipped along X carries it reversed, i.e. negated. So it
    cancels exactly when X is flipped in half of the passes (flip4, flip8), and stays when it never is: with
    ``tta="none"``, or with a TTA whose passes are not really flipped (the input and output flips both missing
    would pass the pointwise part alone).
    """

    max_batch_size: int = 8
    batches: list = None
    fixed_spatial: tuple | None = None
    ramp: float = 1.0

    def __post_init__(self):
        self.batches = []
        self.info = ModelInfo("fake", "1", "INPUT__0", "OUTPUT__0", self.max_batch_size, "fake", self.fixed_spatial)

    def infer_stream(self, items):
        for key, batch in items:
            self.batches.append(batch.shape)
            yield key, batch[:, :3] * 2.0 + self.ramp * _ramp(batch.shape[2])[None, None, :, None, None]


def _ramp(n: int) -> np.ndarray:
    """-1 .. 1 in ``n`` steps, antisymmetric: ``ramp[::-1] == -ramp``."""
    return np.linspace(-1.0, 1.0, n, dtype=np.float32)


def _volume(shape=(4, 48, 64, 32), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("tta", ["none", "flip4", "flip8"])
@pytest.mark.parametrize("tile,overlap", [(None, 0.0), (32, 0.0), (32, 0.5), (16, 0.25)])
def test_predict_reassembles_pointwise_model(tta, tile, overlap):
    volume = _volume()
    # without flips the tile-local ramp stays, blended across tiles: left out here (see the test below)
    fake = FakeTransport(ramp=0.0 if tta == "none" else 1.0)
    options = pipeline.SegmentOptions(tile=tile, overlap=overlap, tta=tta, blend="gaussian")
    pred = pipeline.predict(volume, fake, options)
    np.testing.assert_allclose(pred.probabilities, volume[:3] * 2.0, rtol=1e-5, atol=1e-5)
    n_flips = {"none": 1, "flip4": 4, "flip8": 8}[tta]
    assert all(shape[0] == 1 for shape in fake.batches)  # by default one flip per request
    assert pred.requests == pred.tiles * n_flips == len(fake.batches)


def test_the_ramp_stays_without_flips():
    """The fake's ramp is live: nothing cancels it without TTA, so its cancellation above means X was flipped."""
    volume = _volume()
    pred = pipeline.predict(volume, FakeTransport(), pipeline.SegmentOptions(tile=None, tta="none"))
    expected = volume[:3] * 2.0 + _ramp(volume.shape[1])[None, :, None, None]
    np.testing.assert_allclose(pred.probabilities, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_request,sizes", [(1, [1] * 8), (2, [2] * 4), (3, [3, 3, 2]), (8, [8]), (16, [8])])
def test_flips_per_request_batches_a_tiles_flips(per_request, sizes):
    volume = _volume()
    fake = FakeTransport()
    options = pipeline.SegmentOptions(tile=None, tta="flip8", flips_per_request=per_request)
    pred = pipeline.predict(volume, fake, options)
    assert [s[0] for s in fake.batches] == sizes
    np.testing.assert_allclose(pred.probabilities, volume[:3] * 2.0, rtol=1e-5, atol=1e-5)


def test_flips_are_split_when_the_model_takes_smaller_batches():
    volume = _volume()
    fake = FakeTransport(max_batch_size=3)
    pred = pipeline.predict(volume, fake, pipeline.SegmentOptions(tile=None, tta="flip8", flips_per_request=8))
    assert [s[0] for s in fake.batches] == [3, 3, 2]
    np.testing.assert_allclose(pred.probabilities, volume[:3] * 2.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,fixed", [
    ((4, 48, 64, 32), (32, 32, 32)),
    ((4, 16, 64, 32), (32, 32, 32)),  # the volume is thinner than the model's tile: padded past the border
    ((4, 48, 64, 32), (40, 24, 16)),  # non-cubic, multiples of 8
])
def test_static_shape_model_gets_tiles_of_exactly_its_shape(shape, fixed):
    volume = _volume(shape)
    fake = FakeTransport(fixed_spatial=fixed)
    options = pipeline.SegmentOptions(tile=192, overlap=0.25, tta="flip4")  # --tile is ignored for such a model
    pred = pipeline.predict(volume, fake, options, pad_value=np.zeros(4, np.float32))
    assert {s[2:] for s in fake.batches} == {fixed}
    np.testing.assert_allclose(pred.probabilities, volume[:3] * 2.0, rtol=1e-5, atol=1e-5)


def test_flipped_model_output_is_flipped_back():
    """A model that is not flip-equivariant: the average must equal the mean of unflipped outputs."""
    volume = _volume((4, 32, 32, 32))

    class Asymmetric(FakeTransport):
        def infer_stream(self, items):
            for key, batch in items:
                ramp = np.linspace(0, 1, batch.shape[2], dtype=np.float32)[None, None, :, None, None]
                yield key, batch[:, :3] + ramp

    pred = pipeline.predict(volume, Asymmetric(), pipeline.SegmentOptions(tile=None, tta="flip4"))
    ramp = np.linspace(0, 1, 32, dtype=np.float32)[None, :, None, None]
    # flips along X (axis 0) turn the ramp around for half of the passes
    expected = volume[:3] + (ramp + ramp[:, ::-1]) / 2
    np.testing.assert_allclose(pred.probabilities, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"tile": 20}, {"overlap": 1.0}, {"tta": "flip3"}, {"labels": "brats2020"}, {"blend": "max"},
               {"flips_per_request": 0}]
)
def test_options_reject_bad_values_naming_them(kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        pipeline.SegmentOptions(**kwargs)
