# Millisecond tick arithmetic shared by the logic modules, which take `now_ms` from the wiring
# module instead of reading a clock. MicroPython's time.ticks_ms() wraps at 2**30 (docs:
# time.ticks_diff), so differences are taken modulo that period; plain integers from a test's
# fake clock work the same as long as two instants are less than ~6 days apart.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_PERIOD = const(0x40000000)
_HALF = const(0x20000000)
_MASK = const(0x3FFFFFFF)


def diff(now, then):
    """now - then in ms, correct across the 2**30 wrap of ticks_ms()."""
    return ((now - then + _HALF) & _MASK) - _HALF


def add(then, delta):
    return (then + delta) & _MASK
