"""Opening an rfc2217:// port without pyserial's per-timeout round trips.

esptool changes the port's read timeout around almost every command (loader.py `command`), and
pyserial's RFC 2217 client renegotiates baud rate, framing and flow control with the server on
every such change, waiting at least 2 x 50 ms for the acknowledgements (rfc2217.py
`_reconfigure_port`). Against any RFC 2217 server (a virtual unit or Espressif's
esp_rfc2217_server with a real board) that makes each command cost ~0.2 s. The read timeout is
only used by the client itself, so `Rfc2217Serial` keeps it local; everything else (baud rate,
DTR/RTS, purge) still goes to the server. esptool takes such a port object in place of a name
(`esptool.cmds.detect_chip(port=...)`, `ESPLoader(port)`).
"""

from __future__ import annotations

import serial
import serial.rfc2217


class Rfc2217Serial(serial.rfc2217.Serial):
    """pyserial's RFC 2217 client whose read timeouts are local settings."""

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"not a valid timeout: {value!r}")
        self._timeout = value

    @property
    def inter_byte_timeout(self) -> float | None:
        return self._inter_byte_timeout

    @inter_byte_timeout.setter
    def inter_byte_timeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"not a valid inter-byte timeout: {value!r}")
        self._inter_byte_timeout = value


def open_port(url: str, baudrate: int = 115200, timeout: float | None = None) -> serial.Serial:
    """Open `url`: rfc2217:// with local timeouts, anything else through pyserial as usual."""
    if url.startswith("rfc2217://"):
        port = Rfc2217Serial(None, baudrate=baudrate, timeout=timeout)
        port.port = url
        port.open()
        return port
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
