# config.json / calibration.json / counters.json: validation, atomic writes, power cuts, wear.
import json
import os
import time

import store
from support import raises

_BASE = "/tmp/thermogate-store-%d" % (time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000))
_made = []


def _dir(name):
    path = "%s-%s-%d" % (_BASE, name, len(_made))
    try:
        os.mkdir(path)
    except OSError:
        pass
    _made.append(path)
    for entry in os.listdir(path):
        os.remove(path + "/" + entry)
    return path


def _write_raw(path, text):
    with open(path, "w") as f:
        f.write(text)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def test_missing_config_gives_defaults_and_an_error():
    d = _dir("missing")
    config, errors = store.load_config(d + "/config.json")
    assert config == store.DEFAULT_CONFIG
    assert len(errors) == 1 and "missing" in errors[0]


def test_valid_config_round_trip():
    d = _dir("valid")
    path = d + "/config.json"
    wanted = {"unit_id": "240ac4", "board": "m5stack-atom", "mode": "baseline", "threshold_c": 37.8,
              "blackbody": {"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 3}}
    store.save_config(wanted, path)
    config, errors = store.load_config(path)
    assert errors == []
    for key in wanted:
        assert config[key] == wanted[key], key
    assert config["delta_c"] == store.DEFAULT_CONFIG["delta_c"]
    assert not _exists(path + ".tmp")


def test_validation_names_the_bad_key():
    cases = [
        ({"threshold_c": "38"}, "threshold_c"),
        ({"threshold_c": 55.0}, "threshold_c"),
        ({"mode": "relative"}, "mode"),
        ({"treshold_c": 38.0}, "treshold_c"),
        ({"baseline_n": 10.5}, "baseline_n"),
        ({"allow_uncalibrated": 1}, "allow_uncalibrated"),
        ({"blackbody": {"temperature_c": 40.0, "col": 30, "row": 1, "size_px": 3}}, "blackbody"),
        ({"blackbody": {"temperature_c": 40.0, "col": 3}}, "blackbody.row"),
        ({"min_distance_m": 2.0, "max_distance_m": 1.0}, "min_distance_m"),
        ({"spot_comp": [[0.5, 0.8], [0.4, 0.9]]}, "spot_comp"),
        ({"fov_deg": 90}, "fov_deg"),
    ]
    for data, key in cases:
        config, errors = store.validate_config(data)
        assert errors, data
        assert key in errors[0], (key, errors)
    config, errors = store.validate_config([1, 2])
    assert errors and "object" in errors[0]
    exc = raises(store.StoreError, store.save_config, {"threshold_c": 99})
    assert "threshold_c" in str(exc)


def test_corrupt_config_gives_defaults_never_raises():
    d = _dir("corrupt")
    path = d + "/config.json"
    for text in ("", "{", "{\"mode\": \"absolute\"", "\x00\xff garbage", "[]", "null", "{\"threshold_c\": 1e999}"):
        _write_raw(path, text)
        config, errors = store.load_config(path)
        assert errors, text
        assert config["threshold_c"] == store.DEFAULT_CONFIG["threshold_c"]


def test_power_cut_during_config_write_keeps_the_old_file():
    # the write is cut at every byte of the temp file: the committed file must stay the old one
    d = _dir("powercut")
    path = d + "/config.json"
    old = {"unit_id": "old", "threshold_c": 37.5}
    new = {"unit_id": "new", "threshold_c": 38.2, "mode": "baseline", "board": "esp32-devkitc"}
    store.save_config(old, path)
    text = json.dumps(new)
    for cut in range(len(text) + 1):
        _write_raw(path + ".tmp", text[:cut])  # the rename never happened
        config, errors = store.load_config(path)
        assert errors == [], (cut, errors)
        assert config["unit_id"] == "old" and config["threshold_c"] == 37.5, cut
    # the load cleaned the stale temp file away; a complete write then commits the new file
    assert not _exists(path + ".tmp")
    store.save_config(new, path)
    config, errors = store.load_config(path)
    assert config["unit_id"] == "new" and errors == []


def test_power_cut_between_remove_and_rename_on_fat():
    # FAT renames by removing the target first: a cut there leaves only the temp file
    d = _dir("fat")
    path = d + "/config.json"
    text = json.dumps({"unit_id": "new", "threshold_c": 38.2})
    for cut in range(len(text) + 1):
        if _exists(path):
            os.remove(path)
        _write_raw(path + ".tmp", text[:cut])
        config, errors = store.load_config(path)
        if cut == len(text):
            assert errors == [] and config["unit_id"] == "new"
            assert _exists(path) and not _exists(path + ".tmp")  # the rename was finished
        else:
            assert errors and config == store.DEFAULT_CONFIG, cut


def test_calibration_validation():
    d = _dir("cal")
    path = d + "/calibration.json"
    cal, errors = store.load_calibration(path)
    assert cal is None and errors == []  # no file is not an error (blackbody or allow_uncalibrated)
    good = {"offset_c": -1.25, "gain": 1.02, "pixel_offset_c": [0.01] * 768, "serial": "00AB12CD34EF",
            "date": "2026-11-30", "references": [{"set_c": 35.0, "measured_c": 36.1}], "residual_c": 0.04}
    store.write_json(path, good)
    cal, errors = store.load_calibration(path, serial="00ab12cd34ef")
    assert errors == [] and cal["gain"] == 1.02 and cal["offset_c"] == -1.25
    cal, errors = store.load_calibration(path, serial="111111111111")
    assert cal is None and "recalibrate" in errors[0] and "111111111111" in errors[0]
    for bad, word in (({"offset_c": 0.0}, "gain"), ({"offset_c": 20.0, "gain": 1.0}, "offset_c"),
                      ({"offset_c": 0.0, "gain": 1.0, "pixel_offset_c": [0.0] * 10}, "pixel_offset_c"),
                      ({"offset_c": 0.0, "gain": 1.0, "pixel_offset_c": [9.0] * 768}, "pixel_offset_c")):
        cal, errors = store.validate_calibration(bad)
        assert cal is None and word in errors[0], (bad, errors)
    _write_raw(path, "{\"offset_c\": 0.1, \"gai")
    cal, errors = store.load_calibration(path)
    assert cal is None and "not valid JSON" in errors[0]


class _CountingWriter:
    def __init__(self):
        self.writes = []

    def __call__(self, path, data):
        self.writes.append(dict(data))


def test_counters_flash_wear_is_bounded():
    writer = _CountingWriter()
    counters = store.Counters("unused", interval_ms=600000, writer=writer)
    counters.load()
    now = 0
    # two hours of a busy gate: a verdict every 5 s, the loop ticking every 250 ms
    for second in range(2 * 3600):
        if second % 5 == 0:
            counters.count("passes")
        for _ in range(4):
            counters.tick(now)
            now += 250
    assert 10 <= len(writer.writes) <= 13, len(writer.writes)
    last = writer.writes[-1]
    # the last write is at most one interval old and carries every count up to it
    assert last["uptime_s"] >= 2 * 3600 - 600, last
    assert last["passes"] >= last["uptime_s"] // 5, last


def test_counters_persist_and_survive_corruption():
    d = _dir("counters")
    path = d + "/counters.json"
    counters = store.Counters(path, interval_ms=1000)
    counters.load()
    for key in ("passes", "passes", "fails", "retries", "faults"):
        counters.count(key)
    counters.tick(0)
    counters.tick(5000)  # due: written
    assert counters.writes == 1
    again = store.Counters(path)
    again.load()
    assert again.values["passes"] == 2 and again.values["fails"] == 1 and again.values["faults"] == 1
    assert again.values["uptime_s"] == 5 and again.values["boots"] == 2
    with open(path) as f:
        stored = json.loads(f.read())
    for key in stored:  # nothing but totals is stored
        assert key in store.COUNTER_KEYS, key
    _write_raw(path, "{\"passes\": 7, \"fai")
    broken = store.Counters(path)
    broken.load()
    assert broken.values["passes"] == 0 and broken.error is not None


def test_lens_picks_its_own_spot_compensation_and_working_distance():
    narrow, errors = store.validate_config({})
    wide, errors_wide = store.validate_config({"fov_deg": 110})
    assert errors == [] and errors_wide == []
    # 110 deg: a pixel 2.1 times wider dilutes the hottest spot much more (sim finding 4)
    assert wide["spot_comp"] != narrow["spot_comp"]
    assert wide["spot_comp"][0][1] > narrow["spot_comp"][0][1] + 0.1
    assert wide["spot_comp"][-1][0] == 0.8 and wide["spot_comp"][-1][1] > 2.3
    assert wide["max_distance_m"] < narrow["max_distance_m"] and wide["max_distance_m"] < 1.0
    # an explicit value still wins, whatever the lens
    own, errors = store.validate_config({"fov_deg": 110, "max_distance_m": 0.9, "spot_comp": [[0.5, 1.0]]})
    assert errors == [] and own["max_distance_m"] == 0.9 and own["spot_comp"] == [[0.5, 1.0]]
    # a bad lens keeps the 55 deg defaults and says so
    bad, errors = store.validate_config({"fov_deg": 90})
    assert errors and bad["spot_comp"] == narrow["spot_comp"]
