"""SHA-256 of the files an export records (exported models; the checkpoint through :mod:`.checkpoint`)."""

from __future__ import annotations

import os
from pathlib import Path

from brats_client import atomic

from .errors import ExportError


def exported_sha256(path: str | os.PathLike[str], what: str) -> str:
    """Hex SHA-256 of the file's bytes; an :class:`ExportError` naming the file and ``what`` it is (e.g.
    "exported file") when it cannot be read."""
    path = Path(path)
    try:
        return atomic.sha256_file(path)
    except OSError as e:
        raise ExportError(f"{what} {path} cannot be read: {e.strerror or e}") from e
