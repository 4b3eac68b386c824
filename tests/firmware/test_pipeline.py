# The whole per-frame pipeline without hardware (what unit.py runs and `host bench` times).
import gc
import sys
from array import array

import correction
import pipeline
import store
import synthetic
from test_scene import AMBIENT, _eye_row, _skip

_frames = {}


def _raw(key):
    """Driver-like output (deg C floats) of an empty room or a person at 0.5 m with a blackbody."""
    if key not in _frames:
        canvas = synthetic.Canvas(AMBIENT)
        if "bb" in key:
            canvas.box(28, 1, 3, 3, 40.0)
        if "person" in key:
            canvas.person(14.0, _eye_row(0.5), synthetic.head_width_px(0.5), 36.2)
        _frames[key] = canvas.image()
    return _frames[key]


def _config(**kw):
    config, errors = store.validate_config(kw)
    assert errors == [], errors
    return config


def _feed(p, key, frames, t0=0):
    raw = _raw(key)
    for k in range(frames):
        p.process(t0 + 125 * k, raw, k & 1)
    return t0 + 125 * frames


def test_person_passes_through_the_whole_pipeline():
    p = pipeline.Pipeline(_config(), {"gain": 1.0, "offset_c": 0.0, "pixel_offset_c": None})
    t = _feed(p, "empty", 8)
    assert p.screening.state == "IDLE" and p.calibrated
    _feed(p, "person", 8, t)
    assert p.screening.state == "PASS", p.screening.state
    # the forehead band (36.2 - 0.8) plus the spot-size compensation at the estimated distance
    comp = correction.spot_compensation(store.DEFAULT_CONFIG["spot_comp"], p.scene.distance_m)
    assert 0.6 < comp < 0.8 and abs(p.scene.distance_m - 0.5) < 0.06, (comp, p.scene.distance_m)
    assert abs(p.screening.reading_c - (35.4 + comp)) < 0.1, p.screening.reading_c


def test_calibration_offset_reaches_the_reading():
    plain = pipeline.Pipeline(_config(), {"gain": 1.0, "offset_c": 0.0, "pixel_offset_c": None})
    shifted = pipeline.Pipeline(_config(), {"gain": 1.0, "offset_c": 1.5, "pixel_offset_c": None})
    for p in (plain, shifted):
        _feed(p, "person", 10, _feed(p, "empty", 8))
    assert abs(shifted.screening.reading_c - plain.screening.reading_c - 1.5) < 0.05


def test_blackbody_acquired_then_missing_is_reported():
    config = _config(blackbody={"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 3})
    p = pipeline.Pipeline(config, None)
    assert p.calibrated and p.acquiring
    t = _feed(p, "empty bb", 12)
    assert p.blackbody_fault is None and not p.acquiring
    t = _feed(p, "person bb", 10, t)
    assert p.screening.state == "PASS"
    _feed(p, "person", 40, t)  # the reference is gone
    assert p.blackbody_fault is not None and "blackbody" in p.blackbody_fault


def test_uncalibrated_unit_with_a_blackbody_starts_cleanly():
    # the unit reads 1.6 C low; the blackbody correction must be in place before the background
    # is learnt, or the whole image would turn "warm" when it arrives
    config = _config(blackbody={"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 3})
    p = pipeline.Pipeline(config, None)
    low = {}
    for key in ("empty bb", "person bb"):
        raw = _raw(key)
        low[key] = array("f", [v - 1.6 for v in raw])
    t = 0
    for k in range(16):
        p.process(t, low["empty bb"], k & 1)
        t += 125
    assert not p.acquiring and p.blackbody_fault is None
    assert p.scene.status == "none" and p.scene.regions == 0, (p.scene.status, p.scene.regions)
    assert abs(p.correction.drift_cc - 160) <= 5, p.correction.drift_cc
    for k in range(10):
        p.process(t, low["person bb"], k & 1)
        t += 125
    assert p.screening.state == "PASS"
    comp = correction.spot_compensation(store.DEFAULT_CONFIG["spot_comp"], p.scene.distance_m)
    assert abs(p.screening.reading_c - (35.4 + comp)) < 0.15, p.screening.reading_c


def test_per_frame_allocation_is_small():
    if sys.implementation.name != "micropython":
        _skip("gc.mem_alloc is MicroPython's; the [micropython] run checks this")
    p = pipeline.Pipeline(_config(), {"gain": 1.02, "offset_c": 0.3, "pixel_offset_c": [0.01] * 768})
    t = _feed(p, "empty", 8)
    t = _feed(p, "person", 3, t)
    raw = _raw("person")
    gc.collect()
    before = gc.mem_alloc()
    p.process(t, raw, 1)
    used = gc.mem_alloc() - before
    # Adafruit's chain allocates ~590 KB per subpage; one person frame here: a few boxed floats
    assert used < 4096, used


def test_wide_lens_reading_uses_its_own_spot_compensation():
    p = pipeline.Pipeline(_config(fov_deg=110, allow_uncalibrated=True))
    p.scene.distance_m = 0.5
    p.scene.hot_c = 35.0
    p.scene.ambient_c = AMBIENT
    assert abs(p.reading() - (35.0 + 1.49)) < 1e-6, p.reading()
    assert p.scene.max_distance_m == 0.45
