# esp32 stand-in for the virtual unit (the few helpers firmware might call).
def mcu_temperature():
    return 45


def raw_temperature():
    return 113


def wake_on_ext0(pin, level):
    pass
