# network stand-in for the virtual unit: radios exist, are off, and every active() call is
# recorded, so tests can prove boot.py switched them off and nothing switched them on.
import simlink

STA_IF = 0
AP_IF = 1
calls = []


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        calls.append((self.interface, self._active))
        simlink.event({"kind": "wlan_active", "interface": self.interface, "active": self._active})

    def isconnected(self):
        return False

    def disconnect(self):
        pass
