"""The unit suite's guard (tests/unit/conftest.py) does refuse a process, so 'unit' keeps meaning in-process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_a_subprocess_fails_the_unit_test():
    with pytest.raises(AssertionError, match="tests/cli"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_os_system_fails_the_unit_test():
    with pytest.raises(AssertionError, match="tests/cli"):
        os.system("true")
