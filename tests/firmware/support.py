# Helpers shared by firmware tests; runs on MicroPython and CPython alike.
import json
import os

try:
    _here = __file__.rsplit("/", 1)[0]
except NameError:
    _here = "tests/firmware"


try:
    # Under pytest (CPython) a SkipTest is pytest's own skip, so it reports as skipped there too.
    import pytest

    SkipTest = pytest.skip.Exception
except ImportError:  # MicroPython: tests/mpy_runner.py reports it by name

    class SkipTest(Exception):
        pass


def shared_dir():
    """The shared MLX90640 reference data (../shared/mlx90640 beside the project)."""
    path = os.getenv("THERMOGATE_SHARED_MLX90640")
    if path:
        return path
    return _here + "/../../../shared/mlx90640"


def load_shared(name):
    with open(shared_dir() + "/" + name) as f:
        return json.load(f)


def approx(a, b, tol):
    return abs(a - b) <= tol


def check_close(actual, expected, tol, what):
    if not abs(actual - expected) <= tol:
        raise AssertionError("%s: got %r, expected %r (tolerance %r)" % (what, actual, expected, tol))


def raises(exc_type, fn, *args):
    """Call fn(*args); return the exception it raised, or fail if it raised nothing."""
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError("%s did not raise %s" % (getattr(fn, "__name__", fn), exc_type.__name__))
