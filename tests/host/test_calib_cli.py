"""host calibrate / host monitor: argument errors are one clear line, before any unit is touched;
a calibration write cut short leaves the old file in force."""

from __future__ import annotations

import json
import os

import pytest

from host.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--port", "x", "--blackbody", "37", "--blackbody", "37"], "must be different"),
    (["calibrate", "--port", "x", "--blackbody", "37", "--region", "1,2"], "COL,ROW,SIZE"),
    (["calibrate", "--port", "x", "--blackbody", "37", "--region", "30,20,6"], "does not fit"),
    (["calibrate", "--port", "x", "--blackbody", "37", "--check", "--pixel-map"], "--check writes nothing"),
])
def test_calibrate_bad_arguments(argv, message, capsys):
    code, err = run(argv, capsys)
    assert code != 0 and message in err and len(err.splitlines()) == 1


def test_calibrate_out_of_range_blackbody_is_a_usage_error(capsys):
    code, err = run(["calibrate", "--port", "x", "--blackbody", "80"], capsys)
    assert code == 2 and "80" in err


def test_unreachable_port_is_one_line(tmp_path, capsys):
    for command in (["monitor", "--port", str(tmp_path / "none")],
                    ["calibrate", "--port", str(tmp_path / "none"), "--blackbody", "37", "--yes"]):
        code, err = run(command, capsys)
        assert code == 2 and "cannot open" in err and len(err.splitlines()) == 1


def test_a_cut_calibration_write_leaves_the_old_file(tmp_path, monkeypatch):
    """host calibrate writes calibration.json.tmp then renames it (host.fleet.link.ReplLink.write_file);
    a power cut at any point of the temp file leaves the firmware loading the old calibration."""
    from host.link.frames import firmware_module

    store = firmware_module("store")
    monkeypatch.chdir(tmp_path)
    old = {"gain": 1.0, "offset_c": 0.4, "serial": "0a0b0c0d0e0f", "date": "old"}
    (tmp_path / "calibration.json").write_text(json.dumps(old))
    new = json.dumps({"gain": 0.97, "offset_c": -1.2, "serial": "0a0b0c0d0e0f", "date": "new"}).encode()
    for cut in range(0, len(new), 7):
        (tmp_path / "calibration.json.tmp").write_bytes(new[:cut])
        cal, errors = store.load_calibration(serial="0a0b0c0d0e0f")
        assert errors == [] and cal["offset_c"] == 0.4, (cut, cal, errors)
    (tmp_path / "calibration.json.tmp").write_bytes(new)  # complete: then the rename
    os.replace(tmp_path / "calibration.json.tmp", tmp_path / "calibration.json")
    cal, errors = store.load_calibration(serial="0a0b0c0d0e0f")
    assert errors == [] and cal["offset_c"] == -1.2
