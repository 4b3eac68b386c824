"""Calibration end to end below the REPL: the real firmware (unit.py main loop, driver, framelink)
in the real MicroPython unix port, the machine shim, the sensor emulator with its own per-unit
error and datasheet noise looking at a rendered blackbody scene; the host decodes the stream with
host.link, converts with the firmware driver and fits with host.calib_fit.

The first tests take the packets from the unit's stdout (tests/host/test_link_harness.py); the last
one runs the whole session through the serial port: `host calibrate` against a virtual unit
(host/virtual/unit.py) whose blackbody is moved with its scene control file.
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


# ---------------------------------------------------------------------------------------------
# The whole session on a virtual unit, through the serial port: `host calibrate` (its CLI, an
# operator script answering its prompts by moving the blackbody with the unit's scene control
# file, docs/virtual-units.md), then `host calibrate --check`, then a reset.

VIRTUAL_ERROR = {"unit_offset_c": 1.5, "unit_gain": 1.04, "pixel_offset_sigma_c": 0.3, "netd_scale": 1.0,
                 "ambient_c": 25.0}
BLACKBODY = {"col": 12, "row": 8, "size_px": 6}


def _write_scene(root: Path, temperature_c: float) -> None:
    import json
    import os

    doc = {"scene": {"name": "calibration-bench", "seed": 3, "sensor": VIRTUAL_ERROR,
                     "blackbody": dict(BLACKBODY, temperature_c=temperature_c)}, "fault": None}
    tmp = root / "scene.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, root / "scene.json")


def _operator_session(port: str, root: Path, args: list[str]) -> tuple[int, str]:
    """Run `host calibrate` as an operator would: at each "Place the blackbody, set to T C" the
    blackbody is set to T (scene.json), left to settle, and Enter is pressed."""
    import re
    import subprocess
    import sys
    import time

    from host import PROJECT_ROOT

    proc = subprocess.Popen([sys.executable, "-m", "host", "calibrate", "--port", port, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=str(PROJECT_ROOT))
    out = []
    assert proc.stdout is not None and proc.stdin is not None
    try:
        for line in proc.stdout:
            out.append(line)
            placed = re.search(r"Place the blackbody, set to ([0-9.]+) C", line)
            if placed:
                _write_scene(root, float(placed.group(1)))
                time.sleep(0.3)  # the unit looks at scene.json every 0.1 s
                proc.stdin.write("\n")
                proc.stdin.flush()
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, "".join(out)


def test_two_reference_session_on_a_virtual_unit_then_check_and_reset(tmp_path):
    import json
    import re
    import time

    from test_link_virtual import deployed_root, virtual_unit

    from host.link.frames import UnitClient

    root = deployed_root(tmp_path / "unit")
    _write_scene(root, 30.0)
    unit = virtual_unit.VirtualUnit(root).start()
    try:
        status, out = _operator_session(unit.port_url, root, ["--blackbody", "33", "--blackbody", "40"])
        assert status == 0, out[-1500:]
        raws = {float(t): float(r) for t, r in re.findall(r"\n\s*([0-9.]+) C: region .*?, raw ([-0-9.]+) C", out)}
        assert set(raws) == {33.0, 40.0}, out
        # the unit really is off before calibration (1.04 * T + 1.5), in offset and in gain: the
        # check below can fail, and would with an offset alone
        assert all(abs(raws[t] - t) > 1.0 for t in raws), raws
        assert abs((raws[40.0] - raws[33.0]) - 7.0) > 0.15, raws

        status, out = _operator_session(unit.port_url, root, ["--check", "--tolerance", "0.2", "--blackbody", "34",
                                                              "--blackbody", "37", "--blackbody", "40"])
        errors = {float(t): float(e) for t, e in re.findall(r"\n\s*([0-9.]+) C: unit reads [-0-9.]+ C, error ([-+0-9.]+) C", out)}
        print("uncorrected (C):", {t: round(raws[t] - t, 2) for t in raws}, "check errors after calibration (C):", errors)
        assert set(errors) == {34.0, 37.0, 40.0}, out
        assert max(abs(e) for e in errors.values()) < 0.2, errors
        assert status == 0, out[-800:]

        with UnitClient(unit.port_url) as client:
            before = client.read_file("/calibration.json")
            boots = len(unit.boots)
            try:
                client.exec("import machine\nmachine.reset()\n", timeout=3)
            except Exception:  # noqa: BLE001 - the unit resets before it answers
                pass
            deadline = time.monotonic() + 15
            while len(unit.boots) == boots and time.monotonic() < deadline:
                time.sleep(0.1)
            client.close(resume=False)
        assert len(unit.boots) > boots, "the unit did not reset"
        status, out = _operator_session(unit.port_url, root, ["--check", "--tolerance", "0.2", "--blackbody", "37"])
        assert status == 0, out[-800:]
        with UnitClient(unit.port_url) as client:
            assert client.read_file("/calibration.json") == before
        doc = json.loads(before)
        assert doc["method"] == "gain_offset" and [r["set_c"] for r in doc["references"]] == [33.0, 40.0]
    finally:
        unit.stop()
