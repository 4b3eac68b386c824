"""`host bench`: our driver against the Adafruit driver, in the same MicroPython interpreter, on the
same frames. Prints time and heap allocated per subpage, with ratios, and the driver's resident
state after extract_params."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click

from host import FIRMWARE_DIR
from host.errors import HostError
from host.unixport import micropython_command

RUNNER = Path(__file__).resolve().parent / "mpy" / "bench_runner.py"
HEAP = "16M"  # the unix port's heap; the Adafruit chain needs ~0.6 MB per subpage


def stage_adafruit_driver(into: Path) -> None:
    """Copy the installed Adafruit driver (and the bus-device package it imports) where the
    unix port can import it. Nothing is copied into the project."""
    for name in ("adafruit_mlx90640", "adafruit_bus_device"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise HostError(f"{name} is not installed: pip install adafruit-circuitpython-mlx90640 "
                            "(part of the test extra)")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, into / origin.name)


def emulator_job(seed: int) -> dict[str, Any]:
    """A generated unit looking at a person-like scene: both subpages, chess, 18-bit."""
    import numpy as np

    from host.virtual.sensor import SensorEmulator, generate_eeprom

    eeprom = generate_eeprom(seed)
    emu = SensorEmulator(eeprom=eeprom, seed=seed)
    rows, cols = np.mgrid[0:24, 0:32]
    scene = 22.0 + 12.0 * np.exp(-(((rows - 9) / 5.0) ** 2 + ((cols - 16) / 4.0) ** 2))
    emu.set_scene(scene, ambient_c=24.0, vdd=3.3)
    frames = [list(map(int, emu.raw_frame(subpage))) for subpage in (0, 1)]
    return {"source": f"emulated unit, seed {seed}", "eeprom": list(map(int, eeprom)), "frames": frames}


def file_job(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HostError(f"cannot read {path}: {exc}; give a JSON file with 'eeprom' and 'frames'")
    frames = data.get("frames") or [data[k] for k in ("frame0", "frame1") if k in data]
    if not isinstance(data.get("eeprom"), list) or len(data["eeprom"]) != 832 or not frames:
        raise HostError(f"{path} needs 'eeprom' (832 words) and 'frames' (or 'frame0'/'frame1') "
                        "of 834 words each")
    if any(len(f) != 834 for f in frames):
        raise HostError(f"{path}: every frame must have 834 words (RAM, control, subpage)")
    return {"source": str(path), "eeprom": data["eeprom"], "frames": frames}


def run_bench(job: dict[str, Any], emissivity: float, repeats: int) -> dict[str, Any]:
    exe = micropython_command()
    with tempfile.TemporaryDirectory(prefix="thermogate-bench-") as tmp:
        tmpdir = Path(tmp)
        stage_adafruit_driver(tmpdir)
        job_file = tmpdir / "job.json"
        job_file.write_text(json.dumps({"eeprom": job["eeprom"], "frames": job["frames"],
                                        "emissivity": emissivity, "repeats": repeats}))
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(FIRMWARE_DIR), str(tmpdir), ".frozen"]))
        proc = subprocess.run([exe, "-X", f"heapsize={HEAP}", str(RUNNER), str(job_file)],
                              capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise HostError(f"the benchmark failed under MicroPython: {last}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["source"] = job["source"]
    result["emissivity"] = emissivity
    for row in result["subpages"]:
        row["speedup"] = round(row["adafruit_us"] / max(row["ours_us"], 1), 2)
        row["pipeline_fraction_of_adafruit"] = round(row["pipeline_us"] / max(row["adafruit_us"], 1), 3)
        row["analysis_fraction_of_adafruit"] = round(row["analysis_us"] / max(row["adafruit_us"], 1), 3)
        # Fewer bytes than one object header would be allocation-free; report it as such.
        row["alloc_ratio"] = (round(row["adafruit_alloc_bytes"] / row["ours_alloc_bytes"], 1)
                              if row["ours_alloc_bytes"] else None)
    return result


def print_human(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"calculate_to per subpage, MicroPython {result['version']} unix port "
                        f"({result['source']}, emissivity {result['emissivity']})")
    # ours / Adafruit, per subpage: time (ms), heap allocated (bytes), and the largest difference.
    for col in ("sub", "ms", "ms Ada", "faster", "heap B", "heap B Ada", "less heap", "|diff| °C"):
        table.add_column(col, justify="right")
    for row in result["subpages"]:
        ratio = "no allocation" if row["alloc_ratio"] is None else f"{row['alloc_ratio']}x"
        table.add_row(str(row["subpage"]), f"{row['ours_us'] / 1000:.2f}", f"{row['adafruit_us'] / 1000:.2f}",
                      f"{row['speedup']}x", str(row["ours_alloc_bytes"]), str(row["adafruit_alloc_bytes"]),
                      ratio, f"{row['max_abs_diff_c']:.4f}")
    console.print(table)
    for row in result["subpages"]:
        console.print(f"subpage {row['subpage']}: gate pipeline after conversion (correction, scene, screening) "
                      f"{row['analysis_us'] / 1000:.3f} ms = {row['analysis_fraction_of_adafruit']:.3f} of the "
                      f"Adafruit conversion, {row['analysis_alloc_bytes']} B heap; with our conversion "
                      f"{row['pipeline_us'] / 1000:.2f} ms = {row['pipeline_fraction_of_adafruit']:.3f}, "
                      f"{row['pipeline_alloc_bytes']} B heap")
    console.print(f"driver state resident after extract_params: {result['resident_bytes']} bytes "
                  f"({result['resident_bytes'] / 1024:.1f} KB)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON with 'eeprom' and 'frames' (e.g. a real sensor dump) instead of an emulated unit.")
@click.option("--seed", default=1, show_default=True, help="Seed of the emulated unit.")
@click.option("--emissivity", default=1.0, show_default=True, type=click.FloatRange(0.1, 1.0))
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Timed calls per subpage; the best is reported.")
def bench(as_json: bool, input_file: Path | None, seed: int, emissivity: float, repeats: int) -> None:
    """Time and heap of our calculate_to against the Adafruit driver under the MicroPython unix port."""
    job = file_job(input_file) if input_file else emulator_job(seed)
    result = run_bench(job, emissivity, repeats)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_human(result)
