# Frame link packets: round trip, checksum, resynchronisation. Runs on CPython and MicroPython.
import gc
import math
from array import array

import framelink


class Sink:
    """Collects what the encoder writes, as the host would receive it."""

    def __init__(self):
        self.data = bytearray()
        self.writes = 0

    def write(self, buf):
        self.data.extend(bytes(buf))
        self.writes += 1
        return len(buf)


def _words(seed, n):
    # a deterministic pseudo-random pattern covering the whole 16-bit range, incl. SYNC bytes
    out = array("H", bytes(2 * n))
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 8) & 0xFFFF
    out[0] = 0x5AA5  # little-endian bytes A5 5A: a sync prefix inside the payload
    out[1] = 0x4754
    return out


def _packets(data):
    found = []
    pos = 0
    while True:
        status, pos, packet = framelink.parse(data, pos)
        if status != "packet":
            return found, status, pos
        found.append((packet[0], bytes(packet[1])))


def _stream(sink, frames=3):
    enc = framelink.Encoder(sink)
    eeprom = _words(7, 832)
    enc.info(eeprom, "0123456789ab", 8.0, "1.2.3")
    sent = []
    for i in range(frames):
        words = _words(100 + i, 834)
        sent.append(words)
        enc.frame(words, i + 10, 5000 + i, 24.5 + i, None if i == 0 else 36.25,
                  None if i == 0 else (10, 3, 6, 7), None if i == 0 else (12, 5),
                  framelink.FLAG_CALIBRATED, "MEASURING", "" if i < 2 else "too_far")
    enc.end(framelink.END_OK, "done")
    return eeprom, sent


def test_packet_sizes_match_layout():
    sink = Sink()
    enc = framelink.Encoder(sink)
    enc.frame(_words(1, 834), 0, 0, 25.0, None, None, None, 0, "IDLE", "")
    assert len(sink.data) == framelink.MAX_PACKET_LEN
    assert sink.writes == 1
    assert bytes(sink.data[:4]) == framelink.SYNC


def test_round_trip_info_frames_end():
    sink = Sink()
    eeprom, sent = _stream(sink)
    found, status, _ = _packets(bytes(sink.data))
    assert [p[0] for p in found] == [framelink.TYPE_INFO] + [framelink.TYPE_FRAME] * 3 + [framelink.TYPE_END]
    info = framelink.unpack_info(found[0][1])
    assert info["serial"] == "0123456789ab"
    assert info["release"] == "1.2.3"
    assert info["refresh_hz"] == 8.0
    assert list(info["eeprom"]) == list(eeprom)
    for i in range(3):
        f = framelink.unpack_frame(found[1 + i][1])
        assert list(f["words"]) == list(sent[i])
        assert f["counter"] == i + 10 and f["ticks_ms"] == 5000 + i
        assert abs(f["ta"] - (24.5 + i)) < 1e-6
        assert f["state"] == "MEASURING"
        assert f["flags"] == framelink.FLAG_CALIBRATED
        if i == 0:
            assert math.isnan(f["reading_c"])
            assert f["head"] is None and f["hot"] is None
        else:
            assert f["reading_c"] == 36.25
            assert f["head"] == (10, 3, 6, 7) and f["hot"] == (12, 5)
    assert framelink.unpack_frame(found[3][1])["reason"] == "too_far"
    end = framelink.unpack_end(found[4][1])
    assert end["sent"] == 3 and end["status"] == framelink.END_OK and end["message"] == "done"


def test_corrupted_byte_drops_only_that_packet():
    sink = Sink()
    _stream(sink)
    data = bytearray(sink.data)
    first_frame = framelink.HEADER_LEN + framelink.INFO_PAYLOAD_LEN + framelink.CRC_LEN
    data[first_frame + 500] ^= 0x01  # one bit in the first frame's words
    found, _, _ = _packets(bytes(data))
    types = [p[0] for p in found]
    assert types == [framelink.TYPE_INFO, framelink.TYPE_FRAME, framelink.TYPE_FRAME, framelink.TYPE_END]
    assert framelink.unpack_frame(found[1][1])["counter"] == 11


def test_resync_after_garbage_and_split_reads():
    sink = Sink()
    _, sent = _stream(sink, frames=2)
    garbage = b"\r\nMPY: soft reboot\r\n\xa5Z\xa5ZTG\x46\x01\xb4\x06junk" + framelink.SYNC + b"\x00"
    data = garbage + bytes(sink.data[:1000]) + b"\x04lost" + bytes(sink.data)
    # feed in uneven chunks as a serial port would, keeping the unparsed tail
    pending = b""
    got = []
    step = 97
    for i in range(0, len(data), step):
        pending += data[i : i + step]
        pos = 0
        while True:
            status, pos, packet = framelink.parse(pending, pos)
            if status == "packet":
                got.append((packet[0], bytes(packet[1])))
                continue
            pending = pending[pos:]
            break
    types = [p[0] for p in got]
    assert types == [framelink.TYPE_INFO, framelink.TYPE_FRAME, framelink.TYPE_FRAME, framelink.TYPE_END]
    assert list(framelink.unpack_frame(got[2][1])["words"]) == list(sent[1])


def test_truncated_packet_asks_for_more():
    sink = Sink()
    _stream(sink, frames=1)
    data = bytes(sink.data)
    cut = framelink.HEADER_LEN + framelink.INFO_PAYLOAD_LEN  # the CRC is missing
    status, pos, packet = framelink.parse(data[:cut], 0)
    assert status == "need" and pos == 0 and packet is None


def test_checksum_is_standard_crc32():
    # the CRC-32 check value ("123456789" -> 0xCBF43926) for the library and the fallback
    assert framelink.checksum(b"123456789") == 0xCBF43926
    assert framelink._crc32_bits(b"123456789") == 0xCBF43926


def test_wrong_eeprom_length_is_refused():
    enc = framelink.Encoder(Sink())
    try:
        enc.info([0] * 10, "x", 8.0)
    except ValueError as exc:
        assert "832" in str(exc)
    else:
        raise AssertionError("short EEPROM accepted")


def test_frame_packet_allocates_little():
    if not hasattr(gc, "mem_alloc"):
        return  # CPython: nothing to measure
    sink = Sink()
    enc = framelink.Encoder(sink)
    words = _words(3, 834)

    class Null:
        def write(self, buf):
            return len(buf)

    enc.out = Null()
    enc.frame(words, 0, 0, 25.0, 36.0, (1, 2, 3, 4), (2, 3), 0, "IDLE", "")
    gc.collect()
    before = gc.mem_alloc()
    for i in range(20):
        enc.frame(words, i, i, 25.0, 36.0, (1, 2, 3, 4), (2, 3), 0, "IDLE", "")
    per_frame = (gc.mem_alloc() - before) / 20
    # the 1728-byte packet is reused; what remains is a few small objects (66 bytes on the unix
    # port: the boxed floats and the memoryview slices of struct and crc32)
    assert per_frame < 160, per_frame


class FakeSensor:
    """What stream() uses of the driver: frame, serial, refresh_rate, eeprom."""

    def __init__(self):
        self.frame = _words(50, 834)
        self.serial = "00112233aabb"
        self.refresh_rate = 8.0
        self.eeprom = _words(51, 832)


class FakeUnit:
    """The part of unit.Unit that stream() drives: cycle() calls _on_frame after each subpage."""

    def __init__(self, fail_after=None):
        self.sensor = FakeSensor()
        self._on_frame = None
        self.frames = 0
        self.cycles = 0
        self.stopped = 0
        self.fail_after = fail_after
        self.indicator = None

    def cycle(self):
        self.cycles += 1
        if self.fail_after is not None and self.frames >= self.fail_after:
            self.sensor = None  # the sensor went away: no frames any more
            import time

            time.sleep_ms(50) if hasattr(time, "sleep_ms") else time.sleep(0.05)
            return
        self.frames += 1
        self.sensor.frame[833] = self.frames & 1
        if self._on_frame is not None:
            state = "MEASURING" if self.frames > 2 else "IDLE"
            self._on_frame(1000 + 125 * self.frames, state,
                           {"head_box": (10, 2, 15, 9), "hot_pixels": [3 * 32 + 12], "ta": 26.5,
                            "reading_c": 36.4, "calibrated": True, "fault": None, "reason": None})

    def fault_reason(self):
        return None if self.sensor is not None else "sensor not answering on I2C"

    def stop(self):
        self.stopped += 1


class FakeUnitModule:
    def __init__(self, unit):
        self._current = unit


def test_stream_drives_the_running_unit_and_restores_its_hook():
    sink = Sink()
    u = FakeUnit()

    calls = [0]

    def original(now_ms, state, info):
        calls[0] += 1

    u._on_frame = original
    sent = framelink.stream(5, every=2, out=sink, unit_module=FakeUnitModule(u))
    assert sent == 5
    assert u.cycles == 9  # pairs 1-2, 5-6, then 9 (every 2nd pair of consecutive subpages)
    assert calls[0] == 9  # the unit's own hook still saw every frame
    assert u._on_frame is original and u.stopped == 1
    found, _, _ = _packets(bytes(sink.data))
    assert [p[0] for p in found] == [framelink.TYPE_INFO] + [framelink.TYPE_FRAME] * 5 + [framelink.TYPE_END]
    info = framelink.unpack_info(found[0][1])
    assert info["serial"] == "00112233aabb" and list(info["eeprom"]) == list(u.sensor.eeprom)
    frames = [framelink.unpack_frame(p[1]) for p in found[1:6]]
    assert [f["counter"] for f in frames] == [1, 2, 5, 6, 9]
    assert frames[-1]["head"] == (10, 2, 6, 8) and frames[-1]["hot"] == (12, 3)
    assert frames[-1]["state"] == "MEASURING" and frames[-1]["flags"] == framelink.FLAG_CALIBRATED
    end = framelink.unpack_end(found[-1][1])
    assert end["status"] == framelink.END_OK and end["sent"] == 5


def test_stream_ends_with_sensor_error_when_frames_stop():
    sink = Sink()
    u = FakeUnit(fail_after=3)
    sent = framelink.stream(10, out=sink, unit_module=FakeUnitModule(u), sensor_wait_ms=300)
    assert sent == 3
    found, _, _ = _packets(bytes(sink.data))
    end = framelink.unpack_end(found[-1][1])
    assert end["status"] == framelink.END_SENSOR_ERROR and "I2C" in end["message"]
