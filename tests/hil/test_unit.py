"""Acceptance checks on one unit. Each test is one named check in `host test`'s report."""

from __future__ import annotations

import base64
import json
import re
import struct

import numpy as np
import pytest

from host.link.frames import Converter, firmware_module

FRAME_RATE_TOLERANCE = 0.15  # measured subpage rate within 15 % of the configured refresh
DRIVER_TOLERANCE_C = 0.01  # the ESP32 computes in single precision: within 0.001 C on the Melexis data


def _config(unit_files) -> dict:
    store = firmware_module("store")
    raw = unit_files["config.json"]
    data = json.loads(raw) if raw else {}
    config, _ = store.validate_config(data)
    return config


def test_sensor_present_and_serial_matches_calibration(stream, unit_files):
    """The unit streams frames from its sensor, and calibration.json was made for this sensor."""
    assert stream.frames, "the unit sent no frames: the sensor is missing or not answering"
    serial = stream.info.serial
    assert serial and serial != "0" * len(serial), "the sensor serial is empty"
    raw = unit_files["calibration.json"]
    assert raw is not None, "no calibration.json on the unit: run host calibrate"
    data = json.loads(raw)
    assert str(data.get("serial", "")).lower() == serial.lower(), (
        f"calibration.json is for sensor {data.get('serial')!r}, the unit's sensor is {serial}: recalibrate")


def test_frame_rate_matches_configured_refresh(stream, unit_files):
    """Subpages arrive at the configured refresh rate, on the unit's own clock."""
    config = _config(unit_files)
    want = float(config["refresh_hz"])
    ticks = [f.ticks_ms for f in stream.frames]
    span_ms = (ticks[-1] - ticks[0]) & 0x3FFFFFFF
    assert span_ms > 0, "frame times do not advance"
    # the unit's frame counter also counts the subpages it processed but did not send
    counted = stream.frames[-1].counter - stream.frames[0].counter
    assert counted > 0, "the unit's frame counter does not advance"
    rate = counted * 1000.0 / span_ms
    assert abs(rate - want) <= FRAME_RATE_TOLERANCE * want, f"{rate:.2f} subpages/s, configured {want:g} Hz"
    assert abs(stream.info.refresh_hz - want) < 1e-6, (
        f"the sensor runs at {stream.info.refresh_hz:g} Hz, config.json says {want:g} Hz")


_ON_UNIT = """
import binascii, struct, mlx90640
_e = struct.unpack('<832H', binascii.a2b_base64(%r))
_f = list(struct.unpack('<834H', binascii.a2b_base64(%r)))
_p = mlx90640.extract_params(_e)
_o = [0.0] * 768
_ta = mlx90640.get_ta(_p, _f)
mlx90640.calculate_to(_p, _f, 1.0, _ta - 8.0, _o)
print(repr(_ta))
print(' '.join(['%%.5f' %% _v for _v in _o]))
del _e, _f, _p, _o
"""


def test_driver_on_unit_matches_cpython(unit, stream):
    """The unit's driver and the host's copy of it give the same temperatures for the same raw words."""
    conv = Converter(stream.info.eeprom)
    eeprom_b64 = base64.b64encode(struct.pack("<832H", *stream.info.eeprom)).decode()
    for frame in stream.frames[-2:]:  # one of each subpage
        words = [int(w) for w in frame.words]
        out = unit.exec(_ON_UNIT % (eeprom_b64, base64.b64encode(struct.pack("<834H", *words)).decode()), timeout=60)
        lines = out.strip().splitlines()
        unit_ta = float(lines[-2])
        unit_to = np.array([float(v) for v in lines[-1].split()]).reshape(24, 32)
        host_img = conv.subpage_image(frame.words)
        have = ~np.isnan(host_img)
        assert abs(unit_ta - conv.ta(frame.words)) < DRIVER_TOLERANCE_C
        worst = float(np.max(np.abs(unit_to[have] - host_img[have])))
        assert worst < DRIVER_TOLERANCE_C, f"unit and host differ by up to {worst:.4f} C on subpage {frame.subpage}"


def test_config_and_calibration_valid(unit_files, stream):
    """config.json and calibration.json pass the firmware's own validation."""
    store = firmware_module("store")
    raw_config = unit_files["config.json"]
    assert raw_config is not None, "no config.json on the unit: run host deploy"
    _, errors = store.validate_config(json.loads(raw_config))
    assert not errors, errors[0]
    raw_cal = unit_files["calibration.json"]
    assert raw_cal is not None, "no calibration.json on the unit: run host calibrate"
    cal, errors = store.validate_calibration(json.loads(raw_cal), stream.info.serial)
    assert not errors and cal is not None, errors[0] if errors else "calibration rejected"


def test_files_match_release(port, unit):
    """Every file on the unit matches the release this host ships (`host verify`)."""
    import subprocess
    import sys

    from host import PROJECT_ROOT

    unit.close(resume=False)  # verify opens the port itself
    try:
        proc = subprocess.run([sys.executable, "-m", "host", "verify", "--port", port], capture_output=True,
                              text=True, timeout=300, cwd=str(PROJECT_ROOT))
    finally:
        unit.__init__(port)  # reconnect for the checks that follow
    lines = (proc.stdout + "\n" + proc.stderr).strip().splitlines()
    # name the differing files first (host verify prints them before its summary)
    named = [m.group(0).strip() for line in lines
             for m in re.finditer(r"\b(modified|missing|extra)\b[^│|]*", line, re.IGNORECASE)]
    assert proc.returncode == 0, (" / ".join(named[:3]) if named else lines[-1] if lines
                                  else f"host verify exited with {proc.returncode}")


_INDICATOR_ON_UNIT = """
import json, time, unit
_u = getattr(unit, '_current', None) or unit.Unit()
_ind = _u.indicator
_out = _ind.output
def _hw():
    np = getattr(_out, 'np', None)
    if np is not None:
        shown = getattr(np, '_shown', None)  # the virtual unit's shim: what write() last sent
        return list(shown[0]) if shown else list(np[0])
    if hasattr(_out, 'pass_pin'):
        return [_out.pass_pin.value(), _out.fail_pin.value()]
    return None
_res = []
_base = time.ticks_add(time.ticks_ms(), 60000)  # past any boot notice
for _st, _rs in %s:
    _ind.set_state(_st, _rs, _base)
    _seen = []  # run lengths of what the hardware holds, sampled every 25 ms for 3 s
    for _t in range(0, 3000, 25):
        _ind.tick(time.ticks_add(_base, _t))
        _v = _hw()
        if _seen and _seen[-1][0] == _v:
            _seen[-1][1] += 1
        else:
            _seen.append([_v, 1])
    _res.append([_st, _rs, _seen])
    _base = time.ticks_add(_base, 10000)
_ind.set_state('FAULT', None, _base)
print(json.dumps({'kind': type(_out).__name__, 'states': _res}))
"""

STATES = [("IDLE", None), ("MEASURING", None), ("PASS", None), ("FAIL", None), ("RETRY", "too_far"),
          ("RETRY", "multiple"), ("FAULT", None)]


def _ask_operator(question: str) -> bool:
    """A real unit: the operator confirms what the indicator shows (on the terminal, not stdin,
    which pytest captures)."""
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(question + " [y/n] ")
            tty.flush()
            return tty.readline().strip().lower().startswith("y")
    except OSError:
        pytest.skip("no terminal for the operator to confirm the indicator")
        return False


def indicator_problems(report: dict) -> list[str]:
    """What is wrong with the indicator, judged from the on-unit read-back (empty = fine)."""
    if report["kind"] == "NullOutput":
        return ["the indicator hardware is not set up (board profile?)"]
    problems = []
    timelines = {}  # state -> ((output value, samples), ...): what the hardware held over 3 s
    for state, reason, seen in report["states"]:
        name = state + (":" + reason if reason else "")
        if not seen or seen[0][0] is None:
            problems.append(f"{name}: the indicator output did not respond")
            continue
        timelines[name] = tuple((tuple(v), n) for v, n in seen)
    names = list(timelines)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if timelines[a] == timelines[b]:
                problems.append(f"{a} and {b} look the same on the indicator ({timelines[a]})")
    lit_pass = {v for v, _ in timelines.get("PASS", ())} - {(0, 0, 0), (0, 0)}
    for other in ("FAIL", "FAULT"):
        shared = lit_pass & {v for v, _ in timelines.get(other, ())}
        if shared:
            problems.append(f"{other} shows PASS's look {sorted(shared)}")
    return problems


def indicator_script() -> str:
    return _INDICATOR_ON_UNIT % repr([list(s) for s in STATES])


def test_indicator_cycles_through_states(unit):
    """Each state drives the indicator hardware differently; PASS never looks like FAIL or FAULT
    (read back from the output objects: the shim's on a virtual unit, the pins/NeoPixel buffer on
    a real one)."""
    out = unit.exec(indicator_script(), timeout=60)
    problems = indicator_problems(json.loads(out.strip().splitlines()[-1]))
    assert not problems, problems[0]


def test_indicator_confirmed_by_operator(unit, virtual):
    """On a real unit the operator confirms each state's look (skipped on virtual units)."""
    if virtual:
        pytest.skip("virtual unit: the indicator is read back from the shim")
    for state, reason in STATES:
        name = state + (":" + reason if reason else "")
        # the indicator keeps showing the state's first step (nothing ticks it at the REPL)
        unit.exec("import time, unit\n_i = unit._current.indicator if unit._current else unit.Unit().indicator\n"
                  "_i.set_state(%r, %r, time.ticks_ms())\n" % (state, reason))
        assert _ask_operator(f"Does the indicator show {name} as documented?"), f"operator: {name} looks wrong"
