"""Fitting a unit's calibration from images of a blackbody (pure numpy, no I/O).

Terms:
- a *subpage image* is a (24, 32) array of object temperatures (deg C) as the firmware driver
  computes them with no calibration applied; the pixels of the other subpage are NaN;
- a *reference* is a blackbody at a known set temperature, seen in several subpage images;
- the calibration maps a raw reading t of pixel i to `gain * (t - pixel_offset_c[i]) + offset_c`,
  the model firmware/store.py validates and the firmware applies.

Refusals raise CalibrationRefused (a HostError) with a one-line reason and what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from host.errors import HostError

ROWS, COLS = 24, 32

# Limits, in deg C unless named otherwise.
DRIFT_LIMIT_C = 0.15  # first vs last third of the frames; a settled blackbody moves < 0.05 (datasheet NETD averaged)
DRIFT_NOISE_SIGMAS = 4.0  # the drift limit grows with the measured frame-to-frame noise
MAX_RESIDUAL_C = 0.2  # fit error at any reference (only > 2 references over-determine it)
MAX_PIXEL_SPREAD_C = 0.8  # RMS of region pixels around their mean: more means a partly covered region
MIN_CONTRAST_C = 2.0  # blackbody above the scene's median for the automatic finder
MIN_REGION_SIZE = 2  # 2x2 fully covered pixels at least
GAIN_RANGE = (0.85, 1.15)  # the sensor's factory calibration is far better than this
OFFSET_LIMIT_C = 6.0


class CalibrationRefused(HostError):
    exit_code = 3


@dataclass(frozen=True)
class Region:
    """A square of fully covered pixels: top-left column and row, side in pixels."""

    col: int
    row: int
    size: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.col < 0 or self.row < 0 or self.col + self.size > COLS or self.row + self.size > ROWS:
            raise CalibrationRefused(
                f"region {self.col},{self.row},{self.size} does not fit the 32x24 image: "
                "give COL,ROW,SIZE with COL+SIZE <= 32 and ROW+SIZE <= 24")

    def mask(self) -> np.ndarray:
        m = np.zeros((ROWS, COLS), dtype=bool)
        m[self.row:self.row + self.size, self.col:self.col + self.size] = True
        return m

    def as_list(self) -> list[int]:
        return [self.col, self.row, self.size]

    def __str__(self) -> str:
        return f"{self.col},{self.row},{self.size}"


def parse_region(text: str | None) -> Region | None:
    """`auto` (or None) -> None; `COL,ROW,SIZE` -> Region."""
    if text is None or text.strip().lower() == "auto":
        return None
    parts = text.split(",")
    try:
        col, row, size = (int(p) for p in parts)
    except ValueError:
        raise CalibrationRefused(f"--region {text!r} is not auto or COL,ROW,SIZE (three integers, e.g. 14,10,4)") from None
    if size < MIN_REGION_SIZE:
        raise CalibrationRefused(f"--region size {size} is too small: the blackbody must cover at least "
                                 f"{MIN_REGION_SIZE}x{MIN_REGION_SIZE} pixels; move it closer")
    return Region(col, row, size)


def mean_image(images: np.ndarray) -> np.ndarray:
    """Per-pixel mean over subpage images (NaN where a pixel was never measured)."""
    images = _stack(images)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(images), axis=0)
        sums = np.nansum(images, axis=0)
        out = sums / np.where(counts == 0, 1, counts)
    out[counts == 0] = np.nan
    return out


def _stack(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == ROWS * COLS:
        arr = arr.reshape(-1, ROWS, COLS)
    if arr.ndim != 3 or arr.shape[1:] != (ROWS, COLS):
        raise ValueError(f"expected subpage images of shape (N, 24, 32), got {arr.shape}")
    return arr


def _largest_square(mask: np.ndarray) -> tuple[int, int, int]:
    """(col, row, size) of the largest all-true square in mask (classic dynamic programme)."""
    best = (0, 0, 0)
    dp = np.zeros((ROWS + 1, COLS + 1), dtype=int)
    for r in range(ROWS):
        for c in range(COLS):
            if mask[r, c]:
                dp[r + 1, c + 1] = 1 + min(dp[r, c + 1], dp[r + 1, c], dp[r, c])
                if dp[r + 1, c + 1] > best[2]:
                    s = int(dp[r + 1, c + 1])
                    best = (c - s + 1, r - s + 1, s)
    return best


def find_blackbody(image: np.ndarray, expected_c: float | None = None,
                   min_contrast_c: float = MIN_CONTRAST_C, max_error_c: float = 4.0) -> Region:
    """The blackbody as the uniform warm patch: the largest square of pixels close to the warmest
    plateau and connected to it, less a one-pixel rim when it is large enough (optical blur
    softens the edge). expected_c, the set temperature, tells a fully covered pixel from a
    uniform group of half-covered ones: the unit's own error is far below max_error_c.
    Raises CalibrationRefused when there is no warm patch or it covers fewer than 2x2 pixels."""
    img = np.asarray(image, dtype=np.float64).reshape(ROWS, COLS)
    if np.isnan(img).any():
        raise ValueError("find_blackbody needs a full image (both subpages)")
    background = float(np.median(img))
    # pixel-to-pixel scatter of the scene (pixel offsets + noise), robust to the patch itself
    scatter = 1.4826 * float(np.median(np.abs(img - background)))
    tolerance = max(0.6, 3.5 * scatter)
    # seed: the 2x2 block with the warmest minimum, so one hot or bad pixel cannot win
    block = np.minimum(np.minimum(img[:-1, :-1], img[1:, :-1]), np.minimum(img[:-1, 1:], img[1:, 1:]))
    r0, c0 = np.unravel_index(int(np.argmax(block)), block.shape)
    plateau = float(np.median(img[r0:r0 + 2, c0:c0 + 2]))
    warm = img - background >= min_contrast_c
    if plateau - background < min_contrast_c:
        hot_pairs = (warm[:, :-1] & warm[:, 1:]).any() or (warm[:-1, :] & warm[1:, :]).any()
        # a small warm spot (the 2x2 mean well above the scatter) smeared by the optics
        block_mean = (img[:-1, :-1] + img[1:, :-1] + img[:-1, 1:] + img[1:, 1:]) / 4.0
        spot = float(np.max(block_mean)) - background > max(0.5, 3.0 * scatter)
        if hot_pairs or (expected_c is not None and spot and expected_c - background >= min_contrast_c):
            raise CalibrationRefused(_TOO_SMALL)
        raise CalibrationRefused(
            f"no blackbody found: the warmest patch is only {plateau - background:.1f} C above the scene "
            f"(need {min_contrast_c:.1f}); check it is in view and on, or give --region COL,ROW,SIZE")
    connected = np.zeros((ROWS, COLS), dtype=bool)
    for _ in range(2):  # second pass with the plateau re-estimated over the whole patch
        near = np.abs(img - plateau) <= tolerance
        connected[:] = False
        stack = [(int(r0), int(c0))]
        while stack:  # 4-neighbour flood fill from the seed
            r, c = stack.pop()
            if r < 0 or c < 0 or r >= ROWS or c >= COLS or connected[r, c] or not near[r, c]:
                continue
            connected[r, c] = True
            stack.extend(((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)))
        plateau = float(np.median(img[connected]))
    if expected_c is not None and abs(plateau - expected_c) > max_error_c:
        raise CalibrationRefused(
            f"the blackbody reads {plateau:.1f} C against its set {expected_c:g} C: it does not fill whole "
            "pixels (too small in the image) or is not at that temperature; move it closer or check it")
    col, row, size = _largest_square(connected)
    if size < MIN_REGION_SIZE:
        raise CalibrationRefused(_TOO_SMALL)
    if size >= 4:
        col, row, size = col + 1, row + 1, size - 2
    return Region(col, row, size)


_TOO_SMALL = (f"the blackbody is too small in the image (under {MIN_REGION_SIZE}x{MIN_REGION_SIZE} fully covered "
              "pixels): move it closer to the unit or use a larger source")


@dataclass
class Reference:
    """One blackbody reference, measured."""

    set_c: float
    region: Region
    raw_mean_c: float  # region mean of the raw readings (pixel offsets removed, no gain/offset)
    pixel_spread_c: float  # RMS of the region's pixel means around raw_mean_c
    drift_c: float  # last third minus first third
    drift_limit_c: float
    noise_c: float  # frame-to-frame noise of the region mean
    frames: int
    pixel_means: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict:
        return {"set_c": round(self.set_c, 3), "region": self.region.as_list(),
                "raw_mean_c": round(self.raw_mean_c, 4), "drift_c": round(self.drift_c, 4),
                "noise_c": round(self.noise_c, 4), "pixel_spread_c": round(self.pixel_spread_c, 4),
                "frames": self.frames}


def measure_reference(images: np.ndarray, set_c: float, region: Region | None = None,
                      pixel_offset: np.ndarray | None = None, drift_limit_c: float = DRIFT_LIMIT_C) -> Reference:
    """Average subpage images of a blackbody at set_c. region None = find it. Refuses a
    blackbody that is still moving, too small, or not uniform over the region."""
    stack = _stack(images)
    if stack.shape[0] < 6:
        raise CalibrationRefused(f"only {stack.shape[0]} frames for the {set_c:g} C reference: use --frames 6 or more")
    if pixel_offset is not None:
        stack = stack - np.asarray(pixel_offset, dtype=np.float64).reshape(ROWS, COLS)
    avg = mean_image(stack)
    if np.isnan(avg).any():
        raise CalibrationRefused("the frames do not cover both subpages: record at least two consecutive frames")
    if region is None:
        region = find_blackbody(avg, expected_c=set_c)
    mask = region.mask()
    pixels = avg[mask]
    raw_mean = float(np.mean(pixels))
    spread = float(np.sqrt(np.mean((pixels - raw_mean) ** 2)))
    # per-frame region mean; pairs of consecutive subpages so each value covers the whole region
    per_frame = np.array([np.nanmean(f[mask]) if np.any(~np.isnan(f[mask])) else np.nan for f in stack])
    per_frame = per_frame[~np.isnan(per_frame)]
    pairs = (per_frame[:-1] + per_frame[1:]) / 2.0 if per_frame.size > 1 else per_frame
    third = max(1, pairs.size // 3)
    first, last = pairs[:third], pairs[-third:]
    drift = float(np.mean(last) - np.mean(first))
    # noise from differences two frames apart (same subpage, so the two halves' pixel offsets cancel;
    # insensitive to a slow trend)
    diffs = per_frame[2:] - per_frame[:-2]
    noise = float(np.std(diffs) / math.sqrt(2)) if diffs.size > 1 else 0.0
    # standard error of (mean of last third - mean of first third); pairs overlap, so count frames
    frames_per_third = max(1, per_frame.size // 3)
    limit = max(drift_limit_c, DRIFT_NOISE_SIGMAS * noise * math.sqrt(2.0 / frames_per_third))
    ref = Reference(set_c=float(set_c), region=region, raw_mean_c=raw_mean, pixel_spread_c=spread,
                    drift_c=drift, drift_limit_c=limit, noise_c=noise, frames=int(stack.shape[0]),
                    pixel_means=pixels)
    if abs(drift) > limit:
        raise CalibrationRefused(
            f"the {set_c:g} C reference is still moving ({drift:+.2f} C between the first and last third of "
            f"the frames, limit {limit:.2f}): wait until the blackbody is stable and the unit warmed up, then retry")
    if spread > MAX_PIXEL_SPREAD_C:
        raise CalibrationRefused(
            f"the {set_c:g} C reference is not uniform over region {region} (pixel RMS {spread:.2f} C, limit "
            f"{MAX_PIXEL_SPREAD_C}): the region includes its edge; give a smaller --region or move the blackbody closer")
    return ref


@dataclass
class Fit:
    gain: float
    offset_c: float
    residuals_c: list[float]  # corrected region mean - set temperature, per reference

    @property
    def max_residual_c(self) -> float:
        return max((abs(r) for r in self.residuals_c), default=0.0)

    def correct(self, raw_c: float | np.ndarray) -> float | np.ndarray:
        return self.gain * raw_c + self.offset_c


def fit_references(refs: list[Reference], max_residual_c: float = MAX_RESIDUAL_C) -> Fit:
    """One reference -> offset (gain 1); two -> gain and offset; more -> least squares."""
    if not refs:
        raise CalibrationRefused("no reference measured: give --blackbody T at least once")
    raw = np.array([r.raw_mean_c for r in refs])
    true = np.array([r.set_c for r in refs])
    if len(refs) == 1:
        gain, offset = 1.0, float(true[0] - raw[0])
    else:
        if np.ptp(true) < 2.0:
            raise CalibrationRefused(
                f"the references {', '.join(f'{t:g}' for t in true)} C are too close for a gain: "
                "set them at least 2 C apart (e.g. 33 and 40), or give one")
        gain, offset = (float(v) for v in np.polyfit(raw, true, 1))
    residuals = [float(gain * m + offset - t) for m, t in zip(raw, true)]
    fit = Fit(gain=gain, offset_c=offset, residuals_c=residuals)
    if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
        raise CalibrationRefused(
            f"fitted gain {gain:.3f} is outside {GAIN_RANGE[0]}-{GAIN_RANGE[1]}: a reference is wrong "
            "(set temperature, emissivity or region); check the blackbody and retry")
    if abs(offset + (gain - 1.0) * 37.0) > OFFSET_LIMIT_C:
        raise CalibrationRefused(
            f"fitted correction at 37 C is {offset + (gain - 1.0) * 37.0:+.2f} C, beyond +-{OFFSET_LIMIT_C}: "
            "check the blackbody's set temperature and that it fills the region")
    if fit.max_residual_c > max_residual_c:
        raise CalibrationRefused(
            f"fit residual {fit.max_residual_c:.2f} C exceeds {max_residual_c} C: the references disagree; "
            "let each one settle and retry")
    return fit


def pixel_offset_map(images: np.ndarray, max_spread_c: float = 1.5) -> np.ndarray:
    """Per-pixel offsets (768, deg C, subtracted from raw readings) from a uniform scene.

    A plane fitted over the image is taken as the scene (a wall or plate that is a little
    warmer at one side); each pixel's deviation from it is its offset. Refuses a scene that is
    not uniform (a person or lamp in view)."""
    avg = mean_image(images)
    if np.isnan(avg).any():
        raise CalibrationRefused("the uniform-scene frames do not cover both subpages: record more frames")
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    design = np.column_stack([np.ones(ROWS * COLS), cols.ravel(), rows.ravel()])
    coef, *_ = np.linalg.lstsq(design, avg.ravel(), rcond=None)
    plane = (design @ coef).reshape(ROWS, COLS)
    offsets = avg - plane
    spread = float(np.max(np.abs(offsets)))
    if spread > max_spread_c * 3 or float(np.std(offsets)) > max_spread_c:
        raise CalibrationRefused(
            f"the scene for the pixel map is not uniform (pixels differ by up to {spread:.1f} C): point the "
            "unit at a plain wall or plate with nothing warm in view")
    return offsets.ravel()


def apply_calibration(raw: np.ndarray, gain: float, offset_c: float, pixel_offset: np.ndarray | None = None) -> np.ndarray:
    """What the firmware does to a raw reading (see module docstring)."""
    out = np.asarray(raw, dtype=np.float64)
    if pixel_offset is not None:
        out = out - np.asarray(pixel_offset, dtype=np.float64).reshape(out.shape[-2:] if out.ndim >= 2 else (-1,))
    return gain * out + offset_c


@dataclass
class CheckResult:
    set_c: float
    measured_c: float
    error_c: float
    region: Region


def check_reference(ref: Reference, gain: float, offset_c: float) -> CheckResult:
    """Error of the unit's current calibration against a measured reference. ref must have been
    measured with the unit's pixel map applied."""
    measured = gain * ref.raw_mean_c + offset_c
    return CheckResult(set_c=ref.set_c, measured_c=measured, error_c=measured - ref.set_c, region=ref.region)
