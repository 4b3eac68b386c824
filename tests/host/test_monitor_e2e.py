"""host monitor's picture and recording from frames the real firmware streamed (unix port + emulator)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from host.link.frames import ImageAssembler
from host.monitor import HEAD_COLOUR, MonitorView, load_recording, save_recording, write_png
from test_link_harness import stream_from_firmware  # noqa: E402

PERSON = {"subjects": [{"arrive_s": 0.0, "dwell_s": 100.0, "distance_m": 0.5, "skin_c": 35.8, "expect": "any"}],
          "calibrated": True}


def test_png_of_a_simulated_person_is_recognisable(tmp_path):
    got = stream_from_firmware(tmp_path, PERSON, 8, config={"refresh_hz": 8}, warmup=20)
    assert got.info is not None
    view = MonitorView(got.info, "unix-port")
    for frame in got.frames:
        view.add(frame)
    assert view.assembler.complete
    last = got.frames[-1]
    assert last.head is not None, f"the firmware found no head (state {last.state} {last.reason})"
    assert last.hot is not None
    c, r, w, h = last.head
    img = view.assembler.image
    head = img[r:r + h, c:c + w]
    # the head is the warm thing in the picture, and the hottest region is inside the head box
    assert float(np.nanmax(head)) > float(np.median(img)) + 5.0
    assert c <= last.hot[0] < c + w and r <= last.hot[1] < r + h
    assert abs(view.frame_rate - 8.0) < 0.5
    path = tmp_path / "person.png"
    write_png(path, img, last.head, last.hot, last.state, last.ta, last.reading_c)
    pic = np.asarray(Image.open(path).convert("RGB"))
    luma = pic.astype(float) @ np.array([0.299, 0.587, 0.114])
    cy, cx = int((r + h / 2) * 16), int((c + w / 2) * 16)
    assert luma[cy, cx] > np.median(luma[: 24 * 16]) + 60  # bright face on a dark background
    assert tuple(pic[r * 16, (c + w // 2) * 16]) == HEAD_COLOUR  # the head box is drawn


def test_recording_keeps_raw_frames_that_convert_again(tmp_path):
    got = stream_from_firmware(tmp_path, PERSON, 6, config={"refresh_hz": 8}, warmup=20)
    assert got.info is not None
    path = tmp_path / "rec.npz"
    save_recording(path, got.info, got.frames, {"port": "unix-port", "config": '{"refresh_hz": 8}',
                                                "calibration": None})
    rec = load_recording(path)
    assert rec["frames"].shape == (6, 834)
    assert rec["meta"]["serial"] == got.info.serial and rec["meta"]["refresh_hz"] == 8.0
    again = MonitorView(got.info, "x")
    assembler = ImageAssembler()
    for words in rec["frames"]:
        assembler.add(again.converter.subpage_image(words))
    direct = MonitorView(got.info, "y")
    for frame in got.frames:
        direct.add(frame)
    assert np.allclose(assembler.image, direct.assembler.image, equal_nan=True)
    assert list(rec["state"]) == [f.state for f in got.frames]
