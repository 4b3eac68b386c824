# boot.py: runs on every boot and soft reset, before main.py.
#
# Privacy: the gate never talks to a network. WiFi (station and access point) and Bluetooth stay
# switched on across a soft reset if someone enabled them at the REPL, so they are switched off
# here every time. This is the only firmware file allowed to import network or bluetooth, and it
# only ever calls active(False). ESP-NOW rides on the WiFi interface and goes down with it.


def _radios_off():
    try:
        import network
    except ImportError:  # a build without WiFi
        network = None
    if network is not None:
        for name in ("STA_IF", "AP_IF"):
            interface = getattr(network, name, None)
            if interface is None:
                continue
            try:
                network.WLAN(interface).active(False)
            except Exception:  # noqa: BLE001 - a radio that cannot be reached is off
                pass
    try:
        import bluetooth
    except ImportError:  # a build without Bluetooth
        return
    try:
        bluetooth.BLE().active(False)
    except Exception:  # noqa: BLE001
        pass


_radios_off()
del _radios_off
