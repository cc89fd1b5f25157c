"""The network's state dict against the spec's table (written out here from the spec's rules, not from model.py)."""

from __future__ import annotations

import pytest
import torch
from brats_export.model import build_model

# From the spec: channels per level, encoder blocks of levels 1..3 (encoder_convs.0..2), four decoder stages.
SPEC_CHANNELS = (16, 32, 64, 128)
SPEC_ENCODER_BLOCKS = (2, 2, 4)
SPEC_DECODER_STAGES = 4
UNUSED_PREFIXES = ("decoder_convs.3.", "decoder_convs1x1.3.")  # stored, never used in forward


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _residual(prefix: str, c: int, cin: int | None = None) -> dict[str, tuple[int, ...]]:
    """conv3 (no bias) -> GN -> conv3 (no bias) -> GN, with a 2x2x2 stride-2 downsample when the level changes."""
    rows: dict[str, tuple[int, ...]] = {}
    if cin is not None:
        rows[f"{prefix}.downsample.0.weight"] = (c, cin, 2, 2, 2)
    for i in (1, 2):
        rows[f"{prefix}.conv{i}.conv1.weight"] = (c, c, 3, 3, 3)
        rows[f"{prefix}.norm{i}.weight"] = (c,)
        rows[f"{prefix}.norm{i}.bias"] = (c,)
    return rows


def spec_table() -> dict[str, tuple[int, ...]]:
    c = SPEC_CHANNELS
    table: dict[str, tuple[int, ...]] = {
        "conv_input.weight": (16, 4, 3, 3, 3),
        "norm_input.weight": (16,),
        "norm_input.bias": (16,),
    }
    table.update(_residual("conv_first.0", c[0]))
    for level, blocks in enumerate(SPEC_ENCODER_BLOCKS):
        for block in range(blocks):
            table.update(_residual(f"encoder_convs.{level}.{block}", c[level + 1], c[level] if block == 0 else None))
    for i in range(len(c) - 1):
        table[f"upsampling.{i}.1.weight"] = (c[i], c[i + 1], 1, 1, 1)
    for i in range(SPEC_DECODER_STAGES):
        table.update(_residual(f"decoder_convs.{i}.0", c[i]))
        table[f"decoder_convs1x1.{i}.weight"] = (c[i], 2 * c[i], 1, 1, 1)
    table["conv_output.weight"] = (3, 16, 3, 3, 3)
    table["conv_output.bias"] = (3,)
    return table


def test_spec_table_has_93_entries():
    assert len(spec_table()) == 93


def test_state_dict_names_and_shapes_match_the_spec():
    got = {k: tuple(v.shape) for k, v in build_model().state_dict().items()}
    expected = spec_table()
    assert sorted(set(expected) - set(got)) == []  # missing
    assert sorted(set(got) - set(expected)) == []  # unexpected
    assert {k: v for k, v in got.items() if expected[k] != v} == {}  # mis-shaped
    assert len(got) == 93


def test_parameter_counts():
    state = build_model().state_dict()
    total = sum(v.numel() for v in state.values())
    used = sum(v.numel() for k, v in state.items() if not k.startswith(UNUSED_PREFIXES))
    assert round(total / 1e6, 2) == 5.43
    assert round(used / 1e6, 2) == 4.51


def test_forward_shape_and_range():
    torch.manual_seed(0)
    model = build_model()
    with torch.no_grad():
        y = model(torch.randn(1, 4, 32, 32, 32))
    assert y.shape == (1, 3, 32, 32, 32)
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_unused_level3_decoder_does_not_change_the_output():
    torch.manual_seed(0)
    model = build_model()
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        before = model(x)
        for name, p in model.named_parameters():
            if name.startswith(UNUSED_PREFIXES):
                p.add_(1.0)
        after = model(x)
    assert torch.equal(before, after)
