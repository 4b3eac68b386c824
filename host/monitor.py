"""`host monitor`: see what a unit sees, live in the terminal, as a picture, or recorded.

The unit streams raw subpages over the frame link (firmware/framelink.py); they are converted here
with the firmware's own driver. A recording (--save) holds the raw words, not temperatures, so it
can be converted again or replayed through the firmware (`host sim --replay FILE.npz`).

Recording format (numpy .npz, every array named):
  eeprom      uint16 (832,)      the sensor's EEPROM, 0x2400..0x273F
  frames      uint16 (N, 834)    raw subpages in the Melexis frameData layout
  counter     uint32 (N,)        the unit's frame counter
  ticks_ms    uint32 (N,)        the unit's clock when it read the frame
  received_s  float64 (N,)       host clock when decoded (relative to the first)
  ta          float32 (N,)       the unit's own Ta
  reading_c   float32 (N,)       the unit's hottest-region reading (NaN = none)
  head        int8 (N, 4)        head box col, row, width, height (-1 = none)
  hot         int8 (N, 2)        hottest region col, row (-1 = none)
  flags       uint8 (N,)         framelink FLAG_* bits (service mode, calibrated, fault)
  state       str (N,)           the unit's state name at that frame
  reason      str (N,)           RETRY/FAULT reason
  meta        str ()             JSON: serial, refresh_hz, release, port, recorded (UTC ISO 8601),
                                 format version, config and calibration files as the unit held them
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import click
import numpy as np

from host.errors import HostError
from host.link.frames import Converter, ImageAssembler, RawFrame, StreamEnd, UnitClient, UnitInfo

ROWS, COLS = 24, 32
RECORDING_VERSION = 1

# Colour map anchors (an "iron" palette): cold -> hot.
_PALETTE = np.array([
    (0, 0, 10), (32, 0, 96), (112, 0, 150), (190, 30, 110), (235, 80, 30),
    (250, 160, 0), (255, 225, 70), (255, 255, 230)], dtype=np.float64)
HEAD_COLOUR = (0, 255, 120)
HOT_COLOUR = (0, 200, 255)


def colour_scale(image: np.ndarray, min_span_c: float = 6.0) -> tuple[float, float]:
    """Display range: robust min/max of the image, at least min_span_c wide."""
    valid = image[~np.isnan(image)]
    if valid.size == 0:
        return 20.0, 40.0
    lo, hi = float(np.percentile(valid, 1)), float(np.max(valid))
    if hi - lo < min_span_c:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span_c / 2, mid + min_span_c / 2
    return lo, hi


def to_rgb(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(24, 32) temperatures -> (24, 32, 3) uint8 colours; NaN pixels grey."""
    x = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * (len(_PALETTE) - 1)
    i = np.minimum(x.astype(int), len(_PALETTE) - 2)
    f = (x - i)[..., None]
    rgb = _PALETTE[i] * (1 - f) + _PALETTE[i + 1] * f
    rgb[np.isnan(image)] = (90, 90, 90)
    return rgb.astype(np.uint8)


def _marked(rgb: np.ndarray, head: tuple[int, int, int, int] | None, hot: tuple[int, int] | None) -> np.ndarray:
    """Terminal cells cannot draw lines between pixels: the head box outline and the hottest
    region pixel are recoloured instead."""
    out = rgb.copy()
    if head:
        c, r, w, h = head
        c2, r2 = min(c + w - 1, COLS - 1), min(r + h - 1, ROWS - 1)
        out[r, c:c2 + 1] = HEAD_COLOUR
        out[r2, c:c2 + 1] = HEAD_COLOUR
        out[r:r2 + 1, c] = HEAD_COLOUR
        out[r:r2 + 1, c2] = HEAD_COLOUR
    if hot:
        out[hot[1], hot[0]] = HOT_COLOUR
    return out


def terminal_image(image: np.ndarray, head=None, hot=None, scale: tuple[float, float] | None = None):
    """The thermal image as rich Text: each character cell shows two pixel rows with the upper
    half block (foreground = upper pixel, background = lower pixel), each pixel two cells wide."""
    from rich.style import Style
    from rich.text import Text

    lo, hi = scale or colour_scale(image)
    rgb = _marked(to_rgb(image, lo, hi), head, hot)
    text = Text()
    for r in range(0, ROWS, 2):
        for c in range(COLS):
            top, bottom = rgb[r, c], rgb[r + 1, c]
            style = Style(color="#%02x%02x%02x" % tuple(top), bgcolor="#%02x%02x%02x" % tuple(bottom))
            text.append("\u2580\u2580", style)
        text.append("\n")
    return text


def write_png(path: str | Path, image: np.ndarray, head=None, hot=None, state: str = "", ta: float | None = None,
              reading_c: float | None = None, pixel: int = 16) -> None:
    """A picture of the image, upscaled, with the head box and hottest region drawn and a caption."""
    from PIL import Image, ImageDraw

    lo, hi = colour_scale(image)
    rgb = to_rgb(image, lo, hi)
    width, height = COLS * pixel, ROWS * pixel
    caption_h = 22
    pic = Image.new("RGB", (width, height + caption_h), (0, 0, 0))
    pic.paste(Image.fromarray(rgb, "RGB").resize((width, height), Image.NEAREST), (0, 0))
    draw = ImageDraw.Draw(pic)
    if head:
        c, r, w, h = head
        draw.rectangle([c * pixel, r * pixel, (c + w) * pixel - 1, (r + h) * pixel - 1], outline=HEAD_COLOUR, width=2)
    if hot:
        c, r = hot
        draw.ellipse([c * pixel + 2, r * pixel + 2, (c + 1) * pixel - 3, (r + 1) * pixel - 3], outline=HOT_COLOUR, width=2)
    words = [state or "-"]
    if ta is not None and not math.isnan(ta):
        words.append(f"Ta {ta:.1f} C")
    if reading_c is not None and not math.isnan(reading_c):
        words.append(f"head {reading_c:.1f} C")
    words.append(f"scale {lo:.1f}..{hi:.1f} C")
    draw.text((4, height + 5), "   ".join(words), fill=(230, 230, 230))
    _atomic_save(Path(path), lambda tmp: pic.save(tmp, format="PNG"))


def _atomic_save(path: Path, save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_recording(path: str | Path, info: UnitInfo, frames: list[RawFrame], meta: dict[str, Any]) -> None:
    if not frames:
        raise HostError("no frames to save: the unit sent none; check the sensor and retry")
    t0 = frames[0].received_s
    arrays = {
        "eeprom": np.array(info.eeprom, dtype=np.uint16),
        "frames": np.stack([f.words for f in frames]).astype(np.uint16),
        "counter": np.array([f.counter for f in frames], dtype=np.uint32),
        "ticks_ms": np.array([f.ticks_ms for f in frames], dtype=np.uint32),
        "received_s": np.array([f.received_s - t0 for f in frames], dtype=np.float64),
        "ta": np.array([f.ta for f in frames], dtype=np.float32),
        "reading_c": np.array([f.reading_c for f in frames], dtype=np.float32),
        "head": np.array([f.head or (-1, -1, -1, -1) for f in frames], dtype=np.int8),
        "hot": np.array([f.hot or (-1, -1) for f in frames], dtype=np.int8),
        "flags": np.array([f.flags for f in frames], dtype=np.uint8),
        "state": np.array([f.state for f in frames], dtype=str),
        "reason": np.array([f.reason for f in frames], dtype=str),
        "meta": np.array(json.dumps({"format": RECORDING_VERSION, "serial": info.serial,
                                     "refresh_hz": info.refresh_hz, "release": info.release, **meta})),
    }
    target = Path(path)
    if target.suffix != ".npz":
        raise HostError(f"--save {path}: the recording must be a .npz file name")

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    _atomic_save(target, save)


def load_recording(path: str | Path) -> dict[str, Any]:
    """A recording as a dict of arrays plus `meta` decoded from JSON."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise HostError(f"cannot read recording {path} ({exc}): give a file written by host monitor --save") from None
    if "frames" not in out or "eeprom" not in out:
        raise HostError(f"{path} is not a host monitor recording (no frames/eeprom arrays)")
    out["meta"] = json.loads(str(out.get("meta", "{}")))
    return out


class MonitorView:
    """State of the live view: the assembled image and the unit's latest report."""

    def __init__(self, info: UnitInfo, port: str) -> None:
        self.info = info
        self.port = port
        self.converter = Converter(info.eeprom)
        self.assembler = ImageAssembler()
        self.last: RawFrame | None = None
        self.ticks: deque[tuple[int, int]] = deque(maxlen=17)  # (unit clock ms, frame counter)
        self.frames = 0

    def add(self, frame: RawFrame) -> None:
        self.assembler.add(self.converter.subpage_image(frame.words))
        self.last = frame
        self.ticks.append((frame.ticks_ms, frame.counter))
        self.frames += 1

    @property
    def frame_rate(self) -> float:
        """Subpages per second the unit processes, on its own clock (frames it did not send, with
        --every, are counted by its frame counter)."""
        if len(self.ticks) < 2:
            return 0.0
        span = (self.ticks[-1][0] - self.ticks[0][0]) & 0x3FFFFFFF
        frames = self.ticks[-1][1] - self.ticks[0][1]
        return frames * 1000.0 / span if span and frames > 0 else 0.0

    def status_line(self) -> str:
        f = self.last
        if f is None:
            return f"{self.port}: waiting for frames"
        state = f.state + (f" ({f.reason})" if f.reason else "")
        parts = [f"{self.port}", f"sensor {self.info.serial}", f"state {state}"]
        if f.service_mode:
            parts.append("SERVICE MODE (not screening)")
        parts.append(f"Ta {f.ta:.1f} C" if not math.isnan(f.ta) else "Ta -")
        if not math.isnan(f.reading_c):
            parts.append(f"head {f.reading_c:.2f} C")
        parts.append(f"{self.frame_rate:.1f} subpages/s (set {self.info.refresh_hz:g} Hz)")
        parts.append(f"frame {f.counter}")
        return "  |  ".join(parts)

    def renderable(self):
        from rich.console import Group
        from rich.text import Text

        img = self.assembler.image
        f = self.last
        lo, hi = colour_scale(img)
        legend = Text(f"scale {lo:.1f} .. {hi:.1f} C   ")
        legend.append("\u2588\u2588", style="#%02x%02x%02x" % HEAD_COLOUR)
        legend.append(" head box   ")
        legend.append("\u2588\u2588", style="#%02x%02x%02x" % HOT_COLOUR)
        legend.append(" hottest region   Ctrl-C to stop")
        return Group(Text(self.status_line()), terminal_image(img, f.head if f else None, f.hot if f else None,
                                                               (lo, hi)), legend)


def _unit_files(client: UnitClient) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for name in ("config", "calibration"):
        data = client.read_file(f"/{name}.json")
        files[name] = data.decode("utf-8", "replace") if data is not None else None
    return files


@click.command("monitor")
@click.option("--port", "-p", envvar="THERMOGATE_PORT", required=True, help="The unit's serial port (or rfc2217:// URL).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Write a picture of the last full image.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), help="Record raw frames to FILE.npz.")
@click.option("--frames", "count", type=click.IntRange(min=1), help="Stop after N subpages (default: 4 with --png, "
              "32 with --save, else run until Ctrl-C).")
@click.option("--every", default=1, show_default=True, type=click.IntRange(1, 100),
              help="Stream one pair of subpages out of every N (a 115200 baud UART keeps up with 4 Hz).")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(min=1200))
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Seconds without a frame before giving up.")
def monitor(port: str, png_path: str | None, save_path: str | None, count: int | None, every: int, baud: int,
            timeout: float) -> None:
    """Show what a unit sees: live thermal image, head box, hottest region, state, Ta, frame rate."""
    from rich.console import Console
    from rich.live import Live

    if count is None:
        count = 32 if save_path else (4 if png_path else 0)
    console = Console(stderr=False)
    recorded: list[RawFrame] = []
    with UnitClient(port, baud) as client:
        files = _unit_files(client) if save_path else {}
        view: MonitorView | None = None
        interactive = console.is_terminal
        live = Live(console=console, refresh_per_second=8, transient=False) if interactive else None
        try:
            if live:
                live.start()
            for item in client.iter_frames(count, timeout_s=timeout, every=every):
                if isinstance(item, UnitInfo):
                    view = MonitorView(item, port)
                elif isinstance(item, RawFrame) and view is not None:
                    view.add(item)
                    if save_path:
                        recorded.append(item)
                    if live:
                        live.update(view.renderable())
                elif isinstance(item, StreamEnd) and item.status not in (0, 2):  # 2: interrupted
                    raise HostError(f"{port}: the unit stopped streaming ({item.message}); check the sensor "
                                    "and its wiring, then run the command again")
        except KeyboardInterrupt:
            pass
        finally:
            if live:
                live.stop()
    if view is None or view.last is None:
        raise HostError(f"{port}: no frames received; check the sensor and that the firmware is deployed")
    if not interactive:
        console.print(view.renderable())
    if png_path:
        if not view.assembler.complete:
            raise HostError("--png needs both subpages: use --frames 2 or more")
        f = view.last
        write_png(png_path, view.assembler.image, f.head, f.hot, f.state, f.ta, f.reading_c)
        console.print(f"wrote {png_path}")
    if save_path:
        meta = {"port": port, "recorded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "config": files.get("config"), "calibration": files.get("calibration")}
        save_recording(save_path, view.info, recorded, meta)
        console.print(f"saved {len(recorded)} frames to {save_path}")
