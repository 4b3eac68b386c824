"""Scenario files for `host sim`: load, validate, fill in defaults.

The schema is pinned by the gate-unit issue; the README documents it with every default.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from host.errors import HostError

FOV_CHOICES = (55, 110)
REFRESH_CHOICES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # MLX90640 datasheet 11.2.2.1
EXPECT_CHOICES = ("pass", "fail", "retry", "any")
DISTRACTOR_DEFAULTS = {
    # kind: (temperature_c, col, row) -- centre pixel of the object in the 32x24 image
    "cup": (60.0, 26, 19),
    "lamp": (45.0, 4, 3),
    "radiator": (50.0, 6, 18),
}
# seconds the scenario runs on after the last subject has left
TAIL_S = 2.0


class ScenarioError(HostError):
    pass


@dataclass
class SensorSpec:
    fov_deg: int = 55
    refresh_hz: float = 8.0
    ambient_c: float = 24.0
    unit_offset_c: float = 0.0
    unit_gain: float = 1.0
    pixel_offset_sigma_c: float = 0.0
    netd_scale: float = 1.0


@dataclass
class BlackbodySpec:
    temperature_c: float = 40.0
    col: int = 28
    row: int = 1
    size_px: int = 3


@dataclass
class SubjectSpec:
    arrive_s: float = 1.0
    dwell_s: float = 4.0
    distance_m: float = 0.5
    x_offset_m: float = 0.0
    skin_c: float = 35.0
    glasses: bool = False
    expect: str = "any"


@dataclass
class DistractorSpec:
    kind: str
    temperature_c: float
    col: int  # pixel holding the object's centre
    row: int
    from_s: float = 0.0
    to_s: float = math.inf


@dataclass
class Scenario:
    name: str = "scenario"
    seed: int = 0
    duration_s: float = 0.0
    sensor: SensorSpec = field(default_factory=SensorSpec)
    blackbody: BlackbodySpec | None = None
    calibrated: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    subjects: list[SubjectSpec] = field(default_factory=list)
    distractors: list[DistractorSpec] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The scenario with every default filled in (inf written as null)."""
        return {
            "name": self.name, "seed": self.seed, "duration_s": self.duration_s,
            "sensor": vars(self.sensor).copy(),
            "blackbody": None if self.blackbody is None else vars(self.blackbody).copy(),
            "calibrated": self.calibrated, "config": dict(self.config),
            "subjects": [vars(s).copy() for s in self.subjects],
            "distractors": [dict(vars(d), to_s=None if math.isinf(d.to_s) else d.to_s) for d in self.distractors],
        }


def _where(path: str) -> str:
    return path or "scenario"


def _number(value: Any, path: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError("%s must be a number, not %s: fix the scenario file" % (path, json.dumps(value)))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ScenarioError("%s = %s is outside %s..%s: fix the scenario file" % (path, value, low, high))
    return float(value)


def _integer(value: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError("%s must be an integer, not %s: fix the scenario file" % (path, json.dumps(value)))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ScenarioError("%s = %s is outside %s..%s: fix the scenario file" % (path, value, low, high))
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError("%s must be true or false, not %s: fix the scenario file" % (path, json.dumps(value)))
    return value


def _object(value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError("%s must be a JSON object, not %s: fix the scenario file"
                            % (_where(path), type(value).__name__))
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ScenarioError("%s has unknown key %r (allowed: %s): fix the scenario file"
                            % (_where(path), unknown[0], ", ".join(allowed)))
    return value


def parse(data: Any, default_name: str = "scenario") -> Scenario:
    """Validate a decoded scenario document and fill in defaults."""
    top = _object(data, "", ("name", "seed", "duration_s", "sensor", "blackbody", "calibrated", "config",
                              "subjects", "distractors"))
    scenario = Scenario(name=default_name)
    if "name" in top:
        if not isinstance(top["name"], str) or not top["name"]:
            raise ScenarioError("name must be a non-empty string: fix the scenario file")
        scenario.name = top["name"]
    if "seed" in top:
        scenario.seed = _integer(top["seed"], "seed", 0, 2**32 - 1)

    sensor = _object(top.get("sensor", {}), "sensor", tuple(vars(SensorSpec())))
    spec = SensorSpec()
    if "fov_deg" in sensor:
        fov = sensor["fov_deg"]
        if isinstance(fov, bool) or fov not in FOV_CHOICES:
            raise ScenarioError("sensor.fov_deg must be 55 or 110, not %s: fix the scenario file" % json.dumps(fov))
        spec.fov_deg = int(fov)
    if "refresh_hz" in sensor:
        rate = _number(sensor["refresh_hz"], "sensor.refresh_hz")
        if rate not in REFRESH_CHOICES:
            raise ScenarioError("sensor.refresh_hz must be one of %s, not %s: fix the scenario file"
                                % (", ".join("%g" % r for r in REFRESH_CHOICES), sensor["refresh_hz"]))
        spec.refresh_hz = rate
    if "ambient_c" in sensor:
        spec.ambient_c = _number(sensor["ambient_c"], "sensor.ambient_c", -10.0, 45.0)
    if "unit_offset_c" in sensor:
        spec.unit_offset_c = _number(sensor["unit_offset_c"], "sensor.unit_offset_c", -10.0, 10.0)
    if "unit_gain" in sensor:
        spec.unit_gain = _number(sensor["unit_gain"], "sensor.unit_gain", 0.8, 1.2)
    if "pixel_offset_sigma_c" in sensor:
        spec.pixel_offset_sigma_c = _number(sensor["pixel_offset_sigma_c"], "sensor.pixel_offset_sigma_c", 0.0, 5.0)
    if "netd_scale" in sensor:
        spec.netd_scale = _number(sensor["netd_scale"], "sensor.netd_scale", 0.0, 20.0)
    scenario.sensor = spec

    if top.get("blackbody") is not None:
        raw = _object(top["blackbody"], "blackbody", tuple(vars(BlackbodySpec())))
        bb = BlackbodySpec()
        if "temperature_c" in raw:
            bb.temperature_c = _number(raw["temperature_c"], "blackbody.temperature_c", 20.0, 100.0)
        if "size_px" in raw:
            bb.size_px = _integer(raw["size_px"], "blackbody.size_px", 1, 8)
        if "col" in raw:
            bb.col = _integer(raw["col"], "blackbody.col", 0, 31)
        if "row" in raw:
            bb.row = _integer(raw["row"], "blackbody.row", 0, 23)
        if bb.col + bb.size_px > 32 or bb.row + bb.size_px > 24:
            raise ScenarioError("blackbody at col %d row %d size %d does not fit in the 32x24 image: "
                                "move it or make it smaller" % (bb.col, bb.row, bb.size_px))
        scenario.blackbody = bb

    if "calibrated" in top:
        scenario.calibrated = _boolean(top["calibrated"], "calibrated")
    if "config" in top:
        if not isinstance(top["config"], dict):
            raise ScenarioError("config must be a JSON object of firmware config overrides: fix the scenario file")
        scenario.config = dict(top["config"])

    subjects = top.get("subjects", [])
    if not isinstance(subjects, list):
        raise ScenarioError("subjects must be a list: fix the scenario file")
    for i, raw in enumerate(subjects):
        where = "subjects[%d]" % i
        raw = _object(raw, where, tuple(vars(SubjectSpec())))
        subject = SubjectSpec()
        if "arrive_s" in raw:
            subject.arrive_s = _number(raw["arrive_s"], where + ".arrive_s", 0.0, 86400.0)
        if "dwell_s" in raw:
            subject.dwell_s = _number(raw["dwell_s"], where + ".dwell_s", 0.0, 3600.0)
        if "distance_m" in raw:
            subject.distance_m = _number(raw["distance_m"], where + ".distance_m", 0.15, 5.0)
        if "x_offset_m" in raw:
            subject.x_offset_m = _number(raw["x_offset_m"], where + ".x_offset_m", -3.0, 3.0)
        if "skin_c" in raw:
            subject.skin_c = _number(raw["skin_c"], where + ".skin_c", 25.0, 45.0)
        if "glasses" in raw:
            subject.glasses = _boolean(raw["glasses"], where + ".glasses")
        if "expect" in raw:
            if raw["expect"] not in EXPECT_CHOICES:
                raise ScenarioError("%s.expect must be one of %s, not %s: fix the scenario file"
                                    % (where, "|".join(EXPECT_CHOICES), json.dumps(raw["expect"])))
            subject.expect = raw["expect"]
        scenario.subjects.append(subject)

    distractors = top.get("distractors", [])
    if not isinstance(distractors, list):
        raise ScenarioError("distractors must be a list: fix the scenario file")
    for i, raw in enumerate(distractors):
        where = "distractors[%d]" % i
        raw = _object(raw, where, ("kind", "temperature_c", "col", "row", "from_s", "to_s"))
        kind = raw.get("kind")
        if kind not in DISTRACTOR_DEFAULTS:
            raise ScenarioError("%s.kind must be one of %s, not %s: fix the scenario file"
                                % (where, "|".join(DISTRACTOR_DEFAULTS), json.dumps(kind)))
        temp, col, row = DISTRACTOR_DEFAULTS[kind]
        item = DistractorSpec(kind=kind, temperature_c=temp, col=col, row=row)
        if "temperature_c" in raw:
            item.temperature_c = _number(raw["temperature_c"], where + ".temperature_c", -20.0, 300.0)
        if "col" in raw:
            item.col = _integer(raw["col"], where + ".col", 0, 31)
        if "row" in raw:
            item.row = _integer(raw["row"], where + ".row", 0, 23)
        if "from_s" in raw:
            item.from_s = _number(raw["from_s"], where + ".from_s", 0.0)
        if raw.get("to_s") is not None:
            item.to_s = _number(raw["to_s"], where + ".to_s", 0.0)
        if item.to_s <= item.from_s:
            raise ScenarioError("%s: to_s (%g) must be after from_s (%g): fix the scenario file"
                                % (where, item.to_s, item.from_s))
        scenario.distractors.append(item)

    end = max([s.arrive_s + s.dwell_s + 1.0 for s in scenario.subjects]
              + [d.to_s for d in scenario.distractors if math.isfinite(d.to_s)] + [0.0]) + TAIL_S
    if "duration_s" in top:
        scenario.duration_s = _number(top["duration_s"], "duration_s", 0.5, 3600.0)
    else:
        scenario.duration_s = max(end, 5.0)
    return scenario


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError("scenario file %s does not exist: check the path" % path) from None
    except OSError as exc:
        raise ScenarioError("cannot read scenario file %s (%s): check the path" % (path, exc.strerror)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError("scenario file %s is not valid JSON (line %d column %d: %s): fix the file"
                            % (path, exc.lineno, exc.colno, exc.msg)) from None
    try:
        return parse(data, default_name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError("%s: %s" % (path, exc)) from None


def builtin() -> Scenario:
    """The scenario `host sim` runs with no argument."""
    text = resources.files("host.sim").joinpath("scenarios/default.json").read_text()
    return parse(json.loads(text), default_name="default")
