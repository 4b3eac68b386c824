# MLX90640 32x24 thermal array: calibration extraction, temperature calculation and I2C driver.
#
# Written from the Melexis MLX90640 datasheet, revision 12 (2019-12-03):
#   section 11.1  restoring the calibration parameters from the EEPROM,
#   section 11.2  temperature calculation (11.2.2.x per step, 11.2.2.9 extended ranges),
#   section 10 / 8 register map, data-ready handshake, control register 0x800D.
# Deviating pixels follow the current Melexis library rules (at most 4 broken/outlier pixels, no two
# adjacent in the 8-neighbourhood, rows do not wrap at the array edges), and, like that library, the
# compensation-pixel alpha is the average of both subpages (TGC*(alphaCP0+alphaCP1)/2).
#
# MicroPython first. The hot path (calculate_to) works in integers: on MicroPython every float
# operation allocates a heap object, small integers do not. Every per-pixel intermediate stays
# below 2**30, the small-int limit of 32-bit ports such as the ESP32 (wider products are split into
# 14-bit halves). The pixel loop is @micropython.viper and writes each To as float32 bits into the
# output array('f'), so a pixel allocates nothing. The non-linear To(x) relation (11.2.2.9) is
# inverted with a per-frame knot table and a cubic per interval; pixels outside the table (or
# beside a range corner) take the floating-point formulas.
# Measured (MicroPython 1.29 unix port, x86-64; `host bench`): calculate_to 0.04-0.05 ms (13 us of
# it the pixel loop, the rest per-frame work) and ~4 KB of heap per subpage (up to ~16 KB on a frame
# that rebuilds interval cubics) against 2.5-2.6 ms and 590 KB for the Adafruit driver's
# _CalculateTo; within 1e-4 C of the floating-point formulas from -40 C up; params resident after
# extract_params about 21 KB. A list (or other non-array('f')) output goes through a 3 KB scratch
# array('f') per call and boxes its floats.

import math
import sys
from array import array

if sys.implementation.name == "micropython":
    from micropython import const
    import micropython
else:
    # CPython (host tools, tests): const is the value, the code emitters run as plain Python. Not
    # `import micropython`: a CPython stub package of that name makes @micropython.viper raise.
    def const(x):
        return x

    class micropython:
        @staticmethod
        def native(fn):
            return fn

        @staticmethod
        def viper(fn):
            return fn

    def ptr8(buf):      # viper's pointer casts: plain indexing does the same here
        return buf

    def ptr16(buf):
        return buf

    def ptr32(buf):
        return buf

    import struct as _struct

_MPY = sys.implementation.name == "micropython"


try:
    from time import sleep_ms as _sleep_ms, ticks_ms as _ticks_ms, ticks_diff as _ticks_diff
except ImportError:  # CPython
    import time as _time

    def _sleep_ms(ms):
        _time.sleep(ms / 1000)

    def _ticks_ms():
        return int(_time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


# Registers (datasheet section 8, figure 5 "memory map")
_REG_STATUS = const(0x8000)      # bit 3 new data in RAM, bits 2..0 last measured subpage
_REG_CONTROL = const(0x800D)     # control register 1
_RAM_START = const(0x0400)       # 768 pixel words + 64 auxiliary words
_EEPROM_START = const(0x2400)    # 832 calibration words
_STATUS_NEW_DATA = const(0x0008)
_STATUS_CLEAR = const(0x0030)    # datasheet: write 0x0030 (bit 3 cleared, overwrite + start kept)
_CTRL_RATE_SHIFT = const(7)      # bits 9..7 refresh rate, 0 = 0.5 Hz .. 7 = 64 Hz
_CTRL_RES_SHIFT = const(10)      # bits 11..10 ADC resolution, 0 = 16 bit .. 3 = 19 bit
_CTRL_CHESS = const(0x1000)      # bit 12: 1 = chess pattern, 0 = interleaved (TV) mode

_WORDS = const(832)
_PIXELS = const(768)

# Frame (Melexis frameData layout) indices of the auxiliary words (RAM 0x0700..0x073F)
_F_TA_VBE = const(768)    # 0x0700
_F_CP_SP0 = const(776)    # 0x0708
_F_GAIN = const(778)      # 0x070A
_F_TA_PTAT = const(800)   # 0x0720
_F_CP_SP1 = const(808)    # 0x0728
_F_VDD_PIX = const(810)   # 0x072A
_F_CONTROL = const(832)
_F_SUBPAGE = const(833)

# Fixed-point scales of the integer hot path (see calculate_to); x = V/alpha is in units of
# 2**params._sx K^4, chosen per EEPROM so that x < 2**29 up to 400 C.
_FV = const(14)           # V_IR at 2**14 per count (below 2**29 up to 2**15 counts)
_ST = const(16)           # temperatures at 2**16 per kelvin
_QD = const(28)           # D(T), m = emissivity*(1 + KsTa*dTa) and the gain ratio: Q28
_T_LO = const(-80)        # table of To covers -80 .. 400 deg C in 2.5 K steps; the range corners
_T_HALF_STEPS = const(5)  # 0/ct2/ct3 (multiples of 10 K) are knots. Cubic inverse interpolation
_KNOTS = const(193)       # error at 2.5 K: < 1e-5 K at 30 C, ~3e-5 K at -80 C (5 K steps: 1.2e-4)

_ZERO_C = 273.15
_NAN = float("nan")
_INV_ST = 1.0 / (1 << _ST)
_SLOW = const(2)
_REFRESH_HZ = (0.5, 1, 2, 4, 8, 16, 32, 64)


class SensorError(Exception):
    """The sensor or its bus failed (after bounded retries)."""


def _s16(w):
    return w - 65536 if w > 32767 else w


def _sbits(value, bits):
    # two's complement field of `bits` bits
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


class Params:
    """Calibration restored from the EEPROM (datasheet 11.1), Melexis names, plus precomputed
    internals (underscore) that depend on the EEPROM only."""

    def __repr__(self):
        return "<MLX90640 params bad=%r outliers=%r>" % (self.brokenPixels, self.outlierPixels)


class _KtaView:
    """Per-pixel Kta (768 floats, read-only): EEPROM integer / 2**ktaScale1 (datasheet 11.1.6)."""

    def __init__(self, ints, div):
        self._ints = ints
        self._div = div

    def __len__(self):
        return _PIXELS

    def __getitem__(self, i):
        return self._ints[i] / self._div

    def __iter__(self):
        for i in range(_PIXELS):
            yield self._ints[i] / self._div


class _KvView:
    """Per-pixel Kv (768 floats, read-only): one of four values by row/column parity (11.1.7)."""

    def __init__(self, by_parity, div):
        self._vals = tuple(v / div for v in by_parity)

    def __len__(self):
        return _PIXELS

    def __getitem__(self, i):
        if i < 0:
            i += _PIXELS
        if not 0 <= i < _PIXELS:
            raise IndexError("pixel index out of range")
        return self._vals[(((i >> 5) & 1) << 1) | (i & 1)]

    def __iter__(self):
        for i in range(_PIXELS):
            yield self._vals[(((i >> 5) & 1) << 1) | (i & 1)]


def _nibbles(ee, first, count):
    # 4-bit signed row/column corrections, 4 per word, least significant nibble first (11.1.x)
    out = []
    for i in range(count):
        w = ee[first + i]
        for k in range(4):
            out.append(_sbits((w >> (4 * k)) & 0xF, 4))
    return out


def adjacent(pix1, pix2):
    """True if two pixel indices touch (8-neighbourhood); rows do not wrap at the array edges."""
    return abs((pix1 >> 5) - (pix2 >> 5)) < 2 and abs((pix1 & 31) - (pix2 & 31)) < 2


def extract_params(eeprom):
    """Restore the calibration from 832 EEPROM words (word i = address 0x2400+i).
    Raises ValueError when the words cannot come from an MLX90640."""
    try:
        n = len(eeprom)
    except TypeError:
        raise ValueError("EEPROM must be a sequence of 832 16-bit words")
    if n != _WORDS:
        raise ValueError("EEPROM has %d words, an MLX90640 has 832" % n)
    ee = array("H")
    zeros = ones = 0
    for w in eeprom:
        if not isinstance(w, int) or w < 0 or w > 0xFFFF:
            raise ValueError("EEPROM word %r is not an unsigned 16-bit value" % (w,))
        ee.append(w)
        if w == 0:
            zeros += 1
        elif w == 0xFFFF:
            ones += 1
    if zeros == _WORDS:
        raise ValueError("EEPROM reads all 0x0000: no MLX90640 calibration (sensor absent or erased)")
    if ones == _WORDS:
        raise ValueError("EEPROM reads all 0xFFFF: no MLX90640 calibration (bus floating or sensor absent)")

    p = Params()
    # 11.1.1 supply voltage
    p.kVdd = _sbits(ee[51] >> 8, 8) * 32
    p.vdd25 = ((ee[51] & 0xFF) - 256) * 32 - 8192
    # 11.1.2 ambient temperature
    p.KvPTAT = _sbits(ee[50] >> 10, 6) / 4096
    p.KtPTAT = _sbits(ee[50] & 0x3FF, 10) / 8
    p.vPTAT25 = _s16(ee[49])
    p.alphaPTAT = (ee[16] >> 12) / 4 + 8
    # 11.1.3 gain, 11.1.10..12 TGC, resolution, KsTa
    p.gainEE = _s16(ee[48])
    p.tgc = _sbits(ee[60] & 0xFF, 8) / 32
    p.resolutionEE = (ee[56] >> 12) & 3
    p.KsTa = _sbits(ee[60] >> 8, 8) / 8192
    # 11.1.13 KsTo and corner temperatures (incl. the extended ranges of 11.2.2.9)
    step = ((ee[63] >> 12) & 3) * 10
    ct2 = ((ee[63] >> 4) & 0xF) * step
    ct3 = ct2 + ((ee[63] >> 8) & 0xF) * step
    p.ct = [-40, 0, ct2, ct3, 400]
    ksto_scale = 1 << ((ee[63] & 0xF) + 8)
    p.ksTo = [_sbits(ee[61] & 0xFF, 8) / ksto_scale, _sbits(ee[61] >> 8, 8) / ksto_scale,
              _sbits(ee[62] & 0xFF, 8) / ksto_scale, _sbits(ee[62] >> 8, 8) / ksto_scale, -0.0002]
    # 11.1.9 compensation pixel
    alpha_scale_cp = (ee[32] >> 12) + 27
    cp_alpha0 = _sbits(ee[57] & 0x3FF, 10) / (1 << alpha_scale_cp)
    p.cpAlpha = [cp_alpha0, cp_alpha0 * (1 + _sbits(ee[57] >> 10, 6) / 128)]
    cp_off0 = _sbits(ee[58] & 0x3FF, 10)
    p.cpOffset = [cp_off0, cp_off0 + _sbits(ee[58] >> 10, 6)]
    kta_scale1 = ((ee[56] >> 4) & 0xF) + 8
    kta_scale2 = ee[56] & 0xF
    kv_scale = (ee[56] >> 8) & 0xF
    p.cpKta = _sbits(ee[59] & 0xFF, 8) / (1 << kta_scale1)
    p.cpKv = _sbits(ee[59] >> 8, 8) / (1 << kv_scale)
    # 11.1.15 interleaved/chess corrections; calibration mode 0x80 = calibrated in chess mode
    p.calibrationModeEE = ((ee[10] & 0x0800) >> 4) ^ 0x80
    p.ilChessC = [_sbits(ee[53] & 0x3F, 6) / 16, _sbits((ee[53] >> 6) & 0x1F, 5) / 2,
                  _sbits(ee[53] >> 11, 5) / 8]

    _check_scalars(p)

    # 11.1.4..8 per-pixel offset, alpha, Kta, Kv. Rows/columns corrections are 4-bit signed.
    occ_row = _nibbles(ee, 18, 6)
    occ_col = _nibbles(ee, 24, 8)
    acc_row = _nibbles(ee, 34, 6)
    acc_col = _nibbles(ee, 40, 8)
    occ_rem = ee[16] & 0xF
    occ_col_scale = (ee[16] >> 4) & 0xF
    occ_row_scale = (ee[16] >> 8) & 0xF
    off_ref = _s16(ee[17])
    acc_rem = ee[32] & 0xF
    acc_col_scale = (ee[32] >> 4) & 0xF
    acc_row_scale = (ee[32] >> 8) & 0xF
    alpha_div = 1 << ((ee[32] >> 12) + 30)
    alpha_ref = ee[33]
    # Kta/Kv by (row, column) parity: index 2*(row&1) + (col&1); rows/columns counted from 1 in the
    # datasheet, so index 0 is "odd row, odd column" (RoCo).
    kta_rc = (_sbits(ee[54] >> 8, 8), _sbits(ee[55] >> 8, 8), _sbits(ee[54] & 0xFF, 8),
              _sbits(ee[55] & 0xFF, 8))
    kv_rc = (_sbits(ee[52] >> 12, 4), _sbits((ee[52] >> 4) & 0xF, 4), _sbits((ee[52] >> 8) & 0xF, 4),
             _sbits(ee[52] & 0xF, 4))
    p._kv_int = kv_rc
    p._kv_scale = kv_scale
    p._kta_scale = kta_scale1

    p.offset = array("h", bytes(2 * _PIXELS))
    p.alpha = array("f", bytes(4 * _PIXELS))
    kta_ints = []
    cp_alpha_avg = p.tgc * (p.cpAlpha[0] + p.cpAlpha[1]) / 2
    alpha_min = 1.0
    alpha_max = 0.0
    for i in range(_PIXELS):
        row = i >> 5
        col = i & 31
        w = ee[64 + i]
        off = (off_ref + (occ_row[row] << occ_row_scale) + (occ_col[col] << occ_col_scale)
               + (_sbits(w >> 10, 6) << occ_rem))
        if off < -32768 or off > 32767:
            raise ValueError("pixel %d offset %d outside the 16-bit ADC range: not an MLX90640 EEPROM"
                             % (i, off))
        p.offset[i] = off
        alpha_int = (alpha_ref + (acc_row[row] << acc_row_scale) + (acc_col[col] << acc_col_scale)
                     + (_sbits((w >> 4) & 0x3F, 6) << acc_rem))
        alpha = alpha_int / alpha_div
        p.alpha[i] = alpha
        comp = alpha - cp_alpha_avg
        if comp <= 0:
            raise ValueError("pixel %d has zero or negative sensitivity alpha (%r): not an MLX90640 "
                             "EEPROM" % (i, alpha))
        if comp < alpha_min:
            alpha_min = comp
        if comp > alpha_max:
            alpha_max = comp
        split = ((row & 1) << 1) | (col & 1)
        kta_int = kta_rc[split] + (_sbits((w >> 1) & 7, 3) << kta_scale2)
        kta_ints.append(kta_int)
    if alpha_min < 1e-10 or alpha_max > 1e-5:
        raise ValueError("pixel sensitivities %r..%r outside any MLX90640's range" % (alpha_min, alpha_max))

    _find_bad_pixels(p, ee)

    # --- precomputed internals for calculate_to (EEPROM only) ---
    big = 0
    for k in kta_ints:
        if k > 32767 or k < -32768:
            big = 1
    p._kta_int = array("i" if big else "h", kta_ints)
    p._kta_big = big           # (no real sensor) beyond the pixel loop's 16-bit read: float path
    # kta and kv are exact EEPROM integers over a power of two: read-only views save 6 KB of RAM
    p.kta = _KtaView(p._kta_int, 1 << kta_scale1)
    p.kv = _KvView(kv_rc, 1 << kv_scale)
    # 1/alpha_comp as integers I = 2**qa/alpha < 2**28 with a common power-of-two scale, kept as
    # two 14-bit halves so that V*I can be formed from products below 2**30.
    qa = 0
    while (1 << (qa + 1)) / alpha_min < (1 << 28):
        qa += 1
    while 2.0 ** qa / alpha_min >= (1 << 28):
        qa -= 1
    qa = min(qa, 5)
    p._sx = max(9, 11 - qa)
    p._shift = _FV + qa + p._sx           # x = V14 * I >> shift, 25..28
    inv_hi = array("h", bytes(2 * _PIXELS))
    inv_lo = array("h", bytes(2 * _PIXELS))
    scale = 2.0 ** qa
    for i in range(_PIXELS):
        inv = int(scale / (p.alpha[i] - cp_alpha_avg) + 0.5)
        inv_hi[i] = inv >> 14
        inv_lo[i] = inv & 0x3FFF
    p._inv_hi = inv_hi
    p._inv_lo = inv_lo
    # bit lengths of the largest offset and offset*kta_int: the per-frame fixed-point scales
    # are chosen from them so that no product reaches 2**30
    top_o = 0
    top_okt = 0
    for i in range(_PIXELS):
        o = abs(p.offset[i])
        if o > top_o:
            top_o = o
        okt = abs(p.offset[i] * kta_ints[i])
        if okt > top_okt:
            top_okt = okt
    p._bits_o = _bit_length(top_o)
    p._bits_okt = _bit_length(top_okt)
    p._bad = array("h", p.brokenPixels + p.outlierPixels)
    _build_knots(p)
    p._cache_key = None
    p._tab_x = array("i", bytes(4 * _KNOTS))       # knot x per frame
    p._tab_a0 = array("i", bytes(4 * _KNOTS))      # cubic To(u) per interval, 2**-16 K
    p._tab_a1 = array("i", bytes(4 * _KNOTS))
    p._tab_a2 = array("i", bytes(4 * _KNOTS))
    p._tab_a3 = array("i", bytes(4 * _KNOTS))
    p._tab_r = array("i", bytes(4 * _KNOTS))       # u = dx * r >> k, u in [0, 2**16)
    p._tab_k = bytearray(_KNOTS)
    p._tab_ready = bytearray(_KNOTS)
    # the cubic of an interval is kept while TaTr (2**-sx K^4) stays within coef_tol of the value
    # it was made at (coef_tatr; the start value is no TaTr): 0.5 K of Ta at 30 C
    p._coef_tatr = array("i", [-(1 << 30)] * _KNOTS)
    p._coef_fits = bytearray(_KNOTS)
    p._coef_tol = int(4 * 303.15 ** 3 * 0.5 / (1 << p._sx))
    p._tatr = 0
    p._ta_knot = 0
    p._tab_hi = 0
    p._ta_tr = 0.0
    p._ta = 25.0
    p._corr = _alpha_corr(p)
    # _pixel_loop's inputs: scalars, per-parity factors and class corrections (array('i') of 29),
    # the buffers it reads (frame and output are set per call), the output known to be array('f')
    p._loop_ints = array("i", bytes(4 * 29))
    p._loop_bufs = [None, None, p.offset, p._kta_int, p._inv_hi, p._inv_lo, p._tab_x, p._tab_a0,
                    p._tab_a1, p._tab_a2, p._tab_a3, p._tab_r, p._tab_k, p._tab_ready]
    p._f32_out = None
    p._words_in = None
    return p


def _bit_length(n):
    bits = 0
    while n:
        n >>= 1
        bits += 1
    return bits


def _check_scalars(p):
    # Values every MLX90640 has by construction of the chip (datasheet 11.1 typical values: kVdd
    # about -3200 LSB/V, gain about 6000, KtPTAT about 42, VPTAT25 about 12200); bounds several
    # times wider than the spread of real parts. Anything else came from something else.
    if not -4096 <= p.kVdd <= -1024:
        raise ValueError("EEPROM kVdd %d outside -4096..-1024 LSB/V: not an MLX90640 EEPROM" % p.kVdd)
    if not 2000 <= p.gainEE <= 12000:
        raise ValueError("EEPROM gain %d outside 2000..12000: not an MLX90640 EEPROM" % p.gainEE)
    if not (8000 <= p.vPTAT25 <= 16383 and 20 <= p.KtPTAT <= 64):
        raise ValueError("EEPROM PTAT calibration (vPTAT25 %d, KtPTAT %r) outside any MLX90640's "
                         "range" % (p.vPTAT25, p.KtPTAT))
    if p.cpAlpha[0] <= 0 or p.cpAlpha[1] <= 0:
        raise ValueError("EEPROM compensation pixel alpha %r is not positive: not an MLX90640 EEPROM"
                         % (p.cpAlpha,))


def _find_bad_pixels(p, ee):
    # Datasheet 11.1.x / Melexis library: pixel word 0x0000 = broken pixel, bit 0 set = outlier.
    broken = []
    outlier = []
    for i in range(_PIXELS):
        w = ee[64 + i]
        if w == 0:
            broken.append(i)
        elif w & 1:
            outlier.append(i)
    bad = broken + outlier
    if len(bad) > 4:
        raise ValueError("%d bad pixels (%d broken, %d outliers); an MLX90640 has at most 4"
                         % (len(bad), len(broken), len(outlier)))
    for a in range(len(bad)):
        for b in range(a + 1, len(bad)):
            if adjacent(bad[a], bad[b]):
                raise ValueError("bad pixels %d (row %d, col %d) and %d (row %d, col %d) are adjacent; "
                                 "an MLX90640 has none" % (bad[a], bad[a] >> 5, bad[a] & 31,
                                                           bad[b], bad[b] >> 5, bad[b] & 31))
    p.brokenPixels = broken
    p.outlierPixels = outlier


def _alpha_corr(p):
    # 11.2.2.9: sensitivity correction per temperature range
    ks = p.ksTo
    ct = p.ct
    c2 = 1 + ks[1] * ct[2]
    return (1 / (1 + ks[0] * 40), 1.0, c2, c2 * (1 + ks[2] * (ct[3] - ct[2])))


def _range_of(p, t):
    ct = p.ct
    if t < ct[1]:
        return 0
    if t < ct[2]:
        return 1
    if t < ct[3]:
        return 2
    return 3


def _build_knots(p):
    # x(T) = (T_K^4 - TaTr) * D(T) with D(T) = alphaCorr[r]*(1 + KsTo[r]*(T - ct[r])) is the object
    # signal (V_IR / (emissivity*alpha_comp), K^4) a pixel at To = T gives (11.2.2.9 solved for x).
    # Store the frame-independent parts: A = T_K^4*D / 2**sx and D in Q28.
    corr = _alpha_corr(p)
    a_tab = array("i", bytes(4 * _KNOTS))
    d_tab = array("i", bytes(4 * _KNOTS))
    for j in range(_KNOTS):
        t = _T_LO + j * _T_HALF_STEPS / 2
        r = _range_of(p, t)
        d = corr[r] * (1 + p.ksTo[r] * (t - p.ct[r]))
        if d <= 0:
            d = 1e-9   # no sensor has this; the table stops being monotonic and ends here
        tk = t + _ZERO_C
        a_tab[j] = int(tk * tk * tk * tk * d / (1 << p._sx) + 0.5)
        if d > 1.5:
            d = 1.5    # (no sensor either; keeps D below 2**29)
        d_tab[j] = int(d * (1 << _QD) + 0.5)
    p._knot_a = a_tab
    p._knot_d = d_tab
    # a knot where D(T) has a corner: a cubic stencil b..b+3 may end on one, not straddle it
    kinks = []
    for c in (0, p.ct[2], p.ct[3]):
        if (2 * (c - _T_LO)) % _T_HALF_STEPS == 0:
            kinks.append((2 * (c - _T_LO)) // _T_HALF_STEPS)
    base = bytearray(_KNOTS)
    for j in range(_KNOTS - 1):
        chosen = j
        for b in (j - 1, j, j - 2):
            if b < 0 or b + 3 >= _KNOTS:
                continue
            ok = True
            for k in kinks:
                if b < k < b + 3:
                    ok = False
            if ok:
                chosen = b
                break
        if chosen + 3 >= _KNOTS:
            chosen = _KNOTS - 4
        base[j] = chosen
    p._knot_base = base
    # Near ct2/ct3 the datasheet's two-step To picks its range from its first estimate, which can
    # sit a fraction of a kelvin off there; pixels beside those corners take the float path. (At
    # 0 C the first estimate is exact: its error grows with KsTo*T_C.)
    # Interval states, reset per frame from this template: 0 = coefficients not made yet,
    # 1 = ready, 2 = beside a corner (float path).
    near = bytearray(_KNOTS)
    for k in kinks:
        if k == (2 * -_T_LO) // _T_HALF_STEPS:
            continue
        for j in (k - 2, k - 1, k, k + 1):
            if 0 <= j < _KNOTS:
                near[j] = _SLOW
    # Below -40 C (outside the sensor's range) the two-step To bends away from the exact root faster
    # than a linear correction follows (4e-4 K at -76 C): float path there as well.
    for j in range((-40 - _T_LO) * 2 // _T_HALF_STEPS):
        near[j] = _SLOW
    p._ready_template = bytes(near)


def get_vdd(params, frame):
    """Supply voltage (V) of the frame, datasheet 11.2.2.2 (with the resolution correction)."""
    res_ram = (frame[_F_CONTROL] >> _CTRL_RES_SHIFT) & 3
    corr = (1 << params.resolutionEE) / (1 << res_ram)
    return (corr * _s16(frame[_F_VDD_PIX]) - params.vdd25) / params.kVdd + 3.3


def get_ta(params, frame):
    """Ambient (sensor die) temperature, deg C, datasheet 11.2.2.3."""
    return _ta(params, frame, get_vdd(params, frame))


def _ta(params, frame, vdd):
    ptat = _s16(frame[_F_TA_PTAT])
    den = ptat * params.alphaPTAT + _s16(frame[_F_TA_VBE])
    if den == 0:
        raise ValueError("frame Ta words (PTAT %d, Vbe %d) give no ambient temperature"
                         % (ptat, _s16(frame[_F_TA_VBE])))
    ptat_art = ptat / den * 262144.0
    return (ptat_art / (1 + params.KvPTAT * (vdd - 3.3)) - params.vPTAT25) / params.KtPTAT + 25


def check_frame(frame):
    """Raise ValueError if the words the calculation needs carry no data (0x7FFF, datasheet: RAM not
    yet written) or are impossible (zero gain)."""
    if len(frame) < 834:
        raise ValueError("frame has %d words, 834 expected (RAM 832 + control + subpage)" % len(frame))
    for idx in (_F_TA_VBE, _F_CP_SP0, _F_GAIN, _F_TA_PTAT, _F_CP_SP1, _F_VDD_PIX):
        if frame[idx] == 0x7FFF:
            raise ValueError("frame word 0x%04X is 0x7FFF: the sensor delivered no auxiliary data"
                             % (_RAM_START + idx))
    if frame[_F_GAIN] == 0:
        raise ValueError("frame gain word 0x070A is zero")
    if frame[_F_SUBPAGE] > 1:
        raise ValueError("frame subpage %d is not 0 or 1" % frame[_F_SUBPAGE])


class _FrameConsts:
    pass


def _frame_scalars(p, frame, emissivity, tr):
    # Per frame quantities of 11.2.2.x (floats; a few dozen objects per subpage).
    check_frame(frame)
    if not emissivity > 0 or emissivity > 1:
        raise ValueError("emissivity %r outside 0 < e <= 1" % (emissivity,))
    vdd = get_vdd(p, frame)
    ta = _ta(p, frame, vdd)
    sp = frame[_F_SUBPAGE]
    ctrl = frame[_F_CONTROL]
    chess = 1 if ctrl & _CTRL_CHESS else 0
    d_ta = ta - 25
    d_v = vdd - 3.3
    gain = p.gainEE / _s16(frame[_F_GAIN])          # 11.2.2.4
    # 11.2.2.6 compensation pixel of this subpage; in a mode other than the calibration one the
    # subpage 1 CP offset carries ilChessC1 (Melexis library / datasheet 11.2.2.5.4).
    other_mode = (0x80 if chess else 0) != p.calibrationModeEE
    cp_off = p.cpOffset[sp]
    if sp == 1 and other_mode:
        cp_off += p.ilChessC[0]
    cp = (_s16(frame[_F_CP_SP1 if sp else _F_CP_SP0]) * gain
          - cp_off * (1 + p.cpKta * d_ta) * (1 + p.cpKv * d_v))
    ta4 = (ta + _ZERO_C) ** 4
    tr4 = (tr + _ZERO_C) ** 4
    c = _FrameConsts()
    c.vdd = vdd
    c.ta = ta
    c.sp = sp
    c.chess = chess
    c.other_mode = other_mode
    c.gain = gain
    c.d_ta = d_ta
    c.d_v = d_v
    c.tgc_cp = p.tgc * cp
    c.ta_tr = tr4 - (tr4 - ta4) / emissivity                   # 11.2.2.8
    c.k_ta = 1 + p.KsTa * d_ta                                  # 11.2.2.8 alpha_comp factor
    c.emissivity = emissivity
    return c


def _il_corr(p, i):
    # 11.2.2.5.4 interleave/chess correction for a pixel measured in the other pattern
    il = (i >> 5) & 1
    r = i & 3
    conv = (0, -1, 0, 1)[r] * (1 - 2 * il)
    return p.ilChessC[2] * (2 * il - 1) - p.ilChessC[1] * conv


def _to_from_x(p, x, ta_tr, corr):
    # 11.2.2.9: To from x = V_IR/(emissivity*alpha_comp) (K^4), first in range 1 then per range.
    # Returns NaN where the formulas have no real solution (no physical signal gives that).
    k1 = p.ksTo[1]
    s = x + ta_tr
    if s <= 0:
        return _NAN
    q = math.sqrt(math.sqrt(s))
    den = 1 - k1 * _ZERO_C + k1 * q
    if den <= 0:
        return _NAN
    s = x / den + ta_tr
    if s <= 0:
        return _NAN
    t0 = math.sqrt(math.sqrt(s)) - _ZERO_C
    r = _range_of(p, t0)
    den = corr[r] * (1 + p.ksTo[r] * (t0 - p.ct[r]))
    if den <= 0:
        return _NAN
    s = x / den + ta_tr
    if s <= 0:
        return _NAN
    return math.sqrt(math.sqrt(s)) - _ZERO_C


def _in_subpage(i, sp, chess):
    if chess:
        return (((i >> 5) + i) & 1) == sp
    return ((i >> 5) & 1) == sp


def calculate_to_reference(params, frame, emissivity, tr, out):
    """Datasheet 11.2.2 in floating point, pixel by pixel (slow, allocates): the yardstick for
    calculate_to and the fallback for pixels outside its table."""
    p = params
    c = _frame_scalars(p, frame, emissivity, tr)
    corr = _alpha_corr(p)
    cp_alpha_avg = p.tgc * (p.cpAlpha[0] + p.cpAlpha[1]) / 2
    for i in range(_PIXELS):
        if _in_subpage(i, c.sp, c.chess):
            out[i] = _pixel_reference(p, frame, c, corr, cp_alpha_avg, i)
    _fill_bad(p, out, c.sp, c.chess)
    return c


def _pixel_reference(p, frame, c, corr, cp_alpha_avg, i):
    # 11.2.2.5 .. 11.2.2.9 for one pixel, floating point
    v = (_s16(frame[i]) * c.gain
         - p.offset[i] * (1 + p.kta[i] * c.d_ta) * (1 + p.kv[i] * c.d_v))
    if c.other_mode:
        v += _il_corr(p, i)
    v = (v - c.tgc_cp) / c.emissivity
    a = (p.alpha[i] - cp_alpha_avg) * c.k_ta
    return _to_from_x(p, v / a, c.ta_tr, corr)


def _fill_bad(p, out, sp, chess):
    # Broken/outlier pixels take the mean of their good neighbours measured in the same subpage:
    # the diagonal ones in chess mode, left/right in interleaved mode (as Melexis'
    # BadPixelsCorrection chooses them). No two bad pixels are adjacent, so neighbours are good.
    for i in p._bad:
        if not _in_subpage(i, sp, chess):
            continue
        row = i >> 5
        col = i & 31
        total = 0.0
        n = 0
        if chess:
            for dr in (-1, 1):
                for dc in (-1, 1):
                    r = row + dr
                    cc = col + dc
                    if 0 <= r < 24 and 0 <= cc < 32:
                        total += out[(r << 5) + cc]
                        n += 1
        else:
            for dc in (-1, 1):
                cc = col + dc
                if 0 <= cc < 32:
                    total += out[(row << 5) + cc]
                    n += 1
        out[i] = total / n if n else _NAN


def _prepare_table(p, c):
    # Per frame: knot x values X_j = (A_j - TaTr*D_j) * m (11.2.2.9 solved for x, in 2**-sx
    # K^4 units, m = emissivity*(1 + KsTa*dTa) because pixel x is formed without them). Integer
    # products of 14-bit halves, all below 2**30. Interval coefficients follow lazily.
    sx = p._sx
    m = int(c.emissivity * c.k_ta * (1 << _QD) + 0.5)
    tatr = int(c.ta_tr / (1 << sx) + 0.5)
    key = (m, tatr)
    if p._cache_key == key:
        return True
    if not (0 < m < (5 << (_QD - 2)) and -(1 << 25) < tatr < (1 << 25)):
        return False     # emissivity*k_ta outside (0, 1.25) or TaTr out of range: float path
    a = p._knot_a
    d = p._knot_d
    xs = p._tab_x
    tah = tatr >> 14
    tal = tatr & 0x3FFF
    mh = m >> 14
    ml = m & 0x3FFF
    hi = _KNOTS
    prev = -(1 << 29)
    for j in range(_KNOTS):
        dj = d[j]
        dh = dj >> 14
        dl = dj & 0x3FFF
        y = a[j] - (tah * dh + ((tah * dl + tal * dh) >> 14) + ((tal * dl) >> _QD))
        yh = y >> 14
        yl = y & 0x3FFF
        x = yh * mh + ((yh * ml + yl * mh) >> 14) + ((yl * ml) >> _QD)
        xs[j] = x
        # the monotonic stretch of the table (no real sensor leaves it, an odd EEPROM could)
        if hi == _KNOTS and (x <= prev or x >= (1 << 29)):
            hi = j
        prev = x
    p._tab_hi = hi
    p._cache_key = key
    p._ta_tr = c.ta_tr
    p._tatr = tatr
    p._ta = c.ta
    p._ta_knot = int((c.ta - _T_LO) * 2 / _T_HALF_STEPS)
    p._tab_ready[:] = p._ready_template
    return True


def _prepare_interval(p, j):
    # Interval j for this frame: u = (x - X_j)/(X_j+1 - X_j) = dx*r >> k (u in 2**-16, r in
    # [2**16, 2**17), dx split at bit 11 in the pixel loop), and the cubic To(u). In u the cubic
    # does not depend on m and hardly on TaTr (only through the outer stencil knots and the
    # two-step correction, which grows fast away from Ta), so within 40 K of Ta it is kept across
    # frames while TaTr stays within the equivalent of 0.5 K of Ta (effect on To < 2e-5 K).
    xs = p._tab_x
    x0 = xs[j]
    dxj = xs[j + 1] - x0
    tol = p._coef_tol if -16 < j - p._ta_knot < 16 else 0
    if not -tol <= p._tatr - p._coef_tatr[j] <= tol:
        _interval_cubic(p, j, x0, dxj)
    k = _bit_length(dxj)
    p._tab_r[j] = (1 << (16 + k)) // dxj
    p._tab_k[j] = k
    p._tab_ready[j] = 1 if p._coef_fits[j] and 11 <= k <= 23 else _SLOW


def _interval_cubic(p, j, x0, dxj):
    # The cubic To(u) through the stencil knots base[j]..base[j]+3 (Newton divided differences,
    # then monomial form), plus the two-step correction interpolated linearly in u. Floating
    # point (~50 objects); stored as integers in 2**-16 K.
    xs = p._tab_x
    b = p._knot_base[j]
    # knots T_b + k*h at u_k; node j (u = 0) is one of them, so a0 = T_j
    h = _T_HALF_STEPS / 2
    inv = 1.0 / dxj
    u0 = (xs[b] - x0) * inv
    u1 = (xs[b + 1] - x0) * inv
    u2 = (xs[b + 2] - x0) * inv
    u3 = (xs[b + 3] - x0) * inv
    f01 = h / (u1 - u0)
    f12 = h / (u2 - u1)
    f012 = (f12 - f01) / (u2 - u0)
    f0123 = ((h / (u3 - u2) - f12) / (u3 - u1) - f012) / (u3 - u0)
    a3 = f0123
    a2 = f012 - f0123 * (u0 + u1 + u2)
    a1 = f01 - f012 * (u0 + u1) + f0123 * (u0 * u1 + (u0 + u1) * u2)
    a0 = _T_LO + j * h
    c0 = _knot_correction(p, j)
    c1 = _knot_correction(p, j + 1)
    if c0 or c1:
        a0 += c0
        a1 += c1 - c0
    one = 1 << _ST
    # +2: the flooring shifts of u (+1 in the loop) and of the Horner steps lose ~2 units on average
    a0 = _round(a0 * one) + 2
    a2 = _round(a2 * one)
    a3 = _round(a3 * one)
    p._tab_a0[j] = a0
    p._tab_a1[j] = _round(a1 * one)
    p._tab_a2[j] = a2
    p._tab_a3[j] = a3
    p._coef_fits[j] = 1 if abs(a2) < (1 << 13) and abs(a3) < (1 << 13) else 0
    p._coef_tatr[j] = p._tatr


def _round(v):
    return int(v + 0.5) if v >= 0 else -int(0.5 - v)


def _knot_correction(p, j):
    # datasheet To (two-step, 11.2.2.9) minus the exact root T_j at the knot's x, in K. It grows
    # like KsTo^3*(T - Ta)^3: below 2e-5 K within 15 K of Ta, where it is left at 0.
    t = _T_LO + j * _T_HALF_STEPS / 2
    if -15 < t - p._ta < 15:
        return 0
    ta_tr = p._ta_tr
    tk = t + _ZERO_C
    x = (tk * tk * tk * tk - ta_tr) * (p._knot_d[j] / (1 << _QD))
    to = _to_from_x(p, x, ta_tr, p._corr)
    return (to - t) if to == to else 0


def calculate_to(params, frame, emissivity, tr, out):
    """Object temperatures (deg C) of the frame's subpage pixels into out[0..767] (list or
    array('f')); pixels of the other subpage are left alone. Datasheet 11.2.2; bad pixels are
    filled from their neighbours. Returns nothing; raises ValueError for a frame without data."""
    p = params
    c = _frame_scalars(p, frame, emissivity, tr)
    scales = _pixel_scales(p, c, frame) if _prepare_table(p, c) else None
    if scales is None:
        # values no working sensor delivers (gain word, emissivity*k_ta): all by the formulas
        slow = [i for i in range(_PIXELS) if _in_subpage(i, c.sp, c.chess)]
    else:
        slow = _pixels(p, frame, out, c.sp, c.chess, scales)
    if slow:
        cp_alpha_avg = p.tgc * (p.cpAlpha[0] + p.cpAlpha[1]) / 2
        for i in slow:
            out[i] = _pixel_reference(p, frame, c, p._corr, cp_alpha_avg, i)
    if p._bad:
        _fill_bad(p, out, c.sp, c.chess)


def _pixel_scales(p, c, frame):
    # Per-frame integers for V_IR of pixel i in 2**-12 counts (11.2.2.5):
    #   gain*raw - offset*(1 + kta*dTa)*(1 + kv*dVdd) + il_corr - TGC*cp
    # = raw*g - o*2**14 - o*cv[s] - o*kta_int*ct[s] + k[class]   (s: row/column parity)
    # with each product's scale chosen so that it stays below 2**30. None: use the float path.
    gain_raw = _s16(frame[_F_GAIN])
    if not 0 < p.gainEE < 16 * gain_raw or p.gainEE >= (1 << 15):
        return None
    # gain ratio (about 1 at the calibration resolution, 4 at 16 bit, 0.5 at 19 bit) in 2**-gs,
    # below 2**28; raw*g*2**14 = (raw*gh << (28 - gs)) + (raw*gl >> (gs - 14))
    gs = 28 - _bit_length(p.gainEE // gain_raw)
    g = (p.gainEE << gs) // gain_raw
    if p._kta_big or p._bits_o > 15:
        return None
    # (written for few float objects: each one is a heap allocation on MicroPython; measured
    # 12 -> 8 us per call on the unix port, 2.8 -> 1.9 KB of heap)
    kv_div = 1 << p._kv_scale
    d_v = c.d_v
    d_ta = c.d_ta
    kt_scale = 2.0 ** (_FV - p._kta_scale)
    kv_int = p._kv_int
    cv = [0.0] * 4
    ct = [0.0] * 4
    top_cv = 0
    top_ct = 0
    for s in range(4):
        kv_dv = kv_int[s] * d_v / kv_div
        v = kv_dv * (1 << _FV)
        cv[s] = v
        n = int(abs(v)) + 1
        if n > top_cv:
            top_cv = n
        v = d_ta * (1 + kv_dv) * kt_scale
        ct[s] = v
        n = int(abs(v)) + 1
        if n > top_ct:
            top_ct = n
    q2 = 29 - p._bits_o - _bit_length(top_cv)
    q3 = 29 - p._bits_okt - _bit_length(top_ct)
    if q2 < 0 or q3 < 0:
        return None
    for s in range(4):
        v = cv[s] * (1 << q2)
        cv[s] = int(v + 0.5) if v >= 0 else -int(0.5 - v)
        v = ct[s] * (1 << q3)
        ct[s] = int(v + 0.5) if v >= 0 else -int(0.5 - v)
    cvf = cv
    ctf = ct
    if c.other_mode:
        kk = []
        for cls in range(8):
            kk.append(_round((_il_corr(p, ((cls >> 2) << 5) | (cls & 3)) - c.tgc_cp) * (1 << _FV)))
    else:
        kk = [_round(-c.tgc_cp * (1 << _FV))] * 8
    for v in kk:
        if not -(1 << 29) < v < (1 << 29):
            return None
    return (g >> 14, g & 0x3FFF, 28 - gs, gs - 14, cvf, q2, ctf, q3, kk)


# The pixel loop, @micropython.viper: machine-word integers, no objects per pixel. Each To leaves as
# IEEE-754 single precision bits written straight into the output array('f') (two 16-bit halves,
# little-endian as on the ESP32 and x86), so a pixel allocates nothing. Returns -1 when the subpage
# is done, else (i << 9) | (kind << 8) | j: kind 0 = interval j needs _prepare_interval, then call
# again from pixel i; kind 1 = pixel i takes the float path, call again from i + 1 (both rare: the
# caller's loop in _pixels). Measured on the unix port (x86-64), `host bench`, whole calculate_to
# per subpage: 0.23-0.24 ms with the former @micropython.native loop (one boxed float per pixel;
# 0.40 ms as bytecode), 0.05-0.06 ms with this one; heap per subpage 17.4 -> 6.1 KB (28.6 -> 17.7 KB
# on a frame that builds cubics). Needs mpy-cross -march=<arch> when precompiled.
# Tried, no gain measured (loop 13.0-13.4 us either way): reading xs[j] once per pixel instead of
# twice, scalars stored biased instead of sign-extended. The float32 encoding costs ~2 us of the 13.
# Array reads: ptr16 is unsigned (offsets are sign-extended by hand); ptr32 is unsigned on 64-bit
# builds, so 32-bit values (all below 2**29 in magnitude) are sign-extended: ((v + 2**29) & (2**30 - 1)) - 2**29.
@micropython.viper
def _pixel_loop(bufs, ints, start: int, j: int) -> int:
    frame = ptr16(bufs[0])
    dst = ptr16(bufs[1])
    offs = ptr16(bufs[2])
    ktas = ptr16(bufs[3])
    ihs = ptr16(bufs[4])
    ils = ptr16(bufs[5])
    xs = ptr32(bufs[6])
    a0s = ptr32(bufs[7])
    a1s = ptr32(bufs[8])
    a2s = ptr32(bufs[9])
    a3s = ptr32(bufs[10])
    rs = ptr32(bufs[11])
    ks = ptr8(bufs[12])
    ready = ptr8(bufs[13])
    c = ptr32(ints)
    gh = c[0]
    gl = c[1]
    gls = c[2]
    grs = c[3]
    q2 = c[4]
    q3 = c[5]
    sh_ll = c[6]
    sh_mid = c[7]
    sh_hh = c[8]
    x_lo = ((c[9] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
    x_hi = ((c[10] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
    sp = c[11]
    chess = c[12]
    i = start
    while i < 768:
        row = i >> 5
        if chess:
            if ((row + i) & 1) != sp:
                i += 1
                continue
        elif (row & 1) != sp:
            i = (row + 1) << 5
            continue
        raw = frame[i]
        if raw > 32767:
            raw -= 65536
        o = offs[i]
        if o > 32767:
            o -= 65536
        kt = ktas[i]
        if kt > 32767:
            kt -= 65536
        s = ((row & 1) << 1) | (i & 1)
        cv = ((c[13 + s] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
        ct = ((c[17 + s] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
        kk = ((c[21 + (((row & 1) << 2) | (i & 3))] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
        v = (((raw * gh) << gls) + ((raw * gl) >> grs) - (o << 14) - ((o * cv) >> q2)
             - ((o * kt * ct) >> q3) + kk)
        # x = V/alpha_comp = V14 * I >> shift, from 14-bit halves of V14 and I
        vh = v >> 14
        vl = v & 0x3FFF
        ih = ihs[i]
        il = ils[i]
        x = ((vh * ih) << sh_hh) + ((vh * il + vl * ih) >> sh_mid) + ((vl * il) >> sh_ll)
        if x < x_lo or x >= x_hi:
            return (i << 9) | 256 | j
        # knot interval j with xs[j] <= x < xs[j+1]; neighbours are usually close
        while x < ((xs[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000:
            j -= 1
        while x >= ((xs[j + 1] + 0x20000000) & 0x3FFFFFFF) - 0x20000000:
            j += 1
        r = ready[j]
        if r != 1:
            if r == 0:
                return (i << 9) | j
            return (i << 9) | 256 | j
        dx = x - (((xs[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000)
        rr = rs[j]
        k = ks[j]
        u = (((dx >> 11) * rr) >> (k - 11)) + (((dx & 2047) * rr) >> k) + 1
        w = (((a2s[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000
             + (((((a3s[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000) * u) >> 16))
        w = (((a1s[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000) + ((w * u) >> 16)
        t = ((((a0s[j] + 0x20000000) & 0x3FFFFFFF) - 0x20000000)
             + ((w * (u >> 8)) >> 8) + ((w * (u & 255)) >> 16))
        # t (2**-16 deg C) as a float32: sign, exponent e (bias 127), 24-bit mantissa m
        sign = 0
        if t < 0:
            sign = 256
            t = -t
        if t == 0:
            dst[2 * i] = 0
            dst[2 * i + 1] = 0
        else:
            e = 134                     # t * 2**-16 = m * 2**(e - 150) with m = t
            while t < 0x800000:
                t <<= 1
                e -= 1
            if t >= 0x1000000:          # 256 C and more: round to nearest, ties to even
                n = 0
                while (t >> n) >= 0x1000000:
                    n += 1
                rem = t & ((1 << n) - 1)
                half = 1 << (n - 1)
                t >>= n
                e += n
                if rem > half or (rem == half and (t & 1)):
                    t += 1
                    if t == 0x1000000:
                        t >>= 1
                        e += 1
            dst[2 * i] = t & 0xFFFF
            dst[2 * i + 1] = ((sign | e) << 7) | ((t >> 16) & 0x7F)
        i += 1
    return -1


def _pixels(p, frame, out, sp, chess, scales):
    # The subpage's pixels by the integer path into out; returns the pixels left to the float
    # formulas (None if none). Runs _pixel_loop, preparing intervals and collecting float-path
    # pixels whenever it stops for one.
    gh, gl, gls, grs, cvf, q2, ctf, q3, kk = scales
    xs = p._tab_x
    hi = p._tab_hi
    x_lo = xs[1]
    x_hi = xs[hi - 3] if hi >= 5 else x_lo
    sh_ll = p._shift
    if _MPY:
        # filled in place, no list per call: calculate_to 32 -> 28 us, _pixels 1 KB -> 0 B of heap
        ints = p._loop_ints
        ints[0] = gh
        ints[1] = gl
        ints[2] = gls
        ints[3] = grs
        ints[4] = q2
        ints[5] = q3
        ints[6] = sh_ll
        ints[7] = sh_ll - 14
        ints[8] = 28 - sh_ll
        ints[9] = x_lo
        ints[10] = x_hi
        ints[11] = sp
        ints[12] = chess
        for n in range(4):
            ints[13 + n] = cvf[n]
            ints[17 + n] = ctf[n]
        for n in range(8):
            ints[21 + n] = kk[n]
        if frame is p._words_in or _item_bytes(frame) == 2:
            p._words_in = words = frame
        else:
            words = array("H", frame)
        dst = out if out is p._f32_out or _is_f32(p, out) else array("f", bytes(4 * _PIXELS))
    else:
        # plain ints: the range-checking test sees every intermediate
        ints = [gh, gl, gls, grs, q2, q3, sh_ll, sh_ll - 14, 28 - sh_ll, x_lo, x_hi, sp,
                chess] + cvf + ctf + kk
        words = frame
        dst = array("H", bytes(4 * _PIXELS))     # float32 halves, decoded after the loop
        p._loop_bufs = [None, None, p.offset, p._kta_int, p._inv_hi, p._inv_lo, p._tab_x,
                        p._tab_a0, p._tab_a1, p._tab_a2, p._tab_a3, p._tab_r, p._tab_k,
                        p._tab_ready]
    bufs = p._loop_bufs
    bufs[0] = words
    bufs[1] = dst
    slow = None
    i = 0
    j = 1
    while True:
        r = _pixel_loop(bufs, ints, i, j)
        if r < 0:
            break
        i = r >> 9
        j = r & 255
        if r & 256:
            if slow is None:
                slow = []
            slow.append(i)
            i += 1
        else:
            _prepare_interval(p, j)
    bufs[0] = bufs[1] = None
    if dst is not out:
        if not _MPY:
            dst = _struct.unpack("<768f", _struct.pack("<1536H", *dst))
        for i in range(_PIXELS):
            if _in_subpage(i, sp, chess):
                out[i] = dst[i]
    return slow


def _item_bytes(buf):
    try:
        return len(bytes(memoryview(buf)[:1]))
    except TypeError:
        return 0


def _is_f32(p, out):
    # MicroPython arrays do not tell their typecode: out is array('f') if it takes a float and
    # holds it as the 4 bytes of a little-endian float32 (the pixel loop writes those bits)
    if _item_bytes(out) != 4 or len(out) < _PIXELS:
        return False
    old = out[0]
    try:
        out[0] = 0.5
    except TypeError:
        return False
    ok = bytes(memoryview(out)[:1]) == b"\x00\x00\x00\x3f"
    out[0] = old
    if ok:
        p._f32_out = out
    return ok


# Big-endian bus words into the frame. @micropython.viper measured on the unix port: 74 us as
# bytecode, 2 us as viper per 832 words, no heap either way. Values stay below 2**16, so the
# machine-word arithmetic of viper and Python's integers agree.
@micropython.viper
def _unpack_words(dest, raw, count: int):
    d = ptr16(dest)
    s = ptr8(raw)
    i = 0
    while i < count:
        d[i] = (s[2 * i] << 8) | s[2 * i + 1]
        i += 1


class MLX90640:
    """The sensor on an I2C bus. `i2c` needs readfrom_mem_into(addr, memaddr, buf, addrsize=16) and
    writeto_mem(addr, memaddr, buf, addrsize=16) (machine.I2C semantics: big-endian words, OSError
    on NACK/timeout). Bus and data faults surface as SensorError after bounded retries."""

    RETRIES = 3          # attempts per subpage before SensorError
    POLL_MS = 2          # status polling interval while waiting for new data

    def __init__(self, i2c, address=0x33):
        self._i2c = i2c
        self._addr = address
        self._raw = bytearray(2 * _WORDS)       # one bus transfer of 832 words (EEPROM or RAM)
        self._word = bytearray(2)
        self.frame = array("H", bytes(2 * 834))
        self.ta = None
        self.vdd = None
        self._read_words(_EEPROM_START, _WORDS, "EEPROM")
        ee = array("H", bytes(2 * _WORDS))
        self._unpack(ee, _WORDS)
        self.serial = "%04x%04x%04x" % (ee[7], ee[8], ee[9])
        try:
            self.params = extract_params(ee)
        except ValueError as exc:
            raise SensorError("device 0x%02x: EEPROM is not an MLX90640's: %s" % (address, exc))
        self._ctrl = self._read_reg(_REG_CONTROL)

    # --- bus primitives: every OSError becomes SensorError with what was being done ---
    def _read_words(self, reg, count, what):
        buf = self._raw if count == _WORDS else memoryview(self._raw)[:2 * count]
        try:
            self._i2c.readfrom_mem_into(self._addr, reg, buf, addrsize=16)
        except OSError as exc:
            raise SensorError("I2C read of %s (0x%04X) from 0x%02x failed: %s" % (what, reg, self._addr, exc))

    def _unpack(self, dest, count):
        _unpack_words(dest, self._raw, count)

    def _read_reg(self, reg):
        try:
            self._i2c.readfrom_mem_into(self._addr, reg, self._word, addrsize=16)
        except OSError as exc:
            raise SensorError("I2C read of register 0x%04X from 0x%02x failed: %s" % (reg, self._addr, exc))
        return (self._word[0] << 8) | self._word[1]

    def _write_reg(self, reg, value):
        self._word[0] = value >> 8
        self._word[1] = value & 0xFF
        try:
            self._i2c.writeto_mem(self._addr, reg, self._word, addrsize=16)
        except OSError as exc:
            raise SensorError("I2C write of register 0x%04X on 0x%02x failed: %s" % (reg, self._addr, exc))

    def _set_ctrl(self, mask, bits):
        # read-modify-write of control register 1 (datasheet 8.2.2.1), keeping the other fields
        value = (self._read_reg(_REG_CONTROL) & ~mask & 0xFFFF) | bits
        self._write_reg(_REG_CONTROL, value)
        self._ctrl = value

    # --- settings ---
    @property
    def refresh_rate(self):
        return _REFRESH_HZ[(self._read_reg(_REG_CONTROL) >> _CTRL_RATE_SHIFT) & 7]

    @refresh_rate.setter
    def refresh_rate(self, hz):
        for code in range(8):
            if _REFRESH_HZ[code] == hz:
                self._set_ctrl(7 << _CTRL_RATE_SHIFT, code << _CTRL_RATE_SHIFT)
                return
        raise ValueError("refresh rate %r Hz not one of 0.5, 1, 2, 4, 8, 16, 32, 64" % (hz,))

    @property
    def resolution(self):
        return 16 + ((self._read_reg(_REG_CONTROL) >> _CTRL_RES_SHIFT) & 3)

    @resolution.setter
    def resolution(self, bits):
        if bits not in (16, 17, 18, 19):
            raise ValueError("resolution %r bits not one of 16, 17, 18, 19" % (bits,))
        self._set_ctrl(3 << _CTRL_RES_SHIFT, (bits - 16) << _CTRL_RES_SHIFT)

    @property
    def pattern(self):
        return "chess" if self._read_reg(_REG_CONTROL) & _CTRL_CHESS else "interleaved"

    @pattern.setter
    def pattern(self, name):
        if name == "chess":
            self._set_ctrl(_CTRL_CHESS, _CTRL_CHESS)
        elif name == "interleaved":
            self._set_ctrl(_CTRL_CHESS, 0)
        else:
            raise ValueError("pattern %r not 'chess' or 'interleaved'" % (name,))

    # --- data ---
    def read_subpage(self, timeout_ms=None):
        """Wait for the next subpage and read it into self.frame (834 words, Melexis frameData
        layout). Datasheet 10 / figure "data acquisition": poll status bit 3 (new data), read RAM,
        clear the flag by writing 0x0030, check the subpage (status bits 2..0) did not change during
        the read, validate the words. Bad reads are repeated; SensorError after RETRIES attempts."""
        if timeout_ms is None:
            # two subpage periods (a subpage is measured every 1/rate s) plus 100 ms of slack
            rate = _REFRESH_HZ[(self._ctrl >> _CTRL_RATE_SHIFT) & 7]
            timeout_ms = int(2000 / rate) + 100
        reason = "no attempt"
        for _ in range(self.RETRIES):
            try:
                reason = self._attempt(timeout_ms)
            except SensorError as exc:
                reason = str(exc)
            if reason is None:
                return self.frame
        raise SensorError("MLX90640 at 0x%02x: no valid subpage after %d attempts: %s"
                          % (self._addr, self.RETRIES, reason))

    def _attempt(self, timeout_ms):
        start = _ticks_ms()
        while True:
            status = self._read_reg(_REG_STATUS)
            if status & _STATUS_NEW_DATA:
                break
            if _ticks_diff(_ticks_ms(), start) > timeout_ms:
                return "no new data within %d ms (status 0x%04X)" % (timeout_ms, status)
            _sleep_ms(self.POLL_MS)
        subpage = status & 1
        self._read_words(_RAM_START, _WORDS, "RAM")
        after = self._read_reg(_REG_STATUS)
        self._write_reg(_REG_STATUS, _STATUS_CLEAR)
        if (after & 1) != subpage:
            # with overwrite enabled the next measurement lands in RAM when it is ready
            return ("subpage changed during the read (status 0x%04X then 0x%04X): the next "
                    "measurement overwrote RAM; the bus is too slow for the refresh rate"
                    % (status, after))
        cleared = self._read_reg(_REG_STATUS)
        if cleared & _STATUS_NEW_DATA and (cleared & 1) == subpage:
            return "new-data flag stays set after clearing it (status 0x%04X): stuck" % cleared
        ctrl = self._read_reg(_REG_CONTROL)
        if ctrl != self._ctrl:
            # the sensor lost its settings (power cycle/reset): restore them, this frame is suspect
            self._write_reg(_REG_CONTROL, self._ctrl)
            return "control register 0x%04X instead of 0x%04X (sensor reset?); restored" % (ctrl, self._ctrl)
        frame = self.frame
        self._unpack(frame, _WORDS)
        frame[_F_CONTROL] = ctrl
        frame[_F_SUBPAGE] = subpage
        return self._validate(frame, subpage, (ctrl & _CTRL_CHESS) != 0)

    def _validate(self, frame, subpage, chess):
        # Datasheet: 0x7FFF marks RAM the sensor has not written. Auxiliary words the calculation
        # uses must hold data, and so must the subpage's own pixels (checked at each row start).
        for idx in (_F_TA_VBE, _F_CP_SP0, _F_GAIN, _F_TA_PTAT, _F_CP_SP1, _F_VDD_PIX):
            if frame[idx] == 0x7FFF:
                return "auxiliary word 0x%04X reads 0x7FFF (no data)" % (_RAM_START + idx)
        if frame[_F_GAIN] == 0:
            return "gain word 0x070A reads 0"
        for row in range(24):
            i = row << 5
            if chess:
                i += (row + subpage) & 1
            elif (row & 1) != subpage:
                continue
            if frame[i] == 0x7FFF:
                return "pixel word 0x%04X of subpage %d reads 0x7FFF (no data)" % (_RAM_START + i, subpage)
        p = self.params
        try:
            vdd = get_vdd(p, frame)
            ta = _ta(p, frame, vdd)
        except ValueError as exc:
            return str(exc)
        # datasheet operating range: Vdd 3.3 V +-0.3 V (absolute max 3.6 V), Ta -40..85 deg C
        if not 2.5 < vdd < 4.0:
            return "supply voltage %.3f V outside any working sensor's range" % vdd
        if not -60.0 < ta < 130.0:
            return "ambient temperature %.1f C outside any working sensor's range" % ta
        self.vdd = vdd
        self.ta = ta
        return None

    def temperatures(self, out, emissivity=1.0, tr=None):
        """Read one subpage and convert it into out (768 deg C values; the other subpage's pixels
        keep their previous values). tr defaults to Ta - 8 (datasheet: sensor in open air).
        Returns the subpage number."""
        frame = self.read_subpage()
        if tr is None:
            tr = self.ta - 8
        calculate_to(self.params, frame, emissivity, tr, out)
        return frame[_F_SUBPAGE]
