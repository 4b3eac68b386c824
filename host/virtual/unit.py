"""One virtual unit: an ESP32 board on an RFC 2217 serial port at 127.0.0.1.

The board
---------
- `root/flash.bin` is its 4 MB SPI flash; `root/fs/` is MicroPython's filesystem.
- In serial download mode the ROM loader (rom.py) answers esptool.
- Booting from flash with a valid MicroPython image (image.py) runs the real MicroPython unix
  port behind the raw-REPL bridge (repl.py). Anything else behaves like a board with a broken
  application: the ROM prints why and nothing answers.

Reset lines
-----------
USB-serial bridges on ESP32 boards drive EN and GPIO0 from RTS and DTR through two transistors
(the "auto-reset" circuit of the ESP32 DevKitC schematic):

    EN   is pulled low (chip held in reset)  when RTS is asserted and DTR is not
    GPIO0 is pulled low (download boot)      when DTR is asserted and RTS is not

The chip samples GPIO0 as EN rises. On a real board a capacitor on EN delays that rise, so
esptool's classic reset (DTR off, RTS on, then DTR on, RTS off, each written separately) leaves
GPIO0 low when the chip starts. Over RFC 2217 every line change costs a network round trip
(pyserial waits for the server's acknowledgement, about 50 ms), so the unit stretches that RC
delay into a boot window: when EN is released by DTR going on while RTS is still on (the middle
of esptool's bootloader reset) the chip starts `boot_window` seconds later, or at once in download
mode if GPIO0 is pulled low (RTS off) before then, or at once in normal mode if the client
disconnects (the port closes, both lines drop). EN released with both lines off (esptool's hard
reset: RTS pulsed while DTR is off) boots from flash at once. Espressif's esp_rfc2217_server solves the same
timing problem differently (it replays esptool's whole reset sequence when it sees DTR go on);
that would also reset the board each time pyserial opens the port (pyserial asserts DTR and RTS
on open), which would stop mpremote from reaching a running MicroPython, so the circuit is
modelled instead. Opening or closing the port (DTR+RTS on, or off) never resets the chip.

So: esptool --before default-reset -> download mode; --after hard-reset (RTS pulse with DTR off)
-> boot from flash; mpremote open/close -> nothing; machine.reset() -> boot from flash.

Serial-port behaviour
---------------------
Bytes sent while nobody is connected are lost; a client that does not read loses bytes once a
bounded buffer is full (a UART does not wait). When the last client disconnects a running
interpreter is frozen (SIGSTOP) and thawed when a client connects, so idle units cost no CPU.
After a power-on the interpreter itself is started only when the first client connects.
"""

from __future__ import annotations

import hashlib
import selectors
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import serial.rfc2217

from host.virtual.image import boots_micropython
from host.virtual.repl import DEFAULT_HEAP, ReplBridge, SensorLink
from host.virtual.rom import FAULTS, Flash, RomLoader, chip_facts

OUTPUT_LIMIT = 256 * 1024  # bytes queued for the client before output is dropped
DEFAULT_BOOT_WINDOW = 0.5  # s, the stretched EN rise time (see module docstring)
ESPRESSIF_OUI = bytes([0x24, 0x0A, 0xC4])

_BANNERS = {
    "esp32": {
        "rom": b"ets Jul 29 2019 12:21:46\r\n\r\n",
        "app": b"rst:%s,boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
        "download": b"rst:%s,boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n",
        "poweron": b"0x1 (POWERON_RESET)",
        "software": b"0xc (SW_CPU_RESET)",
        "watchdog": b"0x7 (TG0WDT_SYS_RESET)",
        "bad_app": b"flash read err, 1000\r\nets_main.c 371 \r\n",
    },
    "esp32s3": {
        "rom": b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n",
        "app": b"rst:%s,boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n",
        "download": b"rst:%s,boot:0x0 (DOWNLOAD(USB/UART0))\r\nwaiting for download\r\n",
        "poweron": b"0x1 (POWERON)",
        "software": b"0x3 (RTC_SW_SYS_RST)",
        "watchdog": b"0x7 (TG0WDT_SYS_RST)",
        "bad_app": b"invalid header: 0xffffffff\r\n",
    },
}


def mac_for(root: Path) -> bytes:
    """A stable MAC per unit folder (Espressif OUI + 3 bytes of the folder path's hash)."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).digest()
    return ESPRESSIF_OUI + digest[:3]


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class _Lines:
    """The serial-port object pyserial's rfc2217.PortManager drives: settings and modem lines."""

    def __init__(self, unit: VirtualUnit) -> None:
        self._unit = unit
        self.name = unit.port_url
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False
        self._dtr = False
        self._rts = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._unit._lines_changed()

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._unit._lines_changed()

    def reset_input_buffer(self) -> None:
        self._unit._out.clear()  # what the chip sent and the client has not read yet

    def reset_output_buffer(self) -> None:
        pass


def telnet_data(telnet: serial.rfc2217.PortManager, data: bytes):
    """The serial data in `data`, as PortManager.filter gives it, but runs of plain bytes whole:
    pyserial's filter yields one byte at a time, which made a 1.5 MB flash write cost seconds of
    CPU per unit. Only the bytes from an IAC on go through its state machine."""
    pos, end = 0, len(data)
    while pos < end:
        if telnet.mode == serial.rfc2217.M_NORMAL and telnet.suboption is None:
            iac = data.find(serial.rfc2217.IAC, pos)
            if iac < 0:
                yield data[pos:]
                return
            if iac > pos:
                yield data[pos:iac]
            pos = iac
        yield from telnet.filter(data[pos:pos + 1])
        pos += 1


class _Telnet:
    """PortManager's `connection`: writes telnet/RFC 2217 replies to the client unescaped."""

    def __init__(self, unit: VirtualUnit) -> None:
        self._unit = unit

    def write(self, data: bytes) -> None:
        self._unit._queue(data)


class VirtualUnit:
    """An emulated ESP32 board served on rfc2217://127.0.0.1:PORT (one client at a time)."""

    def __init__(
        self,
        root: str | Path,
        chip: str = "esp32",
        fault: str | None = None,
        port: int = 0,
        shim_dir: Path | None = None,
        heap: str = DEFAULT_HEAP,
        boot_window: float = DEFAULT_BOOT_WINDOW,
        sensor: bool = True,
        uart_paced: bool = False,
    ) -> None:
        # uart_paced: bytes for the ROM loader take their wire time (10 bits each at the line's
        # baud rate), as on a real UART; off, a flash write runs at loopback speed.
        self.uart_paced = uart_paced
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "fs").mkdir(exist_ok=True)
        self.chip = chip_facts(chip)
        self.fault = fault
        self.mac = mac_for(self.root)
        self.boot_window = boot_window
        self._banners = _BANNERS[self.chip.name]
        self.flash = Flash(self.root / "flash.bin")
        self._listener = socket.create_server(("127.0.0.1", port), backlog=8)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.port_url = f"rfc2217://127.0.0.1:{self.port}"
        self._selector = selectors.DefaultSelector()
        self._lines = _Lines(self)
        self.rom = RomLoader(self.chip, self.flash, self.mac, fault=fault,
                             baudrate=lambda: self._lines.baudrate, on_run_app=self._request_run_app)
        # the board's MLX90640, a different unit per MAC (see repl.SensorLink)
        # (its scene, error and faults: <root>/scene.json, docs/virtual-units.md)
        self.sensor_link = (SensorLink(seed=int.from_bytes(self.mac[3:], "big"), scene_path=self.root / "scene.json")
                            if sensor else None)
        self.bridge = ReplBridge(self._selector, self.root / "fs", self._send, self._software_reset,
                                 chip=self.chip.name, shim_dir=shim_dir, heap=heap,
                                 sensor_link=self.sensor_link)
        self._client: socket.socket | None = None
        self._telnet: serial.rfc2217.PortManager | None = None
        self._out = bytearray()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.state = "off"  # reset | booting | download | micropython | bad-app | no-boot
        self._boot_deadline: float | None = None
        self._run_app_pending = False
        self.boots: list[str] = []  # history of boot modes, for tests and diagnostics

    # -- public ------------------------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "port": self.port_url,
            "root": str(self.root),
            "chip": self.chip.name,
            "mac": format_mac(self.mac),
            "fault": self.fault,
        }

    def start(self) -> VirtualUnit:
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._boot(download=False, cause="poweron")
        self._thread = threading.Thread(target=self._loop, name=f"virtual-unit-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.bridge.stop()
        for sock in (self._client, self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self._client = None
        self._selector.close()
        self.flash.close()

    def __enter__(self) -> VirtualUnit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- event loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            deadlines = [t for t in (self._boot_deadline, self.bridge.restart_at) if t is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if self.sensor_link is not None:
                # the scene control file also applies while the unit is idle at its REPL
                self.sensor_link.poll_scene()
                timeout = SensorLink.SCENE_POLL_S if timeout is None else min(timeout, SensorLink.SCENE_POLL_S)
            for key, events in self._selector.select(timeout):
                if self._stopping:
                    break
                tag = key.data
                try:
                    if tag == "listen":
                        self._accept()
                    elif tag == "wake":
                        self._wake_r.recv(64)
                    elif tag == "client":
                        self._client_event(events)
                    elif isinstance(tag, ReplBridge):
                        tag.handle(key.fd, events)
                except OSError:
                    if tag == "client":
                        self._disconnect()
                    elif isinstance(tag, ReplBridge):
                        tag.stop()
                    else:
                        raise
                except Exception:  # a bug must not take the unit (and its port) down silently
                    print(f"virtual unit {self.port_url}: internal error, client dropped", file=sys.stderr)
                    traceback.print_exc(file=sys.stderr)
                    if tag == "client":
                        self._disconnect()
            if self._boot_deadline is not None and time.monotonic() >= self._boot_deadline:
                self._boot(download=False, cause="poweron")
            self.bridge.tick()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = sock
        self._out.clear()
        # one client at a time, like a serial port: further connections wait in the backlog
        self._selector.unregister(self._listener)
        self._selector.register(sock, selectors.EVENT_READ, "client")
        self._telnet = serial.rfc2217.PortManager(self._lines, _Telnet(self))
        if self.state == "micropython":
            if not self.bridge.running and self.bridge.failed is None:
                self.bridge.start()  # first connection after power-on
            else:
                self.bridge.resume()

    def _disconnect(self) -> None:
        sock = self._client
        if sock is None:
            return
        self._client = None
        self._telnet = None
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        self._out.clear()
        # the port closes: DTR and RTS drop (EN and GPIO0 high)
        self._lines._dtr = self._lines._rts = False
        self._lines_changed()
        if self.state == "booting":
            self._boot(download=False, cause="poweron")
        self.bridge.pause()
        if not self._stopping:
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")

    def _client_event(self, events: int) -> None:
        sock = self._client
        if sock is None:
            return
        if events & selectors.EVENT_WRITE:
            self._flush_out()
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            if not data:
                self._disconnect()
                return
            for chunk in telnet_data(self._telnet, data):
                if chunk:
                    self._received(chunk)
                if self._client is None:
                    return

    # -- serial data ---------------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        if self.state == "download":
            if self.uart_paced:  # the client waits on TCP backpressure meanwhile, as on a UART
                time.sleep(len(data) * 10 / max(self._lines.baudrate, 300))
            reply = self.rom.feed(data)
            if reply:
                self._send(reply)
            if self._run_app_pending:
                self._run_app_pending = False
                self._boot(download=False, cause=None)
        elif self.state == "micropython":
            self.bridge.write(data)
        # reset, booting, bad application, no boot: nobody reads the UART

    def _send(self, data: bytes) -> None:
        """Bytes the chip transmits on its UART."""
        if self._client is None or self._telnet is None:
            return  # nobody listening: lost
        self._queue(b"".join(self._telnet.escape(data)))

    def _queue(self, data: bytes) -> None:
        if self._client is None:
            return
        room = OUTPUT_LIMIT - len(self._out)
        if room <= 0:
            return
        self._out += data[:room]
        self._flush_out()

    def _flush_out(self) -> None:
        sock = self._client
        if sock is None:
            return
        while self._out:
            try:
                n = sock.send(self._out)
            except BlockingIOError:
                break
            except OSError:
                self._out.clear()
                break
            del self._out[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        try:
            self._selector.modify(sock, events, "client")
        except (KeyError, ValueError):
            pass

    # -- reset and boot ------------------------------------------------------------------------------

    def _lines_changed(self) -> None:
        dtr, rts = self._lines._dtr, self._lines._rts
        en_low = rts and not dtr
        io0_low = dtr and not rts
        if en_low:
            if self.state != "reset":
                self.bridge.stop()
                self.state = "reset"
                self._boot_deadline = None
            return
        if self.state == "reset":
            if io0_low:
                self._boot(download=True, cause="poweron")
            elif dtr and rts:
                # released by DTR going on with RTS still on: the next step of a bootloader
                # reset (RTS off) pulls GPIO0 low while EN is still rising
                self.state = "booting"
                self._boot_deadline = time.monotonic() + self.boot_window
            else:
                self._boot(download=False, cause="poweron")  # both lines off: a plain EN pulse
        elif self.state == "booting" and io0_low:
            self._boot(download=True, cause="poweron")

    def _request_run_app(self) -> None:
        self._run_app_pending = True  # after the ROM's reply has gone out

    def _software_reset(self, cause: str = "software") -> None:
        """machine.reset(), a crash ("software") or a starved watchdog ("watchdog")."""
        self._boot(download=False, cause=cause)

    def _boot(self, download: bool, cause: str | None) -> None:
        self._boot_deadline = None
        self.bridge.stop()
        banners = self._banners
        if cause is not None:
            self._send(banners["rom"])
        reason = banners[cause if cause in ("software", "watchdog") else "poweron"]
        if download:
            self.rom.reset()
            self.state = "download"
            self.boots.append("download")
            if cause is not None:
                self._send(banners["download"] % reason)
            return
        if cause is not None:
            self._send(banners["app"] % reason)
        ok, why = boots_micropython(self.chip, self.flash.read(0, self.flash.size))
        if not ok:
            self.state = "bad-app"
            self.boots.append("bad-app")
            if why.startswith("invalid header"):
                self._send(banners["bad_app"])
            else:
                self._send(f"E (31) boot: {why}\r\n".encode())
            return
        if self.fault == "no-boot":
            self.state = "no-boot"  # the bootloader hangs before MicroPython starts
            self.boots.append("no-boot")
            return
        self.state = "micropython"
        self.boots.append("micropython")
        if self._client is not None:
            self.bridge.start()
        # else: started when a client connects (nobody would see its output anyway)
