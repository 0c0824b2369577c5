"""Deterministic CBOR (RFC 8949 §4.2.1), restricted to the subset meterseal records use.

An item is an initial byte, an optional argument, then its content:

    [ major type: 3 bits | additional info: 5 bits ] [ argument: 0/1/2/4/8 bytes ] [ content ]

    info 0..23   the argument itself, no argument bytes
    info 24..27  the argument in the next 1, 2, 4 or 8 bytes, big-endian
    info 28..31  refused: reserved, or an indefinite length

    major 0  unsigned integer  value = argument (0 .. 2^64-1)
    major 1  negative integer  value = -1 - argument (-1 .. -2^64)
    major 2  byte string       argument bytes follow
    major 3  text string       argument bytes of UTF-8 follow
    major 4  array             argument items follow
    major 5  map               argument key/value pairs follow; keys are integers or text
    major 6  tag               only 18 (COSE_Sign1), then one item
    major 7  simple            only false (0xf4), true (0xf5) and null (0xf6)

One value has exactly one encoding: shortest arguments, definite lengths, map keys sorted bytewise
by their encoded form and never repeated. The decoder accepts nothing else. Whatever bytes it is
given, it either returns a value or raises CBORError naming the offset of the fault, and it checks
every claimed length against the input left before allocating anything for it.
"""

import struct

from meterseal.protocol.errors import CBORError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


# Containers (arrays, maps, tags) nested deeper than this are refused, both ways: it bounds the
# recursion a hostile message can force on the host and on a small device stack. A COSE_Sign1
# envelope nests 3 deep and a record payload (decoded on its own) about 3.
MAX_DEPTH = const(16)

_MAX_ARGUMENT = const(0xFFFFFFFFFFFFFFFF)
_COSE_SIGN1_TAG = const(18)

_UNSIGNED = const(0)
_NEGATIVE = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)

_FALSE = const(20)
_TRUE = const(21)
_NULL = const(22)

_INFO_ONE_BYTE = const(24)
_INFO_INDEFINITE = const(31)

# Width in bytes of the argument after each initial byte: 0 when the additional info is the
# argument itself, 1, 2, 4 or 8 for info 24..27, and _NOT_ALLOWED for what the subset refuses
# (reserved info, indefinite lengths, two-byte simple values and floats).
_NOT_ALLOWED = const(0xFF)


def _argument_widths():
    widths = bytearray(256)
    for initial in range(256):
        info = initial & 0x1F
        if info >= _INFO_ONE_BYTE:
            allowed = info < 28 and initial >> 5 != _SIMPLE
            widths[initial] = 1 << (info - _INFO_ONE_BYTE) if allowed else _NOT_ALLOWED
    return bytes(widths)


_ARGUMENT_WIDTHS = _argument_widths()

# Indexed by argument width: the smallest argument that needs it; a smaller one has a shorter
# form, so its encoding is not deterministic.
_SHORTEST_MINIMUMS = (0, 24, 0x100, 0, 0x10000, 0, 0, 0, 0x100000000)

_MAJOR_NAMES = (
    "unsigned integer",
    "negative integer",
    "byte string",
    "text string",
    "array",
    "map",
    "tag",
    "simple value",
)


class Tag:
    """A tagged item. Only tag 18 (COSE_Sign1) encodes or decodes."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Tag(%r, %r)" % (self.tag, self.value)


# RFC 3629 §4: lead byte range, continuation byte count, allowed range of the first continuation
# byte. The narrowed ranges exclude overlong forms, UTF-16 surrogates and code points past U+10FFFF.
_UTF8_SEQUENCES = (
    (0xC2, 0xDF, 1, 0x80, 0xBF),
    (0xE0, 0xE0, 2, 0xA0, 0xBF),
    (0xE1, 0xEC, 2, 0x80, 0xBF),
    (0xED, 0xED, 2, 0x80, 0x9F),
    (0xEE, 0xEF, 2, 0x80, 0xBF),
    (0xF0, 0xF0, 3, 0x90, 0xBF),
    (0xF1, 0xF3, 3, 0x80, 0xBF),
    (0xF4, 0xF4, 3, 0x80, 0x8F),
)


def _is_strict_utf8(raw):
    length = len(raw)
    i = 0
    while i < length:
        lead = raw[i]
        if lead < 0x80:
            i += 1
            continue
        for lead_low, lead_high, continuations, first_low, first_high in _UTF8_SEQUENCES:
            if lead_low <= lead <= lead_high:
                break
        else:
            return False
        if i + continuations >= length or not first_low <= raw[i + 1] <= first_high:
            return False
        for k in range(i + 2, i + 1 + continuations):
            if not 0x80 <= raw[k] <= 0xBF:
                return False
        i += 1 + continuations
    return True


def _decoder_accepts(raw):
    try:
        raw.decode("utf-8")
        return True
    except UnicodeError:
        return False


# MicroPython's UTF-8 decoder lets overlong forms, surrogates and code points past U+10FFFF
# through; where it does, every text string is checked with _is_strict_utf8 as well.
_LAX_UTF8 = (
    _decoder_accepts(b"\xc0\x80")
    or _decoder_accepts(b"\xed\xa0\x80")
    or _decoder_accepts(b"\xf4\x90\x80\x80")
)


# ---------------------------------------------------------------------------------------------
# Encoding


def dumps(obj):
    """Encode ``obj`` deterministically; raise CBORError for anything outside the subset."""
    out = bytearray()
    _encode(obj, out, 0)
    return bytes(out)


def _write_head(out, major, argument):
    initial = major << 5
    if argument < _INFO_ONE_BYTE:
        out.append(initial | argument)
    elif argument < 0x100:
        out.append(initial | _INFO_ONE_BYTE)
        out.append(argument)
    elif argument < 0x10000:
        out.append(initial | 25)
        out.extend(struct.pack(">H", argument))
    elif argument < 0x100000000:
        out.append(initial | 26)
        out.extend(struct.pack(">I", argument))
    elif argument <= _MAX_ARGUMENT:
        out.append(initial | 27)
        out.extend(struct.pack(">Q", argument))
    else:
        raise CBORError("%s argument %d does not fit in 64 bits" % (_MAJOR_NAMES[major], argument))


def _encode_text(text):
    try:
        raw = text.encode("utf-8")
    except UnicodeError:
        raw = None
    if raw is None or (_LAX_UTF8 and not _is_strict_utf8(raw)):
        raise CBORError("text %r is not valid Unicode (lone surrogate?)" % (text,))
    return raw


def _encoded_map_key(key):
    # bool is excluded explicitly: on CPython it is an int subclass.
    if key is True or key is False or not isinstance(key, (int, str)):
        raise CBORError("map key %r must be an integer or text string" % (key,))
    out = bytearray()
    _encode(key, out, 0)
    return bytes(out)


def _first(pair):
    return pair[0]


def _encode(obj, out, depth):
    # Identity checks come before isinstance(int): bool is an int subclass on CPython.
    if obj is None:
        out.append(0xF6)
    elif obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif isinstance(obj, int):
        if obj >= 0:
            _write_head(out, _UNSIGNED, obj)
        else:
            _write_head(out, _NEGATIVE, -1 - obj)
    elif isinstance(obj, str):
        raw = _encode_text(obj)
        _write_head(out, _TEXT, len(raw))
        out.extend(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        if isinstance(obj, memoryview):
            obj = bytes(obj)  # len() of a CPython view counts items, not bytes
        _write_head(out, _BYTES, len(obj))
        out.extend(obj)
    elif depth >= MAX_DEPTH:
        raise CBORError("nesting deeper than MAX_DEPTH=%d" % MAX_DEPTH)
    elif isinstance(obj, (list, tuple)):
        _write_head(out, _ARRAY, len(obj))
        for item in obj:
            _encode(item, out, depth + 1)
    elif isinstance(obj, dict):
        pairs = [(_encoded_map_key(key), value) for key, value in obj.items()]
        pairs.sort(key=_first)
        _write_head(out, _MAP, len(pairs))
        for encoded_key, value in pairs:
            out.extend(encoded_key)
            _encode(value, out, depth + 1)
    elif isinstance(obj, Tag):
        if obj.tag != _COSE_SIGN1_TAG:
            raise CBORError("tag %r is outside the subset (only 18, COSE_Sign1)" % (obj.tag,))
        out.append(0xC0 | _COSE_SIGN1_TAG)
        _encode(obj.value, out, depth + 1)
    else:
        raise CBORError("cannot encode %s: not in the CBOR subset" % type(obj).__name__)


# ---------------------------------------------------------------------------------------------
# Decoding


def loads(data):
    """Decode exactly one item filling ``data`` (bytes, bytearray or memoryview)."""
    if isinstance(data, bytes):
        view = data
    elif isinstance(data, (bytearray, memoryview)):
        view = memoryview(data)  # slices below then share its buffer instead of copying
    else:
        raise CBORError("cannot decode %s: expected bytes-like data" % type(data).__name__)
    end = len(view)
    items, pos = _decode_items(view, 0, end, 1, 0)
    if pos != end:
        left = end - pos
        raise CBORError("trailing bytes after the top-level item: %d at offset %d" % (left, pos))
    return items[0]


def _truncated(what, start, needed, left):
    return CBORError(
        "truncated input: %s at offset %d: %d bytes needed, %d left" % (what, start, needed, left)
    )


def _bad_info(major, info, start):
    if major == _SIMPLE:
        if info == _INFO_INDEFINITE:
            what = "break stop code"
        elif info >= 28:
            what = "reserved additional info %d" % info
        elif info >= 25:
            what = "floating-point value"
        else:
            what = "two-byte simple value"
    elif info == _INFO_INDEFINITE:
        if _BYTES <= major <= _MAP:
            what = "indefinite-length %s" % _MAJOR_NAMES[major]
        else:
            what = "%s with additional info 31" % _MAJOR_NAMES[major]
    else:
        what = "reserved additional info %d" % info
    return CBORError("%s at offset %d is not allowed" % (what, start))


def _decode_items(data, pos, end, count, depth):
    """Decode ``count`` consecutive items from ``pos``; return (list of values, offset after them).

    Scalars are decoded in this loop and only containers recurse (``depth`` is how many enclose
    these items): a function call per scalar would double the cost of decoding a record.
    """
    items = []
    append = items.append
    for _ in range(count):
        if pos >= end:
            raise _truncated("item", pos, 1, 0)
        initial = data[pos]
        if initial < _INFO_ONE_BYTE:  # an unsigned integer 0..23: most keys and many values
            append(initial)
            pos += 1
            continue
        start = pos
        pos += 1
        width = _ARGUMENT_WIDTHS[initial]
        if width == 0:
            argument = initial & 0x1F
        else:
            if width == _NOT_ALLOWED:
                raise _bad_info(initial >> 5, initial & 0x1F, start)
            if pos + width > end:
                raise _truncated("item head", start, 1 + width, end - start)
            if width == 1:
                argument = data[pos]
            elif width == 2:
                argument = data[pos] << 8 | data[pos + 1]
            else:
                argument = struct.unpack_from(">I" if width == 4 else ">Q", data, pos)[0]
            if argument < _SHORTEST_MINIMUMS[width]:
                raise CBORError(
                    "non-shortest encoding of argument %d at offset %d" % (argument, start)
                )
            pos += width
        major = initial >> 5

        if major == _UNSIGNED:
            append(argument)
        elif major == _NEGATIVE:
            append(-1 - argument)
        elif major == _BYTES or major == _TEXT:
            # Checked before slicing, so a claimed 2^63-byte string costs nothing.
            if argument > end - pos:
                raise _truncated(_MAJOR_NAMES[major] + " content", pos, argument, end - pos)
            raw = data[pos : pos + argument]
            pos += argument
            if major == _BYTES:
                append(bytes(raw))
            else:
                append(_decode_text(raw, start))
        elif major == _SIMPLE:
            if argument == _FALSE:
                append(False)
            elif argument == _TRUE:
                append(True)
            elif argument == _NULL:
                append(None)
            else:
                raise CBORError("simple value %d at offset %d is not allowed" % (argument, start))
        elif depth >= MAX_DEPTH:
            raise CBORError("nesting deeper than MAX_DEPTH=%d at offset %d" % (MAX_DEPTH, start))
        elif major == _TAG:
            if argument != _COSE_SIGN1_TAG:
                raise CBORError(
                    "tag %d at offset %d is not allowed (only 18, COSE_Sign1)" % (argument, start)
                )
            content, pos = _decode_items(data, pos, end, 1, depth + 1)
            append(Tag(_COSE_SIGN1_TAG, content[0]))
        else:
            # An array item takes at least one byte and a map pair two: a count the remaining
            # input cannot hold is refused before anything is allocated for it.
            size = argument if major == _ARRAY else argument << 1
            if size > end - pos:
                raise _truncated(
                    "%s of %d entries" % (_MAJOR_NAMES[major], argument), start, size, end - pos
                )
            content, pos = _decode_items(data, pos, end, size, depth + 1)
            append(content if major == _ARRAY else _pairs_to_map(content, start))
    return items, pos


def _decode_text(raw, start):
    try:
        text = str(raw, "utf-8")
    except UnicodeError:
        text = None
    if text is None or (_LAX_UTF8 and not _is_strict_utf8(raw)):
        raise CBORError("invalid UTF-8 in text string at offset %d" % start)
    return text


def _pairs_to_map(keys_and_values, start):
    result = {}
    previous_key = -1
    for index in range(0, len(keys_and_values), 2):
        key = keys_and_values[index]
        # Fast path for record maps: ascending non-negative integer keys, whose encodings sort
        # bytewise as the integers do. Anything else goes to the full check, which names the
        # problem or accepts the map (negative or text keys).
        if type(key) is not int or key <= previous_key:
            keys = keys_and_values[0::2]
            _check_keys(keys, start)
            return dict(zip(keys, keys_and_values[1::2]))
        previous_key = key
        result[key] = keys_and_values[index + 1]
    return result


def _check_keys(keys, start):
    # Deterministic integer keys sort bytewise as unsigned ascending, then negative by magnitude,
    # which is the order of this rank: 0..2^64-1 unsigned, 2^64..2^65-1 negative. Text keys sort
    # after every integer, by UTF-8 length, then by content; str comparison orders code points as
    # UTF-8 orders bytes.
    previous_rank = -1
    previous_text = None
    for index, key in enumerate(keys):
        if type(key) is int:
            rank = key if key >= 0 else _MAX_ARGUMENT - key
            duplicate = rank == previous_rank
            in_order = rank > previous_rank and previous_text is None
            previous_rank = rank
        elif type(key) is str:
            text_rank = (len(key.encode("utf-8")), key)
            duplicate = text_rank == previous_text
            in_order = previous_text is None or text_rank > previous_text
            previous_text = text_rank
        else:
            raise CBORError(
                "map at offset %d: key %d is a %s, not an integer or text string"
                % (start, index, type(key).__name__)
            )
        if duplicate:
            raise CBORError("map at offset %d: duplicate key %r" % (start, key))
        if not in_order:
            raise CBORError(
                "map at offset %d: key %r is out of order (keys sort bytewise by their encoding)"
                % (start, key)
            )
