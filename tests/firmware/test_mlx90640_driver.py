# The MLX90640 driver class on a small fake I2C bus that behaves like the chip (datasheet section 10:
# status 0x8000 bit 3 new data, host clears it; control 0x800D; RAM 0x0400; EEPROM 0x2400), faults
# included. Runs under CPython and the MicroPython unix port.
from array import array

import mlx90640
import support

_ENODEV = 19
_ETIMEDOUT = 110
_CHESS_18BIT_2HZ = 0x1901


class FakeMLX90640Bus:
    """machine.I2C-like bus with one MLX90640 at 0x33. A subpage is measured after `polls` status
    reads following the previous one: its pixel words (chess or interleaved, by the control
    register) and the auxiliary words are written to RAM from `frames[subpage]`, then status bit 3
    and the subpage bits are set. Faults: 'nack', 'timeout', 'stuck_ready' (bit 3 never sets),
    'flag_stuck_set' (bit 3 does not clear), 'bad_aux',
    'overwrite_during_read' (next subpage lands while RAM is read), 'reset' (power-on reset: the
    control register goes back to its EEPROM value)."""

    def __init__(self, eeprom, frames, control=_CHESS_18BIT_2HZ, polls=2):
        self.eeprom = list(eeprom)
        self.frames = frames
        self.ram = [0x7FFF] * 832
        self.status = 0
        self.control = control
        self.power_on_control = control
        self.polls = polls
        self.since = 0
        self.next_subpage = 0
        self.faults = set()
        self.ram_reads = 0
        self.status_writes = []

    # bus
    def _check(self, addr, addrsize):
        if addrsize != 16:
            raise OSError(_ENODEV)       # 8-bit register address: the chip NACKs the transfer
        if "timeout" in self.faults:
            raise OSError(_ETIMEDOUT)
        if addr != 0x33 or "nack" in self.faults:
            raise OSError(_ENODEV)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._check(addr, addrsize)
        n = len(buf) // 2
        if 0x0400 <= memaddr < 0x0740:
            self.ram_reads += 1
            if "overwrite_during_read" in self.faults:
                self._measure()
        for k in range(n):
            w = self._word(memaddr + k)
            buf[2 * k] = w >> 8
            buf[2 * k + 1] = w & 0xFF

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._check(addr, addrsize)
        value = (buf[0] << 8) | buf[1]
        if memaddr == 0x8000:
            self.status_writes.append(value)
            # bit 3 can only be cleared by the host; bits 4, 5 are read/write
            keep = 0x0008 if "flag_stuck_set" in self.faults else 0x0008 & value
            self.status = (self.status & 0x0007) | (self.status & keep) | (value & 0x0030)
        elif memaddr == 0x800D:
            self.control = value

    def _word(self, reg):
        if 0x2400 <= reg < 0x2740:
            return self.eeprom[reg - 0x2400]
        if 0x0400 <= reg < 0x0740:
            return self.ram[reg - 0x0400]
        if reg == 0x8000:
            self.since += 1
            if self.since > self.polls:
                self._measure()
            return self.status
        if reg == 0x800D:
            if "reset" in self.faults:
                self.faults.discard("reset")
                self.control = self.power_on_control
            return self.control
        return 0

    def _measure(self):
        sp = self.next_subpage
        self.next_subpage ^= 1
        self.since = 0
        src = self.frames[sp]
        chess = self.control & 0x1000
        for i in range(768):
            row = i >> 5
            mine = ((row + i) & 1) == sp if chess else (row & 1) == sp
            if mine:
                self.ram[i] = src[i]
        for i in range(768, 832):
            self.ram[i] = src[i]
        if "bad_aux" in self.faults:
            for i in (768, 776, 778, 800, 808, 810):
                self.ram[i] = 0x7FFF
        status = (self.status & ~0x0007) | sp
        if "stuck_ready" not in self.faults:
            status |= 0x0008
        self.status = status


_DATA = None


def melexis():
    global _DATA
    if _DATA is None:
        _DATA = support.load_shared("melexis_example.json")
    return _DATA


def make_bus(**kw):
    d = melexis()
    return FakeMLX90640Bus(d["eeprom"], (d["frame0"], d["frame1"]), **kw)


def test_reads_eeprom_serial_and_calibration():
    d = melexis()
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    ee = d["eeprom"]
    if sensor.serial != "%04x%04x%04x" % (ee[7], ee[8], ee[9]):
        raise AssertionError("serial %r" % sensor.serial)
    if sensor.params.gainEE != d["params"]["gainEE"]:
        raise AssertionError("gain %r" % sensor.params.gainEE)
    if len(sensor.frame) != 834:
        raise AssertionError("frame buffer has %d words" % len(sensor.frame))


def test_settings_read_modify_write_the_control_register():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    if sensor.refresh_rate != 2 or sensor.resolution != 18 or sensor.pattern != "chess":
        raise AssertionError("defaults %r %r %r" % (sensor.refresh_rate, sensor.resolution, sensor.pattern))
    sensor.refresh_rate = 0.5
    if bus.control != (_CHESS_18BIT_2HZ & ~0x0380):
        raise AssertionError("0.5 Hz: control 0x%04X" % bus.control)
    sensor.refresh_rate = 64
    sensor.resolution = 19
    sensor.pattern = "interleaved"
    if bus.control != 0x0001 | (7 << 7) | (3 << 10):
        raise AssertionError("control 0x%04X" % bus.control)
    if (sensor.refresh_rate, sensor.resolution, sensor.pattern) != (64, 19, "interleaved"):
        raise AssertionError("read back %r" % ((sensor.refresh_rate, sensor.resolution, sensor.pattern),))
    sensor.pattern = "chess"
    sensor.resolution = 16
    if bus.control != 0x1001 | (7 << 7):
        raise AssertionError("control 0x%04X" % bus.control)
    for name, bad in (("refresh_rate", 3), ("resolution", 20), ("pattern", "tv")):
        try:
            setattr(sensor, name, bad)
        except ValueError:
            pass
        else:
            raise AssertionError("%s=%r accepted" % (name, bad))


def test_subpages_by_the_handshake_give_melexis_temperatures():
    d = melexis()
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    out = array("f", [-999.0] * 768)
    seen = []
    for _ in range(2):
        seen.append(sensor.temperatures(out))
        # the driver cleared the new-data flag the datasheet way
        if bus.status & 0x0008 or bus.status_writes[-1] != 0x0030:
            raise AssertionError("status 0x%04X, writes %r" % (bus.status, bus.status_writes))
    if seen != [0, 1]:
        raise AssertionError("subpages %r" % seen)
    frame = sensor.frame
    if frame[832] != _CHESS_18BIT_2HZ or frame[833] != 1:
        raise AssertionError("control/subpage words %r %r" % (frame[832], frame[833]))
    support.check_close(sensor.ta, d["derived"]["ta_frame1"], 1e-4, "Ta")
    support.check_close(sensor.vdd, d["derived"]["vdd_frame1"], 1e-5, "Vdd")
    for i in range(768):
        sp = ((i >> 5) + i) & 1
        expected = d["to_frame%d" % sp][i]
        support.check_close(out[i], expected, 0.002, "pixel %d" % i)


def expect_sensor_error(fn, *fragments):
    try:
        fn()
    except mlx90640.SensorError as exc:
        msg = str(exc)
        for f in fragments:
            if f not in msg:
                raise AssertionError("message %r lacks %r" % (msg, f))
        return msg
    raise AssertionError("no SensorError")


def test_bus_faults_become_sensor_errors_and_the_driver_recovers():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    out = array("f", [0.0] * 768)
    for fault, text in (("nack", "failed"), ("timeout", "failed")):
        bus.faults.add(fault)
        expect_sensor_error(lambda: sensor.read_subpage(timeout_ms=50), text, "0x33")
        expect_sensor_error(lambda: sensor.refresh_rate, "0x800D")
        bus.faults.discard(fault)
        sensor.temperatures(out)        # no stuck state once the fault clears


def test_no_new_data_times_out_then_recovers():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    bus.faults.add("stuck_ready")
    expect_sensor_error(lambda: sensor.read_subpage(timeout_ms=20), "no new data", "3 attempts")
    bus.faults.discard("stuck_ready")
    sensor.read_subpage(timeout_ms=200)


def test_a_new_data_flag_that_does_not_clear_is_reported():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    sensor.read_subpage(timeout_ms=200)
    bus.faults.add("flag_stuck_set")
    expect_sensor_error(lambda: sensor.read_subpage(timeout_ms=200), "stuck")
    bus.faults.discard("flag_stuck_set")
    sensor.read_subpage(timeout_ms=200)


def test_missing_data_words_are_rejected_and_the_driver_recovers():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    bus.faults.add("bad_aux")
    expect_sensor_error(lambda: sensor.read_subpage(timeout_ms=200), "0x7FFF")
    bus.faults.discard("bad_aux")
    frame = sensor.read_subpage(timeout_ms=200)
    if frame[768] == 0x7FFF:
        raise AssertionError("stale bad word")


def test_overwrite_during_the_read_is_retried():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    bus.faults.add("overwrite_during_read")
    expect_sensor_error(lambda: sensor.read_subpage(timeout_ms=200), "subpage changed", "too slow")
    if bus.ram_reads != sensor.RETRIES:
        raise AssertionError("%d RAM reads for %d attempts" % (bus.ram_reads, sensor.RETRIES))
    bus.faults.discard("overwrite_during_read")
    sensor.read_subpage(timeout_ms=200)


def test_sensor_reset_restores_the_settings():
    bus = make_bus()
    sensor = mlx90640.MLX90640(bus)
    sensor.refresh_rate = 8        # (the fake's frames are 18-bit data: keep the resolution)
    wanted = bus.control
    bus.faults.add("reset")
    frame = sensor.read_subpage(timeout_ms=200)
    if bus.control != wanted or frame[832] != wanted:
        raise AssertionError("control 0x%04X, frame 0x%04X, wanted 0x%04X" % (bus.control, frame[832], wanted))


def test_no_sensor_or_a_foreign_device_fails_at_construction():
    d = melexis()
    bus = FakeMLX90640Bus([0xFFFF] * 832, (d["frame0"], d["frame1"]))
    expect_sensor_error(lambda: mlx90640.MLX90640(bus), "EEPROM", "0xFFFF")
    bus = make_bus()
    bus.faults.add("nack")
    expect_sensor_error(lambda: mlx90640.MLX90640(bus), "EEPROM")
    expect_sensor_error(lambda: mlx90640.MLX90640(make_bus(), address=0x32), "0x32")
