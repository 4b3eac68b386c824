"""The frame link from the real firmware in the MicroPython unix port, through its stdout.

`stream_from_firmware` runs the deployed firmware (unit.py main loop, driver, framelink) in the unix
port with the machine shim, the sensor emulator answering its I2C through the simulator link, and
then calls framelink.stream(n) as `host calibrate` / `host monitor` do at the REPL: the packets go
to sys.stdout.buffer, are read from the process's stdout and decoded by host.link. Other tests
(calibration, monitor) import it. The serial/REPL leg is covered by the virtual-unit tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from host.link.frames import Converter, FrameDecoder, RawFrame, StreamEnd, UnitInfo

runner = pytest.importorskip("host.sim.runner")
scenario_mod = pytest.importorskip("host.sim.scenario")

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
read_fd, write_fd, root, deadline_ms = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
count, every, warmup = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
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
if warmup:
    unit.run(max_cycles=warmup)  # the gate's main loop, then "Ctrl-C" and the host's request
framelink.stream(count, every)
sys.stderr.write('INDICATOR %s\\n' % unit._current.indicator.key)
"""

UNIT_ERROR = {"unit_offset_c": 1.6, "unit_gain": 1.04, "pixel_offset_sigma_c": 0.3, "netd_scale": 1.0,
              "refresh_hz": 8, "ambient_c": 24.0}


class Streamed:
    def __init__(self, info: UnitInfo | None, frames: list[RawFrame], end: StreamEnd, decoder: FrameDecoder,
                 host: Any, stderr: str = "") -> None:
        self.info, self.frames, self.end, self.decoder, self.host = info, frames, end, decoder, host
        self.stderr = stderr

    def images(self) -> np.ndarray:
        assert self.info is not None
        conv = Converter(self.info.eeprom)
        return np.stack([conv.subpage_image(f.words) for f in self.frames])


def stream_from_firmware(workdir: Path, scenario: dict[str, Any], count: int, config: dict[str, Any] | None = None,
                         every: int = 1, warmup: int = 12, calibration: dict[str, Any] | None = None,
                         sensor_factory: Any = None) -> Streamed:
    spec = scenario_mod.parse(dict({"name": "link", "seed": 21, "duration_s": 120.0, "sensor": UNIT_ERROR,
                                    "calibrated": False, "subjects": []}, **scenario))
    host = runner.UnitHost(spec, sensor_factory)
    root = workdir / f"unit-{len(list(workdir.glob('unit-*')))}"
    runner.prepare_root(spec, host.sensor, root)
    if config is not None:
        (root / "config.json").write_text(json.dumps(dict({"board": runner.SIM_BOARD}, **config)))
    if calibration is not None:
        (root / "calibration.json").write_text(json.dumps(calibration))
    script = workdir / "stream_main.py"
    script.write_text(STREAM_MAIN)
    to_unit_r, to_unit_w = os.pipe()
    from_unit_r, from_unit_w = os.pipe()
    env = dict(os.environ, MICROPYPATH=str(runner.SHIM_DIR))
    proc = subprocess.Popen([runner.micropython_command(), "-X", "heapsize=16M", str(script), str(to_unit_r),
                             str(from_unit_w), str(root), str(host.deadline_us // 1000), str(count), str(every),
                             str(warmup)],
                            pass_fds=(to_unit_r, from_unit_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=str(root))
    os.close(to_unit_r)
    os.close(from_unit_w)
    out = bytearray()
    reader = threading.Thread(target=lambda: out.extend(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
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
        proc.wait(timeout=60)
        reader.join(timeout=10)
    errors = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    decoder = FrameDecoder()
    items = decoder.feed(bytes(out))
    infos = [i for i in items if isinstance(i, UnitInfo)]
    ends = [i for i in items if isinstance(i, StreamEnd)]
    assert ends, f"no stream from the firmware: {errors[-2000:]}"
    return Streamed(infos[0] if infos else None, [i for i in items if isinstance(i, RawFrame)], ends[0], decoder,
                    host, errors)


def test_stdout_stream_from_the_running_firmware(tmp_path):
    got = stream_from_firmware(tmp_path, {"blackbody": {"temperature_c": 37.0, "col": 12, "row": 8, "size_px": 6}},
                               12, config={"refresh_hz": 8, "allow_uncalibrated": True}, every=2)
    assert got.end.status == 0 and got.end.sent == 12 and len(got.frames) == 12
    assert got.decoder.crc_failures == 0
    assert got.info.serial == got.host.sensor.serial
    assert got.info.eeprom == list(got.host.sensor.eeprom)
    counters = [f.counter for f in got.frames]
    steps = [b - a for a, b in zip(counters, counters[1:])]
    assert steps == [1, 3] * 5 + [1]  # every second pair of consecutive subpages
    assert [f.subpage for f in got.frames[:2]] in ([0, 1], [1, 0])
    ticks = [f.ticks_ms for f in got.frames]
    assert all(abs((b - a) - 125 * s) <= 30 for a, b, s in zip(ticks, ticks[1:], steps))  # 8 Hz
    # the raw words convert to the blackbody's temperature through the unit's error
    img = got.images()
    centre = np.nanmean(img[:, 10:12, 14:16])
    assert abs(centre - (1.04 * 37.0 + 1.6)) < 1.0
    assert all(abs(f.ta - got.frames[0].ta) < 0.5 for f in got.frames)
    # the unit screened while streaming; once the stream is over it shows service mode, not a verdict
    assert all(f.state in ("IDLE", "MEASURING", "PASS", "FAIL", "RETRY", "FAULT") for f in got.frames)
    assert "INDICATOR SERVICE" in got.stderr, got.stderr[-500:]


def test_stream_reports_a_sensor_that_does_not_answer(tmp_path):
    def unplugged(scenario, clock):
        sensor = runner.default_sensor(scenario, clock)
        sensor.inject("nack")
        return sensor

    got = stream_from_firmware(tmp_path, {"blackbody": None}, 4, config={"allow_uncalibrated": True},
                               sensor_factory=unplugged)
    framelink = pytest.importorskip("framelink")
    assert got.info is None and not got.frames
    assert got.end.status == framelink.END_SENSOR_ERROR
    assert "I2C" in got.end.message or "sensor" in got.end.message, got.end.message
