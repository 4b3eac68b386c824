"""Calibration fitting on synthetic subpage images with a known per-unit error."""

from __future__ import annotations

import numpy as np
import pytest

from host import calib_fit as cf

ROWS, COLS = 24, 32


class SyntheticUnit:
    """A unit whose raw reading is gain * true + offset + pixel_offset + noise, read as alternating
    chess-pattern subpages (datasheet 10.3: subpage 0 = pixels with (row + col) even)."""

    def __init__(self, seed: int, offset_c: float, gain: float, pixel_sigma_c: float = 0.3, noise_c: float = 0.2):
        self.rng = np.random.default_rng(seed)
        self.offset_c, self.gain, self.noise_c = offset_c, gain, noise_c
        self.pixel_offset = self.rng.normal(0.0, pixel_sigma_c, (ROWS, COLS))
        r, c = np.mgrid[0:ROWS, 0:COLS]
        self.subpage_mask = [(r + c) % 2 == 0, (r + c) % 2 == 1]

    def frames(self, scene, n: int, ramp_c: float = 0.0) -> np.ndarray:
        out = np.full((n, ROWS, COLS), np.nan)
        for i in range(n):
            true = scene + ramp_c * i / max(1, n - 1)
            raw = self.gain * true + self.offset_c + self.pixel_offset + self.rng.normal(0, self.noise_c, true.shape)
            m = self.subpage_mask[i % 2]
            out[i][m] = raw[m]
        return out


def scene_with_blackbody(temp_c: float, col: float, row: float, size: float, ambient_c: float = 25.0) -> np.ndarray:
    """Ambient with a square blackbody whose edges cover pixels partly (area-weighted)."""
    scene = np.full((ROWS, COLS), ambient_c)
    for r in range(ROWS):
        for c in range(COLS):
            cover_x = max(0.0, min(c + 1, col + size) - max(c, col))
            cover_y = max(0.0, min(r + 1, row + size) - max(r, row))
            frac = cover_x * cover_y
            scene[r, c] = ambient_c + frac * (temp_c - ambient_c)
    return scene


def test_finder_locates_fully_covered_square():
    scene = scene_with_blackbody(38.0, 12.5, 8.5, 5.0)  # fully covers cols 13..16, rows 9..12
    region = cf.find_blackbody(scene)
    assert (region.col, region.row, region.size) == (14, 10, 2)  # 4x4 less the rim


def test_finder_ignores_single_hot_pixel_and_refuses_tiny_source():
    scene = scene_with_blackbody(38.0, 20.3, 5.3, 1.4)  # covers no pixel fully
    scene[2, 2] = 60.0  # a bad / hot pixel elsewhere
    with pytest.raises(cf.CalibrationRefused, match="too small"):
        cf.find_blackbody(scene, expected_c=38.0)
    big = scene_with_blackbody(38.0, 3.0, 12.0, 3.0)
    big[2, 2] = 60.0
    assert cf.find_blackbody(big, expected_c=38.0) == cf.Region(3, 12, 3)


def test_finder_refuses_when_nothing_warm():
    with pytest.raises(cf.CalibrationRefused, match="no blackbody found"):
        cf.find_blackbody(np.full((ROWS, COLS), 25.0) + np.random.default_rng(1).normal(0, 0.2, (ROWS, COLS)))


@pytest.mark.parametrize("seed", range(6))
def test_two_references_check_within_0_2(seed):
    rng = np.random.default_rng(100 + seed)
    unit = SyntheticUnit(seed, offset_c=rng.uniform(-2, 2), gain=rng.uniform(0.95, 1.05))
    place = (11.0, 7.0, 6.0)
    refs = [cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 32), t) for t in (33.0, 40.0)]
    fit = cf.fit_references(refs)
    assert abs(fit.gain - 1 / unit.gain) < 0.02
    for t in (34.0, 37.0, 40.0):
        check = cf.check_reference(cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 32), t),
                                   fit.gain, fit.offset_c)
        assert abs(check.error_c) < 0.2, (t, check)


@pytest.mark.parametrize("seed", range(6))
def test_one_reference_within_0_3_over_34_39(seed):
    rng = np.random.default_rng(200 + seed)
    unit = SyntheticUnit(seed, offset_c=rng.uniform(-2, 2), gain=rng.uniform(0.95, 1.05))
    place = (11.0, 7.0, 6.0)
    fit = cf.fit_references([cf.measure_reference(unit.frames(scene_with_blackbody(36.5, *place), 32), 36.5)])
    assert fit.gain == 1.0
    for t in (34.0, 36.5, 39.0):
        ref = cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 32), t)
        assert abs(cf.check_reference(ref, fit.gain, fit.offset_c).error_c) < 0.3


def test_uncalibrated_unit_is_off_by_its_error():
    # the check must be able to fail: without a fit, a unit 1.5 C off reads 1.5 C off
    unit = SyntheticUnit(3, offset_c=1.5, gain=1.0)
    ref = cf.measure_reference(unit.frames(scene_with_blackbody(37.0, 11, 7, 6), 32), 37.0)
    assert abs(cf.check_reference(ref, 1.0, 0.0).error_c - 1.5) < 0.15


def test_moving_reference_is_refused():
    unit = SyntheticUnit(4, offset_c=0.5, gain=1.0)
    frames = unit.frames(scene_with_blackbody(37.0, 11, 7, 6), 32, ramp_c=0.6)
    with pytest.raises(cf.CalibrationRefused, match="still moving"):
        cf.measure_reference(frames, 37.0)


def test_settled_noisy_reference_is_accepted():
    # the drift limit follows the measured noise, so datasheet-level noise at a high refresh passes
    unit = SyntheticUnit(5, offset_c=0.5, gain=1.0, noise_c=0.5)
    ref = cf.measure_reference(unit.frames(scene_with_blackbody(37.0, 11, 7, 6), 32), 37.0)
    assert abs(ref.drift_c) <= ref.drift_limit_c
    assert 0.1 < ref.noise_c < 0.6


def test_region_over_the_edge_is_refused():
    unit = SyntheticUnit(6, offset_c=0.0, gain=1.0)
    frames = unit.frames(scene_with_blackbody(40.0, 11, 7, 4), 16)
    with pytest.raises(cf.CalibrationRefused, match="not uniform"):
        cf.measure_reference(frames, 40.0, region=cf.Region(10, 6, 6))


def test_inconsistent_references_exceed_residual():
    unit = SyntheticUnit(7, offset_c=0.3, gain=1.0)
    place = (11, 7, 6)
    refs = [cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 24), t) for t in (33.0, 37.0, 40.0)]
    assert cf.fit_references(refs).max_residual_c < 0.2
    refs[1].set_c = 37.8  # the operator typed the wrong set temperature
    with pytest.raises(cf.CalibrationRefused, match="residual"):
        cf.fit_references(refs)


def test_implausible_gain_is_refused():
    unit = SyntheticUnit(8, offset_c=0.0, gain=1.0)
    place = (11, 7, 6)
    refs = [cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 16), s)
            for t, s in ((33.0, 33.0), (40.0, 43.0))]
    with pytest.raises(cf.CalibrationRefused, match="gain"):
        cf.fit_references(refs)


def test_pixel_map_recovers_offsets_and_lets_the_blackbody_move():
    unit = SyntheticUnit(9, offset_c=-1.2, gain=1.03, noise_c=0.2)
    wall = np.full((ROWS, COLS), 24.0) + np.linspace(0, 0.8, COLS)[None, :]  # a slightly warmer side
    offsets = cf.pixel_offset_map(unit.frames(wall, 64))
    truth = unit.pixel_offset - unit.pixel_offset.mean()
    assert np.corrcoef(offsets, truth.ravel())[0, 1] > 0.9
    refs = [cf.measure_reference(unit.frames(scene_with_blackbody(t, 4, 4, 3), 32), t, pixel_offset=offsets)
            for t in (33.0, 40.0)]
    fit = cf.fit_references(refs)
    errors = []
    for t, place in ((34.0, (22, 14, 3)), (37.0, (15, 3, 3)), (40.0, (8, 16, 3))):
        ref = cf.measure_reference(unit.frames(scene_with_blackbody(t, *place), 32), t, pixel_offset=offsets)
        errors.append(cf.check_reference(ref, fit.gain, fit.offset_c).error_c)
    assert max(abs(e) for e in errors) < 0.2, errors


def test_pixel_map_refuses_a_person_in_view():
    unit = SyntheticUnit(10, offset_c=0.0, gain=1.0)
    with pytest.raises(cf.CalibrationRefused, match="not uniform"):
        cf.pixel_offset_map(unit.frames(scene_with_blackbody(34.0, 10, 5, 8), 16))


@pytest.mark.parametrize("text, message", [("1,2", "COL,ROW,SIZE"), ("a,b,c", "COL,ROW,SIZE"),
                                           ("30,10,4", "does not fit"), ("3,3,1", "too small")])
def test_bad_region_text(text, message):
    with pytest.raises(cf.CalibrationRefused, match=message):
        cf.parse_region(text)


def test_region_auto_and_valid():
    assert cf.parse_region("auto") is None
    assert cf.parse_region("14,10,4") == cf.Region(14, 10, 4)
