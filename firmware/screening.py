# The screening state machine: IDLE -> MEASURING -> PASS | FAIL | RETRY(reason), and FAULT.
#
# Fed once per frame with the scene status (scene.PERSON, TOO_FAR, TOO_CLOSE, MULTIPLE, NONE), the
# frame's skin reading (deg C, fully corrected) and whether anybody is in view. Time comes in as
# now_ms (time.ticks_ms() on the unit, a fake clock in tests).
#
# Rules (issue "gate unit", Decision):
# - a verdict needs `stable_frames` consecutive in-range readings whose spread is at most
#   `stable_spread_c`; the verdict reading is their mean;
# - a reading outside plausible_min_c..plausible_max_c gives RETRY implausible;
# - absolute mode: FAIL when reading + skin_to_core_offset_c >= threshold_c;
# - baseline mode: FAIL when reading > trimmed mean of the last baseline_n PASS readings (dropping
#   baseline_trim highest and lowest) + delta_c; absolute rule until baseline_n passes are known.
#   The baseline lives in RAM only (temperatures are never stored);
# - too far / too close / several people for retry_after_s gives RETRY with that reason; no
#   stable reading within unstable_after_s (a person without any reading included) gives RETRY
#   unstable;
# - PASS / FAIL are held for hold_s; then the unit waits (IDLE, waiting_leave) until the subject
#   has left. From the verdict on (hold included: in a tight queue the next person steps in while
#   the verdict is still shown) the subject counts as gone once, on any frame: nobody is in view
#   for BRIEF_MS (or leave_s if shorter), someone is beyond the working distance (the next one
#   walking up), or the head jumps -- NEW_SUBJECT_M (or a quarter of the distance) nearer or
#   farther (the next one stepping in front of the last one), or its centre more than
#   NEW_SUBJECT_COLS or 3/4 of its width sideways (the last one walked off, the next stepped in),
#   against the screened head or the last frame's. Once gone, a person standing there is measured
#   after MIN_HOLD_MS of the hold (the next one in a tight queue is not kept waiting);
# - FAULT overrides everything and can only be left through set_fault(None): nothing here can
#   produce PASS while a fault is set.
from array import array

IDLE = "IDLE"
MEASURING = "MEASURING"
PASS = "PASS"
FAIL = "FAIL"
RETRY = "RETRY"
FAULT = "FAULT"
STATES = (IDLE, MEASURING, PASS, FAIL, RETRY, FAULT)

R_TOO_FAR = "too_far"
R_TOO_CLOSE = "too_close"
R_MULTIPLE = "multiple"
R_UNSTABLE = "unstable"
R_IMPLAUSIBLE = "implausible"

# scene status -> RETRY reason
_STATUS_REASON = {"too_far": R_TOO_FAR, "too_close": R_TOO_CLOSE, "multiple": R_MULTIPLE}
_PERSON = "person"
_NONE = "none"
_TOO_FAR = "too_far"
NEW_SUBJECT_M = 0.3  # a head this much nearer or farther than the screened one is someone else,
NEW_SUBJECT_FRACTION = 0.25  # or this fraction of its distance if less (the next one, nearer, in front)
NEW_SUBJECT_COLS = 3  # pixels: a head centre this far sideways (or 3/4 of its width) is someone else
MIN_HOLD_MS = 1500  # a verdict is shown at least this long, even when the next subject is there
BRIEF_MS = 250  # an empty view this long between two people (3 frames at 8 Hz); 1-2 are a dropout


def _elapsed(now, then):
    return ((now - then + 0x20000000) & 0x3FFFFFFF) - 0x20000000


class Screening:
    def __init__(self, config):
        self.mode = config["mode"]
        self.threshold_c = config["threshold_c"]
        self.core_offset_c = config["skin_to_core_offset_c"]
        self.delta_c = config["delta_c"]
        self.baseline_n = config["baseline_n"]
        self.baseline_trim = config["baseline_trim"]
        self.plausible_min_c = config["plausible_min_c"]
        self.plausible_max_c = config["plausible_max_c"]
        self.stable_frames = config["stable_frames"]
        self.stable_spread_c = config["stable_spread_c"]
        self.hold_ms = int(config["hold_s"] * 1000)
        self.retry_after_ms = int(config["retry_after_s"] * 1000)
        self.retry_hold_ms = int(config["retry_hold_s"] * 1000)
        self.unstable_ms = int(config["unstable_after_s"] * 1000)
        self.leave_ms = int(config["leave_s"] * 1000)
        self.readings = array("f", [0.0] * self.stable_frames)
        self.baseline = array("f", [0.0] * self.baseline_n)
        self.baseline_count = 0  # passes recorded (saturates at baseline_n)
        self._baseline_next = 0
        self.state = IDLE
        self.reason = None
        self.reading_c = None  # the last verdict's reading (RAM only)
        self.fault_reason = None
        self.waiting_leave = False
        self.since_ms = 0  # when the current state was entered
        self._n = 0  # readings collected
        self._next = 0
        self._measure_start = None
        self._bad_status = None
        self._bad_since = 0
        self._absent_since = None
        self._distance_m = None  # of the subject on the last frame
        self._verdict_distance_m = None
        self._head_x2 = -1  # head centre x2 (pixels) on the last frame, -1 unknown
        self._head_w = 0
        self._verdict_x2 = -1
        self._verdict_w = 0
        self._left = False  # the screened subject was seen leaving since the verdict
        self._prev_x2 = -1  # the previous frame's head
        self._prev_w = 0
        self._prev_distance_m = None
        self.changed = False  # set by update() when the state changed on this frame
        self.verdict = False  # set when a PASS/FAIL/RETRY/FAULT was entered on this frame

    # -- decisions ---------------------------------------------------------------------------
    def baseline_c(self):
        """Trimmed mean of the last baseline_n passes, or None while there are fewer."""
        n = self.baseline_n
        if self.baseline_count < n:
            return None
        values = sorted(self.baseline)
        trim = self.baseline_trim
        kept = values[trim:n - trim]
        return sum(kept) / len(kept)

    def decision_line_c(self):
        """Skin reading at or above which the unit says FAIL (above, in baseline mode)."""
        base = self.baseline_c() if self.mode == "baseline" else None
        if base is None:
            return self.threshold_c - self.core_offset_c
        return base + self.delta_c

    def decide(self, reading_c):
        """PASS or FAIL for a plausible, stable reading."""
        base = self.baseline_c() if self.mode == "baseline" else None
        if base is None:
            return FAIL if reading_c + self.core_offset_c >= self.threshold_c else PASS
        return FAIL if reading_c > base + self.delta_c else PASS

    def _record_pass(self, reading_c):
        self.baseline[self._baseline_next] = reading_c
        self._baseline_next = (self._baseline_next + 1) % self.baseline_n
        if self.baseline_count < self.baseline_n:
            self.baseline_count += 1

    # -- state -------------------------------------------------------------------------------
    def _enter(self, state, now_ms, reason=None):
        if state != self.state or reason != self.reason:
            self.changed = True
            if state in (PASS, FAIL, RETRY, FAULT):
                self.verdict = True
        self.state = state
        self.reason = reason
        self.since_ms = now_ms

    def _start_measuring(self, now_ms):
        self._n = 0
        self._next = 0
        self._measure_start = None
        self._bad_status = None
        self._enter(MEASURING, now_ms)

    def set_fault(self, now_ms, reason):
        """reason (str) enters or stays in FAULT; None leaves it (to IDLE, waiting for a clear view)."""
        self.changed = False
        self.verdict = False
        if reason is not None:
            self.fault_reason = reason
            if self.state != FAULT:
                self._enter(FAULT, now_ms, None)
            return
        if self.state == FAULT:
            self.fault_reason = None
            self.waiting_leave = True  # whoever stood there during the fault is screened afresh
            self._absent_since = None
            self._left = False
            self._verdict_x2 = -1
            self._enter(IDLE, now_ms)

    def _jumped(self, x2, w, d, distance_m):
        """The head now is not the head (x2: centre x2, w: width, d: distance) seen before."""
        if x2 >= 0 and self._head_x2 >= 0:
            shift = abs(self._head_x2 - x2)  # x2
            if shift > 2 * NEW_SUBJECT_COLS or shift * 4 > 3 * 2 * w:
                return True
        if distance_m is None or d is None:
            return False
        limit = NEW_SUBJECT_FRACTION * d
        if limit > NEW_SUBJECT_M:
            limit = NEW_SUBJECT_M
        return abs(distance_m - d) > limit

    def _new_subject(self, status, distance_m):
        if status == _TOO_FAR:
            return True
        if status != _PERSON:
            return False
        # against the screened head, and against the last frame's: a standing subject sways a
        # pixel or two, another one taking their place (or them walking off) jumps
        return (self._jumped(self._verdict_x2, self._verdict_w, self._verdict_distance_m, distance_m)
                or self._jumped(self._prev_x2, self._prev_w, self._prev_distance_m, distance_m))

    def update(self, now_ms, status, reading_c, present, distance_m=None, head_box=None):
        """One frame (distance_m: the subject's head distance when known; head_box: the scene's
        (col0, row0, col1, row1) or None). Sets .changed / .verdict when the state changed on this
        frame."""
        self.changed = False
        self.verdict = False
        self._prev_x2 = self._head_x2
        self._prev_w = self._head_w
        self._prev_distance_m = self._distance_m
        self._distance_m = distance_m
        if head_box is None:
            self._head_x2 = -1
        else:
            self._head_x2 = head_box[0] + head_box[2]
            self._head_w = head_box[2] - head_box[0] + 1
        state = self.state
        if state == FAULT:
            return
        # who is in view, for the wait-until-they-leave rule
        if present or status != _NONE:
            self._absent_since = None
        elif self._absent_since is None:
            self._absent_since = now_ms
        absent_ms = -1 if self._absent_since is None else _elapsed(now_ms, self._absent_since)
        gone = absent_ms >= self.leave_ms
        if (state == PASS or state == FAIL or (state == IDLE and self.waiting_leave)) and not self._left:
            brief = BRIEF_MS if BRIEF_MS < self.leave_ms else self.leave_ms
            if absent_ms >= brief or self._new_subject(status, distance_m):
                self._left = True
        if state == PASS or state == FAIL:
            held = _elapsed(now_ms, self.since_ms)
            if self._left and status == _PERSON and held >= MIN_HOLD_MS and held < self.hold_ms:
                # the screened subject left and the next one stands there: screen them now
                # rather than keep them waiting for a verdict that is not theirs
                self.waiting_leave = False
                self._start_measuring(now_ms)
                self._measure(now_ms, status, reading_c)
                return
            if held >= self.hold_ms:
                self.waiting_leave = not gone and not self._left
                self._enter(IDLE, now_ms)
            return
        if state == IDLE:
            if self.waiting_leave:
                if gone:
                    self.waiting_leave = False
                elif self._left:
                    self.waiting_leave = False
                    if status != _NONE:
                        self._start_measuring(now_ms)
                        self._measure(now_ms, status, reading_c)
                return
            if status != _NONE:
                self._start_measuring(now_ms)
                self._measure(now_ms, status, reading_c)
            return
        if state == RETRY:
            if gone:
                self._enter(IDLE, now_ms)
                return
            if _elapsed(now_ms, self.since_ms) < self.retry_hold_ms:
                return
            if status == _PERSON:
                self._start_measuring(now_ms)
                self._measure(now_ms, status, reading_c)
            elif status in _STATUS_REASON and _STATUS_REASON[status] != self.reason:
                self._start_measuring(now_ms)  # a different problem: count it from now
                self._measure(now_ms, status, reading_c)
            elif self.reason in (R_UNSTABLE, R_IMPLAUSIBLE):
                self._start_measuring(now_ms)
            return
        # MEASURING
        if gone:
            self._enter(IDLE, now_ms)
            return
        self._measure(now_ms, status, reading_c)

    def _measure(self, now_ms, status, reading_c):
        if status == _PERSON and reading_c is not None:
            self._bad_status = None
            if self._measure_start is None:
                self._measure_start = now_ms
            self.readings[self._next] = reading_c
            self._next = (self._next + 1) % self.stable_frames
            if self._n < self.stable_frames:
                self._n += 1
            if self._n == self.stable_frames:
                low = high = self.readings[0]
                total = 0.0
                for value in self.readings:
                    total += value
                    if value < low:
                        low = value
                    if value > high:
                        high = value
                if high - low <= self.stable_spread_c:
                    self._verdict(now_ms, total / self.stable_frames)
                    return
            if _elapsed(now_ms, self._measure_start) >= self.unstable_ms:
                self._enter(RETRY, now_ms, R_UNSTABLE)
            return
        if status == _PERSON:
            # a person without a reading (the head box holds no face: scene.head_mismatch) is
            # never judged; it counts towards RETRY unstable like readings that never settle
            self._n = 0
            self._bad_status = None
            if self._measure_start is None:
                self._measure_start = now_ms
            elif _elapsed(now_ms, self._measure_start) >= self.unstable_ms:
                self._enter(RETRY, now_ms, R_UNSTABLE)
            return
        if status in _STATUS_REASON:
            # the subject moved out of range: readings so far no longer count
            self._n = 0
            self._measure_start = None
            if self._bad_status != status:
                self._bad_status = status
                self._bad_since = now_ms
            elif _elapsed(now_ms, self._bad_since) >= self.retry_after_ms:
                self._enter(RETRY, now_ms, _STATUS_REASON[status])

    def _verdict(self, now_ms, reading_c):
        self.reading_c = reading_c
        self._verdict_distance_m = self._distance_m
        self._verdict_x2 = self._head_x2
        self._verdict_w = self._head_w
        self._left = False
        if reading_c < self.plausible_min_c or reading_c > self.plausible_max_c:
            self._enter(RETRY, now_ms, R_IMPLAUSIBLE)
            return
        verdict = self.decide(reading_c)
        if verdict == PASS:
            self._record_pass(reading_c)
        self._enter(verdict, now_ms)
