# Board profiles: the shipped ones parse, wrong ones give a clear error naming the field.
import json
import os

import board
from support import _here, raises

BOARDS = _here + "/../../boards"


def _shipped():
    return [BOARDS + "/" + name for name in sorted(os.listdir(BOARDS)) if name.endswith(".json")]


def test_shipped_profiles_are_valid():
    names = []
    for path in _shipped():
        profile = board.load_profile(path=path)
        assert path.endswith("/" + profile["name"] + ".json"), path
        names.append(profile["name"])
        assert profile["flash_offset"] == {"esp32": 0x1000, "esp32s3": 0x0}[profile["chip"]]
    for wanted in ("esp32-devkitc", "esp32s3-devkitc-1", "m5stack-atom"):
        assert wanted in names, names
    atom = board.load_profile(path=BOARDS + "/m5stack-atom.json")
    assert atom["indicator"] == {"kind": "neopixel", "pin": 27, "count": 1, "brightness": 40}
    assert atom["button"] == 39 and atom["i2c"]["scl"] == 32 and atom["i2c"]["sda"] == 26
    devkit = board.load_profile(path=BOARDS + "/esp32-devkitc.json")
    assert devkit["indicator"]["kind"] == "leds" and devkit["buzzer"] is not None


def _good():
    with open(BOARDS + "/esp32-devkitc.json") as f:
        return json.loads(f.read())


def test_wrong_profiles_name_the_problem():
    cases = [
        (("chip",), "esp8266", "chip"),
        (("i2c", "scl"), 7, "GPIO7"),  # SPI flash pin
        (("indicator", "pass_pin"), 35, "input-only"),
        (("indicator", "fail_pin"), 21, "assigned twice"),  # also i2c.sda
        (("indicator", "kind"), "lcd", "indicator.kind"),
        (("i2c", "freq"), 5000000, "i2c.freq"),
        (("flash_offset",), "zero", "flash_offset"),
        (("buzzer",), "27", "buzzer"),
    ]
    for keys, value, word in cases:
        data = _good()
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        exc = raises(board.BoardError, board.parse_profile, data, "test.json")
        assert word in str(exc), (keys, value, str(exc))
    data = _good()
    del data["i2c"]
    assert "i2c" in str(raises(board.BoardError, board.parse_profile, data))
    s3 = _good()
    s3["chip"] = "esp32s3"
    s3["indicator"] = {"kind": "neopixel", "pin": 48}
    s3["buzzer"] = None
    s3["i2c"] = {"id": 0, "scl": 9, "sda": 8}
    assert board.parse_profile(s3)["indicator"]["count"] == 1
    s3["i2c"]["scl"] = 23  # no such GPIO on the S3
    assert "GPIO23" in str(raises(board.BoardError, board.parse_profile, s3))


def test_missing_broken_or_mismatched_profile_file():
    base = "/tmp/thermogate-board-test"
    try:
        os.mkdir(base)
    except OSError:
        pass
    exc = raises(board.BoardError, board.load_profile, None, base + "/nope.json")
    assert "missing" in str(exc)
    with open(base + "/broken.json", "w") as f:
        f.write("{\"name\": \"x\", ")
    assert "not valid JSON" in str(raises(board.BoardError, board.load_profile, None, base + "/broken.json"))
    with open(base + "/other.json", "w") as f:
        f.write(json.dumps(_good()))
    exc = raises(board.BoardError, board.load_profile, "m5stack-atom", base + "/other.json")
    assert "esp32-devkitc" in str(exc) and "m5stack-atom" in str(exc)
    assert board.profile_path("m5stack-atom") == "boards/m5stack-atom.json"
    assert board.profile_path("") == "board.json"
