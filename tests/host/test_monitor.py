"""host monitor's pure parts: colour map, terminal grid, PNG, recording format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from host.errors import HostError
from host.link.frames import RawFrame, UnitInfo
from host.monitor import (HEAD_COLOUR, HOT_COLOUR, load_recording, save_recording, terminal_image, to_rgb,
                          write_png)


def person_image() -> np.ndarray:
    img = np.full((24, 32), 24.0)
    img[4:12, 13:19] = 34.5  # head
    img[12:24, 10:22] = 29.0  # body
    img[7, 15] = 36.0  # canthus
    return img


def test_colour_map_is_monotonic_in_brightness():
    ramp = np.linspace(20, 40, 24 * 32).reshape(24, 32)
    rgb = to_rgb(ramp, 20, 40).reshape(-1, 3).astype(float)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) >= -1.0)
    assert luma[-1] - luma[0] > 200


def test_terminal_grid_has_half_block_cells_and_marks():
    text = terminal_image(person_image(), head=(13, 4, 6, 8), hot=(15, 7))
    lines = text.plain.splitlines()
    assert len(lines) == 12 and all(len(line) == 64 for line in lines)
    assert set("".join(lines)) == {"\u2580"}
    styles = {str(span.style) for span in text.spans}
    assert any("#%02x%02x%02x" % HEAD_COLOUR in s for s in styles)
    assert any("#%02x%02x%02x" % HOT_COLOUR in s for s in styles)


def test_png_shows_the_person_warm_and_boxed(tmp_path):
    path = tmp_path / "view.png"
    write_png(path, person_image(), head=(13, 4, 6, 8), hot=(15, 7), state="MEASURING", ta=25.1, reading_c=35.9)
    pic = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert pic.shape == (24 * 16 + 22, 32 * 16, 3)
    luma = pic @ np.array([0.299, 0.587, 0.114])
    face = luma[8 * 16 + 8, 16 * 16 + 8]  # inside the head, off the outline
    wall = luma[2 * 16 + 8, 3 * 16 + 8]
    assert face > wall + 100
    edge = pic[4 * 16, 16 * 16]  # on the head box's top edge
    assert tuple(edge.astype(int)) == HEAD_COLOUR
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def _frame(i: int) -> RawFrame:
    words = np.arange(834, dtype=np.uint16) + i
    words[833] = i % 2
    return RawFrame(words=words, counter=i, ticks_ms=125 * i, ta=25.0 + i / 10, reading_c=float("nan") if i == 0 else 36.0,
                    head=None if i == 0 else (1, 2, 3, 4), hot=None if i == 0 else (2, 3), flags=2,
                    state="IDLE" if i == 0 else "MEASURING", reason="", received_s=100.0 + i)


def test_recording_round_trip(tmp_path):
    info = UnitInfo(eeprom=list(range(832)), serial="0a0b0c0d0e0f", refresh_hz=8.0, release="0.1.0+abc")
    frames = [_frame(i) for i in range(3)]
    path = tmp_path / "rec.npz"
    save_recording(path, info, frames, {"port": "rfc2217://x", "config": '{"mode": "absolute"}', "calibration": None})
    rec = load_recording(path)
    assert rec["frames"].shape == (3, 834) and rec["frames"].dtype == np.uint16
    assert np.array_equal(rec["frames"][2], frames[2].words)
    assert list(rec["eeprom"]) == list(range(832))
    assert list(rec["state"]) == ["IDLE", "MEASURING", "MEASURING"]
    assert rec["head"][0].tolist() == [-1, -1, -1, -1] and rec["head"][1].tolist() == [1, 2, 3, 4]
    assert rec["received_s"].tolist() == [0.0, 1.0, 2.0]
    assert rec["meta"]["serial"] == "0a0b0c0d0e0f" and json.loads(rec["meta"]["config"]) == {"mode": "absolute"}


def test_recording_refuses_other_files(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(HostError, match="not a host monitor recording"):
        load_recording(bad)
    with pytest.raises(HostError, match=".npz"):
        save_recording(tmp_path / "x.bin", UnitInfo([0] * 832, "s", 8.0, ""), [_frame(0)], {})
