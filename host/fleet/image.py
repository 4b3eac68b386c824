"""Checks on a MicroPython image before a single byte goes to a unit.

An ESP32-family image (what `esptool write-flash` puts at the board's offset) starts with the
ESP-IDF image header (esptool bin_image.py, ESP32FirmwareImage): byte 0 is the magic 0xE9,
byte 1 the segment count, then flash mode/size, the entry point, and the 16-byte extended header
whose bytes 12..13 (little-endian) are the chip id (esptool targets/*.py IMAGE_CHIP_ID).
A MicroPython build carries its banner text, so the bytes b"MicroPython" appear in it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from host.errors import HostError

ESP_IMAGE_MAGIC = 0xE9
HEADER_SIZE = 24  # 8-byte common header + 16-byte extended header
CHIP_ID_OFFSET = 12
MICROPYTHON_MARK = b"MicroPython"


def normalise_chip(name: str) -> str:
    """'ESP32-S3' (esptool CHIP_NAME), 'esp32s3', 'esp32-s3' -> 'esp32s3'."""
    return name.strip().lower().replace("-", "").replace("_", "")


def chip_image_id(chip: str) -> int:
    """The chip id an image for `chip` carries in its extended header (from esptool's targets)."""
    from esptool.targets import CHIP_DEFS

    key = normalise_chip(chip)
    if key not in CHIP_DEFS:
        raise HostError(f"unknown chip {chip!r}: use one of {', '.join(sorted(CHIP_DEFS))}")
    return int(CHIP_DEFS[key].IMAGE_CHIP_ID)


def chip_for_image_id(image_id: int) -> str | None:
    from esptool.targets import CHIP_DEFS

    for name, cls in CHIP_DEFS.items():
        if getattr(cls, "IMAGE_CHIP_ID", None) == image_id and name != "esp8266":
            return name
    return None


@dataclass(frozen=True)
class FirmwareImage:
    path: str
    data: bytes
    chip_id: int
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)


def load_image(path: str | Path) -> FirmwareImage:
    """Read a MicroPython image and check that it looks like one (any ESP32-family chip)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise HostError(f"cannot read firmware image {p}: {exc.strerror}; check the --firmware path") from None
    return parse_image(data, str(p))


def parse_image(data: bytes, name: str = "image") -> FirmwareImage:
    if len(data) < HEADER_SIZE:
        raise HostError(
            f"{name} is {len(data)} bytes, too short for an ESP32 image: "
            "pass the MicroPython firmware .bin from micropython.org/download"
        )
    if data[0] != ESP_IMAGE_MAGIC:
        raise HostError(
            f"{name} does not start with the ESP image magic 0xE9 (found {data[0]:#04x}): "
            "it is not an ESP32 firmware image; pass the MicroPython .bin, not a .uf2/.elf/.hex"
        )
    (chip_id,) = struct.unpack_from("<H", data, CHIP_ID_OFFSET)
    if MICROPYTHON_MARK not in data:
        raise HostError(
            f"{name} is an ESP32 image but not MicroPython (no 'MicroPython' banner inside): "
            "download the MicroPython firmware for this board from micropython.org"
        )
    _check_structure(data, chip_id, name)
    return FirmwareImage(path=name, data=data, chip_id=chip_id, sha256=hashlib.sha256(data).hexdigest())


def _check_structure(data: bytes, chip_id: int, name: str) -> None:
    """Parse the leading image with esptool (segments, checksum, appended SHA-256) so a truncated
    or corrupted download is refused before anything is written."""
    chip = chip_for_image_id(chip_id)
    if chip is None:
        raise HostError(f"{name} has chip id {chip_id}, which no ESP32 chip uses: pass an ESP32-family MicroPython .bin")
    from esptool.bin_image import LoadFirmwareImage

    try:
        image = LoadFirmwareImage(chip, data)
        checksum_ok = image.calculate_checksum() == image.checksum
        digest_ok = not getattr(image, "append_digest", False) or image.stored_digest == image.calc_digest
    except Exception as exc:  # esptool raises FatalError, struct.error, IndexError on cut files
        raise HostError(f"{name} is truncated or corrupt ({str(exc).splitlines()[0] or type(exc).__name__}): download it again") from None
    if not checksum_ok or not digest_ok:
        what = "checksum" if not checksum_ok else "SHA-256"
        raise HostError(f"{name} is corrupt (its {what} does not match its contents): download it again")


def check_image_fits(image: FirmwareImage, chip: str, where: str) -> None:
    """Raise unless the image header says it was built for `chip`."""
    expected = chip_image_id(chip)
    if image.chip_id != expected:
        built_for = chip_for_image_id(image.chip_id) or f"chip id {image.chip_id}"
        raise HostError(
            f"{where}: {Path(image.path).name} is built for {built_for}, but the unit is "
            f"{normalise_chip(chip)}: download the MicroPython image for {normalise_chip(chip)}"
        )
