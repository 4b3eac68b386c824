"""The register-level MLX90640 emulator on its own: EEPROM generator, forward model (checked against
the Adafruit driver as an independent oracle), bus semantics, timing, faults, noise, unit error.
The firmware driver against the emulator is in test_emulator_roundtrip.py."""

from __future__ import annotations

import errno
import json
import math

import numpy as np
import pytest

import adafruit_mlx90640 as adafruit
from host.errors import HostError
from host.virtual.sensor import FAULTS, REFRESH_HZ, SensorEmulator, SteppingClock, generate_eeprom
from host.virtual.sensor_eeprom import decode_eeprom, subpage_pattern

pytestmark = pytest.mark.emulator

RATE_CODE = {rate: code for code, rate in enumerate(REFRESH_HZ)}


def adafruit_oracle(eeprom: list[int]) -> adafruit.MLX90640:
    """The Adafruit driver's calculation, without a bus (its calibration lives in class
    attributes and its bad-pixel lists grow on every construction, so reset them first)."""
    adafruit.eeData[:] = eeprom
    adafruit.MLX90640.brokenPixels = []
    adafruit.MLX90640.outlierPixels = []
    sensor = adafruit.MLX90640.__new__(adafruit.MLX90640)
    sensor._ExtractParameters()
    return sensor


def adafruit_to(sensor: adafruit.MLX90640, frame: list[int]) -> np.ndarray:
    out = [float("nan")] * 768
    ta = sensor._GetTa(frame)
    sensor._CalculateTo(frame, 1.0, ta - 8, out)
    return np.array(out)


def write_reg(emu: SensorEmulator, register: int, value: int) -> None:
    emu.i2c.writeto_mem(emu.address, register, value.to_bytes(2, "big"), addrsize=16)


def read_reg(emu: SensorEmulator, register: int) -> int:
    return int.from_bytes(emu.i2c.readfrom_mem(emu.address, register, 2, addrsize=16), "big")


def configure(emu: SensorEmulator, *, rate: float = 2.0, resolution: int = 18, chess: bool = True) -> None:
    control = (read_reg(emu, 0x800D) & ~0x1F80) | (RATE_CODE[rate] << 7) | ((resolution - 16) << 10)
    write_reg(emu, 0x800D, control | (0x1000 if chess else 0))


def wait_subpage(emu: SensorEmulator, max_polls: int = 100000) -> int:
    """The datasheet handshake on the raw bus: poll bit 3, clear it, return the subpage."""
    for _ in range(max_polls):
        status = read_reg(emu, 0x8000)
        if status & 0x0008:
            write_reg(emu, 0x8000, 0x0030)
            return status & 0x0007
    raise AssertionError("no new data after %d polls" % max_polls)


def read_ram(emu: SensorEmulator) -> np.ndarray:
    raw = emu.i2c.readfrom_mem(emu.address, 0x0400, 1664, addrsize=16)
    return np.frombuffer(raw, dtype=">u2").astype(np.int64)


def real_eeproms(shared_mlx) -> dict[str, list[int]]:
    found = {"melexis": json.loads((shared_mlx / "melexis_example.json").read_text())["eeprom"]}
    for name in ("ceri", "pimoroni", "signaloid"):
        found[name] = json.loads((shared_mlx / "dumps" / f"{name}.json").read_text())["eeprom"]
    return found


def chebyshev_adjacent(a: int, b: int) -> bool:
    return abs(a // 32 - b // 32) <= 1 and abs(a % 32 - b % 32) <= 1


# ----------------------------------------------------------------------------- EEPROM


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_generated_eeprom_decodes_like_the_adafruit_oracle(seed):
    eeprom = generate_eeprom(seed, bad_pixels=seed % 5)
    assert len(eeprom) == 832 and all(0 <= w <= 0xFFFF for w in eeprom)
    ours, theirs = decode_eeprom(eeprom), adafruit_oracle(eeprom)
    for mine, name in [("kvdd", "kVdd"), ("vdd25", "vdd25"), ("kv_ptat", "KvPTAT"),
                       ("kt_ptat", "KtPTAT"), ("vptat25", "vPTAT25"), ("alpha_ptat", "alphaPTAT"),
                       ("gain_ee", "gainEE"), ("tgc", "tgc"), ("ks_ta", "KsTa"),
                       ("resolution_ee", "resolutionEE"), ("cp_kta", "cpKta"), ("cp_kv", "cpKv")]:
        assert getattr(ours, mine) == pytest.approx(getattr(theirs, name), rel=1e-12), name
    assert list(ours.ks_to) == pytest.approx(theirs.ksTo[:4], rel=1e-12)
    assert list(ours.ct) == pytest.approx(theirs.ct[:4])
    assert list(ours.cp_offset) == pytest.approx(theirs.cpOffset)
    assert list(ours.cp_alpha) == pytest.approx(theirs.cpAlpha, rel=1e-12)
    assert list(ours.il_chess) == pytest.approx(theirs.ilChessC)
    good = np.ones(768, dtype=bool)
    good[list(ours.broken)] = False
    assert np.array_equal(ours.offset[good], np.array(theirs.offset, dtype=float)[good])
    their_alpha = 1e-6 / (np.array(theirs.alpha) / 2.0 ** theirs.alphaScale)
    # Adafruit keeps 1/alpha quantised to 16 bits; ours is the exact EEPROM value.
    assert np.max(np.abs(their_alpha - ours.alpha)[good] / ours.alpha[good]) < 5e-5
    assert np.array_equal(ours.kta, np.array(theirs.kta) / 2.0 ** theirs.ktaScale)
    assert np.array_equal(ours.kv, np.array(theirs.kv) / 2.0 ** theirs.kvScale)
    assert sorted(theirs.brokenPixels) == list(ours.broken)
    assert len(ours.broken) == seed % 5


def test_generated_eeproms_vary_between_units_and_stay_in_real_ranges(shared_mlx):
    units = [decode_eeprom(generate_eeprom(seed)) for seed in range(24)]
    reals = [decode_eeprom(words) for words in real_eeproms(shared_mlx).values()]
    assert len({u.serial for u in units}) == len(units)
    assert len({tuple(generate_eeprom(seed)) for seed in range(24)}) == 24
    assert generate_eeprom(5) == generate_eeprom(5)
    for field in ("gain_ee", "kvdd", "vdd25", "kt_ptat", "vptat25", "ks_ta", "cp_kta", "cp_kv"):
        values = [getattr(u, field) for u in units]
        real = [getattr(r, field) for r in reals]
        assert len(set(values)) > (1 if field == "cp_kv" else 5), f"{field} does not vary"
        span = max(max(real) - min(real), 0.2 * abs(real[0]))  # four real units: allow some more
        assert min(real) - 1.5 * span <= min(values) and max(values) <= max(real) + 1.5 * span, field
    for unit in units:
        assert 2.0e-8 < unit.alpha.min() and unit.alpha.max() < 7.0e-8
        assert 0.4 < unit.alpha.min() / unit.alpha.max() < 0.75  # vignetting as in real sensors
        assert -160 < unit.offset.min() and unit.offset.max() < 0
        assert 0.002 < unit.kta.min() and unit.kta.max() < 0.012
        assert 0.2 < unit.kv.min() and unit.kv.max() <= 0.5
        assert unit.ct[2] >= 120  # scenes 0..100 C stay in KsTo range 1 on every unit
        assert unit.calibration_chess and unit.resolution_ee == 2 and unit.address == 0x33
    assert any(u.tgc > 0 for u in units) and any(u.tgc == 0 for u in units)
    assert {len(u.broken) for u in units} <= {0, 1, 2} and len({len(u.broken) for u in units}) > 1


def test_bad_pixels_are_never_adjacent():
    for seed in range(40):
        broken = decode_eeprom(generate_eeprom(seed, bad_pixels=4)).broken
        assert len(broken) == 4
        for i, a in enumerate(broken):
            for b in broken[i + 1:]:
                assert not chebyshev_adjacent(a, b) and abs(a - b) not in (1, 31, 32, 33), (a, b)


def test_generator_and_decoder_reject_what_no_sensor_has():
    with pytest.raises(HostError, match="bad_pixels must be 0..4"):
        generate_eeprom(1, bad_pixels=5)
    for words, message in [([0] * 832, "all 0x0000"), ([0xFFFF] * 832, "all 0xFFFF"),
                           ([1] * 100, "832 words")]:
        with pytest.raises(HostError, match=message):
            decode_eeprom(words)
    adjacent = generate_eeprom(2, bad_pixels=0)
    adjacent[64 + 100] = adjacent[64 + 133] = 0  # diagonal neighbours
    with pytest.raises(HostError, match="adjacent bad pixels"):
        decode_eeprom(adjacent)
    too_many = generate_eeprom(2, bad_pixels=0)
    for p in (0, 100, 200, 300, 400):
        too_many[64 + p] = 0
    with pytest.raises(HostError, match="5 bad pixels"):
        decode_eeprom(too_many)


# ----------------------------------------------------------------------------- forward model


@pytest.mark.parametrize("source", ["generated-tgc", "generated", "signaloid"])
def test_forward_model_agrees_with_the_adafruit_oracle(source, shared_mlx):
    """Scene -> words -> Adafruit's _CalculateTo: the error is the rounding of each word (at most
    half an ADC step) plus Adafruit's 16-bit alpha (< 0.005 C)."""
    if source == "signaloid":
        eeprom = real_eeproms(shared_mlx)["signaloid"]
    else:
        want_tgc = source == "generated-tgc"
        seed = next(s for s in range(50) if (decode_eeprom(generate_eeprom(s)).tgc > 0) == want_tgc)
        eeprom = generate_eeprom(seed, bad_pixels=2)
    emu = SensorEmulator(eeprom=eeprom, seed=9, netd_scale=0.0, clock=SteppingClock())
    oracle = adafruit_oracle(eeprom)
    rng = np.random.default_rng(4)
    worst_lsb = worst_reference = 0.0
    for resolution in (16, 17, 18, 19):
        for chess in (True, False):
            configure(emu, resolution=resolution, chess=chess)
            scene = rng.uniform(0.0, 100.0, (24, 32))
            ambient = float(rng.uniform(10.0, 40.0))
            emu.set_scene(scene, ambient_c=ambient, vdd=float(rng.uniform(3.2, 3.4)))
            for subpage in (0, 1):
                frame = emu.raw_frame(subpage)
                assert frame[832] == emu.control and frame[833] == subpage
                theirs = adafruit_to(oracle, frame)
                ta, vdd, ours = emu.model.decode_frame(frame)
                assert abs(oracle._GetTa(frame) - ta) < 1e-9 and abs(oracle._GetVdd(frame) - vdd) < 1e-12
                assert abs(ta - ambient) < 0.01
                sel = (subpage_pattern(chess) == subpage) & ~emu.model.bad
                assert np.all(np.isnan(ours[~sel]))
                worst_reference = max(worst_reference, np.abs(theirs - ours)[sel].max())
                step = emu.model.quantisation_step_c(scene.ravel(), ta, resolution)
                worst_lsb = max(worst_lsb, (np.abs(ours - scene.ravel()) / step)[sel].max())
    print(f"\n{source}: Adafruit vs emulator decode {worst_reference:.4f} C, "
          f"rounding {worst_lsb:.3f} LSB")
    assert worst_reference < 0.005
    assert worst_lsb <= 0.505  # half a step; the step itself varies by <1 % across one LSB


def test_real_dumps_load_with_their_serial(shared_mlx):
    for name, eeprom in real_eeproms(shared_mlx).items():
        emu = SensorEmulator(eeprom=eeprom, netd_scale=0.0)
        assert emu.serial == "%04x%04x%04x" % tuple(eeprom[7:10]), name
        assert emu.eeprom == eeprom
        assert emu.control == eeprom[12] & 0x1FFF


# ----------------------------------------------------------------------------- bus


def test_bus_reads_big_endian_words_and_nacks_other_addresses():
    emu = SensorEmulator(seed=3, netd_scale=0.0)
    raw = emu.i2c.readfrom_mem(0x33, 0x2400, 1664, addrsize=16)
    assert list(np.frombuffer(raw, dtype=">u2")) == emu.eeprom
    buf = bytearray(6)
    emu.i2c.readfrom_mem_into(0x33, 0x2407, memoryview(buf), addrsize=16)
    assert buf.hex() == emu.serial
    assert emu.i2c.scan() == [0x33]
    with pytest.raises(OSError) as failure:
        emu.i2c.readfrom_mem(0x32, 0x2400, 2, addrsize=16)
    assert failure.value.errno == errno.ENODEV
    with pytest.raises(OSError) as failure:
        emu.i2c.writeto_mem(0x40, 0x800D, b"\x19\x01", addrsize=16)
    assert failure.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="addrsize=16"):
        emu.i2c.readfrom_mem(0x33, 0x8000, 2)
    # plain transfers: two address bytes set the pointer
    emu.i2c.writeto(0x33, b"\x24\x07")
    assert emu.i2c.readfrom(0x33, 2) == buf[:2]


def test_ram_and_calibration_are_read_only_and_user_words_need_an_erase():
    emu = SensorEmulator(seed=3, netd_scale=0.0, clock=SteppingClock())
    wait_subpage(emu)
    before = read_ram(emu)
    emu.i2c.writeto_mem(0x33, 0x0400, b"\x12\x34", addrsize=16)
    emu.i2c.writeto_mem(0x33, 0x2440, b"\x00\x00", addrsize=16)
    assert read_ram(emu)[0] == before[0] and read_reg(emu, 0x2440) == emu.eeprom[0x40] != 0
    write_reg(emu, 0x240F, 0xBE34)  # not erased: ignored
    assert read_reg(emu, 0x240F) == 0xBE33 or read_reg(emu, 0x240F) == emu.eeprom[0x0F]
    write_reg(emu, 0x240F, 0x0000)
    write_reg(emu, 0x240F, 0xBE34)
    assert read_reg(emu, 0x240F) == 0xBE34


def test_status_handshake_bits():
    emu = SensorEmulator(seed=1, netd_scale=0.0, clock=SteppingClock(0.01))
    assert read_reg(emu, 0x8000) & 0x0008 == 0  # nothing measured yet
    for _ in range(200):
        if read_reg(emu, 0x8000) & 0x0008:
            break
    status = read_reg(emu, 0x8000)
    assert status & 0x0008
    write_reg(emu, 0x8000, 0x0038)  # writing 1 to bit 3 does not clear it
    assert read_reg(emu, 0x8000) & 0x0038 == 0x0038
    write_reg(emu, 0x8000, 0x0030)  # the Melexis library's clear: bit 3 off, 4 and 5 kept
    assert read_reg(emu, 0x8000) & 0x0038 == 0x0030
    write_reg(emu, 0x8000, 0x0007)  # subpage bits are read-only
    assert read_reg(emu, 0x8000) & 0x0007 == status & 0x0007


@pytest.mark.parametrize("chess", [True, False])
def test_each_subpage_writes_only_its_own_pixels(chess):
    clock = SteppingClock(0.0005)
    emu = SensorEmulator(seed=2, netd_scale=0.0, clock=clock)
    configure(emu, rate=16.0, resolution=18, chess=chess)
    pattern = subpage_pattern(chess)
    emu.set_scene(np.full((24, 32), 20.0))
    seen = []
    for _ in range(3):
        seen.append(wait_subpage(emu))
    previous = read_ram(emu)
    for step in range(4):
        emu.set_scene(np.full((24, 32), 30.0 + 10 * step))
        subpage = wait_subpage(emu)
        seen.append(subpage)
        ram = read_ram(emu)
        changed = ram[:768] != previous[:768]
        working = ~emu.model.bad  # broken pixels output a stuck value
        assert np.all(changed[(pattern == subpage) & working]), "the subpage's pixels are rewritten"
        assert not np.any(changed[pattern != subpage]), "the other subpage is left alone"
        previous = ram
    assert seen == [0, 1, 0, 1, 0, 1, 0], seen


def test_subpages_follow_the_refresh_rate_on_the_clock():
    for rate in REFRESH_HZ:
        clock = SteppingClock(0.0)
        emu = SensorEmulator(seed=4, netd_scale=0.0, clock=clock)
        configure(emu, rate=rate)
        start = emu.measurements
        clock.advance(10.0 / rate + 0.25 / rate)  # ten periods and a quarter
        emu.update()
        assert emu.measurements - start == 10, rate
        clock.advance(0.5 / rate)
        emu.update()
        assert emu.measurements - start == 10, rate
        clock.advance(0.5 / rate)
        emu.update()
        assert emu.measurements - start == 11, rate
    assert emu.refresh_hz == 64.0


def test_power_on_and_control_register():
    emu = SensorEmulator(seed=6, netd_scale=0.0, clock=SteppingClock())
    assert read_reg(emu, 0x800D) == 0x1901  # from EEPROM 0x240C: 2 Hz, 18 bit, chess, subpages
    configure(emu, rate=8.0, resolution=19, chess=False)
    assert emu.refresh_hz == 8.0 and emu.resolution_bits == 19 and not emu.chess
    assert read_reg(emu, 0x800D) == 0x0001 | (4 << 7) | (3 << 10)
    # data hold without overwrite enable: measurements are not transferred
    write_reg(emu, 0x8000, 0x0000)
    write_reg(emu, 0x800D, read_reg(emu, 0x800D) | 0x0004)
    emu.clock.advance(1.0)
    assert read_reg(emu, 0x8000) & 0x0008 == 0
    write_reg(emu, 0x8000, 0x0010)
    emu.clock.advance(0.2)
    assert read_reg(emu, 0x8000) & 0x0008


# ----------------------------------------------------------------------------- faults


def test_bus_faults_raise_oserror_with_the_right_errno_and_clear():
    emu = SensorEmulator(seed=5, netd_scale=0.0, clock=SteppingClock())
    for fault, code in [("nack", errno.ENODEV), ("timeout", errno.ETIMEDOUT)]:
        emu.inject(fault)
        for call in (lambda: read_reg(emu, 0x8000), lambda: write_reg(emu, 0x8000, 0x30),
                     lambda: read_ram(emu)):
            with pytest.raises(OSError) as failure:
                call()
            assert failure.value.errno == code, fault
        assert emu.i2c.scan() == []
        emu.clear_faults()
        assert read_reg(emu, 0x2407) == emu.eeprom[7]
    with pytest.raises(HostError, match="unknown sensor fault"):
        emu.inject("smoke")
    assert set(FAULTS) == {"nack", "timeout", "stuck_ready", "bad_words", "unplug_mid_frame"}


def test_stuck_ready_never_sets_the_new_data_bit():
    emu = SensorEmulator(seed=5, netd_scale=0.0, clock=SteppingClock(0.01))
    emu.inject("stuck_ready")
    for _ in range(500):  # 5 s at 2 Hz
        assert read_reg(emu, 0x8000) & 0x0008 == 0
    assert emu.measurements >= 9
    emu.clear_faults()
    wait_subpage(emu)


def test_bad_words_put_0x7fff_where_data_must_be():
    emu = SensorEmulator(seed=5, netd_scale=0.0, clock=SteppingClock())
    used_aux = [768, 776, 778, 800, 808, 810]
    for where in ("all", "pixels", "aux"):
        emu.inject("bad_words", where=where)
        subpage = wait_subpage(emu)
        ram = read_ram(emu)
        mine = subpage_pattern(True) == subpage
        assert np.all(ram[:768][mine] == 0x7FFF) == (where != "aux")
        assert np.all(ram[used_aux] == 0x7FFF) == (where != "pixels")
        emu.clear_faults()
        clean = subpage_pattern(True) == wait_subpage(emu)
        ram = read_ram(emu)
        assert not np.any(ram[used_aux] == 0x7FFF) and not np.any(ram[:768][clean] == 0x7FFF)
    with pytest.raises(HostError, match="where="):
        emu.inject("bad_words", where="everywhere")


def test_unplug_mid_frame_fails_partway_then_nacks_until_replugged():
    emu = SensorEmulator(seed=8, netd_scale=0.0, clock=SteppingClock())
    configure(emu, rate=16.0, resolution=19)
    wait_subpage(emu)
    good = read_ram(emu)
    emu.inject("unplug_mid_frame")
    read_reg(emu, 0x8000)  # registers still answer: it is the RAM read that fails
    buf = bytearray(1664)
    with pytest.raises(OSError) as failure:
        emu.i2c.readfrom_mem_into(0x33, 0x0400, buf, addrsize=16)
    assert failure.value.errno == errno.EIO
    got = np.frombuffer(bytes(buf), dtype=">u2")
    tail = np.flatnonzero(got != 0xFFFF)
    assert 0 < tail.size < 832 and np.array_equal(got[:tail.max()], good[:tail.max()])
    with pytest.raises(OSError) as failure:
        read_reg(emu, 0x8000)
    assert failure.value.errno == errno.ENODEV
    assert emu.i2c.scan() == []
    emu.clear_faults()
    # plugged back in = power-on reset: control register from EEPROM, RAM refilled by measuring
    assert read_reg(emu, 0x800D) == 0x1901
    wait_subpage(emu)
    assert not np.any(read_ram(emu)[768:] == 0xFFFF)


# ----------------------------------------------------------------------------- noise, unit error


def pooled_noise(emu: SensorEmulator, frames: int) -> tuple[float, float]:
    """(measured RMS over time, expected RMS incl. the ADC step) for the pixels of subpage 0."""
    readings = []
    for _ in range(frames):
        _, _, to = emu.model.decode_frame(emu.raw_frame(0))
        readings.append(to)
    readings = np.array(readings)
    sel = ~np.isnan(readings[0])
    measured = math.sqrt(np.mean(np.var(readings[:, sel], axis=0, ddof=1)))
    step = emu.model.quantisation_step_c(np.full(768, 25.0), emu.ambient_c, emu.resolution_bits)[sel]
    expected = math.sqrt(emu.netd_k() ** 2 + np.mean(step ** 2) / 12)
    return measured, expected


def test_noise_follows_netd_and_grows_with_the_refresh_rate():
    emu = SensorEmulator(seed=12, clock=SteppingClock())
    emu.set_scene(np.full((24, 32), 25.0), ambient_c=25.0)
    results = {}
    for rate in (1.0, 4.0, 16.0):
        configure(emu, rate=rate, resolution=19)
        measured, expected = pooled_noise(emu, 40)
        results[rate] = measured
        print(f"\n{rate:4} Hz: NETD {emu.netd_k():.3f} K, measured {measured:.3f} K, "
              f"expected with ADC step {expected:.3f} K")
        assert abs(measured / expected - 1) < 0.15, rate
    assert 1.7 < results[4.0] / results[1.0] < 2.3  # sqrt(4)
    emu.netd_scale = 0.5
    configure(emu, rate=16.0, resolution=19)
    assert emu.netd_k() == pytest.approx(0.2)
    measured, expected = pooled_noise(emu, 30)
    assert abs(measured / expected - 1) < 0.15


def test_noise_is_deterministic_by_seed_and_off_at_scale_zero():
    frames = [SensorEmulator(seed=3, clock=SteppingClock()).raw_frame(0) for _ in range(2)]
    assert frames[0] == frames[1]
    other = SensorEmulator(eeprom=generate_eeprom(3), seed=4, clock=SteppingClock()).raw_frame(0)
    assert other[:768] != frames[0][:768]
    quiet = SensorEmulator(seed=3, netd_scale=0.0, clock=SteppingClock())
    assert quiet.raw_frame(1) == quiet.raw_frame(1)


def test_unit_error_is_what_the_driver_reads():
    emu = SensorEmulator(seed=21, netd_scale=0.0, clock=SteppingClock(), unit_offset_c=1.5,
                         unit_gain=0.97, pixel_offset_sigma_c=0.3)
    configure(emu, resolution=19)
    scene = np.full((24, 32), 36.0)
    scene[5:10, 5:10] = 80.0
    emu.set_scene(scene, ambient_c=28.0)
    read = np.full(768, np.nan)
    for subpage in (0, 1):
        _, _, to = emu.model.decode_frame(emu.raw_frame(subpage))
        read = np.where(np.isnan(to), read, to)
    good = ~emu.model.bad
    expected = 0.97 * scene.ravel() + 1.5 + 0.3 * emu.physics.pixel_error_map
    step = emu.model.quantisation_step_c(expected, 28.0, 19)
    assert np.all(np.abs(read - expected)[good] <= 0.505 * step[good])
    pixel_part = (read - 0.97 * scene.ravel() - 1.5)[good]
    assert 0.25 < pixel_part.std() < 0.35
    emu.set_unit_error(offset_c=-2.0, gain=1.0, pixel_sigma_c=0.0)
    _, _, to = emu.model.decode_frame(emu.raw_frame(0))
    sel = ~np.isnan(to)
    assert np.all(np.abs(to - (scene.ravel() - 2.0))[sel] <= 0.505 * emu.model.quantisation_step_c(
        scene.ravel() - 2.0, 28.0, 19)[sel])


def test_scene_validation_says_what_is_wrong():
    emu = SensorEmulator(seed=1)
    with pytest.raises(HostError, match="24x32 or 768"):
        emu.set_scene(np.zeros((32, 24)))
    with pytest.raises(HostError, match="finite"):
        emu.set_scene(np.full(768, np.nan))
    with pytest.raises(HostError, match="operating range"):
        emu.set_scene(np.zeros(768), ambient_c=120.0)
    with pytest.raises(HostError, match="Vdd"):
        emu.set_scene(np.zeros(768), vdd=5.0)
    with pytest.raises(HostError, match="subpage is 0 or 1"):
        emu.raw_frame(2)
