"""`host flash`, `host deploy`, `host verify`, `host fleet`: the click layer over host.fleet.deploy."""

from __future__ import annotations

import time

import click

from host.errors import UnitFailure

PORT_HELP = "Serial port of a unit (repeatable; esptool/pyserial URLs such as rfc2217://host:port work too)."
ALL_HELP = "Every USB serial port with an ESP32 bridge (CP210x, CH340/CH9102, FTDI, Espressif USB)."


def _units_options(func):
    func = click.option("--json", "json_mode", is_flag=True, help="Print the per-unit results as one JSON document on stdout.")(func)
    func = click.option("--all", "all_ports", is_flag=True, help=ALL_HELP)(func)
    func = click.option("--port", "ports", multiple=True, metavar="P", help=PORT_HELP)(func)
    return func


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be 1 or more")
    return value


def _non_negative(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter("must be 0 or more")
    return value


def _run(command: str, ports: tuple[str, ...], all_ports: bool, json_mode: bool, job, opts, jobs: int, retries: int,
         columns: list[tuple[str, str]] | None = None) -> None:
    from host.fleet.deploy import run_fleet
    from host.fleet.discovery import select_ports
    from host.fleet.progress import Progress, print_fleet_lines, print_json, print_summary

    selected = select_ports(ports, all_ports)
    started = time.monotonic()
    with Progress(selected, json_mode) as progress:
        results = run_fleet(selected, job, opts, jobs=jobs, retries=retries, progress=progress)
    release = opts.release.name if command != "fleet" else None
    if json_mode:
        print_json(command, results, release, started)
    elif command == "fleet":
        print_fleet_lines(results)
    else:
        print_summary(command, results, release, columns=columns)
    failed = [r for r in results if not r.succeeded]
    if failed:
        names = ", ".join(r.port for r in failed)
        raise UnitFailure(f"{len(failed)} of {len(results)} units failed ({names}); see the reasons above, fix them and run the same command again")


def _release():
    from host.fleet.manifest import load_release

    return load_release()


@click.command()
@_units_options
@click.option("--firmware", "firmware", required=True, type=click.Path(dir_okay=False), metavar="MICROPYTHON.bin",
              help="The MicroPython firmware image for the units' chip (from micropython.org/download).")
@click.option("--board", metavar="NAME", help="Board profile from boards/ (default: the generic profile for the detected chip).")
@click.option("--erase", is_flag=True, help="Erase the whole flash first (needs esptool's stub flasher).")
@click.option("--jobs", default=8, show_default=True, type=int, callback=_positive, help="Units worked on at the same time.")
@click.option("--retries", default=1, show_default=True, type=int, callback=_non_negative, help="Retries per unit after a link failure.")
@click.option("--baud", default=115200, show_default=True, type=int, callback=_positive, help="Baud rate for writing flash.")
@click.option("--force", is_flag=True, help="Write the image and every file even on units already at this release.")
@click.option("--no-stub", is_flag=True, help="Talk to the ROM loader only (no esptool stub flasher; slower, uncompressed).")
def flash(ports, all_ports, json_mode, firmware, board, erase, jobs, retries, baud, force, no_stub):
    """Flash MicroPython, deploy the application and config, and check each unit's self-report.

    Units already at this release (image in flash and the unit's manifest match) are skipped unless
    --force. One failing unit never stops the others; the exit status is 1 if any failed.
    """
    from host.fleet.deploy import FleetOptions, flash_unit
    from host.fleet.image import load_image

    opts = FleetOptions(release=_release(), image=load_image(firmware), board=board, erase=erase, force=force,
                        baud=baud, stub=not no_stub)
    _check_board(opts)
    _run("flash", ports, all_ports, json_mode, flash_unit, opts, jobs, retries)


@click.command()
@_units_options
@click.option("--board", metavar="NAME", help="Board profile from boards/ (default: the one the unit already has).")
@click.option("--jobs", default=8, show_default=True, type=int, callback=_positive, help="Units worked on at the same time.")
@click.option("--retries", default=1, show_default=True, type=int, callback=_non_negative, help="Retries per unit after a link failure.")
@click.option("--force", is_flag=True, help="Copy every file even on units already at this release.")
def deploy(ports, all_ports, json_mode, board, jobs, retries, force):
    """Deploy the application files and config (no MicroPython image) to units running MicroPython."""
    from host.fleet.deploy import FleetOptions, deploy_unit

    opts = FleetOptions(release=_release(), board=board, force=force)
    _check_board(opts)
    _run("deploy", ports, all_ports, json_mode, deploy_unit, opts, jobs, retries)


@click.command()
@_units_options
@click.option("--jobs", default=8, show_default=True, type=int, callback=_positive, help="Units checked at the same time.")
def verify(ports, all_ports, json_mode, jobs):
    """Hash every file on each unit and compare with the release this host ships.

    The release manifest is computed from the firmware/ and boards/ trees shipped with the host
    package (`python -m host.fleet.manifest` prints it); for each unit the expected .mpy files are
    compiled for the unit's bytecode version, so the comparison is against the reviewed sources,
    not against what the unit claims. Modified, missing and extra files are reported; config.json,
    calibration.json and counters are unit data and are not compared. Exit status 1 on any difference.
    """
    from host.fleet.deploy import FleetOptions, verify_unit

    opts = FleetOptions(release=_release())
    _run("verify", ports, all_ports, json_mode, verify_unit, opts, jobs, 0,
         columns=[("port", "port"), ("chip", "chip"), ("mac", "MAC"), ("release", "release"), ("result", "result")])


@click.command()
@_units_options
@click.option("--jobs", default=8, show_default=True, type=int, callback=_positive, help="Units read at the same time.")
def fleet(ports, all_ports, json_mode, jobs):
    """One line per unit: port, chip, MAC, release, calibration date, counters."""
    from host.fleet.deploy import FleetOptions, fleet_unit
    from host.fleet.manifest import Release

    opts = FleetOptions(release=Release(firmware_dir=None, boards_dir=None, sources={}, boards={}))  # type: ignore[arg-type]
    _run("fleet", ports, all_ports, json_mode, fleet_unit, opts, jobs, 0)


def _check_board(opts) -> None:
    """A --board that does not exist is a usage error before any unit is touched."""
    if opts.board:
        from host.fleet.boards import find_profile

        find_profile(opts.board, opts.release.boards_dir)
