# The unit's files: config.json, calibration.json and counters.json. Nothing else is written.
#
# - Every write is atomic: the text goes to "<name>.tmp", is flushed and synced, then renamed over
#   the old file. LittleFS (the ESP32 default) replaces the target in one step; on FAT the rename
#   removes the old file first, so a loader that finds no file but a complete .tmp finishes the
#   rename (a .tmp that does not parse is a write cut short and is ignored).
# - A missing or broken file never raises out of the loaders: they return defaults plus a list of
#   one-line errors, and the wiring module turns a non-empty list into FAULT.
# - No temperatures, frames or times that could identify a person are stored: the counters hold
#   totals and uptime only.
import json
import os

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


CONFIG_PATH = "config.json"
CALIBRATION_PATH = "calibration.json"
COUNTERS_PATH = "counters.json"
PIXELS = const(768)

# Firmware configuration, every key with its default. The schema (types and limits) is CONFIG_SCHEMA
# below; docs/hardware.md documents the keys. Temperatures are deg C, times seconds, distances m.
DEFAULT_CONFIG = {
    "unit_id": "",  # set by `host flash` from the MAC
    "board": "",  # board profile: /boards/<board>.json; "" means /board.json
    "mode": "absolute",  # "absolute" or "baseline"
    "threshold_c": 38.0,  # core temperature at or above which absolute mode says FAIL
    "skin_to_core_offset_c": 1.0,  # added to the skin reading to estimate core temperature
    "delta_c": 1.0,  # baseline mode: FAIL above trimmed mean of recent passes + delta_c
    "baseline_n": 10,  # baseline mode: passed subjects kept
    "baseline_trim": 1,  # baseline mode: highest and lowest dropped (each)
    "allow_uncalibrated": False,  # True: screen without calibration.json or blackbody (shown at boot)
    "emissivity": 1.0,  # skin emissivity applied to the reading (1.0 = blackbody-equivalent)
    "fov_deg": 55,  # lens: 55 (MLX90640 BAA) or 110 (BAB)
    "refresh_hz": 8.0,  # sensor subpage rate
    "blackbody": None,  # {"temperature_c", "col", "row", "size_px"}: reference in view
    "min_distance_m": 0.25,  # closer gives RETRY too_close
    "max_distance_m": 1.0,  # farther gives RETRY too_far
    "head_width_m": 0.156,  # assumed head width for the distance estimate
    "plausible_min_c": 31.0,  # skin readings outside this range ask for a retry
    "plausible_max_c": 42.0,
    "stable_frames": 5,  # consecutive readings needed for a verdict
    "stable_spread_c": 0.6,  # their max - min must not exceed this
    "hold_s": 3.0,  # PASS / FAIL shown for this long
    "retry_after_s": 1.5,  # a subject too far / too close / crowded this long gets RETRY
    "retry_hold_s": 1.5,  # RETRY shown at least this long
    "unstable_after_s": 4.0,  # no stable reading within this long gives RETRY unstable
    "leave_s": 0.5,  # nobody in view this long means the subject has left
    "hot_pixels": 3,  # the hottest region is the mean of this many pixels of the head
    # Spot-size dilution (deg C added to the reading) by head distance (m), linearly interpolated:
    # how far the mean of the 3 hottest head pixels falls below the inner canthi. Measured with
    # host.sim.scene.dilution_table (55 deg lens, noise-free: 0.78 C at 0.3 m ... 1.25 C at 1.2 m),
    # then centred end to end in `host sim` (8 Hz sensor noise, distance estimated from the head
    # width): 200 subjects at 0.3-0.8 m had a mean error of -0.05 C at 0.3-0.6 m and -0.1 C at
    # 0.8 m with the noise-free table less 0.1 C; this table removes that.
    "spot_comp": [[0.3, 0.73], [0.4, 0.75], [0.6, 0.76], [0.8, 0.86], [1.0, 1.04], [1.2, 1.25]],
    "counters_interval_s": 600,  # counters reach flash at most this often
}

# Defaults that depend on the lens (fov_deg), used where config.json does not set the key; the
# values in DEFAULT_CONFIG are the 55 deg lens's. 110 deg lens (MLX90640 BAB): a pixel is 2.1 times
# wider, so the hottest spot of a face is diluted much more (host.sim.scene.dilution_table, mean of
# the hottest 3, deg C below the canthi, noise-free: 0.86 at 0.3 m ... 2.33 at 0.8 m); centred end
# to end in `host sim` (36 subjects at 0.3-0.6 m read 0.1-0.3 C low with that table: +0.1 at 0.3 m
# to +0.25 at 0.8 m). Working distance up to 0.45 m: beyond it a face with glasses (canthi hidden)
# read 0.75-1.1 C low at 0.5 m in the simulator -- too close to the decision margin.
LENS_DEFAULTS = {
    110: {"max_distance_m": 0.45,
          "spot_comp": [[0.3, 0.96], [0.4, 1.21], [0.5, 1.49], [0.6, 1.74], [0.8, 2.58]]},
}

# key: (type name, minimum, maximum) -- None = no limit; "choice" lists the allowed values
_NUM = "number"
CONFIG_SCHEMA = {
    "unit_id": ("str", None, None),
    "board": ("str", None, None),
    "mode": ("choice", ("absolute", "baseline"), None),
    "threshold_c": (_NUM, 35.0, 42.0),
    "skin_to_core_offset_c": (_NUM, -2.0, 4.0),
    "delta_c": (_NUM, 0.1, 3.0),
    "baseline_n": ("int", 3, 50),
    "baseline_trim": ("int", 0, 10),
    "allow_uncalibrated": ("bool", None, None),
    "emissivity": (_NUM, 0.9, 1.0),
    "fov_deg": ("choice", (55, 110), None),
    "refresh_hz": ("choice", (0.5, 1, 2, 4, 8, 16, 32, 64), None),
    "blackbody": ("blackbody", None, None),
    "min_distance_m": (_NUM, 0.05, 3.0),
    "max_distance_m": (_NUM, 0.1, 5.0),
    "head_width_m": (_NUM, 0.08, 0.3),
    "plausible_min_c": (_NUM, 20.0, 40.0),
    "plausible_max_c": (_NUM, 35.0, 50.0),
    "stable_frames": ("int", 2, 64),
    "stable_spread_c": (_NUM, 0.05, 5.0),
    "hold_s": (_NUM, 0.2, 60.0),
    "retry_after_s": (_NUM, 0.0, 30.0),
    "retry_hold_s": (_NUM, 0.2, 30.0),
    "unstable_after_s": (_NUM, 0.5, 60.0),
    "leave_s": (_NUM, 0.1, 30.0),
    "hot_pixels": ("int", 1, 8),
    "spot_comp": ("table", None, None),
    "counters_interval_s": (_NUM, 10.0, 86400.0),
}

CALIBRATION_LIMITS = {"offset_c": (-10.0, 10.0), "gain": (0.8, 1.25)}
PIXEL_OFFSET_LIMIT_C = 5.0
COUNTER_KEYS = ("passes", "fails", "retries", "faults", "uptime_s", "boots")


class StoreError(ValueError):
    pass


def _is_number(value):
    return (isinstance(value, int) or isinstance(value, float)) and not isinstance(value, bool)


def _check_value(key, value, spec, errors):
    kind, low, high = spec
    if kind == "str":
        if not isinstance(value, str):
            errors.append("config.json: %s must be a string, not %r" % (key, value))
            return False
        return True
    if kind == "bool":
        if not isinstance(value, bool):
            errors.append("config.json: %s must be true or false, not %r" % (key, value))
            return False
        return True
    if kind == "choice":
        if isinstance(value, bool) or value not in low:
            errors.append("config.json: %s must be one of %s, not %r" % (key, ", ".join([repr(v) for v in low]), value))
            return False
        return True
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        errors.append("config.json: %s must be a whole number, not %r" % (key, value))
        return False
    if kind == "blackbody":
        return _check_blackbody(value, errors)
    if kind == "table":
        return _check_table(key, value, errors)
    if not _is_number(value) or value != value:
        errors.append("config.json: %s must be a number, not %r" % (key, value))
        return False
    if (low is not None and value < low) or (high is not None and value > high):
        errors.append("config.json: %s = %r is outside %r..%r" % (key, value, low, high))
        return False
    return True


def _check_blackbody(value, errors):
    if value is None:
        return True
    if not isinstance(value, dict):
        errors.append("config.json: blackbody must be null or {\"temperature_c\", \"col\", \"row\", \"size_px\"}")
        return False
    ok = True
    for key in value:
        if key not in ("temperature_c", "col", "row", "size_px"):
            errors.append("config.json: blackbody has unknown key %r" % (key,))
            ok = False
    for key, low, high, integer in (("temperature_c", 20.0, 60.0, False), ("col", 0, 31, True),
                                    ("row", 0, 23, True), ("size_px", 1, 12, True)):
        item = value.get(key)
        if item is None or not _is_number(item) or (integer and not isinstance(item, int)):
            errors.append("config.json: blackbody.%s must be a %s" % (key, "whole number" if integer else "number"))
            ok = False
        elif item < low or item > high:
            errors.append("config.json: blackbody.%s = %r is outside %r..%r" % (key, item, low, high))
            ok = False
    if ok and (value["col"] + value["size_px"] > 32 or value["row"] + value["size_px"] > 24):
        errors.append("config.json: the blackbody square at col %d, row %d, size %d leaves the 32x24 image"
                      % (value["col"], value["row"], value["size_px"]))
        ok = False
    return ok


def _check_table(key, value, errors):
    if not isinstance(value, list) or not value:
        errors.append("config.json: %s must be a list of [distance_m, add_c] pairs" % key)
        return False
    last = -1.0
    for pair in value:
        if (not isinstance(pair, list) or len(pair) != 2 or not _is_number(pair[0]) or not _is_number(pair[1])
                or pair[0] <= last or abs(pair[1]) > 3.0):
            errors.append("config.json: %s needs [distance_m, add_c] pairs with rising distances and "
                          "|add_c| <= 3, not %r" % (key, pair))
            return False
        last = pair[0]
    return True


def validate_config(data):
    """(config with defaults filled in, list of one-line errors). A bad key keeps its default."""
    config = dict(DEFAULT_CONFIG)
    errors = []
    if not isinstance(data, dict):
        errors.append("config.json must hold a JSON object {...}")
        return config, errors
    for key in data:
        if key not in CONFIG_SCHEMA:
            errors.append("config.json: unknown key %r (a typo would silently keep a default)" % (key,))
    if "fov_deg" in data and _check_value("fov_deg", data["fov_deg"], CONFIG_SCHEMA["fov_deg"], []):
        for key, value in LENS_DEFAULTS.get(data["fov_deg"], {}).items():
            config[key] = value
    for key in CONFIG_SCHEMA:
        if key in data and _check_value(key, data[key], CONFIG_SCHEMA[key], errors):
            config[key] = data[key]
    if config["min_distance_m"] >= config["max_distance_m"]:
        errors.append("config.json: min_distance_m must be below max_distance_m")
    if config["plausible_min_c"] >= config["plausible_max_c"]:
        errors.append("config.json: plausible_min_c must be below plausible_max_c")
    if 2 * config["baseline_trim"] >= config["baseline_n"]:
        errors.append("config.json: baseline_trim drops every sample of baseline_n")
    return config, errors


def validate_calibration(data, serial=None):
    """(calibration dict or None, list of errors). Model: T = gain * (raw - pixel_offset_c[i]) + offset_c.

    serial: the sensor's serial; when both it and the file's "serial" are known they must match."""
    errors = []
    if not isinstance(data, dict):
        return None, ["calibration.json must hold a JSON object {...}"]
    cal = {}
    for key in ("offset_c", "gain"):
        value = data.get(key)
        low, high = CALIBRATION_LIMITS[key]
        if not _is_number(value) or value != value:
            errors.append("calibration.json: %s is missing or not a number" % key)
        elif value < low or value > high:
            errors.append("calibration.json: %s = %r is outside %r..%r; recalibrate" % (key, value, low, high))
        else:
            cal[key] = float(value)
    pixels = data.get("pixel_offset_c")
    if pixels is not None:
        if not isinstance(pixels, list) or len(pixels) != PIXELS:
            errors.append("calibration.json: pixel_offset_c must be null or a list of 768 numbers")
        else:
            for value in pixels:
                if not _is_number(value) or not (-PIXEL_OFFSET_LIMIT_C <= value <= PIXEL_OFFSET_LIMIT_C):
                    errors.append("calibration.json: pixel_offset_c holds %r; each must be a number within +-%r"
                                  % (value, PIXEL_OFFSET_LIMIT_C))
                    break
    cal["pixel_offset_c"] = pixels
    file_serial = data.get("serial")
    if file_serial is not None and not isinstance(file_serial, str):
        errors.append("calibration.json: serial must be a string")
    elif file_serial and serial and file_serial.lower() != serial.lower():
        errors.append("calibration.json is for sensor %s but this unit's sensor is %s; recalibrate this unit"
                      % (file_serial, serial))
    cal["serial"] = file_serial
    cal["date"] = data.get("date")
    if errors:
        return None, errors
    return cal, errors


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read_json(path):
    """(data, None) or (None, error). A .tmp left by a power cut on FAT is recovered, never trusted
    unless it parses completely."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        tmp = path + ".tmp"
        try:
            with open(tmp) as f:
                text = f.read()
            data = json.loads(text)
        except (OSError, ValueError):
            return None, "%s is missing" % path
        try:  # the write finished but the rename did not: finish it
            os.rename(tmp, path)
        except OSError:
            pass
        return data, None
    try:
        return json.loads(text), None
    except ValueError:
        return None, "%s is not valid JSON (corrupt or cut short); write it again" % path


def _sync():
    sync = getattr(os, "sync", None)
    if sync is not None:
        try:
            sync()
        except OSError:
            pass


def atomic_write(path, text):
    """Write text to path so that a power cut leaves either the old or the new file, never a mix."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        fsync = getattr(os, "fsync", None)
        if fsync is not None and hasattr(f, "fileno"):
            fsync(f.fileno())
    _sync()
    os.rename(tmp, path)
    _sync()


def write_json(path, data):
    atomic_write(path, json.dumps(data))


def remove_stale_tmp(path):
    """Delete a .tmp left by an interrupted write once the real file is known good."""
    tmp = path + ".tmp"
    if _exists(tmp) and _exists(path):
        try:
            os.remove(tmp)
        except OSError:
            pass


def load_config(path=CONFIG_PATH):
    """(config, errors). Missing or broken -> defaults and an error, never an exception."""
    data, error = _read_json(path)
    if error:
        return dict(DEFAULT_CONFIG), [error]
    config, errors = validate_config(data)
    if not errors:
        remove_stale_tmp(path)
    return config, errors


def save_config(config, path=CONFIG_PATH):
    merged, errors = validate_config(config)
    if errors:
        raise StoreError(errors[0])
    write_json(path, config)


def load_calibration(path=CALIBRATION_PATH, serial=None):
    """(calibration or None, errors). No file at all is not an error: (None, [])."""
    if not _exists(path) and not _exists(path + ".tmp"):
        return None, []
    data, error = _read_json(path)
    if error:
        return None, [error]
    cal, errors = validate_calibration(data, serial)
    if not errors:
        remove_stale_tmp(path)
    return cal, errors


def file_signature(path):
    """(size, mtime) of a file or None: cheap change detection without reading it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st[6], st[8])


class Counters:
    """Totals kept across reboots with bounded flash wear.

    The file is rewritten at most every `interval_ms` and only when something changed (plus on
    request, e.g. before a planned reset): at the default 10 minutes that is <= 144 writes a day,
    which LittleFS spreads over its blocks (ESP32 flash: 100k erase cycles per sector)."""

    def __init__(self, path=COUNTERS_PATH, interval_ms=600000, writer=None):
        self.path = path
        self.interval_ms = interval_ms
        self._write = writer or write_json
        self.values = {}
        for key in COUNTER_KEYS:
            self.values[key] = 0
        self._session_ms = 0  # uptime of this boot not yet folded into uptime_s
        self._last_save_ms = None
        self._last_tick_ms = None
        self.dirty = False
        self.writes = 0
        self.error = None

    def load(self):
        data, error = _read_json(self.path)
        if error is None and isinstance(data, dict):
            for key in COUNTER_KEYS:
                value = data.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    self.values[key] = value
        elif error and _exists(self.path):
            self.error = error  # broken counters restart from zero; not a reason to stop screening
        self.values["boots"] += 1
        self.dirty = True

    def count(self, key):
        self.values[key] += 1
        self.dirty = True

    def tick(self, now_ms):
        """Fold elapsed time into uptime and save if due. Returns True when it wrote the file."""
        if self._last_tick_ms is None:
            self._last_tick_ms = now_ms
            self._last_save_ms = now_ms
            return False
        elapsed = ((now_ms - self._last_tick_ms + 0x20000000) & 0x3FFFFFFF) - 0x20000000
        self._last_tick_ms = now_ms
        if elapsed > 0:
            self._session_ms += elapsed
            if self._session_ms >= 1000:
                seconds = self._session_ms // 1000
                self.values["uptime_s"] += seconds
                self._session_ms -= seconds * 1000
                self.dirty = True
        since = ((now_ms - self._last_save_ms + 0x20000000) & 0x3FFFFFFF) - 0x20000000
        if self.dirty and since >= self.interval_ms:
            return self.save(now_ms)
        return False

    def save(self, now_ms=None):
        try:
            self._write(self.path, self.values)
        except OSError as exc:
            self.error = "cannot write %s: %s" % (self.path, exc)
            return False
        self.writes += 1
        self.dirty = False
        if now_ms is not None:
            self._last_save_ms = now_ms
        return True
