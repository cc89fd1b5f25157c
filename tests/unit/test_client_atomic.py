"""brats_client.atomic: the one atomic writer and checksum of every package."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from brats_client import atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_writes_through_a_hidden_temporary_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "plot.png"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".plot.png.") and tmp.name.endswith(".png")
        assert tmp.exists() and not target.exists()  # the name is reserved; nothing at the target yet
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(target.parent) == []


def test_suffix_names_the_format(tmp_path: Path) -> None:
    with atomic.atomic_path(tmp_path / "seg.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"x")
    with atomic.atomic_path(tmp_path / "preview.jpg", suffix=".png") as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")


def test_failure_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    for error in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)), atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
        assert target.read_text() == "old"
        assert _leftovers(tmp_path) == []


def test_no_overwrite_refuses_an_existing_target_before_the_block(tmp_path: Path) -> None:
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"precious")
    ran = []
    with pytest.raises(atomic.TargetExistsError), atomic.atomic_path(target, overwrite=False):
        ran.append(True)
    assert ran == [] and target.read_bytes() == b"precious" and _leftovers(tmp_path) == []
    atomic.write_bytes_atomic(b"replaced", target)  # overwrite is the default
    assert target.read_bytes() == b"replaced"


@pytest.mark.parametrize("hard_links", [True, False])
def test_no_overwrite_refuses_a_target_that_appeared_meanwhile(tmp_path, monkeypatch, hard_links) -> None:
    if not hard_links:
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(atomic.os, "link", no_link)
    target = tmp_path / "report.json"
    with pytest.raises(atomic.TargetExistsError), atomic.atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")  # another writer got there first
    assert target.read_text() == "theirs" and _leftovers(tmp_path) == []
    target.unlink()
    with atomic.atomic_path(target, overwrite=False) as tmp:
        tmp.write_text("mine")
    assert target.read_text() == "mine" and _leftovers(tmp_path) == []


def test_a_new_file_honours_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic.write_text_atomic("x", tmp_path / "config.pbtxt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_text_and_bytes(tmp_path: Path) -> None:
    path = atomic.write_text_atomic("é\r\nz\n", tmp_path / "a.txt")
    assert path.read_bytes() == "é\r\nz\n".encode()  # UTF-8, no newline translation
    with pytest.raises(atomic.TargetExistsError):
        atomic.write_text_atomic("other", path, overwrite=False)
    assert atomic.write_bytes_atomic(b"\x00\x01", tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert atomic.sha256_file(path) == atomic.sha256_file(str(path), chunk_bytes=1000) == expected
    with pytest.raises(FileNotFoundError):
        atomic.sha256_file(tmp_path / "missing")
