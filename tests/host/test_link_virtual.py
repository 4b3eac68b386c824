"""The frame link over a real serial REPL: a virtual unit (`host virtual`'s VirtualUnit: the unix
port behind a raw-REPL bridge on rfc2217) running the firmware's main loop; host.link's client
interrupts it, streams with framelink.stream() and decodes what the bridge delivers.

The virtual unit's emulated sensor and scene control belong to host/virtual; until a virtual unit
has a sensor, the tests that need frames skip with that reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from host import BOARDS_DIR, FIRMWARE_DIR
from host.errors import HostError
from host.link.frames import UnitClient

virtual_unit = pytest.importorskip("host.virtual.unit")
virtual_image = pytest.importorskip("host.virtual.image")

FLASH_SIZE = 4 * 1024 * 1024
ESP32_APP_OFFSET = 0x1000


def deployed_root(root: Path, config: dict | None = None) -> Path:
    """A unit folder as `host flash` leaves it (image in flash.bin, firmware on the filesystem),
    written directly: flashing is the fleet tests' subject, not this file's."""
    root.mkdir(parents=True)
    image = virtual_image.build_image("esp32")
    flash = bytearray(b"\xff" * FLASH_SIZE)
    flash[ESP32_APP_OFFSET:ESP32_APP_OFFSET + len(image)] = image
    (root / "flash.bin").write_bytes(bytes(flash))
    fs = root / "fs"
    (fs / "boards").mkdir(parents=True)
    for source in FIRMWARE_DIR.glob("*.py"):
        shutil.copy2(source, fs / source.name)
    for profile in BOARDS_DIR.glob("*.json"):
        shutil.copy2(profile, fs / "boards" / profile.name)
    (fs / "config.json").write_text(json.dumps(config or {"board": "esp32-devkitc", "allow_uncalibrated": True}))
    return root


@pytest.fixture
def unit_port(tmp_path):
    unit = virtual_unit.VirtualUnit(deployed_root(tmp_path / "unit")).start()
    try:
        yield unit.port_url
    finally:
        unit.stop()


def _stream_or_skip(client: UnitClient, count: int):
    try:
        return client.frames(count, timeout_s=20)
    except HostError as exc:
        if "ended before it started" in str(exc) and ("I2C" in str(exc) or "Errno" in str(exc)):
            pytest.skip("virtual units have no emulated sensor yet (host/virtual): " + str(exc))
        raise


def test_repl_stream_interrupts_main_loop_and_decodes(unit_port):
    with UnitClient(unit_port) as client:
        stream = _stream_or_skip(client, 8)
        assert len(stream.frames) == 8 and stream.end is not None and stream.end.status == 0
        counters = [f.counter for f in stream.frames]
        assert counters == sorted(counters)
        # the REPL is usable afterwards, and the unit's main loop object is still there
        assert client.exec("import unit\nprint(unit._current is not None)").strip() == "True"


def test_repl_stream_end_reaches_the_host_through_the_bridge(unit_port):
    """Without a sensor the stream ends at once with the driver's error: that END packet (binary,
    through the pty bridge that cooks line ends, and rfc2217) must arrive intact."""
    with UnitClient(unit_port) as client:
        try:
            stream = client.frames(4, timeout_s=20)
        except HostError as exc:
            message = str(exc)
            assert "stream ended before it started" in message or "stopped streaming" in message, message
            assert "I2C" in message or "sensor" in message
        else:
            assert stream.frames  # a virtual unit with a sensor: frames instead
        # the unit answers the REPL after the stream
        assert client.exec("print(1 + 1)").strip() == "2"
