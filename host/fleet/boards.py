"""Board profiles (boards/<name>.json, owned by the firmware) as the fleet tools need them.

The fleet only reads `name`, `chip` and `flash_offset`; the profile file itself is copied to the
unit unchanged (/boards/<name>.json) for the firmware's wiring module.
Without --board the generic profile for the detected chip is used: a boards/*.json whose name
starts with "generic" and whose chip matches, else Espressif's DevKitC profile for that chip
(boards/<chip>-devkitc*.json, the reference wiring), else a built-in minimal one with MicroPython's
download offset for that chip (0x1000 on ESP32 and ESP32-S2, 0x0 on the later chips); the
firmware will then report the missing pins in its self-report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from host.errors import HostError
from host.fleet.image import normalise_chip

# MicroPython's published firmware .bin files include the bootloader, so they go where the ROM
# boots the second stage from (micropython.org/download/ESP32_GENERIC*: "esptool write-flash 0x1000").
DEFAULT_FLASH_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000}


@dataclass(frozen=True)
class BoardProfile:
    name: str
    chip: str
    flash_offset: int
    path: Path | None  # None for a built-in generic profile
    raw: bytes  # the file as shipped, copied to the unit byte for byte

    @property
    def unit_path(self) -> str:
        return f"/boards/{self.name}.json"


def _parse_offset(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise HostError(f"{where}: flash_offset must be a number like 4096 or \"0x1000\"; fix the profile")
    if isinstance(value, int):
        offset = value
    elif isinstance(value, str):
        try:
            offset = int(value, 0)
        except ValueError:
            raise HostError(f"{where}: flash_offset {value!r} is not a number; use e.g. \"0x1000\"") from None
    else:
        raise HostError(f"{where}: flash_offset is missing or not a number; add e.g. \"flash_offset\": \"0x1000\"")
    if offset < 0 or offset % 0x1000:
        raise HostError(f"{where}: flash_offset {offset:#x} is not a multiple of the 4 KB flash sector")
    return offset


def load_profile_file(path: Path) -> BoardProfile:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise HostError(f"cannot read board profile {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise HostError(f"board profile {path} is not valid JSON ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise HostError(f"board profile {path} must be a JSON object")
    name = data.get("name", path.stem)
    chip = data.get("chip")
    if not isinstance(chip, str) or not chip:
        raise HostError(f"board profile {path} has no \"chip\"; add e.g. \"chip\": \"esp32\"")
    if "flash_offset" in data:
        offset = _parse_offset(data["flash_offset"], str(path))
    else:
        offset = DEFAULT_FLASH_OFFSET.get(normalise_chip(chip), 0)
    return BoardProfile(name=str(name), chip=normalise_chip(chip), flash_offset=offset, path=path, raw=raw)


def available_profiles(boards_dir: Path) -> list[BoardProfile]:
    if not boards_dir.is_dir():
        return []
    return [load_profile_file(p) for p in sorted(boards_dir.glob("*.json"))]


def find_profile(name: str, boards_dir: Path) -> BoardProfile:
    path = boards_dir / f"{name}.json"
    if path.is_file():
        return load_profile_file(path)
    for profile in available_profiles(boards_dir):
        if profile.name == name:
            return profile
    known = ", ".join(p.name for p in available_profiles(boards_dir)) or "none"
    raise HostError(f"no board profile named {name!r} in {boards_dir} (known: {known}); check --board")


def generic_profile(chip: str, boards_dir: Path) -> BoardProfile:
    chip = normalise_chip(chip)
    profiles = [p for p in available_profiles(boards_dir) if p.chip == chip]
    for profile in profiles:
        if profile.name.startswith("generic"):
            return profile
    # No generic-<chip>.json shipped: Espressif's own DevKitC is the reference wiring for the chip.
    for profile in profiles:
        if profile.name.startswith(f"{chip}-devkitc"):
            return profile
    name = f"generic-{chip}"
    raw = json.dumps(
        {"name": name, "chip": chip, "flash_offset": DEFAULT_FLASH_OFFSET.get(chip, 0)}, sort_keys=True
    ).encode()
    return BoardProfile(name=name, chip=chip, flash_offset=DEFAULT_FLASH_OFFSET.get(chip, 0), path=None, raw=raw)


def check_profile_chip(profile: BoardProfile, chip: str, where: str) -> None:
    if profile.chip != normalise_chip(chip):
        raise HostError(
            f"{where}: board {profile.name!r} is for {profile.chip}, but the unit is {normalise_chip(chip)}: "
            f"pick a --board for {normalise_chip(chip)} or leave --board out to use the generic profile"
        )
