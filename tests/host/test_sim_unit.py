"""`host sim` end to end: the real firmware in the real MicroPython unix port, the MLX90640
emulator, the rendered scene. Short scenarios; the many-seed acceptance figures come from
`python -m host.sim.evaluate`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from host import FIRMWARE_DIR
from host.sim import runner
from host.sim.cli import sim
from host.sim.scenario import parse

pytestmark = [pytest.mark.virtual, pytest.mark.skipif(not (FIRMWARE_DIR / "unit.py").exists(),
                                                      reason="firmware/unit.py has not landed yet")]

CONFIG = {"mode": "absolute", "threshold_c": 38.0, "skin_to_core_offset_c": 1.0}

SCREENING = {
    "name": "screening", "seed": 5,
    "sensor": {"unit_offset_c": 1.2, "unit_gain": 0.98, "pixel_offset_sigma_c": 0.2},
    "config": CONFIG,
    "subjects": [
        {"arrive_s": 2.0, "dwell_s": 3.0, "distance_m": 0.5, "skin_c": 35.6, "expect": "pass"},
        {"arrive_s": 8.0, "dwell_s": 3.0, "distance_m": 0.6, "x_offset_m": 0.03, "skin_c": 38.4, "expect": "fail"},
    ],
}


def test_cli_json_fever_fails_normal_passes_and_png(tmp_path):
    path = tmp_path / "screening.json"
    path.write_text(json.dumps(SCREENING))
    result = CliRunner().invoke(sim, [str(path), "--json", "--png", str(tmp_path / "png")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"subjects", "summary"}
    assert set(report["summary"]) == {"correct", "total", "false_pass", "false_fail", "mean_abs_error_c",
                                      "max_abs_error_c"}
    for row in report["subjects"]:
        assert set(row) == {"index", "verdict", "expect", "measured_c", "true_c", "time_to_verdict_s"}
    normal, fever = report["subjects"]
    assert normal["verdict"] == "pass" and fever["verdict"] == "fail", report
    assert report["summary"]["correct"] == 2 and report["summary"]["false_pass"] == 0
    for row in (normal, fever):
        assert abs(row["measured_c"] - row["true_c"]) < 0.6
        assert 0 <= row["time_to_verdict_s"] < 2.0  # a verdict within 2 s of simulated time at 8 Hz
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["subject_00.png", "subject_01.png"]


def test_distractors_alone_give_no_verdict():
    scenario = parse({
        "name": "distractors", "seed": 2, "duration_s": 8.0, "config": CONFIG,
        "distractors": [{"kind": "cup", "temperature_c": 65.0, "col": 24, "row": 18, "from_s": 1.0},
                        {"kind": "lamp", "temperature_c": 50.0, "col": 5, "row": 3, "from_s": 2.0},
                        {"kind": "radiator", "temperature_c": 45.0, "from_s": 3.0}],
    })
    result = runner.run(scenario)
    assert result.virtual_s >= 8.0 and result.frames
    assert [v for v in result.verdicts if v.state in ("pass", "fail")] == []
    assert {f.state for f in result.frames} <= {"idle", "measuring"}


def test_two_people_and_too_far_give_retry():
    scenario = parse({
        "name": "crowding", "seed": 3, "config": CONFIG,
        "subjects": [
            {"arrive_s": 2.0, "dwell_s": 3.5, "distance_m": 0.6, "x_offset_m": -0.2, "skin_c": 35.5, "expect": "retry"},
            {"arrive_s": 2.0, "dwell_s": 3.5, "distance_m": 0.65, "x_offset_m": 0.21, "skin_c": 35.8, "expect": "retry"},
            {"arrive_s": 8.5, "dwell_s": 3.5, "distance_m": 1.8, "skin_c": 35.6, "expect": "retry"},
        ],
    })
    result = runner.run(scenario)
    first, second, far = result.subjects
    assert (first.verdict, first.reason) == ("retry", "multiple"), result.verdicts
    assert (second.verdict, second.reason) == ("retry", "multiple")
    assert (far.verdict, far.reason) == ("retry", "too_far"), result.verdicts
    assert not [v for v in result.verdicts if v.state in ("pass", "fail")]


def test_hidden_blackbody_gives_fault_within_2s():
    from host.sim.evaluate import blackbody_hidden

    scenario, hide_s = blackbody_hidden(7)
    result = runner.run(scenario)
    before = [f for f in result.frames if 1.5 < f.t_s < hide_s]
    assert before and all(f.state != "fault" for f in before)  # the reference was acquired
    fault = next(f.t_s for f in result.frames if f.t_s >= hide_s and f.state == "fault")
    assert fault - hide_s <= 2.0
    assert not [v for v in result.verdicts if v.state in ("pass", "fail")]


def test_unplugged_sensor_faults_and_recovers_without_reset():
    def unplug(sensor):
        sensor.inject("unplug_mid_frame")

    def plug_back(sensor):
        sensor.clear_faults()

    scenario = parse({
        "name": "unplug", "seed": 4, "duration_s": 14.0, "config": CONFIG,
        "subjects": [{"arrive_s": 3.0, "dwell_s": 3.0, "distance_m": 0.5, "skin_c": 35.5},
                     {"arrive_s": 10.0, "dwell_s": 3.0, "distance_m": 0.5, "skin_c": 35.5, "expect": "pass"}],
    })
    result = runner.run(scenario, actions=[(3.5, unplug), (7.0, plug_back)])
    states = [(t, e["args"][1]) for t, e in result.timeline if e["kind"] == "state"]
    assert any(3.5 <= t <= 4.5 and state == "FAULT" for t, state in states), states
    assert not [v for v in result.verdicts if v.state == "pass" and 3.5 <= v.t_s <= 7.0]
    assert not [e for _, e in result.timeline if e["kind"] in ("reset", "soft_reset")]
    # back to screening once the sensor answers again, in the same run: the next subject passes
    assert result.subjects[1].verdict == "pass"


def test_cpython_interpreter_runs_the_same_firmware_to_the_same_verdicts():
    scenario = parse(SCREENING)
    on_unix_port = runner.run(scenario, keep_frames=False).to_json()
    in_cpython = runner.run(scenario, interpreter="cpython", keep_frames=False).to_json()
    assert [s["verdict"] for s in in_cpython["subjects"]] == ["pass", "fail"]
    # same firmware, same virtual clock, same emulator noise: the same readings to float rounding
    for a, b in zip(on_unix_port["subjects"], in_cpython["subjects"]):
        assert a["verdict"] == b["verdict"] and abs(a["measured_c"] - b["measured_c"]) < 0.02


def _indicator_at(result, t_s, kind):
    """Indicator events of this kind (neopixel / pin / pwm) up to t_s, oldest first."""
    events = [e for t, e in result.timeline if e["kind"] == kind and t <= t_s]
    return events


def test_indicator_timeline_shows_the_verdicts_on_the_boards_hardware():
    scenario = parse(SCREENING)
    result = runner.run(scenario, keep_frames=False)
    verdicts = {v.state: v.t_s for v in result.verdicts if v.state in ("pass", "fail")}
    # NeoPixel board (the sim's default): green during PASS, red during FAIL, nothing blocks
    r, g, b = _indicator_at(result, verdicts["pass"] + 0.5, "neopixel")[-1]["pixels"][0]
    assert g > 0 and r == 0 and b == 0
    r, g, b = _indicator_at(result, verdicts["fail"] + 0.5, "neopixel")[-1]["pixels"][0]
    assert r > 0 and g == 0 and b == 0


def test_gpio_led_board_drives_its_pins():
    scenario = parse(dict(SCREENING, config=dict(CONFIG, board="esp32-devkitc")))
    result = runner.run(scenario, keep_frames=False)
    profile = json.loads((FIRMWARE_DIR.parent / "boards" / "esp32-devkitc.json").read_text())
    pass_pin, fail_pin = profile["indicator"]["pass_pin"], profile["indicator"]["fail_pin"]
    active = 1 if profile["indicator"].get("active_high", True) else 0
    verdicts = {v.state: v.t_s for v in result.verdicts if v.state in ("pass", "fail")}

    def level(pin, t_s):
        events = [e for e in _indicator_at(result, t_s, "pin") if e["pin"] == pin]
        return events[-1]["value"] if events else None

    assert level(pass_pin, verdicts["pass"] + 0.5) == active and level(fail_pin, verdicts["pass"] + 0.5) != active
    assert level(fail_pin, verdicts["fail"] + 0.5) == active and level(pass_pin, verdicts["fail"] + 0.5) != active
    assert [v.state for v in result.verdicts if v.state in ("pass", "fail")] == ["pass", "fail"]
    # the PWM buzzer: a short beep for PASS, a long pattern for FAIL (virtual ms, from the timeline)
    tones = [(t, e["duty_u16"] > 0 and e["freq"] > 0) for t, e in result.timeline
             if e["kind"] == "pwm" and e["pin"] == profile["buzzer"]]

    def sounding_s(start, end):
        total, on_since = 0.0, None
        for t, on in tones:
            if on and on_since is None:
                on_since = max(t, start)
            elif not on and on_since is not None:
                total += max(0.0, min(t, end) - on_since)
                on_since = None
        return total

    beep = sounding_s(verdicts["pass"], verdicts["pass"] + 2.0)
    alarm = sounding_s(verdicts["fail"], verdicts["fail"] + 3.0)
    assert 0.03 <= beep <= 0.3 and alarm >= 1.0 and alarm > 4 * beep, (beep, alarm)


def test_boot_switches_radios_off_and_firmware_never_touches_the_network():
    result = runner.run(parse(dict(SCREENING, duration_s=4.0)), keep_frames=False)
    kinds = [e["kind"] for _, e in result.timeline]
    radios = [e for _, e in result.timeline if e["kind"] in ("wlan_active", "ble_active")]
    assert {(e["kind"], e.get("interface")) for e in radios} == {("wlan_active", 0), ("wlan_active", 1),
                                                                  ("ble_active", None)}
    assert all(e["active"] is False for e in radios)
    # boot.py ran before the application touched the sensor bus
    assert max(kinds.index(k) for k in ("wlan_active", "ble_active")) < kinds.index("i2c_init")
    assert "forbidden_import" not in kinds
