# Network modules are poisoned on the virtual unit: the gate never talks to a network. Importing one
# (even inside try/except ImportError) is recorded on the timeline as "forbidden_import" and fails;
# the u-prefixed aliases of built-ins (usocket, ussl), which a file cannot shadow on the unix port,
# are stand-ins in sys.modules that record any use. Privacy tests assert the timeline has none.
import sys

import simlink

FILE_POISONED = ("socket", "ssl", "tls", "requests", "urequests", "espnow", "aioespnow", "webrepl",
                 "webrepl_setup", "ntptime", "umqtt", "mqtt", "urllib", "http")
ALIASES = ("usocket", "ussl")


def refuse(name):
    simlink.event({"kind": "forbidden_import", "name": name})
    raise ImportError("%s is not available: the gate never talks to a network (privacy)" % name)


class _Poisoned:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        simlink.event({"kind": "forbidden_import", "name": "%s.%s" % (self._name, attr)})
        raise ImportError("%s is not available: the gate never talks to a network (privacy)" % self._name)


def install():
    for name in ALIASES:
        sys.modules[name] = _Poisoned(name)
