# The per-frame hot loops of scene analysis and correction, written once in the subset of Python
# that MicroPython's viper emitter compiles to machine code.
#
# On MicroPython each function is @micropython.viper: ptr8/ptr16/ptr32 give raw access to the
# preallocated buffers and the arithmetic is on machine integers (no heap allocation at all).
# Under CPython the decorator is the identity and ptrN(buf) returns buf itself, so the very same
# source runs as plain Python and the firmware tests exercise it on both interpreters.
#
# Measured on the MicroPython 1.29 unix port (x64), one 32x24 frame with a person at 0.5 m: the
# scene analysis took 0.62 ms as plain bytecode (928 bytes allocated) and takes ~0.04 ms here
# (0 bytes); converting one subpage's 384 floats to centi-degrees took 0.11 ms and 24 KB of boxed
# floats, and takes ~0.01 ms and 0 bytes with the float bits decoded in viper.
#
# Conventions: images are array('h') centi-degrees clamped to 0..32000 (so ptr16's unsigned loads
# need no sign fix), the background is array('i') x16 (non-negative for the same reason), labels,
# mask and halo are bytearrays; several buffers travel in one list `bufs` to keep every function
# at <= 4 arguments (viper's limit on some ports).
import sys

# The compiler recognises `@micropython.viper` by name; under CPython a stand-in namespace makes
# it the identity (sys.implementation, not `import micropython`: CPython may have a stub package
# of that name whose decorators raise).
VIPER = sys.implementation.name == "micropython"
if VIPER:
    import micropython
else:

    class micropython:  # noqa: N801 - stands in for the MicroPython module
        @staticmethod
        def viper(fn):
            return fn

    def ptr8(buf):
        return buf

    def ptr16(buf):
        return buf

    def ptr32(buf):
        return buf


# indices into the scene's `bufs` list
B_IMG = 0  # array('h') 768: corrected image, centi-degrees
B_BG = 1  # array('i') 768: background x16
B_MASK = 2  # bytearray 768: 1 = excluded (blackbody)
B_LABELS = 3  # bytearray 768: 0 none, 255 warm unvisited, 1..16 region, 254 overflow
B_HOT = 4  # array('H') 768: hot pixel list
B_HALO = 5  # bytearray 768: 1 = next to a hot pixel
B_STACK = 6  # array('H') 768: flood-fill stack
B_STATS = 7  # array('i') 16: results of the last kernel call (see below)
B_PARAMS = 8  # array('i') 16: parameters (see below)
B_HOTV = 9  # array('h') 8: hottest values, descending
B_HOTI = 10  # array('h') 8: their pixel indices

# B_PARAMS slots
P_WARM = 0  # warm threshold above background, centi-degrees
P_HOT = 1  # above this a pixel is hot (not skin)
P_SKIN = 2  # skin range lower bound
P_REF = 3  # coverage reference excess (head width)
P_C0 = 4  # box for hottest(): columns c0..c1, rows r0..r1
P_R0 = 5
P_C1 = 6
P_R1 = 7
P_N = 8  # number of hottest pixels to keep
# B_STATS slots after flood()
S_COUNT = 0
S_SKIN = 1
S_PEAK = 2
S_TOP = 3
S_BOTTOM = 4
S_LEFT = 5
S_RIGHT = 6
# after head_row()
S_RUN_L = 8
S_RUN_R = 9
# after mark_warm()
S_WARM = 10


@micropython.viper
def mark_warm(bufs) -> int:
    """labels = 255 where the pixel is warm (>= background + warm), not masked and not in a halo,
    else 0; hot pixels (above params hot, whatever the background) go to the hot list and their
    3x3 neighbourhoods into halo. Returns the hot count."""
    img = ptr16(bufs[0])
    bg = ptr32(bufs[1])
    mask = ptr8(bufs[2])
    labels = ptr8(bufs[3])
    hot_list = ptr16(bufs[4])
    halo = ptr8(bufs[5])
    params = ptr32(bufs[8])
    warm = int(params[0])
    hot = int(params[1])
    stats = ptr32(bufs[7])
    n = 0
    warm_count = 0
    for i in range(768):
        halo[i] = 0
        t = int(img[i])
        if mask[i] != 0:
            labels[i] = 0
            continue
        # hot is absolute: an object above the skin range stays excluded even after the
        # background has taken it in
        if t > hot:
            hot_list[n] = i
            n += 1
        if t - (int(bg[i]) >> 4) >= warm:
            labels[i] = 255
            warm_count += 1
        else:
            labels[i] = 0
    stats[10] = warm_count
    h = 0
    while h < n:
        i = int(hot_list[h])
        h += 1
        r = i >> 5
        c = i & 31
        r0 = r - 1
        if r0 < 0:
            r0 = 0
        r1 = r + 1
        if r1 > 23:
            r1 = 23
        c0 = c - 1
        if c0 < 0:
            c0 = 0
        c1 = c + 1
        if c1 > 31:
            c1 = 31
        while r0 <= r1:
            j = (r0 << 5) + c0
            end = (r0 << 5) + c1
            while j <= end:
                halo[j] = 1
                j += 1
            r0 += 1
    if n > 0:
        # hot things and their blurred fringe are not part of any region: a person in front of a
        # radiator is not joined to it, and a fringe pixel in the skin range cannot start a head
        for i in range(768):
            if halo[i] != 0:
                labels[i] = 0
    return n


@micropython.viper
def next_warm(bufs, start: int) -> int:
    """Index of the next unvisited warm pixel at or after start, or -1."""
    labels = ptr8(bufs[3])
    i = start
    while i < 768:
        if labels[i] == 255:
            return i
        i += 1
    return -1


@micropython.viper
def flood(bufs, seed: int, k: int) -> int:
    """4-connected flood fill of warm pixels from seed, labelling them k; region statistics go to
    stats (count, skin-range pixels outside halos, their peak, bounding box of the pixels outside
    halos). Returns the count."""
    img = ptr16(bufs[0])
    labels = ptr8(bufs[3])
    halo = ptr8(bufs[5])
    stack = ptr16(bufs[6])
    stats = ptr32(bufs[7])
    params = ptr32(bufs[8])
    hot = int(params[1])
    skin_min = int(params[2])
    labels[seed] = k
    stack[0] = seed
    sp = 1
    count = 0
    skin = 0
    peak = 0
    top = 24
    bottom = -1
    left = 32
    right = -1
    while sp > 0:
        sp -= 1
        j = int(stack[sp])
        count += 1
        r = j >> 5
        c = j & 31
        if halo[j] == 0:  # the box is the region less hot things (and their blur) attached to it
            if r < top:
                top = r
            if r > bottom:
                bottom = r
            if c < left:
                left = c
            if c > right:
                right = c
            t = int(img[j])
            if skin_min <= t and t <= hot:
                skin += 1
                if t > peak:
                    peak = t
        if c > 0 and labels[j - 1] == 255:
            labels[j - 1] = k
            stack[sp] = j - 1
            sp += 1
        if c < 31 and labels[j + 1] == 255:
            labels[j + 1] = k
            stack[sp] = j + 1
            sp += 1
        if r > 0 and labels[j - 32] == 255:
            labels[j - 32] = k
            stack[sp] = j - 32
            sp += 1
        if r < 23 and labels[j + 32] == 255:
            labels[j + 32] = k
            stack[sp] = j + 32
            sp += 1
    stats[0] = count
    stats[1] = skin
    stats[2] = peak
    stats[3] = top
    stats[4] = bottom
    stats[5] = left
    stats[6] = right
    return count


@micropython.viper
def head_row(bufs, r: int, center: int, k: int) -> int:
    """Coverage width (milli-pixels) of the run of region-k pixels through (r, center) or a
    neighbouring column; -1 when the run has ended. Run bounds go to stats[8], stats[9]."""
    img = ptr16(bufs[0])
    bg = ptr32(bufs[1])
    labels = ptr8(bufs[3])
    halo = ptr8(bufs[5])
    stats = ptr32(bufs[7])
    params = ptr32(bufs[8])
    ref = int(params[3])
    base = r << 5
    c = center
    if labels[base + c] != k or halo[base + c] != 0:
        if c > 0 and labels[base + c - 1] == k and halo[base + c - 1] == 0:
            c -= 1
        elif c < 31 and labels[base + c + 1] == k and halo[base + c + 1] == 0:
            c += 1
        else:
            return -1
    # the run stops at hot things (a radiator behind the head) and their blurred edges
    run_l = c
    while run_l > 0 and labels[base + run_l - 1] == k and halo[base + run_l - 1] == 0:
        run_l -= 1
    run_r = c
    while run_r < 31 and labels[base + run_r + 1] == k and halo[base + run_r + 1] == 0:
        run_r += 1
    w = 0
    c = run_l
    while c <= run_r:
        e = int(img[base + c]) - (int(bg[base + c]) >> 4)
        if e >= ref:
            w += 1000
        elif e > 0:
            w += (e * 1000) // ref
        c += 1
    stats[8] = run_l
    stats[9] = run_r
    return w


@micropython.viper
def hottest(bufs, k: int) -> int:
    """The params[8] hottest skin-range, non-halo pixels of region k inside the params box, into
    hot values / indices (descending). Returns how many were found."""
    img = ptr16(bufs[0])
    labels = ptr8(bufs[3])
    halo = ptr8(bufs[5])
    params = ptr32(bufs[8])
    hv = ptr16(bufs[9])
    hi = ptr16(bufs[10])
    hot = int(params[1])
    skin_min = int(params[2])
    c0 = int(params[4])
    r0 = int(params[5])
    c1 = int(params[6])
    r1 = int(params[7])
    n = int(params[8])
    found = 0
    r = r0
    while r <= r1:
        j = (r << 5) + c0
        end = (r << 5) + c1
        while j <= end:
            t = int(img[j])
            if labels[j] == k and skin_min <= t and t <= hot and halo[j] == 0:
                if found < n:
                    found += 1
                    m = found - 1
                elif t > int(hv[n - 1]):
                    m = n - 1
                else:
                    m = -1
                if m >= 0:
                    while m > 0 and int(hv[m - 1]) < t:
                        hv[m] = hv[m - 1]
                        hi[m] = hi[m - 1]
                        m -= 1
                    hv[m] = t
                    hi[m] = j
            j += 1
        r += 1
    return found


@micropython.viper
def count_heads(bufs, k: int, limit: int, min_run: int) -> int:
    """Runs of at least min_run columns (within stats left..right) whose first region-k pixel,
    searching down from stats top, lies at or above row `limit`."""
    labels = ptr8(bufs[3])
    halo = ptr8(bufs[5])
    stats = ptr32(bufs[7])
    top = int(stats[3])
    left = int(stats[5])
    right = int(stats[6])
    if limit > 23:
        limit = 23
    heads = 0
    run = 0
    c = left
    while c <= right:
        r = top
        found = 0
        while r <= limit:
            if labels[(r << 5) + c] == k and halo[(r << 5) + c] == 0:
                found = 1
                break
            r += 1
        if found:
            run += 1
        else:
            if run >= min_run:
                heads += 1
            run = 0
        c += 1
    if run >= min_run:
        heads += 1
    return heads


@micropython.viper
def adapt(bufs, empty: int) -> int:
    """Background update (see scene.Scene._adapt). Returns the sum of bg x16 over unmasked pixels."""
    img = ptr16(bufs[0])
    bg = ptr32(bufs[1])
    mask = ptr8(bufs[2])
    labels = ptr8(bufs[3])
    halo = ptr8(bufs[5])
    total = 0
    for i in range(768):
        b = int(bg[i])
        t = int(img[i])
        if halo[i] != 0:
            pass  # hot things never become background: a person in front of them stays warm
        elif labels[i] == 0:
            # the fringe of a warm region (a 4-neighbour is warm): hair and blurred edges just
            # under the warm threshold; learning them would eat the person from the outside
            edge = 0
            if (i & 31) > 0 and labels[i - 1] != 0:
                edge = 1
            elif (i & 31) < 31 and labels[i + 1] != 0:
                edge = 1
            elif i >= 32 and labels[i - 32] != 0:
                edge = 1
            elif i < 736 and labels[i + 32] != 0:
                edge = 1
            if edge == 0:
                if empty:
                    b += t - (b >> 4)
                else:
                    b += ((t << 4) - b) >> 8
            elif empty:
                b += ((t << 4) - b) >> 8
        elif empty:
            b += ((t << 4) - b) >> 8
        bg[i] = b
        if mask[i] == 0:
            total += b
    return total


if VIPER:

    @micropython.viper
    def correct_bits(bufs, n: int, gain_q7: int, drift: int):
        """image[idx[i]] = raw * gain * 100 (from the IEEE-754 bits of the float32) + offset + drift,
        clamped to 0..32000 centi-degrees, for i < n. bufs = [raw array('f'), image array('h'),
        offsets array('h'), pixel indices array('H')]. Float32 = m * 2**(e - 150) with
        m the 24-bit mantissa; (m >> 8) * gain_q7 stays below 2**31 for gain <= 1.25."""
        raw = ptr32(bufs[0])
        img = ptr16(bufs[1])
        off = ptr16(bufs[2])
        idx = ptr16(bufs[3])
        for k in range(n):
            i = int(idx[k])
            b = int(raw[i])
            e = (b >> 23) & 0xFF
            if (b >> 31) & 1 or e < 118:  # negative (sign bit; ptr32 loads are unsigned on 64-bit hosts) or < 0.002
                v = 0  # clamped to 0 deg C
            elif e > 136:
                v = 32000  # 512 deg C and beyond, inf, NaN
            else:
                s = 149 - e
                v = (((b & 0x7FFFFF) | 0x800000) >> 8) * gain_q7
                v = (v + (1 << (s - 1))) >> s
            o = int(off[i])
            if o > 32767:
                o -= 65536
            v += o + drift
            if v < 0:
                v = 0
            elif v > 32000:
                v = 32000
            img[i] = v
