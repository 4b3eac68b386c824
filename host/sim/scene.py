"""Physical scene renderer: people walking up to the gate, distractors and a blackbody, seen
through the MLX90640's lens and integrated over each of its 32x24 pixels.

Mounting geometry (the README's hardware section repeats it):
- the sensor's optical axis is horizontal, at 1.60 m above the floor;
- a subject's eye line is 5 cm below the axis (1.55 m), so the face sits near the image centre;
- the background is a wall at ambient temperature 3.5 m away.
World coordinates: x to the right, y up (0 = optical axis), z = distance from the lens (m).

Rendering, per frame:
1. every pixel is split into SUPERSAMPLE x SUPERSAMPLE rays on a rectilinear lens (equal pixel
   pitch in tan(angle), 55 x 35 deg or 110 x 75 deg across 32 x 24 pixels);
2. each ray takes the temperature of the nearest surface it hits (painter's order, far to near);
3. temperatures become radiance (proportional to T^4 in kelvin: the sensor's own model, MLX90640
   datasheet 11.2.2.9), are blurred by a Gaussian point-spread function and averaged over each
   pixel's footprint (radiance, not temperature, is what a thermopile integrates);
4. the mean radiance of each pixel is turned back into an emissivity-1 object temperature.

Face model (front view, metres from the midpoint between the eyes): inner canthi at skin_c,
forehead skin_c - 0.8, cheeks and the rest of the face skin_c - 1.5, nose skin_c - 2.0, eyes
skin_c - 1.0, neck skin_c - 1.2, hair 5-7 deg C below skin_c (per subject), clothing 2-4 deg C
above ambient (per subject). Glasses are opaque in the long-wave infrared: their lenses show
about ambient + 3 deg C and hide the canthi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COLS = 32
ROWS = 24
SUPERSAMPLE = 8
KELVIN = 273.15

# Lens field of view (horizontal, vertical) in degrees, MLX90640 datasheet section 2 (BAA/BAB).
FOV_DEG = {55: (55.0, 35.0), 110: (110.0, 75.0)}

SENSOR_HEIGHT_M = 1.60
EYE_LINE_Y_M = -0.05  # subject's eyes relative to the optical axis
WALL_DISTANCE_M = 3.5
BLACKBODY_DISTANCE_M = 3.0  # on a stand in front of the wall: subjects and objects in front of it hide it

# Optical blur: Gaussian PSF, sigma in pixels (a small germanium/silicon lens at f/1.0 spreads a
# point over about one pixel; 0.35 px sigma puts ~60 % of a point's energy in its own pixel).
PSF_SIGMA_PX = 0.35

# Motion: a subject comes into view APPROACH_M behind the stopping point and walks in at
# WALK_SPEED_MPS; after dwell_s they walk off sideways for LEAVE_S.
WALK_SPEED_MPS = 1.25
APPROACH_M = 2.0
LEAVE_S = 1.0

# Distractor kinds: physical size (width, height in m), distance from the lens (m) and default
# surface temperature (deg C).
DISTRACTOR_KINDS: dict[str, dict[str, float]] = {
    "cup": {"width_m": 0.08, "height_m": 0.10, "distance_m": 0.6, "temperature_c": 60.0},
    "lamp": {"width_m": 0.15, "height_m": 0.15, "distance_m": 1.5, "temperature_c": 45.0},
    "radiator": {"width_m": 0.80, "height_m": 0.50, "distance_m": 2.5, "temperature_c": 50.0},
}


def approach_s() -> float:
    return APPROACH_M / WALK_SPEED_MPS


@dataclass
class Person:
    """One subject. Times in seconds of scenario time."""

    skin_c: float
    distance_m: float
    x_offset_m: float = 0.0
    arrive_s: float = 0.0
    dwell_s: float = 4.0
    glasses: bool = False
    hair_drop_c: float = 6.0
    clothing_above_ambient_c: float = 3.0

    def position(self, t: float) -> tuple[float, float] | None:
        """(x, z) of the face plane at time t, or None when out of the scene."""
        walk = approach_s()
        if t < self.arrive_s - walk:
            return None
        if t < self.arrive_s:
            z = self.distance_m + (self.arrive_s - t) * WALK_SPEED_MPS
            return self.x_offset_m, z
        leave_at = self.arrive_s + self.dwell_s
        if t <= leave_at:
            return self.x_offset_m, self.distance_m
        if t <= leave_at + LEAVE_S:
            direction = -1.0 if self.x_offset_m < 0 else 1.0
            return self.x_offset_m + direction * (t - leave_at) * WALK_SPEED_MPS, self.distance_m
        return None

    def present_window(self) -> tuple[float, float]:
        return self.arrive_s - approach_s(), self.arrive_s + self.dwell_s + LEAVE_S


@dataclass
class Distractor:
    kind: str
    temperature_c: float
    col: float  # image position of the object's centre, in pixels (0..32, 0..24)
    row: float
    from_s: float = 0.0
    to_s: float = math.inf

    def active(self, t: float) -> bool:
        return self.from_s <= t < self.to_s


@dataclass
class Blackbody:
    temperature_c: float
    col: int  # top-left pixel of the square patch
    row: int
    size_px: int


@dataclass
class SceneInfo:
    """What the renderer knows about one frame (ground truth for plots and checks)."""

    visible_subjects: list[int] = field(default_factory=list)
    head_boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


class Lens:
    """Ray directions for every supersample of every pixel, with a margin for the blur kernel."""

    def __init__(self, fov_deg: int = 55, supersample: int = SUPERSAMPLE, psf_sigma_px: float = PSF_SIGMA_PX):
        if fov_deg not in FOV_DEG:
            raise ValueError("fov_deg must be 55 or 110, not %r" % (fov_deg,))
        self.fov_deg = fov_deg
        self.supersample = supersample
        self.psf_sigma_px = psf_sigma_px
        h_fov, v_fov = FOV_DEG[fov_deg]
        self.tan_half_x = math.tan(math.radians(h_fov / 2))
        self.tan_half_y = math.tan(math.radians(v_fov / 2))
        self.margin = int(math.ceil(3 * psf_sigma_px * supersample)) if psf_sigma_px > 0 else 0
        n_x = COLS * supersample + 2 * self.margin
        n_y = ROWS * supersample + 2 * self.margin
        # sample centres in pixel units (col 0..32 left to right, row 0..24 top to bottom)
        sx = (np.arange(n_x) - self.margin + 0.5) / supersample
        sy = (np.arange(n_y) - self.margin + 0.5) / supersample
        self.tan_x = (sx / COLS * 2 - 1) * self.tan_half_x  # (n_x,)
        self.tan_y = (1 - sy / ROWS * 2) * self.tan_half_y  # (n_y,) up is positive
        self.kernel = _gaussian_kernel(psf_sigma_px * supersample) if psf_sigma_px > 0 else None

    def pixel_size_m(self, distance_m: float) -> float:
        """Width of one pixel's footprint at the image centre, at distance_m."""
        return 2 * self.tan_half_x * distance_m / COLS

    def pixel_height_m(self, distance_m: float) -> float:
        return 2 * self.tan_half_y * distance_m / ROWS

    def to_pixel(self, x_m: float, y_m: float, z_m: float) -> tuple[float, float]:
        """Image position (col, row) of a world point."""
        col = (x_m / z_m / self.tan_half_x + 1) / 2 * COLS
        row = (1 - y_m / z_m / self.tan_half_y) / 2 * ROWS
        return col, row

    def plane(self, z_m: float) -> tuple[np.ndarray, np.ndarray]:
        """World x (n_x,) and y (n_y,) of every ray where it crosses the plane at distance z_m."""
        return self.tan_x * z_m, self.tan_y * z_m


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=float)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def to_radiance(temperature_c: np.ndarray) -> np.ndarray:
    return (np.asarray(temperature_c, dtype=float) + KELVIN) ** 4


def from_radiance(radiance: np.ndarray) -> np.ndarray:
    return radiance ** 0.25 - KELVIN


def integrate(lens: Lens, samples_c: np.ndarray) -> np.ndarray:
    """Blur a supersampled temperature map (with margin) and integrate it over each pixel.

    Blur and averaging happen on radiance; the result is the (ROWS, COLS) object temperature."""
    radiance = to_radiance(samples_c)
    if lens.kernel is not None:
        radiance = _convolve_separable(radiance, lens.kernel)
    m = lens.margin
    s = lens.supersample
    inner = radiance[m:m + ROWS * s, m:m + COLS * s]
    mean = inner.reshape(ROWS, s, COLS, s).mean(axis=(1, 3))
    return from_radiance(mean)


def _convolve_separable(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Same'-size separable convolution; the margin absorbs the edges (edge values repeated)."""
    radius = len(kernel) // 2
    padded = np.pad(image, radius, mode="edge")
    rows = np.zeros((padded.shape[0], image.shape[1]))
    for i, w in enumerate(kernel):
        rows += w * padded[:, i:i + image.shape[1]]
    out = np.zeros(image.shape)
    for i, w in enumerate(kernel):
        out += w * rows[i:i + image.shape[0], :]
    return out


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def draw_person(canvas: np.ndarray, lens: Lens, person: Person, x_m: float, z_m: float, ambient_c: float) -> None:
    """Paint one person standing with the face plane at distance z_m, centred at x_m."""
    wx, wy = lens.plane(z_m)
    # face coordinates: origin at the midpoint between the eyes
    fx = (wx - x_m)[np.newaxis, :]
    fy = (wy - EYE_LINE_Y_M)[:, np.newaxis]
    if fx.max() < -0.3 or fx.min() > 0.3:
        return
    skin = person.skin_c
    FX, FY = np.broadcast_arrays(fx, fy)

    def paint(mask: np.ndarray, value: float) -> None:
        canvas[mask] = value

    # clothing: shoulders and torso below the neck, tapering from 0.42 m to the neck width
    shoulder_half = np.where(FY < -0.25, 0.21, 0.21 - (FY + 0.25) / 0.08 * 0.13)
    paint((FY < -0.17) & (np.abs(FX) <= shoulder_half), ambient_c + person.clothing_above_ambient_c)
    paint((FY < -0.07) & (FY >= -0.19) & (np.abs(FX) <= 0.05), skin - 1.2)  # neck
    head = _ellipse(FX, FY, 0.0, 0.02, 0.078, 0.115)
    paint(head, skin - 1.5)  # cheeks, chin and the rest of the face
    hairline = 0.062 + 0.25 * FX ** 2
    paint(head & (FY > 0.025) & (FY <= hairline), skin - 0.8)  # forehead
    paint(head & (FY > hairline), skin - person.hair_drop_c)  # hair
    # hair also covers the sides of the head above the ears
    paint(head & (np.abs(FX) > 0.066) & (FY > -0.01), skin - person.hair_drop_c)
    for side in (-1.0, 1.0):
        paint(_ellipse(FX, FY, side * 0.032, 0.0, 0.014, 0.007), skin - 1.0)  # eyes
        paint(_ellipse(FX, FY, side * 0.016, -0.002, 0.0045, 0.0045), skin)  # inner canthi
    paint((FY < -0.005) & (FY > -0.045) & (np.abs(FX) < 0.004 + 0.3 * (-0.005 - FY)), skin - 2.0)  # nose
    if person.glasses:
        glass_c = ambient_c + 3.0
        for side in (-1.0, 1.0):
            paint((np.abs(FX - side * 0.032) <= 0.026) & (np.abs(FY) <= 0.018), glass_c)
        paint((np.abs(FX) <= 0.008) & (np.abs(FY - 0.008) <= 0.003), glass_c)  # bridge


def draw_box(canvas: np.ndarray, lens: Lens, col: float, row: float, width_px: float, height_px: float,
             value: float) -> None:
    """Paint an image-aligned rectangle given in pixel coordinates (centre col,row)."""
    s = lens.supersample
    m = lens.margin
    c0 = int(round((col - width_px / 2) * s)) + m
    c1 = int(round((col + width_px / 2) * s)) + m
    r0 = int(round((row - height_px / 2) * s)) + m
    r1 = int(round((row + height_px / 2) * s)) + m
    canvas[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = value


class Scene:
    """Everything in front of the sensor, as a function of time."""

    def __init__(self, lens: Lens, ambient_c: float = 24.0, people: list[Person] | None = None,
                 distractors: list[Distractor] | None = None, blackbody: Blackbody | None = None):
        self.lens = lens
        self.ambient_c = ambient_c
        self.people = list(people or [])
        self.distractors = list(distractors or [])
        self.blackbody = blackbody
        self._cache_key: tuple | None = None
        self._cache: tuple[np.ndarray, SceneInfo] | None = None

    def _layers(self, t: float) -> list[tuple[float, str, object]]:
        layers: list[tuple[float, str, object]] = []
        for index, person in enumerate(self.people):
            pos = person.position(t)
            if pos is not None:
                layers.append((pos[1], "person", (index, round(pos[0], 4), round(pos[1], 4))))
        for index, item in enumerate(self.distractors):
            if item.active(t):
                layers.append((DISTRACTOR_KINDS[item.kind]["distance_m"], "distractor", index))
        if self.blackbody is not None:
            layers.append((BLACKBODY_DISTANCE_M, "blackbody", 0))
        layers.sort(key=lambda layer: -layer[0])  # far first, near ones paint over
        return layers

    def render(self, t: float) -> tuple[np.ndarray, SceneInfo]:
        """Object temperatures (ROWS, COLS) in deg C at time t, and ground truth about the frame."""
        layers = self._layers(t)
        key = tuple((kind, payload) for _, kind, payload in layers)
        if key == self._cache_key and self._cache is not None:
            return self._cache[0].copy(), self._cache[1]
        lens = self.lens
        canvas = np.full((len(lens.tan_y), len(lens.tan_x)), self.ambient_c, dtype=float)
        info = SceneInfo()
        for z, kind, payload in layers:
            if kind == "person":
                index, x_m, z_m = payload  # type: ignore[misc]
                draw_person(canvas, lens, self.people[index], x_m, z_m, self.ambient_c)
                c0, r0 = lens.to_pixel(x_m - 0.078, EYE_LINE_Y_M + 0.135, z_m)
                c1, r1 = lens.to_pixel(x_m + 0.078, EYE_LINE_Y_M - 0.095, z_m)
                if c1 > 0 and c0 < COLS and r1 > 0 and r0 < ROWS:
                    info.visible_subjects.append(index)
                    info.head_boxes[index] = (c0, r0, c1, r1)
            elif kind == "distractor":
                item = self.distractors[payload]  # type: ignore[index]
                spec = DISTRACTOR_KINDS[item.kind]
                width_px = spec["width_m"] / lens.pixel_size_m(spec["distance_m"])
                height_px = spec["height_m"] / lens.pixel_height_m(spec["distance_m"])
                draw_box(canvas, lens, item.col, item.row, width_px, height_px, item.temperature_c)
            else:
                bb = self.blackbody
                assert bb is not None
                draw_box(canvas, lens, bb.col + bb.size_px / 2, bb.row + bb.size_px / 2, bb.size_px, bb.size_px,
                         bb.temperature_c)
        image = integrate(lens, canvas)
        self._cache_key, self._cache = key, (image, info)
        return image.copy(), info


def hottest_region_c(image: np.ndarray, box: tuple[float, float, float, float] | None = None, n: int = 4) -> float:
    """Mean of the n hottest pixels (inside box = (c0, r0, c1, r1) when given)."""
    region = image
    if box is not None:
        c0, r0, c1, r1 = box
        region = image[max(int(math.floor(r0)), 0):max(int(math.ceil(r1)), 0),
                       max(int(math.floor(c0)), 0):max(int(math.ceil(c1)), 0)]
    flat = np.sort(region.ravel())
    return float(flat[-n:].mean())


def dilution_table(distances_m: list[float], fov_deg: int = 55, skin_c: float = 35.5, ambient_c: float = 24.0,
                   top_n: tuple[int, ...] = (1, 4), glasses: bool = False) -> list[dict[str, float]]:
    """How far the hottest-region reading falls below skin_c with distance (noise-free, ideal sensor).

    Each row averages the subject's position over sub-pixel shifts, since where the canthi land
    on the pixel grid matters once they are smaller than a pixel."""
    lens = Lens(fov_deg)
    rows = []
    for distance in distances_m:
        pixel_m = lens.pixel_size_m(distance)
        shifts = [k / 4 * pixel_m for k in range(4)]
        drops: dict[int, list[float]] = {n: [] for n in top_n}
        for shift in shifts:
            person = Person(skin_c=skin_c, distance_m=distance, x_offset_m=shift, glasses=glasses)
            scene = Scene(lens, ambient_c, [person])
            image, info = scene.render(0.5)
            for n in top_n:
                drops[n].append(skin_c - hottest_region_c(image, info.head_boxes.get(0), n))
        row = {"distance_m": distance, "pixel_mm": pixel_m * 1000}
        for n in top_n:
            row["top%d_drop_c" % n] = float(np.mean(drops[n]))
        rows.append(row)
    return rows
