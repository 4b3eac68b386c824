"""Acceptance figures for the gate unit, measured with the simulator over many seeds.

    python -m host.sim.evaluate [--seeds N] [--interpreter micropython|cpython] [--json]
    python -m host.sim.evaluate --dilution

Scenario sets (each seed draws its own unit, subjects and noise):
- screening: calibrated unit, 55 deg lens, subjects at 0.3-0.8 m, skin either >= 0.5 C below the
  decision line (expect pass), >= 0.5 C above it (expect fail) or in between (any); the same with
  the 110 deg lens at 0.3-0.45 m (its working distance); the same as a tight queue (4 s between
  arrivals: the next one is in view, often in front of the last one, before the last one left);
- blackbody: no calibration file, unit_offset_c up to +-2 C, a blackbody in view; the same queue
  (once with the unit's gain and pixel-offset errors left uncorrected too, once with the offset alone);
- blackbody hidden: someone parks a box in front of the reference: FAULT within 2 s;
- distractors alone (cup, lamp, radiator, no people): never PASS or FAIL;
- crowding: two people at once (RETRY) and one person beyond the working distance (RETRY).
It prints false PASS / false FAIL counts, the hottest-region error (mean, 95th percentile) and the
time to verdict. Figures, not assertions: tests/host/test_sim_unit.py runs a few seeds.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from host.sim import runner
from host.sim.scenario import Scenario, parse

THRESHOLD_C = 38.0
SKIN_TO_CORE_C = 1.0
LINE_SKIN_C = THRESHOLD_C - SKIN_TO_CORE_C  # skin temperature of the decision line
GAP_S = 7.0  # between arrivals: walk in (1.6 s), stand (3.5 s), walk off (1 s), ~1 s of empty view
TIGHT_GAP_S = 4.0  # the next one walks up while the last one is still in view (and in front of them)
WORKING_RANGE_M = 1.0  # firmware default max_distance_m: the time to verdict also counts from here


def _expect(skin_c: float) -> str:
    if skin_c <= LINE_SKIN_C - 0.5:
        return "pass"
    if skin_c >= LINE_SKIN_C + 0.5:
        return "fail"
    return "any"


def queue(seed: int, n: int = 6, calibrated: bool = True, blackbody: bool = False,
          fov_deg: int = 55, refresh_hz: float = 8.0, pixel_offset_sigma_c: float = 0.2,
          gain_spread: float = 0.03, distance_m: tuple[float, float] = (0.3, 0.8), gap_s: float = GAP_S) -> Scenario:
    """A queue of n subjects (0.3-0.8 m by default) with skin temperatures around the decision line;
    gap_s between arrivals (below ~6.6 s the next one walks in before the last one is out of view)."""
    rng = np.random.default_rng([seed, 1])
    subjects = []
    for i in range(n):
        kind = rng.choice(["normal", "normal", "fever", "near"])
        if kind == "normal":
            skin = LINE_SKIN_C - rng.uniform(0.5, 2.5)
        elif kind == "fever":
            skin = LINE_SKIN_C + rng.uniform(0.5, 2.0)
        else:
            skin = LINE_SKIN_C + rng.uniform(-0.5, 0.5)
        skin = round(float(skin), 2)
        subjects.append({"arrive_s": 2.0 + i * gap_s, "dwell_s": 3.5, "distance_m": round(float(rng.uniform(*distance_m)), 3),
                         "x_offset_m": round(float(rng.uniform(-0.04, 0.04)), 3), "skin_c": skin,
                         "glasses": bool(rng.random() < 0.15), "expect": _expect(skin)})
    document: dict[str, Any] = {
        "name": "queue-%d" % seed, "seed": seed,
        "sensor": {"fov_deg": fov_deg, "refresh_hz": refresh_hz, "ambient_c": round(float(rng.uniform(20.0, 28.0)), 1),
                   "unit_offset_c": round(float(rng.uniform(-2.0, 2.0)), 2),
                   "unit_gain": round(float(rng.uniform(1 - gain_spread, 1 + gain_spread)), 3),
                   "pixel_offset_sigma_c": pixel_offset_sigma_c,
                   "netd_scale": 1.0},
        "calibrated": calibrated,
        "config": {"mode": "absolute", "threshold_c": THRESHOLD_C, "skin_to_core_offset_c": SKIN_TO_CORE_C},
        "subjects": subjects,
    }
    if blackbody:
        # 4 x 4 pixels (about 13 cm at 3 m): its 2 x 2 inner pixels average out their own
        # uncalibrated pixel offsets, which a 3 x 3 patch's single inner pixel cannot
        document["blackbody"] = {"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 4}
    return parse(document)


def distractors_alone(seed: int) -> Scenario:
    rng = np.random.default_rng([seed, 2])
    return parse({
        "name": "distractors-%d" % seed, "seed": seed, "duration_s": 12.0,
        "sensor": {"ambient_c": round(float(rng.uniform(20.0, 28.0)), 1)},
        "distractors": [
            {"kind": "cup", "temperature_c": round(float(rng.uniform(50, 75)), 1), "col": int(rng.integers(4, 28)),
             "row": int(rng.integers(14, 22)), "from_s": 1.0, "to_s": 11.0},
            {"kind": "lamp", "temperature_c": round(float(rng.uniform(38, 60)), 1), "col": int(rng.integers(2, 30)),
             "row": int(rng.integers(1, 6)), "from_s": 3.0},
            {"kind": "radiator", "temperature_c": round(float(rng.uniform(35, 60)), 1), "col": 7, "row": 18,
             "from_s": 5.0},
        ],
    })


def crowding(seed: int) -> Scenario:
    rng = np.random.default_rng([seed, 3])
    normal = round(float(LINE_SKIN_C - rng.uniform(0.8, 2.0)), 2)
    far = round(float(rng.uniform(1.3, 2.0)), 2)
    return parse({
        "name": "crowding-%d" % seed, "seed": seed,
        "config": {"mode": "absolute", "threshold_c": THRESHOLD_C, "skin_to_core_offset_c": SKIN_TO_CORE_C},
        "subjects": [
            {"arrive_s": 2.0, "dwell_s": 3.5, "distance_m": 0.6, "x_offset_m": -0.2, "skin_c": normal, "expect": "retry"},
            {"arrive_s": 2.0, "dwell_s": 3.5, "distance_m": 0.65, "x_offset_m": 0.21, "skin_c": normal + 0.3,
             "expect": "retry"},
            {"arrive_s": 8.0, "dwell_s": 3.5, "distance_m": far, "skin_c": normal, "expect": "retry"},
        ],
    })


def blackbody_hidden(seed: int) -> tuple[Scenario, float]:
    """A box at ambient is put in front of the blackbody at hide_s (a radiator at ambient + 1 C, 2.5 m
    away, covering the reference). Returns (scenario, hide_s)."""
    rng = np.random.default_rng([seed, 4])
    hide_s = round(float(rng.uniform(3.0, 5.0)), 2)
    ambient = round(float(rng.uniform(20.0, 28.0)), 1)
    return parse({
        "name": "blackbody-hidden-%d" % seed, "seed": seed, "duration_s": hide_s + 4.0,
        "sensor": {"ambient_c": ambient, "unit_offset_c": round(float(rng.uniform(-2.0, 2.0)), 2)},
        "calibrated": False,
        "blackbody": {"temperature_c": 40.0, "col": 28, "row": 1, "size_px": 3},
        "distractors": [{"kind": "radiator", "temperature_c": ambient + 1.0, "col": 28, "row": 2, "from_s": hide_s}],
    }), hide_s


@dataclass
class Figures:
    subjects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    distractor_verdicts: int = 0
    distractor_runs: int = 0
    crowd: list[tuple[str, str]] = field(default_factory=list)  # (case, verdict)
    fault_delays_s: list[float | None] = field(default_factory=list)
    wall_s: float = 0.0
    virtual_s: float = 0.0

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in sorted({s["group"] for s in self.subjects}):
            rows = [s for s in self.subjects if s["group"] == group]
            errors = np.array([abs(s["measured_c"] - s["true_c"]) for s in rows
                               if s["measured_c"] is not None and s["verdict"] in ("pass", "fail")])
            times = np.array([s["time_to_verdict_s"] for s in rows
                              if s["time_to_verdict_s"] is not None and s["verdict"] in ("pass", "fail")])
            from_range = np.array([s["from_range_s"] for s in rows
                                   if s["from_range_s"] is not None and s["verdict"] in ("pass", "fail")])
            should_fail = [s for s in rows if s["expect"] == "fail"]
            should_pass = [s for s in rows if s["expect"] == "pass"]
            out[group] = {
                "subjects": len(rows),
                "fever_subjects": len(should_fail),
                "false_pass": sum(1 for s in should_fail if s["verdict"] == "pass"),
                "fever_not_failed": sum(1 for s in should_fail if s["verdict"] != "fail"),
                "normal_subjects": len(should_pass),
                "false_fail": sum(1 for s in should_pass if s["verdict"] == "fail"),
                "false_fail_pct": round(100.0 * sum(1 for s in should_pass if s["verdict"] == "fail")
                                        / max(len(should_pass), 1), 2),
                "no_verdict": sum(1 for s in rows if s["verdict"] not in ("pass", "fail")),
                "error_mean_c": round(float(errors.mean()), 3) if errors.size else None,
                "error_p95_c": round(float(np.percentile(errors, 95)), 3) if errors.size else None,
                "error_max_c": round(float(errors.max()), 3) if errors.size else None,
                "time_to_verdict_max_s": round(float(times.max()), 2) if times.size else None,
                "time_to_verdict_median_s": round(float(np.median(times)), 2) if times.size else None,
                "time_from_1m_max_s": round(float(from_range.max()), 2) if from_range.size else None,
            }
        out["distractors_alone"] = {"runs": self.distractor_runs, "pass_or_fail_verdicts": self.distractor_verdicts}
        for case in ("two_people", "too_far"):
            verdicts = [v for c, v in self.crowd if c == case]
            out[case] = {"subjects": len(verdicts), "retry": sum(1 for v in verdicts if v.startswith("retry")),
                         "verdicts": sorted(set(verdicts))}
        delays = [d for d in self.fault_delays_s if d is not None]
        out["blackbody_hidden"] = {"runs": len(self.fault_delays_s),
                                   "fault_within_2s": sum(1 for d in delays if d <= 2.0),
                                   "max_delay_s": round(max(delays), 2) if delays else None}
        out["wall_s"] = round(self.wall_s, 1)
        out["virtual_s"] = round(self.virtual_s, 1)
        if self.notes:
            out["notes"] = self.notes
        return out


def _collect(figures: Figures, group: str, result: runner.RunResult) -> None:
    figures.wall_s += result.wall_s
    figures.virtual_s += result.virtual_s
    from host.sim.scene import WALK_SPEED_MPS

    for s in result.subjects:
        spec = result.scenario.subjects[s.index]
        walk_in_s = max(0.0, WORKING_RANGE_M - spec.distance_m) / WALK_SPEED_MPS
        figures.subjects.append({"group": group, "verdict": s.verdict, "expect": s.expect, "true_c": s.true_c,
                                 "measured_c": s.measured_c, "time_to_verdict_s": s.time_to_verdict_s,
                                 "from_range_s": None if s.time_to_verdict_s is None else s.time_to_verdict_s + walk_in_s,
                                 "seed": result.scenario.seed, "index": s.index})


def evaluate(seeds: list[int], interpreter: str = "micropython", progress: Any = None) -> Figures:
    figures = Figures()
    for seed in seeds:
        def note(text: str) -> None:
            if progress:
                progress(text)

        note("seed %d: calibrated queue" % seed)
        _collect(figures, "calibrated_55deg", runner.run(queue(seed), interpreter, keep_frames=False))
        note("seed %d: calibrated queue, 110 deg lens at 0.3-0.45 m" % seed)
        _collect(figures, "calibrated_110deg_0.3-0.45m", runner.run(queue(seed + 200000, fov_deg=110,
                                                                          distance_m=(0.3, 0.45)),
                                                                   interpreter, keep_frames=False))
        note("seed %d: tight queue (%.1f s between arrivals)" % (seed, TIGHT_GAP_S))
        _collect(figures, "calibrated_55deg_tight_queue", runner.run(queue(seed + 300000, gap_s=TIGHT_GAP_S),
                                                                     interpreter, keep_frames=False))
        note("seed %d: blackbody queue" % seed)
        _collect(figures, "blackbody_uncalibrated", runner.run(queue(seed + 100000, calibrated=False, blackbody=True),
                                                               interpreter, keep_frames=False))
        note("seed %d: blackbody queue, offset error only" % seed)
        _collect(figures, "blackbody_uncalibrated_offset_only",
                 runner.run(queue(seed + 100000, calibrated=False, blackbody=True, pixel_offset_sigma_c=0.0,
                                  gain_spread=0.0), interpreter, keep_frames=False))
        note("seed %d: distractors" % seed)
        result = runner.run(distractors_alone(seed), interpreter, keep_frames=False)
        figures.distractor_runs += 1
        figures.distractor_verdicts += sum(1 for v in result.verdicts if v.state in ("pass", "fail"))
        note("seed %d: crowding" % seed)
        result = runner.run(crowding(seed), interpreter, keep_frames=False)
        for s in result.subjects:
            case = "too_far" if s.index == 2 else "two_people"
            figures.crowd.append((case, s.verdict if s.reason is None else "%s:%s" % (s.verdict, s.reason)))
        note("seed %d: blackbody hidden" % seed)
        scenario, hide_s = blackbody_hidden(seed)
        result = runner.run(scenario, interpreter, keep_frames=True)
        fault = next((f.t_s for f in result.frames if f.t_s >= hide_s and f.state == "fault"), None)
        figures.fault_delays_s.append(None if fault is None else fault - hide_s)
    return figures


def _dilution() -> None:
    from host.sim.scene import dilution_table

    for fov in (55, 110):
        print("spot dilution, %d deg lens, skin 35.5 C on 24 C, noise-free (deg C below skin_c):" % fov)
        print("  distance_m  pixel_mm  hottest_1  mean_hottest_3  mean_hottest_4")
        for row in dilution_table([0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5], fov_deg=fov, top_n=(1, 3, 4)):
            print("  %10.2f  %8.1f  %9.2f  %14.2f  %14.2f" % (row["distance_m"], row["pixel_mm"], row["top1_drop_c"],
                                                             row["top3_drop_c"], row["top4_drop_c"]))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m host.sim.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--interpreter", choices=("micropython", "cpython"), default="micropython")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--dilution", action="store_true", help="print the spot-dilution table and stop")
    args = parser.parse_args(argv)
    if args.dilution:
        _dilution()
        return 0
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    figures = evaluate(seeds, args.interpreter, progress=lambda text: print(text, file=sys.stderr))
    report = figures.report()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            print("%s: %s" % (key, json.dumps(value)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
