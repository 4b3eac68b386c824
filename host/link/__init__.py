"""The host's side of the USB frame link (firmware/framelink.py is the unit's side).

- frames.FrameDecoder: bytes from the port -> packets (resynchronises after garbage);
- frames.Converter: raw subpages -> temperatures with the firmware's own driver, run in CPython;
- frames.UnitClient: one unit's REPL (mpremote's transport): stream frames, read and write files.
"""
