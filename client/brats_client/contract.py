"""The tensor contract of every served model, in every format, and of everything that talks to one.

Input ``INPUT__0`` FP32 ``[N, 4, D, H, W]`` (channels t1, t1ce, t2, flair, z-scored), output ``OUTPUT__0`` FP32
``[N, 3, D, H, W]`` (sigmoid probabilities of WT, TC, ET). D, H, W are multiples of :data:`SPATIAL_DIVISOR`: the
network halves them three times. Plain Python, no imports: the exporter, the serving stand-ins, the benchmarks
and ``export/brats_export/runtime_check.py`` (run in environments without this package's dependencies) read it.
"""

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
DATATYPE = "FP32"  # Triton's name; TYPE_FP32 in config.pbtxt
CHANNELS = ("t1", "t1ce", "t2", "flair")  # the input channels, in order
REGIONS = ("WT", "TC", "ET")  # the output channels, in order
IN_CHANNELS = len(CHANNELS)
OUT_CHANNELS = len(REGIONS)
SPATIAL_DIVISOR = 8  # three stride-2 downsamplings
PAD_MULTIPLE = 16  # the client pads every axis of the crop to a multiple of this (the seed's padding); tiles too


def output_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``[N, 3, D, H, W]`` for an input ``[N, 4, D, H, W]``."""
    return (input_shape[0], OUT_CHANNELS, *input_shape[2:])


def spatial_problem(spatial: tuple[int, ...]) -> str | None:
    """Why the network cannot take these spatial sizes, or None."""
    if len(spatial) != 3 or any(s <= 0 or s % SPATIAL_DIVISOR for s in spatial):
        return f"spatial sizes must be three positive multiples of {SPATIAL_DIVISOR}, got {list(spatial)}"
    return None
