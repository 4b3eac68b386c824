"""Scenario files: defaults as the README states them, and a clear one-line error for every
kind of bad input."""

from __future__ import annotations

import json
import math

import pytest

from host.errors import HostError
from host.sim import scenario as sc


def test_empty_scenario_takes_documented_defaults():
    s = sc.parse({}, default_name="x")
    assert s.name == "x" and s.seed == 0 and s.calibrated is True and s.blackbody is None
    assert (s.sensor.fov_deg, s.sensor.refresh_hz, s.sensor.ambient_c) == (55, 8.0, 24.0)
    assert (s.sensor.unit_offset_c, s.sensor.unit_gain, s.sensor.pixel_offset_sigma_c, s.sensor.netd_scale) == (
        0.0, 1.0, 0.0, 1.0)
    assert s.config == {} and s.subjects == [] and s.distractors == []
    assert s.duration_s == 5.0


def test_subject_and_distractor_defaults_and_duration():
    s = sc.parse({"subjects": [{"arrive_s": 10.0}], "distractors": [{"kind": "cup"}],
                  "blackbody": {"temperature_c": 38.0}})
    subject = s.subjects[0]
    assert (subject.dwell_s, subject.distance_m, subject.x_offset_m, subject.skin_c, subject.glasses,
            subject.expect) == (4.0, 0.5, 0.0, 35.0, False, "any")
    cup = s.distractors[0]
    assert (cup.temperature_c, cup.col, cup.row, cup.from_s) == (60.0, 26, 19, 0.0) and math.isinf(cup.to_s)
    assert (s.blackbody.col, s.blackbody.row, s.blackbody.size_px) == (28, 1, 3)
    # the run lasts until the last subject has walked off, plus the tail
    assert s.duration_s == pytest.approx(10.0 + 4.0 + 1.0 + sc.TAIL_S)


def test_builtin_scenario_has_the_readme_cases():
    s = sc.builtin()
    expects = [subject.expect for subject in s.subjects]
    assert "fail" in expects and "pass" in expects
    assert any(subject.distance_m > 1.2 and subject.expect == "retry" for subject in s.subjects)
    arrivals = [subject.arrive_s for subject in s.subjects]
    assert any(arrivals.count(a) == 2 for a in arrivals)  # two people at once
    assert any(d.kind == "cup" for d in s.distractors)


@pytest.mark.parametrize("document, message", [
    ([], "scenario must be a JSON object"),
    ({"sensors": {}}, "unknown key 'sensors'"),
    ({"seed": -1}, "seed = -1 is outside"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"sensor": {"fov_deg": 90}}, "fov_deg must be 55 or 110"),
    ({"sensor": {"refresh_hz": 3}}, "refresh_hz must be one of"),
    ({"sensor": {"unit_gain": "1"}}, "unit_gain must be a number"),
    ({"sensor": {"netd_scale": -1}}, "netd_scale = -1 is outside"),
    ({"blackbody": {"col": 31, "size_px": 3}}, "does not fit"),
    ({"calibrated": "yes"}, "calibrated must be true or false"),
    ({"config": []}, "config must be a JSON object"),
    ({"subjects": {}}, "subjects must be a list"),
    ({"subjects": [{"skin_c": 37, "colour": 1}]}, r"subjects\[0\] has unknown key 'colour'"),
    ({"subjects": [{"expect": "PASS"}]}, r"subjects\[0\].expect must be one of pass\|fail\|retry\|any"),
    ({"subjects": [{"distance_m": 0}]}, "distance_m = 0 is outside"),
    ({"subjects": [{"glasses": 1}]}, "glasses must be true or false"),
    ({"distractors": [{"kind": "candle"}]}, r"distractors\[0\].kind must be one of cup\|lamp\|radiator"),
    ({"distractors": [{"kind": "cup", "from_s": 5, "to_s": 2}]}, "to_s .* must be after from_s"),
    ({"distractors": [{"kind": "lamp", "col": 40}]}, "col = 40 is outside"),
    ({"duration_s": float("nan")}, "duration_s must be a number"),
])
def test_bad_documents_give_one_line_errors(document, message):
    with pytest.raises(HostError, match=message) as info:
        sc.parse(document)
    assert "\n" not in str(info.value)


def test_load_reports_file_problems(tmp_path):
    with pytest.raises(HostError, match="does not exist"):
        sc.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"seed": 1,}')
    with pytest.raises(HostError, match=r"broken.json is not valid JSON \(line 1"):
        sc.load(broken)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"subjects": [{"expect": "maybe"}]}))
    with pytest.raises(HostError, match=r"bad.json: subjects\[0\].expect"):
        sc.load(bad)
    good = tmp_path / "queue.json"
    good.write_text(json.dumps({"subjects": [{"skin_c": 36.0}]}))
    assert sc.load(good).name == "queue"


def test_to_json_round_trips():
    s = sc.builtin()
    again = sc.parse(json.loads(json.dumps(s.to_json())))
    assert again.to_json() == s.to_json()


def test_cli_refuses_bad_arguments_before_running(tmp_path):
    from click.testing import CliRunner

    from host.sim.cli import sim

    result = CliRunner().invoke(sim, ["--gif", str(tmp_path / "run.png")])
    assert result.exit_code == 2 and "must end in .gif" in result.output
    result = CliRunner().invoke(sim, [str(tmp_path / "missing.json")])
    assert isinstance(result.exception, HostError) and "does not exist" in str(result.exception)
    result = CliRunner().invoke(sim, ["--interpreter", "pypy"])
    assert result.exit_code == 2
