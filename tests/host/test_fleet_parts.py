"""Fleet tooling parts that need no unit: image checks, board profiles, discovery, the release
manifest and mpy-cross, diffs, config, the parallel runner, output. Real mpy-cross and (when
installed) the real MicroPython unix port; no mocks of the code under test."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from host.errors import HostError, UsageError
from host.fleet import boards, deploy, discovery, image, manifest, progress
from host.fleet.deploy import FleetOptions, PermanentError, run_fleet
from host.fleet.progress import UnitResult

ROOT = Path(__file__).resolve().parents[2]


def make_image(chip: str = "esp32", banner: bool = True, size: int = 4096) -> bytes:
    """A complete ESP-IDF image written by esptool (the virtual units' builder), banner optional."""
    from host.virtual.image import build_image

    return build_image(chip=chip, size=size, micropython=banner)


# --- images -------------------------------------------------------------------------------------

def test_image_for_esp32_is_accepted_and_fits_esp32_only():
    img = image.parse_image(make_image("esp32"), "mp.bin")
    assert img.chip_id == 0
    image.check_image_fits(img, "ESP32", "/dev/ttyUSB0")
    with pytest.raises(HostError) as err:
        image.check_image_fits(img, "esp32s3", "/dev/ttyUSB0")
    text = str(err.value)
    assert "/dev/ttyUSB0" in text and "esp32s3" in text and "esp32" in text.replace("esp32s3", "")


def test_esp32s3_chip_id_comes_from_esptool():
    from esptool.targets import CHIP_DEFS

    img = image.parse_image(make_image("esp32s3"))
    assert img.chip_id == CHIP_DEFS["esp32s3"].IMAGE_CHIP_ID
    image.check_image_fits(img, "ESP32-S3", "p")
    assert image.chip_image_id("esp32-s3") == 9


@pytest.mark.parametrize(
    "data, words",
    [
        (make_image(banner=False), "not MicroPython"),
        (b"\x7f" + make_image()[1:], "magic 0xE9"),
        (b"\xe9\x01", "too short"),
        (make_image(size=8192)[:5000], "truncated or corrupt"),
        (make_image()[:-40] + b"MicroPython" + make_image()[-29:], "corrupt"),
    ],
)
def test_bad_images_get_a_clear_error(data, words):
    with pytest.raises(HostError) as err:
        image.parse_image(data, "x.bin")
    assert words in str(err.value) and "x.bin" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_image_file(tmp_path):
    with pytest.raises(HostError, match="cannot read firmware image"):
        image.load_image(tmp_path / "nope.bin")


# --- board profiles -----------------------------------------------------------------------------

def test_generic_profiles_use_micropython_offsets(tmp_path):
    assert boards.generic_profile("esp32", tmp_path).flash_offset == 0x1000
    assert boards.generic_profile("ESP32-S3", tmp_path).flash_offset == 0
    (tmp_path / "generic-esp32.json").write_text(json.dumps({"name": "generic-esp32", "chip": "esp32", "flash_offset": "0x1000"}))
    prof = boards.generic_profile("esp32", tmp_path)
    assert prof.path == tmp_path / "generic-esp32.json" and prof.unit_path == "/boards/generic-esp32.json"


def test_board_chip_mismatch_and_bad_profiles(tmp_path):
    (tmp_path / "gate-s3.json").write_text(json.dumps({"name": "gate-s3", "chip": "esp32s3", "flash_offset": 0}))
    prof = boards.find_profile("gate-s3", tmp_path)
    with pytest.raises(HostError, match="is for esp32s3, but the unit is esp32"):
        boards.check_profile_chip(prof, "ESP32", "/dev/ttyUSB1")
    (tmp_path / "odd.json").write_text(json.dumps({"name": "odd", "chip": "esp32", "flash_offset": "0x1234"}))
    with pytest.raises(HostError, match="4 KB"):
        boards.find_profile("odd", tmp_path)
    with pytest.raises(HostError, match="no board profile named 'nope'"):
        boards.find_profile("nope", tmp_path / "sub")


def test_shipped_board_profiles_load():
    for prof in boards.available_profiles(ROOT / "boards"):
        assert prof.chip.startswith("esp32") and prof.flash_offset % 0x1000 == 0


# --- discovery ----------------------------------------------------------------------------------

def _port(device, vid, pid):
    return SimpleNamespace(device=device, vid=vid, pid=pid, serial_number="S" + device[-1])


def test_discovery_by_vid_pid():
    ports = [
        _port("/dev/ttyUSB3", 0x1A86, 0x7523),  # CH340
        _port("/dev/ttyUSB0", 0x10C4, 0xEA60),  # CP2102
        _port("/dev/ttyACM0", 0x2341, 0x0043),  # an Arduino Uno: not ours
        _port("/dev/ttyACM1", 0x303A, 0x1001),  # ESP32-S3 USB-Serial/JTAG
        _port("/dev/ttyUSB1", 0x0403, 0x6001),  # FTDI
        _port("/dev/ttyUSB2", 0x1A86, 0x55D4),  # CH9102
        _port("/dev/ttyS0", None, None),
    ]
    found = discovery.discover(lambda: ports)
    assert [p.device for p in found] == ["/dev/ttyACM1", "/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2", "/dev/ttyUSB3"]
    assert discovery.select_ports([], True, lambda: ports)[0] == "/dev/ttyACM1"


def test_port_selection_errors(monkeypatch):
    monkeypatch.delenv("THERMOGATE_PORTS", raising=False)
    monkeypatch.delenv("ESPTOOL_PORT", raising=False)
    with pytest.raises(UsageError, match="--port PORT"):
        discovery.select_ports([], False)
    with pytest.raises(UsageError, match="not both"):
        discovery.select_ports(["/dev/ttyUSB0"], True)
    with pytest.raises(HostError, match="found no USB serial port"):
        discovery.select_ports([], True, lambda: [])
    assert discovery.select_ports(["a", "b", "a"], False) == ["a", "b"]
    monkeypatch.setenv("THERMOGATE_PORTS", "x,y")
    assert discovery.select_ports([], False) == ["x", "y"]


# --- the release --------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    fw = tmp_path / "firmware"
    fw.mkdir()
    (fw / "boot.py").write_text("# boot\n")
    (fw / "main.py").write_text("import gate\ngate.run()\n")
    (fw / "gate.py").write_text("VERSION = '2.0.1'\n\ndef twice(x):\n    return 2 * x\n\ndef run():\n    pass\n")
    bd = tmp_path / "boards"
    bd.mkdir()
    (bd / "gate-a.json").write_text(json.dumps({"name": "gate-a", "chip": "esp32", "flash_offset": "0x1000"}))
    return fw, bd


UNIX_ABI = manifest.MpyAbi.from_sys_mpy(2822)  # what the 1.29 unix port on x86-64 reports


def test_mpy_abi_decoding():
    assert (UNIX_ABI.tag, UNIX_ABI.arch_name) == ("6.3", "x64")
    esp = manifest.MpyAbi.from_sys_mpy(6 | 3 << 8 | 10 << 10)
    assert (esp.tag, esp.arch_name) == ("6.3", "xtensawin")


def test_release_is_deterministic_and_tracks_every_file(tree):
    fw, bd = tree
    a = manifest.load_release(fw, bd)
    b = manifest.load_release(fw, bd)
    assert a.name == b.name and a.name.startswith("2.0.1+")
    assert a.shipped_manifest() == b.shipped_manifest()
    (bd / "gate-a.json").write_text(json.dumps({"name": "gate-a", "chip": "esp32", "flash_offset": 4096}))
    assert manifest.load_release(fw, bd).name != a.name
    with pytest.raises(HostError, match="no firmware"):
        manifest.load_release(fw / "missing", bd)


def test_unit_files_keep_boot_and_main_as_source_and_compile_the_rest(tree, tmp_path):
    fw, bd = tree
    release = manifest.load_release(fw, bd)
    profile = boards.find_profile("gate-a", bd)
    files = release.unit_files(UNIX_ABI, profile)
    assert sorted(files) == ["/boards/gate-a.json", "/boot.py", "/gate.mpy", "/main.py"]
    assert files["/boot.py"] == (fw / "boot.py").read_bytes()
    assert files["/gate.mpy"][:2] == b"M\x06"
    # deterministic: a second compile (cache cleared) gives the same bytes, so verify can recompute
    manifest._compile_cache.clear()
    assert manifest.load_release(fw, bd).unit_files(UNIX_ABI, profile)["/gate.mpy"] == files["/gate.mpy"]
    unit_manifest = release.unit_manifest(UNIX_ABI, profile, None)
    assert unit_manifest["files"]["/gate.mpy"] == manifest.sha256_hex(files["/gate.mpy"])
    micropython = shutil.which("micropython") or str(ROOT / ".venv" / "bin" / "micropython")
    if not os.path.exists(micropython):
        pytest.skip("MicroPython unix port not installed")
    run_dir = tmp_path / "unit"
    run_dir.mkdir()
    (run_dir / "gate.mpy").write_bytes(files["/gate.mpy"])
    out = subprocess.run([micropython, "-c", "import gate; print(gate.twice(21), gate.__file__)"],
                         cwd=run_dir, capture_output=True, text=True, timeout=30)
    assert out.stdout.split()[0] == "42" and out.stdout.split()[1].endswith(".mpy"), out


def test_older_bytecode_uses_the_archived_mpy_cross(tree):
    fw, bd = tree
    old = manifest.MpyAbi(version=6, sub_version=2, arch=10)
    binary = manifest.mpy_cross_binary(old)
    assert "archive" in binary and "v1.22" in binary
    data = manifest.compile_mpy("gate.py", (fw / "gate.py").read_bytes(), old)
    assert data[:2] == b"M\x06"
    with pytest.raises(HostError, match="no mpy-cross for bytecode version 9.9"):
        manifest.mpy_cross_binary(manifest.MpyAbi(9, 9, 0))


def test_compile_error_names_the_file(tree):
    with pytest.raises(HostError, match="firmware/broken.py"):
        manifest.compile_mpy("broken.py", b"def f(:\n", UNIX_ABI)


def test_diff_reports_modified_missing_extra_but_not_unit_data():
    expected = {"/boot.py": "a", "/main.py": "b", "/gate.mpy": "c", "/boards/x.json": "d"}
    actual = {"/boot.py": "a", "/main.py": "B", "/boards/x.json": "d", "/evil.py": "e",
              "/config.json": "f", "/calibration.json": "g", "/counters.json": "h", "/manifest.json": "i"}
    diff = manifest.diff_files(expected, actual)
    assert (diff.modified, diff.missing, diff.extra) == (["/main.py"], ["/gate.mpy"], ["/evil.py"])
    assert not diff.clean and "modified: /main.py" in diff.describe()
    assert manifest.diff_files(expected, dict(expected, **{"/config.json": "z"})).clean
    assert manifest.files_to_copy({"/a": b"1", "/b": b"2"}, {"/a": manifest.sha256_hex(b"1")}) == ["/b"]


# --- config and self-report ----------------------------------------------------------------------

def test_config_keeps_site_settings_and_sets_identity():
    schema = ({"unit_id": "", "board": "", "threshold_c": 37.5, "mode": "absolute"}, None)
    existing = json.dumps({"unit_id": "old", "threshold_c": 37.8, "junk": 1})
    config = deploy.build_config(existing, "tg-246f28a1b2c3", "gate-a", schema)
    assert config == {"unit_id": "tg-246f28a1b2c3", "board": "gate-a", "threshold_c": 37.8, "mode": "absolute"}
    assert deploy.build_config("{not json", "tg-1", "b", schema)["threshold_c"] == 37.5
    assert deploy.build_config(None, "tg-1", "b", ({}, None)) == {"unit_id": "tg-1", "board": "b"}

    def validate(cfg):
        if cfg["threshold_c"] > 40:
            raise ValueError("threshold_c above 40")

    with pytest.raises(PermanentError, match="threshold_c above 40"):
        deploy.build_config(json.dumps({"threshold_c": 41}), "tg-1", "b", (schema[0], validate))


def test_config_follows_the_firmware_schema():
    schema = deploy.firmware_config_schema(ROOT / "firmware")
    if not schema[0]:
        pytest.skip("firmware/store.py not present yet")
    site = {"threshold_c": 37.6, "mode": "baseline", "typo_key": 1}
    config = deploy.build_config(json.dumps(site), "tg-246f28a1b2c3", "generic-esp32", schema)
    assert config["threshold_c"] == 37.6 and config["mode"] == "baseline" and "typo_key" not in config
    assert config["unit_id"] == "tg-246f28a1b2c3" and config["board"] == "generic-esp32"
    assert set(config) == set(schema[0])
    with pytest.raises(PermanentError, match="threshold_c"):
        deploy.build_config(json.dumps({"threshold_c": 99}), "tg-1", "b", schema)


def test_unit_identity_helpers():
    assert deploy.unit_id_from_mac("24:6F:28:A1:B2:C3") == "tg-246f28a1b2c3"
    with pytest.raises(HostError):
        deploy.unit_id_from_mac("24:6f")
    assert deploy.chip_from_machine("Generic ESP32S3 module with ESP32S3") == "esp32s3"
    assert deploy.chip_from_machine("ESP32 module with ESP32") == "esp32"
    assert deploy.chip_from_machine("linux [GCC 14.2.1] version") is None


def test_self_report_interpretation():
    assert deploy.interpret_self_report({"version": "1", "sensor_found": True, "config_valid": True}) is None
    assert "sensor not found" in deploy.interpret_self_report({"sensor_found": False})
    assert "config is invalid" in deploy.interpret_self_report({"sensor_found": True, "config_valid": False})
    assert deploy.interpret_self_report([1]) is not None


# --- the parallel runner -------------------------------------------------------------------------

def test_one_failing_unit_never_stops_the_others():
    running = 0
    peak = 0
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def job(result, opts, step):
        nonlocal running, peak
        port = result.port
        with lock:
            running += 1
            peak = max(peak, running)
            calls[port] = calls.get(port, 0) + 1
        try:
            step("working", 1, 2)
            time.sleep(0.05)
            if port == "bad":
                raise HostError("no reply from the ROM loader on bad: hold BOOT and press EN, or try a lower --baud")
            if port == "wrong":
                raise PermanentError("wrong: board 'x' is for esp32s3, but the unit is esp32")
            if port == "bug":
                raise KeyError("surprise")
            if port == "flaky" and calls[port] == 1:
                raise HostError("flaky: lost the REPL")
            result.status = progress.STATUS_OK
        finally:
            with lock:
                running -= 1

    ports = ["u1", "bad", "u2", "wrong", "bug", "flaky", "u3", "u4"]
    results = run_fleet(ports, job, FleetOptions(release=None), jobs=3, retries=1)  # type: ignore[arg-type]
    by_port = {r.port: r for r in results}
    assert [r.port for r in results] == ports
    assert peak == 3
    assert all(by_port[p].succeeded for p in ("u1", "u2", "u3", "u4", "flaky"))
    assert by_port["flaky"].attempts == 2
    assert by_port["bad"].status == "failed" and by_port["bad"].attempts == 2 and "hold BOOT" in by_port["bad"].error
    assert by_port["wrong"].attempts == 1 and "esp32s3" in by_port["wrong"].error
    assert by_port["bug"].error.startswith("bug: unexpected KeyError")


def test_json_output_is_one_document():
    results = [UnitResult(port="a", status="ok", chip="esp32"), UnitResult(port="b", status="failed", error="b: broke")]
    out = io.StringIO()
    progress.print_json("flash", results, "1+abc", time.monotonic(), out)
    doc = json.loads(out.getvalue())
    assert doc["ok"] is False and [u["port"] for u in doc["units"]] == ["a", "b"]
    assert doc["units"][1]["error"] == "b: broke" and doc["release"] == "1+abc"


def test_summary_table_names_failures(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    progress.print_summary("flash", [UnitResult(port="/dev/ttyUSB3", status="failed", error="no reply from the ROM loader")],
                           "1+abc", out)
    text = out.getvalue()
    assert "/dev/ttyUSB3" in text and "no reply from the ROM loader" in text and "\x1b[" not in text


def test_esptool_output_goes_to_the_unit_not_stdout(capsys):
    from esptool.logger import log

    from host.fleet.link import esptool_output

    lines: list[str] = []
    with esptool_output(lines.append):
        log.print("Connecting....")
        log.warn("something odd")
    assert lines == ["Connecting....", "something odd"]
    assert capsys.readouterr().out == ""


# --- the CLI, before any unit is touched -----------------------------------------------------------

def run_host(*args, env=None):
    return subprocess.run([str(ROOT / ".venv" / "bin" / "host"), *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, **(env or {})))


def test_cli_rejects_non_micropython_image_before_touching_units(tmp_path):
    bad = tmp_path / "app.bin"
    bad.write_bytes(make_image(banner=False))
    # nothing listens on this port: if the image check came later the error would be about the port
    proc = run_host("flash", "--port", "rfc2217://127.0.0.1:9", "--firmware", str(bad), "--json")
    assert proc.returncode == 2
    assert "not MicroPython" in proc.stderr and proc.stdout == ""


def test_cli_unknown_board_and_missing_ports(tmp_path):
    good = tmp_path / "mp.bin"
    good.write_bytes(make_image())
    proc = run_host("flash", "--port", "rfc2217://127.0.0.1:9", "--firmware", str(good), "--board", "nope")
    assert proc.returncode == 2 and "no board profile named 'nope'" in proc.stderr
    proc = run_host("verify", env={"THERMOGATE_PORTS": "", "ESPTOOL_PORT": ""})
    assert proc.returncode == 2 and "--port" in proc.stderr


def test_cli_unreachable_unit_fails_with_its_name(tmp_path):
    good = tmp_path / "mp.bin"
    good.write_bytes(make_image())
    proc = run_host("flash", "--port", "rfc2217://127.0.0.1:9", "--firmware", str(good), "--retries", "0", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["units"][0]["status"] == "failed" and "rfc2217://127.0.0.1:9" in doc["units"][0]["error"]


def test_unit_side_image_hash_on_the_unix_port(tmp_path):
    """The script a unit runs to prove its image without the ROM loader, on the real MicroPython
    unix port; `esp.flash_read` there is a stand-in reading a flash file (the ESP32 port's API)."""
    from host.fleet.link import FLASH_HASH_SCRIPT

    micropython = shutil.which("micropython") or str(ROOT / ".venv" / "bin" / "micropython")
    if not os.path.exists(micropython):
        pytest.skip("MicroPython unix port not installed")
    flash = tmp_path / "flash.bin"
    content = os.urandom(64 * 1024)
    flash.write_bytes(content)
    script = tmp_path / "hash.py"
    script.write_text(FLASH_HASH_SCRIPT % (0x1000, 10001))
    env = dict(os.environ, MICROPYPATH=str(tmp_path / "lib"))
    out = subprocess.run([micropython, str(script)], capture_output=True, text=True, timeout=30, env=env)
    assert out.stdout.strip() == "none", out  # the unix port has no esp module
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "esp.py").write_text(
        "_f = open(%r, 'rb')\n\ndef flash_read(offset, buf):\n    _f.seek(offset)\n    _f.readinto(buf)\n" % str(flash))
    out = subprocess.run([micropython, str(script)], capture_output=True, text=True, timeout=30, env=env)
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(content[0x1000:0x1000 + 10001]).hexdigest(), out
