# Runs inside the MicroPython unix port (started by `host bench`). Reads a JSON job from the file
# named in argv[1], times our driver and the Adafruit driver on the same frames in this same
# interpreter, and prints one JSON line of figures. MicroPython code: no f-strings, no typing.
import gc
import json
import sys
import time
from array import array

import mlx90640


def _measure(fn, repeats):
    """Best wall time (us) over `repeats` calls, and heap bytes allocated by one call.

    The collector is off during the allocation count so that a collection inside the call cannot
    hide what it allocated; timing runs with it on, as on the device."""
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    fn()
    allocated = gc.mem_alloc() - before
    gc.enable()
    best = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.ticks_us()
        fn()
        elapsed = time.ticks_diff(time.ticks_us(), t0)
        if best is None or elapsed < best:
            best = elapsed
    return best, allocated


def _adafruit_driver(eeprom):
    import adafruit_mlx90640 as ada

    # The Adafruit driver reads its EEPROM from a module global and keeps calibration in class
    # attributes; build an instance without its I2C constructor and extract from the same words.
    for i in range(832):
        ada.eeData[i] = eeprom[i]
    drv = object.__new__(ada.MLX90640)
    drv._ExtractParameters()
    return drv


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    eeprom = job["eeprom"]
    frames = [array("H", fr) for fr in job["frames"]]
    emissivity = job["emissivity"]
    repeats = job["repeats"]
    del job
    gc.collect()

    before = gc.mem_alloc()
    params = mlx90640.extract_params(eeprom)
    gc.collect()
    resident = gc.mem_alloc() - before

    # The gate's whole per-frame pipeline (conversion, correction, scene, screening) as unit.py
    # runs it, with the firmware's default config and a neutral calibration.
    import pipeline
    import store

    config, errors = store.validate_config({})
    gate = pipeline.Pipeline(config, {"gain": 1.0, "offset_c": 0.0, "pixel_offset_c": None})
    clock = [0]

    ada = _adafruit_driver(eeprom)
    ours_out = array("f", [0.0] * 768)
    ada_out = [0.0] * 768
    rows = []
    for frame in frames:
        def ours():
            ta = mlx90640.get_ta(params, frame)
            mlx90640.calculate_to(params, frame, emissivity, ta - 8.0, ours_out)

        def adafruit():
            ta = ada._GetTa(frame)
            ada._CalculateTo(frame, emissivity, ta - 8.0, ada_out)

        def analysis():
            clock[0] += 125
            gate.process(clock[0], ours_out, frame[833])

        def whole_pipeline():
            ours()
            analysis()

        ours_us, ours_alloc = _measure(ours, repeats)
        analysis_us, analysis_alloc = _measure(analysis, repeats)
        pipe_us, pipe_alloc = _measure(whole_pipeline, repeats)
        ada_us, ada_alloc = _measure(adafruit, repeats)
        subpage = frame[833]
        # Both buffers carry the same earlier frames outside this subpage, so all pixels compare.
        worst = 0.0
        for i in range(768):
            if ada_out[i] > -273.0:  # Adafruit marks bad pixels -273.15 instead of filling them
                d = abs(ours_out[i] - ada_out[i])
                if d > worst:
                    worst = d
        rows.append({"subpage": subpage, "ours_us": ours_us, "ours_alloc_bytes": ours_alloc,
                     "adafruit_us": ada_us, "adafruit_alloc_bytes": ada_alloc,
                     "pipeline_us": pipe_us, "pipeline_alloc_bytes": pipe_alloc,
                     "analysis_us": analysis_us, "analysis_alloc_bytes": analysis_alloc,
                     "max_abs_diff_c": worst})
    print(json.dumps({"interpreter": sys.implementation.name,
                      "version": ".".join([str(v) for v in sys.implementation.version[:3]]),
                      "resident_bytes": resident, "subpages": rows}))


main(sys.argv[1])
