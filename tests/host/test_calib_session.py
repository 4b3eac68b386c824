"""`host calibrate`'s session (prompts, fit, file, read-back, --check) on frames from the real firmware.

The unit is the firmware in the MicroPython unix port with the emulated sensor (test_link_harness);
what stands in for the serial REPL is `UnitOverPipe` below: frames come from the firmware's
framelink.stream() on its stdout, files live in a dict that the next run of the firmware loads.
The REPL transport itself is exercised against virtual units, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host import calib_fit as cf
from host.calibrate import CALIBRATION_FILE, run_calibration
from host.link.frames import Stream
from test_link_harness import stream_from_firmware  # noqa: E402

CONFIG = {"refresh_hz": 8, "allow_uncalibrated": True}


class UnitOverPipe:
    """The methods of host.link.frames.UnitClient that host calibrate uses."""

    def __init__(self, workdir: Path) -> None:
        self.port = "unix-port"
        self.workdir = workdir
        self.files: dict[str, bytes] = {}
        self.blackbody = {"temperature_c": 30.0, "col": 12, "row": 8, "size_px": 6}
        self.repl = self
        self.streams = 0

    def frames(self, count: int, timeout_s: float = 10.0, on_frame=None) -> Stream:
        raw_cal = self.files.get(CALIBRATION_FILE)
        got = stream_from_firmware(self.workdir, {"blackbody": dict(self.blackbody)}, count, config=CONFIG,
                                   calibration=json.loads(raw_cal) if raw_cal else None)
        self.streams += 1
        assert got.info is not None and got.end.status == 0
        return Stream(info=got.info, frames=got.frames, end=got.end)

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.files[path] = bytes(data)

    def run_app(self) -> None:
        pass


def session(unit: UnitOverPipe, temps: list[float], check: bool = False, place: dict | None = None):
    prompts: list[str] = []
    said: list[str] = []
    schedule = iter(temps)

    def ask(text: str) -> None:
        prompts.append(text)
        if "blackbody" in text:
            unit.blackbody = dict(place or unit.blackbody, temperature_c=next(schedule))

    status = run_calibration(unit, temps, None, 24, check, False, ask, said.append)
    return status, prompts, said


def test_two_point_session_writes_a_valid_file_and_check_passes(tmp_path):
    unit = UnitOverPipe(tmp_path)
    status, prompts, said = session(unit, [33.0, 40.0])
    assert status == 0
    assert [p.split(",")[1].strip() for p in prompts] == ["set to 33 C", "set to 40 C"]
    doc = json.loads(unit.files[CALIBRATION_FILE])
    assert doc["method"] == "gain_offset" and len(doc["references"]) == 2
    assert doc["serial"] and doc["date"].endswith("+00:00")
    assert 0.9 < doc["gain"] < 1.0 and doc["offset_c"] < 0  # undoes gain 1.04, offset +1.6
    assert any("wrote /calibration.json" in line for line in said)
    # --check at 34 and 37 C with the blackbody elsewhere in the view: within 0.2 C
    status, _, said = session(unit, [34.0, 37.0], check=True, place={"col": 20, "row": 12, "size_px": 6})
    errors = [float(line.split("error ")[1].split()[0]) for line in said if "unit reads" in line]
    print("check errors:", errors)
    assert status == 0 and len(errors) == 2 and max(abs(e) for e in errors) < 0.2
    assert json.loads(unit.files[CALIBRATION_FILE]) == doc  # --check wrote nothing


def test_check_fails_on_an_uncalibrated_unit(tmp_path):
    unit = UnitOverPipe(tmp_path)
    status, _, said = session(unit, [37.0], check=True)
    assert status == 1
    assert any("OUTSIDE" in line for line in said)
    assert CALIBRATION_FILE not in unit.files


def test_a_refused_reference_writes_nothing(tmp_path):
    unit = UnitOverPipe(tmp_path)
    unit.files[CALIBRATION_FILE] = b'{"gain": 1.0, "offset_c": 0.5, "date": "old"}'
    with pytest.raises(cf.CalibrationRefused, match="too close"):
        session(unit, [36.0, 37.0])
    assert unit.files[CALIBRATION_FILE] == b'{"gain": 1.0, "offset_c": 0.5, "date": "old"}'


def test_calibration_for_another_sensor_is_reported(tmp_path):
    unit = UnitOverPipe(tmp_path)
    unit.files[CALIBRATION_FILE] = json.dumps({"gain": 1.0, "offset_c": 0.5, "serial": "0badc0ffee00"}).encode()
    status, _, said = session(unit, [36.5])
    assert status == 0
    assert any("not usable" in line and "0badc0ffee00" in line for line in said)
    assert json.loads(unit.files[CALIBRATION_FILE])["serial"] != "0badc0ffee00"


def test_pixel_map_session_then_check_anywhere_in_view(tmp_path):
    unit = UnitOverPipe(tmp_path)
    said: list[str] = []
    schedule = iter([33.0, 40.0])

    def ask(text: str) -> None:
        if "uniform scene" in text:
            unit.blackbody = None  # nothing but the ambient wall in view
        else:
            unit.blackbody = {"temperature_c": next(schedule), "col": 4, "row": 4, "size_px": 5}

    original_frames = unit.frames

    def frames(count: int, timeout_s: float = 10.0, on_frame=None) -> Stream:
        if unit.blackbody is None:
            got = stream_from_firmware(unit.workdir, {"blackbody": None}, count, config=CONFIG)
            assert got.info is not None
            return Stream(info=got.info, frames=got.frames, end=got.end)
        return original_frames(count, timeout_s)

    unit.frames = frames  # type: ignore[method-assign]
    assert run_calibration(unit, [33.0, 40.0], None, 24, False, True, ask, said.append) == 0
    doc = json.loads(unit.files[CALIBRATION_FILE])
    assert doc["pixel_offset_c"] is not None and len(doc["pixel_offset_c"]) == 768
    errors = []
    for temp, col, row in ((34.0, 24, 15), (37.0, 14, 2), (40.0, 3, 16)):
        unit.blackbody = {"temperature_c": temp, "col": col, "row": row, "size_px": 5}
        stream = unit.frames(24)
        from host.link.frames import Converter
        import numpy as np

        conv = Converter(stream.info.eeprom)
        images = np.stack([conv.subpage_image(f.words) for f in stream.frames])
        ref = cf.measure_reference(images, temp, pixel_offset=np.array(doc["pixel_offset_c"]))
        errors.append(cf.check_reference(ref, doc["gain"], doc["offset_c"]).error_c)
    print("pixel-map check errors:", [round(e, 3) for e in errors])
    assert max(abs(e) for e in errors) < 0.2, errors
