"""The firmware driver (firmware/mlx90640.py, unchanged, on CPython) against the emulated sensor:
scene -> raw words on the bus -> driver -> temperatures, the datasheet handshake, bad pixels and
every injected fault.

The raw words are integers: one ADC step is ~0.19 C at 18 bit and ~0.77 C at 16 bit (35 C
target), so a scene can only be recovered to half a step. The round trip therefore checks two
things: the driver recovers what the words represent (the emulator's own float64 datasheet decode)
within 0.01 C, and that is the scene to within half an ADC step. Measured figures are printed."""

from __future__ import annotations

import json
from array import array

import numpy as np
import pytest

import mlx90640
from host.virtual.sensor import REFRESH_HZ, SensorEmulator, SteppingClock, generate_eeprom
from host.virtual.sensor_eeprom import decode_eeprom, subpage_pattern

pytestmark = pytest.mark.emulator

TOLERANCE_C = 0.01


def tgc_seed() -> int:
    return next(s for s in range(100) if decode_eeprom(generate_eeprom(s)).tgc > 0)


def unit_eeproms(shared_mlx) -> dict[str, list[int]]:
    """Generated units (one with TGC, one with 4 bad pixels) and a real sensor's dump."""
    real = json.loads((shared_mlx / "dumps" / "pimoroni.json").read_text())["eeprom"]
    return {"generated-tgc": generate_eeprom(tgc_seed(), bad_pixels=1),
            "generated-4bad": generate_eeprom(31, bad_pixels=4),
            "pimoroni": real}


def attach(eeprom: list[int], seed: int = 0, **kwargs) -> tuple[SensorEmulator, mlx90640.MLX90640]:
    clock = SteppingClock(0.001)
    emu = SensorEmulator(eeprom=eeprom, seed=seed, clock=clock, **kwargs)
    sensor = mlx90640.MLX90640(emu.i2c)
    sensor.POLL_MS = 0  # the emulated clock advances with every bus access; no real waiting
    return emu, sensor


def set_rate(emu: SensorEmulator, sensor: mlx90640.MLX90640, rate: float) -> None:
    sensor.refresh_rate = rate
    emu.clock.step_s = 1.0 / rate / 40  # a status poll every 1/40 of a subpage period


def subpage_mask(frame) -> np.ndarray:
    """The pixels of the frame's subpage (chess or interleaved per control register bit 12)."""
    return subpage_pattern(bool(frame[832] & 0x1000)) == frame[833]


@pytest.mark.parametrize("resolution", [16, 17, 18, 19])
@pytest.mark.parametrize("pattern", ["chess", "interleaved"])
def test_round_trip_scene_to_driver(resolution, pattern, shared_mlx):
    rng = np.random.default_rng(resolution * 10 + (pattern == "chess"))
    worst_repr = worst_scene = worst_steps = 0.0
    for name, eeprom in unit_eeproms(shared_mlx).items():
        emu, sensor = attach(eeprom, netd_scale=0.0)
        sensor.resolution = resolution
        sensor.pattern = pattern
        bad = np.zeros(768, dtype=bool)
        bad[list(emu.calibration.broken)] = True
        for rate in REFRESH_HZ:
            set_rate(emu, sensor, rate)
            sensor.read_subpage()  # settings changed: the subpage in RAM may predate them
            scene = rng.uniform(0.0, 100.0, (24, 32))
            scene[rng.integers(24), :] = rng.choice([0.0, 100.0])  # the range ends, exactly
            ambient = float(rng.uniform(15.0, 40.0))
            vdd = float(rng.uniform(3.2, 3.4))
            emu.set_scene(scene, ambient_c=ambient, vdd=vdd)
            subpages = []
            for _ in range(2):
                frame = sensor.read_subpage()
                subpages.append(frame[833])
                assert frame[832] == emu.control
                out = array("f", [0.0] * 768)
                mlx90640.calculate_to(sensor.params, frame, 1.0, sensor.ta - 8, out)
                got = np.array(out, dtype=np.float64)
                ta, vdd_read, represented = emu.model.decode_frame(frame)
                assert abs(sensor.ta - ta) < 1e-4 and abs(sensor.vdd - vdd_read) < 1e-5
                assert abs(sensor.ta - ambient) < 0.01 and abs(sensor.vdd - vdd) < 0.002
                sel = subpage_mask(frame) & ~bad
                step = emu.model.quantisation_step_c(scene.ravel(), ta, resolution)
                err_repr = np.abs(got - represented)[sel].max()
                err_scene = np.abs(got - scene.ravel())[sel]
                worst_repr = max(worst_repr, err_repr)
                worst_scene = max(worst_scene, err_scene.max())
                worst_steps = max(worst_steps, (err_scene / step[sel]).max())
                assert err_repr <= TOLERANCE_C, (name, rate)
                assert np.all(err_scene <= 0.505 * step[sel] + TOLERANCE_C), (name, rate)
                # bad pixels of this subpage come from their neighbours' values
                for p in np.flatnonzero(bad & subpage_mask(frame)):
                    r, c = divmod(int(p), 32)
                    near = scene[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                    slack = 0.505 * step.max() + TOLERANCE_C
                    assert near.min() - slack <= got[p] <= near.max() + slack, (name, p)
            assert sorted(subpages) == [0, 1], (name, rate, subpages)
    print(f"\n{resolution}-bit {pattern}: driver vs words {worst_repr:.4f} C; vs scene "
          f"{worst_scene:.3f} C = {worst_steps:.3f} ADC steps (rounding of integer words)")


def test_handshake_settings_and_subpage_alternation():
    emu, sensor = attach(generate_eeprom(41, bad_pixels=2), netd_scale=0.0)
    assert sensor.serial == emu.serial
    assert sorted(sensor.params.brokenPixels) == list(emu.calibration.broken)
    sensor.refresh_rate = 8
    sensor.resolution = 19
    sensor.pattern = "interleaved"
    assert (emu.refresh_hz, emu.resolution_bits, emu.chess) == (8.0, 19, False)
    assert (sensor.refresh_rate, sensor.resolution, sensor.pattern) == (8, 19, "interleaved")
    emu.clock.step_s = 1 / 8 / 40
    scene = np.full((24, 32), 30.0)
    scene[4:12, 10:20] = 36.5
    emu.set_scene(scene, ambient_c=27.0)
    sensor.read_subpage()
    out = array("f", [-999.0] * 768)
    seen = []
    before = emu.bus_reads
    for _ in range(6):
        previous = np.array(out)
        subpage = sensor.temperatures(out)
        seen.append(subpage)
        now = np.array(out)
        mine = subpage_pattern(False) == subpage
        assert np.all(now[~mine] == previous[~mine]), "the other subpage's pixels are kept"
        assert np.all(np.abs(now[mine] - scene.ravel()[mine]) < 0.1)
    assert seen in ([0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0])
    assert abs(sensor.ta - 27.0) < 0.01 and abs(sensor.vdd - 3.3) < 0.002
    assert emu.bus_reads - before < 6 * 100  # polling, not a busy storm


@pytest.mark.parametrize("fault", ["nack", "timeout", "stuck_ready", "bad_words",
                                   "bad_words:aux", "bad_words:pixels", "unplug_mid_frame"])
def test_faults_end_in_sensor_error_and_the_driver_recovers(fault):
    name, _, where = fault.partition(":")
    emu, sensor = attach(generate_eeprom(52, bad_pixels=1), seed=52, netd_scale=0.0)
    sensor.refresh_rate = 16
    sensor.resolution = 19
    emu.clock.step_s = 1 / 16 / 40
    scene = np.full((24, 32), 34.0)
    emu.set_scene(scene, ambient_c=25.0)
    sensor.read_subpage()
    emu.inject(name, **({"where": where} if where else {}))
    with pytest.raises(mlx90640.SensorError) as failure:
        sensor.read_subpage(timeout_ms=60)
    message = str(failure.value)
    assert "\n" not in message and len(message) < 300, message
    expected_words = {"nack": "I2C", "timeout": "I2C", "stuck_ready": "no new data",
                      "bad_words": "0x7FFF", "unplug_mid_frame": "I2C"}[name]
    assert expected_words in message, message
    emu.clear_faults()
    out = array("f", [0.0] * 768)
    for _ in range(2):  # both subpages come back clean, with the driver's own settings
        subpage = sensor.temperatures(out)
        frame = sensor.frame
        assert frame[832] & 0x0C00 == 3 << 10 and emu.refresh_hz == 16.0
        mine = (subpage_pattern(True) == subpage) & ~emu.model.bad
        got = np.array(out)[mine]
        assert np.all(np.abs(got - 34.0) < 0.1), (fault, got.min(), got.max())


def test_calculation_rejects_words_without_data():
    emu = SensorEmulator(seed=3, netd_scale=0.0)
    params = mlx90640.extract_params(emu.eeprom)
    for word in (768, 776, 778, 800, 808, 810):
        frame = emu.raw_frame(0)
        frame[word] = 0x7FFF
        with pytest.raises(ValueError, match="0x7FFF"):
            mlx90640.calculate_to(params, frame, 1.0, 17.0, [0.0] * 768)


@pytest.mark.parametrize("seed", [60, 61, 62, 63])
def test_generated_eeproms_pass_extract_params_with_their_bad_pixels(seed):
    count = seed % 5
    eeprom = generate_eeprom(seed, bad_pixels=count)
    params = mlx90640.extract_params(eeprom)
    cal = decode_eeprom(eeprom)
    assert sorted(params.brokenPixels) == list(cal.broken) and len(cal.broken) == count
    assert list(params.outlierPixels) == []
    assert params.gainEE == cal.gain_ee and params.tgc == pytest.approx(cal.tgc)
    assert list(params.ct[:4]) == pytest.approx(list(cal.ct))


def test_driver_reads_the_configured_noise():
    """Temperature noise seen by the driver: NETD 0.1 K at 1 Hz, grows as sqrt(rate)."""
    emu, sensor = attach(generate_eeprom(70, bad_pixels=0), seed=70)
    sensor.resolution = 19
    emu.set_scene(np.full((24, 32), 25.0), ambient_c=25.0)
    out = array("f", [0.0] * 768)
    for rate in (2.0, 8.0):
        set_rate(emu, sensor, rate)
        sensor.read_subpage()
        readings = []
        for _ in range(40):
            if sensor.temperatures(out) == 0:
                readings.append(np.array(out)[subpage_pattern(True) == 0])
        readings = np.array(readings)
        measured = float(np.sqrt(np.mean(np.var(readings, axis=0, ddof=1))))
        step = emu.model.quantisation_step_c(np.full(768, 25.0), 25.0, 19)
        expected = float(np.sqrt(emu.netd_k() ** 2 + np.mean(step ** 2) / 12))
        print(f"\n{rate} Hz: driver reads {measured:.3f} K RMS, expected {expected:.3f} K")
        assert abs(measured / expected - 1) < 0.15


@pytest.mark.parametrize("fault", ["nack", "timeout"])
def test_driver_construction_on_a_dead_bus_is_a_sensor_error(fault):
    emu = SensorEmulator(seed=80, netd_scale=0.0, clock=SteppingClock())
    emu.inject(fault)
    with pytest.raises(mlx90640.SensorError, match="I2C"):
        mlx90640.MLX90640(emu.i2c)
    emu.clear_faults()
    assert mlx90640.MLX90640(emu.i2c).serial == emu.serial


def test_round_trip_over_the_whole_target_range():
    """Datasheet target range -40..300 C, with pixels packed around the KsTo corners ct[2]/ct[3]
    (where the first estimate's range switches and a table-based driver is most likely off)."""
    worst = 0.0
    for seed in (1, 2, 10):
        emu = SensorEmulator(seed=seed, netd_scale=0.0)
        params = mlx90640.extract_params(emu.eeprom)
        ct = emu.calibration.ct
        rng = np.random.default_rng(seed)
        scene = rng.uniform(-40.0, 300.0, 768)
        scene[::3] = rng.uniform(ct[2] - 5, ct[2] + 15, scene[::3].size)
        scene[1::3] = np.minimum(rng.uniform(ct[3] - 5, ct[3] + 15, scene[1::3].size), 300.0)
        emu.set_scene(scene, ambient_c=30.0)
        for subpage in (0, 1):
            frame = emu.raw_frame(subpage)
            out = array("f", [0.0] * 768)
            mlx90640.calculate_to(params, frame, 1.0, mlx90640.get_ta(params, frame) - 8, out)
            _, _, represented = emu.model.decode_frame(frame)
            sel = ~np.isnan(represented)
            worst = max(worst, float(np.abs(np.array(out) - represented)[sel].max()))
    print(f"\n-40..300 C: driver vs words {worst:.4f} C")
    assert worst <= TOLERANCE_C
