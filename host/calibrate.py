"""`host calibrate`: fit a unit's offset (one blackbody) or gain and offset (two or more) and write
calibration.json on the unit; `--check` measures the current calibration's error and writes nothing.

The raw words come over the frame link and are converted with the firmware's own driver, so the
fit applies to exactly the readings the unit corrects. The file is validated with the firmware's
own store.validate_calibration before it is written atomically on the unit (a temp file renamed over
the old one), then read back and validated again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from host import __version__
from host import calib_fit as cf
from host.errors import HostError
from host.link.frames import Converter, UnitClient, UnitInfo, firmware_module

CALIBRATION_FILE = "/calibration.json"
CHECK_TOLERANCE_C = 0.3  # ISO/TR 13154 laboratory accuracy for screening thermographs

Say = Callable[[str], None]
Ask = Callable[[str], None]


@dataclass
class UnitCalibration:
    """What the unit holds now (validated by the firmware's store module)."""

    gain: float
    offset_c: float
    pixel_offset_c: np.ndarray | None
    serial: str | None
    date: str | None
    raw: dict[str, Any]


def read_unit_calibration(client: UnitClient, serial: str) -> tuple[UnitCalibration | None, list[str]]:
    store = firmware_module("store")
    data = client.read_file(CALIBRATION_FILE)
    if data is None:
        return None, []
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, [f"{CALIBRATION_FILE} on the unit is not valid JSON"]
    cal, errors = store.validate_calibration(parsed, serial)
    if errors or cal is None:
        return None, list(errors)
    pixels = cal.get("pixel_offset_c")
    return UnitCalibration(gain=cal["gain"], offset_c=cal["offset_c"],
                           pixel_offset_c=np.array(pixels, dtype=np.float64) if pixels else None,
                           serial=cal.get("serial"), date=cal.get("date"), raw=parsed), []


class Session:
    """One calibration session on one unit: streams frames and turns them into subpage images."""

    def __init__(self, client: UnitClient, frames: int, say: Say, timeout_s: float = 10.0) -> None:
        self.client = client
        self.frames = frames
        self.say = say
        self.timeout_s = timeout_s
        self.info: UnitInfo | None = None
        self.converter: Converter | None = None

    def capture(self, what: str) -> np.ndarray:
        """N subpage images (N, 24, 32), raw (no calibration)."""
        self.say(f"  recording {self.frames} frames of {what} ...")
        stream = self.client.frames(self.frames, timeout_s=self.timeout_s)
        if self.info is None or self.info.eeprom != stream.info.eeprom:
            self.info = stream.info
            self.converter = Converter(stream.info.eeprom)
        if len(stream.frames) < self.frames:
            raise HostError(f"{self.client.port}: got {len(stream.frames)} of {self.frames} frames; check the cable and retry")
        # frames only come from good sensor reads; a unit in FAULT (e.g. a calibration for another
        # sensor) still sends valid raw words, which is what a calibration needs
        assert self.converter is not None
        return np.stack([self.converter.subpage_image(f.words) for f in stream.frames])

    @property
    def serial(self) -> str:
        return self.info.serial if self.info else ""


def run_calibration(client: UnitClient, temperatures: list[float], region: cf.Region | None, frames: int,
                    check: bool, pixel_map: bool, ask: Ask, say: Say, tolerance_c: float = CHECK_TOLERANCE_C,
                    max_residual_c: float = cf.MAX_RESIDUAL_C) -> int:
    """The whole session; returns the exit status (0 = written / check within tolerance)."""
    session = Session(client, frames, say)
    # one short stream first: the sensor's serial, so the current file can be checked against it
    probe = client.frames(2, timeout_s=session.timeout_s)
    serial = probe.info.serial
    current, errors = read_unit_calibration(client, serial)
    if errors:
        say(f"current calibration on the unit is not usable: {errors[0]}")
    elif current:
        say(f"current calibration: gain {current.gain:.4f}, offset {current.offset_c:+.3f} C, "
            f"pixel map {'yes' if current.pixel_offset_c is not None else 'no'}, date {current.date or '?'}")
    else:
        say("the unit holds no calibration yet")
    say(f"sensor {serial}, refresh {probe.info.refresh_hz:g} Hz, firmware {probe.info.release or '?'}")

    if check:
        return _check(session, temperatures, region, current, ask, say, tolerance_c)

    pixel_offset: np.ndarray | None = None
    if pixel_map:
        ask("Point the unit at a uniform scene: a plain wall or plate filling the whole view, nobody and "
            "nothing warm in it.")
        pixel_offset = cf.pixel_offset_map(session.capture("the uniform scene"))
        say(f"  pixel map: RMS {float(np.std(pixel_offset)):.2f} C, largest {float(np.max(np.abs(pixel_offset))):.2f} C")
    elif current is not None and current.pixel_offset_c is not None:
        pixel_offset = current.pixel_offset_c
        say("keeping the unit's current pixel map (use --pixel-map to measure a new one)")

    refs: list[cf.Reference] = []
    for t in temperatures:
        ask(f"Place the blackbody, set to {t:g} C, at the screening distance in the unit's view. "
            "Wait until it is stable.")
        images = session.capture(f"the {t:g} C blackbody")
        ref = cf.measure_reference(images, t, region, pixel_offset=pixel_offset)
        refs.append(ref)
        say(f"  {t:g} C: region {ref.region}, raw {ref.raw_mean_c:.3f} C, drift {ref.drift_c:+.3f} C, "
            f"noise {ref.noise_c:.3f} C")
    fit = cf.fit_references(refs, max_residual_c=max_residual_c)
    method = "offset" if len(refs) == 1 else ("gain_offset" if len(refs) == 2 else "least_squares")
    document = {
        "gain": round(fit.gain, 6),
        "offset_c": round(fit.offset_c, 4),
        "pixel_offset_c": [round(float(v), 3) for v in pixel_offset] if pixel_offset is not None else None,
        "serial": serial,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "references": [dict(r.as_dict(), residual_c=round(res, 4)) for r, res in zip(refs, fit.residuals_c)],
        "residuals_c": [round(r, 4) for r in fit.residuals_c],
        "max_residual_c": round(fit.max_residual_c, 4),
        "frames": frames,
        "host": __version__,
    }
    write_calibration(client, document, serial)
    back = client.read_file(CALIBRATION_FILE)
    if back is None:
        raise HostError(f"{client.port}: {CALIBRATION_FILE} is missing after writing it; check the unit's filesystem")
    stored = json.loads(back.decode("utf-8"))
    store = firmware_module("store")
    cal, errors = store.validate_calibration(stored, serial)
    if errors or cal is None or abs(cal["gain"] - document["gain"]) > 1e-9 or abs(cal["offset_c"] - document["offset_c"]) > 1e-9:
        raise HostError(f"{client.port}: the calibration read back differs from what was written "
                        f"({errors[0] if errors else 'values changed'}); run the command again")
    say(f"wrote {CALIBRATION_FILE}: gain {cal['gain']:.4f}, offset {cal['offset_c']:+.3f} C, method {method}, "
        f"max residual {stored.get('max_residual_c', 0.0):.3f} C over {len(refs)} reference(s)")
    return 0  # closing the client soft-resets the unit: it screens with the new file


def write_calibration(client: UnitClient, document: dict[str, Any], serial: str) -> None:
    """Validate with the firmware's own rules, then write atomically on the unit."""
    store = firmware_module("store")
    cal, errors = store.validate_calibration(document, serial)
    if errors:
        raise HostError(f"the fitted calibration is not valid for the unit ({errors[0]}); nothing was written")
    text = json.dumps(document, separators=(",", ":"))
    # temp file then rename on the unit (host.fleet.link.ReplLink.write_file): a power cut leaves
    # the old file, and firmware/store.py ignores or removes a half-written calibration.json.tmp
    client.write_file(CALIBRATION_FILE, text.encode())


def _check(session: Session, temperatures: list[float], region: cf.Region | None, current: UnitCalibration | None,
           ask: Ask, say: Say, tolerance_c: float) -> int:
    gain, offset, pixels = (1.0, 0.0, None) if current is None else (current.gain, current.offset_c, current.pixel_offset_c)
    if current is None:
        say("checking the uncalibrated unit (factory calibration only)")
    worst = 0.0
    rows = []
    for t in temperatures:
        ask(f"Place the blackbody, set to {t:g} C, at the screening distance in the unit's view. "
            "Wait until it is stable.")
        images = session.capture(f"the {t:g} C blackbody")
        ref = cf.measure_reference(images, t, region, pixel_offset=pixels)
        result = cf.check_reference(ref, gain, offset)
        rows.append(result)
        worst = max(worst, abs(result.error_c))
        say(f"  {t:g} C: unit reads {result.measured_c:.3f} C, error {result.error_c:+.3f} C (region {result.region})")
    verdict = "within" if worst <= tolerance_c else "OUTSIDE"
    say(f"check: largest error {worst:.3f} C, {verdict} +-{tolerance_c:g} C; nothing was written")
    return 0 if worst <= tolerance_c else 1


@click.command("calibrate")
@click.option("--port", "-p", envvar="THERMOGATE_PORT", required=True, help="The unit's serial port (or rfc2217:// URL).")
@click.option("--blackbody", "temperatures", multiple=True, required=True, type=click.FloatRange(20.0, 60.0),
              help="Blackbody set temperature in C; give it once (offset) or twice (gain and offset).")
@click.option("--region", default="auto", show_default=True,
              help="auto (find the uniform warm patch) or COL,ROW,SIZE of fully covered pixels.")
@click.option("--frames", default=32, show_default=True, type=click.IntRange(6, 2000),
              help="Subpages averaged per reference.")
@click.option("--check", is_flag=True, help="Measure the current calibration's error; write nothing.")
@click.option("--pixel-map", is_flag=True, help="Also measure a per-pixel offset map from a uniform scene first.")
@click.option("--yes", "-y", is_flag=True, help="Do not wait for Enter at each step (scripted sessions).")
@click.option("--tolerance", default=CHECK_TOLERANCE_C, show_default=True, type=click.FloatRange(0.01, 5.0),
              help="--check fails when any error exceeds this (C).")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(min=1200))
def calibrate(port: str, temperatures: tuple[float, ...], region: str, frames: int, check: bool, pixel_map: bool,
              yes: bool, tolerance: float, baud: int) -> int:
    """Calibrate a unit against a blackbody (one reference: offset; two: gain and offset)."""
    if len(set(temperatures)) != len(temperatures):
        raise HostError("each --blackbody temperature must be different: give e.g. --blackbody 33 --blackbody 40")
    if check and pixel_map:
        raise HostError("--check writes nothing, so --pixel-map has no effect with it: drop one of them")
    chosen = cf.parse_region(region)

    def say(text: str) -> None:
        click.echo(text)

    def ask(text: str) -> None:
        click.echo(text)
        if not yes:
            click.prompt("Press Enter when ready", default="", show_default=False, prompt_suffix=" ")

    with UnitClient(port, baud) as client:
        return run_calibration(client, list(temperatures), chosen, frames, check, pixel_map, ask, say, tolerance)
