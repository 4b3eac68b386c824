# The `os` a virtual unit's code sees: the unix port's os plus what a board's os has.
# VfsPosix.ilistdir yields (name, type, inode); a board's FAT/littlefs yields a 4th item, the size,
# which `mpremote fs ls` prints. uname() answers like the ESP32 port's.
import sys

import os as _os
from os import *  # noqa: F401,F403

_chip = "esp32"


def install(chip):
    global _chip
    _chip = chip
    sys.modules["os"] = sys.modules["_vunit_os"]


def ilistdir(path="."):
    base = path if path.endswith("/") else path + "/"
    for entry in _os.ilistdir(path):
        name, kind = entry[0], entry[1]
        size = 0
        if kind == 0x8000:
            try:
                size = _os.stat(base + name)[6]
            except OSError:
                pass
        yield (name, kind, entry[2] if len(entry) > 2 else 0, size)


# ports/esp32/partitions-4MiB.csv: the "vfs" partition is 0x200000 bytes; littlefs blocks are 4 KiB
_FS_BLOCK = 4096
_FS_BLOCKS = 0x200000 // _FS_BLOCK


def _blocks_used(path):
    used = 1
    for entry in ilistdir(path):
        child = path.rstrip("/") + "/" + entry[0]
        if entry[1] == 0x4000:
            used += _blocks_used(child)
        else:
            used += 1 + (entry[3] + _FS_BLOCK - 1) // _FS_BLOCK
    return used


def statvfs(path="/"):
    """Sizes of a 4 MB board's 2 MB filesystem partition, not of the host's disk."""
    free = max(0, _FS_BLOCKS - _blocks_used("/"))
    return (_FS_BLOCK, _FS_BLOCK, _FS_BLOCKS, free, free, 0, 0, 0, 0, 255)


def listdir(path="."):
    return [entry[0] for entry in ilistdir(path)]


try:
    from collections import namedtuple

    _uname_result = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))
except ImportError:  # pragma: no cover
    _uname_result = None


def uname():
    v = sys.implementation.version
    release = "%d.%d.%d" % (v[0], v[1], v[2])
    machine = "Generic ESP32S3 module with ESP32S3" if _chip == "esp32s3" else "Generic ESP32 module with ESP32"
    fields = (_chip, _chip, release, "v%s (virtual unit)" % release, machine)
    return _uname_result(*fields) if _uname_result else fields
