"""Frames from a unit: decode the frame link, convert with the firmware's own driver, talk to the REPL.

The packet layout lives in firmware/framelink.py and is imported from there (one definition).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from host import FIRMWARE_DIR
from host.errors import HostError

ROWS, COLS = 24, 32
FRAME_WORDS = 834
EEPROM_WORDS = 832


def firmware_module(name: str) -> ModuleType:
    """Import firmware/<name>.py in CPython (the firmware is MicroPython-first but imports
    unchanged here). firmware/ goes to the end of sys.path so it never shadows the stdlib."""
    if str(FIRMWARE_DIR) not in sys.path:
        sys.path.append(str(FIRMWARE_DIR))
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise HostError(f"cannot import firmware/{name}.py ({exc}): the host package needs its firmware tree") from None


@dataclass
class UnitInfo:
    """The stream's first packet: what is needed to convert the unit's frames."""

    eeprom: list[int]
    serial: str
    refresh_hz: float
    release: str


@dataclass
class RawFrame:
    """One raw subpage as the unit read it, with the unit's state at that moment."""

    words: np.ndarray  # uint16, 834 (RAM 0x0400..0x073F, control register, subpage)
    counter: int
    ticks_ms: int
    ta: float  # the unit's own Ta (NaN when it has none)
    reading_c: float  # the unit's hottest-region reading (NaN = none)
    head: tuple[int, int, int, int] | None  # col, row, width, height
    hot: tuple[int, int] | None  # col, row
    flags: int
    state: str
    reason: str
    received_s: float = 0.0  # host clock when decoded

    @property
    def subpage(self) -> int:
        return int(self.words[833]) & 1

    @property
    def service_mode(self) -> bool:
        return bool(self.flags & 1)


@dataclass
class StreamEnd:
    sent: int
    status: int
    message: str


class FrameDecoder:
    """Bytes in any chunking -> UnitInfo / RawFrame / StreamEnd objects.

    Bytes that are not a valid packet (REPL text, a traceback, line noise) are kept in `junk`
    (last 4 KB) and counted in `skipped_bytes`; a packet with a bad checksum is skipped and the
    decoder resynchronises on the next one.

    Line cooking: a board's sys.stdout.buffer is binary-clean, but a link that turns "\n" into
    "\r\n" (the virtual unit's pty bridge does, as boards do for print) inserts a 0x0D before
    some 0x0A bytes of a packet. The decoder first reads every "\r\n" inside a packet as a cooked
    "\n"; if the CRC then fails it tries keeping each of those 0x0D bytes in turn (a real "\r\n"
    in the data, about one frame in 40), so both kinds of link decode every intact packet."""

    def __init__(self) -> None:
        self.framelink = firmware_module("framelink")
        fl = self.framelink
        self._lengths = {fl.TYPE_INFO: fl.INFO_PAYLOAD_LEN, fl.TYPE_FRAME: fl.FRAME_PAYLOAD_LEN,
                         fl.TYPE_END: fl.END_PAYLOAD_LEN}
        self._pending = bytearray()
        self.skipped_bytes = 0
        self.junk = bytearray()
        self.packets = 0
        self.crc_failures = 0
        self.uncooked = 0  # packets that arrived with inserted 0x0D bytes

    def feed(self, data: bytes) -> list[UnitInfo | RawFrame | StreamEnd]:
        self._pending += data
        buf = bytes(self._pending)
        out: list[UnitInfo | RawFrame | StreamEnd] = []
        pos = 0
        while True:
            status, start, end, packet = self._parse(buf, pos)
            if status == "packet":
                self._skip(buf[pos:start])
                item = self._convert(*packet)
                out.append(item)
                self.packets += 1
                pos = end
                if isinstance(item, StreamEnd):
                    break  # what follows is the REPL's reply: left in `rest` for the caller
                continue
            self._skip(buf[pos:start])
            pos = start
            break
        del self._pending[:pos]
        return out

    def _parse(self, buf: bytes, pos: int) -> tuple[str, int, int, tuple[int, bytes] | None]:
        """("packet", start, end, (type, payload)) | ("need", keep_from, 0, None)."""
        fl = self.framelink
        n = len(buf)
        while True:
            at = buf.find(fl.SYNC, pos)
            if at < 0:
                return "need", max(pos, n - 3), 0, None
            if n - at < fl.HEADER_LEN:
                return "need", at, 0, None
            ptype, version = buf[at + 4], buf[at + 5]
            length = buf[at + 6] | (buf[at + 7] << 8)
            if version != fl.VERSION or self._lengths.get(ptype) != length:
                pos = at + 1
                continue
            result = self._body(buf, at + fl.HEADER_LEN, length + fl.CRC_LEN, ())
            if result is None:
                return "need", at, 0, None
            body, end, cooked = result
            header = buf[at + 4:at + fl.HEADER_LEN]
            if self._crc_ok(header, body):
                if cooked:
                    self.uncooked += 1
                return "packet", at, end, (ptype, body[:length])
            for keep in _keep_choices(cooked):  # real "\r\n" in the data: keep those 0x0D
                retry = self._body(buf, at + fl.HEADER_LEN, length + fl.CRC_LEN, keep)
                if retry is None:
                    return "need", at, 0, None
                if self._crc_ok(header, retry[0]):
                    self.uncooked += 1
                    return "packet", at, retry[1], (ptype, retry[0][:length])
            self.crc_failures += 1
            pos = at + 1

    def _crc_ok(self, header: bytes, body: bytes) -> bool:
        fl = self.framelink
        payload, crc = body[:-fl.CRC_LEN], body[-fl.CRC_LEN:]
        return fl.checksum(header + payload) == int.from_bytes(crc, "little")

    @staticmethod
    def _body(buf: bytes, start: int, want: int, keep: tuple[int, ...]) -> tuple[bytes, int, list[int]] | None:
        """`want` bytes from buf[start:], reading "\r\n" as "\n" except at positions in keep.
        Returns (bytes, end position in buf, positions of the 0x0D bytes dropped) or None when
        buf ends first (or ends on a 0x0D whose next byte decides)."""
        parts: list[bytes] = []
        have = 0
        cursor = start
        dropped: list[int] = []
        n = len(buf)
        while have < want:
            cr = buf.find(b"\r\n", cursor, cursor + (want - have) + 1)
            if cr < 0:
                take = want - have
                if cursor + take > n:
                    return None
                if buf[cursor + take - 1] == 0x0D and cursor + take >= n:
                    return None  # a 0x0D last: it may be the start of a cooked "\r\n"
                parts.append(buf[cursor:cursor + take])
                have += take
                cursor += take
                break
            if cr in keep:
                chunk = buf[cursor:cr + 1]
            else:
                chunk = buf[cursor:cr]
                dropped.append(cr)
            if have + len(chunk) > want:
                chunk = chunk[:want - have]
            parts.append(chunk)
            have += len(chunk)
            cursor = cr + 1
        return b"".join(parts), cursor, dropped

    def _skip(self, junk: bytes) -> None:
        if junk:
            self.skipped_bytes += len(junk)
            self.junk += junk
            del self.junk[:-4096]

    @property
    def rest(self) -> bytes:
        """Bytes received but not yet parsed (after an END packet: the raw REPL's reply)."""
        return bytes(self._pending)

    def pending_text(self) -> str:
        """What arrived that was not a packet (REPL output, a traceback), for error messages."""
        return (bytes(self.junk) + bytes(self._pending)).decode("utf-8", "replace")

    def _convert(self, ptype: int, payload: bytes) -> UnitInfo | RawFrame | StreamEnd:
        fl = self.framelink
        if ptype == fl.TYPE_INFO:
            d = fl.unpack_info(payload)
            return UnitInfo(eeprom=list(d["eeprom"]), serial=d["serial"], refresh_hz=float(d["refresh_hz"]),
                            release=d["release"])
        if ptype == fl.TYPE_FRAME:
            d = fl.unpack_frame(payload)
            return RawFrame(words=np.array(d["words"], dtype=np.uint16), counter=d["counter"], ticks_ms=d["ticks_ms"],
                            ta=d["ta"], reading_c=d["reading_c"], head=d["head"], hot=d["hot"], flags=d["flags"],
                            state=d["state"], reason=d["reason"], received_s=time.monotonic())
        d = fl.unpack_end(payload)
        return StreamEnd(sent=d["sent"], status=d["status"], message=d["message"])


def _keep_choices(positions: list[int], most: int = 3, limit: int = 400) -> Iterator[tuple[int, ...]]:
    """Which 0x0D bytes to keep, fewest first: one real "\r\n" in a packet happens in ~1 of 40
    random frames, two in ~1 of 3000, three practically never."""
    from itertools import combinations, islice

    def all_choices() -> Iterator[tuple[int, ...]]:
        for size in range(1, min(most, len(positions)) + 1):
            yield from combinations(positions, size)

    return islice(all_choices(), limit)


class Converter:
    """Raw subpages -> temperatures with firmware/mlx90640.py (the unit's own code) in CPython."""

    def __init__(self, eeprom: list[int], emissivity: float = 1.0) -> None:
        self.driver = firmware_module("mlx90640")
        try:
            self.params = self.driver.extract_params(list(eeprom))
        except ValueError as exc:
            raise HostError(f"the unit sent an EEPROM the driver rejects ({exc}): check the sensor wiring") from None
        self.emissivity = emissivity
        self._out = [0.0] * (ROWS * COLS)

    def ta(self, words: np.ndarray) -> float:
        return float(self.driver.get_ta(self.params, [int(w) for w in words]))

    def subpage_image(self, words: np.ndarray, tr: float | None = None) -> np.ndarray:
        """(24, 32) object temperatures of this subpage's pixels, NaN elsewhere. tr defaults to
        Ta - 8 (the Melexis convention for an indoor scene)."""
        frame = [int(w) for w in words]
        if tr is None:
            tr = self.driver.get_ta(self.params, frame) - 8.0
        out = [math.nan] * (ROWS * COLS)
        self.driver.calculate_to(self.params, frame, self.emissivity, tr, out)
        img = np.array(out, dtype=np.float64)
        img[self._other_subpage_mask(frame)] = np.nan
        return img.reshape(ROWS, COLS)

    @staticmethod
    def _other_subpage_mask(frame: list[int]) -> np.ndarray:
        # Datasheet 10.3: control register bit 12 = chess (1) / interleaved (0) reading pattern.
        subpage = frame[833] & 1
        rows, cols = np.mgrid[0:ROWS, 0:COLS]
        if frame[832] & 0x1000:
            mine = ((rows + cols) % 2) == subpage
        else:
            mine = (rows % 2) == subpage
        return ~mine.ravel()


class ImageAssembler:
    """Keeps the latest full 32x24 image from alternating subpages, as the unit itself does."""

    def __init__(self) -> None:
        self.image = np.full((ROWS, COLS), np.nan)

    def add(self, subpage_image: np.ndarray) -> np.ndarray:
        have = ~np.isnan(subpage_image)
        self.image[have] = subpage_image[have]
        return self.image

    @property
    def complete(self) -> bool:
        return not np.isnan(self.image).any()


@dataclass
class Stream:
    info: UnitInfo
    frames: list[RawFrame] = field(default_factory=list)
    end: StreamEnd | None = None


class UnitClient:
    """One unit's REPL (mpremote's SerialTransport through host.fleet.link.ReplLink)."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        from host.fleet.link import ReplLink

        self.port = port
        self.repl = ReplLink(port, baud)
        self.repl.wait_for_micropython(timeout=15)

    def close(self, resume: bool = True) -> None:
        """Leave the unit as it was found: resume=True soft-resets it from the friendly REPL so
        boot.py and main.py start screening again (the REPL session had interrupted main.py)."""
        try:
            if resume:
                self.repl.run_app()
        except Exception:  # noqa: BLE001 - closing must not hide the command's own result
            pass
        finally:
            self.repl.close()

    def __enter__(self) -> UnitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exec(self, code: str, timeout: float = 20.0) -> str:
        return self.repl.exec(code, timeout=timeout).decode("utf-8", "replace")

    def read_file(self, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""
        out = self.exec(
            "import binascii\ntry:\n f=open(%r,'rb')\nexcept OSError:\n print('NOFILE')\nelse:\n"
            " print(binascii.b2a_base64(f.read()).decode().strip());f.close()\n" % path)
        text = out.strip()
        if text == "NOFILE":
            return None
        import base64

        return base64.b64decode(text)

    def write_file(self, path: str, data: bytes) -> None:
        """Atomic on the unit: path.tmp, then rename (ReplLink.write_file)."""
        self.repl.write_file(path, data)

    def frames(self, count: int, timeout_s: float = 10.0, every: int = 1,
               on_frame: Callable[[RawFrame], None] | None = None) -> Stream:
        """Run `framelink.stream(count, every)` on the unit and decode what it sends."""
        stream: Stream | None = None
        for item in self.iter_frames(count, timeout_s, every):
            if isinstance(item, UnitInfo):
                stream = Stream(info=item)
            elif isinstance(item, RawFrame):
                if stream is None:
                    raise HostError(f"{self.port}: frames arrived before the unit's info packet; run the command again")
                stream.frames.append(item)
                if on_frame:
                    on_frame(item)
            else:
                if item.status != 0:
                    when = "before it started" if stream is None else f"after {item.sent} frames"
                    raise HostError(f"{self.port}: the stream ended {when} ({item.message or item.status}); "
                                    "check the sensor and its wiring, then run the command again")
                if stream is None:
                    raise HostError(f"{self.port}: the unit sent no info packet; deploy the current firmware")
                stream.end = item
        if stream is None:
            raise HostError(f"{self.port}: no frames from the unit; check that firmware/framelink.py is deployed")
        return stream

    def iter_frames(self, count: int, timeout_s: float = 10.0,
                    every: int = 1) -> Iterator[UnitInfo | RawFrame | StreamEnd]:
        """Yield packets as they arrive, the StreamEnd last; count 0 = until the generator is
        closed (then Ctrl-C stops the unit's stream and the raw REPL is entered again)."""
        t = self.repl.transport
        if not t.in_raw_repl:
            self.repl.wait_for_micropython(timeout=10)
        try:
            t.exec_raw_no_follow("import framelink\nframelink.stream(%d, %d)\n" % (int(count), int(every)))
        except Exception as exc:
            raise HostError(f"{self.port}: could not start the frame stream ({exc}); check the cable and retry") from None
        decoder = FrameDecoder()
        ser = t.serial
        last = time.monotonic()
        end: StreamEnd | None = None
        finished = False
        try:
            while end is None:
                # poll, as mpremote does: the port has no read timeout, and changing it on an
                # rfc2217 link renegotiates the line settings
                waiting = ser.in_waiting
                chunk = ser.read(waiting) if waiting else b""
                if chunk:
                    last = time.monotonic()
                    for item in decoder.feed(chunk):
                        if isinstance(item, StreamEnd):
                            end = item
                            break
                        yield item
                    text = decoder.pending_text()
                    if end is None and "Traceback (most recent call last)" in text and text.rstrip().endswith(">"):
                        finished = True  # the REPL is back at its prompt
                        raise HostError(f"{self.port}: the unit raised {_error_line(text)} while streaming; "
                                        "deploy the current firmware (host deploy) and retry")
                elif time.monotonic() - last > timeout_s:
                    raise HostError(f"{self.port}: no frame for {timeout_s:.0f} s; check the sensor and the cable, "
                                    "then run the command again")
                else:
                    time.sleep(0.005)
            # the rest of the raw-REPL reply: EOF, stderr, EOF; the ">" prompt is left for the next
            # exec (mpremote's exec_raw_no_follow reads it)
            tail = decoder.rest
            deadline = time.monotonic() + timeout_s
            while tail.count(b"\x04") < 2 and time.monotonic() < deadline:
                tail += t.read_until(1, b"\x04", timeout=timeout_s)
            parts = tail.split(b"\x04")
            if len(parts) < 3:
                raise HostError(f"{self.port}: the unit did not finish the stream request; run the command again")
            # the ">" prompt may already sit in `tail`: Ctrl-A makes the raw REPL print its banner and
            # a fresh prompt, which stays unread for the next exec (mpremote reads up to ">")
            ser.write(b"\x01")
            t.read_until(1, b"raw REPL; CTRL-B to exit\r\n", timeout=timeout_s)
            finished = True
            if parts[1].strip():
                raise HostError(f"{self.port}: the unit raised {_error_line(parts[1].decode('utf-8', 'replace'))} "
                                "after streaming; deploy the current firmware and retry")
            yield end
        except BaseException:  # GeneratorExit (closed early), errors, Ctrl-C on the host
            if not finished:
                self._interrupt()
            raise

    def _interrupt(self) -> None:
        """Ctrl-C the stream and get back to a quiet raw REPL."""
        t = self.repl.transport
        try:
            t.serial.write(b"\x03")
            time.sleep(0.2)
            t.in_raw_repl = False
            self.repl.wait_for_micropython(timeout=10)
        except Exception:
            pass


def _error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\x04", "\n").splitlines() if ln.strip() and ln.strip() != ">"]
    return lines[-1] if lines else "an error"
