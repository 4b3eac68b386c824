"""The firmware's main loop (firmware/unit.py) end to end under CPython: the real driver
(firmware/mlx90640.py) on the register-level sensor emulator (host/virtual/sensor.py), scenes from
the simulator's renderer (host/sim/scene.py), and hand-written fakes for the board's hardware
(machine.Pin/PWM/I2C/WDT, neopixel). Time is simulated: a stepping clock shared by the emulator
and the firmware, so 20 s of gate time take a few seconds.

What is checked: verdicts and readings, FAULT on an unplugged sensor / corrupt config / missing
calibration / wrong board profile / hidden blackbody and recovery without a reset, the watchdog fed
every cycle, the indicator outputs, and the self-report `host flash` reads back."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from host.sim.scene import Blackbody, Lens, Person, Scene  # noqa: E402
from host.virtual.sensor import SensorEmulator, SteppingClock  # noqa: E402

AMBIENT = 24.0


class Hardware:
    """The board around the firmware: what machine.* and neopixel.* reach in this test."""

    def __init__(self, seed: int = 3, netd_scale: float = 0.5) -> None:
        # each clock read (bus access, tick) takes 8 ms of gate time: the driver's status polling
        # then needs few real sleeps per subpage
        self.clock = SteppingClock(step_s=0.008)
        self.sensor = SensorEmulator(seed=seed, clock=self.clock, netd_scale=netd_scale)
        self.pins: dict[int, list[tuple[int, int]]] = {}
        self.pwm: list[tuple[int, int, int]] = []
        self.neopixel: list[tuple[int, tuple]] = []
        self.feeds: list[int] = []
        self.wdt_timeout: int | None = None
        self.i2c_made = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


HW: Hardware | None = None


class FakePin:
    IN, OUT, OPEN_DRAIN, PULL_UP = 1, 3, 7, 2

    def __init__(self, n, mode=-1, pull=-1, value=None):
        self.n = n
        self.level = None
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return 1 if self.level is None else self.level
        if v != self.level:
            self.level = v
            HW.pins.setdefault(self.n, []).append((HW.now_ms(), v))


class FakePWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin.n
        self.hz = freq

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, d):
        HW.pwm.append((HW.now_ms(), self.hz, d))


def FakeI2C(bus_id, scl=None, sda=None, freq=400000):  # noqa: N802 - machine.I2C is a class there
    HW.i2c_made += 1
    return HW.sensor.i2c


class FakeWDT:
    def __init__(self, id=0, timeout=5000):
        HW.wdt_timeout = timeout

    def feed(self):
        HW.feeds.append(HW.now_ms())


class FakeNeoPixel:
    def __init__(self, pin, n):
        self.buf = [(0, 0, 0)] * n

    def __setitem__(self, i, v):
        self.buf[i] = v

    def write(self):
        HW.neopixel.append((HW.now_ms(), tuple(self.buf)))


class SimClock:
    """time.ticks_* on the emulator's stepping clock; sleeping advances it."""

    def ticks_ms(self):
        return HW.now_ms() & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def ticks_add(self, a, d):
        return (a + d) & 0x3FFFFFFF

    def sleep_ms(self, ms):
        HW.clock.advance(ms / 1000)

    def sleep_us(self, us):
        HW.clock.advance(us / 1e6)


machine = types.ModuleType("machine")
machine.Pin = FakePin
machine.PWM = FakePWM
machine.I2C = FakeI2C
machine.WDT = FakeWDT
neopixel = types.ModuleType("neopixel")
neopixel.NeoPixel = FakeNeoPixel


@pytest.fixture()
def unit_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "neopixel", neopixel)
    sys.modules.pop("unit", None)
    import unit

    yield unit
    sys.modules.pop("unit", None)


class Recorder:
    def __init__(self):
        self.verdicts: list[tuple[float, str, str | None, float | None]] = []
        self.frames: list[tuple[float, str, dict]] = []

    def on_verdict(self, now_ms, state, reason, reading_c):
        self.verdicts.append((HW.clock() , state, reason, reading_c))

    def on_frame(self, now_ms, state, info):
        self.frames.append((HW.clock(), state, info))

    def states(self):
        return [v[1] for v in self.verdicts]


def make_root(tmp_path: Path, config: dict | None = None, calibration: dict | None = "unit",
              board: str = "esp32-devkitc") -> Path:
    (tmp_path / "boards").mkdir()
    for profile in (ROOT / "boards").glob("*.json"):
        shutil.copy(profile, tmp_path / "boards" / profile.name)
    cfg = {"unit_id": "test", "board": board}
    cfg.update(config or {})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if calibration == "unit":
        calibration = {"offset_c": 0.0, "gain": 1.0, "date": "2026-11-30"}
    if calibration is not None:
        (tmp_path / "calibration.json").write_text(json.dumps(calibration))
    return tmp_path


def run(unit_module, seconds: float, scene_at, recorder: Recorder | None = None, start=None, events=()):
    """Run the loop for `seconds` of simulated time; scene_at(t) -> (object temps, ambient) or None."""
    global HW
    u = start
    if u is None:
        u = unit_module.Unit(recorder, clock=SimClock())
        u.start()
    end = HW.clock() + seconds
    pending = sorted(events, key=lambda e: e[0])
    while HW.clock() < end:
        t = HW.clock()
        while pending and pending[0][0] <= t:
            pending.pop(0)[1]()
        image = scene_at(t)
        if image is not None:
            HW.sensor.set_scene(image, ambient_c=AMBIENT)
        u.cycle()
    return u


def renderer(people=(), blackbody=None, fov=55):
    scene = Scene(Lens(fov), AMBIENT, list(people), [], blackbody)
    return lambda t: scene.render(t)[0]


@pytest.fixture()
def hw():
    global HW
    HW = Hardware()
    yield HW
    HW = None


def _level(log: list[tuple[int, int]], t_ms: float) -> int | None:
    level = None
    for t, v in log:
        if t <= t_ms:
            level = v
    return level


def _max_feed_gap(hw: Hardware) -> int:
    feeds = hw.feeds
    return max(b - a for a, b in zip(feeds, feeds[1:]))


def test_screens_a_queue_pass_then_fail(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path))
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=3.0, dwell_s=4.0),
              Person(skin_c=37.8, distance_m=0.6, arrive_s=11.0, dwell_s=4.0)]
    u = run(unit_module, 17.0, renderer(people), rec)
    verdicts = [(round(t, 2), s, r, v) for t, s, r, v in rec.verdicts]
    finals = [v for v in rec.verdicts if v[1] in ("PASS", "FAIL")]
    assert [v[1] for v in finals] == ["PASS", "FAIL"], verdicts
    first, second = finals
    assert 3.0 <= first[0] <= 5.0, verdicts  # within 2 s of stopping, at 8 Hz
    assert 11.0 <= second[0] <= 13.0, verdicts
    assert abs(first[3] - 35.5) < 0.5 and abs(second[3] - 37.8) < 0.5, verdicts
    assert "FAULT" not in rec.states()
    assert hw.wdt_timeout and _max_feed_gap(hw) < hw.wdt_timeout / 4
    # the green LED (GPIO25) is lit through the PASS, the red one (GPIO26) through the FAIL
    for at in (0.1, 1.0, 2.5):
        t_pass = (first[0] + at) * 1000
        t_fail = (second[0] + at) * 1000
        assert _level(hw.pins[25], t_pass) == 1 and _level(hw.pins[26], t_pass) == 0, at
        assert _level(hw.pins[26], t_fail) == 1 and _level(hw.pins[25], t_fail) == 0, at
    # the buzzer beeped (PWM duty on) for both verdicts
    assert len([1 for _, _, d in hw.pwm if d]) >= 2
    assert u.counters.values["passes"] == 1 and u.counters.values["fails"] == 1
    # on_frame tells the simulator what the unit measured without the unit storing it
    info = rec.frames[-1][2]
    for key in ("status", "hot_c", "reading_c", "distance_m", "head_box", "ambient_c"):
        assert key in info
    stored = {p.name for p in Path(".").iterdir()}
    assert stored <= {"boards", "config.json", "calibration.json", "counters.json"}, stored


def test_unplugged_sensor_faults_and_recovers_without_reset(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path))
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=3.0, dwell_s=3.5),
              Person(skin_c=35.8, distance_m=0.5, arrive_s=14.0, dwell_s=4.0)]
    events = [(1.5, lambda: hw.sensor.inject("nack")), (6.0, hw.sensor.clear_faults)]
    made_before = hw.i2c_made
    u = run(unit_module, 19.0, renderer(people), rec, events=events)
    states = rec.states()
    assert "FAULT" in states, rec.verdicts
    fault_at = next(t for t, s, _, _ in rec.verdicts if s == "FAULT")
    assert 1.5 <= fault_at <= 2.5
    # nobody passes while the sensor is gone (subject 1 stands there during the fault)
    assert not [v for v in rec.verdicts if v[1] == "PASS" and v[0] < 6.0], rec.verdicts
    # recovered without a reset: a new I2C object, then the next subject passes
    assert hw.i2c_made > made_before + 1
    assert any(s == "PASS" and t > 14.0 for t, s, _, _ in rec.verdicts), rec.verdicts
    assert u.screening.state != "FAULT" and "sensor" not in u.errors
    assert _max_feed_gap(hw) < hw.wdt_timeout / 4
    assert u.counters.values["faults"] >= 1


def test_sensor_unplugged_mid_frame_never_passes(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path))
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=2.5, dwell_s=6.0)]
    events = [(2.0, lambda: hw.sensor.inject("unplug_mid_frame")), (3.0, hw.sensor.clear_faults)]
    run(unit_module, 9.0, renderer(people), rec, events=events)
    assert "FAULT" in rec.states()
    faults = [t for t, s, _, _ in rec.verdicts if s == "FAULT"]
    assert not [t for t, s, _, _ in rec.verdicts if s == "PASS" and faults[0] <= t <= 3.0]


def test_corrupt_config_faults_and_a_fixed_file_clears_it(unit_module, hw, tmp_path, monkeypatch):
    root = make_root(tmp_path)
    monkeypatch.chdir(root)
    rec = Recorder()
    good = (root / "config.json").read_text()
    events = [(1.0, lambda: (root / "config.json").write_text('{"threshold_c": 38.0, "mo')),
              (9.0, lambda: (root / "config.json").write_text(good))]
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=6.5, dwell_s=2.0),
              Person(skin_c=35.5, distance_m=0.5, arrive_s=15.5, dwell_s=3.0)]
    u = run(unit_module, 19.0, renderer(people), rec, events=events)
    fault = [t for t, s, _, _ in rec.verdicts if s == "FAULT"]
    assert fault and 1.0 <= fault[0] <= 6.5, rec.verdicts  # noticed at the next 5 s file check
    assert not [t for t, s, _, _ in rec.verdicts if s == "PASS" and t < 9.0]
    assert any(s == "PASS" and t > 15.5 for t, s, _, _ in rec.verdicts), rec.verdicts
    assert not u.errors


def test_missing_calibration_faults_unless_explicitly_allowed(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path, calibration=None))
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=2.0, dwell_s=4.0)]
    u = run(unit_module, 6.0, renderer(people), rec)
    assert rec.states() == ["FAULT"], rec.verdicts
    assert "calibrat" in u.fault_reason()


def test_allow_uncalibrated_screens_and_says_so_at_boot(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path, config={"allow_uncalibrated": True}, calibration=None,
                                board="esp32s3-devkitc-1"))
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=3.0, dwell_s=4.0)]
    run(unit_module, 6.0, renderer(people), rec)
    assert "PASS" in rec.states(), rec.verdicts
    purple = [t for t, px in hw.neopixel if px[0][0] > 0 and px[0][2] > 0 and px[0][1] == 0]
    assert purple and purple[0] < 500  # the "uncalibrated" notice right at boot


def test_wrong_board_profile_is_a_fault_not_a_crash(unit_module, hw, tmp_path, monkeypatch):
    root = make_root(tmp_path, board="esp32-devkitc")
    data = json.loads((root / "boards" / "esp32-devkitc.json").read_text())
    data["i2c"]["scl"] = 7  # a flash pin
    (root / "boards" / "esp32-devkitc.json").write_text(json.dumps(data))
    monkeypatch.chdir(root)
    rec = Recorder()
    u = run(unit_module, 2.0, lambda t: None, rec)
    assert rec.states() == ["FAULT"]
    assert "GPIO7" in u.fault_reason()
    report = unit_module.self_report()
    assert report["board"] is None and not report["sensor"] and any("GPIO7" in e for e in report["errors"])


def test_blackbody_corrects_an_uncalibrated_unit_and_hiding_it_faults(unit_module, hw, tmp_path, monkeypatch):
    bb = {"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 3}
    monkeypatch.chdir(make_root(tmp_path, config={"blackbody": bb}, calibration=None))
    hw.sensor.set_unit_error(offset_c=1.8, gain=1.0)
    rec = Recorder()
    people = [Person(skin_c=35.5, distance_m=0.5, arrive_s=3.0, dwell_s=3.0)]
    reference = Blackbody(40.0, 28, 1, 3)
    with_bb = renderer(people, reference)
    without_bb = renderer(people, None)
    hide_at = 9.0
    u = run(unit_module, 12.0, lambda t: with_bb(t) if t < hide_at else without_bb(t), rec)
    passes = [v for v in rec.verdicts if v[1] == "PASS"]
    assert passes and abs(passes[0][3] - 35.5) < 0.5, rec.verdicts  # the 1.8 C unit error is gone
    assert abs(u.correction.drift_cc / 100 + 1.8) < 0.3
    faults = [t for t, s, _, _ in rec.verdicts if s == "FAULT"]
    assert faults and hide_at <= faults[-1] <= hide_at + 2.0, rec.verdicts
    assert "blackbody" in u.fault_reason()


def test_self_report(unit_module, hw, tmp_path, monkeypatch):
    monkeypatch.chdir(make_root(tmp_path, calibration={"offset_c": 0.2, "gain": 1.0, "date": "2026-11-30",
                                                        "serial": "ffffffffffff"}))
    report = json.loads(unit_module.self_report_json())
    from version import VERSION

    assert report["version"] == VERSION and report["board"] == "esp32-devkitc"
    assert report["sensor"] is True and report["serial"] == hw.sensor.serial
    assert report["config_valid"] is True
    assert report["calibration_valid"] is False  # the file names another sensor
    assert any("recalibrate" in e for e in report["errors"])
