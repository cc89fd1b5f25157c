"""What a model repository offers to serve, checked before Triton starts: its model folders, which of them have
model files, and what to load (:func:`choose_models`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .errors import ServeRepositoryError

log = logging.getLogger(__name__)

DEMO_REPOSITORY = Path("out") / "demo" / "model_repository"  # where `make demo` exports, relative to the checkout


def check_repository(repository: str | os.PathLike, models: Sequence[str] = ()) -> list[str]:
    """Names of the model folders (those with a config) in ``repository``; a ``ServeRepositoryError`` when there is
    none, or when one of ``models`` is not there."""
    repo = Path(repository)
    if not repo.exists():
        raise ServeRepositoryError(
            f"model repository {repo} does not exist; write it with brats-export --repository {repo}"
        )
    if not repo.is_dir():
        raise ServeRepositoryError(
            f"model repository {repo} is not a directory; pass the folder that holds the model folders"
        )
    found = sorted(
        p.name for p in repo.iterdir()
        if p.is_dir() and ((p / "config.pbtxt").is_file() or any((p / "configs").glob("*.pbtxt")))
    )
    if not found:
        raise ServeRepositoryError(
            f"model repository {repo} holds no model (no <model>/config.pbtxt); write it with brats-export"
        )
    missing = [m for m in models if m not in found]
    if missing:
        raise ServeRepositoryError(f"model(s) {missing} not in repository {repo}; it holds {found}")
    return found


def has_model_files(model_dir: str | os.PathLike) -> bool:
    """Whether a version folder (``<model>/1/``, any number) of ``model_dir`` holds anything (hidden names aside).

    Which file a backend wants is Triton's to say (it names a missing ``model.pt`` itself); this tells a model that
    was exported from one that has only its configs, as the committed ``model_repository/`` does.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return False
    return any(
        version.is_dir() and version.name.isdigit() and any(not e.name.startswith(".") for e in version.iterdir())
        for version in model_dir.iterdir()
    )


def models_without_files(repository: str | os.PathLike, models: Sequence[str]) -> list[str]:
    """Those of ``models`` whose folder in ``repository`` has no model files in any version folder."""
    return [name for name in models if not has_model_files(Path(repository) / name)]


def export_hint(repository: str | os.PathLike) -> str:
    """What writes a repository's model files: brats-export, and the folder `make demo` exported to when there is
    one here (relative to the current directory) other than ``repository``."""
    hint = f"run brats-export --checkpoint CKPT --repository {repository}"
    demo = DEMO_REPOSITORY
    with contextlib.suppress(OSError):
        if demo.is_dir() and demo.resolve() != Path(repository).resolve():
            hint += f"; make demo exported one to {demo} (brats-serve --repository {demo})"
    return hint


def missing_files_error(repository: str | os.PathLike, missing: Sequence[str]) -> ServeRepositoryError:
    """The error for models that have a config but no model files."""
    return ServeRepositoryError(
        f"no model files for {', '.join(missing)} in model repository {repository}: "
        f"{'each has' if len(missing) > 1 else 'it has'} a config.pbtxt but nothing in a version folder such as "
        f"{missing[0]}/1/ (the weights are written by brats-export; a fresh clone has configs only). "
        f"To write them, {export_hint(repository)}"
    )


def choose_models(repository: str | os.PathLike, models: Sequence[str] | None) -> tuple[str, ...] | None:
    """What to load from ``repository``: ``models`` (``None``: every model) once checked. A ``ServeRepositoryError``
    for named models without files, or for a repository where no model has any; the models with files, and one
    warning naming the others, when only some have them."""
    found = check_repository(repository, models or ())
    missing = models_without_files(repository, models if models is not None else found)
    if not missing:
        return None if models is None else tuple(models)
    if models is not None or len(missing) == len(found):
        raise missing_files_error(repository, missing)
    served = tuple(name for name in found if name not in missing)
    log.warning(
        "not serving %s: no model files in %s (a config.pbtxt only); serving %s. To serve them too, %s",
        ", ".join(missing), "their version folders" if len(missing) > 1 else "its version folders",
        ", ".join(served), export_hint(repository),
    )
    return served
