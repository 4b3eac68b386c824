# Indicator patterns: every state distinct on both kinds of hardware, nothing blocks, writes only
# on change, PASS beeps short and FAIL long.
import indicator

STATES = [("IDLE", None), ("MEASURING", None), ("PASS", None), ("FAIL", None), ("RETRY", "too_far"),
          ("RETRY", "too_close"), ("RETRY", "multiple"), ("RETRY", "unstable"), ("FAULT", None),
          ("SERVICE", None)]


class FakePin:
    """machine.Pin: records (time, value) of every level change."""

    def __init__(self, clock):
        self.clock = clock
        self.level = None
        self.log = []

    def value(self, v=None):
        if v is None:
            return self.level
        if v != self.level:
            self.level = v
            self.log.append((self.clock[0], v))


class FakeNeoPixel:
    def __init__(self, n):
        self.pixels = [(0, 0, 0)] * n
        self.writes = []

    def __setitem__(self, i, rgb):
        self.pixels[i] = rgb

    def write(self):
        self.writes.append(tuple(self.pixels))


class FakePWM:
    def __init__(self, clock):
        self.clock = clock
        self.hz = 0
        self.duty = None
        self.log = []

    def freq(self, hz):
        self.hz = hz

    def duty_u16(self, d):
        self.duty = d
        self.log.append((self.clock[0], self.hz if d else 0))


def _sample(ind, state, reason, start, span_ms=3000, step=10):
    ind.set_state(state, reason, start)
    seen = []
    for t in range(start, start + span_ms, step):
        seen.append(ind.current(t))
    return seen


def test_every_state_looks_different_on_neopixel_and_leds():
    ind = indicator.Indicator(indicator.NullOutput())
    looks = {}
    for k, (state, reason) in enumerate(STATES):
        seen = _sample(ind, state, reason, 10000 * (k + 1))
        colours = tuple([s[0] for s in seen])
        leds = tuple([s[1] for s in seen])
        for other, (c2, l2) in looks.items():
            assert colours != c2, ("neopixel", state, reason, other)
            # unstable / implausible may share a look on two LEDs; the reasons below must not
            assert leds != l2, ("leds", state, reason, other)
        looks[(state, reason)] = (colours, leds)


def test_leds_follow_the_pattern_without_blocking_and_write_on_change_only():
    clock = [0]
    green = FakePin(clock)
    red = FakePin(clock)
    ind = indicator.Indicator(indicator.LedOutput(green, red))
    ind.set_state("RETRY", "too_far", 0)  # 500 ms both on, 500 ms off
    for t in range(0, 3000, 5):
        clock[0] = t
        ind.tick(t)
    on_times = [t for t, v in green.log if v == 1]
    assert on_times == [0, 1000, 2000], green.log
    assert [t for t, v in red.log if v == 1] == [0, 1000, 2000]
    assert ind.writes == 6  # 3 on + 3 off transitions, not one per tick
    ind.set_state("FAIL", None, 3000)
    clock[0] = 3000
    ind.tick(3000)
    assert red.level == 1 and green.level == 0


def test_active_low_leds():
    clock = [0]
    green = FakePin(clock)
    red = FakePin(clock)
    ind = indicator.Indicator(indicator.LedOutput(green, red, active_high=False))
    ind.set_state("PASS", None, 0)
    assert green.level == 0 and red.level == 1


def test_neopixel_brightness_and_colours():
    np = FakeNeoPixel(2)
    ind = indicator.Indicator(indicator.NeoPixelOutput(np, 2, brightness=51))
    ind.set_state("PASS", None, 0)
    assert np.pixels == [(0, 51, 0), (0, 51, 0)]
    ind.set_state("FAIL", None, 100)
    assert np.pixels[0] == (51, 0, 0)


def _tone_on_ms(pwm, until):
    total = 0
    log = pwm.log + [(until, 0)]
    for (t0, hz), (t1, _) in zip(log, log[1:]):
        if hz:
            total += t1 - t0
    return total


def test_buzzer_short_beep_for_pass_long_pattern_for_fail():
    clock = [0]
    pwm = FakePWM(clock)
    ind = indicator.Indicator(indicator.NullOutput(), indicator.Buzzer(pwm))
    ind.set_state("PASS", None, 0)
    for t in range(0, 3000, 10):
        clock[0] = t
        ind.tick(t)
    pass_on = _tone_on_ms(pwm, 3000)
    assert 100 <= pass_on <= 200, pwm.log
    pwm.log = []
    ind.set_state("FAIL", None, 3000)
    for t in range(3000, 8000, 10):
        clock[0] = t
        ind.tick(t)
    fail_on = _tone_on_ms(pwm, 8000)
    assert fail_on >= 1000, pwm.log
    assert len([1 for _, hz in pwm.log if hz]) >= 3  # a pattern, not one tone
    assert pwm.log[-1][1] == 0  # and it stops


def test_uncalibrated_notice_then_the_state_pattern():
    ind = indicator.Indicator(indicator.NullOutput())
    ind.set_state("IDLE", None, 0)
    ind.notice("uncalibrated", 0)
    colours = set()
    for t in range(0, 2000, 10):
        colours.add(ind.current(t)[0])
    assert indicator.PURPLE in colours
    assert ind.current(2500)[0] == indicator.BLUE  # back to IDLE after the notice


def test_unknown_state_shows_fault_never_pass():
    ind = indicator.Indicator(indicator.NullOutput())
    ind.set_state("BOGUS", None, 0)
    assert ind.key == "FAULT"
    assert indicator.pattern_key("RETRY", "weird") == indicator.RETRY_DEFAULT
