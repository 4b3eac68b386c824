# Board profiles: which pins the sensor, indicator, buzzer and button use on a given board.
#
# Schema (boards/<name>.json; docs/hardware.md repeats it):
#   name          str      profile name, same as the file name without .json
#   description   str      optional, for people
#   chip          str      "esp32" | "esp32s3"
#   flash_offset  int|str  where the MicroPython image goes ("0x1000" on ESP32, "0x0" on ESP32-S3)
#   i2c           {"id": 0|1, "scl": GPIO, "sda": GPIO, "freq": Hz (10k..1M)}
#   indicator     {"kind": "leds", "pass_pin": GPIO, "fail_pin": GPIO, "active_high": bool}
#               | {"kind": "neopixel", "pin": GPIO, "count": 1.., "brightness": 1..255}
#   buzzer        GPIO | null   (passive piezo driven by PWM)
#   button        GPIO | null   (active low, reserved for service use)
# On the unit the profile is /boards/<config "board">.json, or /board.json when config names none.
import json

CHIPS = ("esp32", "esp32s3")
# GPIOs that exist and are not wired to the SPI flash (ESP32 datasheet 2.2: GPIO6-11 are flash;
# ESP32-S3 datasheet 2.2: GPIO26-32 are flash/PSRAM, 22-25 do not exist).
_VALID = {
    "esp32": tuple([n for n in range(40) if n not in (6, 7, 8, 9, 10, 11, 20, 24, 28, 29, 30, 31)]),
    "esp32s3": tuple(list(range(22)) + list(range(33, 49))),
}
# ESP32 GPIO34-39 are input only: fine for a button, not for outputs or I2C (open drain needs output).
_INPUT_ONLY = {"esp32": (34, 35, 36, 37, 38, 39), "esp32s3": ()}


class BoardError(ValueError):
    pass


def profile_path(name):
    if name:
        return "boards/%s.json" % name
    return "board.json"


def _int(value, where, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise BoardError("%s must be a whole number, not %r" % (where, value))
    if value < low or value > high:
        raise BoardError("%s = %r is outside %r..%r" % (where, value, low, high))
    return value


def _pin(chip, value, where, output=True):
    pin = _int(value, where, 0, 48)
    if pin not in _VALID[chip]:
        raise BoardError("%s: GPIO%d is not usable on %s (flash pins or no such GPIO)" % (where, pin, chip))
    if output and pin in _INPUT_ONLY[chip]:
        raise BoardError("%s: GPIO%d is input-only on %s; pick a GPIO that can drive a pin" % (where, pin, chip))
    return pin


def _offset(value, where):
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise BoardError("%s = %r is not a number like \"0x1000\"" % (where, value))
    return _int(value, where, 0, 0x400000)


def parse_profile(data, where="board profile"):
    """Validate a decoded profile; returns a clean dict or raises BoardError naming the field."""
    if not isinstance(data, dict):
        raise BoardError("%s must be a JSON object" % where)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BoardError("%s: \"name\" is missing" % where)
    chip = data.get("chip")
    if chip not in CHIPS:
        raise BoardError("%s: chip must be one of %s, not %r" % (where, ", ".join(CHIPS), chip))
    profile = {"name": name, "chip": chip, "flash_offset": _offset(data.get("flash_offset"), where + ": flash_offset")}
    i2c = data.get("i2c")
    if not isinstance(i2c, dict):
        raise BoardError("%s: \"i2c\" must be {\"id\", \"scl\", \"sda\", \"freq\"}" % where)
    profile["i2c"] = {
        "id": _int(i2c.get("id", 0), where + ": i2c.id", 0, 1),
        "scl": _pin(chip, i2c.get("scl"), where + ": i2c.scl"),
        "sda": _pin(chip, i2c.get("sda"), where + ": i2c.sda"),
        # MLX90640 datasheet 8: Fast-mode Plus up to 1 MHz
        "freq": _int(i2c.get("freq", 400000), where + ": i2c.freq", 10000, 1000000),
    }
    if profile["i2c"]["scl"] == profile["i2c"]["sda"]:
        raise BoardError("%s: i2c.scl and i2c.sda are the same GPIO" % where)
    ind = data.get("indicator")
    if not isinstance(ind, dict):
        raise BoardError("%s: \"indicator\" must be an object with \"kind\"" % where)
    kind = ind.get("kind")
    if kind == "leds":
        active_high = ind.get("active_high", True)
        if not isinstance(active_high, bool):
            raise BoardError("%s: indicator.active_high must be true or false" % where)
        profile["indicator"] = {
            "kind": "leds",
            "pass_pin": _pin(chip, ind.get("pass_pin"), where + ": indicator.pass_pin"),
            "fail_pin": _pin(chip, ind.get("fail_pin"), where + ": indicator.fail_pin"),
            "active_high": active_high,
        }
    elif kind == "neopixel":
        profile["indicator"] = {
            "kind": "neopixel",
            "pin": _pin(chip, ind.get("pin"), where + ": indicator.pin"),
            "count": _int(ind.get("count", 1), where + ": indicator.count", 1, 64),
            "brightness": _int(ind.get("brightness", 40), where + ": indicator.brightness", 1, 255),
        }
    else:
        raise BoardError("%s: indicator.kind must be \"leds\" or \"neopixel\", not %r" % (where, kind))
    buzzer = data.get("buzzer")
    profile["buzzer"] = None if buzzer is None else _pin(chip, buzzer, where + ": buzzer")
    button = data.get("button")
    profile["button"] = None if button is None else _pin(chip, button, where + ": button", output=False)
    used = [profile["i2c"]["scl"], profile["i2c"]["sda"]]
    if kind == "leds":
        used += [profile["indicator"]["pass_pin"], profile["indicator"]["fail_pin"]]
    else:
        used.append(profile["indicator"]["pin"])
    for pin in (profile["buzzer"], profile["button"]):
        if pin is not None:
            used.append(pin)
    for pin in used:
        if used.count(pin) > 1:
            raise BoardError("%s: GPIO%d is assigned twice" % (where, pin))
    return profile


def load_profile(name=None, path=None):
    """Read and validate the unit's profile: /boards/<name>.json, or /board.json without a name."""
    if path is None:
        path = profile_path(name)
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise BoardError("board profile %s is missing; copy boards/%s.json to the unit"
                         % (path, name or "<board>"))
    try:
        data = json.loads(text)
    except ValueError:
        raise BoardError("board profile %s is not valid JSON; copy it again" % path)
    profile = parse_profile(data, path)
    if name and profile["name"] != name:
        raise BoardError("board profile %s says it is %r, but config.json asks for %r" % (path, profile["name"], name))
    return profile
