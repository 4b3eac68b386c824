"""The emulated ESP32 ROM loader against the real esptool (virtual-unit tier).

esptool runs through its Python API on a port opened with host.virtual.client.open_port (same
protocol, no per-command RFC 2217 renegotiation), and once as the real `esptool` command.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

import pytest

esptool = pytest.importorskip("esptool")
from esptool.cmds import detect_chip  # noqa: E402
from esptool.util import FatalError  # noqa: E402

from host.virtual.client import open_port  # noqa: E402
from host.virtual.image import boots_micropython, build_image, header_chip_id, image_error  # noqa: E402
from host.virtual.rom import (  # noqa: E402
    ESP32,
    FLASH_SIZE,
    Flash,
    RomLoader,
    SlipDecoder,
    checksum,
    slip_encode,
)
from host.virtual.unit import VirtualUnit  # noqa: E402


def _connect(unit: VirtualUnit):
    return detect_chip(port=open_port(unit.port_url))


def _run(esp, *argv: str) -> None:
    try:
        esptool.main(list(argv), esp=esp)
    finally:
        esp._port.close()


@pytest.fixture()
def unit_factory(tmp_path):
    units: list[VirtualUnit] = []

    def make(name: str = "u", **kwargs) -> VirtualUnit:
        unit = VirtualUnit(tmp_path / name, **kwargs).start()
        units.append(unit)
        return unit

    yield make
    for unit in units:
        unit.stop()


# -- the loader without sockets ------------------------------------------------------------------

def _request(op: int, data: bytes = b"", chk: int = 0) -> bytes:
    return slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data)


def _responses(raw: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    for frame in SlipDecoder().feed(raw):
        _, op, length, value = struct.unpack_from("<BBHI", frame)
        out.append((op, value, frame[8:]))
    return out


def test_slip_escapes_both_special_bytes_and_ignores_noise():
    packet = b"\x00\xc0\xdb\x01"
    decoder = SlipDecoder()
    assert decoder.feed(b"\r\x03noise" + slip_encode(packet) + b"junk") == [packet]


def test_rom_sync_read_reg_and_checksum_errors(tmp_path):
    rom = RomLoader(ESP32, Flash(tmp_path / "flash.bin"), bytes.fromhex("240ac4010203"))
    replies = _responses(rom.feed(_request(0x08, b"\x07\x07\x12\x20" + b"\x55" * 32)))
    assert len(replies) == 8 and all(op == 0x08 and value != 0 for op, value, _ in replies)
    (op, value, status), = _responses(rom.feed(_request(0x0A, struct.pack("<I", 0x40001000))))
    assert value == 0x00F01D83 and status == b"\x00\x00\x00\x00"  # ESP32 magic, 4 status bytes
    # FLASH_DATA with a wrong checksum is refused with "invalid CRC" (0x07)
    rom.feed(_request(0x02, struct.pack("<IIII", 0x1000, 1, 0x400, 0x10000)))
    block = bytes(range(256)) * 4
    payload = struct.pack("<IIII", len(block), 0, 0, 0) + block
    (_, _, status), = _responses(rom.feed(_request(0x03, payload, checksum(block) ^ 1)))
    assert status[:2] == b"\x01\x07"
    (_, _, status), = _responses(rom.feed(_request(0x03, payload, checksum(block))))
    assert status[:2] == b"\x00\x00"
    assert rom.flash.read(0x10000, len(block)) == block
    # unknown commands get "invalid message" (0x05), which esptool treats as unsupported
    (_, _, status), = _responses(rom.feed(_request(0x14)))
    assert status[:2] == b"\x01\x05"


def test_flash_file_is_4mb_erased_and_programming_only_clears_bits(tmp_path):
    flash = Flash(tmp_path / "flash.bin")
    assert os.path.getsize(tmp_path / "flash.bin") == FLASH_SIZE
    assert flash.read(0, 16) == b"\xff" * 16
    flash.program(0, b"\x0f")
    flash.program(0, b"\xf1")  # without an erase the cells keep their zeros
    assert flash.read(0, 1) == b"\x01"
    flash.erase(0, 1)
    assert flash.read(0, 1) == b"\xff"


def test_built_images_are_valid_esp_images_for_their_chip():
    from esptool.bin_image import LoadFirmwareImage

    for chip, chip_id in (("esp32", 0), ("esp32s3", 9)):
        data = build_image(chip, 8 * 1024)
        assert header_chip_id(data) == chip_id
        LoadFirmwareImage(chip, data).verify()  # esptool's own checks: checksum and SHA-256
        assert b"MicroPython" in data
        assert b"MicroPython" not in build_image(chip, 8 * 1024, micropython=False)
    flash = bytearray(b"\xff" * 0x20000)
    image = build_image("esp32", 8 * 1024)
    flash[0x1000:0x1000 + len(image)] = image
    assert boots_micropython("esp32", bytes(flash))[0]
    assert not boots_micropython("esp32s3", bytes(flash))[0]  # S3 boots from 0x0
    # the bootloader checks what it loads: a flipped bit or a cut-off image does not boot
    assert image_error(image) is None
    flash[0x1000 + 3000] ^= 0x10
    assert "checksum" in boots_micropython("esp32", bytes(flash))[1]
    assert image_error(image[: len(image) // 2]) is not None


# -- esptool against served units ----------------------------------------------------------------

def test_esptool_command_reads_mac_and_detects_esp32(unit_factory):
    unit = unit_factory(chip="esp32")
    result = subprocess.run(
        [sys.executable, "-m", "esptool", "--port", unit.port_url, "--no-stub", "read-mac"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Detecting chip type... ESP32" in result.stdout
    assert f"MAC:                {unit.describe()['mac']}" in result.stdout
    # --before default-reset entered download mode through DTR/RTS, --after hard-reset left it
    # (an erased flash: the ROM finds no application)
    assert unit.boots[-2:] == ["download", "bad-app"]


def test_esp32s3_detected_by_security_info_chip_id(unit_factory):
    unit = unit_factory(chip="esp32s3")
    esp = _connect(unit)
    try:
        assert esp.CHIP_NAME == "ESP32-S3"
        assert esp.get_security_info()["chip_id"] == 9
        assert ":".join(f"{b:02x}" for b in esp.read_mac()) == unit.describe()["mac"]
        assert esp.flash_id() & 0xFFFFFF == 0x1640EF  # through the SPI user-command registers
    finally:
        esp._port.close()


def test_write_flash_without_stub_lands_in_flash_bin_and_verifies(unit_factory, tmp_path):
    unit = unit_factory(chip="esp32")
    image = build_image("esp32", 24 * 1024, seed=1)
    path = tmp_path / "fw.bin"
    path.write_bytes(image)
    _run(_connect(unit), "--no-stub", "--after", "no-reset", "write-flash", "0x1000", str(path))
    flash = (unit.root / "flash.bin").read_bytes()
    assert flash[0x1000:0x1000 + len(image)] == image
    assert flash[:0x1000] == b"\xff" * 0x1000
    # READ_FLASH_SLOW (ROM) reads it back
    esp = _connect(unit)
    try:
        esp.flash_spi_attach(0)
        assert esp.read_flash(0x1000, 200) == image[:200]
        assert esp.flash_md5sum(0x1000, len(image)) == hashlib.md5(image).hexdigest()
    finally:
        esp._port.close()


def test_stub_compressed_write_read_back_and_erase(unit_factory, tmp_path):
    unit = unit_factory(chip="esp32")
    data = (b"thermogate config " * 4000)[:65536]  # compressible: goes through FLASH_DEFL_*
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    _run(_connect(unit), "--after", "no-reset", "write-flash", "--compress", "0x200000", str(path))
    assert (unit.root / "flash.bin").read_bytes()[0x200000:0x210000] == data
    out = tmp_path / "back.bin"
    _run(_connect(unit), "--after", "no-reset", "read-flash", "0x200000", "0x10000", str(out))
    assert out.read_bytes() == data
    _run(_connect(unit), "--after", "no-reset", "erase-region", "0x200000", "0x1000")
    flash = (unit.root / "flash.bin").read_bytes()
    assert flash[0x200000:0x201000] == b"\xff" * 0x1000 and flash[0x201000:0x210000] == data[0x1000:]


def test_fault_no_sync(unit_factory):
    unit = unit_factory(chip="esp32", fault="no-sync")
    with pytest.raises(FatalError, match="no sync reply|Failed to connect"):
        esptool.cmds.detect_chip(port=open_port(unit.port_url), connect_attempts=1)


def test_fault_drop_bytes_fails_the_write(unit_factory, tmp_path):
    unit = unit_factory(chip="esp32", fault="drop-bytes")
    path = tmp_path / "fw.bin"
    path.write_bytes(build_image("esp32", 16 * 1024))
    with pytest.raises(FatalError, match="write to target flash after seq 2"):
        _run(_connect(unit), "--no-stub", "write-flash", "0x1000", str(path))


def test_fault_bad_verify_fails_md5(unit_factory, tmp_path):
    unit = unit_factory(chip="esp32", fault="bad-verify")
    path = tmp_path / "fw.bin"
    path.write_bytes(build_image("esp32", 16 * 1024))
    with pytest.raises(FatalError, match="MD5 of file does not match"):
        _run(_connect(unit), "write-flash", "0x1000", str(path))


def test_wrong_chip_image_is_refused_by_esptool(unit_factory, tmp_path):
    unit = unit_factory(chip="esp32")
    path = tmp_path / "s3.bin"
    path.write_bytes(build_image("esp32s3", 8 * 1024))
    with pytest.raises(FatalError, match="not an ESP32 image"):
        _run(_connect(unit), "write-flash", "0x1000", str(path))


def test_slip_decoder_gives_the_same_frames_however_the_bytes_arrive():
    packets = [b"\x00\x08" + bytes(range(256)) * 3, b"\xc0\xdb" * 40, b"\x01"]
    stream = b"noise" + b"".join(slip_encode(p) for p in packets) + b"\xc0\xdb\x01\xc0"  # bad escape
    whole = SlipDecoder().feed(stream)
    decoder = SlipDecoder()
    one_by_one = [frame for i in range(len(stream)) for frame in decoder.feed(stream[i:i + 1])]
    assert whole == one_by_one == packets  # the frame with an invalid escape is dropped


def test_telnet_data_passes_plain_runs_whole_and_unescapes_iac():
    import serial.rfc2217

    from host.virtual.unit import telnet_data

    class Client:  # the telnet side; collects the server's negotiation
        sent = b""

        def write(self, data: bytes) -> None:
            self.sent += data

    manager = serial.rfc2217.PortManager(serial.serial_for_url("loop://"), connection=Client())
    chunks = list(telnet_data(manager, b"abc" * 1000 + b"\xff\xff" + b"xyz"))
    assert chunks[0] == b"abc" * 1000  # one chunk, not 3000
    assert b"".join(chunks) == b"abc" * 1000 + b"\xff" + b"xyz"
