"""Calibration end to end below the REPL: the real firmware (unit.py main loop, driver, framelink)
in the real MicroPython unix port, the machine shim, the sensor emulator with its own per-unit
error and datasheet noise looking at a rendered blackbody scene; the host decodes the stream with
host.link, converts with the firmware driver and fits with host.calib_fit.

The serial-port/REPL leg (host calibrate against `host virtual`) is not covered here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from host import calib_fit as cf
from host.link.frames import Converter, FrameDecoder, RawFrame, UnitInfo

runner = pytest.importorskip("host.sim.runner")
scenario_mod = pytest.importorskip("host.sim.scenario")

# The unit's side: like host/virtual/shim/sim_main.py, but after a few cycles of the main loop the
# test plays the host and calls framelink.stream() (as `host calibrate` does over the REPL).
STREAM_MAIN = """
import sys
import simlink
import time
import machine
import neopixel
import network
import bluetooth
import esp32
import os
read_fd, write_fd, root, deadline_ms, count = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
simlink.connect(simlink.PipeLink(read_fd, write_fd), 0, deadline_ms * 1000)
try:
    os.umount('/')
except OSError:
    pass
os.mount(os.VfsPosix(root), '/')
os.chdir('/')
sys.path[:] = ['', '/lib', '.frozen']
import unit
import framelink
unit.run(max_cycles=12)
out = open('/stream.bin', 'wb')
sent = framelink.stream(count, out=out)
out.close()
print('SENT', sent)
"""

UNIT = {"unit_offset_c": 1.6, "unit_gain": 1.04, "pixel_offset_sigma_c": 0.3, "netd_scale": 1.0,
        "refresh_hz": 8, "ambient_c": 24.0}
PLACE = {"col": 12, "row": 8, "size_px": 6}


def stream_blackbody(tmp_path: Path, temp_c: float, count: int, place=PLACE) -> tuple[UnitInfo, list[RawFrame]]:
    scenario = scenario_mod.parse({"name": "calibration", "seed": 21, "duration_s": 60.0, "sensor": UNIT,
                                   "blackbody": dict(place, temperature_c=temp_c), "calibrated": False,
                                   "subjects": []})
    host = runner.UnitHost(scenario)
    root = tmp_path / f"unit-{temp_c:g}-{place['col']}"
    runner.prepare_root(scenario, host.sensor, root)
    # the unit is not in blackbody mode while it is being calibrated
    (root / "config.json").write_text(json.dumps({"board": runner.SIM_BOARD, "refresh_hz": 8,
                                                  "allow_uncalibrated": True}))
    script = tmp_path / "stream_main.py"
    script.write_text(STREAM_MAIN)
    to_unit_r, to_unit_w = os.pipe()
    from_unit_r, from_unit_w = os.pipe()
    env = dict(os.environ, MICROPYPATH=str(runner.SHIM_DIR))
    proc = subprocess.Popen([runner.micropython_command(), "-X", "heapsize=16M", str(script), str(to_unit_r),
                             str(from_unit_w), str(root), str(host.deadline_us // 1000), str(count)],
                            pass_fds=(to_unit_r, from_unit_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=str(root))
    os.close(to_unit_r)
    os.close(from_unit_w)
    try:
        while True:
            head = runner._read_exact(from_unit_r, runner.HEADER.size, proc)
            if head is None:
                break
            kind, length, now_us = runner.HEADER.unpack(head)
            payload = runner._read_exact(from_unit_r, length, proc) if length else b""
            if payload is None:
                break
            reply = host.handle(kind, now_us, payload)
            if reply is not None:
                os.write(to_unit_w, runner.REPLY.pack(reply[0], len(reply[1])) + reply[1])
    finally:
        os.close(from_unit_r)
        os.close(to_unit_w)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert f"SENT {count}" in output, output[-2000:]
    items = FrameDecoder().feed((root / "stream.bin").read_bytes())
    info = next(i for i in items if isinstance(i, UnitInfo))
    frames = [i for i in items if isinstance(i, RawFrame)]
    assert len(frames) == count
    return info, frames


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
