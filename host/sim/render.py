"""Pictures of a simulated run: the thermal image in a colour map, the head box and hottest region,
and the indicator as the unit showed it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from host.errors import HostError
from host.sim.runner import Frame, RunResult

SCALE = 12
BAR_PX = 44
# "ironbow" anchor colours from cold to hot
_ANCHORS = np.array([
    (0, 0, 0), (32, 0, 96), (120, 0, 150), (190, 30, 110), (235, 90, 30), (250, 170, 0), (255, 235, 120),
    (255, 255, 255)], dtype=float)
STATE_COLOURS = {"pass": (0, 200, 0), "fail": (230, 0, 0), "retry": (250, 170, 0), "fault": (160, 0, 200),
                 "measuring": (0, 120, 255), "idle": (90, 90, 90)}


def colour_map(image_c: np.ndarray, low_c: float, high_c: float) -> np.ndarray:
    """(rows, cols) deg C -> (rows, cols, 3) uint8."""
    scaled = np.clip((image_c - low_c) / max(high_c - low_c, 1e-6), 0, 1) * (len(_ANCHORS) - 1)
    lower = np.floor(scaled).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (scaled - lower)[..., np.newaxis]
    rgb = _ANCHORS[lower] * (1 - frac) + _ANCHORS[lower + 1] * frac
    return rgb.astype(np.uint8)


def _indicator_colour(frame: Frame) -> tuple[int, int, int] | None:
    """What the unit's own indicator showed: the NeoPixel colour, or lit GPIO LEDs."""
    for key, value in sorted(frame.indicator.items()):
        if key.startswith("neopixel:") and isinstance(value, list) and value:
            r, g, b = (int(c) for c in value[0][:3])
            peak = max(r, g, b)
            if peak == 0:
                return None
            # the firmware dims the LED (brightness); show its colour at full strength
            return (r * 255 // peak, g * 255 // peak, b * 255 // peak)
    lit = [key for key, value in frame.indicator.items() if key.startswith("pin:") and value]
    if lit:
        return (255, 255, 255)
    return None


def _box(info: dict[str, Any], key: str) -> tuple[float, float, float, float] | None:
    value = info.get(key)
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    return None


def frame_image(frame: Frame, low_c: float, high_c: float, label: str = "") -> Image.Image:
    rows, cols = frame.scene_c.shape
    rgb = colour_map(frame.scene_c, low_c, high_c)
    picture = Image.fromarray(rgb, "RGB").resize((cols * SCALE, rows * SCALE), Image.NEAREST)
    canvas = Image.new("RGB", (cols * SCALE, rows * SCALE + BAR_PX), (20, 20, 20))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    # ground truth head boxes (grey) and what the firmware found (white)
    for c0, r0, c1, r1 in frame.truth.head_boxes.values():
        draw.rectangle([c0 * SCALE, r0 * SCALE, c1 * SCALE, r1 * SCALE], outline=(140, 140, 140))
    head = _box(frame.info, "head_box")  # firmware: (col0, row0, col1, row1), inclusive
    if head is not None:
        c0, r0, c1, r1 = head
        draw.rectangle([c0 * SCALE, r0 * SCALE, (c1 + 1) * SCALE - 1, (r1 + 1) * SCALE - 1],
                       outline=(255, 255, 255), width=2)
    hot = frame.info.get("hot_pixels")
    if isinstance(hot, list) and hot and all(isinstance(i, int) for i in hot):
        for index in hot:  # the firmware's hottest region, pixel by pixel
            row, col = divmod(index, cols)
            draw.rectangle([col * SCALE + 2, row * SCALE + 2, (col + 1) * SCALE - 3, (row + 1) * SCALE - 3],
                           outline=(0, 255, 255), width=2)
    else:
        # no hottest region reported: mark the hottest pixel inside the true head box
        for c0, r0, c1, r1 in frame.truth.head_boxes.values():
            r_lo, r_hi = max(int(r0), 0), min(int(np.ceil(r1)), rows)
            c_lo, c_hi = max(int(c0), 0), min(int(np.ceil(c1)), cols)
            if r_hi > r_lo and c_hi > c_lo:
                region = frame.scene_c[r_lo:r_hi, c_lo:c_hi]
                r, c = np.unravel_index(int(np.argmax(region)), region.shape)
                cx, cy = (c_lo + c + 0.5) * SCALE, (r_lo + r + 0.5) * SCALE
                draw.ellipse([cx - SCALE / 2, cy - SCALE / 2, cx + SCALE / 2, cy + SCALE / 2], outline=(0, 255, 255))
    # status bar: indicator lamp, state, time
    y = rows * SCALE
    lamp = _indicator_colour(frame)
    draw.ellipse([8, y + 8, 36, y + 36], fill=lamp or (0, 0, 0), outline=(200, 200, 200))
    state_colour = STATE_COLOURS.get(frame.state, (220, 220, 220))
    reading = frame.info.get("reading_c")
    status = "%s  t=%.2f s" % (frame.state.upper(), frame.t_s)
    if isinstance(frame.info.get("reason"), str):
        status += " (%s)" % frame.info["reason"]
    if isinstance(reading, (int, float)):
        status += "  reading %.2f C" % reading
    draw.text((48, y + 8), status, fill=state_colour)
    draw.text((48, y + 24), "%s  [%.0f..%.0f C]" % (label, low_c, high_c), fill=(180, 180, 180))
    return canvas


def _range(result: RunResult) -> tuple[float, float]:
    ambient = result.scenario.sensor.ambient_c
    return ambient - 2.0, max(40.0, ambient + 12.0)


def _frame_for(result: RunResult, t_s: float) -> Frame | None:
    best = None
    for frame in result.frames:
        if frame.t_s <= t_s + 1e-6:
            best = frame
    return best or (result.frames[0] if result.frames else None)


def _temp_beside(path: Path) -> str:
    """A temporary file next to path, with the permissions a plain open() would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _atomic_save(image: Image.Image, path: Path, **kwargs: Any) -> None:
    tmp = _temp_beside(path)
    try:
        image.save(tmp, format=path.suffix.lstrip(".").upper() or "PNG", **kwargs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pngs(result: RunResult, directory: Path) -> list[Path]:
    """One PNG per subject at the moment of their verdict (mid-dwell when there was none)."""
    if not result.frames:
        raise HostError("the run recorded no frames, so there is nothing to draw: check the unit output")
    low, high = _range(result)
    written = []
    for subject in result.subjects:
        spec = result.scenario.subjects[subject.index]
        if subject.time_to_verdict_s is not None:
            t = spec.arrive_s + subject.time_to_verdict_s
        else:
            t = spec.arrive_s + spec.dwell_s / 2
        frame = _frame_for(result, t)
        if frame is None:
            continue
        label = "subject %d: skin %.1f C, expect %s" % (subject.index, subject.true_c, subject.expect)
        path = directory / ("subject_%02d.png" % subject.index)
        _atomic_save(frame_image(frame, low, high, label), path)
        written.append(path)
    return written


def write_gif(result: RunResult, path: Path, max_frames: int = 400) -> int:
    """An animated GIF of the whole run, in simulated time."""
    if not result.frames:
        raise HostError("the run recorded no frames, so there is nothing to animate: check the unit output")
    low, high = _range(result)
    step = max(1, int(np.ceil(len(result.frames) / max_frames)))
    frames = result.frames[::step]
    images = [frame_image(f, low, high).convert("P", palette=Image.ADAPTIVE, colors=128) for f in frames]
    durations = [max(20, int(round((b.t_s - a.t_s) * 1000))) for a, b in zip(frames, frames[1:])] + [500]
    if path.suffix.lower() != ".gif":
        raise HostError("--gif wants a .gif file name, not %s" % path.name)
    tmp = _temp_beside(path)
    try:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(images)
