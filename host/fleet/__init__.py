"""Fleet tools: find units, flash MicroPython, deploy the application, prove what is on each unit.

Layout:
- discovery  which serial ports carry units (USB VID/PID of the usual ESP32 bridges, or --port/--all)
- image      checks on a MicroPython image before anything is written (magic, chip id, banner)
- manifest   the release: firmware/ and boards/ hashed into a deterministic release manifest, the
             files a unit gets (compiled with mpy-cross for its bytecode version), the diff against
             what a unit holds
- link       one unit: esptool's Python API for the ROM loader, mpremote's SerialTransport for the REPL
- deploy     the per-unit jobs (flash, deploy, verify, fleet report) and the parallel runner
- progress   live per-unit lines (rich, TTY only), summary table, JSON
- cli        the click commands `host flash|deploy|verify|fleet`
- bench      `python -m host.fleet.bench --units 1,8`: parallel scaling on virtual units
"""
