"""Forward model of the MLX90640: scene (object temperatures, ambient Ta, Vdd) -> RAM words.

It inverts the datasheet's calculation chain (Rev 12, section 11.2) step by step, so that a driver
that implements the chain recovers the scene:

    Vdd word    Vdd = (rc * word - Vdd25) / KVdd + 3.3, rc = 2^resEE / 2^res       (11.2.2.2)
    PTAT, VBE   VPTATart = VPTAT / (VPTAT * alphaPTAT + VBE) * 2^18,
                Ta = (VPTATart / (1 + KvPTAT dV) - VPTAT25) / KtPTAT + 25            (11.2.2.3)
    gain word   Kgain = GAIN_EE / word                                               (11.2.2.4)
    CP words    per subpage, minus their offset with CP Kta/Kv (+ ilChess C1 in the other mode)
    pixels      pix * Kgain - offset (1 + Kta dTa)(1 + Kv dV), ilChess correction in the mode
                the unit was not calibrated in, minus TGC * CP, then To via KsTa, Sx and the
                KsTo range of the first estimate                                      (11.2.2.5-9)

What is not in the datasheet but in the real dumps (shared/mlx90640): VBE and PTAT do not scale
with the ADC resolution; the gain, Vdd, CP and pixel words scale with 2^(res - resEE), and the real
gain word sits within about 1.5 % of GAIN_EE. The remaining auxiliary words are copied from a real
frame (several of them legitimately hold 0x7FFF; the Melexis library does not validate those).

Everything the forward model encodes is decoded back with the words actually written (the Ta and
Vdd a driver will compute, the Kgain of the rounded gain word, the CP of the rounded CP word), so
the only error left is the rounding of each pixel word: see `quantisation_step_c`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from host.virtual.sensor_eeprom import PIXELS, Calibration, pixel_rows_cols, subpage_pattern

KELVIN = 273.15
REFRESH_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # control register bits 7..9
RESOLUTION_BITS = (16, 17, 18, 19)  # control register bits 10..11

# Datasheet front page: NETD 0.1 K RMS at 1 Hz refresh; noise power grows with the refresh rate
# (shorter integration), i.e. NETD ~ 0.1 K * sqrt(rate / 1 Hz).
NETD_1HZ_K = 0.1

# Auxiliary rows 24..25 (RAM 0x0700..0x073F) of Melexis' example frame 0 (18-bit, chess). The words
# the calculation uses are replaced; the others keep what a real sensor puts there.
AUX_TEMPLATE = (
    19962, 6742, 32767, 6742, 32767, 6741, 32767, 6741, 65465, 52743, 5508, 54867, 65529, 9, 0,
    65533, 6518, 1021, 663, 32767, 6518, 1021, 663, 32767, 1, 1, 1, 1, 1, 1, 1, 1, 1685, 32767,
    6742, 32767, 6742, 32767, 6741, 32767, 65469, 62842, 52978, 55520, 9, 65533, 65532, 0, 237, 70,
    10966, 53, 238, 70, 10966, 53, 1, 1, 1, 1, 1, 1, 1, 1,
)
# RAM word indices (address - 0x0400) the calculation reads
VBE_WORD, CP_SP0_WORD, GAIN_WORD, PTAT_WORD, CP_SP1_WORD, VDD_WORD = 768, 776, 778, 800, 808, 810
USED_AUX_WORDS = (VBE_WORD, CP_SP0_WORD, GAIN_WORD, PTAT_WORD, CP_SP1_WORD, VDD_WORD)

_ROW, _COL = pixel_rows_cols()
_IL_PATTERN = _ROW % 2
_P = np.arange(PIXELS)
# Melexis' conversion pattern for the interleaved/chess correction, integer arithmetic as written.
_CONVERSION_PATTERN = (((_P + 2) // 4 - (_P + 3) // 4 + (_P + 1) // 4 - _P // 4)
                       * (1 - 2 * _IL_PATTERN))


def to_signed16(words: np.ndarray) -> np.ndarray:
    words = np.asarray(words, dtype=np.int64)
    return np.where(words > 32767, words - 65536, words)


@dataclass(frozen=True)
class AuxWords:
    """The auxiliary words of one measurement and what a driver decodes from them."""

    vdd_word: int
    vbe: int
    vptat: int
    gain_word: int
    cp_words: tuple[int, int]
    vdd: float  # decoded, V
    ta: float  # decoded, deg C
    kgain: float
    cp_ir: tuple[float, float]  # decoded CP signal per subpage (after offset removal)


@dataclass(frozen=True)
class UnitPhysics:
    """What a unit has beyond its EEPROM: drawn per unit from the emulator's seed."""

    vbe25: float  # VBE word at 25 C
    vbe_tc: float  # relative VBE change per K (a junction: about -0.3 %/K)
    gain_offset: float  # real ADC gain vs GAIN_EE, relative
    gain_tc: float  # relative gain change per K of Ta
    broken_raw: np.ndarray  # what a broken pixel outputs (stuck ADC value), per pixel
    pixel_error_map: np.ndarray  # unit-normal per-pixel offset error pattern

    @classmethod
    def draw(cls, seed: int) -> UnitPhysics:
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5E50])
        return cls(
            vbe25=rng.uniform(18800, 20300), vbe_tc=rng.normal(-0.0031, 0.0002),
            gain_offset=rng.normal(0.0, 0.006), gain_tc=rng.normal(-0.0004, 0.0003),
            broken_raw=rng.integers(-3000, 3000, PIXELS).astype(np.float64),
            pixel_error_map=rng.standard_normal(PIXELS),
        )


class ForwardModel:
    """Scene -> words for one unit (its Calibration and UnitPhysics), and the reference decoder."""

    def __init__(self, cal: Calibration, physics: UnitPhysics) -> None:
        self.cal = cal
        self.physics = physics
        ks = cal.ks_to
        ct = cal.ct
        # alphaCorrR per KsTo range (datasheet 11.2.2.9, as the Melexis 2023 library)
        corr2 = 1 + ks[1] * (ct[2] - ct[1])
        self._alpha_corr = np.array([1 / (1 + ks[0] * (ct[1] - ct[0])), 1.0, corr2,
                                     corr2 * (1 + ks[2] * (ct[3] - ct[2]))])
        self._ks = np.array(ks)
        self._ct = np.array(ct)
        self.bad = np.zeros(PIXELS, dtype=bool)
        self.bad[list(cal.broken)] = True
        self._noise_sigma_k1 = self._counts_per_kelvin_25c()

    # ---------------------------------------------------------------- auxiliary words

    def resolution_corr(self, resolution_bits: int) -> float:
        return 2.0 ** self.cal.resolution_ee / 2.0 ** (resolution_bits - 16)

    def decode_vdd(self, vdd_word: int, resolution_bits: int) -> float:
        cal = self.cal
        return (self.resolution_corr(resolution_bits) * vdd_word - cal.vdd25) / cal.kvdd + 3.3

    def decode_ta(self, vptat: int, vbe: int, vdd: float) -> float:
        cal = self.cal
        ptat_art = vptat / (vptat * cal.alpha_ptat + vbe) * 2.0 ** 18
        return (ptat_art / (1 + cal.kv_ptat * (vdd - 3.3)) - cal.vptat25) / cal.kt_ptat + 25.0

    def _cp_offsets(self, chess: bool) -> np.ndarray:
        cal = self.cal
        cp = np.array(cal.cp_offset)
        if chess != cal.calibration_chess:
            cp[1] += cal.il_chess[0]
        return cp

    def gain_word(self, ambient_c: float, resolution_bits: int) -> int:
        """The ADC gain scales with the resolution and drifts a little with Ta."""
        adc_gain = (2.0 ** (resolution_bits - 16 - self.cal.resolution_ee)
                    * (1 + self.physics.gain_offset + self.physics.gain_tc * (ambient_c - 25.0)))
        return int(round(self.cal.gain_ee * adc_gain))

    def aux(self, ambient_c: float, vdd: float, resolution_bits: int, chess: bool) -> AuxWords:
        cal = self.cal
        rc = self.resolution_corr(resolution_bits)
        vdd_word = int(np.clip(round((cal.kvdd * (vdd - 3.3) + cal.vdd25) / rc), -32768, 32766))
        vdd_d = self.decode_vdd(vdd_word, resolution_bits)
        # PTAT/VBE: the pair of integers whose decoded Ta is closest to the ambient
        target = ((ambient_c - 25.0) * cal.kt_ptat + cal.vptat25) * (1 + cal.kv_ptat * (vdd_d - 3.3))
        ratio = target / 2.0 ** 18
        vbe_phys = self.physics.vbe25 * (1 + self.physics.vbe_tc * (ambient_c - 25.0))
        vbe = np.round(vbe_phys) + np.arange(-16, 17)
        vptat = np.round(vbe * ratio / (1 - cal.alpha_ptat * ratio))
        ta_all = (vptat / (vptat * cal.alpha_ptat + vbe) * 2.0 ** 18 / (1 + cal.kv_ptat * (vdd_d - 3.3))
                  - cal.vptat25) / cal.kt_ptat + 25.0
        best = int(np.argmin(np.abs(ta_all - ambient_c)))
        vbe_w, vptat_w = int(vbe[best]), int(vptat[best])
        ta_d = self.decode_ta(vptat_w, vbe_w, vdd_d)
        gain_word = self.gain_word(ambient_c, resolution_bits)
        kgain = cal.gain_ee / gain_word
        # CP: its offset drifts with Ta/Vdd like a pixel's; it sees no scene
        cp_off = self._cp_offsets(chess) * (1 + cal.cp_kta * (ta_d - 25.0)) * (1 + cal.cp_kv * (vdd_d - 3.3))
        cp_words = np.round(cp_off / kgain).astype(np.int64)
        cp_ir = cp_words * kgain - cp_off
        return AuxWords(vdd_word=vdd_word, vbe=vbe_w, vptat=vptat_w, gain_word=gain_word,
                        cp_words=(int(cp_words[0]), int(cp_words[1])), vdd=vdd_d, ta=ta_d,
                        kgain=kgain, cp_ir=(float(cp_ir[0]), float(cp_ir[1])))

    def aux_row_words(self, aux: AuxWords) -> np.ndarray:
        """RAM words 768..831 (rows 24, 25) for these auxiliary values."""
        words = np.array(AUX_TEMPLATE, dtype=np.int64)
        base = 768
        words[VBE_WORD - base] = aux.vbe
        words[PTAT_WORD - base] = aux.vptat
        words[GAIN_WORD - base] = aux.gain_word
        words[VDD_WORD - base] = aux.vdd_word
        words[CP_SP0_WORD - base] = aux.cp_words[0]
        words[CP_SP1_WORD - base] = aux.cp_words[1]
        return words & 0xFFFF

    # ---------------------------------------------------------------- pixels

    def _alpha_comp(self, ta: float) -> np.ndarray:
        return self.cal.alpha * (1 + self.cal.ks_ta * (ta - 25.0))

    def _ksto_range(self, to_c: np.ndarray) -> np.ndarray:
        """KsTo range of a temperature: 0 below ct[1] (0 C), 1 up to ct[2], 2 up to ct[3], else 3."""
        return np.searchsorted(self._ct[1:], to_c, side="right")

    @np.errstate(invalid="ignore")  # stuck broken pixels can decode below absolute zero
    def _to_from_ir(self, ir: np.ndarray, alpha_comp: np.ndarray,
                    ta_tr4: float) -> tuple[np.ndarray, np.ndarray]:
        """Datasheet 11.2.2.9: first estimate with KsTo range 1, then the range's own constants.
        Returns (To, first estimate)."""
        ks1 = self._ks[1]
        sx = ks1 * np.sqrt(np.sqrt(alpha_comp ** 3 * (ir + alpha_comp * ta_tr4)))
        est = np.sqrt(np.sqrt(ir / (alpha_comp * (1 - ks1 * KELVIN) + sx) + ta_tr4)) - KELVIN
        rng = self._ksto_range(est)
        denom = alpha_comp * self._alpha_corr[rng] * (1 + self._ks[rng] * (est - self._ct[rng]))
        return np.sqrt(np.sqrt(ir / denom + ta_tr4)) - KELVIN, est

    def ir_for_to(self, to_c: np.ndarray, ta: float) -> np.ndarray:
        """Invert _to_from_ir at emissivity 1: the compensated IR signal that reads as to_c."""
        alpha_comp = self._alpha_comp(ta)
        ta4 = (ta + KELVIN) ** 4
        t4 = (np.asarray(to_c, dtype=np.float64) + KELVIN) ** 4
        ir = (t4 - ta4) * alpha_comp * (1 + self._ks[1] * to_c)
        # Fixed point on the denominator: it depends on ir only through the KsTo terms (~1e-4/K),
        # so each step gains about four decimal digits.
        for _ in range(6):
            _, est = self._to_from_ir(ir, alpha_comp, ta4)
            rng = self._ksto_range(est)
            ir = ((t4 - ta4) * alpha_comp * self._alpha_corr[rng]
                  * (1 + self._ks[rng] * (est - self._ct[rng])))
        return ir

    def _il_correction(self, chess: bool) -> np.ndarray:
        cal = self.cal
        if chess == cal.calibration_chess:
            return np.zeros(PIXELS)
        return cal.il_chess[2] * (2 * _IL_PATTERN - 1) - cal.il_chess[1] * _CONVERSION_PATTERN

    def pixel_gain_values(self, to_c: np.ndarray, aux: AuxWords, subpage: int, chess: bool) -> np.ndarray:
        """Gain-normalised pixel values (pix * Kgain) that decode to to_c in `subpage`."""
        cal = self.cal
        ir = self.ir_for_to(to_c, aux.ta)
        pix_os = ir + cal.tgc * aux.cp_ir[subpage] - self._il_correction(chess)
        return pix_os + cal.offset * (1 + cal.kta * (aux.ta - 25.0)) * (1 + cal.kv * (aux.vdd - 3.3))

    def pixel_words(self, to_c: np.ndarray, aux: AuxWords, subpage: int, chess: bool,
                    noise_gain_units: np.ndarray | None = None) -> np.ndarray:
        """All 768 pixel words as measured during `subpage` (the caller keeps that subpage's)."""
        value = self.pixel_gain_values(to_c, aux, subpage, chess)
        if noise_gain_units is not None:
            value = value + noise_gain_units
        raw = np.round(value / aux.kgain)
        raw = np.where(self.bad, self.physics.broken_raw * (aux.gain_word / self.cal.gain_ee), raw)
        # The ADC saturates; 0x7FFF is kept for "no valid data".
        return np.clip(np.round(raw), -32768, 32766).astype(np.int64) & 0xFFFF

    def _counts_per_kelvin_25c(self) -> np.ndarray:
        """d(gain-normalised counts)/dTo at To = Ta = 25 C: converts NETD to count noise."""
        t = np.full(PIXELS, 25.0)
        return (self.ir_for_to(t + 0.05, 25.0) - self.ir_for_to(t - 0.05, 25.0)) / 0.1

    def noise_sigma_gain_units(self, netd_k: float) -> np.ndarray:
        """Per-pixel noise (gain-normalised counts) for a temperature-equivalent RMS at 25 C."""
        return netd_k * self._noise_sigma_k1

    def quantisation_step_c(self, to_c: np.ndarray, ambient_c: float, resolution_bits: int) -> np.ndarray:
        """Temperature step of one raw LSB at to_c (the resolution limit of integer words)."""
        gain_lsb = self.cal.gain_ee / self.gain_word(ambient_c, resolution_bits)  # Kgain
        t = np.broadcast_to(np.asarray(to_c, dtype=np.float64), (PIXELS,))
        slope = (self.ir_for_to(t + 0.05, ambient_c) - self.ir_for_to(t - 0.05, ambient_c)) / 0.1
        return gain_lsb / slope

    # ---------------------------------------------------------------- reference decoder

    def decode_frame(self, frame, emissivity: float = 1.0, tr: float | None = None
                     ) -> tuple[float, float, np.ndarray]:
        """Independent float64 datasheet calculation of one 834-word frame: (Ta, Vdd, To[768]).
        Pixels not in the frame's subpage are NaN; bad pixels are NaN too (no neighbour fill)."""
        cal = self.cal
        words = to_signed16(np.asarray(frame[:832]))
        control, subpage = int(frame[832]), int(frame[833])
        resolution_bits = 16 + ((control >> 10) & 3)
        chess = bool(control & 0x1000)
        vdd = self.decode_vdd(int(words[VDD_WORD]), resolution_bits)
        ta = self.decode_ta(int(words[PTAT_WORD]), int(words[VBE_WORD]), vdd)
        kgain = cal.gain_ee / words[GAIN_WORD]
        cp_off = self._cp_offsets(chess) * (1 + cal.cp_kta * (ta - 25.0)) * (1 + cal.cp_kv * (vdd - 3.3))
        cp_ir = np.array([words[CP_SP0_WORD], words[CP_SP1_WORD]]) * kgain - cp_off
        pix_os = (words[:PIXELS] * kgain
                  - cal.offset * (1 + cal.kta * (ta - 25.0)) * (1 + cal.kv * (vdd - 3.3))
                  + self._il_correction(chess))
        ir = (pix_os - cal.tgc * cp_ir[subpage]) / emissivity
        tr = ta - 8.0 if tr is None else tr
        tr4 = (tr + KELVIN) ** 4
        ta_tr4 = tr4 - (tr4 - (ta + KELVIN) ** 4) / emissivity
        to, _ = self._to_from_ir(ir, self._alpha_comp(ta), ta_tr4)
        mask = (subpage_pattern(chess) != subpage) | self.bad
        return ta, vdd, np.where(mask, np.nan, to)
