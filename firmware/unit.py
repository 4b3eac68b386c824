# The wiring module: the only firmware module that touches `machine`. It builds the I2C bus,
# pins, NeoPixel, buzzer and watchdog from the board profile, loads config and calibration, and
# runs the fail-safe main loop:
#
#   every cycle: feed the WDT -> read one subpage (or retry the sensor with backoff) -> correct
#   -> blackbody -> scene -> screening -> indicator tick -> counters -> hooks
#
# Fail-safe rules:
# - any sensor error (SensorError, OSError) -> FAULT, bus recovery (9 clocks on SCL if a slave
#   holds SDA low, a STOP, a fresh I2C object) and sensor re-initialisation with exponential
#   backoff (250 ms .. 8 s); back to IDLE without a reset once frames flow again;
# - a missing/broken config or calibration, a bad board profile, or a missing/moved blackbody
#   -> FAULT, never a crash and never PASS; config and calibration are re-read when they change
#   (checked every 5 s), so fixing a file clears the fault without a reset;
# - no calibration.json and no blackbody -> FAULT unless config allow_uncalibrated is true, in
#   which case the indicator plays the "uncalibrated" notice at boot;
# - an unexpected exception inside a cycle -> FAULT for that cycle, the loop goes on.
#
# Hooks (for the simulator's host-side runner; the firmware itself prints and stores nothing about
# subjects): an optional object whose methods, when present, are called as
#   on_frame(now_ms, state, info)            after every processed frame (info: dict, see _info)
#   on_verdict(now_ms, state, reason, reading_c)   on entering PASS, FAIL, RETRY or FAULT
#   on_state(now_ms, state, reason)          on every state change
import gc
import json
import time
from array import array

import machine

import board
import indicator
import pipeline
import screening
import store
from version import VERSION

try:
    import mlx90640
except ImportError:  # a unit without the driver file: reported as a sensor fault
    mlx90640 = None

_BACKOFF_FIRST_MS = 250
_BACKOFF_MAX_MS = 8000
_FILE_CHECK_MS = 5000
_IDLE_SLEEP_MS = 20  # loop period while there is no sensor to wait on

if mlx90640 is not None:
    SensorError = mlx90640.SensorError
else:

    class SensorError(Exception):
        pass


class _MonotonicClock:
    """time.ticks_* for CPython (debugging the firmware there); MicroPython's time has them."""

    def ticks_ms(self):
        return int(time.monotonic() * 1000) & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000

    def ticks_add(self, a, d):
        return (a + d) & 0x3FFFFFFF

    def sleep_ms(self, ms):
        time.sleep(ms / 1000)

    def sleep_us(self, us):
        time.sleep(us / 1000000)


def default_clock():
    return time if hasattr(time, "ticks_ms") else _MonotonicClock()


class Unit:
    """clock: an object with ticks_ms, ticks_diff, ticks_add, sleep_ms, sleep_us (MicroPython's
    time module by default; tests pass a simulated one)."""

    def __init__(self, hooks=None, clock=None):
        self.clock = clock or default_clock()
        self.hooks = hooks
        self._on_frame = getattr(hooks, "on_frame", None) if hooks is not None else None
        self._on_verdict = getattr(hooks, "on_verdict", None) if hooks is not None else None
        self._on_state = getattr(hooks, "on_state", None) if hooks is not None else None
        self.errors = {}  # source -> one-line message; any entry means FAULT
        self.raw = array("f", [0.0] * 768)  # the driver's output; the pipeline keeps its own image
        self.sensor = None
        self.i2c = None
        self.wdt = None
        self.profile = None
        self.cycles = 0
        self.calibration = None
        self.blackbody = None
        self._backoff_ms = _BACKOFF_FIRST_MS
        self._next_open_ms = None
        self._file_check_ms = None
        self._signatures = (None, None)
        self.config, errors = store.load_config()
        self._set_error("config", errors[0] if errors else None)
        self._signatures = (store.file_signature(store.CONFIG_PATH), store.file_signature(store.CALIBRATION_PATH))
        try:
            self.profile = board.load_profile(self.config["board"] or None)
        except board.BoardError as exc:
            self._set_error("board", str(exc))
        self.indicator = self._make_indicator()
        self.counters = store.Counters(interval_ms=int(self.config["counters_interval_s"] * 1000))
        self.counters.load()
        self._load_calibration()
        self._build_pipeline()

    @property
    def frames(self):
        """Subpages processed since the pipeline was (re)built (framelink reports it)."""
        return self.pipeline.frames

    # -- construction ----------------------------------------------------------------------
    def _set_error(self, source, message):
        if message:
            self.errors[source] = message
        elif source in self.errors:
            del self.errors[source]

    def _make_indicator(self):
        profile = self.profile
        if profile is None:
            return indicator.Indicator()
        output = None
        buzzer = None
        try:
            spec = profile["indicator"]
            if spec["kind"] == "leds":
                output = indicator.LedOutput(machine.Pin(spec["pass_pin"], machine.Pin.OUT),
                                             machine.Pin(spec["fail_pin"], machine.Pin.OUT), spec["active_high"])
            else:
                import neopixel

                np = neopixel.NeoPixel(machine.Pin(spec["pin"], machine.Pin.OUT), spec["count"])
                output = indicator.NeoPixelOutput(np, spec["count"], spec["brightness"])
            if profile["buzzer"] is not None:
                buzzer = indicator.Buzzer(machine.PWM(machine.Pin(profile["buzzer"]), freq=2000, duty_u16=0))
        except Exception as exc:  # noqa: BLE001 - a bad pin must not stop the unit
            self._set_error("board", "indicator setup failed: %s" % (exc,))
        return indicator.Indicator(output, buzzer)

    def _load_calibration(self):
        serial = self.sensor.serial if self.sensor is not None else None
        cal, errors = store.load_calibration(serial=serial)
        self.calibration = cal
        self._set_error("calibration", errors[0] if errors else None)

    def _build_pipeline(self):
        pattern = getattr(self.sensor, "pattern", "chess") if self.sensor is not None else "chess"
        self.pipeline = pipeline.Pipeline(self.config, self.calibration, pattern)
        self.correction = self.pipeline.correction
        self.blackbody = self.pipeline.blackbody
        self.scene = self.pipeline.scene
        self.screening = self.pipeline.screening
        self.calibrated = self.pipeline.calibrated
        if not self.calibrated and not self.config["allow_uncalibrated"]:
            self._set_error("uncalibrated", "no calibration.json and no blackbody: run `host calibrate` "
                                            "or set allow_uncalibrated in config.json")
        else:
            self._set_error("uncalibrated", None)
        self._set_error("blackbody", None)

    # -- sensor ----------------------------------------------------------------------------
    def _recover_bus(self):
        """I2C bus clear (NXP UM10204 3.1.16): clock SCL until a slave stuck mid-byte releases SDA,
        then send a STOP, then build a fresh I2C peripheral."""
        spec = self.profile["i2c"]
        try:
            if self.i2c is not None and hasattr(self.i2c, "deinit"):
                self.i2c.deinit()
        except Exception:  # noqa: BLE001
            pass
        self.i2c = None
        try:
            scl = machine.Pin(spec["scl"], machine.Pin.OPEN_DRAIN, value=1)
            sda = machine.Pin(spec["sda"], machine.Pin.IN, machine.Pin.PULL_UP)
            for _ in range(9):
                if sda.value():
                    break
                scl.value(0)
                self.clock.sleep_us(5)
                scl.value(1)
                self.clock.sleep_us(5)
            sda = machine.Pin(spec["sda"], machine.Pin.OPEN_DRAIN, value=0)
            self.clock.sleep_us(5)
            sda.value(1)
        except Exception:  # noqa: BLE001 - a port without open-drain pins: the new I2C still resets it
            pass

    def _open_sensor(self, now):
        """Try to (re)initialise the sensor; on failure schedule the next try with backoff."""
        if self.profile is None:
            return False
        if mlx90640 is None:
            self._set_error("sensor", "mlx90640.py is missing: deploy the firmware again")
            return False
        spec = self.profile["i2c"]
        try:
            if self.i2c is None:
                self.i2c = machine.I2C(spec["id"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                                       freq=spec["freq"])
            sensor = mlx90640.MLX90640(self.i2c)
            sensor.refresh_rate = self.config["refresh_hz"]
        except (SensorError, OSError, ValueError) as exc:
            self._sensor_failed(now, exc)
            return False
        self.sensor = sensor
        self._set_error("sensor", None)
        self._backoff_ms = _BACKOFF_FIRST_MS
        old = self.calibration
        self._load_calibration()  # the serial is known now: check the calibration belongs to it
        if old != self.calibration or getattr(sensor, "pattern", "chess") != "chess":
            self._build_pipeline()
        return True

    def _sensor_failed(self, now, exc):
        message = "sensor: %s" % (exc,)
        if isinstance(exc, OSError):
            message = "sensor not answering on I2C (%s): check the wiring" % (exc,)
        self._set_error("sensor", message)
        self.sensor = None
        if self.profile is not None:
            self._recover_bus()
        self._next_open_ms = self.clock.ticks_add(now, self._backoff_ms)
        self._backoff_ms = min(self._backoff_ms * 2, _BACKOFF_MAX_MS)

    # -- files -----------------------------------------------------------------------------
    def _check_files(self, now):
        """Re-read config/calibration when they changed on flash (or while they are broken)."""
        if self._file_check_ms is not None and self.clock.ticks_diff(now, self._file_check_ms) < _FILE_CHECK_MS:
            return
        self._file_check_ms = now
        signatures = (store.file_signature(store.CONFIG_PATH), store.file_signature(store.CALIBRATION_PATH))
        broken = "config" in self.errors or "calibration" in self.errors
        if signatures == self._signatures and not broken:
            return
        self._signatures = signatures
        config, errors = store.load_config()
        self._set_error("config", errors[0] if errors else None)
        old_cal = self.calibration
        self._load_calibration()
        if config != self.config or old_cal != self.calibration:
            self.config = config
            self.counters.interval_ms = int(config["counters_interval_s"] * 1000)
            if self.sensor is not None:
                try:
                    self.sensor.refresh_rate = config["refresh_hz"]
                except (SensorError, OSError, ValueError) as exc:
                    self._sensor_failed(now, exc)
            self._build_pipeline()

    # -- the pipeline ----------------------------------------------------------------------
    def fault_reason(self):
        for source in ("board", "config", "calibration", "uncalibrated", "sensor", "blackbody", "cycle"):
            if source in self.errors:
                return self.errors[source]
        return None

    def process(self, now, subpage):
        """One subpage through the pipeline; screening acts only when nothing else is wrong."""
        others = False
        for source in self.errors:
            if source != "blackbody" and source != "cycle":
                others = True
        self.pipeline.process(now, self.raw, subpage, screen=not others)
        self._set_error("blackbody", self.pipeline.blackbody_fault)

    def cycle(self):
        """One pass of the main loop. Never raises (except KeyboardInterrupt / SystemExit)."""
        if self.wdt is not None:
            self.wdt.feed()
        now = self.clock.ticks_ms()
        self.cycles += 1
        processed = False
        self.screening.changed = False
        self.screening.verdict = False
        try:
            if self.sensor is None:
                if self.profile is not None and (self._next_open_ms is None or
                                                 self.clock.ticks_diff(now, self._next_open_ms) >= 0):
                    self._open_sensor(now)
                if self.sensor is None:
                    self.clock.sleep_ms(_IDLE_SLEEP_MS)
            if self.sensor is not None:
                try:
                    subpage = self.sensor.temperatures(self.raw, 1.0)
                except (SensorError, OSError) as exc:
                    self._sensor_failed(now, exc)
                else:
                    now = self.clock.ticks_ms()
                    self.process(now, subpage)
                    processed = True
            self._check_files(now)
            self._set_error("cycle", None)
        except MemoryError:
            gc.collect()
            self._set_error("cycle", "out of memory")
        except Exception as exc:  # noqa: BLE001 - a bug must show FAULT, not kill the gate
            self._set_error("cycle", "internal error: %s: %s" % (type(exc).__name__, exc))
        sc = self.screening
        reason = self.fault_reason()
        if reason is not None:
            sc.set_fault(now, reason)
        elif sc.state == screening.FAULT:
            sc.set_fault(now, None)
        self._after(now, processed)

    def _after(self, now, processed):
        sc = self.screening
        self.indicator.set_state(sc.state, sc.reason, now)  # no-op unless the pattern changes
        if sc.changed:
            if self._on_state is not None:
                self._on_state(now, sc.state, sc.reason)
        if sc.verdict:
            key = {"PASS": "passes", "FAIL": "fails", "RETRY": "retries", "FAULT": "faults"}.get(sc.state)
            if key:
                self.counters.count(key)
            if self._on_verdict is not None:
                reading = sc.reading_c if sc.state in (screening.PASS, screening.FAIL, screening.RETRY) else None
                if sc.state == screening.RETRY and sc.reason != screening.R_IMPLAUSIBLE:
                    reading = None
                self._on_verdict(now, sc.state, sc.reason, reading)
        self.indicator.tick(now)
        self.counters.tick(now)
        if processed and self._on_frame is not None:
            self._on_frame(now, sc.state, self._info())

    def _info(self):
        scene = self.scene
        sc = self.screening
        return {
            "frame": self.pipeline.frames,
            "status": scene.status,
            "persons": scene.persons,
            "distractors": scene.distractors,
            "present": scene.present,
            "hot_c": scene.hot_c,
            "reading_c": self.pipeline.reading_c,
            "distance_m": scene.distance_m,
            "head_box": scene.head_box,
            "hot_pixels": scene.hot_pixel_indices(),
            "ambient_c": scene.ambient_c,
            "ta": getattr(self.sensor, "ta", None),
            "drift_c": self.correction.drift_cc / 100,
            "reason": sc.reason,
            "fault": self.fault_reason(),
            "waiting_leave": sc.waiting_leave,
            "calibrated": self.calibrated,
        }

    def start(self):
        """Boot: watchdog, first state on the indicator, notices."""
        refresh = self.config["refresh_hz"]
        # a stalled sensor read blocks for up to 3 attempts of (2 subpage periods + 100 ms) (the
        # driver's bounded retries) before SensorError; the watchdog must outlast that
        timeout = int(max(5000, 3 * (2000 / refresh + 100) + 2000))
        self.wdt = machine.WDT(timeout=timeout)
        now = self.clock.ticks_ms()
        self.indicator.set_state(self.screening.state, None, now)
        if not self.calibrated and self.config["allow_uncalibrated"]:
            self.indicator.notice("uncalibrated", now)

    def stop(self):
        """Leaving the loop (Ctrl-C at the REPL, end of a simulation): save counters; on an ESP32
        the watchdog cannot be stopped, so stretch it to a day for REPL work."""
        self.counters.save(self.clock.ticks_ms())
        try:
            machine.WDT(timeout=86400000)
        except Exception:  # noqa: BLE001
            pass


_current = None


def run(hooks=None, max_cycles=None, clock=None):
    """The gate's main loop (main.py calls this). max_cycles bounds it for tests and the simulator."""
    global _current
    unit = Unit(hooks, clock)
    _current = unit
    unit.start()
    try:
        n = 0
        while max_cycles is None or n < max_cycles:
            unit.cycle()
            n += 1
    finally:
        unit.stop()
    return unit


def self_report():
    """What `host flash` reads back after a soft reset: checks the files and the sensor afresh."""
    report = {"version": VERSION, "board": None, "sensor": False, "serial": None, "config_valid": False,
              "calibration_valid": False, "calibrated": False, "errors": []}
    config, errors = store.load_config()
    report["config_valid"] = not errors
    report["errors"].extend(errors)
    report["unit_id"] = config["unit_id"]
    profile = None
    try:
        profile = board.load_profile(config["board"] or None)
        report["board"] = profile["name"]
    except board.BoardError as exc:
        report["errors"].append(str(exc))
    serial = None
    if profile is not None and mlx90640 is not None:
        spec = profile["i2c"]
        try:
            i2c = machine.I2C(spec["id"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]), freq=spec["freq"])
            sensor = mlx90640.MLX90640(i2c)
            serial = sensor.serial
            report["sensor"] = True
            report["serial"] = serial
        except (SensorError, OSError, ValueError) as exc:
            report["errors"].append("sensor: %s" % (exc,))
    elif mlx90640 is None:
        report["errors"].append("mlx90640.py is missing")
    cal, cal_errors = store.load_calibration(serial=serial)
    report["calibration_valid"] = cal is not None and not cal_errors
    report["errors"].extend(cal_errors)
    report["calibrated"] = cal is not None or bool(config["blackbody"])
    if cal is not None:
        report["calibration_date"] = cal.get("date")
    return report


def self_report_json():
    return json.dumps(self_report())
