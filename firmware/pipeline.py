# The per-frame pipeline without any hardware: correction -> blackbody -> scene -> reading ->
# screening. unit.py feeds it the driver's output; `host bench` and tests can run it on any
# interpreter with frames of their own.
from array import array

import correction
import scene as scene_mod
import screening
import ticks

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


STARTUP_MS = const(3000)  # time allowed for the first frames and the blackbody to be acquired


class Pipeline:
    """config: a validated config (store.validate_config); calibration: store.validate_calibration's
    dict or None; pattern: the sensor's 'chess' or 'interleaved' readout."""

    def __init__(self, config, calibration=None, pattern="chess"):
        self.config = config
        self.correction = correction.Correction(calibration, pattern)
        bb = config["blackbody"]
        exclude = None
        self.blackbody = None
        if bb:
            self.blackbody = correction.Blackbody(bb["temperature_c"], bb["col"], bb["row"], bb["size_px"])
            exclude = self.blackbody.exclusion()
        self.scene = scene_mod.Scene(fov_deg=config["fov_deg"], head_width_m=config["head_width_m"],
                                     min_distance_m=config["min_distance_m"],
                                     max_distance_m=config["max_distance_m"],
                                     hot_pixels=config["hot_pixels"], exclude=exclude)
        self.screening = screening.Screening(config)
        # never PASS without a calibration: a calibration file or a blackbody in view
        self.calibrated = calibration is not None or self.blackbody is not None
        self.image = array("h", [0] * 768)
        self.frames = 0
        self.reading_c = None  # this frame's skin reading (RAM only)
        self.blackbody_fault = None
        self.acquiring = self.blackbody is not None
        self._startup_ms = None

    def reading(self):
        """The head's hottest region as a skin reading: spot-size and emissivity corrected."""
        scene = self.scene
        if scene.hot_c is None:
            return None
        config = self.config
        apparent = scene.hot_c + correction.spot_compensation(config["spot_comp"], scene.distance_m)
        ambient = scene.ambient_c if scene.ambient_c is not None else 24.0
        return correction.emissivity_correct(apparent, config["emissivity"], ambient)

    def process(self, now_ms, raw, subpage, screen=True):
        """One subpage (raw: the driver's 768 deg C values; subpage 0/1, or None = all pixels).
        screen=False analyses without letting the screening state machine act (a fault is set)."""
        self.frames += 1
        corr = self.correction
        corr.apply(raw, self.image, subpage)
        bb = self.blackbody
        if bb is not None:
            corr.drift_cc = bb.update(self.image, corr.drift_cc)
        if self.frames < 2 and subpage is not None:
            return  # the other subpage's pixels are not in yet
        if self._startup_ms is None:
            self._startup_ms = now_ms
        if bb is not None and self.acquiring:
            if bb.fault is not None and ticks.diff(now_ms, self._startup_ms) < STARTUP_MS:
                return  # still acquiring the reference: its correction would shift every pixel
            self.acquiring = False
            self.frames = 1  # one more subpage, so that both carry the blackbody's correction
            return
        scene = self.scene
        scene.analyze(self.image)
        self.reading_c = self.reading()
        if bb is not None:
            self.blackbody_fault = bb.fault
        if screen and self.blackbody_fault is None:
            self.screening.update(now_ms, scene.status, self.reading_c, scene.present, scene.distance_m,
                                  scene.head_box)
