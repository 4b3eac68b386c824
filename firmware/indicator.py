# The pass/fail indicator: two GPIO LEDs or a WS2812 NeoPixel, plus an optional PWM buzzer.
#
# Nothing here blocks: set_state() picks a pattern, tick(now_ms) (called every main-loop cycle)
# works out where in the pattern we are and writes the outputs only when they change.
# Each pattern is a cycle of steps (duration_ms, (r, g, b), leds) where leds is a bit mask for
# the two-LED boards (LED_PASS = green LED, LED_FAIL = red LED). Every state looks different on
# both kinds of hardware; see docs/hardware.md for the table.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


LED_PASS = const(1)
LED_FAIL = const(2)
LED_BOTH = const(3)

OFF = (0, 0, 0)
BLUE = (0, 0, 60)
WHITE = (140, 140, 140)
GREEN = (0, 255, 0)
RED = (255, 0, 0)
AMBER = (255, 120, 0)
MAGENTA = (255, 0, 200)
PURPLE = (120, 0, 255)
CYAN = (0, 160, 160)

# state name (or "RETRY:<reason>") -> steps
PATTERNS = {
    "IDLE": ((60, BLUE, LED_PASS), (2940, BLUE, 0)),  # steady dim blue; LEDs: green blip every 3 s
    "MEASURING": ((200, WHITE, LED_PASS), (200, OFF, 0)),  # white / green blinking 2.5 Hz
    "PASS": ((1000, GREEN, LED_PASS),),  # steady green
    "FAIL": ((1000, RED, LED_FAIL),),  # steady red
    "RETRY:too_far": ((500, AMBER, LED_BOTH), (500, OFF, 0)),  # slow amber
    "RETRY:too_close": ((150, AMBER, LED_BOTH), (150, OFF, 0)),  # fast amber
    "RETRY:multiple": ((300, AMBER, LED_PASS), (300, MAGENTA, LED_FAIL)),  # alternating
    "RETRY:unstable": ((100, AMBER, LED_BOTH), (100, OFF, 0), (100, AMBER, LED_BOTH), (700, OFF, 0)),
    "RETRY:implausible": ((100, AMBER, LED_BOTH), (100, OFF, 0), (100, AMBER, LED_BOTH), (700, OFF, 0)),
    "FAULT": ((100, MAGENTA, LED_FAIL), (100, OFF, 0)),  # fast flashing red / magenta
    # frames streaming to the host (framelink) or the loop stopped at the REPL: not screening
    "SERVICE": ((1000, CYAN, LED_BOTH), (1000, OFF, LED_PASS)),
}
RETRY_DEFAULT = "RETRY:unstable"

# One-shot notices shown over the state pattern, then the state pattern resumes.
NOTICES = {
    # config allows screening without calibration: purple / alternating LEDs, 5 times at boot
    "uncalibrated": ((200, PURPLE, LED_PASS), (200, OFF, LED_FAIL)) * 5,
    "boot": ((150, GREEN, LED_PASS), (150, RED, LED_FAIL), (150, BLUE, 0)),
}

# Buzzer patterns on entering a state: (duration_ms, frequency_hz or 0 for silence) steps, played once.
SOUNDS = {
    "PASS": ((120, 2400),),  # one short beep
    "FAIL": ((450, 880), (150, 0), (450, 880), (150, 0), (450, 880)),  # long, repeated low tone
}


class NullOutput:
    """A board whose indicator could not be set up (e.g. a broken profile)."""

    def show(self, color, leds):
        pass


class LedOutput:
    """Two LEDs on GPIOs; pins need only .value(v) (machine.Pin)."""

    def __init__(self, pass_pin, fail_pin, active_high=True):
        self.pass_pin = pass_pin
        self.fail_pin = fail_pin
        self.on = 1 if active_high else 0
        self.show(OFF, 0)

    def show(self, color, leds):
        self.pass_pin.value(self.on if leds & LED_PASS else 1 - self.on)
        self.fail_pin.value(self.on if leds & LED_FAIL else 1 - self.on)


class NeoPixelOutput:
    """WS2812 pixels; np needs __setitem__ and write() (neopixel.NeoPixel). brightness 1..255."""

    def __init__(self, np, count=1, brightness=40):
        self.np = np
        self.count = count
        self.brightness = brightness
        self.show(OFF, 0)

    def show(self, color, leds):
        b = self.brightness
        scaled = ((color[0] * b) // 255, (color[1] * b) // 255, (color[2] * b) // 255)
        for i in range(self.count):
            self.np[i] = scaled
        self.np.write()


class Buzzer:
    """Passive piezo on PWM; pwm needs freq(hz) and duty_u16(d) (machine.PWM). duty 0 = silent."""

    def __init__(self, pwm):
        self.pwm = pwm
        self.pwm.duty_u16(0)

    def tone(self, hz):
        if hz:
            self.pwm.freq(hz)
            self.pwm.duty_u16(32768)  # 50 % duty: loudest square wave
        else:
            self.pwm.duty_u16(0)


def pattern_key(state, reason=None):
    if state == "RETRY":
        key = "RETRY:%s" % reason
        return key if key in PATTERNS else RETRY_DEFAULT
    return state if state in PATTERNS else "FAULT"


def _elapsed(now, then):
    return ((now - then + 0x20000000) & 0x3FFFFFFF) - 0x20000000


def _step_at(steps, t):
    """Index of the step active t ms into a cyclic pattern."""
    total = 0
    for step in steps:
        total += step[0]
    t %= total
    for i in range(len(steps)):
        if t < steps[i][0]:
            return i
        t -= steps[i][0]
    return len(steps) - 1


class Indicator:
    def __init__(self, output=None, buzzer=None):
        self.output = output or NullOutput()
        self.buzzer = buzzer
        self.key = None
        self._start = 0
        self._notice = None
        self._notice_start = 0
        self._sound = None
        self._sound_start = 0
        self._shown = None  # (color, leds) last written
        self._tone = None
        self.writes = 0  # output writes, for tests: only on change

    def set_state(self, state, reason, now_ms):
        key = pattern_key(state, reason)
        if key == self.key:
            return
        self.key = key
        self._start = now_ms
        sound = SOUNDS.get(state)
        if sound is not None and self.buzzer is not None:
            self._sound = sound
            self._sound_start = now_ms
        elif self._sound is not None and state not in SOUNDS:
            self._sound = None  # a new state cuts a verdict sound short
        self.tick(now_ms)

    def notice(self, name, now_ms):
        self._notice = NOTICES[name]
        self._notice_start = now_ms
        self.tick(now_ms)

    def busy(self, now_ms):
        """True while a one-shot notice or sound is still playing."""
        return self._notice is not None or self._sound is not None

    def current(self, now_ms):
        """(color, leds) that should be showing at now_ms."""
        if self._notice is not None:
            t = _elapsed(now_ms, self._notice_start)
            total = 0
            for step in self._notice:
                total += step[0]
            if t < total:
                step = self._notice[_step_at(self._notice, t)]
                return step[1], step[2]
            self._notice = None
        if self.key is None:
            return OFF, 0
        steps = PATTERNS[self.key]
        step = steps[_step_at(steps, _elapsed(now_ms, self._start))]
        return step[1], step[2]

    def current_tone(self, now_ms):
        if self._sound is None:
            return 0
        t = _elapsed(now_ms, self._sound_start)
        for step in self._sound:
            if t < step[0]:
                return step[1]
            t -= step[0]
        self._sound = None
        return 0

    def tick(self, now_ms):
        shown = self.current(now_ms)
        if shown != self._shown:
            self._shown = shown
            self.output.show(shown[0], shown[1])
            self.writes += 1
        if self.buzzer is not None:
            tone = self.current_tone(now_ms)
            if tone != self._tone:
                self._tone = tone
                self.buzzer.tone(tone)
