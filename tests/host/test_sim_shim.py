"""The virtual unit's machine/time shim and its link to the host, with a tiny firmware loop of
our own (a stand-in sensor speaking the MLX90640's status/RAM handshake), on both interpreters."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from host.sim import runner
from host.sim.scenario import parse

TOY_UNIT = '''
import time
import machine
import neopixel

def run(hooks=None, max_cycles=None):
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=1000000)
    led = neopixel.NeoPixel(machine.Pin(48, machine.Pin.OUT), 1)
    wdt = machine.WDT(timeout=%(wdt_ms)d)
    status = bytearray(2)
    ram = bytearray(64)
    cycles = 0
    while max_cycles is None or cycles < max_cycles:
        cycles += 1
        wdt.feed()
        try:
            i2c.readfrom_mem_into(0x33, 0x8000, status, addrsize=16)
        except OSError as exc:
            hooks.on_frame(time.ticks_ms(), "FAULT", {"errno": exc.args[0]})
            time.sleep_ms(100)
            continue
        if not status[1] & 0x08:
            time.sleep_ms(%(poll_ms)d)
            continue
        i2c.readfrom_mem_into(0x33, 0x0400, ram, addrsize=16)
        i2c.writeto_mem(0x33, 0x8000, b"\\x00\\x00", addrsize=16)
        hottest = max(ram[i] << 8 | ram[i + 1] for i in range(0, 64, 2)) / 100.0
        state = "FAIL" if hottest >= 37.5 else "IDLE"
        led[0] = (255, 0, 0) if state == "FAIL" else ((0, 255, 0) if state == "PASS" else (0, 0, 0))
        led.write()
        hooks.on_frame(time.ticks_ms(), state, {"hottest_c": hottest, "box": (1, 2, 3, 4)})
        if state != "IDLE":
            hooks.on_verdict(time.ticks_ms(), state, None, hottest)
'''


class ToyBus:
    """Status register 0x8000 (bit 3 = new data, datasheet 11.2.2.2), 32 RAM words at 0x0400
    holding the hottest temperatures of the scene in centidegrees; NACK while unplugged."""

    def __init__(self, sensor: "ToySensor"):
        self.sensor = sensor

    def scan(self) -> list[int]:
        return [] if self.sensor.unplugged else [0x33]

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=16):
        if addr != 0x33 or self.sensor.unplugged:
            raise OSError(errno.ENODEV, "NACK")
        if memaddr == 0x8000:
            ready = self.sensor.clock() >= self.sensor.next_ready_s
            buf[:] = bytes([0x00, 0x08 if ready else 0x00])
        elif memaddr == 0x0400:
            hottest = np.sort(self.sensor.scene.ravel())[-len(buf) // 2:]
            words = [int(round(t * 100)) for t in hottest]
            buf[:] = b"".join(w.to_bytes(2, "big") for w in words)
        else:
            buf[:] = bytes(len(buf))

    def writeto_mem(self, addr, memaddr, buf, addrsize=16):
        if addr != 0x33 or self.sensor.unplugged:
            raise OSError(errno.ENODEV, "NACK")
        if memaddr == 0x8000:
            self.sensor.frames += 1
            self.sensor.next_ready_s = self.sensor.clock() + 1 / self.sensor.rate


class ToySensor:
    def __init__(self, scenario, clock):
        self.clock = clock
        self.rate = scenario.sensor.refresh_hz
        self.next_ready_s = 0.0
        self.scene = np.zeros((24, 32))
        self.frames = 0
        self.unplugged = False
        self.i2c = ToyBus(self)

    def set_scene(self, object_c, ambient_c=25.0, vdd=3.3):
        self.scene = np.asarray(object_c, dtype=float)


def toy_firmware(tmp_path: Path, wdt_ms: int = 2000, poll_ms: int = 5) -> Path:
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (firmware / "unit.py").write_text(TOY_UNIT % {"wdt_ms": wdt_ms, "poll_ms": poll_ms})
    return firmware


SCENARIO = {
    "name": "toy", "duration_s": 8.0, "sensor": {"refresh_hz": 8},
    "subjects": [{"arrive_s": 2.0, "dwell_s": 2.0, "distance_m": 0.4, "skin_c": 39.0, "expect": "fail"}],
}


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_toy_firmware_runs_in_virtual_time(tmp_path, interpreter):
    scenario = parse(SCENARIO)
    result = runner.run(scenario, interpreter=interpreter, sensor_factory=ToySensor,
                        firmware_dir=toy_firmware(tmp_path), boards_dir=tmp_path / "none")
    assert result.end == "scenario over"
    assert result.virtual_s >= 8.0
    # 8 Hz for 8 s of virtual time: the data-ready handshake paced the loop
    frame_times = [f.t_s for f in result.frames]
    assert 60 <= len(frame_times) <= 66, len(frame_times)
    gaps = np.diff(frame_times)
    assert abs(float(np.median(gaps)) - 0.125) < 0.01
    # the toy reads the subject's hottest pixel: fever while they stand there
    fails = [v for v in result.verdicts if v.state == "fail"]
    assert fails and all(2.0 - 1.6 <= v.t_s <= 2.0 + 2.0 + 1.0 for v in fails)
    assert result.subjects[0].verdict == "fail"
    # the NeoPixel timeline went red during the fever and dark afterwards
    colours = [(t, e["pixels"][0]) for t, e in result.timeline if e["kind"] == "neopixel"]
    assert any(c == [255, 0, 0] for _, c in colours)
    assert colours[-1][1] == [0, 0, 0] and colours[-1][0] > 4.0


def test_starved_watchdog_fails_the_run(tmp_path):
    scenario = parse(dict(SCENARIO, duration_s=3.0))
    # the toy sleeps 300 ms between polls with a 200 ms watchdog
    firmware = toy_firmware(tmp_path, wdt_ms=200, poll_ms=300)
    with pytest.raises(runner.SimError, match="watchdog"):
        runner.run(scenario, sensor_factory=ToySensor, firmware_dir=firmware, boards_dir=tmp_path / "none")


def test_unplugged_sensor_reaches_the_firmware_as_oserror(tmp_path):
    def unplugged(scenario, clock):
        sensor = ToySensor(scenario, clock)
        sensor.unplugged = True
        return sensor

    result = runner.run(parse(dict(SCENARIO, duration_s=1.0)), sensor_factory=unplugged,
                        firmware_dir=toy_firmware(tmp_path), boards_dir=tmp_path / "none")
    faults = [f for f in result.frames if f.state == "fault"]
    assert faults and all(f.info["errno"] == errno.ENODEV for f in faults)
    assert not result.verdicts


def test_firmware_crash_is_reported(tmp_path):
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    (firmware / "unit.py").write_text("def run(hooks=None, max_cycles=None):\n    raise ValueError('boom')\n")
    with pytest.raises(runner.SimError, match="crashed.*boom"):
        runner.run(parse(SCENARIO), sensor_factory=ToySensor, firmware_dir=firmware, boards_dir=tmp_path / "none")


def test_png_and_gif_show_the_run(tmp_path):
    from PIL import Image

    from host.sim import render

    result = runner.run(parse(SCENARIO), sensor_factory=ToySensor, firmware_dir=toy_firmware(tmp_path),
                        boards_dir=tmp_path / "none")
    [png] = render.write_pngs(result, tmp_path / "png")
    assert png.name == "subject_00.png"
    picture = Image.open(png).convert("RGB")
    assert picture.size == (32 * render.SCALE, 24 * render.SCALE + render.BAR_PX)
    # the indicator lamp in the status bar shows the NeoPixel's red of the FAIL verdict
    assert picture.getpixel((22, 24 * render.SCALE + 22)) == (255, 0, 0)
    # the face is hotter than the background: warm colours in the middle, dark at the edge
    middle = picture.getpixel((16 * render.SCALE, 12 * render.SCALE))
    corner = picture.getpixel((2, 2))
    assert sum(middle) > sum(corner) + 150
    gif = tmp_path / "run.gif"
    count = render.write_gif(result, gif)
    animation = Image.open(gif)
    assert animation.n_frames == count == len(result.frames)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_virtual_clock_module_behaves_like_micropython_time():
    import datetime
    import importlib.util
    import sys

    saved = sys.modules.get("simlink")
    try:
        simlink = runner._load_module("simlink", runner.SHIM_DIR / "simlink.py")
        spec = importlib.util.spec_from_file_location("virtual_time", runner.SHIM_DIR / "time.py")
        vtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vtime)
        simlink.connect(None, start_us=0, deadline_us=None)
        start = vtime.ticks_ms()
        vtime.sleep_ms(1500)
        assert vtime.ticks_diff(vtime.ticks_ms(), start) == 1500  # sleeping jumps the clock
        vtime.sleep(0.25)
        assert 1750 <= vtime.ticks_diff(vtime.ticks_ms(), start) <= 1751
        # wrap-around arithmetic of ticks (period 2**30)
        assert vtime.ticks_diff(vtime.ticks_add(2**30 - 5, 10), 2**30 - 5) == 10
        assert vtime.ticks_diff(3, 2**30 - 2) == 5
        # the calendar functions agree with CPython's (MicroPython's epoch is 2000-01-01)
        for secs in (0, 86399, 951782400, 1000000000, 1767225600 - 946684800):
            expected = datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=secs)
            t = vtime.gmtime(secs)
            assert t[:6] == (expected.year, expected.month, expected.day, expected.hour, expected.minute,
                             expected.second)
            assert t[6] == expected.weekday() and t[7] == expected.timetuple().tm_yday
            assert vtime.mktime(t) == secs
    finally:
        if saved is None:
            sys.modules.pop("simlink", None)
        else:
            sys.modules["simlink"] = saved


def test_network_modules_are_poisoned_and_recorded(tmp_path):
    firmware = toy_firmware(tmp_path)
    (firmware / "unit.py").write_text(TOY_UNIT % {"wdt_ms": 2000, "poll_ms": 5} + '''
_real_run = run


def run(hooks=None, max_cycles=None):
    try:
        import socket  # noqa: F401
    except ImportError:
        pass
    import usocket
    try:
        usocket.getaddrinfo("example.com", 80)
    except ImportError:
        pass
    return _real_run(hooks, max_cycles)
''')
    result = runner.run(parse(dict(SCENARIO, duration_s=1.0)), sensor_factory=ToySensor, firmware_dir=firmware,
                        boards_dir=tmp_path / "none")
    names = [e["name"] for _, e in result.timeline if e["kind"] == "forbidden_import"]
    assert names == ["socket", "usocket.getaddrinfo"]
    assert result.frames  # the unit went on running
