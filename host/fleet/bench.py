"""Parallel scaling of `host flash` on virtual units: `python -m host.fleet.bench --units 1,8`.

For each fleet size N it starts `host virtual --units N` on fresh roots, times one complete
`host flash` of all N units (image written, files deployed, self-report read) and a second run
(everything current, so skipped), and prints the figures. The target the issue sets (8 units in
under 2.5x the time of 1) is printed next to the measurement, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host.errors import HostError
from host.virtual.image import build_image


class VirtualUnits:
    """`host virtual` in a child process; `units` holds its JSON lines (port, root, chip, mac, ...)."""

    def __init__(self, count: int, root: Path, chip: str | None = None, fault: str | None = None,
                 timeout: float = 60.0, uart_paced: bool = False) -> None:
        cmd = [sys.executable, "-m", "host", "virtual", "--units", str(count), "--root", str(root)]
        if uart_paced:
            cmd.append("--paced-uart")
        if chip:
            cmd += ["--chip", chip]
        if fault:
            cmd += ["--fault", fault]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.units: list[dict] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while len(self.units) < count:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                self.close()
                raise HostError(f"host virtual exited before listing {count} units: {err.strip()[-500:]}")
            line = line.strip()
            if line.startswith("{"):
                self.units.append(json.loads(line))
            if time.monotonic() > deadline:
                self.close()
                raise HostError(f"host virtual listed only {len(self.units)} of {count} units in {timeout:.0f} s")

    @property
    def ports(self) -> list[str]:
        return [u["port"] for u in self.units]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> "VirtualUnits":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_command(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    env = dict(os.environ, **(env or {}))
    env.pop("NO_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - started


def run(sizes: list[int], image_size: int, jobs: int | None, baud: int | None = None) -> list[dict]:
    """baud: flash at this baud rate on units whose UART is paced like a real one; None = loopback
    speed (fixed costs dominate, which says little about a real fleet)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="thermogate-bench-") as tmp:
        image_path = Path(tmp) / "micropython.bin"
        image_path.write_bytes(build_image("esp32", image_size))
        for n in sizes:
            root = Path(tmp) / f"units-{n}"
            with VirtualUnits(n, root, uart_paced=baud is not None) as units:
                args = ["flash", "--firmware", str(image_path), "--json", "--jobs", str(jobs or n)]
                if baud is not None:
                    args += ["--baud", str(baud)]
                for port in units.ports:
                    args += ["--port", port]
                first, t_first = host_command(*args)
                second, t_second = host_command(*args)
            ok = first.returncode == 0 and second.returncode == 0
            rows.append({"units": n, "first_s": round(t_first, 2), "second_s": round(t_second, 2), "ok": ok,
                         "error": None if ok else (first.stderr or second.stderr).strip()[-300:]})
            print(f"{n} unit(s): first run {t_first:6.1f} s, second run (all current) {t_second:5.1f} s"
                  + ("" if ok else "  FAILED: " + rows[-1]["error"]), flush=True)
    if len(rows) >= 2 and rows[0]["first_s"] > 0:
        base, last = rows[0], rows[-1]
        ratio = last["first_s"] / base["first_s"]
        print(f"{last['units']} units took {ratio:.2f}x the time of {base['units']} (target: under 2.5x); "
              f"second run / first run at {last['units']}: {last['second_s'] / last['first_s']:.2f} (target: under 0.33)")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host.fleet.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--units", default="1,8", help="comma-separated fleet sizes (default 1,8)")
    parser.add_argument("--image-kb", type=int, default=1536,
                        help="size of the stand-in MicroPython image in KB (default 1536: an ESP32_GENERIC build is ~1.6 MB)")
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for host flash (default: all units at once)")
    parser.add_argument("--baud", type=int, default=460800,
                        help="flash baud rate; the virtual UARTs take real wire time at it (default 460800)")
    parser.add_argument("--loopback", action="store_true",
                        help="unpaced virtual UARTs: flash data at loopback speed")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.units.split(",") if s.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        print("host.fleet.bench: --units takes positive numbers like 1,8", file=sys.stderr)
        return 2
    try:
        rows = run(sizes, args.image_kb * 1024, args.jobs, None if args.loopback else args.baud)
    except HostError as exc:
        print(f"host.fleet.bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
