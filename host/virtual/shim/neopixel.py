# neopixel stand-in for the virtual unit: every write() lands on the indicator timeline.
import simlink


class NeoPixel:
    ORDER = (1, 0, 2, 3)

    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = bytearray(n * bpp)
        self._shown = None

    def __len__(self):
        return self.n

    def __setitem__(self, index, value):
        offset = index * self.bpp
        for i in range(self.bpp):
            self.buf[offset + self.ORDER[i]] = value[i]

    def __getitem__(self, index):
        offset = index * self.bpp
        return tuple(self.buf[offset + self.ORDER[i]] for i in range(self.bpp))

    def fill(self, value):
        for i in range(self.n):
            self[i] = value

    def write(self):
        pixels = [list(self[i]) for i in range(self.n)]
        if pixels != self._shown:
            self._shown = pixels
            simlink.event({"kind": "neopixel", "pin": getattr(self.pin, "id", self.pin), "pixels": pixels})
