"""Privacy: the firmware never talks to a network.

1. Static: an AST scan of firmware/*.py. Only boot.py imports network/bluetooth, and all it does
   with them is active(False); no module imports socket, ssl, espnow, webrepl, requests, MQTT or
   the like; only unit.py (the wiring module) imports machine.
2. At run time: boot.py and the main loop run on the real MicroPython unix port with every network
   module poisoned (importing one is recorded and raises), network/bluetooth replaced by fakes that
   record each call, and a fake I2C bus serving raw words the sensor emulator produced for an empty
   room and then a person. The run must screen that person, switch WLAN STA + AP and BLE off, and
   touch nothing else.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
NETWORK_MODULES = {"network", "socket", "usocket", "ssl", "ussl", "tls", "espnow", "webrepl", "webrepl_setup",
                   "requests", "urequests", "umqtt", "mqtt", "aioble", "bluetooth", "ubluetooth", "ntptime",
                   "urllib", "http", "asyncio_socket", "mip", "upip", "wlan", "lwip"}
RADIO_MODULES = {"network", "bluetooth"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            names.add("__import__")
    return names


def test_static_only_boot_touches_radios_and_nothing_networks():
    files = sorted(FIRMWARE.glob("*.py"))
    assert any(f.name == "boot.py" for f in files) and any(f.name == "unit.py" for f in files)
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = _imports(tree)
        assert "__import__" not in imported, f"{path.name}: dynamic __import__"
        if path.name == "boot.py":
            assert imported <= RADIO_MODULES, f"boot.py imports {imported - RADIO_MODULES}"
        else:
            bad = imported & NETWORK_MODULES
            assert not bad, f"{path.name} imports {sorted(bad)}: only boot.py may, and only to switch radios off"
        if "machine" in imported:
            assert path.name == "unit.py", f"{path.name} imports machine: only the wiring module (unit.py) may"


def test_static_boot_only_switches_radios_off():
    tree = ast.parse((FIRMWARE / "boot.py").read_text())
    active_calls = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in ("connect", "config", "ifconfig", "gap_advertise", "gap_connect", "gap_scan", "irq",
                        "send", "add_peer", "scan"):
                pytest.fail(f"boot.py calls .{name}(): it may only switch radios off")
            if name == "active":
                active_calls += 1
                assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and node.args[0].value is False, \
                    "boot.py calls active() with something other than False"
    assert active_calls >= 2  # WLAN interfaces and BLE


# ------------------------------------------------------------------------------------------------
# run time, on the unix port

POISON = '''# poisoned by the privacy test: importing this module is a violation
import privacy_log
privacy_log.violation("import %s")
raise ImportError("privacy test: firmware imported %s")
'''

PRIVACY_LOG = '''violations = []
radio_calls = []
def violation(what):
    violations.append(what)
'''

NETWORK_FAKE = '''# stand-in recording every call: boot.py may only call active(False)
import privacy_log
STA_IF = 0
AP_IF = 1
class WLAN:
    def __init__(self, interface=0):
        self.interface = interface
    def active(self, value=None):
        privacy_log.radio_calls.append(("wlan", self.interface, value))
        if value is not False:
            privacy_log.violation("WLAN(%d).active(%r)" % (self.interface, value))
        return False
    def __getattr__(self, name):
        privacy_log.violation("WLAN.%s" % name)
        raise AttributeError(name)
def __getattr__(name):
    privacy_log.violation("network.%s" % name)
    raise AttributeError(name)
'''

BLUETOOTH_FAKE = '''import privacy_log
class BLE:
    def active(self, value=None):
        privacy_log.radio_calls.append(("ble", 0, value))
        if value is not False:
            privacy_log.violation("BLE.active(%r)" % (value,))
        return False
    def __getattr__(self, name):
        privacy_log.violation("BLE.%s" % name)
        raise AttributeError(name)
'''

MACHINE_FAKE = '''# hardware stand-ins for the privacy run: a fake I2C bus that answers like an MLX90640
# (datasheet 10: status 0x8000 bit 3 = new data, bit 0 = subpage; control 0x800D; RAM 0x0400;
# EEPROM 0x2400), serving raw words the emulator made on the host.
import json
_data = json.loads(open(_DATA).read())
_EEPROM = _data["eeprom"]
_FRAMES = _data["frames"]  # list of [subpage 0 frame, subpage 1 frame], 834 words each
_SWITCH = _data["switch_after"]  # subpage reads per scene
class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    def __init__(self, n, mode=-1, pull=-1, value=None):
        self.n = n
        self.level = 1
    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v
class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        pass
    def freq(self, hz):
        pass
    def duty_u16(self, d):
        pass
class WDT:
    feeds = 0
    def __init__(self, id=0, timeout=5000):
        pass
    def feed(self):
        WDT.feeds += 1
class I2C:
    reads = 0
    def __init__(self, id=0, scl=None, sda=None, freq=400000):
        self.control = _FRAMES[0][0][832]
        self.subpage = 0
        self.ready = True
        self.polls = 0
    def _frame(self):
        scene = I2C.reads // _SWITCH
        if scene >= len(_FRAMES):
            scene = len(_FRAMES) - 1
        return _FRAMES[scene][self.subpage]
    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        if addr != 0x33:
            raise OSError(19)
        n = len(buf) // 2
        for k in range(n):
            r = reg + k
            if 0x2400 <= r < 0x2740:
                w = _EEPROM[r - 0x2400]
            elif 0x0400 <= r < 0x0740:
                w = self._frame()[r - 0x0400]
            elif r == 0x8000:
                self.polls += 1
                if not self.ready and self.polls >= 2:
                    self.ready = True
                    self.subpage ^= 1
                    I2C.reads += 1
                w = (0x0008 if self.ready else 0) | self.subpage
            elif r == 0x800D:
                w = self.control
            else:
                w = 0
            buf[2 * k] = w >> 8
            buf[2 * k + 1] = w & 0xFF
    def writeto_mem(self, addr, reg, buf, addrsize=8):
        if addr != 0x33:
            raise OSError(19)
        w = (buf[0] << 8) | buf[1]
        if reg == 0x8000:
            self.ready = False
            self.polls = 0
        elif reg == 0x800D:
            self.control = w
SoftI2C = I2C
'''

NEOPIXEL_FAKE = '''class NeoPixel:
    def __init__(self, pin, n):
        self.n = n
    def __setitem__(self, i, v):
        pass
    def write(self):
        pass
'''

HARNESS = '''import sys
import privacy_log
# the poison works: a firmware import of socket would be caught
try:
    import socket
except ImportError:
    pass
assert privacy_log.violations == ["import socket"], privacy_log.violations
privacy_log.violations.clear()
exec(open(%(boot)r).read(), {"__name__": "__main__"})
import unit
class Hooks:
    verdicts = []
    frames = 0
    def on_verdict(self, now_ms, state, reason, reading_c):
        Hooks.verdicts.append([state, reason, reading_c])
    def on_frame(self, now_ms, state, info):
        Hooks.frames += 1
u = unit.run(hooks=Hooks(), max_cycles=%(cycles)d)
import json, machine
print("@@RESULT " + json.dumps({"violations": privacy_log.violations, "radio_calls": privacy_log.radio_calls,
      "verdicts": Hooks.verdicts, "frames": Hooks.frames, "feeds": machine.WDT.feeds,
      "errors": u.errors, "modules": sorted(sys.modules.keys())}))
'''


def _emulated_frames(tmp: Path) -> Path:
    from host.sim.scene import Lens, Person, Scene
    from host.virtual.sensor import SensorEmulator, generate_eeprom

    sensor = SensorEmulator(generate_eeprom(7), seed=7, netd_scale=0.0)
    lens = Lens(55)
    frames = []
    for people in ([], [Person(skin_c=35.5, distance_m=0.5, arrive_s=0.0, dwell_s=10.0)]):
        image, _ = Scene(lens, 24.0, people).render(1.0)
        sensor.set_scene(image, ambient_c=24.0)
        frames.append([list(map(int, sensor.raw_frame(0))), list(map(int, sensor.raw_frame(1)))])
    path = tmp / "frames.json"
    path.write_text(json.dumps({"eeprom": list(map(int, sensor.eeprom)), "frames": frames, "switch_after": 20}))
    return path


def _micropython() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("the `micropython` command is missing; CI never skips the MicroPython tier")
        pytest.skip("the `micropython` command is missing")
    return exe


def test_unix_port_run_with_network_poisoned(tmp_path):
    exe = _micropython()
    fakes = tmp_path / "fakes"
    root = tmp_path / "root"
    fakes.mkdir()
    (root / "boards").mkdir(parents=True)
    for name in sorted(NETWORK_MODULES - RADIO_MODULES):
        (fakes / f"{name}.py").write_text(POISON % (name, name))
    (fakes / "privacy_log.py").write_text(PRIVACY_LOG)
    (fakes / "network.py").write_text(NETWORK_FAKE)
    (fakes / "bluetooth.py").write_text(BLUETOOTH_FAKE)
    data = _emulated_frames(tmp_path)
    (fakes / "machine.py").write_text(f"_DATA = {str(data)!r}\n" + MACHINE_FAKE)
    (fakes / "neopixel.py").write_text(NEOPIXEL_FAKE)
    shutil.copy(ROOT / "boards" / "esp32-devkitc.json", root / "boards")
    (root / "config.json").write_text(json.dumps({"board": "esp32-devkitc", "refresh_hz": 64}))
    (root / "calibration.json").write_text(json.dumps({"offset_c": 0.0, "gain": 1.0}))
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS % {"boot": str(FIRMWARE / "boot.py"), "cycles": 120})
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(fakes), str(FIRMWARE)]))
    proc = subprocess.run([exe, "-X", "heapsize=16M", str(harness)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("@@RESULT "):])
    assert result["violations"] == [], result["violations"]
    # boot.py switched both WiFi interfaces and BLE off, and did nothing else with them
    assert sorted(map(tuple, result["radio_calls"])) == [("ble", 0, False), ("wlan", 0, False), ("wlan", 1, False)]
    loaded = set(result["modules"])
    assert not (loaded & (NETWORK_MODULES - RADIO_MODULES)), loaded
    # and the firmware really ran: frames through the pipeline, the watchdog fed, the person screened
    assert result["frames"] > 50 and result["feeds"] >= 120
    assert result["errors"] == {}, result["errors"]
    states = [v[0] for v in result["verdicts"]]
    assert states == ["PASS"], result["verdicts"]
    assert abs(result["verdicts"][0][2] - 35.5) < 0.5
    # nothing but the files the unit owns was written
    assert {p.name for p in root.iterdir()} <= {"boards", "config.json", "calibration.json", "counters.json"}
