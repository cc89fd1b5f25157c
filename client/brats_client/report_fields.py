"""What each field of a case's JSON report means (``brats-client segment --report``, a batch's ``<case>.json``, the
served pipeline's ``report`` output): one table, shown by ``brats-client segment --help`` and kept in step with the
report that :func:`brats_client.pipeline.finish_case` writes (tests/unit/test_report_fields.py) and with the
README's section on it."""

from __future__ import annotations

import textwrap

from .contract import CHANNELS, REGIONS

FIELDS: dict[str, str] = {
    "case": "the case id (the output's file name in a batch)",
    "inputs": "the file of each input channel; for a 4-D (MSD) file FILE[..., i]: channel i of its 4th axis",
    "input_sha256": "sha256 of each input file",
    "naming": "how the files were found: brats2019, brats2023, nnunet, msd or explicit",
    "shape": "the input's voxel grid",
    "voxel_volume_mm3": "one voxel's volume (from the header)",
    "preprocess": (
        "what the seed's preprocessing did, undone after inference: crop_start and crop_stop per axis (the bounding "
        "box [start, stop) of nonzero voxels), crop_shape, pad_before and pad_after (zeros up to multiples of 16), "
        f"padded_shape, and per input channel, in the order of its channels ({', '.join(CHANNELS)}), the z-score's "
        "mean and std (sums over the padded crop divided by the number of voxels > 0, the seed's formula)"
    ),
    "options": "the segment options used (tile, overlap, tta, labels, ...)",
    "labels": "the output's label convention and why it was chosen",
    "warnings": "input problems accepted with --allow-unprepared-input",
    "server": (
        "where it ran: url, model (the flip companion when the server flips), version, platform, shared_memory, "
        "concurrency, server_flips (the flips the model applied itself, or null), precision (what the model "
        "computes in, as its config's brats_precision says: f32, bf16, int8 convolutions)"
    ),
    "tiles": "the tiles the padded crop was cut into (1: the whole crop in one)",
    "requests": "inference requests sent: one per tile when the server flips, else tiles x flips / flips per request",
    "voxels_computed": (
        "voxels the network computed: tile voxels x tiles x test-time passes (flip4: 4, flip8: 8, none: 1), the "
        "passes counted whether the client flips or the server (a _flip4 companion)"
    ),
    "crop_voxels": "voxels of the crop before padding",
    "tiling_waste": (
        "voxels_computed / passes / crop_voxels: network voxels per crop voxel and pass; 1.0 would compute the "
        "crop exactly, the padding to multiples of 16 and overlapping tiles make it more (about 1.1 for a whole "
        "BraTS crop)"
    ),
    "region_volumes_ml": f"volume of each region in mL ({', '.join(REGIONS)}: the network's output channels)",
    "server_compute_s": "the server's compute time for this case (Triton's statistics; null when it gives none)",
    "outputs": "the files written",
    "time_s": "wall seconds per stage (load, preprocess, inference, postprocess, write) and their total",
}


def help_text(width: int = 116) -> str:
    """The table for ``--help``: one indented paragraph per field."""
    lines = ["Report (--report FILE.json; a batch writes <case>.json per case), field by field:"]
    for name, text in FIELDS.items():
        lines.extend(textwrap.wrap(f"{name}: {text}", width, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)
