"""`host test`'s runner: the HIL suite is skipped in normal runs and reports each check by name."""

from __future__ import annotations

import subprocess
import sys

from host import PROJECT_ROOT
from host.cli import main
from host.hil import check_title, run_suite


def test_hil_suite_is_skipped_without_a_unit():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/hil", "-q", "-p", "no:cacheprovider"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={k: v for k, v in __import__("os").environ.items() if k != "THERMOGATE_HIL_PORT"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout and "passed" not in proc.stdout and "failed" not in proc.stdout


def test_unreachable_unit_fails_every_check_by_name(tmp_path):
    results, _ = run_suite(str(tmp_path / "no-such-port"), virtual=False)
    names = {r.name for r in results}
    assert "frame rate matches configured refresh" in names
    assert "driver on unit matches cpython" in names
    assert all(r.outcome in ("failed", "error") for r in results)
    assert any("cannot open" in r.message for r in results)


def test_cli_exit_status_and_usage(tmp_path, capsys):
    try:
        main(["test", "--port", str(tmp_path / "nothing")])
    except SystemExit as exc:
        assert exc.code == 1
    else:
        raise AssertionError("host test passed on a missing unit")
    err = capsys.readouterr().err
    assert "checks failed" in err
    try:
        main(["test"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "exactly one of --port" in capsys.readouterr().err


def test_check_titles():
    assert check_title("test_files_match_release") == "files match release"


def _hil_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hil_checks", PROJECT_ROOT / "tests" / "hil" / "test_unit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_indicator_check_on_the_unix_port_with_each_board(tmp_path):
    """The HIL indicator check's on-unit script, run by the firmware's unit.py on the unix port with
    the machine shim (no sensor needed), judged by the same function as on a unit."""
    import json
    import os
    import shutil

    from host import BOARDS_DIR, FIRMWARE_DIR

    hil = _hil_module()
    root = tmp_path / "fs"
    (root / "boards").mkdir(parents=True)
    for source in FIRMWARE_DIR.glob("*.py"):
        shutil.copy2(source, root / source.name)
    for profile in BOARDS_DIR.glob("*.json"):
        shutil.copy2(profile, root / "boards" / profile.name)
    prelude = ("import simlink, time, machine, neopixel, os, sys\nos.mount(os.VfsPosix(%r), '/')\nos.chdir('/')\n"
               "sys.path[:] = ['']\n" % str(root))
    shim = PROJECT_ROOT / "host" / "virtual" / "shim"
    kinds = set()
    for board in sorted(p.stem for p in BOARDS_DIR.glob("*.json")):
        (root / "config.json").write_text(json.dumps({"board": board, "allow_uncalibrated": True}))
        script = tmp_path / "indicator.py"
        script.write_text(prelude + hil.indicator_script())
        proc = subprocess.run(["micropython", "-X", "heapsize=16M", str(script)], capture_output=True, text=True,
                              env=dict(os.environ, MICROPYPATH=str(shim)), timeout=60)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        kinds.add(report["kind"])
        assert hil.indicator_problems(report) == [], (board, hil.indicator_problems(report))
    assert kinds == {"LedOutput", "NeoPixelOutput"}
    # and the judge does fail: a board whose IDLE looked like MEASURING
    same = {"kind": "LedOutput", "states": [["IDLE", None, [[[1, 0], 4], [[0, 0], 4]]],
                                            ["MEASURING", None, [[[1, 0], 4], [[0, 0], 4]]],
                                            ["PASS", None, [[[1, 0], 8]]], ["FAIL", None, [[[1, 0], 8]]]]}
    problems = hil.indicator_problems(same)
    assert any("IDLE and MEASURING look the same" in p for p in problems)
    assert any("FAIL shows PASS's look" in p for p in problems)


def test_virtual_scene_control_file_is_a_sim_scenario(tmp_path):
    """The proposed <unit root>/scene.json wraps a `host sim` scenario, so host/virtual can parse
    and render it with the simulator's own code."""
    import json

    from host.hil import write_scene
    from host.sim.scenario import parse

    write_scene(tmp_path, {"temperature_c": 40.0, "col": 12, "row": 8, "size_px": 6}, fault=None)
    doc = json.loads((tmp_path / "scene.json").read_text())
    scenario = parse(doc["scene"])
    assert scenario.blackbody is not None and scenario.blackbody.temperature_c == 40.0
    assert scenario.sensor.unit_gain == 1.03 and doc["fault"] is None
    assert not (tmp_path / "scene.json.tmp").exists()
