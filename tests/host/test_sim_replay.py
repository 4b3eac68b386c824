"""`host sim --replay`: frames the real firmware streamed (unix port + emulated sensor, through the frame
link and host monitor's recording writer) replayed through the firmware on a fresh virtual unit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from host.errors import HostError
from host.link.frames import RawFrame, StreamEnd, UnitClient, UnitInfo
from host.monitor import _unit_files, load_recording, save_recording
from host.sim import replay, runner
from host.sim import scenario as scenario_mod
from test_link_harness import stream_from_firmware  # noqa: E402

# a normal subject, a fever, someone too far away; the unit boots at the start of the recording
QUEUE = {"duration_s": 60.0, "calibrated": True, "subjects": [
    {"arrive_s": 3.0, "dwell_s": 3.0, "distance_m": 0.5, "skin_c": 35.5},
    {"arrive_s": 8.0, "dwell_s": 3.0, "distance_m": 0.5, "skin_c": 38.5},
    {"arrive_s": 13.0, "dwell_s": 3.0, "distance_m": 2.5, "skin_c": 36.0}]}
FRAMES = 150  # 18.6 s at 8 Hz


def _record(workdir: Path, path: Path, count: int, every: int = 1) -> Path:
    got = stream_from_firmware(workdir, QUEUE, count, config={"refresh_hz": 8}, every=every, warmup=0)
    assert got.info is not None and len(got.frames) == count
    root = sorted(workdir.glob("unit-*"))[-1]
    calibration = root / "calibration.json"
    save_recording(path, got.info, got.frames, {
        "port": "unix-port", "recorded": "test", "config": (root / "config.json").read_text(),
        "calibration": calibration.read_text() if calibration.exists() else None})
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("replay")
    return _record(work, work / "queue.npz", FRAMES)


def _rewrite(source: Path, target: Path, **changes) -> Path:
    with np.load(source, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez_compressed(target, **arrays)
    return target


def _recorded_verdicts(path: Path) -> list[tuple[str, str]]:
    rec = load_recording(path)
    out, previous = [], None
    for state, reason in zip(rec["state"], rec["reason"]):
        if state in replay.VERDICT_STATES and (state, reason) != previous:
            out.append((str(state), str(reason)))
        previous = (state, reason)
    return out


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_replay_gives_the_live_units_verdicts(recording, interpreter):
    expected = _recorded_verdicts(recording)
    # the recording is worth replaying: the live unit passed, failed and asked for a retry
    assert [s for s, _ in expected] == ["PASS", "FAIL", "RETRY"], expected
    result = replay.run(recording, interpreter=interpreter)
    summary = result.summary()
    assert summary["match"], result.pairs()
    assert [(v.state, v.reason) for v in result.replayed] == expected
    # every recorded frame was read and processed, with the live unit's state after each
    assert summary["frames_not_read"] == 0 and summary["frames_compared"] == FRAMES
    assert summary["frames_same_state"] == FRAMES
    assert summary["control_register_mismatches"] == 0
    # the same raw words give the same hottest-region reading, at the recorded spacing on the unit's clock
    for mine, theirs in zip(result.replayed, result.recorded):
        assert mine.frame == theirs.frame
        assert mine.reading_c == pytest.approx(theirs.reading_c, abs=0.01)
    assert summary["max_timing_error_ms"] < 20.0 and summary["max_verdict_shift_s"] < 0.02
    passed = result.replayed[0]
    assert passed.verdict_c is not None and abs(passed.verdict_c - 35.5) < 0.6


def test_replay_deploys_the_recorded_config(recording, tmp_path):
    rec = load_recording(recording)
    config = json.loads(rec["meta"]["config"])
    config["threshold_c"] = 35.0  # every subject is a fever now
    meta = dict(rec["meta"], config=json.dumps(config))
    strict = _rewrite(recording, tmp_path / "strict.npz", meta=np.array(json.dumps(meta)))
    result = replay.run(strict)
    assert result.replayed[0].state == "FAIL" and result.recorded[0].state == "PASS"
    assert not result.summary()["match"]
    # a unit without config.json never screens (FAULT): the replay says it read none of the frames
    meta = dict(rec["meta"], config=None)
    bare = _rewrite(recording, tmp_path / "bare.npz", meta=np.array(json.dumps(meta)))
    result = replay.run(bare, interpreter="cpython")
    assert result.replayed == [] and result.config_source == "absent on the unit"
    assert any("processed none of the recorded frames" in note and "FAULT" in note for note in result.notes)


def test_replay_reports_a_recording_that_disagrees(recording, tmp_path):
    states = load_recording(recording)["state"].copy()
    states[states == "FAIL"] = "PASS"  # as if the live unit had passed the fever
    doctored = _rewrite(recording, tmp_path / "doctored.npz", state=states)
    result = replay.run(doctored, interpreter="cpython")
    summary = result.summary()
    assert not summary["match"]
    assert summary["verdicts_matching"] == 2 and summary["frames_same_state"] < FRAMES
    unpaired = [(mine and mine.state, theirs and theirs.state) for mine, theirs in result.pairs()
                if mine is None or theirs is None]
    assert sorted(unpaired, key=str) == sorted([("FAIL", None), (None, "PASS")], key=str)
    assert [v.state for v in result.replayed] == ["PASS", "FAIL", "RETRY"]


def test_cli_prints_the_timeline_and_json(recording):
    from host.sim.cli import sim

    out = CliRunner().invoke(sim, ["--replay", str(recording), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["summary"]["match"] is True and doc["recording"]["frames"] == FRAMES
    assert [v["state"] for v in doc["verdicts"]] == ["PASS", "FAIL", "RETRY"]
    assert doc["verdicts"][2]["reason"] == "too_far"
    assert all(isinstance(v["t_s"], float) for v in doc["verdicts"] + doc["recorded_verdicts"])
    human = CliRunner().invoke(sim, ["--replay", str(recording), "--interpreter", "cpython"])
    words = " ".join(human.output.split())  # rich wraps at the terminal width
    assert human.exit_code == 0 and "SAME VERDICTS as the live unit" in words and "(too_far)" in words
    both = CliRunner().invoke(sim, ["x.json", "--replay", str(recording)])
    assert both.exit_code == 2 and "not both" in both.output


def test_a_sparse_recording_is_flagged(tmp_path):
    # monitor --every 2: one pair of subpages in two; the replayed unit sees half the frames
    sparse = _record(tmp_path, tmp_path / "sparse.npz", 70, every=2)
    result = replay.run(sparse, interpreter="cpython")
    assert result.recording.skipped_frames == 68
    assert any("skips 68 subpages" in note for note in result.notes)
    summary = result.summary()
    assert summary["frames_same_state"] < summary["frames_compared"] == 70
    # the verdicts come in the same order, each at most a few frame pairs later than on the live unit
    assert summary["match"], result.pairs()
    assert 0 < summary["max_verdict_shift_s"] <= 1.5


def test_bad_recordings_are_one_line_errors(recording, tmp_path):
    with pytest.raises(HostError, match="does not exist"):
        replay.load(tmp_path / "missing.npz")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(HostError, match="cannot read recording"):
        replay.load(damaged)
    other = tmp_path / "other.npz"
    np.savez(other, image=np.zeros((24, 32)))
    with pytest.raises(HostError, match="not a host monitor recording"):
        replay.load(other)
    short = _rewrite(recording, tmp_path / "short.npz", frames=np.zeros((3, 768), dtype=np.uint16))
    with pytest.raises(HostError, match="N x 834"):
        replay.load(short)
    ticks = load_recording(recording)["ticks_ms"].copy()
    ticks[100:] -= ticks[100] - 5  # the unit rebooted during the recording: its clock went back
    rebooted = _rewrite(recording, tmp_path / "rebooted.npz", ticks_ms=ticks)
    with pytest.raises(HostError, match="clock jumps .* between frames 99 and 100"):
        replay.load(rebooted)
    blank = _rewrite(recording, tmp_path / "blank.npz", eeprom=np.zeros(832, dtype=np.uint16))
    with pytest.raises(HostError, match="EEPROM") as raised:
        replay.run(blank)
    assert "\n" not in str(raised.value)


def _face(skin_c: float) -> np.ndarray:
    """A person standing 0.5 m in front of the unit, rendered by the simulator's scene."""
    spec = scenario_mod.parse({"subjects": [{"arrive_s": 0.0, "dwell_s": 100.0, "distance_m": 0.5,
                                             "skin_c": skin_c}]})
    image, _ = runner.build_scene(spec).render(1.0)
    return image


@pytest.mark.virtual
def test_replay_of_a_virtual_unit_recorded_over_its_repl(tmp_path):
    """The whole path: a virtual unit (unix port behind a REPL on rfc2217) runs its main loop; the host
    interrupts it and records the frame stream as `host monitor --save` does (the unit's files read over
    the REPL, host.monitor's writer) while two people step in front of it; the replay agrees."""
    virtual_unit = pytest.importorskip("host.virtual.unit")
    from test_link_virtual import deployed_root

    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    sensor = unit.sensor_link.sensor
    doorway = sensor.scene
    # (frames received, scene from then on): a normal subject, nobody, a fever, nobody
    script = {16: _face(35.6), 56: doorway, 76: _face(38.6), 116: doorway}
    frames: list[RawFrame] = []
    info = end = None
    try:
        with UnitClient(unit.port_url) as client:
            files = _unit_files(client)
            for item in client.iter_frames(136, timeout_s=10):
                if isinstance(item, UnitInfo):
                    info = item
                elif isinstance(item, RawFrame):
                    frames.append(item)
                    if len(frames) in script:
                        sensor.set_scene(script[len(frames)], ambient_c=sensor.ambient_c)
                elif isinstance(item, StreamEnd):
                    end = item
    finally:
        unit.stop()
    assert info is not None and end is not None and end.status == 0 and len(frames) == 136
    path = tmp_path / "door.npz"
    save_recording(path, info, frames, {"port": unit.port_url, "recorded": "test", **files})
    result = replay.run(path)
    summary = result.summary()
    assert [v.state for v in result.recorded] == ["PASS", "FAIL"], result.recorded
    assert summary["match"] and summary["max_verdict_shift_s"] < 0.02, result.pairs()
    assert summary["frames_same_state"] == summary["frames_compared"] == 136
    assert result.config_source == "recorded" and json.loads(files["config"])["board"] == "esp32-devkitc"
