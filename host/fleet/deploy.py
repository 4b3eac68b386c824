"""The per-unit jobs behind `host flash|deploy|verify|fleet`, and the runner that does them in parallel.

A job gets a port and a `step(text, done, total)` callback; it returns a UnitResult or raises
HostError. The runner turns every failure into that unit's result (one bad unit never stops the
others), retries what may be transient, and never retries a wrong board, chip or image.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.errors import HostError
from host.fleet.boards import BoardProfile, check_profile_chip, find_profile, generic_profile
from host.fleet.image import FirmwareImage, check_image_fits, normalise_chip
from host.fleet.manifest import (
    MANIFEST_PATH,
    MpyAbi,
    Release,
    diff_files,
    files_to_copy,
    is_mutable,
    sha256_hex,
)
from host.fleet.progress import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, Progress, UnitResult

Step = Callable[..., None]
CONFIG_PATH = "/config.json"
CODE_SUFFIXES = (".py", ".mpy")


class PermanentError(HostError):
    """A failure a retry cannot fix (wrong board, wrong image, too old MicroPython)."""


@dataclass
class FleetOptions:
    release: Release
    image: FirmwareImage | None = None
    board: str | None = None
    erase: bool = False
    force: bool = False
    baud: int = 115200
    stub: bool = True
    connect_attempts: int = 3
    boot_timeout: float = 20.0


# ---------------------------------------------------------------------------------------------
# Small pieces (pure, unit-tested)


def unit_id_from_mac(mac: str) -> str:
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12:
        raise HostError(f"MAC {mac!r} is not 6 bytes; cannot derive a unit id")
    return "tg-" + digits


def chip_from_machine(machine: str) -> str | None:
    """sys.implementation._machine, e.g. 'Generic ESP32S3 module with ESP32S3' -> 'esp32s3'."""
    match = re.search(r"with (ESP32(?:-?[A-Z]\d+)?)", machine or "", re.I)
    return normalise_chip(match.group(1)) if match else None


_schema_lock = threading.Lock()
_schema_cache: dict[str, tuple[dict, Callable | None]] = {}


def firmware_config_schema(firmware_dir: Path) -> tuple[dict, Callable | None]:
    """The firmware's own config defaults and validator (firmware/store.py), read under CPython.

    Returns ({}, None) when the firmware has no store module: then only unit_id and board are written.
    """
    path = firmware_dir / "store.py"
    key = str(path)
    with _schema_lock:
        if key in _schema_cache:
            return _schema_cache[key]
        defaults: dict = {}
        validate = None
        if path.is_file():
            added = str(firmware_dir) not in sys.path
            if added:
                sys.path.insert(0, str(firmware_dir))
            try:
                spec = importlib.util.spec_from_file_location("_thermogate_firmware_store", path)
                module = importlib.util.module_from_spec(spec)
                assert spec.loader is not None
                spec.loader.exec_module(module)
            except Exception as exc:
                raise HostError(f"firmware/store.py does not import under CPython ({exc}); fix the firmware") from None
            finally:
                if added:
                    sys.path.remove(str(firmware_dir))
            for name in ("default_config", "CONFIG_DEFAULTS", "DEFAULT_CONFIG", "DEFAULTS"):
                value = getattr(module, name, None)
                if callable(value):
                    value = value()
                if isinstance(value, dict):
                    defaults = dict(value)
                    break
            validate = getattr(module, "validate_config", None)
        _schema_cache[key] = (defaults, validate)
        return defaults, validate


def build_config(existing_text: str | None, unit_id: str, board: str, schema: tuple[dict, Callable | None]) -> dict:
    """The unit's config: firmware defaults, then what the unit already has (site settings survive a
    redeploy), then the identity the host owns (unit id from the MAC, board name)."""
    defaults, validate = schema
    config: dict = dict(defaults)
    if existing_text:
        try:
            existing = json.loads(existing_text)
        except ValueError:
            existing = None  # a corrupt config is replaced by defaults rather than kept
        if isinstance(existing, dict):
            config.update({k: v for k, v in existing.items() if not defaults or k in defaults})
    for key, value in (("unit_id", unit_id), ("board", board)):
        if not defaults or key in defaults:
            config[key] = value
    if validate is not None:
        try:
            result = validate(config)
        except ValueError as exc:
            raise PermanentError(f"the config for {unit_id} is invalid ({exc}); fix the unit's config.json or the defaults") from None
        if isinstance(result, tuple) and len(result) == 2:  # firmware/store.py: (config, errors)
            checked, errors = result
            if errors:
                raise PermanentError(f"the config for {unit_id} is invalid ({errors[0]}); fix the unit's config.json")
            config = dict(checked)
        elif isinstance(result, dict):
            config = result
    return config


def encode_json(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


def interpret_self_report(report: Any, version: str | None = None) -> str | None:
    """A reason the unit is not fit to screen, from its self-report (firmware/unit.py
    self_report(): version, sensor, config_valid, errors, ...); None when all is well.
    An uncalibrated unit is fit to deploy: calibration comes after (`host calibrate`)."""
    if not isinstance(report, dict):
        return "the self-report is not a JSON object"
    errors = [e for e in report.get("errors") or [] if isinstance(e, str)]
    if version is not None and "version" in report and report["version"] != version:
        return f"the unit runs firmware {report['version']} after the deploy, expected {version}: run host deploy --force"
    for key in ("config_valid", "config_ok"):
        if key in report and report[key] is False:
            detail = next((e for e in errors if "config" in e or "board" in e), None)
            return "the unit says its config is invalid" + (f" ({detail})" if detail else "") + ": fix it and run host deploy --force"
    for key in ("sensor_found", "sensor_ok", "sensor"):
        if key in report and report[key] in (False, None, "missing", "absent"):
            detail = next((e for e in errors if e.startswith("sensor")), None)
            return "sensor not found" + (f" ({detail})" if detail else "") + ": check the MLX90640 wiring and the board profile's I2C pins"
    return None


# ---------------------------------------------------------------------------------------------
# The jobs


def _profile_for(opts: FleetOptions, chip: str, where: str) -> BoardProfile:
    try:
        if opts.board:
            profile = find_profile(opts.board, opts.release.boards_dir)
        else:
            profile = generic_profile(chip, opts.release.boards_dir)
        check_profile_chip(profile, chip, where)
        return profile
    except PermanentError:
        raise
    except HostError as exc:
        raise PermanentError(str(exc)) from None


def flash_unit(result: UnitResult, opts: FleetOptions, step: Step) -> None:
    port = result.port
    from host.fleet.link import RomLink, esptool_output

    assert opts.image is not None
    image = opts.image
    result.release = opts.release.name

    def on_write_progress(done: int, total: int) -> None:
        step("writing image", done, total)

    if not opts.force and not opts.erase and _current_without_rom(result, opts, step):
        return None

    with esptool_output(lambda line: None, on_write_progress):
        step("connecting to the ROM loader")
        rom = RomLink(port, baud=opts.baud, connect_attempts=opts.connect_attempts, stub=opts.stub)
        try:
            result.chip = normalise_chip(rom.chip)
            result.mac = rom.mac
            profile = _profile_for(opts, result.chip, port)
            result.board = profile.name
            try:
                check_image_fits(image, result.chip, port)
            except HostError as exc:
                raise PermanentError(str(exc)) from None
            step("comparing flash")
            if not opts.force and not opts.erase and rom.image_in_flash(profile.flash_offset, image.data):
                result.image = "current"
            else:
                step("writing image", 0, image.size)
                rom.write_image(profile.flash_offset, image.data, opts.erase)
                result.image = "written"
            step("resetting")
            rom.hard_reset()
        finally:
            rom.close()

    image_info = {"sha256": image.sha256, "offset": profile.flash_offset, "size": image.size}
    step("waiting for MicroPython")
    repl = _open_repl_after_reset(port, opts.boot_timeout)
    try:
        repl.wait_for_micropython(opts.boot_timeout)
        _deploy_application(repl, opts, step, result, profile, image_info, image_written=result.image == "written")
    finally:
        repl.close()
    return None


def _current_without_rom(result: UnitResult, opts: FleetOptions, step: Step) -> bool:
    """A unit already running MicroPython whose manifest names this release and image, and whose
    own esp.flash_read proves the image in flash: finish it over the REPL (skip, or copy what
    differs) without resetting it into the bootloader. False = go through the ROM loader instead
    (unit not answering, other release, no esp.flash_read as on virtual units, image differs)."""
    from host.fleet.link import ReplLink

    assert opts.image is not None
    port = result.port
    step("asking MicroPython")
    try:
        repl = ReplLink(port)
    except HostError:
        return False
    try:
        try:
            if not repl.answers(1.0):
                return False
            probe = repl.probe()
            if not probe.get("flash_read"):
                return False  # this port cannot read its flash (virtual units): ask the ROM loader
            previous = _unit_manifest(probe) or {}
            image_record = previous.get("image") or {}
            if previous.get("release") != opts.release.name or image_record.get("sha256") != opts.image.sha256:
                return False
            chip = previous.get("chip") or ""
            profile = _profile_for(opts, chip, port)
            if profile.name != previous.get("board") or profile.flash_offset != image_record.get("offset"):
                return False
            check_image_fits(opts.image, chip, port)
            step("hashing the image on the unit")
            if repl.flash_sha256(profile.flash_offset, opts.image.size) != opts.image.sha256:
                return False
        except HostError:
            return False
        result.chip, result.mac, result.board, result.image = chip, previous.get("mac"), profile.name, "current"
        result.details["image_proof"] = "esp.flash_read on the unit"
        _deploy_application(repl, opts, step, result, profile, image_record, image_written=False)
        return True
    finally:
        repl.close()


def _open_repl_after_reset(port: str, timeout: float):
    """Native-USB boards (ESP32-S3 USB-Serial/JTAG) drop off the bus during the reset and come back:
    keep trying to open the port for a while instead of failing on the first refusal."""
    from host.fleet.link import ReplLink

    deadline = time.monotonic() + timeout
    while True:
        try:
            return ReplLink(port)
        except HostError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def deploy_unit(result: UnitResult, opts: FleetOptions, step: Step) -> None:
    port = result.port
    from host.fleet.link import ReplLink

    result.release = opts.release.name
    step("connecting to the REPL")
    repl = ReplLink(port)
    try:
        repl.wait_for_micropython(10.0)
        _deploy_application(repl, opts, step, result, None, None, image_written=False)
    finally:
        repl.close()
    return None


def _unit_manifest(survey: dict) -> dict | None:
    text = survey.get("manifest")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _abi_of(survey: dict, port: str) -> MpyAbi:
    mpy = survey.get("mpy")
    if not isinstance(mpy, int):
        raise PermanentError(
            f"{port}: this MicroPython does not report sys.implementation._mpy (older than 1.19): "
            "flash a current MicroPython with host flash --firmware"
        )
    return MpyAbi.from_sys_mpy(mpy)


def _deploy_application(
    repl, opts: FleetOptions, step: Step, result: UnitResult,
    profile: BoardProfile | None, image_info: dict | None, image_written: bool,
) -> None:
    port = result.port
    step("reading the unit")
    survey = repl.survey()
    abi = _abi_of(survey, port)
    previous = _unit_manifest(survey) or {}

    if profile is None:  # host deploy: no ROM, so the chip comes from the unit itself
        chip = chip_from_machine(survey.get("machine", "")) or previous.get("chip")
        try:
            profile = _deploy_profile(opts, previous, chip, port)
        except PermanentError:
            raise
        except HostError as exc:
            raise PermanentError(str(exc)) from None
        result.chip = chip or profile.chip
        result.board = profile.name
        image_info = previous.get("image")
    if result.mac is None:
        result.mac = previous.get("mac") or _mac_from_unique_id(repl.unique_id())

    files = opts.release.unit_files(abi, profile)
    manifest = opts.release.unit_manifest(abi, profile, image_info)
    manifest["mac"] = result.mac
    manifest["chip"] = result.chip
    actual: dict[str, str] = survey.get("files") or {}
    to_copy = files_to_copy(files, actual)
    stale_code = sorted(
        p for p in actual if p not in files and not is_mutable(p)
        and (p.endswith(CODE_SUFFIXES) or p.startswith("/boards/"))
    )
    if result.mac:
        unit_id = unit_id_from_mac(result.mac)
    else:
        unit_id = None
    schema = firmware_config_schema(opts.release.firmware_dir)
    config_bytes = encode_json(build_config(survey.get("config"), unit_id, profile.name, schema)) if unit_id else None
    config_current = config_bytes is None or actual.get(CONFIG_PATH) == sha256_hex(config_bytes)
    current = (
        previous.get("release") == opts.release.name
        and previous.get("board") == profile.name
        and previous.get("files") == manifest["files"]
        and (previous.get("image") or None) == (image_info or None)
        and not to_copy and not stale_code and config_current
    )
    if current and not opts.force and not image_written:
        result.status = STATUS_SKIPPED
        result.details["self_report"] = None
        step("already current")
        repl.run_app()
        return

    if opts.force:
        to_copy = sorted(files)
    total = sum(len(files[p]) for p in to_copy) or 1
    done = 0
    for path in to_copy:
        step(f"copying {path}", done, total)
        repl.write_file(path, files[path])
        done += len(files[path])
        result.copied.append(path)
    for path in stale_code:
        step(f"removing {path}")
        repl.remove_file(path)
        result.removed.append(path)
    if config_bytes is not None and (not config_current or opts.force):
        step("writing config")
        repl.write_file(CONFIG_PATH, config_bytes)
        result.details["config_written"] = True
    elif config_bytes is None:
        result.notes.append("MAC unknown: config not written")
    step("writing manifest")
    repl.write_file(MANIFEST_PATH, encode_json(manifest))

    step("soft reset")
    repl.soft_reset()
    step("reading the self-report")
    report, note = read_self_report(repl, files)
    result.details["self_report"] = report
    if note:
        result.notes.append(note)
    if report is not None:
        problem = interpret_self_report(report, opts.release.version)
        result.details["calibrated"] = report.get("calibrated")
        if problem:
            repl.run_app()
            raise PermanentError(f"{port}: {problem}")
    repl.run_app()
    result.status = STATUS_OK



def _deploy_profile(opts: FleetOptions, previous: dict, chip: str | None, port: str) -> BoardProfile:
    if opts.board:
        profile = find_profile(opts.board, opts.release.boards_dir)
    elif previous.get("board"):
        try:
            profile = find_profile(previous["board"], opts.release.boards_dir)
        except HostError:
            profile = generic_profile(previous.get("chip") or chip or "", opts.release.boards_dir)
    elif chip:
        profile = generic_profile(chip, opts.release.boards_dir)
    else:
        raise PermanentError(f"{port}: cannot tell which board this is: pass --board NAME")
    if chip:
        check_profile_chip(profile, chip, port)
    return profile


def _mac_from_unique_id(hex_id: str) -> str | None:
    if re.fullmatch(r"[0-9a-f]{12}", hex_id or ""):
        return ":".join(hex_id[i : i + 2] for i in range(0, 12, 2))
    return None


SELF_REPORT_SCRIPT = "import unit\nprint(unit.self_report_json())\n"


def read_self_report(repl, files: dict[str, bytes]) -> tuple[dict | None, str | None]:
    from host.fleet.link import UnitScriptError

    if "/unit.mpy" not in files and "/unit.py" not in files:
        return None, "self-report unavailable: this firmware has no unit module"
    try:
        out = repl.exec(SELF_REPORT_SCRIPT, timeout=30)
    except UnitScriptError as exc:
        if "self_report_json" in exc.traceback and "AttributeError" in exc.traceback:
            return None, "self-report unavailable: firmware has no unit.self_report_json()"
        raise PermanentError(f"{repl.port}: the firmware's self-report failed ({str(exc).split(': ', 1)[-1]}); "
                             "check the unit with host verify and the board profile") from None
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        return json.loads(lines[-1]), None
    except (ValueError, IndexError):
        raise PermanentError(f"{repl.port}: the self-report is not JSON: {out[-120:]!r}") from None


def _survey_unit(port: str, step: Step, what: str) -> dict:
    """The unit's files, hashes and reports over its REPL; its application runs again after."""
    from host.fleet.link import ReplLink

    step("connecting to the REPL")
    repl = ReplLink(port)
    try:
        repl.wait_for_micropython(10.0)
        step(what)
        survey = repl.survey()
        repl.run_app()
    finally:
        repl.close()
    return survey


def verify_unit(result: UnitResult, opts: FleetOptions, step: Step) -> None:
    port = result.port
    survey = _survey_unit(port, step, "hashing files on the unit")
    abi = _abi_of(survey, port)
    previous = _unit_manifest(survey)
    if previous is None:
        raise PermanentError(f"{port}: no {MANIFEST_PATH} on the unit, it was never deployed by host flash/deploy: run host deploy")
    result.release, result.mac, result.chip = previous.get("release"), previous.get("mac"), previous.get("chip")
    board = previous.get("board") or ""
    try:
        profile = find_profile(board, opts.release.boards_dir)
    except HostError:
        if not board.startswith("generic-"):
            raise PermanentError(f"{port}: the unit's board {board!r} is not in this release's boards/: it carries code this host does not know")
        profile = generic_profile(board[len("generic-"):], opts.release.boards_dir)
    result.board = profile.name
    expected = {p: sha256_hex(d) for p, d in opts.release.unit_files(abi, profile).items()}
    diff = diff_files(expected, survey.get("files") or {})
    result.details["diff"] = diff.as_dict()
    problems = []
    if not diff.clean:
        problems.append(diff.describe())
    if previous.get("release") != opts.release.name:
        problems.append(f"unit manifest says release {previous.get('release')}, this host ships {opts.release.name}")
    if problems:
        raise PermanentError(f"{port}: " + "; ".join(problems) + ": run host deploy --force to restore the release")
    result.status = STATUS_OK
    return None


def _json_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return "unreadable"


def calibration_date(calibration: Any) -> str | None:
    if not isinstance(calibration, dict):
        return None
    for key in ("date", "calibrated_at", "calibration_date", "timestamp", "time"):
        if key in calibration:
            return str(calibration[key])
    return None


def fleet_unit(result: UnitResult, opts: FleetOptions, step: Step) -> None:
    port = result.port
    survey = _survey_unit(port, step, "reading the unit")
    manifest = _unit_manifest(survey) or {}
    result.release = manifest.get("release") or "(none)"
    result.mac = manifest.get("mac")
    result.chip = manifest.get("chip") or chip_from_machine(survey.get("machine", ""))
    result.board = manifest.get("board")
    calibration = _json_or_none(survey.get("calibration"))
    counters = _json_or_none(survey.get("counters"))
    result.details["calibration_date"] = calibration_date(calibration) or ("uncalibrated" if calibration is None else "unknown")
    result.details["counters"] = counters if counters is not None else {}
    result.status = STATUS_OK
    return None


# ---------------------------------------------------------------------------------------------
# The runner

Job = Callable[[UnitResult, FleetOptions, Step], None]


def run_fleet(
    ports: list[str], job: Job, opts: FleetOptions, jobs: int, retries: int, progress: Progress | None = None,
) -> list[UnitResult]:
    """Run `job` on every port, at most `jobs` at a time; results come back in port order."""

    def one(port: str) -> UnitResult:
        started = time.monotonic()

        timeline: list[list] = []

        def step(text: str, done: float | None = None, total: float | None = None) -> None:
            stage = text.split(" /", 1)[0]  # "copying /a.mpy" and "copying /b.mpy" are one stage
            if not timeline or timeline[-1][0] != stage:
                timeline.append([stage, round(time.monotonic() - started, 2)])
            if progress:
                progress.update(port, text, done, total)

        attempts = 0
        while True:
            attempts += 1
            result = UnitResult(port=port)  # the job fills it in as it learns; kept when it fails
            try:
                job(result, opts, step)
                break
            except PermanentError as exc:
                result.status, result.error = STATUS_FAILED, _name_unit(str(exc), port)
                break
            except HostError as exc:
                if attempts <= retries:
                    step(f"retrying ({exc})")
                    time.sleep(0.5)
                    continue
                result.status, result.error = STATUS_FAILED, _name_unit(str(exc), port)
                break
            except Exception as exc:  # a bug or an unexpected library error: still only this unit
                result.status = STATUS_FAILED
                result.error = _name_unit(f"unexpected {type(exc).__name__}: {exc}; please report it", port)
                break
        result.attempts = attempts
        result.seconds = time.monotonic() - started
        result.details["timeline"] = timeline  # [stage, seconds since the unit's start]
        if progress:
            progress.finish(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="unit") as pool:
        return list(pool.map(one, ports))


def _name_unit(message: str, port: str) -> str:
    return message if port in message else f"{port}: {message}"
