"""Hardware-in-the-loop acceptance suite for one unit (`host test --port P | --virtual`).

Skipped in the normal test run: every test here needs a unit, which `host test` names through the
environment (THERMOGATE_HIL_PORT). THERMOGATE_HIL_VIRTUAL=1 says the unit is a virtual one (the
indicator is read back from the shim); otherwise the operator confirms what the indicator shows.
"""

from __future__ import annotations

import os

import pytest

PORT_ENV = "THERMOGATE_HIL_PORT"
VIRTUAL_ENV = "THERMOGATE_HIL_VIRTUAL"


def pytest_collection_modifyitems(config, items):
    if os.environ.get(PORT_ENV):
        return
    skip = pytest.mark.skip(reason="hardware-in-the-loop: run `host test --port P` or `host test --virtual`")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def port() -> str:
    return os.environ[PORT_ENV]


@pytest.fixture(scope="session")
def virtual() -> bool:
    return os.environ.get(VIRTUAL_ENV) == "1"


@pytest.fixture(scope="session")
def unit(port):
    from host.link.frames import UnitClient

    client = UnitClient(port)
    yield client
    client.close()  # soft reset: the unit screens again


@pytest.fixture(scope="session")
def stream(unit):
    """One recording shared by the checks that only look at frames: 24 subpages, one pair out of
    every two so that a 115200 baud link never holds the unit back (the frame-rate check counts
    the unit's own frames)."""
    return unit.frames(24, timeout_s=15, every=2)


@pytest.fixture(scope="session")
def unit_files(unit) -> dict[str, bytes | None]:
    return {name: unit.read_file("/" + name) for name in ("config.json", "calibration.json")}
