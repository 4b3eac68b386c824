# Frame link: the unit's side of the USB link that streams raw MLX90640 subpages to the host.
#
# The host enters the raw REPL and runs `import framelink; framelink.stream(n)`. The unit answers
# with binary packets on sys.stdout.buffer; the host decodes the raw words with this same firmware's
# driver (mlx90640.py) under CPython, so there is one implementation of the sensor math.
#
# Packet (all little-endian, total length even so the buffer can be an array('H')):
#   0  SYNC      4 bytes  A5 5A 54 47 ("\xa5ZTG"), never produced by the REPL's text
#   4  type      1 byte   'I' info (once, first), 'F' frame, 'Z' end of stream
#   5  version   1 byte   VERSION
#   6  length    uint16   payload bytes
#   8  payload   length bytes
#   .. crc32     uint32   binascii.crc32 of bytes 4 .. end of payload (type, version, length, payload)
# Payloads:
#   'I': refresh_hz f32, serial 16s, release 16s, then the 832 EEPROM words (0x2400..0x273F)
#   'F': counter u32, ticks_ms u32, ta f32, reading_c f32 (NaN = none), head col,row,w,h i8
#        (-1 = no head), hottest col,row i8, flags u8 (FLAG_*), reserved u8, state 12s, reason 12s,
#        then the 834 frame words (RAM 0x0400..0x073F, control 0x800D, subpage)
#   'Z': frames sent u32, status u8 (END_*), reserved u8, message 94s
# A frame packet is 1728 bytes: at 115200 baud about 6.6 packets/s, enough for 4 Hz subpages.
import struct
import sys

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from binascii import crc32
except ImportError:  # a build without binascii.crc32: same CRC-32 (IEEE 802.3), bit by bit
    crc32 = None

VERSION = const(1)
SYNC = b"\xa5ZTG"
TYPE_INFO = const(0x49)  # 'I'
TYPE_FRAME = const(0x46)  # 'F'
TYPE_END = const(0x5A)  # 'Z'

FLAG_SERVICE = const(1)  # the unit is not screening while it streams (indicator shows service)
FLAG_CALIBRATED = const(2)  # a valid calibration.json is applied
FLAG_FAULT = const(4)  # the unit is in FAULT (any reason: files, blackbody...); the words are a good read

END_OK = const(0)
END_SENSOR_ERROR = const(1)
END_INTERRUPTED = const(2)
END_ERROR = const(3)

HEADER_LEN = const(8)
CRC_LEN = const(4)
FRAME_WORDS = const(834)
EEPROM_WORDS = const(832)
INFO_FIELDS = "<f16s16s"
INFO_FIELDS_LEN = const(36)
FRAME_FIELDS = "<IIffbbbbbbBB12s12s"
FRAME_FIELDS_LEN = const(48)
END_FIELDS = "<IBB94s"
END_FIELDS_LEN = const(100)
INFO_PAYLOAD_LEN = const(1700)  # 36 + 832 * 2
FRAME_PAYLOAD_LEN = const(1716)  # 48 + 834 * 2
END_PAYLOAD_LEN = const(100)
MAX_PACKET_LEN = const(1728)  # HEADER_LEN + FRAME_PAYLOAD_LEN + CRC_LEN

_PAYLOAD_LEN = {TYPE_INFO: INFO_PAYLOAD_LEN, TYPE_FRAME: FRAME_PAYLOAD_LEN, TYPE_END: END_PAYLOAD_LEN}


def _crc32_bits(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def checksum(data):
    """CRC-32 (IEEE, as zlib/binascii) of a bytes-like object, as an unsigned int."""
    if crc32 is not None:
        return crc32(data) & 0xFFFFFFFF
    return _crc32_bits(bytes(data))


_ENCODED = {}  # state and reason names seen so far -> bytes: no encode per frame


def _text(value, size):
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value[:size]
    encoded = _ENCODED.get(value)
    if encoded is None:
        encoded = str(value).encode()[:size]
        if len(_ENCODED) < 32:  # names are a handful of states and reasons; never grow unbounded
            _ENCODED[value] = encoded
    return encoded


class Encoder:
    """Builds packets in one preallocated buffer and hands them to `out.write`.

    out: any object with write(buffer) (sys.stdout.buffer on the unit, a bytearray-backed
    stream in tests). No allocation per frame apart from the small objects struct and the
    memoryview slices need."""

    def __init__(self, out=None):
        if out is None:
            out = sys.stdout.buffer
        self.out = out
        # array('H') keeps the words 2-byte aligned so a frame is copied with one memoryview
        # slice assignment (a bytearray cannot take an array('H') slice on MicroPython).
        from array import array

        self.packet = array("H", bytes(MAX_PACKET_LEN))
        self.view = memoryview(self.packet)
        self.sent = 0

    def _finish(self, ptype, payload_len):
        struct.pack_into("<4sBBH", self.packet, 0, SYNC, ptype, VERSION, payload_len)
        end = HEADER_LEN + payload_len
        crc = checksum(self.view[2 : end // 2])  # bytes 4 .. end
        struct.pack_into("<I", self.packet, end, crc)
        self.out.write(self.view[: (end + CRC_LEN) // 2])

    def info(self, eeprom, serial, refresh_hz, release=""):
        """The stream's first packet: what the host needs to convert the frames."""
        if len(eeprom) != EEPROM_WORDS:
            raise ValueError("EEPROM must be 832 words, got %d" % len(eeprom))
        struct.pack_into(INFO_FIELDS, self.packet, HEADER_LEN, float(refresh_hz),
                         _text(serial, 16), _text(release, 16))
        first = (HEADER_LEN + INFO_FIELDS_LEN) // 2
        self.view[first : first + EEPROM_WORDS] = _as_words(eeprom)
        self._finish(TYPE_INFO, INFO_PAYLOAD_LEN)

    def frame(self, words, counter, ticks_ms, ta, reading_c, head, hot, flags, state, reason):
        """One raw subpage plus the unit's state. head = (col, row, w, h) or None, hot =
        (col, row) or None; ta / reading_c floats (None = NaN)."""
        if head is None:
            head = _NO_HEAD
        if hot is None:
            hot = _NO_HOT
        struct.pack_into(FRAME_FIELDS, self.packet, HEADER_LEN, counter & 0xFFFFFFFF,
                         ticks_ms & 0xFFFFFFFF, _NAN if ta is None else ta,
                         _NAN if reading_c is None else reading_c,
                         head[0], head[1], head[2], head[3], hot[0], hot[1], flags & 0xFF, 0,
                         _text(state, 12), _text(reason, 12))
        first = (HEADER_LEN + FRAME_FIELDS_LEN) // 2
        self.view[first : first + FRAME_WORDS] = _as_words(words)
        self._finish(TYPE_FRAME, FRAME_PAYLOAD_LEN)
        self.sent += 1

    def end(self, status=END_OK, message=""):
        struct.pack_into(END_FIELDS, self.packet, HEADER_LEN, self.sent, status, 0,
                         _text(message, 94))
        self._finish(TYPE_END, END_PAYLOAD_LEN)


_NAN = float("nan")
_NO_HEAD = (-1, -1, -1, -1)
_NO_HOT = (-1, -1)


def _as_words(words):
    # The driver's frame is already array('H'); lists (tests, EEPROM copies) are converted once.
    if isinstance(words, list) or isinstance(words, tuple):
        from array import array

        return array("H", words)
    return words


def parse(buf, start=0):
    """Look for one packet in buf[start:].

    Returns (status, position, packet):
      ("packet", next_start, (ptype, payload memoryview)) for a good packet;
      ("need", position, None) when buf ends inside a possible packet (keep buf[position:]);
      ("none", len(buf) - 3, None) when no sync is left (bytes before position are garbage).
    A bad checksum or an impossible header skips that sync and looks further, so a stream
    resynchronises after garbage or a lost byte."""
    n = len(buf)
    pos = start
    while True:
        pos = _find_sync(buf, pos)
        if pos < 0:
            keep = n - 3 if n - 3 > start else start
            return ("none", keep, None)
        if n - pos < HEADER_LEN:
            return ("need", pos, None)
        ptype = buf[pos + 4]
        version = buf[pos + 5]
        length = buf[pos + 6] | (buf[pos + 7] << 8)
        if version != VERSION or _PAYLOAD_LEN.get(ptype) != length:
            pos += 1
            continue
        end = pos + HEADER_LEN + length
        if n < end + CRC_LEN:
            return ("need", pos, None)
        mv = memoryview(buf)
        want = buf[end] | (buf[end + 1] << 8) | (buf[end + 2] << 16) | (buf[end + 3] << 24)
        if checksum(mv[pos + 4 : end]) != want:
            pos += 1
            continue
        return ("packet", end + CRC_LEN, (ptype, mv[pos + HEADER_LEN : end]))


def _find_sync(buf, pos):
    # bytes/bytearray .find exists on both interpreters
    return buf.find(SYNC, pos)


def unpack_info(payload):
    refresh_hz, serial, release = struct.unpack_from(INFO_FIELDS, payload, 0)
    eeprom = struct.unpack_from("<832H", payload, INFO_FIELDS_LEN)
    return {"refresh_hz": refresh_hz, "serial": _strip(serial), "release": _strip(release),
            "eeprom": eeprom}


def unpack_frame(payload):
    f = struct.unpack_from(FRAME_FIELDS, payload, 0)
    words = struct.unpack_from("<834H", payload, FRAME_FIELDS_LEN)
    head = None if f[4] < 0 else (f[4], f[5], f[6], f[7])
    hot = None if f[8] < 0 else (f[8], f[9])
    return {"counter": f[0], "ticks_ms": f[1], "ta": f[2], "reading_c": f[3], "head": head,
            "hot": hot, "flags": f[10], "state": _strip(f[12]), "reason": _strip(f[13]),
            "words": words}


def unpack_end(payload):
    sent, status, _, message = struct.unpack_from(END_FIELDS, payload, 0)
    return {"sent": sent, "status": status, "message": _strip(message)}


def _strip(raw):
    end = raw.find(b"\x00")
    if end >= 0:
        raw = raw[:end]
    return raw.decode()


# --- streaming from the running unit ---------------------------------------------------------
#
# The host interrupts main.py (Ctrl-C; unit.run() keeps its Unit in unit._current and stretches
# the watchdog), enters the raw REPL and calls stream(n). stream() goes on cycling that same Unit,
# so the gate keeps screening (indicator, verdicts, watchdog, counters) while every processed
# subpage is also sent to the host. When it returns, the unit is not screening until the host
# restarts main.py (soft reset), so the indicator is left on a non-PASS pattern ("SERVICE" where
# the indicator has one, else FAULT) instead of freezing on whatever it showed.

try:
    from time import ticks_diff as _ticks_diff
    from time import ticks_ms as _ticks_ms
except ImportError:  # CPython (host tests): the same arithmetic on a monotonic clock
    import time as _time

    def _ticks_ms():
        return int(_time.monotonic() * 1000) & 0x3FFFFFFF

    def _ticks_diff(a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


class StreamHook:
    """Sends each processed frame; chained in front of the unit's own on_frame hook."""

    def __init__(self, unit, encoder, every, chained):
        self.unit = unit
        self.encoder = encoder
        self.every = every
        self.chained = chained
        self.seen = 0
        self.info_sent = False
        self.last_ms = None

    def on_frame(self, now_ms, state, info):
        if self.chained is not None:
            self.chained(now_ms, state, info)
        self.last_ms = _ticks_ms()
        self.seen += 1
        # whole pairs of consecutive subpages, so the host always gets both halves of the image
        if ((self.seen - 1) >> 1) % self.every:
            return
        unit = self.unit
        sensor = unit.sensor
        if sensor is None:
            return
        if not self.info_sent:
            self.encoder.info(eeprom_words(sensor), sensor.serial, sensor.refresh_rate, _release())
            self.info_sent = True
        box = info.get("head_box")
        head = None if box is None else (box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1)
        hot = None
        pixels = info.get("hot_pixels")
        if pixels:
            hot = (pixels[0] % 32, pixels[0] // 32)
        flags = 0
        if info.get("calibrated"):
            flags |= FLAG_CALIBRATED
        if info.get("fault"):
            flags |= FLAG_FAULT
        self.encoder.frame(sensor.frame, unit.frames, now_ms, info.get("ta"), info.get("reading_c"), head, hot,
                           flags, state, info.get("reason") or "")


def eeprom_words(sensor):
    """The sensor's 832 EEPROM words: the driver's copy if it keeps one, else read again from the
    bus (datasheet 8.2: big-endian words at 0x2400)."""
    ee = getattr(sensor, "eeprom", None)
    if ee is not None:
        return ee
    from array import array

    raw = bytearray(2 * EEPROM_WORDS)
    sensor._i2c.readfrom_mem_into(sensor._addr, 0x2400, raw, addrsize=16)
    ee = array("H", bytes(2 * EEPROM_WORDS))
    for i in range(EEPROM_WORDS):
        ee[i] = (raw[2 * i] << 8) | raw[2 * i + 1]
    return ee


def _release():
    try:
        from version import VERSION

        return VERSION
    except ImportError:
        return ""


def _service_look(unit):
    ind = getattr(unit, "indicator", None)
    if ind is None:
        return
    try:
        import indicator as indicator_mod

        now = _ticks_ms()
        state = "SERVICE" if "SERVICE" in getattr(indicator_mod, "PATTERNS", {}) else "FAULT"
        ind.set_state(state, None, now)
        ind.tick(now)
    except Exception:  # noqa: BLE001 - the stream is over; a failing LED must not hide that
        pass


def stream(count=0, every=1, out=None, unit_module=None, sensor_wait_ms=4000):
    """Stream `count` frames (0 = until Ctrl-C) from the running unit: one pair of consecutive
    subpages out of every `every` pairs (a 115200 baud UART carries ~6 packets/s, so a unit at
    8 Hz streams with every=2 to keep up). No frame for sensor_wait_ms ends the stream
    with END_SENSOR_ERROR and the unit's fault reason. Returns the number of frames sent."""
    if unit_module is None:
        import unit as unit_module
    if every < 1:
        raise ValueError("every must be 1 or more")
    u = getattr(unit_module, "_current", None)
    fresh = u is None
    if fresh:  # main.py is not running (soft reset into the raw REPL): start the unit here
        u = unit_module.Unit()
        unit_module._current = u
        u.start()
    encoder = Encoder(out)
    previous = u._on_frame
    hook = StreamHook(u, encoder, every, previous)
    u._on_frame = hook.on_frame
    status = END_OK
    message = ""
    started = _ticks_ms()
    try:
        while count == 0 or encoder.sent < count:
            u.cycle()
            since = hook.last_ms if hook.last_ms is not None else started
            if _ticks_diff(_ticks_ms(), since) > sensor_wait_ms:
                status = END_SENSOR_ERROR
                errors = getattr(u, "errors", None) or {}
                message = errors.get("sensor") or u.fault_reason() or "no frames from the sensor"
                break
    except KeyboardInterrupt:
        status = END_INTERRUPTED
        message = "interrupted"
    finally:
        u._on_frame = previous
        if hasattr(u, "stop"):
            u.stop()  # counters saved; watchdog stretched for REPL work
        _service_look(u)
    encoder.end(status, message)
    return encoder.sent
