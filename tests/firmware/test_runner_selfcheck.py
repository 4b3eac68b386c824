# Proves the MicroPython tier reports what it runs: the interpreter seen here must be the one the
# tier claims (CPython under pytest, MicroPython under the unix port).
import sys


def test_interpreter_identity():
    name = sys.implementation.name
    if name == "micropython":
        import micropython  # only importable on MicroPython

        assert hasattr(micropython, "const")
    else:
        assert name == "cpython"
