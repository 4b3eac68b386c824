# Temperature correction: from the driver's object temperatures to the image the scene analysis
# works on, and from the head's hottest region to a skin reading.
#
# 1. Unit calibration (calibration.json): T = gain * (raw - pixel_offset_c[i]) + offset_c.
# 2. Blackbody drift correction (config "blackbody"): a reference of known temperature in view;
#    the difference between its set and measured temperature is added to every pixel, smoothed
#    frame by frame; a reference that is missing, moved or unstable is a FAULT.
# 3. Spot-size dilution: beyond ~0.5 m the hottest spot of a face is smaller than a pixel, so the
#    hottest pixels read low by an amount that grows with distance (measured in the simulator,
#    config "spot_comp"); the reading gets that amount back.
# 4. Emissivity: the driver runs at emissivity 1 (what a blackbody calibration sees); the skin
#    reading alone is converted to emissivity config["emissivity"] with the ambient as reflected
#    temperature (MLX90640 datasheet 11.2.2.9, the same radiance balance).
#
# The image is kept in integer centi-degrees (array('h')) so that the scene analysis does integer
# arithmetic only: MicroPython boxes every float on the heap, so float work per pixel would mean
# several allocations per pixel per frame. Reading the driver's float output costs two float
# objects per pixel (the read and one multiply); everything after that is small integers.
import math
from array import array

import kernels

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


COLS = const(32)
ROWS = const(24)
PIXELS = const(768)
_CC_MAX = const(32000)  # 320 deg C: array('h') limit with margin
_CC_MIN = const(0)  # below 0 deg C reads 0: keeps every buffer non-negative for the kernels
KELVIN = 273.15


def subpage_pixels(pattern, subpage):
    """Indices of the pixels a subpage carries. MLX90640 datasheet 11.2 / Melexis driver:
    chess: pixel (row, col) is in subpage (row + col) & 1; interleaved: subpage row & 1."""
    out = array("H", [0] * (PIXELS // 2))
    n = 0
    for i in range(PIXELS):
        row = i // COLS
        col = i % COLS
        page = ((row + col) & 1) if pattern == "chess" else (row & 1)
        if page == subpage:
            out[n] = i
            n += 1
    return out


class Correction:
    """Unit calibration, applied while converting the driver's floats to centi-degrees."""

    def __init__(self, calibration=None, pattern="chess"):
        self.gain = 1.0
        self.offset_c = 0.0
        self.calibrated = False
        pixels = None
        if calibration is not None:
            self.gain = float(calibration["gain"])
            self.offset_c = float(calibration["offset_c"])
            pixels = calibration.get("pixel_offset_c")
            self.calibrated = True
        self._gain100 = self.gain * 100.0
        # per-pixel additive term in centi-degrees: 100 * (offset - gain * pixel_offset), rounded
        base = self.offset_c * 100.0
        self.offset_cc = array("h", [0] * PIXELS)
        for i in range(PIXELS):
            value = base - (self._gain100 * pixels[i] if pixels else 0.0)
            self.offset_cc[i] = int(math.floor(value + 0.5))
        self.pages = None
        if pattern in ("chess", "interleaved"):
            self.pages = (subpage_pixels(pattern, 0), subpage_pixels(pattern, 1))
        self.all_pixels = array("H", range(PIXELS))
        self.drift_cc = 0  # blackbody correction added to every pixel
        # viper path: gain x 100 in Q7 fixed point; the buffer list is reused every frame
        self._gain_q7 = int(self._gain100 * 128 + 0.5)
        self._bufs = [None, None, self.offset_cc, None]

    def apply(self, raw, image, subpage=None):
        """image[i] = corrected raw[i] in centi-degrees, for the subpage's pixels (all if None)."""
        if subpage is None or self.pages is None:
            indices = self.all_pixels
        else:
            indices = self.pages[subpage & 1]
        if kernels.VIPER:
            bufs = self._bufs
            bufs[0] = raw
            bufs[1] = image
            bufs[3] = indices
            kernels.correct_bits(bufs, len(indices), self._gain_q7, self.drift_cc)
            return
        g = self._gain100
        off = self.offset_cc
        drift = self.drift_cc
        for i in indices:  # the portable path (CPython, or a port without viper)
            x = raw[i] * g
            if x > 1e6 or x != x:  # beyond range, inf, NaN
                v = _CC_MAX
            elif x < -1e6:
                v = _CC_MIN
            else:
                v = int(math.floor(x + 0.5)) + off[i] + drift
            if v > _CC_MAX:
                v = _CC_MAX
            elif v < _CC_MIN:
                v = _CC_MIN
            image[i] = v


class Blackbody:
    """A reference source of known temperature at a fixed place in the image.

    Its inner pixels (the square less a 1-pixel border, which the lens blurs with the background)
    give the measured value; offset = set - measured is smoothed (EMA, 1/8 per frame) and added
    to every pixel. Frames where the reference reads more than max_offset_c from its set point
    (missing), jumps by more than jump_c from the smoothed offset (moved / something in front),
    or is not uniform (moved partly out of its square) count as bad; fault_frames bad frames in a
    row (or intermittent bad frames, counted leakily) raise a fault, ok_frames good ones clear it."""

    def __init__(self, temperature_c, col, row, size_px, max_offset_c=5.0, jump_c=1.0, spread_c=1.5,
                 fault_frames=6, ok_frames=6):
        self.set_cc = int(temperature_c * 100 + 0.5)
        border = 1 if size_px >= 3 else 0
        inner = []
        region = []
        for r in range(row, row + size_px):
            for c in range(col, col + size_px):
                region.append(r * COLS + c)
                if row + border <= r < row + size_px - border and col + border <= c < col + size_px - border:
                    inner.append(r * COLS + c)
        self.inner = array("H", inner)
        self.region = array("H", region)
        self.max_offset_cc = int(max_offset_c * 100)
        self.jump_cc = int(jump_c * 100)
        self.spread_cc = int(spread_c * 100)
        self.fault_frames = fault_frames
        self.ok_frames = ok_frames
        self.offset16 = None  # smoothed offset x16, centi-degrees
        self.bad = 0
        self.good = 0
        self.fault = "blackbody not seen yet"
        self.measured_cc = 0

    def exclusion(self, margin=1):
        """(col0, row0, col1, row1) to leave out of the person search, with a margin for blur."""
        first = self.region[0]
        last = self.region[len(self.region) - 1]
        return (max(0, first % COLS - margin), max(0, first // COLS - margin),
                min(COLS - 1, last % COLS + margin), min(ROWS - 1, last // COLS + margin))

    def update(self, image, applied_cc):
        """Measure the reference in image (which already carries applied_cc of correction).
        Returns the offset to apply to the next frames (centi-degrees)."""
        total = 0
        low = _CC_MAX
        high = _CC_MIN
        for i in self.inner:
            v = image[i] - applied_cc
            total += v
            if v < low:
                low = v
            if v > high:
                high = v
        measured = total // len(self.inner)
        self.measured_cc = measured
        instant = self.set_cc - measured
        reason = None
        if instant > self.max_offset_cc or instant < -self.max_offset_cc:
            reason = "blackbody missing or covered (reads %.1f C, set %.1f C)" % (measured / 100, self.set_cc / 100)
        elif high - low > self.spread_cc:
            reason = "blackbody moved: its square is not uniform"
        elif self.offset16 is not None and abs(instant - (self.offset16 >> 4)) > self.jump_cc:
            reason = "blackbody unstable or moved (jumped %.1f C)" % (abs(instant - (self.offset16 >> 4)) / 100)
        if reason is None:
            if self.bad > 0:
                self.bad -= 1
            self.good += 1
            if self.offset16 is None:
                self.offset16 = instant << 4
            else:
                self.offset16 += instant - (self.offset16 >> 4)  # EMA, alpha 1/16 (x16 fixed point)
            if self.fault is not None and self.good >= self.ok_frames:
                self.fault = None
                self.bad = 0
        else:
            # a leaky count: an intermittent reference (bad every other frame) still faults
            self.good = 0
            self.bad += 2
            if self.bad >= 2 * self.fault_frames or self.offset16 is None:
                self.fault = reason
                if self.bad >= 8 * self.fault_frames:
                    self.offset16 = None  # long gone: re-acquire from scratch when it returns
                    self.bad = 2 * self.fault_frames
        if self.offset16 is None:
            return applied_cc
        return self.offset16 >> 4


def spot_compensation(table, distance_m):
    """deg C to add for a head at distance_m: linear in the [distance, add] table, clamped at the ends."""
    if distance_m is None or not table:
        return 0.0
    if distance_m <= table[0][0]:
        return table[0][1]
    for k in range(1, len(table)):
        d1, a1 = table[k]
        if distance_m <= d1:
            d0, a0 = table[k - 1]
            return a0 + (a1 - a0) * (distance_m - d0) / (d1 - d0)
    return table[len(table) - 1][1]


def emissivity_correct(apparent_c, emissivity, reflected_c):
    """Object temperature of a grey body of `emissivity` that radiates like a blackbody at
    apparent_c with the surroundings at reflected_c (radiance balance, T^4 in kelvin)."""
    if emissivity >= 0.9999:
        return apparent_c
    ta = apparent_c + KELVIN
    tr = reflected_c + KELVIN
    t4 = (ta * ta * ta * ta - (1.0 - emissivity) * tr * tr * tr * tr) / emissivity
    return t4 ** 0.25 - KELVIN
