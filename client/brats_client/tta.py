"""Test-time augmentation by flips, in one place: which flips (:func:`flips`), flipping an input and its output
back (:func:`apply`, :func:`undo`), and the average (:class:`Mean`).

The client flips tiles itself, or a served ``<model>_flip4`` companion does it in its graph
(``brats_export.server_flips``); both take the flips from :func:`flips` and sum the restored outputs in that
order before dividing, so the two give the same float32 result.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from .errors import UsageError

TTA_CHOICES = ("none", "flip4", "flip8")


def flips(tta: str) -> list[tuple[int, ...]]:
    """Spatial axes (0 = X) to flip for each pass: ``none`` -> identity only; ``flip4`` -> identity, X, Y, X+Y
    (the seed); ``flip8`` -> every subset of X, Y, Z."""
    if tta == "none":
        return [()]
    if tta == "flip4":
        return [(), (0,), (1,), (0, 1)]
    if tta == "flip8":
        return [axes for n in range(4) for axes in combinations(range(3), n)]
    raise UsageError(f"tta must be one of {', '.join(TTA_CHOICES)}; got {tta!r}")


def dims(axes: tuple[int, ...], leading: int) -> tuple[int, ...]:
    """Array dimensions of spatial ``axes`` behind ``leading`` others (1 for ``[C, X, Y, Z]``, 2 for a batch)."""
    return tuple(a + leading for a in axes)


def apply(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``[C, X, Y, Z]`` flipped along spatial ``axes`` (a view; the array itself when there are none)."""
    return np.flip(array, axis=dims(axes, 1)) if axes else array


undo = apply  # a flip is its own inverse


class Mean:
    """The mean of ``count`` restored outputs (numpy arrays or torch tensors), summed in the order of their
    positions in :func:`flips` whatever order they arrive in (an early one waits for those before it). Outputs
    are kept as given, not copied: callers pass outputs they own."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count = count
        self._next = 0  # the position the sum has reached
        self._waiting: dict[int, Any] = {}
        self._total: Any = None

    def add(self, position: int, restored: Any) -> None:
        if not 0 <= position < self.count or position < self._next or position in self._waiting:
            raise ValueError(f"output {position} of {self.count} is out of range or was already added")
        self._waiting[position] = restored
        while self._next in self._waiting:
            part = self._waiting.pop(self._next)
            self._total = part if self._total is None else self._total + part
            self._next += 1

    @property
    def done(self) -> bool:
        return self._next == self.count

    def result(self) -> Any:
        if not self.done:
            raise ValueError(f"{self._next + len(self._waiting)} of {self.count} outputs added")
        return self._total / self.count
