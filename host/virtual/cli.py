"""`host virtual`: start N virtual ESP32 units and serve them until interrupted."""

from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from host.errors import HostError, UsageError
from host.unixport import micropython_command
from host.virtual.repl import DEFAULT_HEAP
from host.virtual.rom import CHIPS, FAULTS
from host.virtual.unit import DEFAULT_BOOT_WINDOW, VirtualUnit


def start_units(
    count: int,
    root: Path,
    chip: str = "esp32",
    fault: str | None = None,
    port_base: int = 0,
    heap: str = DEFAULT_HEAP,
    boot_window: float = DEFAULT_BOOT_WINDOW,
    uart_paced: bool = False,
) -> list[VirtualUnit]:
    """Start `count` units in root/unit-0 .. unit-(count-1); `fault` goes to the last one only."""
    if count < 1:
        raise UsageError("--units must be at least 1")
    units: list[VirtualUnit] = []
    try:
        for index in range(count):
            unit_fault = fault if index == count - 1 else None
            port = port_base + index if port_base else 0
            try:
                unit = VirtualUnit(root / f"unit-{index}", chip=chip, fault=unit_fault, port=port,
                                   heap=heap, boot_window=boot_window, uart_paced=uart_paced)
            except OSError as exc:
                if exc.filename:
                    raise HostError(
                        f"cannot create virtual unit {index} in {exc.filename}: {exc.strerror}; "
                        "pass a writable folder as --root"
                    ) from None
                raise HostError(
                    f"cannot start virtual unit {index} on 127.0.0.1:{port or 'any port'}: {exc.strerror}; "
                    "choose another --port-base or leave it at 0"
                ) from None
            units.append(unit.start())
    except BaseException:
        for unit in units:
            unit.stop()
        raise
    return units


def _heap_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"[0-9]+[kKmM]?", value.strip()):
        raise click.BadParameter(f"{value!r} is not a size like 4M, 512K or 2097152")
    return value.strip()


@click.command("virtual")
@click.option("--units", "count", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many virtual units to start.")
@click.option("--chip", type=click.Choice(sorted(CHIPS)), default="esp32", show_default=True,
              help="Chip every unit emulates.")
@click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the units (unit-N/flash.bin, unit-N/fs/); kept between runs. "
                   "Default: a new temporary folder.")
@click.option("--fault", type=click.Choice(FAULTS), default=None,
              help="Make the last unit faulty in this way.")
@click.option("--port-base", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="First TCP port (unit N gets base+N); 0 = any free port.")
@click.option("--heap", default=DEFAULT_HEAP, show_default=True, callback=_heap_size,
              help="MicroPython heap size of each unit (micropython -X heapsize).")
@click.option("--paced-uart", "uart_paced", is_flag=True,
              help="Bytes to the ROM loader take their wire time at the line's baud rate, as on a "
                   "real board (default: loopback speed).")
def virtual(count: int, chip: str, root: Path | None, fault: str | None, port_base: int, heap: str,
            uart_paced: bool) -> None:
    """Serve virtual ESP32 units that the real esptool and mpremote talk to.

    Prints one JSON line per unit ({"port", "root", "chip", "mac", "fault"}) and runs until
    interrupted. Each port is rfc2217://127.0.0.1:PORT: DTR/RTS reset the unit like a board's
    auto-reset circuit (esptool --before default-reset enters the ROM loader, --after hard-reset
    boots flash); with a MicroPython image in flash it runs the MicroPython unix port.
    """
    micropython_command()  # fail before any unit starts if the unix port is missing
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="thermogate-virtual-"))
    root = root.resolve()
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    units = start_units(count, root, chip=chip, fault=fault, port_base=port_base, heap=heap,
                        uart_paced=uart_paced)
    try:
        for unit in units:
            click.echo(json.dumps(unit.describe()))
        sys.stdout.flush()
        while not stop.wait(3600):
            pass
    finally:
        for unit in units:
            unit.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
