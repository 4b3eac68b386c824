# The virtual unit's entry point under `host sim` (not firmware: it plays the part of the
# device's main.py and adds the simulator's hooks).
#
# micropython -X heapsize=16M sim_main.py READ_FD WRITE_FD ROOT DEADLINE_MS MAX_CYCLES
#
# With MICROPYPATH = this folder, the stand-ins (machine, time, neopixel, network, bluetooth,
# esp32) are imported first; then ROOT (a folder holding the deployed firmware, config.json,
# calibration.json and boards/) is mounted at "/" like the unit's flash filesystem, and the
# firmware's boot.py runs, then its own `unit.run(hooks=...)` until the scenario's virtual deadline.
# Network modules (socket, ssl, espnow, webrepl, requests, ...) are poisoned: see _forbidden.py.
# Under CPython (--interpreter cpython) the host calls run() directly instead.
import sys

import simlink
import time  # noqa: F401  (the virtual clock, imported before the mount hides this folder)
import machine  # noqa: F401
import neopixel  # noqa: F401
import network  # noqa: F401
import bluetooth  # noqa: F401
import esp32  # noqa: F401
import _forbidden


class Hooks:
    """Forwards what the firmware reports to the host. The firmware calls these with the virtual
    time first (on_frame(now_ms, state, info), on_verdict(now_ms, state, reason, reading_c));
    any other arguments are forwarded as they come."""

    def on_frame(self, *args):
        simlink.event({"kind": "frame", "args": list(args)})

    def on_verdict(self, *args):
        simlink.event({"kind": "verdict", "args": list(args)})

    def on_state(self, *args):
        simlink.event({"kind": "state", "args": list(args)})


def _boot():
    """Run boot.py first, as the device does on every boot and soft reset."""
    try:
        with open("boot.py") as f:
            source = f.read()
    except OSError:
        return
    exec(compile(source, "boot.py", "exec"), {"__name__": "boot"})


def run(max_cycles=None):
    """boot.py, then the firmware's wiring module, as main.py would; report how it ended."""
    try:
        _boot()
        import unit

        if max_cycles is None:
            unit.run(hooks=Hooks())
        else:
            unit.run(hooks=Hooks(), max_cycles=max_cycles)
        simlink.event({"kind": "end", "why": "returned"})
    except simlink.Stopped as exc:
        simlink.event({"kind": "end", "why": str(exc.args[0]) if exc.args else "stopped"})
    except Exception as exc:  # a crash is a finding: report it, the host fails the run
        simlink.event({"kind": "crash", "error": "%s: %s" % (type(exc).__name__, exc)})
        if hasattr(sys, "print_exception"):
            sys.print_exception(exc)
        else:
            import traceback

            traceback.print_exc()
        return 3
    return 0


def _main(argv):
    import os

    read_fd, write_fd, root = int(argv[1]), int(argv[2]), argv[3]
    deadline_ms = int(argv[4])
    max_cycles = int(argv[5]) if len(argv) > 5 and argv[5] != "-" else None
    simlink.connect(simlink.PipeLink(read_fd, write_fd), 0, deadline_ms * 1000)
    try:
        os.umount("/")
    except OSError:
        pass
    shim_dir = simlink.__file__.rsplit("/", 1)[0]
    os.mount(os.VfsPosix(root), "/")
    # the poisoned network modules stay importable (and fail, recorded) from a second mount
    os.mount(os.VfsPosix(shim_dir), "/_shim")
    os.chdir("/")
    sys.path[:] = ["", "/lib", ".frozen", "/_shim"]
    _forbidden.install()
    return run(max_cycles)


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
