"""NIST P-256 arithmetic for the gateway's ES256 signer, on MicroPython and CPython.

Field elements are plain ints. The one operation that must be fast is k·G; it is a signed comb
over a `Table` of affine multiples of G, with Jacobian coordinates (x = X/Z², y = Y/Z³), the
a = -3 doubling and mixed Jacobian + affine additions. On the unix port a `%` by P costs about
twice a 256-bit product, so the formulas leave sums and products unreduced where the next `%`
absorbs them.

Comb recoding. An odd k < 2^256 is  k = Σ s_j·2^j  with every s_j = ±1: s_255 = +1 and
s_j = +1 exactly when bit j+1 of k is set. With `teeth` t and spacing d = 256/t, column c is the
sign pattern (s_c, s_c+d, ..., s_c+(t-1)d); the table entry for that pattern is
Σ_i s_(c+id)·2^(id)·G, so  k·G = Σ_c 2^c·entry(column c).  The d columns are split into `blocks`
of e columns, block b holding the entries times 2^(b·e); Horner's rule over the e columns of a
block then costs e-1 doublings and blocks·e - 1 additions. Digits are never zero and the
sequence of operations is the same for every k; an even k is replaced by the odd n - k and the
result negated. The patterns come from one bit-matrix transposition of the scalar, so no loop
walks the secret bit by bit.
"""

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
G = (GX, GY)

_SIGN_BITS_TOP = 1 << 255
# Keeps the unreduced X3 of a mixed addition non-negative: a negative dividend makes `%` slower.
_X3_OFFSET = 3 * P * P


def inverse(a, m):
    """a⁻¹ mod m by Euclid's algorithm: about six times faster than pow(a, m - 2, m) here.

    Its running time depends on `a`, so callers pass blinded values (see ecdsa.py).
    """
    r0, r1 = m, a % m
    t0, t1 = 0, 1
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        t0, t1 = t1, t0 - q * t1
    if r0 != 1:
        raise ValueError("not invertible")
    return t0 % m


def on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x + 3 * x - B) % P == 0


# Reference affine arithmetic (None is the point at infinity): simple, slow and complete. It
# backs the comb in the cases its formulas exclude and serves as the tests' cross-check.


def add(p1, p2):
    """p1 + p2 for affine points or None."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None
        slope = (3 * x1 * x1 - 3) * inverse(2 * y1, P) % P
    else:
        slope = (y2 - y1) * inverse(x2 - x1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def mul(k, point):
    """k·point by double-and-add over `add`."""
    result = None
    for i in range(k.bit_length() - 1, -1, -1):
        result = add(result, result)
        if (k >> i) & 1:
            result = add(result, point)
    return result


def _double_jacobian(X, Y, Z):
    # dbl-2001-b for a = -3.
    p = P
    delta = Z * Z % p
    gamma = Y * Y % p
    beta4 = X * gamma % p << 2
    alpha = 3 * (X - delta) * (X + delta) % p
    X3 = (alpha * alpha - beta4 - beta4) % p
    return X3, (alpha * (beta4 - X3) - (gamma * gamma << 3)) % p, (Y * Z << 1) % p


def _compact(v):
    # On MicroPython the result of `%` keeps room for its 512-bit dividend; re-creating it at
    # its exact size halves the memory of a table of thousands of coordinates.
    return int.from_bytes(v.to_bytes(32, "big"), "big")


def _to_affine_batch(points):
    """Jacobian points (none at infinity) to affine with one inversion (Montgomery's trick)."""
    p = P
    prefix = []
    acc = 1
    for point in points:
        prefix.append(acc)
        acc = acc * point[2] % p
    acc = inverse(acc, p)
    out = [None] * len(points)
    for i in range(len(points) - 1, -1, -1):
        X, Y, Z = points[i]
        z_inv = acc * prefix[i] % p
        acc = acc * Z % p
        z_inv2 = z_inv * z_inv % p
        out[i] = (_compact(X * z_inv2 % p), _compact(Y * z_inv2 % p * z_inv % p))
    return out


def _add_affine_batch(pairs):
    """[(p1, p2), ...] of affine points with distinct x to their sums, with one inversion."""
    p = P
    prefix = []
    acc = 1
    for p1, p2 in pairs:
        prefix.append(acc)
        acc = acc * (p2[0] - p1[0]) % p
    acc = inverse(acc, p)
    out = [None] * len(pairs)
    for i in range(len(pairs) - 1, -1, -1):
        (x1, y1), (x2, y2) = pairs[i]
        dx_inv = acc * prefix[i] % p
        acc = acc * (x2 - x1) % p
        slope = (y2 - y1) * dx_inv % p
        x3 = (slope * slope - x1 - x2) % p
        out[i] = (_compact(x3), _compact((slope * (x1 - x3) - y1) % p))
    return out


def _transpose_mask(half):
    # Bits (row r, column c) of the 8x32 bit matrix with r in the lower and c & 7 in the upper
    # half of a half-by-half block: the bits that trade places with their mirror image.
    mask = 0
    for row in range(8):
        for col in range(32):
            if not row & half and col & half:
                mask |= 1 << (32 * row + col)
    return mask


_TRANSPOSE_1 = _transpose_mask(1)
_TRANSPOSE_2 = _transpose_mask(2)
_TRANSPOSE_4 = _transpose_mask(4)


def _columns(bits):
    """Transpose the 256-bit `bits`, read as 8 rows of 32 bits, into 32 bytes: bit r of byte
    4·(c % 8) + c // 8 is bit 32·r + c. Three rounds swap ever larger blocks of the four 8x8
    sub-matrices at once."""
    t = (bits ^ (bits >> 31)) & _TRANSPOSE_1
    bits ^= t ^ (t << 31)
    t = (bits ^ (bits >> 62)) & _TRANSPOSE_2
    bits ^= t ^ (t << 62)
    t = (bits ^ (bits >> 124)) & _TRANSPOSE_4
    bits ^= t ^ (t << 124)
    return bits.to_bytes(32, "little")


class Table:
    """Comb table of affine multiples of G, built at run time (nothing large ships in the image).

    teeth (1, 2, 4 or 8) and blocks (dividing 256/teeth) trade memory for speed: the table holds
    blocks·2^teeth entries (half of them negations sharing their x) and k·G costs
    256/(teeth·blocks) - 1 doublings and 256/teeth - 1 additions. The default, 8 teeth in 4
    blocks, needs 7 doublings and 31 additions; on the 64-bit unix port it takes about 120 KB
    of heap and 30 ms to build.
    """

    def __init__(self, teeth=8, blocks=4):
        if teeth not in (1, 2, 4, 8) or (256 // teeth) % blocks:
            raise ValueError("comb needs teeth in (1, 2, 4, 8) and blocks dividing 256/teeth")
        spacing = 256 // teeth
        cols = spacing // blocks
        patterns = 1 << teeth
        self.teeth = teeth
        self.blocks = blocks
        self.entries = blocks * patterns
        self._points = self._build(teeth, spacing, blocks, cols)

        # Column c sits in byte 4·(c % 32 % 8) + c % 32 // 8 of _columns(); its tooth i is bit
        # (8/teeth)·i + c // 32 there. One lookup list per (block, that bit offset) turns the
        # byte into the entry's offset in _points.
        stride = 8 // teeth
        luts = {}
        positions = []
        step_luts = []
        for col in range(cols - 1, -1, -1):
            for block in range(blocks):
                c = block * cols + col
                low = c % 32
                shift = c // 32
                positions.append(4 * (low % 8) + low // 8)
                key = (block, shift)
                if key not in luts:
                    lut = []
                    for byte in range(256):
                        pattern = 0
                        for tooth in range(teeth):
                            pattern |= ((byte >> (stride * tooth + shift)) & 1) << tooth
                        lut.append(2 * (block * patterns + pattern))
                    luts[key] = lut
                step_luts.append(luts[key])
        self._positions = bytes(positions)
        self._luts = step_luts

    @staticmethod
    def _build(teeth, spacing, blocks, cols):
        # Tooth bases 2^(i·spacing + b·cols)·G for every tooth i and block b.
        wanted = {}
        for block in range(blocks):
            for tooth in range(teeth):
                wanted[tooth * spacing + block * cols] = None
        point = (GX, GY, 1)
        for e in range(max(wanted) + 1):
            if e in wanted:
                wanted[e] = point
            point = _double_jacobian(*point)
        exponents = sorted(wanted)
        bases = dict(zip(exponents, _to_affine_batch([wanted[e] for e in exponents])))

        points = []
        for block in range(blocks):
            tooth_bases = [bases[t * spacing + block * cols] for t in range(teeth)]
            # entries[pattern], pattern bit i = sign of tooth i; grown one tooth at a time, the
            # patterns with the new tooth's bit clear being negations of those with it set.
            x0, y0 = tooth_bases[0]
            entries = [(x0, P - y0), (x0, y0)]
            for tooth in range(1, teeth):
                width = len(entries)
                upper = _add_affine_batch([(entry, tooth_bases[tooth]) for entry in entries])
                lower = [None] * width
                for pattern in range(width):
                    x, y = upper[width - 1 - pattern]
                    lower[pattern] = (x, P - y)
                entries = lower + upper
            for x, y in entries:
                points.append(x)
                points.append(y)
        return points


_builtin = None


def builtin_table():
    """The comb used when no table is given: 4 teeth in 2 blocks, 32 entries (about 8 KB),
    built on first use; k·G costs 31 doublings and 63 additions."""
    global _builtin
    if _builtin is None:
        _builtin = Table(teeth=4, blocks=2)
    return _builtin


def base_mul(k, table=None, randomizer=1):
    """k·G as affine (x, y) for 1 <= k < N.

    `randomizer` (any nonzero field element, ideally fresh random) scales the starting Jacobian
    coordinates: the result is unchanged, but the intermediate values, and the Z inverted at
    the end, no longer follow from k.
    """
    if not 0 < k < N:
        raise ValueError("scalar out of range")
    if table is None:
        table = builtin_table()
    p = P
    flip = 1 - (k & 1)
    odd = k + flip * (N - k - k)
    cols = _columns((odd >> 1) | _SIGN_BITS_TOP)
    points = table._points
    positions = table._positions
    luts = table._luts
    blocks = table.blocks
    x3_offset = _X3_OFFSET

    offset = luts[0][cols[positions[0]]]
    lam = randomizer % p
    lam2 = lam * lam % p
    X = points[offset] * lam2 % p
    Y = points[offset + 1] * lam2 % p * lam % p
    Z = lam
    until_double = blocks - 1
    for step in range(1, len(positions)):
        if not until_double:
            # Doubling, a = -3 (dbl-2001-b); inlined, as function calls cost here.
            delta = Z * Z % p
            gamma = Y * Y % p
            beta4 = X * gamma % p << 2
            alpha = 3 * (X - delta) * (X + delta) % p
            X3 = (alpha * alpha - beta4 - beta4) % p
            Z = (Y * Z << 1) % p
            Y = (alpha * (beta4 - X3) - (gamma * gamma << 3)) % p
            X = X3
            until_double = blocks
        until_double -= 1
        offset = luts[step][cols[positions[step]]]
        x2 = points[offset]
        y2 = points[offset + 1]
        # Mixed addition (X, Y, Z) + (x2, y2); hhh and v stay unreduced, X3 is reduced once.
        zz = Z * Z % p
        h = (x2 * zz - X) % p
        r = (y2 * zz % p * Z - Y) % p
        hh = h * h % p
        hhh = h * hh
        v = X * hh
        X3 = (r * r - hhh - v - v + x3_offset) % p
        Y = (r * (v - X3) - Y * hhh) % p
        Z = Z * h % p
        X = X3

    if not Z:
        # An addition met its own operand or its negation, which the formulas above cannot
        # express. Only contrived scalars get here (the tests use some); never a random one.
        return mul(k, G)
    z_inv = inverse(Z, p)
    z_inv2 = z_inv * z_inv % p
    x = X * z_inv2 % p
    y = Y * z_inv2 % p * z_inv % p
    y = (y + flip * (p - y - y)) % p
    # A fault (glitch, flipped table bit) almost surely lands off the curve: refuse to use it.
    if not on_curve(x, y):
        raise RuntimeError("P-256 fault: computed point is not on the curve")
    return x, y
