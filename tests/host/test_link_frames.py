"""Host decoder of the frame link, fed with packets made by the firmware's own encoder."""

from __future__ import annotations

import json
import math

import numpy as np

import framelink  # firmware/ is on sys.path (tests/conftest.py)
from host.link.frames import FrameDecoder, ImageAssembler, RawFrame, StreamEnd, UnitInfo


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, buf) -> int:
        self.data += bytes(buf)
        return len(buf)


def encoded_stream(frames: int = 4) -> tuple[bytes, list[np.ndarray]]:
    rng = np.random.default_rng(5)
    sink = Sink()
    enc = framelink.Encoder(sink)
    enc.info([int(x) for x in rng.integers(0, 65536, 832)], "00a1b2c3d4e5", 4.0, "0.1.0+abc")
    sent = []
    for i in range(frames):
        words = rng.integers(0, 65536, 834).astype(np.uint16)
        words[833] = i % 2
        sent.append(words)
        enc.frame([int(w) for w in words], i, 250 * i, 26.0, 36.5, (10, 2, 8, 9), (13, 5),
                  framelink.FLAG_SERVICE, "IDLE", "")
    enc.end()
    return bytes(sink.data), sent


def test_decoder_reassembles_packets_from_small_chunks_among_repl_text():
    data, sent = encoded_stream()
    noise = b"OK\x04\r\nTraceback? no, just text\r\n>"
    stream = noise + data[:3000] + b"\x00\xff" + data + b"\x04\x04>"
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 61):
        got += dec.feed(stream[i:i + 61])
    kinds = [type(g).__name__ for g in got]
    # the damaged first copy yields its info packet (first 1712 bytes) and nothing else
    assert kinds == ["UnitInfo", "UnitInfo"] + ["RawFrame"] * 4 + ["StreamEnd"]
    info = got[1]
    assert isinstance(info, UnitInfo) and info.serial == "00a1b2c3d4e5" and info.refresh_hz == 4.0
    frames = [g for g in got if isinstance(g, RawFrame)]
    for f, words in zip(frames, sent):
        assert np.array_equal(f.words, words)
        assert f.subpage == int(words[833]) & 1
        assert f.head == (10, 2, 8, 9) and f.hot == (13, 5) and f.service_mode
    assert isinstance(got[-1], StreamEnd) and got[-1].sent == 4
    assert dec.skipped_bytes > len(noise)
    assert "just text" in dec.pending_text()


def test_decoder_drops_a_corrupted_frame_and_keeps_the_next():
    data, sent = encoded_stream(3)
    damaged = bytearray(data)
    second_frame_start = 1712 + 1728
    damaged[second_frame_start + 900] ^= 0x80
    got = FrameDecoder().feed(bytes(damaged))
    frames = [g for g in got if isinstance(g, RawFrame)]
    assert [f.counter for f in frames] == [0, 2]


def test_image_assembler_needs_both_subpages():
    asm = ImageAssembler()
    half = np.full((24, 32), np.nan)
    r, c = np.mgrid[0:24, 0:32]
    half[(r + c) % 2 == 0] = 30.0
    asm.add(half)
    assert not asm.complete
    other = np.where(np.isnan(half), 31.0, np.nan)
    img = asm.add(other)
    assert asm.complete and math.isclose(float(np.mean(img)), 30.5)


def cook(data: bytes, previous: int = 0) -> bytes:
    """What the virtual unit's pty bridge (and a board's text output) does: "\\n" -> "\\r\\n"."""
    out = bytearray()
    for byte in data:
        if byte == 0x0A and previous != 0x0D:
            out.append(0x0D)
        out.append(byte)
        previous = byte
    return bytes(out)


def test_decoder_undoes_line_cooking_including_real_crlf_in_data():
    rng = np.random.default_rng(11)
    sink = Sink()
    enc = framelink.Encoder(sink)
    enc.info([int(x) for x in rng.integers(0, 65536, 832)], "00a1b2c3d4e5", 8.0, "")
    sent = []
    for i in range(40):
        words = rng.integers(0, 65536, 834).astype(np.uint16)
        if i % 5 == 0:
            words[100] = 0x0A0D  # little-endian bytes 0D 0A: a real "\r\n" inside the data
            words[101] = 0x0D0A  # 0A 0D
        if i % 7 == 0:
            words[833] = 0x0D00 | (i & 1)  # 00 0D: a 0x0D right before the CRC
        sent.append(words)
        enc.frame([int(w) for w in words], i, i, 25.0, None, None, None, 0, "IDLE", "")
    enc.end()
    raw = bytes(sink.data)
    cooked = cook(raw)
    assert len(cooked) > len(raw)  # the stream really was changed
    for stream in (raw, cooked):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), 500):
            got += dec.feed(stream[i:i + 500])
        frames = [g for g in got if isinstance(g, RawFrame)]
        assert [f.counter for f in frames] == list(range(40))
        assert all(np.array_equal(f.words, w) for f, w in zip(frames, sent))
        assert dec.crc_failures == 0
    assert dec.uncooked > 0


def test_converter_uses_the_firmware_driver_and_masks_the_other_subpage(shared_mlx):
    from host.link.frames import Converter

    data = json.loads((shared_mlx / "melexis_example.json").read_text())
    conv = Converter(data["eeprom"])
    for name in ("frame0", "frame1"):
        words = np.array(data[name], dtype=np.uint16)
        img = conv.subpage_image(words)
        expected = np.array(data["to_" + name]).reshape(24, 32)
        have = ~np.isnan(img)
        assert have.sum() == 384  # one subpage: half the pixels
        rows, cols = np.nonzero(have)
        assert np.all((rows + cols) % 2 == (int(words[833]) & 1))  # chess pattern (control 0x1901)
        assert np.max(np.abs(img[have] - expected[have])) < 0.01
