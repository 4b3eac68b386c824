"""`host sim --replay FILE.npz`: run the real firmware on frames a unit recorded (`host monitor --save`).

The virtual unit is the one `host sim` uses (the firmware in the MicroPython unix port, or in
CPython), but its emulated MLX90640 holds the recording's EEPROM and, instead of measuring a
rendered scene, puts the recorded raw subpages into its RAM one after the other at the recorded
timing: frame k becomes ready (status bit 3, datasheet 10) (ticks_ms[k] - ticks_ms[0]) ms after the
firmware first polls the sensor, so its driver reads exactly the words the real unit read, with the
same spacing on its clock. The config.json and calibration.json the unit held when it was recorded
are deployed on the virtual unit.

Every subpage the firmware processes is matched to the recorded frame its driver read, and the
verdicts are compared with the states the live unit reported for the same frames. A verdict, on
either side, is a frame whose state is PASS, FAIL, RETRY or FAULT where the frame before showed
another state or reason: the recording holds only per-frame states, so the replay is judged the
same way.

Limits: the replayed unit boots fresh. A recording that starts while the unit holds a verdict, has
someone in view, or has a learned baseline (mode "baseline") can differ during its first seconds.
A recording made with `host monitor --every N` (N > 1) skips subpages the live unit processed; the
replay sees only the recorded ones (reported as skipped frames).
"""

from __future__ import annotations

import difflib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from host.errors import HostError
from host.sim import runner
from host.sim import scenario as scenario_mod
from host.virtual.sensor import SensorEmulator

VERDICT_STATES = ("PASS", "FAIL", "RETRY", "FAULT")
REASON_CHARS = 12  # framelink sends state and reason names in 12 bytes
BOOT_ALLOWANCE_S = 30.0  # virtual seconds the firmware may take to first poll the sensor
TICKS_MASK = 0x3FFFFFFF  # MicroPython's ticks_ms wraps at 2**30
MAX_STEP_MS = 600_000  # a longer gap between two frames is a reboot (ticks went back) or a stalled stream
_STATUS_REG, _RAM_BASE, _RAM_WORDS = 0x8000, 0x0400, 832
_STATUS_NEW_DATA = 0x0008


class RecordingError(HostError):
    """The file is not a usable recording (exit status 2, like any bad input)."""


class ReplayError(HostError):
    """The firmware failed during the replay (exit status 1, like `host sim`)."""

    exit_code = 1


@dataclass
class Recording:
    """The parts of a `host monitor --save` file that replay needs."""

    path: Path
    eeprom: list[int]
    frames: np.ndarray  # (N, 834) uint16
    offsets_s: np.ndarray  # (N,) seconds since the first frame, on the unit's clock
    counter: np.ndarray  # (N,)
    states: list[str]
    reasons: list[str]
    reading_c: np.ndarray  # (N,) float, NaN = none
    meta: dict[str, Any]

    @property
    def skipped_frames(self) -> int:
        """Subpages the live unit processed between recorded ones (monitor --every N > 1)."""
        steps = np.diff(self.counter.astype(np.int64))
        return int(np.sum(steps[steps > 1] - 1))


def load(path: str | Path) -> Recording:
    """Read and check a recording written by `host monitor --save`."""
    from host.monitor import load_recording

    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"recording {path} does not exist: give a file written by host monitor --save")
    try:
        rec = load_recording(path)
    except HostError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged zip/zlib stream surfaces as many types
        raise RecordingError(f"cannot read recording {path} ({type(exc).__name__}: {exc}): give a file written by "
                             "host monitor --save") from None
    frames = np.asarray(rec["frames"])
    if frames.ndim != 2 or frames.shape[1] != 834 or frames.shape[0] == 0:
        raise RecordingError(f"{path}: frames must be N x 834 raw words, got shape {frames.shape}: "
                             "record again with host monitor --save")
    n = frames.shape[0]
    eeprom = np.asarray(rec["eeprom"])
    if eeprom.shape != (832,):
        raise RecordingError(f"{path}: the EEPROM must be 832 words, got shape {eeprom.shape}: "
                             "record again with host monitor --save")
    for name in ("ticks_ms", "state"):
        if name not in rec or len(rec[name]) != n:
            raise RecordingError(f"{path}: '{name}' is missing or does not have one entry per frame: "
                                 "record again with host monitor --save")
    ticks = np.asarray(rec["ticks_ms"]).astype(np.int64)
    steps = (np.diff(ticks) & TICKS_MASK) if n > 1 else np.zeros(0, dtype=np.int64)
    if np.any(steps > MAX_STEP_MS):
        k = int(np.argmax(steps > MAX_STEP_MS))
        raise RecordingError(f"{path}: the unit's clock jumps by {steps[k] / 1000:.0f} s between frames {k} and "
                             f"{k + 1} (it rebooted or stopped streaming): record again, without the break")
    offsets = np.concatenate([[0], np.cumsum(steps)]) / 1000.0
    counter = np.asarray(rec.get("counter", np.arange(1, n + 1)))
    reasons = [str(r) for r in rec["reason"]] if "reason" in rec and len(rec["reason"]) == n else [""] * n
    reading = np.asarray(rec.get("reading_c", np.full(n, np.nan)), dtype=np.float64)
    return Recording(path, [int(w) for w in eeprom], frames.astype(np.uint16), offsets, counter,
                     [str(s).upper() for s in rec["state"]], reasons, reading, rec["meta"])


class ReplaySensor(SensorEmulator):
    """The register-level emulator with the recording's EEPROM whose measurements are the recorded
    subpages: each one is written to RAM whole (832 words: the pixels of both subpages as the live
    unit's sensor held them, and the auxiliary rows), with the recorded subpage in the status
    register and the new-data flag set, when its time comes. Bus faults, the control register and
    the status handshake stay the emulator's."""

    def __init__(self, recording: Recording, clock: Callable[[], float]) -> None:
        super().__init__(eeprom=recording.eeprom, clock=clock, netd_scale=0.0)
        self.recording = recording
        self.base_s: float | None = None  # virtual time of the firmware's first status poll
        self.next_index = 0  # next recorded frame to put into RAM
        self.in_ram = -1  # recorded frame now in RAM
        self.last_read = -1  # recorded frame the driver read last
        self.read = np.zeros(len(recording.frames), dtype=bool)
        self.control_mismatches = 0  # frames recorded with another control register (rate, resolution, pattern)

    def set_scene(self, object_c, ambient_c: float = 25.0, vdd: float = 3.3) -> None:
        """The scene is the recording: nothing to render."""

    def update(self) -> None:
        with self._lock:
            if self._unplugged or self.base_s is None:
                return
            now = self.clock()
            frames, offsets = self.recording.frames, self.recording.offsets_s
            while self.next_index < len(frames) and now + 1e-9 >= self.base_s + offsets[self.next_index]:
                words = frames[self.next_index]
                self._ram[:] = words[:_RAM_WORDS]
                # status register 0x8000: bits 0..2 = the subpage just measured, bit 3 = new data in RAM
                self._status = (self._status & ~0x0007) | (int(words[833]) & 1) | _STATUS_NEW_DATA
                if int(words[832]) != self._control:
                    self.control_mismatches += 1
                self.in_ram = self.next_index
                self.next_index += 1
                self.measurements += 1

    def bus_read(self, address: int, register: int, nbytes: int) -> bytes:
        with self._lock:
            if self.base_s is None and register == _STATUS_REG and address == self.address:
                self.base_s = self.clock()
            data = super().bus_read(address, register, nbytes)
            if register < _RAM_BASE + _RAM_WORDS and register + nbytes // 2 > _RAM_BASE and self.in_ram >= 0:
                self.last_read = self.in_ram
                self.read[self.in_ram] = True
            return data

    @property
    def served_all(self) -> bool:
        return self.next_index >= len(self.recording.frames)


@dataclass
class ReplayFrame:
    """One subpage the replayed firmware processed: the recorded frame its driver read."""

    t_s: float  # virtual time
    index: int  # recorded frame (-1: before any was read)
    state: str
    reason: str
    reading_c: float | None


class ReplayHost(runner.UnitHost):
    """The simulator's host side with the recording in place of the scene."""

    def __init__(self, recording: Recording, scenario: scenario_mod.Scenario) -> None:
        self.recording = recording
        super().__init__(scenario, lambda _scenario, clock: ReplaySensor(recording, clock), keep_frames=False)
        self.replayed: list[ReplayFrame] = []
        self.unit_verdicts: list[tuple[int, runner.Verdict]] = []  # (recorded frame, on_verdict)
        period = 1.0 / float(recording.meta.get("refresh_hz") or scenario.sensor.refresh_hz)
        self.tail_s = max(2.0, 4 * period)
        self._end_set = False

    def _update_scene(self) -> None:
        """No scene: the frames come from the recording."""

    def handle(self, kind: int, now_us: int, payload: bytes) -> tuple[int, bytes] | None:
        sensor: ReplaySensor = self.sensor
        if kind != runner.EVENT:
            # every recorded frame was put into RAM, the last one read and processed: the end
            last = len(self.recording.frames) - 1
            if sensor.served_all and self.replayed and self.replayed[-1].index == last:
                self.deadline_us = min(self.deadline_us, max(now_us, self.now_us))
        reply = super().handle(kind, now_us, payload)
        if sensor.base_s is not None and not self._end_set:
            # a recorded frame the firmware never reads must not keep the run going forever
            self._end_set = True
            end_s = sensor.base_s + float(self.recording.offsets_s[-1]) + self.tail_s
            self.deadline_us = min(self.deadline_us, int(end_s * 1e6))
        return reply

    def _event(self, event: dict[str, Any]) -> None:
        super()._event(event)
        kind = event.get("kind")
        index = self.sensor.last_read
        if kind == "frame":
            state, info = runner._frame_args(event.get("args", []))
            reading = info.get("reading_c")
            self.replayed.append(ReplayFrame(self.now_us / 1e6, index, state.upper(), _reason(info.get("reason")),
                                             float(reading) if isinstance(reading, (int, float)) else None))
        elif kind == "verdict" and self.verdicts:
            self.unit_verdicts.append((index, self.verdicts[-1]))


def _reason(value: Any) -> str:
    return "" if value is None else str(value)[:REASON_CHARS]


@dataclass
class VerdictEvent:
    """A verdict on the recording's timeline (t_s: seconds after the first recorded frame)."""

    frame: int
    t_s: float
    state: str
    reason: str
    reading_c: float | None  # the frame's hottest-region reading (what monitor records)
    verdict_c: float | None = None  # replay only: the reading the unit decided on (on_verdict)

    def to_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "t_s": round(self.t_s, 3), "state": self.state, "reason": self.reason or None,
                "reading_c": _round(self.reading_c)}


def _key(v: VerdictEvent) -> tuple[str, str]:
    return v.state, v.reason


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 2)


def verdicts_from_states(frames: list[int], states: list[str], reasons: list[str], readings: list[float | None],
                         offsets_s: np.ndarray) -> list[VerdictEvent]:
    """Frames where the unit entered PASS/FAIL/RETRY/FAULT (or changed its RETRY/FAULT reason)."""
    out: list[VerdictEvent] = []
    previous: tuple[str, str] | None = None
    for frame, state, reason, reading in zip(frames, states, reasons, readings):
        key = (state, reason[:REASON_CHARS])
        if state in VERDICT_STATES and key != previous:
            t_s = float(offsets_s[frame]) if frame >= 0 else 0.0
            out.append(VerdictEvent(frame, t_s, state, key[1], reading))
        previous = key
    return out


@dataclass
class ReplayResult:
    recording: Recording
    interpreter: str
    replayed: list[VerdictEvent]
    recorded: list[VerdictEvent]
    frames_compared: int
    frames_same_state: int
    frames_not_read: int
    control_mismatches: int
    timing_error_ms: float | None  # largest gap between replayed and recorded frame spacing
    config_source: str
    wall_s: float
    virtual_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdicts_match(self) -> bool:
        """The same verdicts (state and reason) in the same order; how far apart in time they fall
        is reported separately (max_verdict_shift_s: 0 when every recorded frame was replayed)."""
        return [_key(v) for v in self.replayed] == [_key(v) for v in self.recorded]

    def pairs(self) -> list[tuple[VerdictEvent | None, VerdictEvent | None]]:
        """Replayed and recorded verdicts side by side: the longest common run of equal verdicts
        paired, the rest on rows of their own, in time order."""
        a, b = self.replayed, self.recorded
        rows: list[tuple[VerdictEvent | None, VerdictEvent | None]] = []
        matcher = difflib.SequenceMatcher(a=[_key(v) for v in a], b=[_key(v) for v in b], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                rows += list(zip(a[i1:i2], b[j1:j2]))
            else:
                rows += [(v, None) for v in a[i1:i2]] + [(None, v) for v in b[j1:j2]]
        return sorted(rows, key=lambda row: min(v.t_s for v in row if v is not None))

    def summary(self) -> dict[str, Any]:
        paired = [(a, b) for a, b in self.pairs() if a is not None and b is not None]
        shift = max((abs(a.t_s - b.t_s) for a, b in paired), default=None)
        return {"match": self.verdicts_match, "verdicts_replayed": len(self.replayed),
                "verdicts_recorded": len(self.recorded), "verdicts_matching": len(paired),
                "max_verdict_shift_s": None if shift is None else round(shift, 3),
                "frames": len(self.recording.frames), "frames_compared": self.frames_compared,
                "frames_same_state": self.frames_same_state, "frames_not_read": self.frames_not_read,
                "frames_skipped_in_recording": self.recording.skipped_frames,
                "control_register_mismatches": self.control_mismatches,
                "max_timing_error_ms": self.timing_error_ms}

    def to_json(self) -> dict[str, Any]:
        meta = self.recording.meta
        replayed = []
        for v in self.replayed:
            item = v.to_json()
            item["verdict_c"] = _round(v.verdict_c)
            replayed.append(item)
        return {
            "recording": {"file": str(self.recording.path), "serial": meta.get("serial"),
                          "recorded": meta.get("recorded"), "refresh_hz": meta.get("refresh_hz"),
                          "frames": len(self.recording.frames),
                          "duration_s": round(float(self.recording.offsets_s[-1]), 3),
                          "config": self.config_source},
            "interpreter": self.interpreter,
            "verdicts": replayed,
            "recorded_verdicts": [v.to_json() for v in self.recorded],
            "summary": self.summary(),
            "notes": self.notes,
        }


def _unit_files(recording: Recording) -> tuple[dict[str, str | None], str, list[str]]:
    """config.json / calibration.json as the unit held them (None = the unit had no such file)."""
    meta = recording.meta
    notes: list[str] = []
    files: dict[str, str | None] = {}
    if "config" in meta:
        files["config.json"] = meta["config"]
        source = "recorded" if meta["config"] is not None else "absent on the unit"
    else:
        refresh = meta.get("refresh_hz") or 8
        files["config.json"] = json.dumps({"board": runner.SIM_BOARD, "refresh_hz": refresh})
        source = "default (not in the recording)"
        notes.append("the recording does not hold the unit's config.json: replayed with the simulator's "
                     "board and the recorded refresh rate")
    files["calibration.json"] = meta.get("calibration")
    if "calibration" not in meta:
        notes.append("the recording does not hold the unit's calibration.json: replayed without one")
    return files, source, notes


def _replay_scenario(recording: Recording) -> scenario_mod.Scenario:
    refresh = float(recording.meta.get("refresh_hz") or 8.0)
    if refresh not in scenario_mod.REFRESH_CHOICES:
        refresh = 8.0
    span = float(recording.offsets_s[-1])
    return scenario_mod.parse({"name": recording.path.stem, "calibrated": False, "sensor": {"refresh_hz": refresh},
                               "duration_s": min(3600.0, BOOT_ALLOWANCE_S + span + 10.0)},
                              default_name=recording.path.stem)


def run(recording: Recording | str | Path, interpreter: str = "micropython",
        workdir: Path | None = None) -> ReplayResult:
    """Replay a recording through the firmware on a fresh virtual unit and compare the verdicts."""
    if not isinstance(recording, Recording):
        recording = load(recording)
    if interpreter not in ("micropython", "cpython"):
        raise RecordingError("unknown interpreter %r: use micropython or cpython" % interpreter)
    if float(recording.offsets_s[-1]) + BOOT_ALLOWANCE_S + 10.0 > 3600.0:
        raise RecordingError(f"{recording.path} spans {recording.offsets_s[-1]:.0f} s: replay takes recordings up to "
                             "about an hour; record a shorter stretch")
    scenario = _replay_scenario(recording)
    files, source, notes = _unit_files(recording)
    try:
        host = ReplayHost(recording, scenario)
    except HostError as exc:
        raise RecordingError(f"{recording.path}: the recorded EEPROM cannot drive the emulated sensor ({exc})"
                             ) from None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="thermogate-replay-") as tmp:
        base = workdir or Path(tmp)
        root = base / "unit"
        runner.prepare_root(scenario, host.sensor, root)
        for name, text in files.items():
            target = root / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text)
        log = base / "unit.log"
        if interpreter == "micropython":
            runner._serve_micropython(host, root, None, log)
            output = log.read_text(errors="replace")
        else:
            runner._serve_cpython(host, root, None)
            output = ""
    wall = time.monotonic() - started
    if host.crash:
        raise ReplayError("the firmware crashed at %.2f s of replay (%s); fix the firmware%s"
                          % (host.now_us / 1e6, host.crash, runner._tail(output)))
    if host.starved:
        raise ReplayError("the firmware starved its watchdog at %.2f s of replay: the main loop blocked"
                          % (host.now_us / 1e6))
    if host.end is None:
        raise ReplayError("the virtual unit exited before the end of the recording%s" % runner._tail(output))
    return _compare(recording, host, interpreter, source, notes, wall)


def _compare(recording: Recording, host: ReplayHost, interpreter: str, source: str, notes: list[str],
             wall_s: float) -> ReplayResult:
    sensor: ReplaySensor = host.sensor
    done = [f for f in host.replayed if f.index >= 0]
    replayed = verdicts_from_states([f.index for f in done], [f.state for f in done], [f.reason for f in done],
                                    [f.reading_c for f in done], recording.offsets_s)
    decided = {index: verdict for index, verdict in host.unit_verdicts}
    for v in replayed:
        unit_verdict = decided.get(v.frame)
        if unit_verdict is not None and unit_verdict.state.upper() == v.state:
            v.verdict_c = unit_verdict.reading_c
    n = len(recording.frames)
    recorded = verdicts_from_states(list(range(n)), recording.states, recording.reasons,
                                    [None if np.isnan(r) else float(r) for r in recording.reading_c],
                                    recording.offsets_s)
    same = sum(1 for f in done if (f.state, f.reason) == (recording.states[f.index],
                                                          recording.reasons[f.index][:REASON_CHARS]))
    notes = list(notes)
    if recording.skipped_frames:
        notes.append("the recording skips %d subpages the live unit processed (monitor --every): the replayed "
                     "unit sees only the recorded ones" % recording.skipped_frames)
    if sensor.control_mismatches:
        notes.append("%d frames were recorded with another control register than the replayed firmware set "
                     "(refresh rate, resolution or pattern): check the recorded config" % sensor.control_mismatches)
    not_read = int(np.sum(~sensor.read))
    if not done:
        said = sorted({"%s (%s)" % (v.state.upper(), v.reason) if v.reason else v.state.upper() for v in host.verdicts})
        notes.append("the replayed firmware processed none of the recorded frames (it showed %s): check the "
                     "recorded config.json and calibration.json" % (", ".join(said) or "no verdict"))
    elif not_read:
        notes.append("the replayed firmware did not read %d recorded frames (it was not polling the sensor "
                     "when they were in RAM)" % not_read)
    timing = None
    if done:
        # the unit's clock when it processed each frame, replayed against recorded (both from the first)
        replay_t = np.array([f.t_s for f in done]) - done[0].t_s
        recorded_t = recording.offsets_s[[f.index for f in done]] - recording.offsets_s[done[0].index]
        timing = round(float(np.max(np.abs(replay_t - recorded_t))) * 1000, 1)
    return ReplayResult(recording, interpreter, replayed, recorded, len(done), same, not_read,
                        sensor.control_mismatches, timing, source, wall_s, host.now_us / 1e6, notes)


def print_report(result: ReplayResult) -> None:
    """The verdict timeline, replayed next to recorded, and a summary (human output)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    rec = result.recording
    meta = rec.meta
    table = Table(title="replay of %s: %d subpages over %.1f s (sensor %s, %s Hz, recorded %s); firmware on %s, "
                        "%.1f s simulated in %.1f s"
                  % (rec.path.name, len(rec.frames), rec.offsets_s[-1], meta.get("serial", "?"),
                     meta.get("refresh_hz", "?"), meta.get("recorded", "?"), result.interpreter, result.virtual_s,
                     result.wall_s))
    for column in ("t s", "replayed", "verdict C", "recorded", "reading C", "shift s", ""):
        table.add_column(column, justify="left" if column in ("replayed", "recorded", "") else "right")
    for mine, theirs in result.pairs():
        first = theirs or mine
        assert first is not None
        same = mine is not None and theirs is not None
        table.add_row("%.2f" % first.t_s, _label(mine), _fmt(mine.verdict_c if mine else None), _label(theirs),
                      _fmt(theirs.reading_c if theirs else None),
                      "%+.2f" % (mine.t_s - theirs.t_s) if mine and theirs else "-",
                      "[green]same[/green]" if same else "[red]differs[/red]")
    console.print(table)
    s = result.summary()
    console.print("verdicts: %d replayed, %d recorded, %d the same (shifted by up to %s s) -> %s; "
                  "per-frame state equal on %d of %d frames "
                  "read (%d recorded frames not read); frame timing within %s ms of the recording; config: %s"
                  % (s["verdicts_replayed"], s["verdicts_recorded"], s["verdicts_matching"],
                     "-" if s["max_verdict_shift_s"] is None else "%g" % s["max_verdict_shift_s"],
                     "SAME VERDICTS as the live unit" if s["match"] else "the verdicts DIFFER from the live unit",
                     s["frames_same_state"], s["frames_compared"], s["frames_not_read"],
                     "-" if s["max_timing_error_ms"] is None else "%g" % s["max_timing_error_ms"],
                     result.config_source))
    for note in result.notes:
        console.print("note: " + note)


def _label(v: VerdictEvent | None) -> str:
    if v is None:
        return "-"
    return v.state if not v.reason else "%s (%s)" % (v.state, v.reason)


def _fmt(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else "%.2f" % value
