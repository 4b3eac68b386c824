# machine stand-in for the virtual unit under `host sim` (shadows the unix port's built-in machine).
# I2C reaches the MLX90640 emulator in the host process over simlink; Pin, PWM and the NeoPixel
# record an indicator timeline in virtual time; WDT is checked against the virtual clock (a starved
# watchdog ends the run and the host reports it); Timer callbacks fire on the virtual clock.
import simlink

_EIO = 5
_ENODEV = 19


def _event(kind, **fields):
    fields["kind"] = kind
    simlink.event(fields)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, id, mode=-1, pull=-1, value=None, **kwargs):
        self.id = id
        self._mode = mode
        self._pull = pull
        # an input with a pull-up reads 1 (a button not pressed); everything else starts low
        self._value = 1 if pull == Pin.PULL_UP else 0
        _event("pin_init", pin=id, mode=mode, pull=pull)
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, value=None, **kwargs):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self.value(value)

    def value(self, value=None):
        if value is None:
            return self._value
        value = 1 if value else 0
        if value != self._value:
            self._value = value
            _event("pin", pin=self.id, value=value)
        return None

    def __call__(self, value=None):
        return self.value(value)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, **kwargs):
        self._irq = handler
        return None

    def __repr__(self):
        return "Pin(%s)" % (self.id,)


class Signal:
    def __init__(self, pin, invert=False):
        self._pin = pin
        self._invert = invert

    def value(self, value=None):
        if value is None:
            return self._pin.value() ^ (1 if self._invert else 0)
        self._pin.value((1 if value else 0) ^ (1 if self._invert else 0))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PWM:
    def __init__(self, dest, freq=None, duty=None, duty_u16=None, duty_ns=None, **kwargs):
        self._pin = dest
        self._freq = 0
        self._duty_u16 = 0
        self._pin_id = getattr(dest, "id", dest)
        self.init(freq, duty, duty_u16)

    def _report(self):
        _event("pwm", pin=self._pin_id, freq=self._freq, duty_u16=self._duty_u16)

    def init(self, freq=None, duty=None, duty_u16=None, **kwargs):
        if freq is not None:
            self._freq = int(freq)
        if duty is not None:
            self._duty_u16 = int(duty) * 64
        if duty_u16 is not None:
            self._duty_u16 = int(duty_u16)
        self._report()

    def freq(self, value=None):
        if value is None:
            return self._freq
        if int(value) != self._freq:
            self._freq = int(value)
            self._report()

    def duty(self, value=None):  # ESP32 port: 10-bit duty
        if value is None:
            return self._duty_u16 // 64
        self.duty_u16(int(value) * 64)

    def duty_u16(self, value=None):
        if value is None:
            return self._duty_u16
        if int(value) != self._duty_u16:
            self._duty_u16 = int(value)
            self._report()

    def duty_ns(self, value=None):
        if value is None:
            return 0 if not self._freq else self._duty_u16 * 1000000000 // self._freq // 65535
        self.duty_u16(int(value) * self._freq * 65535 // 1000000000 if self._freq else 0)

    def deinit(self):
        self._duty_u16 = 0
        self._freq = 0
        self._report()


class I2C:
    """machine.I2C on the emulated bus: big-endian register addresses, OSError on NACK."""

    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self._id = id
        self._freq = int(freq)
        _event("i2c_init", bus=id, scl=getattr(scl, "id", scl), sda=getattr(sda, "id", sda), freq=self._freq)

    def init(self, scl=None, sda=None, freq=400000, **kwargs):
        self._freq = int(freq)

    def deinit(self):
        pass

    def scan(self):
        return simlink.scan()

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        status, data = simlink.i2c_transfer(simlink.I2C_READ, addr, memaddr, addrsize, len(buf), None, self._freq)
        if status:
            raise OSError(status)
        if len(data) != len(buf):
            raise OSError(_EIO)
        buf[:] = data

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        status, _ = simlink.i2c_transfer(simlink.I2C_WRITE, addr, memaddr, addrsize, len(buf), bytes(buf), self._freq)
        if status:
            raise OSError(status)


SoftI2C = I2C


class WDT:
    def __init__(self, id=0, timeout=5000):
        simlink.wdt_start(timeout)

    def feed(self):
        simlink.wdt_feed()


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kwargs):
        self.id = id
        self.due_us = 0
        self._period_us = 0
        self._mode = Timer.ONE_SHOT
        self._callback = None
        if kwargs:
            self.init(**kwargs)

    def init(self, mode=1, period=-1, callback=None, freq=-1, **kwargs):
        if freq is not None and freq > 0:
            period = 1000 // freq
        self._mode = mode
        self._period_us = max(int(period), 1) * 1000
        self._callback = callback
        self.due_us = simlink.now_us() + self._period_us
        simlink.add_timer(self)

    def fire(self):
        if self._mode == Timer.PERIODIC:
            self.due_us += self._period_us
        else:
            simlink.remove_timer(self)
        if self._callback is not None:
            self._callback(self)

    def deinit(self):
        simlink.remove_timer(self)


class RTC:
    def datetime(self, value=None):
        import time

        if value is None:
            t = time.localtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        return None


PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def reset_cause():
    return PWRON_RESET


def reset():
    _event("reset")
    raise simlink.Stopped("machine.reset()")


def soft_reset():
    _event("soft_reset")
    raise simlink.Stopped("machine.soft_reset()")


def freq(value=None):
    return 240000000 if value is None else None


def unique_id():
    return b"\x24\x0a\xc4\x00\x51\x4d"


def idle():
    simlink.tick()


def lightsleep(ms=None):
    simlink.advance_us((ms or 0) * 1000)


def deepsleep(ms=None):
    _event("deepsleep", ms=ms)
    raise simlink.Stopped("machine.deepsleep()")


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
