"""The frame link over a real serial REPL: a virtual unit (`host virtual`'s VirtualUnit: the unix
port behind a raw-REPL bridge on rfc2217) running the firmware's main loop; host.link's client
interrupts it, streams with framelink.stream() and decodes what the bridge delivers.

The virtual unit's I2C reaches its sensor emulator through host/virtual/shim/simlink.py; the last
test here interrupts that link at random points with Ctrl-C and checks it stays in step.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from host import BOARDS_DIR, FIRMWARE_DIR
import host.virtual.image as virtual_image  # part of this project: imported, never skipped
import host.virtual.unit as virtual_unit
from host.link.frames import UnitClient

pytestmark = pytest.mark.virtual

FLASH_SIZE = 4 * 1024 * 1024
ESP32_APP_OFFSET = 0x1000


def deployed_root(root: Path, config: dict | None = None) -> Path:
    """A unit folder as `host flash` leaves it (image in flash.bin, firmware on the filesystem),
    written directly: flashing is the fleet tests' subject, not this file's."""
    root.mkdir(parents=True)
    image = virtual_image.build_image("esp32")
    flash = bytearray(b"\xff" * FLASH_SIZE)
    flash[ESP32_APP_OFFSET:ESP32_APP_OFFSET + len(image)] = image
    (root / "flash.bin").write_bytes(bytes(flash))
    fs = root / "fs"
    (fs / "boards").mkdir(parents=True)
    for source in FIRMWARE_DIR.glob("*.py"):
        shutil.copy2(source, fs / source.name)
    for profile in BOARDS_DIR.glob("*.json"):
        shutil.copy2(profile, fs / "boards" / profile.name)
    (fs / "config.json").write_text(json.dumps(config or {"board": "esp32-devkitc", "allow_uncalibrated": True}))
    return root


def _healthy_stream(tmp_path: Path, count: int):
    """A fresh virtual unit running main.py; the host interrupts it and streams. Returns (stream,
    what the REPL says about the main loop's object afterwards)."""
    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    try:
        with UnitClient(unit.port_url) as client:
            stream = client.frames(count, timeout_s=5)
            after = client.exec("import unit\nprint(unit._current is not None)").strip()
            return stream, after
    finally:
        unit.stop()


def test_repl_stream_interrupts_main_loop_and_decodes(tmp_path):
    stream, after = _healthy_stream(tmp_path, 8)
    assert len(stream.frames) == 8 and stream.end is not None and stream.end.status == 0
    counters = [f.counter for f in stream.frames]
    assert counters == sorted(counters)
    assert len({f.subpage for f in stream.frames}) == 2
    assert after == "True"  # the REPL works after the stream; the unit's main-loop object survived


def test_repl_stream_end_reaches_the_host_through_the_bridge(tmp_path):
    """The stream's last packet (binary, through the pty bridge that
    cooks line ends, and rfc2217) arrives intact and the REPL answers afterwards."""
    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    try:
        with UnitClient(unit.port_url) as client:
            stream = client.frames(4, timeout_s=5)
            assert len(stream.frames) == 4 and stream.end is not None and stream.end.status == 0
            assert client.exec("print(1 + 1)").strip() == "2"
    finally:
        unit.stop()


def test_calibration_written_by_host_calibrate_survives_a_reset(tmp_path):
    """host calibrate's write path (validated, temp file + rename over the REPL) on a virtual unit,
    then machine.reset(): the unit boots with the same calibration.json, and its firmware accepts it."""
    from host.calibrate import CALIBRATION_FILE, write_calibration

    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    try:
        doc = {"gain": 0.9712, "offset_c": -1.21, "pixel_offset_c": None, "serial": "0a0b0c0d0e0f",
               "date": "2026-11-30T21:00:00+00:00", "method": "gain_offset", "residuals_c": [0.0, 0.0]}
        client = UnitClient(unit.port_url)
        write_calibration(client, doc, "0a0b0c0d0e0f")
        boots = len(unit.boots)
        try:  # the unit resets before it can answer
            client.exec("import machine\nmachine.reset()\n", timeout=3)
        except Exception:  # noqa: BLE001 - mpremote reports the lost reply in several ways
            pass
        deadline = time.monotonic() + 15
        while len(unit.boots) == boots and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close(resume=False)
        assert len(unit.boots) > boots, "the unit did not reset"
        with UnitClient(unit.port_url) as client:
            stored = json.loads(client.read_file(CALIBRATION_FILE) or b"null")
            names = client.exec("import os\nprint(sorted(os.listdir('/')))")
            loaded = client.exec("import store, json\nc, e = store.load_calibration(serial='0a0b0c0d0e0f')\n"
                                 "print(json.dumps([c['gain'] if c else None, e]))")
        assert stored == doc
        assert "calibration.json.tmp" not in names
        assert json.loads(loaded.strip().splitlines()[-1]) == [0.9712, []]
    finally:
        unit.stop()


# main.py started the firmware's watchdog, which keeps running at the REPL as on a board; these
# loops are not the firmware and do not feed it, so they switch the shim's watchdog off
_READ_LOOP = ("import machine, simlink\nsimlink._watchdog = None\n_i = machine.I2C(0)\n_b = bytearray(1664)\n"
              "while True:\n    _i.readfrom_mem_into(0x33, 0x2400, _b, addrsize=16)\n")
_CHECK = ("import machine, simlink\nsimlink._watchdog = None\n_i = machine.I2C(0)\n_b = bytearray(1664)\n_ok = 0\n"
          "for _n in range(20):\n    _i.readfrom_mem_into(0x33, 0x2400, _b, addrsize=16)\n"
          "    _ok += _b == _want\n"
          "print(_ok, simlink._link.stale, simlink._link.resyncs)\n")


def _raw_exec_start(port, code: str) -> None:
    port.write(code.encode() + b"\x04")
    _read_until(port, b"OK")


def _read_until(port, marker: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    end = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > end:
            raise AssertionError(f"no {marker!r} from the unit; got {data[-200:]!r}")
        data += port.read(port.in_waiting or 1)
    return data


def test_ctrl_c_in_the_middle_of_sensor_reads_never_desynchronises_the_link(tmp_path):
    """Ctrl-C lands at random points of 1664-byte EEPROM reads (request sent, reply half read...);
    afterwards every read returns the sensor's EEPROM again and nothing hangs. The replies of the
    interrupted requests are counted as dropped (simlink.PipeLink sequence numbers)."""
    import random
    import struct

    import serial

    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    try:
        want = struct.pack(">832H", *unit.sensor_link.sensor.eeprom)
        port = serial.serial_for_url(unit.port_url, timeout=0.1)
        try:
            port.write(b"\r\x03\x03\x01")
            _read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
            rng = random.Random(5)
            for _ in range(25):
                _raw_exec_start(port, _READ_LOOP)
                time.sleep(rng.uniform(0.0, 0.05))
                port.write(b"\x03")
                out = _read_until(port, b"\x04>")
                assert b"KeyboardInterrupt" in out, out[-300:]
            _raw_exec_start(port, "_want = %r\n" % want + _CHECK)
            out = _read_until(port, b"\x04>", timeout=30).split(b"\x04")[0].decode().strip()
        finally:
            port.close()
        good, stale, resyncs = (int(v) for v in out.split()[-3:])
        print(f"after 25 interrupted read loops: {good}/20 good EEPROM reads, {stale} stale replies dropped, "
              f"{resyncs} resyncs")
        assert good == 20, out
        assert stale > 0  # the interruptions really did land between a request and its reply
    finally:
        unit.stop()


def test_scene_control_sets_blackbody_unit_error_and_faults_while_the_unit_runs(tmp_path):
    """<root>/scene.json (written by host.hil.write_scene, the format docs/virtual-units.md
    documents) is picked up by the running unit: the blackbody and the unit's own error show in
    the raw frames; a fault makes the stream fail; a broken file is refused and the scene stays."""
    import numpy as np

    from host.errors import HostError
    from host.hil import write_scene
    from host.link.frames import Converter

    root = deployed_root(tmp_path / "unit")
    unit = virtual_unit.VirtualUnit(root).start()
    link = unit.sensor_link
    place = {"col": 12, "row": 8, "size_px": 6}
    try:
        write_scene(root, dict(place, temperature_c=38.0))
        with UnitClient(unit.port_url) as client:
            stream = client.frames(6, timeout_s=10)
            conv = Converter(stream.info.eeprom)
            image = np.nanmean(np.stack([conv.subpage_image(f.words) for f in stream.frames]), axis=0)
            inner = image[9:13, 13:17]  # fully covered pixels of the 6-pixel blackbody
            room = image[18:23, 2:8]
            assert link.scene_error is None and link.scene_loads >= 1
            # host.hil.VIRTUAL_SENSOR: reads 1.03 * T + 1.2 (+ pixel offsets sigma 0.3, noise)
            expect = 1.03 * 38.0 + 1.2
            print(f"blackbody 38 C reads {float(np.mean(inner)):.2f} C (expected ~{expect:.2f}), room {float(np.mean(room)):.2f} C")
            assert abs(float(np.mean(inner)) - expect) < 0.4
            assert float(np.mean(room)) < 30.0

            (root / "scene.json").write_text('{"scene": {"blackbody": {"col": 40}}, "fault": null}')
            time.sleep(0.3)  # the unit looks at the file every 0.1 s
            again = client.frames(2, timeout_s=10)
            assert link.scene_error is not None and "blackbody.col" in link.scene_error
            image = conv.subpage_image(again.frames[-1].words)
            assert np.nanmean(image[9:13, 13:17]) > 36.0  # the previous scene stayed

            write_scene(root, None, fault="nack")
            time.sleep(0.3)
            try:
                client.frames(2, timeout_s=5)
            except HostError as exc:
                assert "ended before it started" in str(exc)
            else:
                raise AssertionError("the stream worked with the sensor NACKing")
            write_scene(root, None)  # fault cleared
            time.sleep(0.3)
            assert len(client.frames(2, timeout_s=10).frames) == 2
    finally:
        unit.stop()
