# Start-up of a virtual unit inside the MicroPython unix port (not firmware; see repl.py).
#
# micropython -X heapsize=N -i -c "import _vunit; _vunit.start(globals())"
#
# Environment: VUNIT_FS = the unit's filesystem folder (mounted at "/"), VUNIT_SHIM = folder of
# the hardware stand-ins ("" if none), VUNIT_MODE = "friendly" (boot.py then main.py, as after a
# reset at the friendly REPL) or "raw" (boot.py only: a soft reset from the raw REPL keeps the
# raw REPL and skips main.py, as ports/esp32/main.c does), VUNIT_CTL = a pipe descriptor on which
# this unit asks the bridge for a hard reset ("R"), a watchdog reset ("W") or a soft reset ("S"),
# VUNIT_LINK = "r,w" pipe
# descriptors of the shim's simulator link to the unit's sensor emulator (if any) and
# VUNIT_CLOCK_US = where the unit's virtual clock starts.
# After start() returns, the unix port's own REPL takes over (-i).
import os
import sys

import _vunit_os  # before start() changes sys.path

_ctl = None


def _signal(code):
    if _ctl is not None:
        _ctl.write(code)
        _ctl.flush()
    # the bridge kills this interpreter now; never run on meanwhile
    import utime

    while True:
        utime.sleep(1)


def hard_reset():
    """machine.reset(): the whole chip restarts (ROM, bootloader, MicroPython)."""
    _signal(b"R")


def soft_reset():
    """machine.soft_reset(): the interpreter restarts, boot.py and main.py run again."""
    _signal(b"S")


def _run(name, g):
    try:
        with open(name) as f:
            src = f.read()
    except OSError:
        return True
    try:
        exec(compile(src, name, "exec"), g)
    except SystemExit as exc:
        why = str(exc.args[0]) if exc.args else ""
        if "watchdog" in why:
            _signal(b"W")  # the shim's WDT starved: the chip resets (TG0WDT)
        # the shim's machine.reset() unwinds with SystemExit("machine.reset()")
        if "reset()" in why and "soft" not in why:
            hard_reset()
        soft_reset()  # SystemExit from boot.py/main.py soft-resets a board (pyexec FORCED_EXIT)
    except BaseException as exc:  # KeyboardInterrupt and errors: traceback, then the REPL
        sys.print_exception(exc)
        return False
    return True


def start(g):
    global _ctl
    ctl = os.getenv("VUNIT_CTL")
    if ctl:
        _ctl = open("/dev/fd/" + ctl, "wb")
    shim = os.getenv("VUNIT_SHIM") or ""
    if shim:
        # import the stand-ins before the mount hides their folder (as host/virtual/shim/sim_main.py)
        sys.path[:] = [shim]
        for name in ("simlink", "time", "machine", "neopixel", "network", "bluetooth", "esp32"):
            try:
                __import__(name)
            except ImportError:
                pass
        link = os.getenv("VUNIT_LINK")
        simlink = sys.modules.get("simlink")
        if link and simlink is not None:
            # the I2C bus reaches the unit's MLX90640 emulator in the host (repl.py SensorLink)
            read_fd, write_fd = link.split(",")
            # sequenced: mpremote's Ctrl-C may interrupt an exchange (simlink.PipeLink)
            simlink.connect(simlink.PipeLink(int(read_fd), int(write_fd), sequenced=True),
                            int(os.getenv("VUNIT_CLOCK_US") or 0))
        machine = sys.modules.get("machine")
        if machine is not None:
            try:
                machine.reset = hard_reset
                machine.soft_reset = soft_reset
            except AttributeError:
                pass
    _vunit_os.install(os.getenv("VUNIT_CHIP") or "esp32")
    try:
        os.umount("/")
    except OSError:
        pass
    os.mount(os.VfsPosix(os.getenv("VUNIT_FS")), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    if _run("boot.py", g) and os.getenv("VUNIT_MODE") != "raw":
        _run("main.py", g)
