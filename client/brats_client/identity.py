"""Which client code a served pipeline carries: the brats-triton version and a hash of the ``brats_client``
package, recorded by ``brats-export --pipeline`` in the pipeline model's config (and the repository's manifest),
compared by ``brats-client`` with its own before it sends a case. And which checkpoint a network model was
exported from (its sha256, in each exported network's config), compared with the one a user names.

Standard library only: the pipeline model imports it inside Triton to check the copy it runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .errors import UsageError

CHECKPOINT_SHA256_KEY = "brats_checkpoint_sha256"  # network config parameter: the checkpoint it was exported from
VERSION_KEY = "brats_triton_version"  # config parameter: the brats-triton version that exported the pipeline
CLIENT_SHA256_KEY = "brats_client_sha256"  # config parameter: package_sha256 of the brats_client copy it carries
DISTRIBUTION = "brats-triton"
UNKNOWN = "unknown"
PACKAGE = Path(__file__).resolve().parent


def version() -> str:
    """This installation's brats-triton version (``unknown`` where the package is not installed, e.g. the copy
    inside a model folder)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN


def package_sha256(folder: str | Path = PACKAGE) -> str:
    """sha256 over the package's ``.py`` files (their paths relative to ``folder`` and their bytes, in path
    order): equal for the same code wherever it lies, with or without ``__pycache__``."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def describe(version_: str, sha256: str) -> str:
    return f"brats-triton {version_} (client code {sha256[:12] or UNKNOWN})"


def mismatch(parameters: Mapping[str, str], model: str, ours: tuple[str, str] | None = None) -> str | None:
    """A warning when the pipeline ``model``'s config ``parameters`` name other client code than this one's
    (``ours``: version and hash, default this installation's); None when they agree."""
    our_version, our_sha256 = ours if ours is not None else (version(), package_sha256())
    their_version = parameters.get(VERSION_KEY, "")
    their_sha256 = parameters.get(CLIENT_SHA256_KEY, "")
    if not their_sha256:
        return (f"model {model!r} does not say which client code it runs (exported before brats-triton recorded "
                f"it); this client is {describe(our_version, our_sha256)}: re-export it with `brats-export "
                "--configs-only --pipeline --force` so that both preprocess alike")
    if their_sha256 == our_sha256:
        return None
    return (f"model {model!r} runs {describe(their_version or UNKNOWN, their_sha256)}, this client is "
            f"{describe(our_version, our_sha256)}: the server's preprocessing and labels may differ from this "
            "client's; re-export the pipeline with this version (`brats-export --configs-only --pipeline --force`) "
            "or use a client of the server's version")


MIN_SHA256_PREFIX = 12


def checked_sha256(text: str) -> str:
    """A checkpoint's sha256 as a user gives it: the 64 hex digits or their first 12 or more (lower-cased)."""
    value = text.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{MIN_SHA256_PREFIX},64}}", value):
        raise UsageError(f"--checkpoint-sha256 must be the checkpoint's sha256 (64 hex digits, or the first "
                         f"{MIN_SHA256_PREFIX} or more; `sha256sum CHECKPOINT` prints it), got {text!r}")
    return value


def checkpoint_mismatch(parameters: Mapping[str, str], model: str, expected: str) -> str | None:
    """A warning when the network ``model``'s config ``parameters`` record another checkpoint than ``expected``
    (a :func:`checked_sha256`), or none; None when they agree."""
    recorded = parameters.get(CHECKPOINT_SHA256_KEY, "")
    if not recorded:
        return (f"model {model!r} does not record the checkpoint it was exported from (configs written by "
                f"--configs-only, or an export before brats-triton recorded it), so it cannot be checked against "
                f"{expected[:MIN_SHA256_PREFIX]}...; re-export it with brats-export --checkpoint")
    if recorded.startswith(expected):
        return None
    return (f"model {model!r} was exported from the checkpoint with sha256 {recorded[:MIN_SHA256_PREFIX]}..., not "
            f"the one named ({expected[:MIN_SHA256_PREFIX]}...): its labels are another network's; serve an export "
            "of that checkpoint or name the one it has")
