# Driver math against the reference data in shared/mlx90640 (Melexis' example, the datasheet's worked
# example, real sensors' EEPROMs). Runs under CPython and under the MicroPython unix port.
from array import array

import mlx90640
import support

_MELEXIS = None


def melexis():
    global _MELEXIS
    if _MELEXIS is None:
        _MELEXIS = support.load_shared("melexis_example.json")
    return _MELEXIS


def subpage_pixels(sp, chess):
    out = []
    for i in range(768):
        row = i >> 5
        if chess:
            if ((row + i) & 1) == sp:
                out.append(i)
        elif (row & 1) == sp:
            out.append(i)
    return out


def test_melexis_example_to_every_pixel_both_frames():
    d = melexis()
    p = mlx90640.extract_params(d["eeprom"])
    for name in ("frame0", "frame1"):
        frame = d[name]
        expected = d["to_" + name]
        ta = mlx90640.get_ta(p, frame)
        out = array("f", [-999.0] * 768)
        mlx90640.calculate_to(p, frame, 1.0, ta - 8, out)
        chess = (frame[832] >> 12) & 1
        mine = subpage_pixels(frame[833], chess)
        if len(mine) != 384:
            raise AssertionError("subpage has %d pixels" % len(mine))
        worst = 0.0
        for i in mine:
            err = abs(out[i] - expected[i])
            if not err <= 0.002:
                raise AssertionError("%s pixel %d: To %r, Melexis %r" % (name, i, out[i], expected[i]))
            if err > worst:
                worst = err
        # pixels of the other subpage are left untouched
        for i in range(768):
            if i not in mine and out[i] != -999.0:
                raise AssertionError("%s pixel %d of the other subpage was written" % (name, i))


def test_melexis_example_ta_vdd():
    d = melexis()
    p = mlx90640.extract_params(d["eeprom"])
    for k in ("0", "1"):
        frame = d["frame" + k]
        support.check_close(mlx90640.get_vdd(p, frame), d["derived"]["vdd_frame" + k], 1e-5, "Vdd frame" + k)
        support.check_close(mlx90640.get_ta(p, frame), d["derived"]["ta_frame" + k], 1e-4, "Ta frame" + k)
