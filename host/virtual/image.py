"""Test MicroPython images for virtual units, and the check a virtual unit's boot makes.

A real MicroPython build for the ESP32 family starts (at the chip's bootloader offset: 0x1000 on
the ESP32, 0x0 on the ESP32-S3) with an ESP-IDF image: magic 0xE9, segment count, flash
mode/size, entry point, then a 16-byte extended header whose bytes 12..13 are the chip id
(esptool bin_image.py ESP32FirmwareImage; IMAGE_CHIP_ID in esptool targets/*.py), segments,
checksum and an appended SHA-256. Its banner text puts the bytes b"MicroPython" in the image.

`build_image()` makes such an image with esptool's own image writer, so esptool accepts it
exactly as it accepts a real build (it parses and verifies images it writes at the bootloader
offset). A virtual unit boots the MicroPython unix port only when `boots_micropython()` is true.
"""

from __future__ import annotations

import hashlib
import struct

from host.virtual.rom import ChipFacts, chip_facts

ESP_IMAGE_MAGIC = 0xE9
CHIP_ID_OFFSET = 12
MICROPYTHON_MARK = b"MicroPython"
APP_OFFSET = 0x10000

# load addresses inside each chip's DRAM (esptool targets/*.py MEMORY_MAP) and an IRAM entry
_LOAD = {"esp32": (0x3FFB0000, 0x40080400), "esp32s3": (0x3FC88000, 0x40378000)}


def build_image(chip: str = "esp32", size: int = 64 * 1024, micropython: bool = True,
                version: str = "1.29.0", seed: int = 0) -> bytes:
    """A valid ESP-IDF image for `chip`, about `size` bytes, carrying a MicroPython banner
    (or, with micropython=False, the same image without the bytes b"MicroPython")."""
    from esptool.bin_image import ELFSection
    from esptool.targets import CHIP_DEFS

    facts = chip_facts(chip)
    image = CHIP_DEFS[facts.name].BOOTLOADER_IMAGE()
    dram, entry = _LOAD[facts.name]
    image.entrypoint = entry
    image.min_rev_full = 0
    image.max_rev_full = 0xFFFF  # "any revision", as ESP-IDF writes by default
    if micropython:
        banner = f"MicroPython v{version} on 2026-07-05; Generic {facts.display} module with {facts.display}\x00"
    else:
        banner = f"Blink example v{version} for {facts.display}\x00"
    body = bytearray(banner.encode())
    # deterministic filler so different seeds give different images (and different MD5s)
    state = (seed * 2654435761 + 12345) & 0xFFFFFFFF
    target = max(256, size - 64)
    while len(body) < target:
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        body += struct.pack("<I", state)
    body = bytes(body[:target])
    body += b"\x00" * (-len(body) % 4)
    image.segments = [ELFSection(b".dram0.data", dram, body, 0)]
    data = image.save(None)
    if data is None:  # esptool returns the bytes when given no file name
        raise RuntimeError("esptool's image writer returned nothing")
    return data


def header_chip_id(data: bytes) -> int | None:
    """The chip id in an ESP image header, or None if `data` does not start with one."""
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        return None
    return struct.unpack_from("<H", data, CHIP_ID_OFFSET)[0]


def image_error(data: bytes) -> str | None:
    """What the ESP32 second-stage bootloader would reject in the image at the start of `data`
    (esp_image_format.c: segment table, checksum byte, appended SHA-256), or None if it is whole.
    """
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        return "invalid magic"
    segments = data[1]
    if segments == 0 or segments > 16:
        return f"invalid segment count {segments}"
    hash_appended = data[23] == 1
    pos = 24
    state = 0xEF  # checksum seed, as for the loader's data blocks
    for _ in range(segments):
        if pos + 8 > len(data):
            return "image truncated in the segment table"
        _addr, size = struct.unpack_from("<II", data, pos)
        pos += 8
        if size > len(data) - pos:
            return "image truncated in a segment"
        state ^= _xor_bytes(data[pos:pos + size])
        pos += size
    pos += 15 - pos % 16  # the checksum byte ends a 16-byte line
    if pos >= len(data):
        return "image truncated before its checksum"
    if data[pos] != state:
        return f"checksum failure: calculated {state:#04x}, stored {data[pos]:#04x}"
    if hash_appended:
        stored = data[pos + 1:pos + 33]
        if hashlib.sha256(data[:pos + 1]).digest() != stored:
            return "image hash failed - image is corrupt"
    return None


def _xor_bytes(block: bytes) -> int:
    """XOR of all bytes: fold the block onto itself in halves (linear time in C big ints)."""
    value = int.from_bytes(block, "little")
    nbytes = len(block)
    while nbytes > 1:
        half = (nbytes + 1) // 2
        value = (value & ((1 << (8 * half)) - 1)) ^ (value >> (8 * half))
        nbytes = half
    return value


def boots_micropython(chip: ChipFacts | str, flash: bytes) -> tuple[bool, str]:
    """Whether a chip with this flash content boots MicroPython, and what its ROM would say.

    `flash` is the whole flash (or at least from offset 0 past the image header).
    """
    facts = chip if isinstance(chip, ChipFacts) else chip_facts(chip)
    offset = facts.bootloader_offset
    head = flash[offset: offset + 24]
    if len(head) < 24 or head[0] != ESP_IMAGE_MAGIC:
        magic = int.from_bytes(head[:4].ljust(4, b"\xff"), "little")
        return False, f"invalid header: {magic:#010x}"
    chip_id = header_chip_id(head)
    if chip_id != facts.image_chip_id:
        return False, f"chip id {chip_id} in the image is not {facts.display}'s {facts.image_chip_id}"
    error = image_error(flash[offset:])
    if error is not None:
        return False, error
    # MicroPython's partition table puts the factory app at 0x10000; if one is there it must be
    # whole too
    if flash[APP_OFFSET:APP_OFFSET + 1] == bytes([ESP_IMAGE_MAGIC]):
        error = image_error(flash[APP_OFFSET:])
        if error is not None:
            return False, f"app image at {APP_OFFSET:#x}: {error}"
    if MICROPYTHON_MARK not in flash:
        return False, "the application is not MicroPython"
    return True, "MicroPython"
