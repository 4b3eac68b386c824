"""Calibration end to end below the REPL: the real firmware (unit.py main loop, driver, framelink)
in the real MicroPython unix port, the machine shim, the sensor emulator with its own per-unit
error and datasheet noise looking at a rendered blackbody scene; the host decodes the stream with
host.link, converts with the firmware driver and fits with host.calib_fit.

The packets travel through the unit's stdout (tests/host/test_link_harness.py); the serial-port/REPL
leg (host calibrate against `host virtual`) is not covered here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host import calib_fit as cf
from host.link.frames import Converter, RawFrame, UnitInfo

from test_link_harness import stream_from_firmware  # noqa: E402  (tests/host is on sys.path under pytest)

PLACE = {"col": 12, "row": 8, "size_px": 6}
CONFIG = {"refresh_hz": 8, "allow_uncalibrated": True}  # not in blackbody mode while being calibrated


def stream_blackbody(tmp_path: Path, temp_c: float, count: int, place=PLACE) -> tuple[UnitInfo, list[RawFrame]]:
    got = stream_from_firmware(tmp_path, {"blackbody": dict(place, temperature_c=temp_c)}, count, config=CONFIG)
    assert got.end.status == 0 and len(got.frames) == count and got.info is not None
    return got.info, got.frames


def images(info: UnitInfo, frames: list[RawFrame]) -> np.ndarray:
    conv = Converter(info.eeprom)
    return np.stack([conv.subpage_image(f.words) for f in frames])


def test_stream_from_running_firmware_and_two_point_calibration(tmp_path):
    refs = []
    serials = set()
    for temp in (33.0, 40.0):
        info, frames = stream_blackbody(tmp_path, temp, 24)
        serials.add(info.serial)
        assert info.refresh_hz == 8.0
        counters = [f.counter for f in frames]
        assert counters == sorted(counters) and len(set(f.subpage for f in frames)) == 2
        assert all(not f.service_mode for f in frames)  # the unit kept screening while streaming
        refs.append(cf.measure_reference(images(info, frames), temp))
    assert len(serials) == 1
    uncorrected = refs[1].raw_mean_c - 40.0
    assert abs(uncorrected) > 1.0  # the emulated unit really is off: the check below can fail
    fit = cf.fit_references(refs)
    errors = []
    for temp in (34.0, 37.0):
        info, frames = stream_blackbody(tmp_path, temp, 24)
        errors.append(cf.check_reference(cf.measure_reference(images(info, frames), temp), fit.gain, fit.offset_c).error_c)
    print("two-point check errors (C):", [round(e, 3) for e in errors], "gain", round(fit.gain, 4),
          "offset", round(fit.offset_c, 3))
    assert max(abs(e) for e in errors) < 0.2, errors


def test_one_reference_offset_within_0_3_over_34_to_39(tmp_path):
    info, frames = stream_blackbody(tmp_path, 36.5, 24)
    fit = cf.fit_references([cf.measure_reference(images(info, frames), 36.5)])
    errors = []
    for temp in (34.0, 39.0):
        info, frames = stream_blackbody(tmp_path, temp, 24)
        errors.append(cf.check_reference(cf.measure_reference(images(info, frames), temp), fit.gain, fit.offset_c).error_c)
    print("one-point check errors (C):", [round(e, 3) for e in errors])
    assert max(abs(e) for e in errors) < 0.3, errors


def test_blackbody_too_small_in_the_image_is_refused(tmp_path):
    info, frames = stream_blackbody(tmp_path, 38.0, 12, place={"col": 20, "row": 4, "size_px": 1})
    with pytest.raises(cf.CalibrationRefused, match="too small|does not fill"):
        cf.measure_reference(images(info, frames), 38.0)
