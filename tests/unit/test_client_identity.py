"""Which client code a served pipeline carries (brats_client.identity): the hash of the package, and the warning
brats-client gives when the server's copy differs from its own, naming both versions."""

from __future__ import annotations

import shutil

from brats_client import identity


def test_the_hash_is_of_the_code_not_of_where_it_lies_or_its_caches(tmp_path):
    copy = tmp_path / "elsewhere" / "brats_client"
    shutil.copytree(identity.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    assert identity.package_sha256(copy) == identity.package_sha256()
    (copy / "preprocess.py").write_text((copy / "preprocess.py").read_text() + "\n# changed\n")
    assert identity.package_sha256(copy) != identity.package_sha256()


def test_a_pipeline_of_another_version_is_named_with_both_versions():
    ours = ("0.2.0", "b" * 64)
    same = {identity.VERSION_KEY: "0.2.0", identity.CLIENT_SHA256_KEY: "b" * 64}
    assert identity.mismatch(same, "brats_segment", ours) is None
    older = {identity.VERSION_KEY: "0.1.0", identity.CLIENT_SHA256_KEY: "a" * 64}
    warning = identity.mismatch(older, "brats_segment", ours)
    assert "'brats_segment' runs brats-triton 0.1.0 (client code aaaaaaaaaaaa)" in warning
    assert "this client is brats-triton 0.2.0 (client code bbbbbbbbbbbb)" in warning and "re-export" in warning
    unrecorded = identity.mismatch({}, "brats_segment", ours)
    assert "does not say which client code it runs" in unrecorded and "0.2.0" in unrecorded


def test_a_named_checkpoint_is_its_sha256_or_a_prefix_of_12_or_more():
    import pytest
    from brats_client.errors import UsageError

    assert identity.checked_sha256(" ABCDEF012345 ") == "abcdef012345"
    for bad in ("abc", "xyz" * 10, "a" * 65):
        with pytest.raises(UsageError, match="--checkpoint-sha256 must be the checkpoint's sha256"):
            identity.checked_sha256(bad)


def test_a_network_from_another_checkpoint_is_named_with_both_hashes():
    recorded = {identity.CHECKPOINT_SHA256_KEY: "1234567890ab" + "c" * 52}
    assert identity.checkpoint_mismatch(recorded, "brats_onnx", "1234567890ab") is None
    warning = identity.checkpoint_mismatch(recorded, "brats_onnx", "f" * 64)
    assert "'brats_onnx' was exported from the checkpoint with sha256 1234567890ab..." in warning
    assert "not the one named (ffffffffffff...)" in warning
    assert "does not record the checkpoint" in identity.checkpoint_mismatch({}, "brats_onnx", "f" * 64)
