"""A register-level MLX90640 on a fake machine.I2C bus, for tests and the simulator.

    emu = SensorEmulator(seed=7)                 # a generated unit (or eeprom=[832 words])
    emu.set_scene(object_c, ambient_c=25.0)      # true object temperatures, (24, 32) or 768
    sensor = MLX90640(emu.i2c)                   # the firmware driver, unchanged

Memory map (datasheet section 10, big-endian 16-bit words on the bus):
    0x2400..0x273F  EEPROM (832 words); 0x240C/0x240D/0x240F user words are the power-on control
                    register, I2C config and slave address (erase with 0, then program)
    0x0400..0x073F  RAM: 768 pixel words, then the auxiliary rows (Ta, Vdd, gain, CP)
    0x8000          status: bits 0..2 last measured subpage, bit 3 new data in RAM (cleared by the
                    host writing 0 to it), bit 4 enable overwrite, bit 5 start of measurement
    0x800D          control 1: bit 0 subpage mode, bit 2 data hold, bit 3 subpage repeat, bits 4..6
                    subpage select, bits 7..9 refresh rate (0.5..64 Hz), bits 10..11 resolution
                    (16..19 bit), bit 12 chess (1) / interleaved (0)
    0x800F          I2C configuration

Time comes from `clock` (seconds; time.monotonic by default, a simulator passes its own). One
subpage is measured per refresh period; each measurement writes only that subpage's pixels
(chess or interleaved pattern) plus the auxiliary rows, sets status bit 3 and the subpage bits.

Sensor error of the unit (what a calibration must take out), applied to the true scene before it
is encoded: the driver reads  T_read = unit_gain * T + unit_offset_c + pixel_offset_sigma_c * z_i,
with z_i a fixed standard-normal pattern of this unit (drawn from the seed). Noise: NETD 0.1 K RMS
at 1 Hz (datasheet front page) growing with sqrt(refresh rate), times `netd_scale` (0 = none),
applied as count noise sized at To = Ta = 25 C; the words are then rounded, so the readings carry
the ADC step too (see ForwardModel.quantisation_step_c: ~0.19 C per LSB at 18 bit, 0.77 at 16).

Faults (`inject`): "nack" (every access OSError ENODEV), "timeout" (OSError ETIMEDOUT),
"stuck_ready" (status bit 3 never sets), "bad_words" (0x7FFF in the measured pixel words and the
used auxiliary words; option where="all"|"pixels"|"aux"), "unplug_mid_frame" (the next RAM read
returns part of the data, the rest 0xFF, then OSError EIO; the sensor is gone, ENODEV, until
clear_faults() plugs it back in, which is a power-on reset: registers from EEPROM again).
"""

from __future__ import annotations

import errno
import math
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from host.errors import HostError
from host.virtual.sensor_eeprom import (EEPROM_WORDS, PIXELS, Calibration, decode_eeprom,
                                        generate_eeprom, subpage_pattern)
from host.virtual.sensor_model import (NETD_1HZ_K, REFRESH_HZ, USED_AUX_WORDS, ForwardModel,
                                       UnitPhysics)

__all__ = ["SensorEmulator", "FakeI2C", "SteppingClock", "generate_eeprom", "decode_eeprom",
           "FAULTS", "REFRESH_HZ"]

ADDRESS = 0x33
EEPROM_BASE, RAM_BASE, RAM_WORDS = 0x2400, 0x0400, 832
STATUS_REG, CONTROL_REG, I2C_CONFIG_REG = 0x8000, 0x800D, 0x800F
_USER_EEPROM = (0x240C, 0x240D, 0x240F)  # words the host may reprogram

_STATUS_SUBPAGE = 0x0007
_STATUS_NEW_DATA = 0x0008
_STATUS_WRITABLE = 0x0030  # overwrite enable, start of measurement
_CTRL_SUBPAGE_MODE = 0x0001
_CTRL_DATA_HOLD = 0x0004
_CTRL_SUBPAGE_REPEAT = 0x0008
_CTRL_CHESS = 0x1000
_CTRL_WRITABLE = 0x1FFF

FAULTS = ("nack", "timeout", "stuck_ready", "bad_words", "unplug_mid_frame")
_BAD_WORD = 0x7FFF


class SteppingClock:
    """A clock that advances by `step_s` every time it is read: each bus access takes time, so a
    driver that polls the status register sees data arrive without real waiting."""

    def __init__(self, step_s: float = 0.001, start_s: float = 0.0) -> None:
        self.now = start_s
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SensorEmulator:
    """Register-level MLX90640 (see the module docstring for the map, timing, error and faults)."""

    def __init__(self, eeprom: Sequence[int] | None = None, seed: int = 0,
                 clock: Callable[[], float] | None = None, *, netd_scale: float = 1.0,
                 unit_offset_c: float = 0.0, unit_gain: float = 1.0,
                 pixel_offset_sigma_c: float = 0.0) -> None:
        words = generate_eeprom(seed) if eeprom is None else [int(w) for w in eeprom]
        self.calibration: Calibration = decode_eeprom(words)
        self._eeprom = np.array(words, dtype=np.int64)
        self.seed = seed
        self.physics = UnitPhysics.draw(seed)
        self.model = ForwardModel(self.calibration, self.physics)
        self.clock: Callable[[], float] = clock or time.monotonic
        self.netd_scale = float(netd_scale)
        self.unit_offset_c = float(unit_offset_c)
        self.unit_gain = float(unit_gain)
        self.pixel_offset_sigma_c = float(pixel_offset_sigma_c)
        self._noise_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x401E])
        self._fault_rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xFA17])
        self._lock = threading.RLock()
        self._faults: dict[str, dict] = {}
        self._unplugged = False
        self._scene = np.full(PIXELS, 25.0)
        self._ambient_c = 25.0
        self._vdd = 3.3
        self.measurements = 0  # subpages measured since power-on
        self.bus_reads = 0
        self.bus_writes = 0
        self.i2c = FakeI2C(self)
        self._power_on()

    # ------------------------------------------------------------------ public model

    @property
    def eeprom(self) -> list[int]:
        return [int(w) for w in self._eeprom]

    @property
    def serial(self) -> str:
        """Device id 0x2407..0x2409 as 12 hex digits (what the driver's `serial` should say)."""
        return self.calibration.serial

    @property
    def address(self) -> int:
        return self._address

    @property
    def control(self) -> int:
        return self._control

    @property
    def status(self) -> int:
        return self._status

    @property
    def refresh_hz(self) -> float:
        return REFRESH_HZ[(self._control >> 7) & 7]

    @property
    def resolution_bits(self) -> int:
        return 16 + ((self._control >> 10) & 3)

    @property
    def chess(self) -> bool:
        return bool(self._control & _CTRL_CHESS)

    @property
    def ram(self) -> np.ndarray:
        with self._lock:
            self.update()
            return self._ram.copy()

    @property
    def scene(self) -> np.ndarray:
        return self._scene.reshape(24, 32).copy()

    @property
    def ambient_c(self) -> float:
        return self._ambient_c

    def set_scene(self, object_c, ambient_c: float = 25.0, vdd: float = 3.3) -> None:
        """True object temperatures (deg C, emissivity-1 radiance equivalent), the sensor's own
        ambient Ta (what the driver's get_ta reads) and its supply voltage."""
        scene = np.asarray(object_c, dtype=np.float64)
        if scene.shape not in ((24, 32), (PIXELS,)):
            raise HostError(f"a scene is 24x32 or 768 temperatures, got shape {scene.shape}: "
                            "reshape it to the sensor's 24 rows by 32 columns")
        if not np.all(np.isfinite(scene)) or scene.min() <= -273.15:
            raise HostError("scene temperatures must be finite and above absolute zero")
        if not (math.isfinite(ambient_c) and -40.0 <= ambient_c <= 85.0):
            raise HostError(f"ambient {ambient_c} C is outside the sensor's -40..85 C operating range")
        if not (math.isfinite(vdd) and 2.6 <= vdd <= 3.6):
            raise HostError(f"Vdd {vdd} V is outside 2.6..3.6 V")
        with self._lock:
            self.update()  # measurements already due saw the previous scene
            self._scene = scene.reshape(PIXELS).copy()
            self._ambient_c = float(ambient_c)
            self._vdd = float(vdd)

    def set_unit_error(self, offset_c: float | None = None, gain: float | None = None,
                       pixel_sigma_c: float | None = None) -> None:
        with self._lock:
            self.update()
            if offset_c is not None:
                self.unit_offset_c = float(offset_c)
            if gain is not None:
                self.unit_gain = float(gain)
            if pixel_sigma_c is not None:
                self.pixel_offset_sigma_c = float(pixel_sigma_c)

    def encoded_scene(self) -> np.ndarray:
        """The temperatures the sensor actually encodes: the scene through the unit's error."""
        return (self.unit_gain * self._scene + self.unit_offset_c
                + self.pixel_offset_sigma_c * self.physics.pixel_error_map)

    def netd_k(self, refresh_hz: float | None = None) -> float:
        """Temperature noise (K RMS per reading, at 25 C) at a refresh rate, netd_scale included."""
        rate = self.refresh_hz if refresh_hz is None else refresh_hz
        return NETD_1HZ_K * math.sqrt(rate / 1.0) * self.netd_scale

    def raw_frame(self, subpage: int) -> list[int]:
        """834 words as the driver would read after `subpage` was measured with the current scene
        and control register: RAM (the other subpage's pixels as measured one period earlier),
        then the control register and the subpage. Pure forward model: no bus, no faults, the
        emulator's RAM is left alone; noise is drawn if netd_scale > 0."""
        if subpage not in (0, 1):
            raise HostError(f"subpage is 0 or 1, got {subpage}")
        with self._lock:
            ram = np.zeros(RAM_WORDS, dtype=np.int64)
            pattern = subpage_pattern(self.chess)
            for sp in (1 - subpage, subpage):
                words, aux_row = self._measure_words(sp)
                ram[:PIXELS] = np.where(pattern == sp, words, ram[:PIXELS])
                ram[PIXELS:] = aux_row
            return [int(w) for w in ram] + [self._control, subpage]

    def update(self) -> None:
        """Run the measurements that are due on the clock (done before every bus access)."""
        with self._lock:
            if self._unplugged:
                return
            now = self.clock()
            period = 1.0 / self.refresh_hz
            due = int(math.floor((now - self._last_measurement) / period + 1e-9))
            if due <= 0:
                return
            # Only the last two measurements can still be seen in RAM.
            first = max(0, due - 2)
            for k in range(first, due):
                self._measure(self._next_subpage(self.measurements + k))
            self.measurements += due
            self._last_measurement += due * period

    # ------------------------------------------------------------------ faults

    @property
    def faults(self) -> tuple[str, ...]:
        return tuple(self._faults)

    def inject(self, name: str, **options) -> None:
        if name not in FAULTS:
            raise HostError(f"unknown sensor fault {name!r}: use one of {', '.join(FAULTS)}")
        if name == "bad_words" and options.get("where", "all") not in ("all", "pixels", "aux"):
            raise HostError("bad_words where= must be 'all', 'pixels' or 'aux'")
        with self._lock:
            self.update()
            self._faults[name] = dict(options)

    def clear_faults(self) -> None:
        """Remove every fault. A sensor that was unplugged comes back through a power-on reset."""
        with self._lock:
            replug = self._unplugged
            self._faults.clear()
            self._unplugged = False
            if replug:
                self._power_on()

    # ------------------------------------------------------------------ internals

    def _power_on(self) -> None:
        # Registers come from the EEPROM user words (datasheet 11.1: 0x240C -> 0x800D, 0x240D ->
        # 0x800F, 0x240F low byte = slave address); RAM is empty until the first measurement.
        self._control = int(self._eeprom[0x0C]) & _CTRL_WRITABLE
        self._i2c_config = int(self._eeprom[0x0D])
        self._address = int(self._eeprom[0x0F]) & 0x7F or ADDRESS
        self._status = 0
        self._ram = np.zeros(RAM_WORDS, dtype=np.int64)
        self._last_measurement = self.clock()
        self.measurements = 0

    def _next_subpage(self, index: int) -> int:
        if not self._control & _CTRL_SUBPAGE_MODE:
            return 0
        if self._control & _CTRL_SUBPAGE_REPEAT:
            return (self._control >> 4) & 1
        return index % 2

    def _measure_words(self, subpage: int) -> tuple[np.ndarray, np.ndarray]:
        resolution, chess = self.resolution_bits, self.chess
        aux = self.model.aux(self._ambient_c, self._vdd, resolution, chess)
        noise = None
        netd = self.netd_k()
        if netd > 0:
            noise = self._noise_rng.standard_normal(PIXELS) * self.model.noise_sigma_gain_units(netd)
        words = self.model.pixel_words(self.encoded_scene(), aux, subpage, chess, noise)
        return words, self.model.aux_row_words(aux)

    def _measure(self, subpage: int) -> None:
        if self._control & _CTRL_DATA_HOLD and not self._status & 0x0010:
            return  # data hold without overwrite enable: the measurement is not transferred
        words, aux_row = self._measure_words(subpage)
        if self._control & _CTRL_SUBPAGE_MODE:
            selected = subpage_pattern(self.chess) == subpage
        else:
            selected = np.ones(PIXELS, dtype=bool)
        fault = self._faults.get("bad_words")
        if fault is not None:
            where = fault.get("where", "all")
            if where in ("all", "pixels"):
                words = np.where(selected, _BAD_WORD, words)
            if where in ("all", "aux"):
                aux_row = aux_row.copy()
                aux_row[[w - PIXELS for w in USED_AUX_WORDS]] = _BAD_WORD
        self._ram[:PIXELS] = np.where(selected, words, self._ram[:PIXELS])
        self._ram[PIXELS:] = aux_row
        status = (self._status & ~_STATUS_SUBPAGE) | subpage
        if "stuck_ready" not in self._faults:
            status |= _STATUS_NEW_DATA
        self._status = status

    def _check_bus(self, address: int) -> None:
        if "timeout" in self._faults:
            raise OSError(errno.ETIMEDOUT, "I2C bus timeout (emulated fault)")
        if address != self._address or "nack" in self._faults or self._unplugged:
            raise OSError(errno.ENODEV, "no ACK from 0x%02x" % address)

    def _read_word(self, register: int) -> int:
        if RAM_BASE <= register < RAM_BASE + RAM_WORDS:
            return int(self._ram[register - RAM_BASE])
        if EEPROM_BASE <= register < EEPROM_BASE + EEPROM_WORDS:
            return int(self._eeprom[register - EEPROM_BASE])
        if register == STATUS_REG:
            return self._status
        if register == CONTROL_REG:
            return self._control
        if register == I2C_CONFIG_REG:
            return self._i2c_config
        return 0

    def bus_read(self, address: int, register: int, nbytes: int) -> bytes:
        with self._lock:
            self._check_bus(address)
            self.update()
            self.bus_reads += 1
            nwords = (nbytes + 1) // 2
            if RAM_BASE <= register and register + nwords <= RAM_BASE + RAM_WORDS:
                words = self._ram[register - RAM_BASE:register - RAM_BASE + nwords]
            else:
                words = np.array([self._read_word((register + i) & 0xFFFF) for i in range(nwords)],
                                 dtype=np.int64)
            data = words.astype(">u2").tobytes()[:nbytes]
            touches_ram = register < RAM_BASE + RAM_WORDS and register + nwords > RAM_BASE
            if "unplug_mid_frame" in self._faults and touches_ram:
                # The sensor drops off mid-transfer: the master keeps clocking and reads the
                # pulled-up line (0xFF) for the rest, then the controller reports the failure.
                cut = int(self._fault_rng.integers(1, max(2, nbytes)))
                self._unplugged = True
                del self._faults["unplug_mid_frame"]
                raise _PartialRead(data[:cut] + b"\xff" * (nbytes - cut))
            return data

    def bus_write(self, address: int, register: int, data: bytes) -> None:
        with self._lock:
            self._check_bus(address)
            self.update()
            self.bus_writes += 1
            for i in range(len(data) // 2):
                self._write_word((register + i) & 0xFFFF, (data[2 * i] << 8) | data[2 * i + 1])

    def _write_word(self, register: int, value: int) -> None:
        if register == STATUS_REG:
            # bit 3 can only be cleared by the host; bits 4, 5 are read/write; 0..2 read-only
            new_data = self._status & _STATUS_NEW_DATA & value
            self._status = (self._status & _STATUS_SUBPAGE) | new_data | (value & _STATUS_WRITABLE)
        elif register == CONTROL_REG:
            old = self._control
            self._control = value & _CTRL_WRITABLE
            if (old ^ self._control) & 0x1F8D:
                # A new mode, rate, resolution or pattern restarts the measurement cycle.
                self._last_measurement = self.clock()
        elif register == I2C_CONFIG_REG:
            self._i2c_config = value
        elif register in _USER_EEPROM:
            # EEPROM cells are erased by writing 0 and programmed once erased (datasheet 10.4.1);
            # the new value is used at the next power-on.
            index = register - EEPROM_BASE
            if value == 0 or self._eeprom[index] == 0:
                self._eeprom[index] = value
        # RAM and the calibration EEPROM are read-only for the host: writes are ignored.


class _PartialRead(Exception):
    """Internal: a read that failed after part of the data arrived."""

    def __init__(self, data: bytes) -> None:
        super().__init__("partial read")
        self.data = data


class FakeI2C:
    """machine.I2C semantics on the emulated bus: big-endian 16-bit register addresses, OSError
    with an errno (ENODEV for a NACK, ETIMEDOUT, EIO) when the transfer fails."""

    def __init__(self, sensor: SensorEmulator) -> None:
        self._sensor = sensor
        self._pointer = 0

    @staticmethod
    def _check_addrsize(addrsize: int) -> None:
        if addrsize != 16:
            raise ValueError("the MLX90640 has 16-bit register addresses: pass addrsize=16")

    def scan(self) -> list[int]:
        sensor = self._sensor
        if sensor._faults.keys() & {"nack", "timeout"} or sensor._unplugged:
            return []
        return [sensor.address]

    def readfrom_mem_into(self, addr: int, memaddr: int, buf, addrsize: int = 8) -> None:
        self._check_addrsize(addrsize)
        view = memoryview(buf).cast("B")
        try:
            data = self._sensor.bus_read(addr, memaddr, len(view))
        except _PartialRead as partial:
            view[:] = partial.data
            raise OSError(errno.EIO, "I2C transfer failed mid-read (sensor unplugged)") from None
        view[:] = data

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, addrsize: int = 8) -> bytes:
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)

    def writeto_mem(self, addr: int, memaddr: int, buf, addrsize: int = 8) -> None:
        self._check_addrsize(addrsize)
        self._sensor.bus_write(addr, memaddr, bytes(buf))

    # Plain transfers: the first two bytes written set the register pointer (datasheet 10.2.1.4).
    def writeto(self, addr: int, buf, stop: bool = True) -> int:
        data = bytes(buf)
        if len(data) == 1:
            raise OSError(errno.EIO, "MLX90640 needs a 16-bit register address")
        if len(data) > 2:
            self._sensor.bus_write(addr, (data[0] << 8) | data[1], data[2:])
        else:  # an empty write probes the address; two bytes set the register pointer
            with self._sensor._lock:
                self._sensor._check_bus(addr)
        if len(data) >= 2:
            self._pointer = (data[0] << 8) | data[1]
        return len(data)

    def readfrom_into(self, addr: int, buf, stop: bool = True) -> None:
        self.readfrom_mem_into(addr, self._pointer, buf, addrsize=16)

    def readfrom(self, addr: int, nbytes: int, stop: bool = True) -> bytes:
        return self.readfrom_mem(addr, self._pointer, nbytes, addrsize=16)
