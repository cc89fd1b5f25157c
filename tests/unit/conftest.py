"""Shared fixtures of the unit tests: pure logic, in this process (processes and commands: tests/cli; a real
Triton server: tests/integration)."""

from __future__ import annotations

import sys

import numpy as np
import numpy.testing  # noqa: F401  (its first import runs lscpu: done here, before the guard is on)
import pytest

_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec"}
_guard = {"on": False}


def _refuse_processes(event: str, args: tuple) -> None:
    if _guard["on"] and event in _PROCESS_EVENTS:
        raise AssertionError(f"a unit test started a process ({event} {args[:1]}): it belongs in tests/cli")


sys.addaudithook(_refuse_processes)  # audit hooks stay for the interpreter's life: the flag scopes it


@pytest.fixture(autouse=True)
def no_processes():
    """Unit tests start no process: every way Python starts one (its audit events) fails the test."""
    _guard["on"] = True
    yield
    _guard["on"] = False


@pytest.fixture
def one_torch_thread():
    """Two shared cores: torch's thread pool spinning beside other processes is slower than one thread."""
    import torch  # here, not at the top: the client's unit tests run without torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BRAIN_SHAPE = (44, 52, 38)
BRAIN_AFFINE = np.array([[-1.0, 0, 0, 30.0], [0, -1.0, 0, 40.0], [0, 0, 1.0, -10.0], [0, 0, 0, 1.0]])


@pytest.fixture
def brain_case(tmp_path):
    """A small case as BraTS gives them: an ellipsoid 'brain' on a zero background, a bright blob in each
    modality (nested spheres, largest in the first channel, the whole tumour's; smallest in the third)."""
    import nibabel as nib
    from brats_client.modalities import CHANNELS, CaseFiles

    folder = tmp_path / "brain_case"
    folder.mkdir()
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in BRAIN_SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    rng = np.random.default_rng(3)
    paths = {}
    for i, channel in enumerate(CHANNELS):
        blob = ((grid - np.array([0.2, -0.1, 0.1])[:, None, None, None]) ** 2).sum(0) < 0.03 * (4 - i)
        data = np.where(brain, 100.0 + 10 * rng.random(BRAIN_SHAPE) + 200.0 * blob, 0.0).astype(np.float32)
        paths[channel] = folder / f"case_{channel}.nii.gz"
        nib.Nifti1Image(data, BRAIN_AFFINE).to_filename(str(paths[channel]))
    return CaseFiles("case", paths, "brats2019")


@pytest.fixture
def above_mean():
    """A pointwise stand-in for the network (commutes with flips): region c where channel c is above its mean."""
    return lambda batch: (batch[:, :3] > 0).astype(np.float32)
