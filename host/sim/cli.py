"""`host sim`: run a scenario on a virtual unit and report each subject's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from host.sim import scenario as scenario_mod


def _fmt(value: float | None, spec: str = "%.2f") -> str:
    return "-" if value is None else spec % value


@click.command("sim")
@click.argument("scenario_file", metavar="[SCENARIO.json]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--png", "png_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one thermal image per subject (at its verdict) into this folder.")
@click.option("--gif", "gif_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an animation of the whole run to this .gif file.")
@click.option("--interpreter", type=click.Choice(["micropython", "cpython"]), default="micropython",
              show_default=True, help="Run the firmware in the MicroPython unix port, or in this CPython "
                                      "process (for debugging).")
@click.option("--replay", "replay_file", metavar="FILE.npz", type=click.Path(dir_okay=False, path_type=Path),
              help="Instead of a scenario, run the firmware on the raw frames of FILE.npz (host monitor --save) "
                   "and compare its verdicts with the recorded unit's.")
def sim(scenario_file: Path | None, as_json: bool, png_dir: Path | None, gif_file: Path | None,
        interpreter: str, replay_file: Path | None = None) -> None:
    """Run SCENARIO.json (default: the built-in queue with a fever, a coffee cup, a person too far
    away and two people at once) on a virtual unit: the real firmware against the emulated sensor
    looking at a physically rendered scene. The exit status is 0 whether or not the verdicts match
    the expectations. With --replay, the firmware runs on a recording instead and its verdicts are
    printed next to the recorded unit's (docs/scenario.md)."""
    if replay_file is not None:
        _replay(replay_file, scenario_file, as_json, png_dir, gif_file, interpreter)
        return
    from host.sim import runner

    if gif_file is not None and gif_file.suffix.lower() != ".gif":
        raise click.BadParameter("the file name must end in .gif", param_hint="--gif")
    scenario = scenario_mod.load(scenario_file) if scenario_file else scenario_mod.builtin()
    if not as_json and sys.stderr.isatty():
        click.echo("running %s (%.0f s simulated) on the %s interpreter..."
                   % (scenario.name, scenario.duration_s, interpreter), err=True)
    result = runner.run(scenario, interpreter=interpreter, keep_frames=bool(png_dir or gif_file))
    written: list[str] = []
    if png_dir or gif_file:
        from host.sim import render

        if png_dir:
            written += [str(p) for p in render.write_pngs(result, png_dir)]
        if gif_file:
            render.write_gif(result, gif_file)
            written.append(str(gif_file))
    if as_json:
        click.echo(json.dumps(result.to_json()))
        for path in written:
            click.echo("wrote %s" % path, err=True)
        return
    _print_table(result)
    for path in written:
        click.echo("wrote %s" % path)


def _replay(replay_file: Path, scenario_file: Path | None, as_json: bool, png_dir: Path | None,
            gif_file: Path | None, interpreter: str) -> None:
    from host.sim import replay

    if scenario_file is not None:
        raise click.UsageError("give either SCENARIO.json or --replay FILE.npz, not both")
    if png_dir or gif_file:
        raise click.UsageError("--png and --gif draw rendered scenes; with --replay use host monitor's pictures")
    result = replay.run(replay_file, interpreter=interpreter)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        replay.print_report(result)


def _print_table(result) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="%s: %d subjects, %.0f s simulated in %.1f s"
                  % (result.scenario.name, len(result.subjects), result.virtual_s, result.wall_s))
    for column in ("#", "true skin C", "measured C", "verdict", "expected", "s to verdict", ""):
        table.add_column(column, justify="right" if column not in ("verdict", "expected", "") else "left")
    for s in result.subjects:
        verdict = s.verdict if s.reason is None else "%s (%s)" % (s.verdict, s.reason)
        mark = "[green]ok[/green]" if s.correct else "[red]MISMATCH[/red]"
        table.add_row(str(s.index), "%.2f" % s.true_c, _fmt(s.measured_c), verdict, s.expect,
                      _fmt(s.time_to_verdict_s, "%.1f"), mark)
    console.print(table)
    summary = result.summary()
    console.print("%d/%d as expected; false PASS %d, false FAIL %d; hottest-region error mean %s C, max %s C"
                  % (summary["correct"], summary["total"], summary["false_pass"], summary["false_fail"],
                     _fmt(summary["mean_abs_error_c"]), _fmt(summary["max_abs_error_c"])))
