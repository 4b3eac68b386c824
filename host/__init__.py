"""Host tools for thermogate fever-screening units (CPython side)."""

from pathlib import Path

__version__ = "0.1.0"

# The project tree the host package ships with: firmware/ and boards/ sit beside host/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = PROJECT_ROOT / "firmware"
BOARDS_DIR = PROJECT_ROOT / "boards"
