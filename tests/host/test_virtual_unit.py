"""Virtual units end to end: esptool flashes, the reset lines boot MicroPython, mpremote works.

Real tools only: esptool (Python API on a host.virtual.client port, and the `esptool` command),
the `mpremote` command, the MicroPython unix port behind the bridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import esptool  # noqa: E402  (dependencies of the host package: a missing one is an error, not a skip)
import serial  # noqa: E402,F401

from host.virtual.client import open_port  # noqa: E402
from host.virtual.image import build_image  # noqa: E402
from host.unixport import micropython_command  # noqa: E402
from host.virtual.unit import VirtualUnit  # noqa: E402

try:
    micropython_command()
except FileNotFoundError as exc:  # pragma: no cover - CI installs it
    if os.environ.get("CI"):
        raise
    pytest.skip(f"MicroPython unix port missing: {exc}", allow_module_level=True)

MPREMOTE = [sys.executable, "-m", "mpremote"]


def mpremote(unit: VirtualUnit, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*MPREMOTE, "connect", unit.port_url, *args], capture_output=True,
                          text=True, timeout=timeout)


def flash_image(unit: VirtualUnit, image: bytes, tmp_path: Path) -> None:
    """esptool write-flash at the chip's offset, then --after hard-reset (the default)."""
    from esptool.cmds import detect_chip

    path = tmp_path / "fw.bin"
    path.write_bytes(image)
    esp = detect_chip(port=open_port(unit.port_url))
    try:
        esptool.main(["write-flash", hex(unit.chip.bootloader_offset), str(path)], esp=esp)
    finally:
        esp._port.close()


def read_until(port, marker: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    end = time.monotonic() + timeout
    while marker not in data and time.monotonic() < end:
        data += port.read(port.in_waiting or 1)
    return data


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    """One ESP32 unit flashed with a MicroPython image through esptool and hard-reset."""
    tmp = tmp_path_factory.mktemp("unit")
    unit = VirtualUnit(tmp / "unit").start()
    (unit.root / "fs" / "boot.py").write_text("print('boot.py ran')\n")
    (unit.root / "fs" / "main.py").write_text("print('main.py ran')\n")
    flash_image(unit, build_image("esp32", 32 * 1024), tmp)
    yield unit
    unit.stop()


def test_flashed_unit_boots_micropython_and_runs_mpremote_exec(booted):
    result = mpremote(booted, "exec", "import sys; print(sys.implementation.name, sys.implementation._mpy)")
    assert result.returncode == 0, result.stderr
    name, mpy = result.stdout.split()
    assert name == "micropython"
    probe = subprocess.run([micropython_command(), "-c", "import sys; print(sys.implementation._mpy)"],
                           capture_output=True, text=True, timeout=30)
    assert int(mpy) == int(probe.stdout)  # the real unix port's bytecode version, not a made-up one
    assert booted.boots[-1] == "micropython" and "download" in booted.boots


def test_mpremote_fs_cp_ls_and_sha256sum(booted, tmp_path):
    payload = bytes(range(256)) * 24 + b"end"
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    result = mpremote(booted, "fs", "cp", str(src), ":blob.bin", "+", "fs", "ls", "+", "fs", "sha256sum", ":blob.bin")
    assert result.returncode == 0, result.stderr
    assert (booted.root / "fs" / "blob.bin").read_bytes() == payload  # the unit's filesystem is root/fs
    assert f"{len(payload)} blob.bin" in result.stdout  # ls shows sizes, as on a board
    assert hashlib.sha256(payload).hexdigest() in result.stdout


def test_soft_reset_runs_boot_then_main_and_ctrl_c_interrupts(booted):
    port = open_port(booted.port_url, timeout=0.2)
    try:
        port.write(b"\r\x03\x03")
        read_until(port, b">>> ")
        port.write(b"\x04")  # Ctrl-D at the friendly REPL: soft reset
        out = read_until(port, b">>> ")
        assert b"MPY: soft reboot\r\n" in out
        assert out.index(b"boot.py ran") < out.index(b"main.py ran")
        port.write(b"import time\rwhile True: time.sleep_ms(10)\r\r")
        time.sleep(0.5)
        port.write(b"\x03")
        out = read_until(port, b"KeyboardInterrupt")
        assert b"KeyboardInterrupt" in out
    finally:
        port.close()


def test_machine_reset_is_a_hard_reset(booted):
    before = len(booted.boots)
    port = open_port(booted.port_url, timeout=0.2)
    try:
        port.write(b"\r\x03\x03")
        read_until(port, b">>> ")
        port.write(b"import machine\rmachine.reset()\r")
        out = read_until(port, b"main.py ran")
    finally:
        port.close()
    assert b"rst:0xc (SW_CPU_RESET)" in out and b"main.py ran" in out
    assert booted.boots[before:] == ["micropython"]


def test_starved_watchdog_resets_the_chip(tmp_path):
    with VirtualUnit(tmp_path / "wdt") as unit:
        (unit.root / "fs" / "main.py").write_text(
            "import os\n"
            "if 'starved' not in os.listdir():\n"
            "    open('starved', 'w').close()\n"
            "    import machine, time\n"
            "    wdt = machine.WDT(timeout=100)\n"
            "    time.sleep(1)  # never fed\n"
            "print('main.py ran')\n"
        )
        image = build_image("esp32", 8 * 1024)
        unit.flash.erase(0x1000, len(image))
        unit.flash.program(0x1000, image)  # as if flashed earlier
        port = open_port(unit.port_url, timeout=0.2)
        try:
            port.dtr, port.rts = False, True
            port.rts = False  # EN pulse: boot from flash
            out = read_until(port, b">>> ")
        finally:
            port.close()
    assert unit.boots[-2:] == ["micropython", "micropython"]
    assert b"rst:0x7 (TG0WDT_SYS_RESET)" in out and b"main.py ran" in out


def test_crashed_interpreter_restarts_the_chip(booted):
    port = open_port(booted.port_url, timeout=0.2)
    try:
        port.write(b"\r\x03")
        read_until(port, b">>> ")
        before = len(booted.boots)
        os.kill(booted.bridge.proc.pid, signal.SIGSEGV)  # what a crash of the port looks like
        out = read_until(port, b"main.py ran")
    finally:
        port.close()
    assert b"rst:0xc (SW_CPU_RESET)" in out and booted.boots[before:] == ["micropython"]


def test_interpreter_that_cannot_start_is_not_restarted_in_a_loop(tmp_path):
    with VirtualUnit(tmp_path / "tiny", heap="1") as unit:  # the unix port refuses this heap
        flash_image(unit, build_image("esp32", 8 * 1024), tmp_path)
        assert unit.bridge.failed is not None and unit.bridge.starts == 1
        port = open_port(unit.port_url, timeout=0.2)
        try:
            port.dtr, port.rts = False, True
            port.rts = False  # EN pulse: boot from flash again
            out = read_until(port, b"stays down", timeout=5)
            time.sleep(0.5)
        finally:
            port.close()
        assert b"MicroPython exited during start-up" in out
        assert unit.bridge.starts == 2 and not unit.bridge.running  # once per reset, no loop


def test_non_micropython_image_gives_no_repl(tmp_path):
    with VirtualUnit(tmp_path / "blink") as unit:
        flash_image(unit, build_image("esp32", 16 * 1024, micropython=False), tmp_path)
        result = mpremote(unit, "exec", "print(1)", timeout=60)
        assert result.returncode != 0
        assert unit.state == "bad-app"


def test_half_written_image_does_not_boot(tmp_path):
    from esptool.util import FatalError

    with VirtualUnit(tmp_path / "flaky", fault="drop-bytes") as unit:
        with pytest.raises(FatalError):
            flash_image(unit, build_image("esp32", 96 * 1024), tmp_path)
        flash = (unit.root / "flash.bin").read_bytes()
        assert b"MicroPython" in flash[0x1000:0x2000]  # the first blocks did land...
        deadline = time.monotonic() + 5
        while unit.boots[-1] == "download" and time.monotonic() < deadline:
            time.sleep(0.05)  # esptool's hard reset, then the boot window
        assert unit.boots[-1] == "bad-app"  # ...but the bootloader's checksum refuses the image


def test_no_boot_fault_never_reaches_micropython(tmp_path):
    with VirtualUnit(tmp_path / "dead", fault="no-boot") as unit:
        flash_image(unit, build_image("esp32", 16 * 1024), tmp_path)
        port = open_port(unit.port_url, timeout=0.2)
        try:
            port.write(b"\r\x03\r\x01")  # what mpremote sends to get the raw REPL
            assert b"raw REPL" not in read_until(port, b"raw REPL", timeout=2)
        finally:
            port.close()
        assert unit.state == "no-boot" and not unit.bridge.running


def test_host_virtual_command_prints_units_and_shuts_down_cleanly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "host", "virtual", "--units", "2", "--chip", "esp32s3",
                             "--root", str(tmp_path), "--fault", "bad-verify"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [line["fault"] for line in lines] == [None, "bad-verify"]  # only the last is faulty
        assert all(line["chip"] == "esp32s3" and line["port"].startswith("rfc2217://127.0.0.1:") for line in lines)
        assert lines[0]["mac"] != lines[1]["mac"]
        assert Path(lines[1]["root"], "flash.bin").stat().st_size == 4 * 1024 * 1024
        # a client makes a unit with a valid image start its interpreter; then shut down
        image = build_image("esp32s3", 8 * 1024)
        flash = bytearray(Path(lines[0]["root"], "flash.bin").read_bytes())
        flash[: len(image)] = image
        Path(lines[0]["root"], "flash.bin").write_bytes(flash)
        port = serial.serial_for_url(lines[0]["port"], timeout=0.2)
        port.dtr, port.rts = False, True  # EN low
        port.rts = False  # EN released, GPIO0 high: boot from flash
        assert b">>> " in read_until(port, b">>> ")
        port.close()
        children = _children(proc.pid)
        assert children, "the unit should run a MicroPython interpreter"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read()
    # interpreters were killed and reaped: no process, no zombie
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


# `host test --virtual [--virtual-defect D]`: a virtual unit flashed (real esptool), deployed
# (mpremote), calibrated against the scene-controlled blackbody, then the HIL suite. Each defect
# must fail the suite and name the check that caught it.
HOST_TEST_CASES = {
    None: set(),
    "broken-sensor": {"sensor present and serial matches calibration"},
    "wrong-serial": {"sensor present and serial matches calibration", "config and calibration valid"},
    "modified-file": {"files match release"},
}


@pytest.mark.parametrize("defect", list(HOST_TEST_CASES), ids=lambda d: d or "good-unit")
def test_host_test_virtual(defect):
    from host import PROJECT_ROOT

    cmd = [sys.executable, "-m", "host", "test", "--virtual", "--json"]
    if defect:
        cmd += ["--virtual-defect", defect]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(PROJECT_ROOT))
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    report = json.loads(lines[-1])
    outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
    messages = {c["name"]: c["message"] for c in report["checks"]}
    failed = {name for name, outcome in outcomes.items() if outcome in ("failed", "error")}
    print(f"host test --virtual {defect or ''}: exit {proc.returncode} in {time.monotonic() - started:.1f} s, "
          f"failed {sorted(failed)}")
    assert len(outcomes) >= 6, outcomes
    assert outcomes["indicator confirmed by operator"] == "skipped"  # virtual: read back instead
    if defect is None:
        assert proc.returncode == 0 and not failed, (report["checks"], proc.stderr[-1500:])
        assert sum(1 for o in outcomes.values() if o == "passed") == len(outcomes) - 1
        return
    assert proc.returncode == 1
    assert HOST_TEST_CASES[defect] <= failed, (failed, messages)
    if defect == "modified-file":
        assert failed == {"files match release"}
        assert "main.py" in messages["files match release"]
    if defect == "wrong-serial":
        assert "0badc0ffee00" in messages["sensor present and serial matches calibration"]
    if defect == "broken-sensor":
        assert "sensor" in messages["sensor present and serial matches calibration"].lower()


def test_paced_uart_takes_the_wire_time_of_the_data(tmp_path):
    image = build_image("esp32", 64 * 1024)  # unpaced, detect + write take ~2 s in all
    with VirtualUnit(tmp_path / "paced", uart_paced=True) as unit:
        started = time.monotonic()
        flash_image(unit, image, tmp_path)
        elapsed = time.monotonic() - started
        assert unit.rom.flash.read(unit.chip.bootloader_offset, len(image)) == image
    # 10 bits a byte at esptool's 115200 baud: a lower bound a real UART imposes too
    assert elapsed >= len(image) * 10 / 115200
