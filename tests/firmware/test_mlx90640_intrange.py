# The integer hot path must stay below 2**30 in every intermediate, the small-int limit of 32-bit
# MicroPython ports (ESP32): beyond it each operation would allocate a long int on the device. No
# 32-bit interpreter runs here, so under CPython every integer the pixel loop and the knot table
# touch is replaced by an int subclass that fails on a result of 2**30 or more.
from array import array

import mlx90640
import support

LIMIT = 1 << 30


def skip(reason):
    try:
        import pytest
    except ImportError:
        raise support.SkipTest(reason)
    pytest.skip(reason)


def checked_int_type():
    class Checked(int):
        pass

    def wrap(v):
        if type(v) is int or type(v) is Checked:
            if not -LIMIT <= v < LIMIT:
                raise OverflowError("intermediate %d is beyond 30 bits" % v)
            return Checked(v)
        return v

    def binary(name):
        base = getattr(int, name)

        def op(self, other):
            return wrap(base(int(self), int(other) if isinstance(other, int) else other))
        return op

    for name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__lshift__",
                 "__rlshift__", "__rshift__", "__rrshift__", "__and__", "__rand__", "__or__", "__ror__",
                 "__floordiv__", "__rfloordiv__"):
        setattr(Checked, name, binary(name))
    Checked.__neg__ = lambda self: wrap(-int(self))
    return Checked, wrap


def run_checked(p, frame, emissivity, tr):
    """calculate_to with every integer of the knot table and the pixel loop range-checked; returns
    the temperatures, which must equal the unchecked run."""
    checked, wrap = checked_int_type()
    out = array("f", bytes(4 * 768))
    mlx90640.calculate_to(p, frame, emissivity, tr, out)        # prepares the intervals it uses
    c = mlx90640._frame_scalars(p, frame, emissivity, tr)
    # knot table again, from checked inputs
    saved = {}
    for name in ("_knot_a", "_knot_d", "_tab_x"):
        saved[name] = getattr(p, name)
        setattr(p, name, [wrap(v) for v in getattr(p, name)])
    ready = bytes(p._tab_ready)
    coeff = {}
    for name in ("_tab_a0", "_tab_a1", "_tab_a2", "_tab_a3", "_tab_r", "_tab_k"):
        coeff[name] = list(getattr(p, name))
    p._cache_key = None
    if not mlx90640._prepare_table(p, c):
        raise AssertionError("frame left the integer path")
    p._tab_ready[:] = ready            # keep the intervals prepared above
    for name, values in coeff.items():
        saved[name] = getattr(p, name)
        setattr(p, name, [wrap(v) for v in values])
    for name in ("offset", "_kta_int", "_inv_hi", "_inv_lo"):
        saved[name] = getattr(p, name)
        setattr(p, name, [wrap(v) for v in getattr(p, name)])
    scales = mlx90640._pixel_scales(p, c, frame)
    if scales is None:
        raise AssertionError("frame left the integer path")
    gh, gl, gls, grs, cvf, q2, ctf, q3, kk = scales
    scales = (wrap(gh), wrap(gl), gls, grs, [wrap(v) for v in cvf], q2, [wrap(v) for v in ctf], q3,
              [wrap(v) for v in kk])
    mine = array("f", bytes(4 * 768))
    try:
        slow = mlx90640._pixels(p, [wrap(w) for w in frame], mine, c.sp, c.chess, scales)
    finally:
        for name, value in saved.items():
            setattr(p, name, value)
        p._cache_key = None
    for i in range(768):
        if mlx90640._in_subpage(i, c.sp, c.chess) and not (slow and i in slow) and mine[i] != out[i]:
            raise AssertionError("pixel %d: checked run %r, plain run %r" % (i, mine[i], out[i]))
    return out


def scaled_frame(frame, factor, offset_counts):
    out = list(frame)
    for i in range(768):
        v = frame[i] - 65536 if frame[i] > 32767 else frame[i]
        out[i] = int(v * factor + offset_counts) & 0xFFFF
    return out


def test_integer_path_stays_below_2_30_on_real_and_extreme_scenes():
    if not hasattr(int, "__index__") or hasattr(__import__("sys"), "print_exception"):
        skip("int subclasses with arithmetic hooks: CPython only")
    d = support.load_shared("melexis_example.json")
    p = mlx90640.extract_params(d["eeprom"])
    for name in ("frame0", "frame1"):
        frame = d[name]
        ta = mlx90640.get_ta(p, frame)
        for emissivity in (1.0, 0.95, 0.5):
            run_checked(p, frame, emissivity, ta - 8)
        # a hot scene (raw words scaled up: up to ~250 C) and a cold one (down to ~-10 C)
        hot = scaled_frame(frame, 1.0, 2500)
        out = run_checked(p, hot, 1.0, ta - 8)
        if not max(out) > 150:
            raise AssertionError("hot scene not hot: %r" % max(out))
        cold = scaled_frame(frame, 1.0, -100)
        out = run_checked(p, cold, 1.0, ta - 8)
        if not min(out[i] for i in range(768) if mlx90640._in_subpage(i, frame[833], 1)) < 0:
            raise AssertionError("cold scene not cold")
    for dump in ("dumps/signaloid.json",):
        sd = support.load_shared(dump)
        ps = mlx90640.extract_params(sd["eeprom"])
        for frame in sd["frames"]:
            run_checked(ps, frame, 0.95, mlx90640.get_ta(ps, frame) - 8)
    ce = support.load_shared("dumps/ceri.json")
    pc = mlx90640.extract_params(ce["eeprom"])
    run_checked(pc, list(ce["ram0"][0]) + [0x1D81, 0], 1.0, 25.0)
