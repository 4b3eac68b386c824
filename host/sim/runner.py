"""Run a scenario on a virtual unit: the real firmware, in the real MicroPython unix port (or in
CPython for debugging), against the MLX90640 emulator looking at the rendered scene.

Host side of the link described in host/virtual/shim/simlink.py: the unit's I2C transfers arrive
here stamped with its virtual time; the scene is rendered at that time and handed to the emulator,
whose clock is the unit's virtual clock, so data-ready timing and subject motion follow simulated
time and a scenario runs faster than real time.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host import BOARDS_DIR, FIRMWARE_DIR
from host.errors import HostError
from host.unixport import micropython_command
from host.sim import scene as scene_mod
from host.sim.scenario import Scenario

SHIM_DIR = Path(__file__).resolve().parent.parent / "virtual" / "shim"
SHIM_MODULES = ("simlink", "time", "machine", "neopixel", "network", "bluetooth", "esp32", "_forbidden")

I2C_READ, I2C_WRITE, I2C_SCAN, EVENT = 0x52, 0x57, 0x53, 0x45
STATUS_STOP = 255
HEADER = struct.Struct("<BIQ")
REPLY = struct.Struct("<BI")
HEAP = "16M"
# wall-clock seconds the unit may stay silent before the host gives up on it
SILENCE_LIMIT_S = 60.0

SensorFactory = Callable[[Scenario, Callable[[], float]], Any]


class SimError(HostError):
    exit_code = 1


@dataclass
class Frame:
    """One firmware frame as the host saw it: virtual time, the rendered scene, what the unit said."""

    t_s: float
    state: str
    info: dict[str, Any]
    scene_c: np.ndarray
    truth: scene_mod.SceneInfo
    indicator: dict[str, Any]


@dataclass
class Verdict:
    t_s: float
    state: str  # pass | fail | retry | fault
    reason: str | None
    reading_c: float | None


@dataclass
class SubjectResult:
    index: int
    verdict: str
    reason: str | None
    expect: str
    measured_c: float | None
    true_c: float
    time_to_verdict_s: float | None

    @property
    def correct(self) -> bool:
        return self.expect == "any" or self.verdict == self.expect


@dataclass
class RunResult:
    scenario: Scenario
    subjects: list[SubjectResult]
    verdicts: list[Verdict]
    frames: list[Frame]
    timeline: list[tuple[float, dict[str, Any]]]
    end: str
    wall_s: float
    virtual_s: float
    output: str = ""

    def summary(self) -> dict[str, Any]:
        errors = [abs(s.measured_c - s.true_c) for s in self.subjects
                  if s.measured_c is not None and s.verdict in ("pass", "fail")]
        return {
            "correct": sum(1 for s in self.subjects if s.correct),
            "total": len(self.subjects),
            "false_pass": sum(1 for s in self.subjects if s.expect == "fail" and s.verdict == "pass"),
            "false_fail": sum(1 for s in self.subjects if s.expect == "pass" and s.verdict == "fail"),
            "mean_abs_error_c": round(float(np.mean(errors)), 3) if errors else None,
            "max_abs_error_c": round(float(np.max(errors)), 3) if errors else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "subjects": [{
                "index": s.index, "verdict": s.verdict, "expect": s.expect,
                "measured_c": None if s.measured_c is None else round(s.measured_c, 2),
                "true_c": s.true_c,
                "time_to_verdict_s": None if s.time_to_verdict_s is None else round(s.time_to_verdict_s, 2),
            } for s in self.subjects],
            "summary": self.summary(),
        }


def build_scene(scenario: Scenario) -> scene_mod.Scene:
    """The physical scene of a scenario; per-subject hair and clothing vary with the seed."""
    rng = np.random.default_rng(scenario.seed)
    people = []
    for spec in scenario.subjects:
        people.append(scene_mod.Person(
            skin_c=spec.skin_c, distance_m=spec.distance_m, x_offset_m=spec.x_offset_m,
            arrive_s=spec.arrive_s, dwell_s=spec.dwell_s, glasses=spec.glasses,
            hair_drop_c=float(rng.uniform(5.0, 7.0)), clothing_above_ambient_c=float(rng.uniform(2.0, 4.0))))
    distractors = [scene_mod.Distractor(kind=d.kind, temperature_c=d.temperature_c, col=d.col + 0.5, row=d.row + 0.5,
                                        from_s=d.from_s, to_s=d.to_s) for d in scenario.distractors]
    blackbody = None
    if scenario.blackbody is not None:
        bb = scenario.blackbody
        blackbody = scene_mod.Blackbody(bb.temperature_c, bb.col, bb.row, bb.size_px)
    return scene_mod.Scene(scene_mod.Lens(scenario.sensor.fov_deg), scenario.sensor.ambient_c, people,
                           distractors, blackbody)


def default_sensor(scenario: Scenario, clock: Callable[[], float]) -> Any:
    """The foundation's register-level MLX90640 emulator: this seed's unit, with the scenario's
    reading error (T_read = unit_gain * T + unit_offset_c + pixel_offset_sigma_c * z_i) and noise."""
    from host.virtual.sensor import SensorEmulator

    spec = scenario.sensor
    return SensorEmulator(seed=scenario.seed, clock=clock, netd_scale=spec.netd_scale,
                          unit_offset_c=spec.unit_offset_c, unit_gain=spec.unit_gain,
                          pixel_offset_sigma_c=spec.pixel_offset_sigma_c)


class UnitHost:
    """Answers the virtual unit's requests and records what it reports, in virtual time."""

    def __init__(self, scenario: Scenario, sensor_factory: SensorFactory | None = None, keep_frames: bool = True,
                 actions: list[tuple[float, Callable[[Any], None]]] | None = None):
        self.scenario = scenario
        # (virtual time s, fn(sensor)) run once when the unit's clock passes that time: faults
        self.actions = sorted(actions or [], key=lambda action: action[0])
        self.scene = build_scene(scenario)
        self.now_us = 0
        self.deadline_us = int(scenario.duration_s * 1e6)
        self.sensor = (sensor_factory or default_sensor)(scenario, self.clock)
        self.keep_frames = keep_frames
        # the scene is re-rendered at most every quarter frame period of virtual time
        self.scene_step_us = int(1e6 / scenario.sensor.refresh_hz / 4)
        self._scene_slot = -1
        self._scene_image: np.ndarray | None = None
        self._scene_truth = scene_mod.SceneInfo()
        self.timeline: list[tuple[float, dict[str, Any]]] = []
        self.frames: list[Frame] = []
        self.verdicts: list[Verdict] = []
        self.indicator: dict[str, Any] = {}
        self.end: str | None = None
        self.crash: str | None = None
        self.starved: dict[str, Any] | None = None
        self._update_scene()

    def clock(self) -> float:
        return self.now_us / 1e6

    def _update_scene(self) -> None:
        slot = self.now_us // self.scene_step_us
        if slot == self._scene_slot:
            return
        self._scene_slot = slot
        image, truth = self.scene.render(slot * self.scene_step_us / 1e6)
        if self._scene_image is None or not np.array_equal(image, self._scene_image):
            self.sensor.set_scene(image, ambient_c=self.scenario.sensor.ambient_c)
        self._scene_image, self._scene_truth = image, truth

    def handle(self, kind: int, now_us: int, payload: bytes) -> tuple[int, bytes] | None:
        self.now_us = max(self.now_us, now_us)
        if kind == EVENT:
            self._event(json.loads(payload))
            return None
        if self.now_us >= self.deadline_us:
            return STATUS_STOP, b""
        while self.actions and self.actions[0][0] * 1e6 <= self.now_us:
            _, action = self.actions.pop(0)
            action(self.sensor)
            self.timeline.append((self.now_us / 1e6, {"kind": "host_action", "name": getattr(action, "__name__", "")}))
        self._update_scene()
        bus = self.sensor.i2c
        try:
            if kind == I2C_SCAN:
                return 0, bytes(bus.scan())
            addr, memaddr, addrsize, nbytes = struct.unpack_from("<BHBH", payload)
            if kind == I2C_READ:
                buf = bytearray(nbytes)
                bus.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
                return 0, bytes(buf)
            if kind == I2C_WRITE:
                bus.writeto_mem(addr, memaddr, payload[6:], addrsize=addrsize)
                return 0, b""
        except OSError as exc:
            return (exc.errno or errno.EIO) & 0xFF or errno.EIO, b""
        raise SimError("the virtual unit sent an unknown request %r: the shim and host are out of step" % kind)

    def _event(self, event: dict[str, Any]) -> None:
        t_s = self.now_us / 1e6
        kind = event.get("kind")
        self.timeline.append((t_s, event))
        if kind == "frame":
            state, info = _frame_args(event.get("args", []))
            if self.keep_frames:
                self._update_scene()
                assert self._scene_image is not None
                self.frames.append(Frame(t_s, state, info, self._scene_image, self._scene_truth, dict(self.indicator)))
        elif kind == "verdict":
            self.verdicts.append(_verdict_args(t_s, event.get("args", [])))
        elif kind in ("pin", "pwm", "neopixel"):
            key = "%s:%s" % (kind, event.get("pin"))
            self.indicator[key] = event.get("pixels", event.get("value", event.get("duty_u16")))
        elif kind == "end":
            self.end = event.get("why", "stopped")
        elif kind == "crash":
            self.crash = event.get("error", "unknown error")
        elif kind == "wdt_starved":
            self.starved = event


def _state_name(value: Any) -> str:
    return str(value).lower() if value is not None else "none"


def _frame_args(args: list[Any]) -> tuple[str, dict[str, Any]]:
    """on_frame(now_ms, state, info) (or on_frame(state, info)): state name and info dict."""
    rest = list(args)
    if rest and isinstance(rest[0], (int, float)) and not isinstance(rest[0], bool):
        rest = rest[1:]
    state = _state_name(rest[0]) if rest else "none"
    info = rest[1] if len(rest) > 1 and isinstance(rest[1], dict) else {}
    return state, info


def _verdict_args(t_s: float, args: list[Any]) -> Verdict:
    """on_verdict(now_ms, state, reason, reading_c): the unit's clock is also the host's."""
    rest = list(args)
    if rest and isinstance(rest[0], (int, float)) and not isinstance(rest[0], bool):
        rest = rest[1:]
    state = _state_name(rest[0]) if rest else "none"
    reason = None
    reading = None
    for value in rest[1:]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            reading = float(value)
        elif isinstance(value, str):
            reason = value.lower()
    return Verdict(t_s, state, reason, reading)


# ---------------------------------------------------------------- the unit's filesystem


SIM_BOARD = "esp32s3-devkitc-1"  # the board the virtual unit pretends to be (NeoPixel indicator)


def pixel_offsets_c(scenario: Scenario, sensor: Any) -> list[float] | None:
    """The unit's fixed per-pixel reading error (deg C, 768 in RAM order), as calibration measures it."""
    error_map = getattr(getattr(sensor, "physics", None), "pixel_error_map", None)
    if error_map is None or scenario.sensor.pixel_offset_sigma_c == 0:
        return None
    return [round(float(v), 4) for v in np.asarray(error_map).ravel() * scenario.sensor.pixel_offset_sigma_c]


def unit_files(scenario: Scenario, sensor: Any = None) -> dict[str, str]:
    """config.json and (when calibrated) calibration.json for the virtual unit.

    The config carries the scenario's lens, refresh rate and blackbody, then the scenario's own
    overrides. The calibration inverts the emulated unit's error
    (read = unit_gain * T + unit_offset_c + pixel_offset[i]) in the firmware's model
    T = gain * (read - pixel_offset_c[i]) + offset_c, as `host calibrate` would measure it."""
    config: dict[str, Any] = {"board": SIM_BOARD, "fov_deg": scenario.sensor.fov_deg,
                              "refresh_hz": _plain_number(scenario.sensor.refresh_hz)}
    if scenario.blackbody is not None:
        config["blackbody"] = dict(vars(scenario.blackbody))
    config.update(scenario.config)
    files = {"config.json": json.dumps(config, indent=1)}
    if scenario.calibrated:
        gain, offset = scenario.sensor.unit_gain, scenario.sensor.unit_offset_c
        calibration: dict[str, Any] = {"offset_c": -offset / gain, "gain": 1.0 / gain,
                                       "pixel_offset_c": pixel_offsets_c(scenario, sensor), "date": "sim"}
        serial = getattr(sensor, "serial", None)
        if isinstance(serial, str):
            calibration["serial"] = serial
        files["calibration.json"] = json.dumps(calibration)
    return files


def _plain_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def prepare_root(scenario: Scenario, sensor: Any, root: Path, firmware_dir: Path = FIRMWARE_DIR,
                 boards_dir: Path = BOARDS_DIR) -> None:
    """Deploy the firmware, board profiles, config and calibration into the unit's root folder."""
    root.mkdir(parents=True, exist_ok=True)
    for source in sorted(firmware_dir.glob("*.py")):
        shutil.copy2(source, root / source.name)
    if boards_dir.is_dir():
        (root / "boards").mkdir(exist_ok=True)
        for profile in sorted(boards_dir.glob("*.json")):
            shutil.copy2(profile, root / "boards" / profile.name)
    for name, text in unit_files(scenario, sensor).items():
        (root / name).write_text(text)


# ---------------------------------------------------------------- interpreters


def _read_exact(fd: int, n: int, proc: subprocess.Popen) -> bytes | None:
    chunks = []
    while n:
        ready, _, _ = select.select([fd], [], [], SILENCE_LIMIT_S)
        if not ready:
            proc.kill()
            raise SimError("the virtual unit stopped answering for %.0f s: the firmware hangs without "
                           "touching the clock or the bus" % SILENCE_LIMIT_S)
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _serve_micropython(host: UnitHost, root: Path, max_cycles: int | None, log: Path) -> None:
    to_unit_r, to_unit_w = os.pipe()
    from_unit_r, from_unit_w = os.pipe()
    env = dict(os.environ)
    env["MICROPYPATH"] = str(SHIM_DIR)
    command = [micropython_command(), "-X", "heapsize=%s" % HEAP, str(SHIM_DIR / "sim_main.py"),
               str(to_unit_r), str(from_unit_w), str(root), str(host.deadline_us // 1000),
               "-" if max_cycles is None else str(max_cycles)]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, pass_fds=(to_unit_r, from_unit_w), stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(root))
    os.close(to_unit_r)
    os.close(from_unit_w)
    try:
        while True:
            head = _read_exact(from_unit_r, HEADER.size, proc)
            if head is None:
                break
            kind, length, now_us = HEADER.unpack(head)
            payload = _read_exact(from_unit_r, length, proc) if length else b""
            if payload is None:
                break
            reply = host.handle(kind, now_us, payload)
            if reply is not None:
                status, data = reply
                os.write(to_unit_w, REPLY.pack(status, len(data)) + data)
    finally:
        os.close(from_unit_r)
        try:
            os.close(to_unit_w)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _serve_cpython(host: UnitHost, root: Path, max_cycles: int | None) -> None:
    """The same firmware and shim in this process: the shim's modules stand in for machine and
    time while the firmware runs, and the link calls the host directly."""
    firmware_names = {p.stem for p in root.glob("*.py")}
    replaced = {name: sys.modules.get(name) for name in (*SHIM_MODULES, "sim_main", *firmware_names)}
    saved_path = list(sys.path)
    saved_cwd = os.getcwd()
    try:
        for name in (*SHIM_MODULES, "sim_main", *firmware_names):
            sys.modules.pop(name, None)
        for name in SHIM_MODULES:
            _load_module(name, SHIM_DIR / (name + ".py"))
        simlink = sys.modules["simlink"]
        simlink.connect(simlink.DirectLink(host), 0, host.deadline_us)
        sim_main = _load_module("sim_main", SHIM_DIR / "sim_main.py")
        sys.path.insert(0, str(root))
        os.chdir(root)
        sim_main.run(max_cycles)
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        for name, module in replaced.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ---------------------------------------------------------------- scoring


SIDE_BY_SIDE_M = 0.3


def attribute(scene: scene_mod.Scene, verdicts: list[Verdict]) -> dict[int, list[Verdict]]:
    """Which subjects each verdict belongs to: PASS/FAIL to the nearest subject in view and anyone
    within SIDE_BY_SIDE_M of their distance; RETRY/FAULT to everyone in view at that moment."""
    owned: dict[int, list[Verdict]] = {i: [] for i in range(len(scene.people))}
    for verdict in verdicts:
        present = []
        for index, person in enumerate(scene.people):
            pos = person.position(verdict.t_s)
            if pos is not None and _in_view(scene.lens, pos):
                present.append((pos[1], index))
        if not present:
            continue
        if verdict.state in ("pass", "fail"):
            # the subject at the gate, and anyone standing beside them, sees the verdict
            nearest = min(present)[0]
            for z, index in present:
                if z <= nearest + SIDE_BY_SIDE_M:
                    owned[index].append(verdict)
        else:
            for _, index in present:
                owned[index].append(verdict)
    return owned


def _in_view(lens: scene_mod.Lens, pos: tuple[float, float]) -> bool:
    x, z = pos
    return abs(x) - 0.21 < lens.tan_half_x * z


def score(scenario: Scenario, scene: scene_mod.Scene, verdicts: list[Verdict]) -> list[SubjectResult]:
    owned = attribute(scene, verdicts)
    results = []
    for index, spec in enumerate(scenario.subjects):
        mine = owned[index]
        final = next((v for v in mine if v.state in ("pass", "fail")), None)
        if final is None:
            # RETRY / FAULT: the last one shown while the subject stood there tells them what to do
            final = mine[-1] if mine else None
        verdict = final.state if final else "none"
        results.append(SubjectResult(
            index=index, verdict=verdict, reason=final.reason if final else None, expect=spec.expect,
            measured_c=final.reading_c if final and final.state in ("pass", "fail") else None,
            true_c=spec.skin_c,
            time_to_verdict_s=(final.t_s - spec.arrive_s) if final else None))
    return results


def run(scenario: Scenario, interpreter: str = "micropython", sensor_factory: SensorFactory | None = None,
        firmware_dir: Path = FIRMWARE_DIR, boards_dir: Path = BOARDS_DIR, keep_frames: bool = True,
        max_cycles: int | None = None, workdir: Path | None = None,
        actions: list[tuple[float, Callable[[Any], None]]] | None = None) -> RunResult:
    """Run one scenario to its end on a fresh virtual unit. actions: (time s, fn(sensor)) pairs the
    host runs when the unit's virtual clock passes that time (e.g. sensor.inject("nack"))."""
    if interpreter not in ("micropython", "cpython"):
        raise SimError("unknown interpreter %r: use micropython or cpython" % interpreter)
    host = UnitHost(scenario, sensor_factory, keep_frames, actions)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thermogate-sim-") as tmp:
        base = workdir or Path(tmp)
        root = base / "unit"
        prepare_root(scenario, host.sensor, root, firmware_dir, boards_dir)
        log = base / "unit.log"
        if interpreter == "micropython":
            _serve_micropython(host, root, max_cycles, log)
            output = log.read_text(errors="replace")
        else:
            _serve_cpython(host, root, max_cycles)
            output = ""
    wall = time.monotonic() - started
    if host.crash:
        raise SimError("the firmware crashed at %.2f s of simulated time (%s); fix the firmware%s"
                       % (host.now_us / 1e6, host.crash, _tail(output)))
    if host.starved:
        raise SimError("the firmware starved its watchdog at %.2f s of simulated time (last feed at %s ms, "
                       "timeout %s ms): the main loop blocked" % (host.now_us / 1e6, host.starved.get("last_feed_ms"),
                                                                 host.starved.get("timeout_ms")))
    if host.end is None:
        raise SimError("the virtual unit exited without finishing the scenario%s" % _tail(output))
    subjects = score(scenario, host.scene, host.verdicts)
    return RunResult(scenario, subjects, host.verdicts, host.frames, host.timeline, host.end, wall,
                     host.now_us / 1e6, output)


def _tail(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return ("; the unit's last output: " + " | ".join(line.strip() for line in lines[-3:])) if lines else ""
