"""Talking to one unit: esptool's Python API for the ROM loader, mpremote's SerialTransport for the
MicroPython REPL. Everything above this module only sees RomLink / ReplLink and HostError.

esptool logs through one process-wide logger; several units are flashed from threads at once, so
a logger is installed that hands each line to whichever unit job runs in the current thread.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import json
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from host.errors import HostError

ROM_BAUD = 115200
READ_TIMEOUT_S = 10.0
LineSink = Callable[[str], None]
ProgressSink = Callable[[int, int], None]

# ---------------------------------------------------------------------------------------------
# esptool output, per thread

_thread_sinks = threading.local()
_logger_lock = threading.Lock()
_logger_installed = False


def _install_esptool_logger() -> None:
    global _logger_installed
    with _logger_lock:
        if _logger_installed:
            return
        from esp_pylib.logger import EspLogBase
        from esptool.logger import log

        class ThreadRoutedLog(EspLogBase):
            """esptool's output goes to the current unit job (a line callback), never to stdout."""

            def _emit(self, *args: Any) -> None:
                sink = getattr(_thread_sinks, "line", None)
                text = " ".join(str(a) for a in args).strip()
                if sink and text:
                    sink(text)

            def print(self, *args, **kwargs) -> None:
                self._emit(*args)

            def err(self, *args, suggestion=None) -> None:
                self._emit(*args)

            def warn(self, *args, suggestion=None) -> None:
                self._emit(*args)

            def warning(self, message, suggestion=None) -> None:
                self._emit(message)

            def error(self, message, suggestion=None) -> None:
                self._emit(message)

            def note(self, *args) -> None:
                self._emit(*args)

            def hint(self, *args) -> None:
                self._emit(*args)

            def debug(self, *args) -> None:
                pass

            def set_verbosity(self, mode) -> None:
                pass

            def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30) -> None:
                sink = getattr(_thread_sinks, "progress", None)
                if sink:
                    sink(int(cur_iter), int(total_iters))

        log.set_logger(ThreadRoutedLog())
        _summarise_trace_dumps()
        _logger_installed = True


def _summarise_trace_dumps() -> None:
    """esptool 5.6 builds a hex dump of every frame it sends (loader.py write() and command())
    inside f-strings for trace(), even with tracing off: ~3 s of CPU per MB written, which
    serialised parallel units on the GIL. This host never enables esptool's --trace, so the
    dumps it builds are reduced to their length."""
    import esptool.loader as loader

    base = loader.HexFormatter
    if getattr(base, "_summary", False):
        return

    class SummaryHex(base):
        _summary = True

        def __str__(self) -> str:
            return f"<{len(self._s)} bytes>"

    loader.HexFormatter = SummaryHex


@contextmanager
def esptool_output(on_line: LineSink | None, on_progress: ProgressSink | None = None):
    _install_esptool_logger()
    _thread_sinks.line, _thread_sinks.progress = on_line, on_progress
    try:
        yield
    finally:
        _thread_sinks.line = _thread_sinks.progress = None


# ---------------------------------------------------------------------------------------------
# ROM loader


def _mac_text(mac: Any) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _open_serial(port: str):
    """The port esptool will use. For rfc2217:// a client that does not renegotiate the line
    settings when only the read timeout changes: pyserial sends baud/size/parity/stop bits to the
    server and sleeps >= 50 ms for the acknowledgements on every timeout change, and esptool changes
    the timeout twice per command, which made every ROM command cost ~0.2 s (the timeout is a
    purely local setting). Other ports are opened by esptool itself (None here)."""
    if not port.startswith("rfc2217://"):
        return None
    import serial
    import serial.rfc2217

    class Rfc2217Port(serial.rfc2217.Serial):
        _negotiated: tuple | None = None

        def _reconfigure_port(self) -> None:
            if self._write_timeout is not None:  # as pyserial's rfc2217 client: esptool relies on this
                raise NotImplementedError("write_timeout is currently not supported")
            settings = (self._baudrate, self._bytesize, self._parity, self._stopbits, self._rtscts, self._xonxoff)
            if settings == self._negotiated:
                return
            super()._reconfigure_port()
            self._negotiated = settings

        def rfc2217_set_control(self, value: bytes) -> None:
            # pyserial sleeps 50 ms before it first looks for the server's acknowledgement of a
            # DTR/RTS change; a reset sequence has 4-6 of them. Poll every 2 ms instead.
            if self._ignore_set_control_answer:
                return super().rfc2217_set_control(value)
            item = self._rfc2217_options["control"]
            item.set(value)
            deadline = time.monotonic() + self._network_timeout
            while not item.is_ready():
                if time.monotonic() > deadline:
                    raise serial.SerialException(f"timeout while waiting for option {item.name!r}")
                time.sleep(0.002)

    ser = Rfc2217Port(None, exclusive=True)
    ser.port = port
    ser.open()
    return ser


class RomLink:
    """The unit's ROM loader (or esptool's stub once uploaded), reached by a DTR/RTS reset."""

    def __init__(self, port: str, baud: int = ROM_BAUD, connect_attempts: int = 3, stub: bool = True) -> None:
        import serial
        from esptool.cmds import detect_chip
        from esptool.util import FatalError

        self.port = port
        _install_esptool_logger()
        try:
            # ESPLoader takes an open serial object as well as a name (loader.py __init__)
            opened = _open_serial(port)
            self.esp = detect_chip(opened or port, ROM_BAUD, "default-reset", connect_attempts=connect_attempts)
        except FatalError as exc:
            text = str(exc)
            if "Could not open" in text:
                raise HostError(
                    f"cannot open {port}: it is busy or does not exist; check the cable and --port, "
                    "and close any serial monitor"
                ) from None
            if "Failed to connect" in text or "No serial data" in text or "Timed out" in text:
                raise HostError(
                    f"no reply from the ROM loader on {port}: hold BOOT and press EN, or try a lower --baud"
                ) from None
            raise HostError(f"ROM loader on {port}: {text.splitlines()[0]}; press EN and retry") from None
        except (serial.SerialException, OSError) as exc:
            raise HostError(
                f"cannot open {port} ({exc}): check the cable, and that no serial monitor holds the port"
            ) from None
        self.chip = self.esp.CHIP_NAME
        self.stub = False
        try:
            if stub:
                self._try_stub()
            if baud != ROM_BAUD:
                try:
                    self.esp.change_baud(baud)
                except Exception as exc:
                    raise HostError(f"{port}: cannot switch to {baud} baud ({exc}); use a lower --baud") from None
        except BaseException:
            self.close()  # one client at a time on most ports: never leave it held
            raise

    def _try_stub(self) -> None:
        """esptool's RAM stub makes writes compressed and fast; a ROM that refuses it still works."""
        from esptool.cmds import run_stub

        try:
            self.esp = run_stub(self.esp)
            self.stub = bool(getattr(self.esp, "IS_STUB", False))
        except Exception:
            # The stub did not start: resynchronise with the ROM loader and go on without it.
            self.esp.connect("no-reset", 3)
            self.stub = False

    @property
    def mac(self) -> str:
        return _mac_text(self.esp.read_mac())

    def image_in_flash(self, offset: int, data: bytes) -> bool:
        """True when flash at `offset` already holds `data` (SPI_FLASH_MD5, no read-back)."""
        from esptool.cmds import attach_flash
        from esptool.util import pad_to

        attach_flash(self.esp)
        padded = pad_to(data, 4)
        return self.esp.flash_md5sum(offset, len(padded)) == hashlib.md5(padded).hexdigest()

    def write_image(self, offset: int, data: bytes, erase: bool) -> None:
        """write-flash then verify-flash, as `esptool write-flash --verify` would."""
        from esptool.cmds import attach_flash, erase_flash, verify_flash, write_flash
        from esptool.util import FatalError

        try:
            attach_flash(self.esp)
            if erase:
                if not self.stub:
                    raise HostError(
                        f"{self.port}: --erase needs esptool's stub flasher, which this unit's loader refused; "
                        "flash without --erase"
                    )
                erase_flash(self.esp)
            write_flash(self.esp, [(offset, data)], flash_mode="keep", flash_freq="keep", flash_size="keep")
            verify_flash(self.esp, [(offset, data)], flash_mode="keep", flash_freq="keep", flash_size="keep")
        except FatalError as exc:
            first = str(exc).splitlines()[0]
            if "MD5" in first or "Verification failed" in first or "empty" in first:
                raise HostError(
                    f"flash verify failed on {self.port} ({first}): the flash chip or power supply may be bad; "
                    "retry, then replace the board"
                ) from None
            raise HostError(f"writing flash on {self.port} failed ({first}): check the cable, retry with a lower --baud") from None

    def hard_reset(self) -> None:
        """Leave the loader and boot the application (RTS pulse on EN), then let go of the port."""
        try:
            self.esp.hard_reset()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.esp._port.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# MicroPython REPL

# Runs on the unit: every file's sha256, the unit manifest and config, the bytecode version.
SURVEY_SCRIPT = """
import os, sys, json, hashlib, binascii
def _tg_walk(d, out, buf):
    for e in os.ilistdir(d):
        p = (d if d != '/' else '') + '/' + e[0]
        if e[1] & 0x4000:
            _tg_walk(p, out, buf)
            continue
        h = hashlib.sha256()
        mv = memoryview(buf)
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
        out[p] = binascii.hexlify(h.digest()).decode()
def _tg_read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
_tg_out = {}
_tg_walk('/', _tg_out, bytearray(1024))
print(json.dumps({'mpy': getattr(sys.implementation, '_mpy', None), 'files': _tg_out,
    'manifest': _tg_read('/manifest.json'), 'config': _tg_read('/config.json'),
    'calibration': _tg_read('/calibration.json'), 'counters': _tg_read('/counters.json'),
    'machine': os.uname().machine if hasattr(os, 'uname') else getattr(sys.implementation, '_machine', '')}))
"""

# Runs on the unit: sha256 of flash[offset:offset+size] through MicroPython's esp.flash_read (ESP32
# port, modesp.c), so a unit already running this image can prove it without a reset into the ROM
# loader. Prints "none" where the port has no esp.flash_read (then the ROM loader is asked).
FLASH_HASH_SCRIPT = """
try:
    import esp
    _tg_read = esp.flash_read
except (ImportError, AttributeError):
    _tg_read = None
if _tg_read is None:
    print('none')
else:
    import hashlib, binascii
    _tg_h = hashlib.sha256()
    _tg_buf = bytearray(4096)
    _tg_at, _tg_left = %d, %d
    while _tg_left > 0:
        if _tg_left < len(_tg_buf):
            _tg_buf = bytearray(_tg_left)
        _tg_read(_tg_at, _tg_buf)
        _tg_h.update(_tg_buf)
        _tg_at += len(_tg_buf)
        _tg_left -= len(_tg_buf)
    print(binascii.hexlify(_tg_h.digest()).decode())
"""

# Runs on the unit: can it read its own flash, and which release does it say it carries?
PROBE_SCRIPT = """
import json
try:
    import esp
    _tg_fr = hasattr(esp, 'flash_read')
except ImportError:
    _tg_fr = False
try:
    with open('/manifest.json') as _tg_f:
        _tg_m = _tg_f.read()
except OSError:
    _tg_m = None
print(json.dumps({'flash_read': _tg_fr, 'manifest': _tg_m}))
"""

MAC_SCRIPT = """
try:
    import machine, binascii
    print(binascii.hexlify(machine.unique_id()).decode())
except Exception:
    print('')
"""


class ReplLink:
    """MicroPython's raw REPL through mpremote's SerialTransport (the library, not the CLI)."""

    def __init__(self, port: str, baud: int = ROM_BAUD) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self._TransportError = TransportError
        try:
            # A read timeout: mpremote's raw-paste handshake does bare serial.read(n) calls, which
            # with pyserial's default (None) block forever on a unit that stopped answering.
            self.transport = SerialTransport(port, baudrate=baud, timeout=READ_TIMEOUT_S)
        except (TransportError, OSError, Exception) as exc:
            raise HostError(f"cannot open {port} for the REPL ({exc}): check the cable and that no other program holds it") from None

    def close(self) -> None:
        try:
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
            self.transport.close()
        except Exception:
            pass

    # -- raw REPL -----------------------------------------------------------------------------

    def _enter_raw(self, soft_reset: bool, timeout: float) -> bool:
        """mpremote's enter_raw_repl, without its print() of stray bytes (stdout may be JSON)."""
        t = self.transport
        ser = t.serial
        ser.write(b"\r\x03")  # Ctrl-C: stop main.py
        time.sleep(0.05)
        while ser.in_waiting:
            ser.read(ser.in_waiting)
        ser.write(b"\r\x01")  # Ctrl-A: raw REPL
        banner = b"raw REPL; CTRL-B to exit\r\n"
        if soft_reset:
            if not t.read_until(1, banner + b">", timeout=timeout, timeout_overall=timeout).endswith(banner + b">"):
                return False
            ser.write(b"\x04")  # Ctrl-D: soft reset, boot.py runs, then back to the raw REPL
            if not t.read_until(1, b"soft reboot\r\n", timeout=timeout, timeout_overall=timeout).endswith(b"soft reboot\r\n"):
                return False
        if not t.read_until(1, banner, timeout=timeout, timeout_overall=timeout).endswith(banner):
            return False
        t.in_raw_repl = True
        return True

    def wait_for_micropython(self, timeout: float = 20.0) -> None:
        """After a reset: keep knocking (Ctrl-C, Ctrl-A) until the raw REPL answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._enter_raw(soft_reset=False, timeout=1.5):
                    return
            except (self._TransportError, OSError):
                pass
            if time.monotonic() > deadline:
                raise HostError(
                    f"MicroPython did not start on {self.port} within {timeout:.0f} s: "
                    "check the image is MicroPython for this board, press EN, then run the command again"
                )
            time.sleep(0.2)

    def answers(self, timeout: float = 1.0) -> bool:
        """One knock: is MicroPython's REPL there right now? (A ROM loader ignores the bytes.)"""
        try:
            return self._enter_raw(soft_reset=False, timeout=timeout)
        except (self._TransportError, OSError):
            return False

    def soft_reset(self, timeout: float = 15.0) -> None:
        try:
            ok = self._enter_raw(soft_reset=True, timeout=timeout)
        except (self._TransportError, OSError) as exc:
            raise HostError(f"{self.port}: soft reset failed ({exc}); press EN and run the command again") from None
        if not ok:
            raise HostError(f"{self.port}: no raw REPL after a soft reset; press EN and run the command again")

    def run_app(self) -> None:
        """Leave the raw REPL and soft-reset from the normal REPL, so boot.py then main.py start the gate."""
        t = self.transport
        if t.in_raw_repl:
            t.exit_raw_repl()
        t.serial.write(b"\x04")
        time.sleep(0.1)

    def exec(self, code: str, timeout: float = 20.0) -> bytes:
        from mpremote.transport import TransportError

        if not self.transport.in_raw_repl:
            self.wait_for_micropython(timeout=10)
        try:
            out, err = self.transport.exec_raw(code, timeout=timeout)
        except (TransportError, OSError, struct.error, ValueError) as exc:  # struct.error: a cut-short reply
            raise HostError(f"{self.port}: lost the REPL ({exc}); check the cable and run the command again") from None
        if err:
            raise UnitScriptError(self.port, err.decode("utf-8", "replace"))
        return out

    def exec_json(self, code: str, timeout: float = 30.0) -> Any:
        out = self.exec(code, timeout=timeout)
        text = out.decode("utf-8", "replace").strip().splitlines()
        try:
            return json.loads(text[-1] if text else "")
        except ValueError:
            raise HostError(f"{self.port}: unexpected reply from the unit: {out[-200:]!r}") from None

    # -- files --------------------------------------------------------------------------------

    def survey(self) -> dict:
        return self.exec_json(SURVEY_SCRIPT, timeout=60)

    def flash_sha256(self, offset: int, size: int) -> str | None:
        """sha256 hex of a flash region read by the unit itself, or None if it cannot read flash."""
        out = self.exec(FLASH_HASH_SCRIPT % (offset, size), timeout=60).decode().strip().splitlines()
        answer = out[-1].strip() if out else ""
        return answer if len(answer) == 64 else None

    def probe(self) -> dict:
        return self.exec_json(PROBE_SCRIPT)

    def unique_id(self) -> str:
        return self.exec(MAC_SCRIPT).decode().strip()

    def write_file(self, path: str, data: bytes, chunk: int = 3072, on_progress: ProgressSink | None = None) -> None:
        """Write atomically: into path.tmp, then rename over path (so a cut never leaves half a file)."""
        tmp = path + ".tmp"
        parent = path.rsplit("/", 1)[0]
        setup = "import os, binascii\n"
        if parent:
            setup += "try:\n os.mkdir(%r)\nexcept OSError:\n pass\n" % parent
        setup += "_tg_f = open(%r, 'wb')\n_tg_w = _tg_f.write\n_tg_a = binascii.a2b_base64\n" % tmp
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
        # rename with paths relative to "/": the unix port's VfsPosix mounted at "/" (virtual units)
        # refuses absolute paths in rename, boards accept both.
        finish = "_tg_f.close()\nos.chdir('/')\nos.rename(%r, %r)\n" % (tmp.lstrip("/"), path.lstrip("/"))
        for n, piece in enumerate(pieces):
            code = setup if n == 0 else ""
            code += "_tg_w(_tg_a(%r))\n" % base64.b64encode(piece).decode()
            if n == len(pieces) - 1:
                code += finish
            self.exec(code)
            if on_progress:
                on_progress(min((n + 1) * chunk, len(data)), len(data))

    def remove_file(self, path: str) -> None:
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\n" % path)


class UnitScriptError(HostError):
    def __init__(self, port: str, traceback: str) -> None:
        last = traceback.strip().splitlines()[-1] if traceback.strip() else "error"
        super().__init__(f"{port}: the unit raised {last}")
        self.traceback = traceback
