"""`host flash|deploy|verify|fleet` end to end: the real esptool and mpremote against virtual units
(`host virtual`: emulated ROM loader, then the real MicroPython unix port running the firmware).

One 8-unit run (7 good, 1 whose flash verify fails) serves several assertions, to keep the module
within a few minutes on a 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.fleet.bench import VirtualUnits
from host.virtual import image as virtual_image
from host.fleet.bench import host_command as _host_command

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.virtual

if not (ROOT / "host" / "virtual" / "cli.py").exists():
    pytest.skip("host virtual is not built yet (host/virtual/cli.py)", allow_module_level=True)

IMAGE_SIZE = 1536 * 1024  # an ESP32_GENERIC MicroPython build is ~1.6 MB


def build_image(chip: str) -> bytes:
    """A MicroPython-shaped image for `chip`, complete enough for the virtual units' boot check."""
    return virtual_image.build_image(chip=chip, size=IMAGE_SIZE)


RELEASE_ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def frozen_release(tmp_path_factory):
    """A snapshot of firmware/ and boards/: the tree is shared with people editing it, and a release
    that changes between two commands of one test would (rightly) fail verify."""
    snap = tmp_path_factory.mktemp("release")
    shutil.copytree(ROOT / "firmware", snap / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "boards", snap / "boards")
    RELEASE_ENV.update(THERMOGATE_FIRMWARE_DIR=str(snap / "firmware"), THERMOGATE_BOARDS_DIR=str(snap / "boards"))
    yield snap
    RELEASE_ENV.clear()


def host_command(*args, env=None, timeout=180, **kwargs):
    # bounded: a unit that hangs must fail this test in minutes, not stall the suite
    return _host_command(*args, env=dict(RELEASE_ENV, **(env or {})), timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    paths = {}
    for chip in ("esp32", "esp32s3"):
        paths[chip] = d / f"micropython-{chip}.bin"
        paths[chip].write_bytes(build_image(chip))
    not_mp = bytearray(paths["esp32"].read_bytes())
    at = not_mp.find(b"MicroPython")
    while at >= 0:
        not_mp[at:at + 11] = b"SomeRTOS-v1"
        at = not_mp.find(b"MicroPython")
    paths["other"] = d / "other-app.bin"
    paths["other"].write_bytes(bytes(not_mp))
    return paths


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    started = []
    try:
        eight = VirtualUnits(8, root / "fleet", fault="bad-verify")  # the fault goes to the last unit
        started.append(eight)
        spare = VirtualUnits(1, root / "spare")
        started.append(spare)
        assert eight.units[7]["fault"] == "bad-verify" and not eight.units[0]["fault"]
        yield {"good": eight.units[:7], "bad": eight.units[7], "spare": spare.units[0]}
    finally:
        for units in started:
            units.close()


def ports_args(units):
    args = []
    for unit in units:
        args += ["--port", unit["port"]]
    return args


def flash_bin(unit) -> bytes:
    return (Path(unit["root"]) / "flash.bin").read_bytes()


def unit_fs(unit) -> Path:
    return Path(unit["root"]) / "fs"


def fs_hashes(unit) -> dict[str, str]:
    base = unit_fs(unit)
    return {"/" + str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in base.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first_run(fleet, images):
    units = fleet["good"][:4] + [fleet["bad"]] + fleet["good"][4:]
    proc, seconds = host_command("flash", *ports_args(units), "--firmware", str(images["esp32"]), "--json",
                                 "--retries", "0", timeout=300)
    assert proc.stdout, proc.stderr
    return {"proc": proc, "seconds": seconds, "doc": json.loads(proc.stdout), "units": units}


def test_eight_units_in_parallel_one_faulty(fleet, first_run, images):
    proc, doc = first_run["proc"], first_run["doc"]
    print(f"\nfirst run, 8 units: {first_run['seconds']:.1f} s")
    assert proc.returncode == 1, proc.stderr
    by_port = {u["port"]: u for u in doc["units"]}
    bad = by_port[fleet["bad"]["port"]]
    assert bad["status"] == "failed"
    assert fleet["bad"]["port"] in bad["error"] and "verify failed" in bad["error"], bad["error"]
    image = images["esp32"].read_bytes()
    for unit in fleet["good"]:
        result = by_port[unit["port"]]
        assert result["status"] == "ok", result
        assert result["image"] == "written" and result["chip"] == "esp32"
        assert result["mac"] == unit["mac"]
        offset = 0x1000 if result["board"].startswith("generic") else None
        if offset is not None:
            assert flash_bin(unit)[offset:offset + len(image)] == image
        manifest = json.loads((unit_fs(unit) / "manifest.json").read_text())
        assert manifest["release"] == doc["release"] and manifest["image"]["sha256"] == hashlib.sha256(image).hexdigest()
        on_disk = fs_hashes(unit)
        for path, digest in manifest["files"].items():
            assert on_disk.get(path) == digest, path
        assert "/boot.py" in manifest["files"] and "/main.py" in manifest["files"]
        assert not any(p.endswith(".py") for p in manifest["files"] if p not in ("/boot.py", "/main.py"))
        config = json.loads((unit_fs(unit) / "config.json").read_text())
        assert config["unit_id"] == "tg-" + unit["mac"].replace(":", "").lower()
        assert config["board"] == result["board"]
    assert "host: 1 of 8 units failed" in proc.stderr


def test_mpremote_sha256sum_matches_the_manifest(fleet, first_run):
    mpremote = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    running = []
    for unit in fleet["good"]:
        manifest = json.loads((unit_fs(unit) / "manifest.json").read_text())
        paths = sorted(manifest["files"])
        cmd = [mpremote, "connect", unit["port"], "resume", "fs", "sha256sum", *[":" + p for p in paths]]
        running.append((unit, manifest, paths, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for unit, manifest, paths, proc in running:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        digests = [line.strip() for line in out.splitlines() if len(line.strip()) == 64]
        assert digests == [manifest["files"][p] for p in paths], (unit["port"], out)


def test_verify_passes_then_names_the_modified_file(fleet, first_run):
    proc, _ = host_command("verify", *ports_args(fleet["good"]), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = fleet["good"][2]
    main_py = unit_fs(unit) / "main.py"
    original = main_py.read_bytes()
    main_py.write_bytes(original + b"\nprint('not the reviewed code')\n")
    (unit_fs(unit) / "extra.py").write_text("x = 1\n")
    proc, _ = host_command("verify", "--port", unit["port"], "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)["units"][0]
    assert result["details"]["diff"] == {"modified": ["/main.py"], "missing": [], "extra": ["/extra.py"]}
    assert "/main.py" in result["error"] and unit["port"] in result["error"]
    # deploy (no image) puts the reviewed file back and removes the stray code
    proc, _ = host_command("deploy", "--port", unit["port"], "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["units"][0]
    assert result["copied"] == ["/main.py"] and result["removed"] == ["/extra.py"]
    assert main_py.read_bytes() == original


def test_second_run_skips_current_units(fleet, first_run, images):
    # How much faster the second run is, is a speed figure: python -m host.fleet.bench prints it.
    proc, seconds = host_command("flash", *ports_args(fleet["good"]), "--firmware", str(images["esp32"]), "--json")
    print(f"\nsecond run, 7 current units: {seconds:.1f} s (first run {first_run['seconds']:.1f} s)")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [u["status"] for u in doc["units"]] == ["skipped"] * 7
    assert all(u["image"] == "current" and u["copied"] == [] for u in doc["units"])


def test_fleet_lists_every_unit(fleet, first_run):
    proc, _ = host_command("fleet", *ports_args(fleet["good"][:3]), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    for unit, row in zip(fleet["good"][:3], doc["units"]):
        assert row["port"] == unit["port"] and row["mac"] == unit["mac"] and row["chip"] == "esp32"
        assert row["release"] == first_run["doc"]["release"]
        assert "calibration_date" in row["details"] and isinstance(row["details"]["counters"], dict)
    proc, _ = host_command("fleet", *ports_args(fleet["good"][:1]))
    assert fleet["good"][0]["port"] in proc.stdout and fleet["good"][0]["mac"] in proc.stdout


def test_board_chip_mismatch_and_wrong_images_stop_before_writing(fleet, images, tmp_path):
    unit = fleet["bad"]  # its loader answers fine; only its verify is broken
    before = hashlib.sha256(flash_bin(unit)).hexdigest()
    boards = tmp_path / "boards"
    shutil.copytree(RELEASE_ENV["THERMOGATE_BOARDS_DIR"], boards)
    (boards / "test-gate-s3.json").write_text(json.dumps({"name": "test-gate-s3", "chip": "esp32s3", "flash_offset": "0x0"}))
    proc, _ = host_command("flash", "--port", unit["port"], "--firmware", str(images["esp32s3"]),
                           "--board", "test-gate-s3", "--json", "--retries", "0",
                           env={"THERMOGATE_BOARDS_DIR": str(boards)})
    result = json.loads(proc.stdout)["units"][0]
    assert proc.returncode == 1 and result["attempts"] == 1
    assert "board 'test-gate-s3' is for esp32s3, but the unit is esp32" in result["error"]
    proc, _ = host_command("flash", "--port", unit["port"], "--firmware", str(images["esp32s3"]), "--json", "--retries", "2")
    result = json.loads(proc.stdout)["units"][0]
    assert proc.returncode == 1 and result["attempts"] == 1
    assert "is built for esp32s3, but the unit is esp32" in result["error"]
    proc, _ = host_command("flash", "--port", unit["port"], "--firmware", str(images["other"]), "--json")
    assert proc.returncode == 2 and "not MicroPython" in proc.stderr and proc.stdout == ""
    assert hashlib.sha256(flash_bin(unit)).hexdigest() == before


def test_interrupted_run_is_resumed(fleet, images):
    unit = fleet["spare"]
    fs = unit_fs(unit)
    cmd = [sys.executable, "-m", "host", "flash", "--port", unit["port"], "--firmware", str(images["esp32"]), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, **RELEASE_ENV))
    deadline = time.monotonic() + 120
    copied_before_kill = []
    while time.monotonic() < deadline and proc.poll() is None:
        copied_before_kill = [p for p in fs.glob("*.mpy")] if fs.is_dir() else []
        if copied_before_kill:
            os.killpg(proc.pid, signal.SIGKILL)  # a pulled cable / killed laptop, mid-copy
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert copied_before_kill, "the run finished before it could be interrupted"
    assert not (fs / "manifest.json").exists()  # written last: no claim of a release half there

    proc2, _ = host_command("flash", "--port", unit["port"], "--firmware", str(images["esp32"]), "--json")
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    result = json.loads(proc2.stdout)["units"][0]
    assert result["status"] == "ok" and result["image"] == "current"
    manifest = json.loads((fs / "manifest.json").read_text())
    already = {"/" + p.name for p in copied_before_kill}
    assert not already & set(result["copied"])  # finished files are not sent again
    assert set(result["copied"]) | already >= {p for p in manifest["files"] if p.endswith(".mpy")}
    proc3, _ = host_command("verify", "--port", unit["port"])
    assert proc3.returncode == 0, proc3.stdout


def test_a_unit_that_never_syncs_is_named_with_what_to_do(images, tmp_path):
    with VirtualUnits(1, tmp_path / "mute", fault="no-sync") as mute:
        port = mute.ports[0]
        proc, seconds = host_command("flash", "--port", port, "--firmware", str(images["esp32"]), "--json",
                                     "--retries", "0")
    result = json.loads(proc.stdout)["units"][0]
    assert proc.returncode == 1 and result["status"] == "failed"
    assert result["error"] == f"no reply from the ROM loader on {port}: hold BOOT and press EN, or try a lower --baud"
    assert seconds < 30  # gives up instead of hanging (liveness bound, not a speed target)
