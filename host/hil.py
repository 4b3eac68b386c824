"""`host test --port P | --virtual`: the hardware-in-the-loop acceptance suite for one unit.

It runs pytest on tests/hil/ (no network: the unit is on a serial port or a local virtual unit)
and reports each check by name. Exit status: 0 when every check passed, 1 when any failed.

With --virtual a virtual unit is started in a temporary folder, flashed and deployed with this
release (host flash's own code path, real esptool and mpremote), calibrated against a blackbody
scene (host calibrate's code path), then tested. --virtual-defect prepares it with one defect,
which the suite must catch: broken-sensor, wrong-serial (calibration for another sensor),
modified-file (a firmware file changed after deployment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from host import PROJECT_ROOT
from host.errors import HostError

HIL_DIR = PROJECT_ROOT / "tests" / "hil"
DEFECTS = ("broken-sensor", "wrong-serial", "modified-file")


@dataclass
class CheckResult:
    name: str
    outcome: str  # passed | failed | error | skipped
    message: str


def check_title(test_name: str) -> str:
    """test_frame_rate_matches_configured_refresh -> frame rate matches configured refresh"""
    return test_name.removeprefix("test_").replace("_", " ")


def parse_junit(path: Path) -> list[CheckResult]:
    results: list[CheckResult] = []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "").strip()
                break
        first = message.splitlines()[0] if message else ""
        results.append(CheckResult(check_title(case.get("name", "?")), outcome, first))
    return results


def run_suite(port: str, virtual: bool, select: str | None = None) -> tuple[list[CheckResult], str]:
    """pytest on tests/hil in a child process (its own interpreter state, like a CI job)."""
    if not HIL_DIR.is_dir():
        raise HostError(f"the acceptance suite is missing ({HIL_DIR}): reinstall the host package with its tests/")
    with tempfile.TemporaryDirectory(prefix="host-test-") as tmp:
        junit = Path(tmp) / "report.xml"
        env = dict(os.environ)
        env["THERMOGATE_HIL_PORT"] = port
        env["THERMOGATE_HIL_VIRTUAL"] = "1" if virtual else "0"
        cmd = [sys.executable, "-m", "pytest", str(HIL_DIR), "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", "junit_family=xunit1", "--rootdir", str(PROJECT_ROOT)]
        if select:
            cmd += ["-k", select]
        proc = subprocess.run(cmd, cwd=str(PROJECT_ROOT), env=env, capture_output=True, text=True,
                              stdin=None if not virtual else subprocess.DEVNULL)
        if not junit.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise HostError("the acceptance suite did not run: " + (" / ".join(tail) or "no output")
                            + "; check the installation (pytest) and retry")
        return parse_junit(junit), proc.stdout + proc.stderr


def print_report(results: list[CheckResult], port: str) -> bool:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"host test on {port}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    colours = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
    for r in results:
        table.add_row(r.name, f"[{colours[r.outcome]}]{r.outcome.upper()}[/]", r.message)
    Console().print(table)
    failed = [r for r in results if r.outcome in ("failed", "error")]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} checks failed: " + ", ".join(r.name for r in failed), err=True)
    return not failed


# The scene a virtual unit looks at while it is calibrated and tested: the control file
# <unit root>/scene.json documented in docs/virtual-units.md,
#   {"scene": <a `host sim` scenario document>, "fault": null | one of the SensorEmulator faults},
# which a running virtual unit re-reads when it changes (it looks every 0.1 s).
SCENE_APPLY_S = 0.3  # wait after writing scene.json before relying on it
VIRTUAL_SENSOR = {"unit_offset_c": 1.2, "unit_gain": 1.03, "pixel_offset_sigma_c": 0.3, "netd_scale": 1.0,
                  "ambient_c": 25.0, "refresh_hz": 8}


def write_scene(root: Path, blackbody: dict | None, fault: str | None = None) -> None:
    """Atomically replace the virtual unit's scene control file."""
    scene = {"scene": {"name": "host-test", "seed": 7, "sensor": VIRTUAL_SENSOR, "blackbody": blackbody,
                       "subjects": [], "distractors": []},
             "fault": fault}
    tmp = root / "scene.json.tmp"
    tmp.write_text(json.dumps(scene))
    os.replace(tmp, root / "scene.json")


def host_command(*args: str, timeout: float = 300) -> str:
    """Run another `host` subcommand as its own process (its CLI is the stable interface)."""
    proc = subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(PROJECT_ROOT))
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise HostError(f"host {args[0]} failed while preparing the virtual unit: {last[0]}")
    return proc.stdout


@contextmanager
def prepared_virtual_unit(defect: str | None, say: Callable[[str], None]) -> Iterator[str]:
    """A virtual unit flashed and deployed with this release and calibrated; yields its port."""
    from host.calib_fit import Region
    from host.calibrate import run_calibration
    from host.link.frames import UnitClient
    from host.virtual.image import build_image
    from host.virtual.unit import VirtualUnit

    with tempfile.TemporaryDirectory(prefix="host-test-virtual-") as tmp:
        root = Path(tmp) / "unit"
        root.mkdir()
        write_scene(root, {"temperature_c": 33.0, "col": 12, "row": 8, "size_px": 6})
        image_path = Path(tmp) / "micropython.bin"
        image_path.write_bytes(build_image("esp32"))
        unit = VirtualUnit(root).start()
        try:
            port = unit.port_url
            say(f"virtual unit on {port}: flashing and deploying this release")
            host_command("flash", "--port", port, "--firmware", str(image_path))
            say("calibrating against the virtual blackbody (33 and 40 C)")
            temps = iter((33.0, 40.0))
            place = {"col": 12, "row": 8, "size_px": 6}

            def ask(text: str) -> None:
                write_scene(root, dict(place, temperature_c=next(temps)))
                time.sleep(SCENE_APPLY_S)  # the operator waits until the blackbody is stable

            with UnitClient(port) as client:
                run_calibration(client, [33.0, 40.0], Region(13, 9, 4), 24, False, False, ask, say)
            if defect == "broken-sensor":
                write_scene(root, None, fault="nack")
                time.sleep(SCENE_APPLY_S)
            elif defect == "wrong-serial":
                with UnitClient(port) as client:
                    data = json.loads(client.read_file("/calibration.json") or b"{}")
                    data["serial"] = "0badc0ffee00"
                    client.write_file("/calibration.json", json.dumps(data).encode())
            elif defect == "modified-file":
                target = root / "fs" / "main.py"
                target.write_bytes(target.read_bytes() + b"\n# changed after deployment\n")
            yield port
        finally:
            unit.stop()


@click.command("test")
@click.option("--port", "-p", envvar="THERMOGATE_PORT", help="The unit's serial port (or rfc2217:// URL).")
@click.option("--virtual", is_flag=True, help="Start, flash, deploy and calibrate a virtual unit and test it.")
@click.option("--virtual-defect", type=click.Choice(DEFECTS), help="Give the virtual unit one defect (the suite must fail).")
@click.option("-k", "select", help="Only the checks whose name matches (pytest -k).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-check results as JSON on stdout.")
def test(port: str | None, virtual: bool, virtual_defect: str | None, select: str | None, as_json: bool) -> int:
    """Run the acceptance checks on one unit; exit non-zero if any fails."""
    if bool(port) == bool(virtual):
        raise HostError("give exactly one of --port P or --virtual")
    if virtual_defect and not virtual:
        raise HostError("--virtual-defect only applies with --virtual")
    if virtual:
        with prepared_virtual_unit(virtual_defect, say=lambda text: click.echo(text, err=True)) as vport:
            results, output = run_suite(vport, True, select)
            shown_port = f"virtual unit {vport}" + (f" ({virtual_defect})" if virtual_defect else "")
    else:
        assert port is not None
        results, output = run_suite(port, False, select)
        shown_port = port
    if not results:
        raise HostError("the acceptance suite collected no checks: " + output.strip().splitlines()[-1:][0]
                        if output.strip() else "the acceptance suite collected no checks")
    if as_json:
        click.echo(json.dumps({"port": shown_port, "checks": [r.__dict__ for r in results]}))
        ok = not any(r.outcome in ("failed", "error") for r in results)
    else:
        ok = print_report(results, shown_port)
    return 0 if ok else 1
