"""Atomic file writes and file checksums, for every package of the project (standard library only).

:func:`atomic_path` yields a hidden temporary path beside the target, in the same folder (so the final rename
stays on one file system) and ending in the target's suffix (so nibabel, matplotlib or PIL pick the format from
the name). When the block ends without an exception the file is fsync'd and renamed onto the target; on any
exception it is removed. A reader never sees half a file, and a crash leaves at most a hidden ``.<name>.*.tmp*``
file, never a truncated target.

Errors are the operating system's own (:class:`OSError`); a target that exists without ``overwrite`` is a
:class:`TargetExistsError`. Callers that report their own errors wrap these (``brats_client.io`` raises
:class:`~brats_client.errors.OutputError`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TargetExistsError", "atomic_path", "sha256_file", "write_bytes_atomic", "write_text_atomic"]

# os.link fails with one of these where the file system has no hard links (FAT, some FUSE and network mounts)
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


class TargetExistsError(FileExistsError):
    """The target exists and ``overwrite`` is off; nothing was replaced."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EEXIST, "the target exists", str(path))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (some file systems cannot open or sync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move ``tmp`` onto ``path``. Without ``overwrite`` the move is a hard link, which fails if ``path`` appeared
    meanwhile (no race between a check and the rename); without hard links on the file system: check, then
    rename."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError as e:
        raise TargetExistsError(path) from e
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        if path.exists():
            raise TargetExistsError(path) from e
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (hidden, ending in ``suffix``: by default ``path``'s last suffix);
    write the file there. On success it is fsync'd and renamed onto ``path``; on any exception it is removed.

    Missing parent folders are created. The temporary file is created empty first (mode 0o666 less the umask,
    like any new file) so that its name is reserved. Without ``overwrite`` an existing ``path`` raises
    :class:`TargetExistsError`, before the block runs and again at the rename if it appeared meanwhile.
    """
    path = Path(path)
    if suffix is None:
        suffix = path.suffix
    if not overwrite and path.exists():
        raise TargetExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # reserve the name, honour umask
    try:
        yield tmp
        _fsync_file(tmp)
        _publish(tmp, path, overwrite)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(text: str, path: str | os.PathLike[str], *, overwrite: bool = True,
                      encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); no newline translation."""
    return write_bytes_atomic(text.encode(encoding), path, overwrite=overwrite)


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
