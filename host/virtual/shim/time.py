# Simulated clock for the virtual unit: what `import time` gives the firmware under `host sim`.
# Sleeping jumps the virtual clock instead of waiting, so a scenario runs faster than real time.
# ticks_* wrap like the ESP32 port's (TICKS_PERIOD = 2**30, MicroPython docs: time.ticks_ms).
import simlink

_TICKS_PERIOD = 1 << 30
_TICKS_HALF = _TICKS_PERIOD // 2
# 2026-01-01 00:00:00 UTC in seconds since 2000-01-01 (MicroPython's ESP32 epoch); the wall
# clock is virtual too, so nothing the unit does depends on the host's date.
_EPOCH_2000 = 946684800
_START_S = 1767225600 - _EPOCH_2000


def ticks_us():
    simlink.tick()
    return simlink.now_us() % _TICKS_PERIOD


def ticks_ms():
    simlink.tick()
    return (simlink.now_us() // 1000) % _TICKS_PERIOD


def ticks_cpu():
    return ticks_us()


def ticks_add(ticks, delta):
    return (ticks + delta) % _TICKS_PERIOD


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF


def sleep_us(us):
    simlink.advance_us(us)


def sleep_ms(ms):
    simlink.advance_us(int(ms) * 1000)


def sleep(seconds):
    simlink.advance_us(int(seconds * 1000000))


def time():
    return _START_S + simlink.now_us() // 1000000


def time_ns():
    return (_START_S * 1000000 + simlink.now_us()) * 1000


def _days_before_year(year):
    y = year - 1
    return y * 365 + y // 4 - y // 100 + y // 400


def gmtime(secs=None):
    if secs is None:
        secs = time()
    secs = int(secs)
    days, rem = divmod(secs, 86400)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    weekday = days % 7  # 2000-01-01 was a Saturday: MicroPython counts Monday = 0
    weekday = (weekday + 5) % 7
    year = 2000
    while True:
        length = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
        if days < length:
            break
        days -= length
        year += 1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    months = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    yday = days + 1
    month = 1
    for length in months:
        if days < length:
            break
        days -= length
        month += 1
    return (year, month, days + 1, hour, minute, second, weekday, yday)


localtime = gmtime


def mktime(t):
    year, month, mday, hour, minute, second = t[0], t[1], t[2], t[3], t[4], t[5]
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    months = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    days = _days_before_year(year) - _days_before_year(2000) + sum(months[: month - 1]) + mday - 1
    return ((days * 24 + hour) * 60 + minute) * 60 + second
