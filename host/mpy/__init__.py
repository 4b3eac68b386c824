"""Scripts that run inside the MicroPython unix port (not imported by CPython host code)."""
