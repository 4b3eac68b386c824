"""Showing a fleet run: one live line per unit while working, a summary table or JSON at the end.

Live lines are drawn with rich on stderr, only when stderr is a terminal; NO_COLOR is honoured.
With --json, stdout carries exactly one JSON document and nothing else.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"


@dataclass
class UnitResult:
    port: str
    status: str = "pending"
    step: str = ""
    chip: str | None = None
    mac: str | None = None
    board: str | None = None
    release: str | None = None
    image: str | None = None  # "written" | "current" | None (deploy)
    copied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status in (STATUS_OK, STATUS_SKIPPED)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("step")
        data["seconds"] = round(self.seconds, 2)
        return data


def _colour_allowed() -> bool:
    return "NO_COLOR" not in os.environ


class Progress:
    """Thread-safe per-unit progress. `update(port, step, done, total)` from any job thread."""

    def __init__(self, ports: list[str], json_mode: bool, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.ports = ports
        self.json_mode = json_mode
        self.stream = stream or sys.stderr
        self.live = (self.stream.isatty() if live is None else live)
        self._lock = threading.Lock()
        self._rich_progress = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "Progress":
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream, no_color=not _colour_allowed(), highlight=False)
            from rich.table import Column

            port_width = max((len(p) for p in self.ports), default=10)
            self._rich_progress = RichProgress(
                TextColumn("{task.fields[port]}", style="bold", table_column=Column(no_wrap=True, min_width=port_width)),
                BarColumn(bar_width=24),
                TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._rich_progress.start()
            for port in self.ports:
                self._tasks[port] = self._rich_progress.add_task("waiting", total=1.0, port=port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich_progress is not None:
            self._rich_progress.stop()

    def update(self, port: str, step: str, done: float | None = None, total: float | None = None) -> None:
        if self._rich_progress is None:
            return
        with self._lock:
            fraction = None if done is None or not total else min(1.0, done / total)
            kwargs: dict[str, Any] = {"description": step}
            if fraction is not None:
                kwargs["completed"] = fraction
            self._rich_progress.update(self._tasks[port], **kwargs)

    def finish(self, result: UnitResult) -> None:
        if self._rich_progress is None:
            return
        with self._lock:
            text = {
                STATUS_OK: "[green]done[/]" if _colour_allowed() else "done",
                STATUS_SKIPPED: "already current",
                STATUS_FAILED: ("[red]FAILED[/] " if _colour_allowed() else "FAILED ") + _escape(result.error or ""),
            }.get(result.status, result.status)
            self._rich_progress.update(self._tasks[result.port], description=text, completed=1.0)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def summary_line(result: UnitResult, command: str) -> str:
    if result.status == STATUS_OK and command in ("flash", "deploy"):
        parts = []
        if result.image:
            parts.append(f"image {result.image}")
        parts.append(f"{len(result.copied)} file{'s' if len(result.copied) != 1 else ''} copied")
        if result.removed:
            parts.append(f"{len(result.removed)} removed")
        return "ok: " + ", ".join(parts)
    what = {
        STATUS_OK: "ok",
        STATUS_SKIPPED: "skipped (already at this release)" if command in ("flash", "deploy") else "ok",
        STATUS_FAILED: "FAILED",
    }.get(result.status, result.status)
    return what


def print_summary(command: str, results: list[UnitResult], release: str | None, out: TextIO | None = None,
                  columns: list[tuple[str, str]] | None = None) -> None:
    """A table on stdout (rich renders plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    out = out or sys.stdout
    console = Console(file=out, no_color=not _colour_allowed(), highlight=False, width=max(120, Console(file=out).width))
    title = f"host {command}" + (f" - release {release}" if release else "")
    table = Table(title=title, title_justify="left")
    columns = columns or [("port", "port"), ("chip", "chip"), ("mac", "MAC"), ("board", "board"), ("result", "result")]
    for key, label in columns:
        table.add_column(label, overflow="fold", no_wrap=key in ("port", "mac", "chip"))
    for r in results:
        row = []
        for key, _ in columns:
            if key == "result":
                text = summary_line(r, command)
                if r.status == STATUS_FAILED and r.error:
                    text += ": " + r.error
                elif r.notes:
                    text += " (" + "; ".join(r.notes) + ")"
                row.append(_escape(text))
            else:
                value = getattr(r, key, None) if hasattr(r, key) else r.details.get(key)
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, sort_keys=True, separators=(",", ":"))
                row.append(_escape("" if value is None else str(value)))
        table.add_row(*row)
    console.print(table)
    failed = sum(1 for r in results if not r.succeeded)
    console.print(_escape(f"{len(results) - failed} of {len(results)} units ok" + (f", {failed} failed" if failed else "")))


def print_json(command: str, results: list[UnitResult], release: str | None, started: float, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    doc = {
        "command": command,
        "release": release,
        "ok": all(r.succeeded for r in results),
        "seconds": round(time.monotonic() - started, 2),
        "units": [r.as_dict() for r in results],
    }
    out.write(json.dumps(doc, sort_keys=True) + "\n")
    out.flush()


def print_fleet_lines(results: list[UnitResult], out: TextIO | None = None) -> None:
    """`host fleet`: one plain line per unit (grep- and spreadsheet-friendly), then failures."""
    out = out or sys.stdout
    for r in results:
        if r.status == STATUS_FAILED:
            out.write(f"{r.port}  FAILED: {r.error}\n")
            continue
        counters = r.details.get("counters") or {}
        counter_text = ",".join(f"{k}={v}" for k, v in sorted(counters.items())) if isinstance(counters, dict) else str(counters)
        fields = [r.port, r.chip or "?", r.mac or "?", f"release={r.release or '(none)'}",
                  f"calibrated={r.details.get('calibration_date') or '?'}", f"counters={counter_text or '(none)'}"]
        out.write("  ".join(fields) + "\n")
    out.flush()
