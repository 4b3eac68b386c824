# bluetooth stand-in for the virtual unit: BLE exists, is off, and active() calls are recorded.
import simlink

calls = []


class BLE:
    def __init__(self):
        self._active = False

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        calls.append(self._active)
        simlink.event({"kind": "ble_active", "active": self._active})
