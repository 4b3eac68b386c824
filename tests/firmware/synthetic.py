# Synthetic 32x24 thermal images for the firmware tests (runs on MicroPython and CPython).
# A small painter: background, then objects far to near; each pixel averages a 4x4 grid of
# samples (the sensor integrates over its footprint), so edges are fractional like the real lens.
from array import array

COLS = 32
ROWS = 24
_SS = 4  # samples per pixel side


class Canvas:
    def __init__(self, ambient_c=24.0):
        self.samples = array("f", [ambient_c] * (COLS * _SS * ROWS * _SS))
        self.ambient_c = ambient_c

    def _paint(self, inside, value):
        w = COLS * _SS
        s = self.samples
        for y in range(ROWS * _SS):
            py = (y + 0.5) / _SS
            for x in range(w):
                if inside((x + 0.5) / _SS, py):
                    s[y * w + x] = value

    def box(self, col, row, width, height, value):
        """Axis-aligned rectangle, top-left corner (col, row) in pixels."""
        self._paint(lambda x, y: col <= x < col + width and row <= y < row + height, value)

    def person(self, col, eye_row, head_w_px, skin_c, hair_drop_c=6.0, clothing_c=None, glasses=False):
        """A person facing the sensor: head ellipse head_w_px wide centred at col, eyes on eye_row,
        body to the bottom of the image. Proportions follow the simulator's face model."""
        w = head_w_px
        # metric face model scaled by the head width (0.156 m); rows are 1.24x shorter (55 deg lens)
        px_per_m = w / 0.156
        ry = 1.24
        ambient = self.ambient_c
        clothing = ambient + 3.0 if clothing_c is None else clothing_c

        def to_face(x, y):
            return (x - col) / px_per_m, -(y - eye_row) / (px_per_m * ry)

        def head(fx, fy):
            return ((fx / 0.078) ** 2 + ((fy - 0.02) / 0.115) ** 2) <= 1.0

        def ellipse(fx, fy, cx, cy, ax, ay):
            return ((fx - cx) / ax) ** 2 + ((fy - cy) / ay) ** 2 <= 1.0

        def shade(x, y):
            fx, fy = to_face(x, y)
            value = None
            half = 0.21 if fy < -0.25 else 0.21 - (fy + 0.25) / 0.08 * 0.13
            if fy < -0.17 and abs(fx) <= half:
                value = clothing
            if -0.19 <= fy < -0.07 and abs(fx) <= 0.05:
                value = skin_c - 1.2
            if head(fx, fy):
                value = skin_c - 1.5
                hairline = 0.062 + 0.25 * fx * fx
                if 0.025 < fy <= hairline:
                    value = skin_c - 0.8
                if fy > hairline or (abs(fx) > 0.066 and fy > -0.01):
                    value = skin_c - hair_drop_c
                for side in (-1.0, 1.0):
                    if ellipse(fx, fy, side * 0.032, 0.0, 0.014, 0.007):
                        value = skin_c - 1.0
                    if ellipse(fx, fy, side * 0.016, -0.002, 0.0045, 0.0045):
                        value = skin_c
                if glasses and abs(fy) <= 0.018 and (abs(fx - 0.032) <= 0.026 or abs(fx + 0.032) <= 0.026):
                    value = ambient + 3.0
            return value

        sw = COLS * _SS
        s = self.samples
        for y in range(ROWS * _SS):
            py = (y + 0.5) / _SS
            for x in range(sw):
                v = shade((x + 0.5) / _SS, py)
                if v is not None:
                    s[y * sw + x] = v

    def image(self):
        """Pixel means (radiance-weighted would differ by < 0.05 C here), array('f', 768)."""
        out = array("f", [0.0] * (COLS * ROWS))
        sw = COLS * _SS
        s = self.samples
        norm = 1.0 / (_SS * _SS)
        for r in range(ROWS):
            for c in range(COLS):
                total = 0.0
                for y in range(r * _SS, r * _SS + _SS):
                    base = y * sw + c * _SS
                    for x in range(base, base + _SS):
                        total += s[x]
                out[r * COLS + c] = total * norm
        return out


def to_cc(image):
    """array('f') deg C -> array('h') centi-degrees (what correction.Correction.apply produces)."""
    out = array("h", [0] * len(image))
    for i in range(len(image)):
        out[i] = int(image[i] * 100 + 0.5)
    return out


def head_width_px(distance_m, fov_h_deg=55.0, head_width_m=0.156):
    import math

    return head_width_m / (distance_m * 2 * math.tan(math.radians(fov_h_deg / 2)) / COLS)
