# The virtual unit's side of the simulator link (runs in the MicroPython unix port, or in CPython
# for --interpreter cpython). Not firmware: only the machine/time stand-ins and the sim runner
# script use it.
#
# Transport: two anonymous pipes inherited from the host process (opened here as /dev/fd/N; no
# socket, which the privacy tests poison). Every message from the unit is
#   header  struct "<BIQ": kind (ASCII byte), payload length, virtual time in microseconds
#   payload
# Requests (kind I2C_READ, I2C_WRITE, I2C_SCAN) get a reply "<BI": status, length, then data.
# On a virtual unit's link (PipeLink(sequenced=True)) a request's payload starts with a "<H"
# sequence number and the reply is "<BIH": status, length, the same sequence number (see PipeLink).
# status 0 = ACK, an errno (ENODEV, ETIMEDOUT, EIO) = the bus failed as machine.I2C reports it,
# STATUS_STOP = the scenario is over. Events (kind EVENT: JSON) are one-way.
#
# Virtual time: the unit's clock only moves when the firmware sleeps (sleep = jump), when an I2C
# transfer takes bus time (9 bits per byte at the bus frequency), and by TICK_COST_US per clock
# read, so that a polling loop still makes progress. CPU time is not charged: `host bench` measures it.
import struct

try:
    import json
except ImportError:  # pragma: no cover
    import ujson as json

I2C_READ = 0x52  # 'R'
I2C_WRITE = 0x57  # 'W'
I2C_SCAN = 0x53  # 'S'
EVENT = 0x45  # 'E'
STATUS_STOP = 255
HEADER = "<BIQ"
REPLY = "<BI"
TICK_COST_US = 50


class Stopped(SystemExit):
    """The scenario is over (or the watchdog bit): unwinds the firmware like a power-off."""


_now_us = 0
_deadline_us = None
_link = None
_watchdog = None  # (timeout_us, last_feed_us) once the firmware creates machine.WDT
_timers = []
_stopping = False  # once the end is signalled, the firmware's own clean-up may still use the clock


class PipeLink:
    """The unit's end of the two pipes.

    A reply is read until all of it has arrived (a pipe may hand over a 1664-byte EEPROM reply
    in pieces). With `sequenced` (virtual units, whose REPL takes Ctrl-C: host/virtual/repl.py
    SensorLink) every request carries a 16-bit sequence number after the header, which the reply
    echoes ("<BIH"); a Ctrl-C (KeyboardInterrupt) between a request and its reply leaves that
    reply in the pipe, and the next request reads past it instead of taking it for its own.
    Bytes already read are kept in this object, so an interruption in the middle of a reply does
    not lose them: the next request finishes reading that stale reply and drops it.
    MicroPython's micropython.kbd_intr(-1) cannot be used instead on the unix port: it sets
    SIGINT back to SIG_DFL, and the next Ctrl-C would kill the interpreter.
    `host sim` (host/sim/runner.py, no Ctrl-C there) uses the plain "<BI" replies."""

    MAX_REPLY = 65536  # longer than any register read: a length above it means the link is broken
    MAX_SEQUENCED_REPLY = 4096  # the MLX90640's largest read is its 1664-byte EEPROM

    def __init__(self, read_fd, write_fd, sequenced=False):
        self._poll = None
        if sequenced:
            # the descriptor itself (open(int)), which the host made non-blocking: readinto then
            # returns what has arrived instead of blocking for the rest, where a Ctrl-C would
            # raise out of it and lose the bytes already copied; the wait is in poll(), where an
            # interruption loses nothing
            import select

            self._rx = open(read_fd, "rb")
            self._poll = select.poll()
            self._poll.register(self._rx, select.POLLIN)
        else:
            self._rx = open("/dev/fd/%d" % read_fd, "rb")
        self._tx = open("/dev/fd/%d" % write_fd, "wb")
        self._sequenced = sequenced
        self._head_len = 7 if sequenced else 5
        self._buf = bytearray(2048)
        self._have = 0  # bytes of the reply being read, kept across interruptions
        self._seq = 0
        self.stale = 0  # replies dropped because their request was interrupted
        self.resyncs = 0  # times the byte stream had to be drained (see _resync)

    def send(self, kind, payload):
        # one write: a pipe write of up to PIPE_BUF bytes is atomic, so an interrupted send
        # leaves either the whole message or nothing
        self._tx.write(struct.pack(HEADER, kind, len(payload), _now_us) + payload)

    def _fill(self, n):
        if n > len(self._buf):
            grown = bytearray(n)
            grown[:self._have] = self._buf[:self._have]
            self._buf = grown
        view = memoryview(self._buf)
        poll = self._poll
        while self._have < n:
            if poll is not None:
                poll.poll()  # readable (data or the host gone): readinto below returns >= 0 at once
            got = self._rx.readinto(view[self._have:n])
            # no branch between the read and the count: MicroPython raises a pending
            # KeyboardInterrupt only at jumps, so bytes read are always counted
            self._have += got
            if not got:
                raise Stopped("the simulator host went away")

    def request(self, kind, payload):
        if not self._sequenced:
            self.send(kind, payload)
            return self._reply()[1:]
        seq = (self._seq + 1) & 0xFFFF
        self._seq = seq
        self.send(kind, struct.pack("<H", seq) + payload)
        expect = -1
        if kind == I2C_READ and len(payload) >= 6:
            expect = payload[4] | (payload[5] << 8)  # nbytes of "<BHBH"
        while True:
            rseq, status, data = self._reply()
            if rseq == seq:
                if status == 0 and expect >= 0 and len(data) != expect:
                    # a header made of stray bytes that happened to carry this sequence number
                    self._resync()
                    raise OSError(5)
                return status, data
            if (seq - rseq) & 0xFFFF > 256:
                # not the reply to any recent request: the byte stream is out of step
                self._resync()
                raise OSError(5)  # EIO: the firmware's driver retries the transfer
            self.stale += 1  # the reply to an interrupted request

    def _reply(self):
        head = self._head_len
        self._fill(head)
        if self._sequenced:
            status, length, rseq = struct.unpack_from("<BIH", self._buf, 0)
        else:
            status, length = struct.unpack_from(REPLY, self._buf, 0)
            rseq = 0
        if length > (self.MAX_SEQUENCED_REPLY if self._sequenced else self.MAX_REPLY):
            if not self._sequenced:
                self._have = 0
                raise Stopped("the simulator link is out of step (reply of %d bytes)" % length)
            self._resync()
            raise OSError(5)
        self._fill(head + length)
        data = bytes(self._buf[head:head + length])
        self._have = 0
        return rseq, status, data

    def _resync(self):
        """Last resort if bytes of a reply were lost anyway: drop everything that arrives until the
        host has been quiet for 50 ms (it answers within microseconds), then start afresh; replies
        that come later carry old sequence numbers and are dropped."""
        self.resyncs += 1
        self._have = 0
        view = memoryview(self._buf)
        while self._poll.poll(50):
            if not self._rx.readinto(view):
                raise Stopped("the simulator host went away")


class DirectLink:
    """In-process link for --interpreter cpython: the host's handler object is called directly."""

    def __init__(self, handler):
        self._handler = handler

    def send(self, kind, payload):
        self._handler.handle(kind, _now_us, bytes(payload))

    def request(self, kind, payload):
        return self._handler.handle(kind, _now_us, bytes(payload))


def connect(link, start_us=0, deadline_us=None):
    global _link, _now_us, _deadline_us, _watchdog, _stopping
    _link = link
    _stopping = False
    _now_us = start_us
    _deadline_us = deadline_us
    _watchdog = None
    del _timers[:]


def now_us():
    return _now_us


def advance_us(delta_us):
    """Move the virtual clock forward, firing due timers and checking the watchdog."""
    global _now_us
    if delta_us < 0:
        delta_us = 0
    target = _now_us + int(delta_us)
    while _timers:
        due = min(_timers, key=lambda timer: timer.due_us)
        if due.due_us > target:
            break
        if due.due_us > _now_us:
            _now_us = due.due_us
        _check()
        due.fire()
    _now_us = target
    _check()


def stop(why):
    """End the run: raise Stopped once; afterwards the clock keeps working for clean-up code."""
    global _stopping
    if not _stopping:
        _stopping = True
        raise Stopped(why)


def _check():
    if _stopping:
        return
    if _watchdog is not None and _now_us - _watchdog[1] > _watchdog[0]:
        event({"kind": "wdt_starved", "last_feed_ms": _watchdog[1] // 1000, "timeout_ms": _watchdog[0] // 1000})
        stop("watchdog starved")
    if _deadline_us is not None and _now_us >= _deadline_us:
        stop("scenario over")


def tick():
    advance_us(TICK_COST_US)


def wdt_start(timeout_ms):
    global _watchdog
    _watchdog = [int(timeout_ms) * 1000, _now_us]
    event({"kind": "wdt", "timeout_ms": int(timeout_ms)})


def wdt_feed():
    if _watchdog is not None:
        _watchdog[1] = _now_us


def add_timer(timer):
    if timer not in _timers:
        _timers.append(timer)


def remove_timer(timer):
    if timer in _timers:
        _timers.remove(timer)


def _plain(value):
    """JSON-ready copy: arrays and tuples become lists, unknown objects their repr."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        out = {}
        for key in value:
            out[str(key)] = _plain(value[key])
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    try:
        return [_plain(item) for item in value]
    except TypeError:
        return repr(value)


def event(obj):
    """Send one timeline event; the host stamps it with the virtual time in the header."""
    if _link is None:
        return
    _link.send(EVENT, json.dumps(_plain(obj)).encode())


def i2c_transfer(kind, addr, memaddr, addrsize, nbytes, data, freq):
    """One register transfer; returns (status, data). Charges the bus time to the virtual clock."""
    if _link is None:
        raise OSError(19)  # ENODEV: nothing on the bus
    payload = struct.pack("<BHBH", addr, memaddr, addrsize, nbytes)
    if data:
        payload += bytes(data)
    status, reply = _link.request(kind, payload)
    if status == STATUS_STOP:
        stop("scenario over")
        return 19, b""  # ENODEV: after the end, the bus is gone
    # start + address byte + register address + (repeated start + address) + data, 9 bits a byte
    nbytes_on_bus = 1 + addrsize // 8 + (1 if kind == I2C_READ else 0) + (nbytes if kind == I2C_READ else len(data))
    advance_us(nbytes_on_bus * 9 * 1000000 // max(int(freq), 1))
    return status, reply


def scan():
    if _link is None:
        return []
    status, reply = _link.request(I2C_SCAN, b"")
    if status == STATUS_STOP:
        stop("scenario over")
        return []
    return list(reply)
