"""Which serial ports carry units.

`--port` (repeatable, also ESPTOOL_PORT / THERMOGATE_PORTS as defaults) names them; `--all` takes every
USB serial port whose vendor/product id is one of the bridges ESP32 boards use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from host.errors import HostError, UsageError

# (vid, pid) -> bridge; pid None = any product of that vendor's serial line.
USB_BRIDGES: dict[tuple[int, int | None], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x10C4, 0xEA70): "Silicon Labs CP2105",
    (0x10C4, 0xEA71): "Silicon Labs CP2108",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x7522): "WCH CH340K",
    (0x1A86, 0x5523): "WCH CH341",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
    (0x303A, 0x0002): "Espressif USB CDC (ESP32-S2)",
    (0x303A, 0x4001): "Espressif USB CDC (MicroPython)",
    (0x303A, None): "Espressif native USB",
}


@dataclass(frozen=True)
class FoundPort:
    device: str
    bridge: str
    serial_number: str | None


def bridge_name(vid: int | None, pid: int | None) -> str | None:
    if vid is None:
        return None
    return USB_BRIDGES.get((vid, pid)) or USB_BRIDGES.get((vid, None))


def discover(comports: Callable[[], Iterable] | None = None) -> list[FoundPort]:
    """USB serial ports with an ESP32 bridge, sorted by device name. `comports` returns objects
    shaped like serial.tools.list_ports_common.ListPortInfo (device, vid, pid, serial_number)."""
    if comports is None:
        from serial.tools.list_ports import comports as list_comports

        comports = list_comports
    found = []
    for info in comports():
        bridge = bridge_name(getattr(info, "vid", None), getattr(info, "pid", None))
        if bridge:
            found.append(FoundPort(info.device, bridge, getattr(info, "serial_number", None)))
    return sorted(found, key=lambda p: p.device)


def default_ports() -> list[str]:
    for var in ("THERMOGATE_PORTS", "ESPTOOL_PORT"):
        value = os.environ.get(var, "").strip()
        if value:
            return [p for p in value.replace(",", " ").split() if p]
    return []


def select_ports(
    ports: Iterable[str], all_ports: bool, comports: Callable[[], Iterable] | None = None
) -> list[str]:
    chosen = list(dict.fromkeys(ports))  # keep order, drop repeats
    if chosen and all_ports:
        raise UsageError("give either --port (one or more) or --all, not both")
    if not chosen and not all_ports:
        chosen = default_ports()
        if not chosen:
            raise UsageError(
                "no units given: pass --port PORT (repeatable) or --all to use every USB serial "
                "port with an ESP32 bridge (CP210x, CH340/CH9102, FTDI, Espressif USB)"
            )
    if all_ports:
        chosen = [p.device for p in discover(comports)]
        if not chosen:
            raise HostError(
                "--all found no USB serial port with an ESP32 bridge (CP210x, CH340/CH9102, FTDI, "
                "Espressif USB): check the cables and drivers, or name ports with --port"
            )
    return chosen
