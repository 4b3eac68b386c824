# Scene analysis on each 32x24 frame: background, people, the head, its hottest region, distance.
#
# Input: the corrected image in integer centi-degrees (array('h'), row-major, row 0 at the top).
# Steps, all in integer arithmetic on preallocated buffers (no per-frame allocation):
# 1. Background: a per-pixel estimate (x16 fixed point) that adapts quickly while nobody is in
#    view and only slowly around a person; "warm" = at least warm_delta above it.
# 2. Hot pixels (above the skin range: cups, lamps, radiators) and their 8 neighbours (the lens
#    blurs a hot edge into skin-range values) are marked as "halo" and never count as skin.
#    hot_c = 41.0: the hottest pixels of a face read ~0.7 C below its inner canthi (spot size), so
#    skin up to ~41 C stays below it; an object just above it (a lukewarm mug at 42 C) is then
#    clearly hot instead of straddling the line pixel by pixel. Skin hotter than that is taken for
#    an object: no verdict, never a PASS.
# 3. Warm pixels outside halos are grouped into 4-connected regions. A region is a person when it has skin-range
#    pixels outside any halo and a body shape (reaches the bottom of the image, or is a head and
#    neck: much taller than wide). Others are distractors and are ignored.
# 4. Two person regions, or two heads on one merged region (column top profile), give MULTIPLE.
# 5. The head is the top of the person region (its first row warm enough for hair or skin): its
#    width (sum of pixel coverage, so blurred edges count fractionally) gives the distance; the
#    hottest region is the mean of the hottest `hot_pixels` skin pixels inside the head box, never
#    one pixel. A head box whose hottest pixel is far below the person's own hottest skin is not
#    on the face: no reading (the screening asks for a retry).
#    A narrow warm column rising from the floor with no skin in range is a figure beyond the
#    working distance (TOO_FAR), not a distractor.
# 6. Pixels of the blackbody square (plus a margin) are excluded from everything.
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
MAX_REGIONS = const(16)
_UNSEEN = const(255)  # warm, not yet labelled
_OVERFLOW = const(254)  # warm, beyond MAX_REGIONS: ignored
_MIN_PIXELS = const(3)  # smaller warm specks are noise
_MIN_SKIN = const(2)  # skin-range pixels a person region needs
_MIN_ROWS = const(5)  # a region not touching the bottom edge needs this many rows for a body shape
# The hottest pixel of the head box may sit this far (centi-degrees)
# below the person region's own hottest skin pixel at most. A face's hottest pixels (canthi,
# forehead) are its region's hottest; more than 1.5 C below means the box is not (only) on the
# face -- hair, 5-7 C cooler, or a corner the background got wrong (sim finding: a fever subject
# read 33.1 from their hair and passed): no reading, so the unit asks for a retry instead.
_HEAD_MISMATCH_CC = const(150)
_FAR_MAX_COLS = const(3)  # a figure beyond the working distance: at most this wide (pixels) ...
_FAR_MIN_ROWS = const(6)  # ... and at least this tall, rising from the bottom edge

NONE = "none"
PERSON = "person"
TOO_FAR = "too_far"
TOO_CLOSE = "too_close"
MULTIPLE = "multiple"

# Head proportions (m): width across the temples, height chin to crown; crown to eye line.
HEAD_HEIGHT_OVER_WIDTH = 1.47
# Lens fields of view (horizontal, vertical) in degrees: MLX90640 datasheet section 2 (BAA, BAB).
FOV = {55: (55.0, 35.0), 110: (110.0, 75.0)}


class Scene:
    def __init__(self, fov_deg=55, head_width_m=0.156, min_distance_m=0.25, max_distance_m=1.0,
                 hot_pixels=3, warm_delta_c=1.5, skin_min_c=30.0, hot_c=41.0, exclude=None):
        h_fov, v_fov = FOV[fov_deg]
        # width of one pixel's footprint per metre of distance (rectilinear lens)
        self.pixel_w_per_m = 2.0 * math.tan(math.radians(h_fov / 2)) / COLS
        pixel_h_per_m = 2.0 * math.tan(math.radians(v_fov / 2)) / ROWS
        # a head w pixels wide is this many rows per pixel of width tall
        self.rows_per_col = HEAD_HEIGHT_OVER_WIDTH * self.pixel_w_per_m / pixel_h_per_m
        self.head_width_m = head_width_m
        self.min_distance_m = min_distance_m
        self.max_distance_m = max_distance_m
        self.hot_pixels = hot_pixels
        self.warm_cc = int(warm_delta_c * 100)
        self.skin_min_cc = int(skin_min_c * 100)
        self.hot_cc = int(hot_c * 100)
        self.bg16 = array("i", [0] * PIXELS)
        self.labels = bytearray(PIXELS)
        self.halo = bytearray(PIXELS)
        self.mask = bytearray(PIXELS)
        self.stack = array("H", [0] * PIXELS)
        self.hot_list = array("H", [0] * PIXELS)
        n = MAX_REGIONS + 1
        self.r_pixels = array("h", [0] * n)
        self.r_skin = array("h", [0] * n)
        self.r_max = array("h", [0] * n)
        self.r_top = array("b", [0] * n)
        self.r_bottom = array("b", [0] * n)
        self.r_left = array("b", [0] * n)
        self.r_right = array("b", [0] * n)
        self.is_person = bytearray(n)
        self.hot_values = array("h", [0] * 8)
        self.hot_index = array("h", [0] * 8)
        self.hist = array("H", [0] * 200)
        self.stats = array("i", [0] * 16)
        self.row_widths = array("i", [0] * 6)
        self.params = array("i", [0] * 16)
        self.params[kernels.P_WARM] = self.warm_cc
        self.params[kernels.P_HOT] = self.hot_cc
        self.params[kernels.P_SKIN] = self.skin_min_cc
        self.params[kernels.P_N] = hot_pixels
        # the buffers the kernels work on, in kernels.B_* order
        self.bufs = [None, self.bg16, self.mask, self.labels, self.hot_list, self.halo, self.stack,
                     self.stats, self.params, self.hot_values, self.hot_index]
        self.ready = False
        self.n_masked = 0
        if exclude is not None:
            self.exclude(exclude)
        self._clear_results()

    def exclude(self, box):
        """Leave (col0, row0, col1, row1), inclusive, out of the analysis (the blackbody)."""
        c0, r0, c1, r1 = box
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                self.mask[r * COLS + c] = 1
        self.n_masked = sum(self.mask)

    def _clear_results(self):
        self.status = NONE
        self.persons = 0
        self.distractors = 0  # warm regions that are not people (hot objects: hot_count)
        self.hot_count = 0  # pixels above the skin range (cups, lamps, radiators)
        self.regions = 0
        self.heads = 0
        self.present = False
        self.hot_c = None  # mean of the hottest pixels of the head, deg C
        self.n_hot = 0
        self.distance_m = None
        self.head_width_px = 0.0
        self.head_box = None  # (col0, row0, col1, row1) inclusive
        self.head_mismatch = False  # the head box's hottest pixel is far below the person's own
        if not self.ready:
            self.ambient_c = None

    def reset(self):
        """Forget the background (after the sensor was re-initialised)."""
        self.ready = False
        self._clear_results()

    def _init_background(self, img):
        """First full frame: the ambient is the most common temperature (0.5 deg C bins, -20..80);
        anything warmer than ambient + warm_delta is assumed not to be background yet."""
        hist = self.hist
        for b in range(200):
            hist[b] = 0
        mask = self.mask
        for i in range(PIXELS):
            if mask[i]:
                continue
            b = (img[i] + 2000) // 50
            if 0 <= b < 200:
                hist[b] += 1
        best = 0
        for b in range(200):
            if hist[b] > hist[best]:
                best = b
        ambient = best * 50 - 2000 + 25
        limit = ambient + self.warm_cc
        bg16 = self.bg16
        for i in range(PIXELS):
            t = img[i]
            bg16[i] = (t if t < limit else ambient) << 4
        self.ambient_c = ambient / 100
        self.ready = True

    def analyze(self, img):
        """Analyse one corrected frame; results are left in the attributes (status, hot_c, ...)."""
        if not self.ready:
            self._init_background(img)
        self._clear_results()
        self.bufs[kernels.B_IMG] = img
        # 1-2: warm and hot pixels, halos (hot pixels and their halos belong to no region)
        self.hot_count = kernels.mark_warm(self.bufs)
        if self.stats[kernels.S_WARM] * 100 > (PIXELS - self.n_masked) * 85:
            # nearly everything "warm" is a step of the whole image (a calibration change, the
            # room warming up while someone stood in view), not a person: start the background anew
            self._init_background(img)
            self.hot_count = kernels.mark_warm(self.bufs)
        # 3: regions
        n_regions = self._label(img)
        self.regions = n_regions
        persons = 0
        best = 0
        best_skin = -1
        is_person = self.is_person
        far = 0
        for k in range(1, n_regions + 1):
            is_person[k] = 0
            if self.r_pixels[k] < _MIN_PIXELS:
                continue
            # a body shape: reaching the bottom edge, or a head and neck at least 1.8 times as tall
            # as wide (a lamp, mug or panel is about as tall as wide, blur included)
            height = self.r_bottom[k] - self.r_top[k] + 1
            width = self.r_right[k] - self.r_left[k] + 1
            tall = self.r_bottom[k] == ROWS - 1 or (height >= _MIN_ROWS and height * 10 >= width * 18)
            if self.r_skin[k] >= _MIN_SKIN and tall and not self._flat_top(k):
                is_person[k] = 1
                persons += 1
                if self.r_skin[k] > best_skin:
                    best_skin = self.r_skin[k]
                    best = k
            else:
                self.distractors += 1
                if tall and self._far_figure(k, height, width):
                    far += 1
        self.persons = persons
        self.present = persons > 0
        if persons == 0 and far:
            # a figure beyond the working distance: its head is below a pixel, so nothing of it
            # reaches the skin range (110 deg lens at 1.8 m: head 28 C, body 27.7 C in a 24 C
            # room), but it is someone to send nearer, not a distractor
            self.status = TOO_FAR
            self.present = True
        if persons:
            self._head(img, best)
            if persons > 1 or self.heads > 1:
                self.status = MULTIPLE
            elif self.distance_m is None or self.distance_m < self.min_distance_m:
                self.status = TOO_CLOSE
            elif self.distance_m > self.max_distance_m:
                self.status = TOO_FAR
            else:
                self.status = PERSON
        self._adapt(img, persons)

    def _label(self, img):
        """Flood-fill warm pixels into regions 1..MAX_REGIONS, with per-region statistics."""
        bufs = self.bufs
        stats = self.stats
        n_regions = 0
        seed = kernels.next_warm(bufs, 0)
        while seed >= 0:
            if n_regions < MAX_REGIONS:
                n_regions += 1
                k = n_regions
            else:
                k = _OVERFLOW
            count = kernels.flood(bufs, seed, k)
            if k == _OVERFLOW:
                self.distractors += 1
            else:
                self.r_pixels[k] = count if count < 32767 else 32767
                self.r_skin[k] = stats[kernels.S_SKIN]
                self.r_max[k] = stats[kernels.S_PEAK]
                self.r_top[k] = stats[kernels.S_TOP]
                self.r_bottom[k] = stats[kernels.S_BOTTOM]
                self.r_left[k] = stats[kernels.S_LEFT]
                self.r_right[k] = stats[kernels.S_RIGHT]
            seed = kernels.next_warm(bufs, seed + 1)
        return n_regions

    def _far_figure(self, k, height, width):
        """A standing figure too far away for its skin to show: a narrow column (at most
        _FAR_MAX_COLS wide, three times as tall as wide, _FAR_MIN_ROWS rows or more) rising from the
        bottom edge. Radiators, screens and tables are wider; lamps and cups do not reach the floor."""
        return (self.r_bottom[k] == ROWS - 1 and width <= _FAR_MAX_COLS and height >= _FAR_MIN_ROWS
                and height >= 3 * width and self.r_skin[k] < _MIN_SKIN)

    def _coverage_ref(self, k):
        # a pixel whose excess over the background reaches a third of the region's warmest skin
        # pixel's counts as covered: hair (5-7 deg C below skin, only a few degrees above a warm
        # room) then counts fully, blurred edges fractionally
        ambient = int(self.ambient_c * 100) if self.ambient_c is not None else 2400
        ref = (self.r_max[k] - ambient) // 3
        return ref if ref >= 300 else 300

    def _flat_top(self, k):
        """True for a region whose top reaches its full width within two rows (a panel, a screen,
        a radiator in the skin range). A head is an ellipse: 0.6 of its width down to get there.
        Only judged for regions at least 5 pixels wide (a head 5 pixels wide is ~1 m away)."""
        labels = self.labels
        top = self.r_top[k]
        if self.r_right[k] - self.r_left[k] + 1 < 5 or top == 0:
            return False  # too narrow to tell, or cut off by the image edge
        self.params[kernels.P_REF] = self._coverage_ref(k)
        base = top << 5
        c = self.r_left[k]
        while c <= self.r_right[k] and labels[base + c] != k:
            c += 1
        end = c
        while end < self.r_right[k] and labels[base + end + 1] == k:
            end += 1
        center = (c + end) >> 1
        widths = self.row_widths
        n = 0
        r = top
        while r <= self.r_bottom[k] and n < 6:
            w = kernels.head_row(self.bufs, r, center, k)
            if w < 0:
                break
            widths[n] = w
            n += 1
            center = (self.stats[kernels.S_RUN_L] + self.stats[kernels.S_RUN_R]) >> 1
            r += 1
        widest = 0
        for m in range(n):
            if widths[m] > widest:
                widest = widths[m]
        if widest < 5000 or n < 4:
            return False
        for m in range(n):
            if widths[m] * 10 >= widest * 9:
                return m <= 1
        return False

    def _head(self, img, k):
        labels = self.labels
        bg16 = self.bg16
        halo = self.halo
        top = self.r_top[k]
        bottom = self.r_bottom[k]
        left = self.r_left[k]
        right = self.r_right[k]
        ref = self._coverage_ref(k)
        # the head's top is the first row with a pixel at least half the coverage reference above
        # the background (hair counts): rows of barely-warm pixels above it are no head -- a corner
        # whose background was learned too cold, merged with the hair, once put the head box (and
        # its hottest pixels) on the hair in that corner
        half = ref >> 1
        first = -1
        while top <= bottom and first < 0:
            base = top << 5
            c = left
            while c <= right:
                j = base + c
                if labels[j] == k and not halo[j] and img[j] - (bg16[j] >> 4) >= half:
                    first = c
                    break
                c += 1
            if first < 0:
                top += 1
        if first < 0:
            top = self.r_top[k]
            first = left
        # follow the head down from its top: in each row only the run of region pixels under the
        # head counts (a second head beside it, or the far shoulder, is not part of this width)
        bufs = self.bufs
        stats = self.stats
        self.params[kernels.P_REF] = ref
        halo = self.halo
        base = top << 5
        c = first
        while c <= right and (labels[base + c] != k or halo[base + c]):
            c += 1
        run_end = c
        while run_end < right and labels[base + run_end + 1] == k and not halo[base + run_end + 1]:
            run_end += 1
        center = (c + run_end) >> 1
        width = 0  # milli-pixels
        widest = top
        head_l = c
        head_r = run_end
        r = top
        previous = 0
        while r <= bottom:
            w = kernels.head_row(bufs, r, center, k)
            if w < 0:
                break
            if r >= top + 3 and w > previous + 3000:
                # an ellipse widens by < 1.5 px a row below its first three rows: a jump of 3 is
                # something touching the head (a mug, a hand, a second person), not the head
                break
            previous = w
            run_l = stats[kernels.S_RUN_L]
            run_r = stats[kernels.S_RUN_R]
            if w > width:
                width = w
                widest = r
                head_l = run_l
                head_r = run_r
            elif r > top + 1 and (w * 10 < width * 6 or (r - top) * 1000 > self.rows_per_col * 0.6 * width):
                break  # the neck, or past the widest row (half way down the head)
            center = (run_l + run_r) >> 1
            r += 1
        w_px = width / 1000
        if w_px < 0.5:
            w_px = 0.5
        self.head_width_px = w_px
        if top == 0 and w_px * self.pixel_w_per_m * self.min_distance_m > self.head_width_m:
            self.distance_m = None  # head cut off at the top and wider than at min distance
        else:
            self.distance_m = self.head_width_m / (w_px * self.pixel_w_per_m)
        # head box: the head's height below its top; columns of the widest row's covered pixels
        head_bottom = top + int(self.rows_per_col * w_px + 0.5)
        # the hottest spots of a face (inner canthi, forehead) lie in its upper 65 %: searching
        # only there keeps the chin, neck and anything held below the face out of the reading
        search_bottom = top + int(0.65 * self.rows_per_col * w_px + 0.5)
        if head_bottom > bottom:
            head_bottom = bottom
        if search_bottom > head_bottom:
            search_bottom = head_bottom
        base = widest << 5
        c0 = head_r
        c1 = head_l
        c = head_l
        while c <= head_r:
            j = base + c
            if img[j] - (bg16[j] >> 4) >= ref // 2:
                if c < c0:
                    c0 = c
                if c > c1:
                    c1 = c
            c += 1
        if c1 < c0:
            c0 = head_l
            c1 = head_r
        self.head_box = (c0, top, c1, head_bottom)
        # hottest region: the mean of the hottest few skin pixels in the head box
        params = self.params
        params[kernels.P_C0] = c0
        params[kernels.P_R0] = top
        params[kernels.P_C1] = c1
        params[kernels.P_R1] = search_bottom
        found = kernels.hottest(bufs, k)
        hv = self.hot_values
        total = 0
        for m in range(found):
            total += hv[m]
        self.n_hot = found
        self.hot_c = total / found / 100 if found else None
        if found == 0 or self.r_max[k] - hv[0] > _HEAD_MISMATCH_CC:
            # the box holds no skin, or not the person's warmest skin: not a face, no reading
            self.head_mismatch = True
            self.hot_c = None
        # several heads on one merged region: runs of columns whose first row is within the head
        # height of the top (shoulders of a single person start ~2.4 head widths lower)
        limit = top + int(self.rows_per_col * w_px)
        min_run = int(w_px / 3)
        if min_run < 1:
            min_run = 1
        stats[kernels.S_TOP] = top
        stats[kernels.S_LEFT] = left
        stats[kernels.S_RIGHT] = right
        self.heads = kernels.count_heads(bufs, k, limit, min_run)

    def _adapt(self, img, persons):
        """Background update: while nobody is in view every non-warm pixel follows quickly (alpha
        1/16) and warm non-person pixels slowly (1/256, so a room warming up is absorbed); with a
        person in view only non-warm pixels adapt, slowly. Person pixels, the non-warm fringe of
        any warm region (hair and blurred edges just under the warm threshold: slowly while nobody
        is in view, never with a person) and hot objects (with their halo) never do."""
        total = kernels.adapt(self.bufs, 1 if persons == 0 else 0)
        count = PIXELS - self.n_masked
        self.ambient_c = total / (16 * count) / 100 if count else None

    def hot_pixel_indices(self):
        """Pixel indices of the hottest region (for pictures); allocates, not for the hot path."""
        return [self.hot_index[m] for m in range(self.n_hot)]
