# The screening state machine, driven frame by frame on a fake clock (8 Hz subpages).
import screening
import store
from screening import FAIL, FAULT, IDLE, MEASURING, PASS, RETRY

FRAME_MS = 125


def _config(**overrides):
    config = dict(store.DEFAULT_CONFIG)
    config.update(overrides)
    return config


class Timeline:
    """Feeds frames at 8 Hz and records every state change with its time."""

    def __init__(self, sc, start_ms=0):
        self.sc = sc
        self.now = start_ms
        self.changes = []

    def frames(self, n, status="person", reading=35.5, present=None):
        if present is None:
            present = status != "none"
        for _ in range(n):
            value = reading(self.now) if callable(reading) else reading
            self.sc.update(self.now, status, value, present)
            if self.sc.changed:
                self.changes.append((self.now, self.sc.state, self.sc.reason))
            self.now = (self.now + FRAME_MS) & 0x3FFFFFFF  # ticks_ms() wraps at 2**30
        return self.sc.state

    def seconds(self, s, status="person", reading=35.5, present=None):
        return self.frames(int(s * 1000 / FRAME_MS), status, reading, present)

    def states(self):
        return [c[1] for c in self.changes]


def test_pass_needs_several_stable_frames_and_is_fast():
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.frames(sc.stable_frames - 1)
    assert sc.state == MEASURING  # not yet: fewer than stable_frames readings
    tl.frames(1)
    assert sc.state == PASS
    assert tl.changes[-1][0] <= 2000  # a verdict well within 2 s at 8 Hz
    assert abs(sc.reading_c - 35.5) < 1e-4


def test_absolute_rule_at_the_line():
    # FAIL when reading + skin_to_core_offset_c >= threshold_c (defaults 38.0 - 1.0 = 37.0)
    for reading, expected in ((36.99, PASS), (37.0, FAIL), (37.01, FAIL), (39.5, FAIL), (35.0, PASS)):
        sc = screening.Screening(_config())
        Timeline(sc).frames(sc.stable_frames, reading=reading)
        assert sc.state == expected, (reading, sc.state)
    sc = screening.Screening(_config(threshold_c=37.5, skin_to_core_offset_c=0.5))
    assert abs(sc.decision_line_c() - 37.0) < 1e-9


def test_unstable_readings_give_retry_unstable():
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.seconds(5.0, reading=lambda t: 35.0 + (1.5 if (t // FRAME_MS) % 2 else 0.0))
    assert RETRY in tl.states()
    at = tl.states().index(RETRY)
    assert tl.changes[at][2] == "unstable"
    assert PASS not in tl.states() and FAIL not in tl.states()


def test_implausible_reading_asks_for_retry():
    for reading in (28.0, 45.0):
        sc = screening.Screening(_config())
        Timeline(sc).frames(sc.stable_frames, reading=reading)
        assert sc.state == RETRY and sc.reason == "implausible", reading


def test_too_far_only_after_it_persists():
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.seconds(1.0, status="too_far")  # walking in: shorter than retry_after_s, no RETRY
    assert sc.state == MEASURING
    tl.frames(sc.stable_frames)
    assert sc.state == PASS
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.seconds(2.0, status="too_far")
    assert sc.state == RETRY and sc.reason == "too_far"
    assert tl.changes[-1][0] >= 1500


def test_each_retry_reason_and_recovery_to_a_verdict():
    for status in ("too_close", "multiple", "too_far"):
        sc = screening.Screening(_config())
        tl = Timeline(sc)
        tl.seconds(2.0, status=status)
        assert sc.state == RETRY and sc.reason == status
        tl.seconds(2.0)  # the subject steps into place: RETRY is held, then measuring again
        assert sc.state == PASS, (status, tl.changes)
        assert tl.states()[-3:] == [RETRY, MEASURING, PASS]


def test_verdict_is_held_then_waits_for_the_subject_to_leave():
    sc = screening.Screening(_config(hold_s=2.0, leave_s=0.5))
    tl = Timeline(sc)
    tl.frames(sc.stable_frames, reading=37.5)
    assert sc.state == FAIL
    failed_at = tl.changes[-1][0]
    tl.seconds(1.5, reading=37.5)
    assert sc.state == FAIL  # held
    tl.seconds(1.0, reading=35.0)
    assert sc.state == IDLE and sc.waiting_leave
    assert tl.changes[-1][0] - failed_at >= 2000
    tl.seconds(5.0, reading=35.0)  # the same person stays: no second verdict
    assert sc.state == IDLE and tl.states().count(FAIL) == 1 and PASS not in tl.states()
    tl.seconds(0.25, status="none")  # shorter than leave_s: still the same subject
    tl.frames(1, reading=35.0)
    assert sc.state == IDLE and sc.waiting_leave
    tl.seconds(1.0, status="none")
    assert not sc.waiting_leave
    tl.frames(sc.stable_frames, reading=35.0)  # the next subject
    assert sc.state == PASS


def test_subject_leaving_mid_measurement_returns_to_idle():
    sc = screening.Screening(_config(leave_s=0.5))
    tl = Timeline(sc)
    tl.frames(2)
    assert sc.state == MEASURING
    tl.seconds(1.0, status="none")
    assert sc.state == IDLE and not sc.waiting_leave


def _pass_subjects(sc, tl, readings):
    for value in readings:
        tl.frames(sc.stable_frames, reading=value)
        assert sc.state == PASS, (value, sc.state)
        tl.seconds(sc.hold_ms / 1000 + 0.2, reading=value)
        tl.seconds(1.0, status="none")


def test_baseline_mode_trimmed_mean_plus_delta():
    sc = screening.Screening(_config(mode="baseline", hold_s=0.5))
    tl = Timeline(sc)
    # until 10 passes are known the absolute rule applies: 36.8 passes (36.8 + 1.0 < 38.0)
    readings = [34.0, 34.2, 34.4, 34.6, 34.8, 35.0, 35.2, 35.4, 35.6, 36.8]
    _pass_subjects(sc, tl, readings)
    assert sc.baseline_count == 10
    # trimmed mean drops 34.0 and 36.8: mean of 34.2..35.6 = 34.9; line = 35.9
    assert abs(sc.baseline_c() - 34.9) < 1e-3
    assert sc.decide(35.95) == FAIL and sc.decide(35.85) == PASS
    tl.frames(sc.stable_frames, reading=36.0)  # would pass the absolute rule, fails the baseline
    assert sc.state == FAIL
    assert sc.baseline_count == 10 and abs(sc.baseline_c() - 34.9) < 1e-3  # FAILs never join it


def test_baseline_follows_the_day():
    sc = screening.Screening(_config(mode="baseline", hold_s=0.5))
    tl = Timeline(sc)
    _pass_subjects(sc, tl, [33.0] * 10)  # a cold morning
    line = sc.decision_line_c()
    assert abs(line - 34.0) < 1e-3
    _pass_subjects(sc, tl, [33.5 + 0.05 * k for k in range(10)])  # the day warms up
    assert sc.decision_line_c() > line + 0.5


def test_fault_never_passes_and_clears_to_a_fresh_start():
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.frames(2)
    sc.set_fault(tl.now, "sensor not answering")
    assert sc.state == FAULT and sc.verdict
    tl.seconds(5.0, reading=35.0)
    assert sc.state == FAULT and PASS not in tl.states()
    sc.set_fault(tl.now, None)
    assert sc.state == IDLE and sc.waiting_leave  # whoever stood there is screened afresh
    tl.seconds(2.0, reading=35.0)
    assert sc.state == IDLE
    tl.seconds(1.0, status="none")
    tl.frames(sc.stable_frames)
    assert sc.state == PASS


def test_clock_wrap_of_ticks_ms():
    # time.ticks_ms() wraps at 2**30 on MicroPython; a verdict held across the wrap still ends
    sc = screening.Screening(_config(hold_s=1.0))
    start = (1 << 30) - 600
    tl = Timeline(sc, start_ms=start)
    tl.frames(sc.stable_frames)
    assert sc.state == PASS
    tl.seconds(0.5)
    assert sc.state == PASS and tl.now < start  # wrapped
    tl.seconds(1.0)
    assert sc.state == IDLE


def test_queue_next_subject_in_view_before_the_last_one_left():
    # A is screened at 0.5 m; B walks up while A is still in view: nobody is ever absent, yet B
    # must be screened (B is seen beyond the working distance, then nearer than A was)
    sc = screening.Screening(_config(hold_s=1.0))
    tl = Timeline(sc)
    for _ in range(sc.stable_frames):
        sc.update(tl.now, "person", 35.5, True, 0.5)
        tl.now += FRAME_MS
    assert sc.state == PASS
    for _ in range(12):  # held, then waiting: A still standing there
        sc.update(tl.now, "person", 35.5, True, 0.52)
        tl.now += FRAME_MS
    assert sc.state == IDLE and sc.waiting_leave
    for _ in range(16):  # the same subject fidgeting: no new measurement
        sc.update(tl.now, "person", 35.5, True, 0.45)
        tl.now += FRAME_MS
    assert sc.state == IDLE and sc.waiting_leave
    sc.update(tl.now, "multiple", None, True, 0.5)  # B enters while A leaves
    tl.now += FRAME_MS
    assert sc.waiting_leave
    sc.update(tl.now, "too_far", None, True, 1.3)  # A is out; B still far away
    tl.now += FRAME_MS
    assert not sc.waiting_leave
    for _ in range(sc.stable_frames):
        sc.update(tl.now, "person", 37.6, True, 0.55)
        tl.now += FRAME_MS
    assert sc.state == FAIL


def test_next_subject_at_a_different_distance_is_someone_new():
    sc = screening.Screening(_config(hold_s=1.0))
    t = 0
    for _ in range(sc.stable_frames):
        sc.update(t, "person", 35.5, True, 0.4)
        t += FRAME_MS
    for _ in range(10):
        sc.update(t, "person", 35.5, True, 0.4)
        t += FRAME_MS
    assert sc.waiting_leave
    sc.update(t, "person", 36.0, True, 0.8)
    assert not sc.waiting_leave and sc.state == MEASURING


def test_person_without_a_reading_gets_retry_never_a_verdict():
    # the scene saw a person but no face in the head box (reading None): never judged
    sc = screening.Screening(_config())
    tl = Timeline(sc)
    tl.seconds(sc.unstable_ms / 1000 + 0.5, reading=None)
    assert RETRY in tl.states() and tl.changes[tl.states().index(RETRY)][2] == "unstable", tl.changes
    assert PASS not in tl.states() and FAIL not in tl.states()


def _feed(sc, t, n, status, reading, distance_m, head_box):
    for _ in range(n):
        sc.update(t, status, reading, status != "none", distance_m, head_box)
        t += FRAME_MS
    return t


def test_tight_queue_next_subject_steps_in_during_the_hold():
    # sim finding 3: A walks off sideways while PASS is still shown and B steps into the same
    # spot right away: at the end of the hold someone stands there at A's distance -- it is B
    sc = screening.Screening(_config(hold_s=3.0, leave_s=0.5))
    t = _feed(sc, 0, sc.stable_frames, "person", 35.5, 0.5, (12, 6, 20, 20))
    assert sc.state == PASS
    t = _feed(sc, t, 8, "person", 35.5, 0.5, (12, 6, 20, 20))  # A still there
    for shift in (3, 6, 9, 12):  # A walks off to the right
        t = _feed(sc, t, 1, "person", 35.0, 0.5, (12 + shift, 6, 20 + min(shift, 11), 20))
    t = _feed(sc, t, 1, "none", None, None, None)  # one empty frame
    t = _feed(sc, t, 12, "person", 37.8, 0.5, (12, 6, 20, 20))  # B, same place, same distance
    assert sc.state == IDLE or sc.state == MEASURING or sc.state == FAIL, sc.state
    t = _feed(sc, t, 3 * sc.stable_frames, "person", 37.8, 0.5, (12, 6, 20, 20))
    assert sc.state == FAIL, (sc.state, sc.waiting_leave)


def test_brief_empty_view_between_two_people_is_a_new_subject():
    sc = screening.Screening(_config(hold_s=1.0, leave_s=2.0))
    t = _feed(sc, 0, sc.stable_frames, "person", 35.5, 0.5, (12, 6, 20, 20))
    t = _feed(sc, t, 12, "person", 35.5, 0.5, (12, 6, 20, 20))
    assert sc.state == IDLE and sc.waiting_leave
    t = _feed(sc, t, 4, "none", None, None, None)  # 0.5 s empty: well under leave_s
    t = _feed(sc, t, sc.stable_frames + 1, "person", 37.8, 0.5, (12, 6, 20, 20))
    assert sc.state == FAIL, (sc.state, sc.waiting_leave)


def test_same_subject_fidgeting_is_not_screened_twice():
    sc = screening.Screening(_config(hold_s=1.0, leave_s=0.5))
    t = _feed(sc, 0, sc.stable_frames, "person", 35.5, 0.5, (12, 6, 20, 20))
    t = _feed(sc, t, 12, "person", 35.5, 0.5, (12, 6, 20, 20))
    for k in range(40):  # sways a pixel or two, one-frame dropout
        box = (11 + k % 3, 6, 19 + k % 3, 20)
        t = _feed(sc, t, 1, "none" if k == 20 else "person", 35.5, 0.55, box)
    assert sc.state == IDLE and sc.waiting_leave


def test_next_subject_stepping_in_front_is_someone_new():
    # sim, 4 s queue: B walks up in front of A (0.55 m -> 0.34 m, same column); the scene sees one
    # person all along, its head growing from 9 to 15 pixels
    sc = screening.Screening(_config(hold_s=3.0, leave_s=0.5))
    t = _feed(sc, 0, sc.stable_frames, "person", 38.5, 0.55, (10, 6, 18, 22))
    assert sc.state == FAIL
    t = _feed(sc, t, 24, "person", 38.5, 0.55, (10, 6, 18, 22))
    assert sc.state == IDLE and sc.waiting_leave
    for d, box in ((0.5, (11, 7, 18, 21)), (0.45, (12, 7, 19, 22)), (0.4, (10, 5, 20, 23)), (0.34, (8, 2, 22, 23))):
        t = _feed(sc, t, 1, "person", 36.3, d, box)
    t = _feed(sc, t, sc.stable_frames + 1, "person", 36.5, 0.34, (8, 2, 22, 23))
    assert sc.state == PASS, (sc.state, sc.waiting_leave)


def test_next_subject_is_screened_before_the_last_verdict_times_out():
    # 4 s between arrivals, hold_s 3: B must not wait for A's hold to run out (verdict > 2 s)
    sc = screening.Screening(_config(hold_s=3.0, leave_s=0.5))
    t = _feed(sc, 0, sc.stable_frames, "person", 35.5, 0.5, (12, 6, 20, 20))
    verdict_at = t - FRAME_MS
    t = _feed(sc, t, 6, "person", 35.5, 0.5, (12, 6, 20, 20))
    t = _feed(sc, t, 2, "person", 35.5, 0.5, (20, 6, 28, 20))  # A walks off
    t = _feed(sc, t, 2, "none", None, None, None)
    t = _feed(sc, t, 4, "person", 37.9, 0.45, (12, 6, 21, 21))  # B
    assert sc.state == MEASURING, sc.state
    t = _feed(sc, t, sc.stable_frames, "person", 37.9, 0.45, (12, 6, 21, 21))
    assert sc.state == FAIL and t - verdict_at < sc.hold_ms, (sc.state, t - verdict_at)
