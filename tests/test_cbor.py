"""Deterministic CBOR: RFC 8949 Appendix A vectors, cross-checks against cbor2, hostile input.

tests/mpy/cbor_checks.py repeats the vectors and hostile cases on the MicroPython unix port.
"""

import tracemalloc
from array import array

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meterseal.protocol import cbor
from meterseal.protocol.errors import CBORError, ProtocolError

from known_vectors import APPENDIX_A_IN_SUBSET

# Appendix A has no tag 18, the one tag in the subset; RFC 9052 C.2.1 (a COSE_Sign1) does.
RFC9052_C21_SIGN1_HEX = (
    "d28443a10126a10442313154546869732069732074686520636f6e74656e742e5840"
    "8eb33e4ca31d1c465ab05aac34cc6b23d58fef5c083106c4d25a91aef0b0117e"
    "2af9a291aa32e14ab834dc56ed2a223444547e01f11d3b0916e5a4c345cacb36"
)

# RFC 8949 Appendix A, the examples outside the subset, with what the error must name.
APPENDIX_A_OUT_OF_SUBSET = [
    ("c249010000000000000000", "tag 2"),  # bignum 2^64
    ("c349010000000000000000", "tag 3"),  # bignum -2^64-1
    ("f90000", "floating-point"),
    ("f98000", "floating-point"),
    ("f93c00", "floating-point"),
    ("fb3ff199999999999a", "floating-point"),
    ("f93e00", "floating-point"),
    ("f97bff", "floating-point"),
    ("fa47c35000", "floating-point"),
    ("fa7f7fffff", "floating-point"),
    ("fb7e37e43c8800759c", "floating-point"),
    ("f90001", "floating-point"),
    ("f90400", "floating-point"),
    ("f9c400", "floating-point"),
    ("fbc010666666666666", "floating-point"),
    ("f97c00", "floating-point"),
    ("f97e00", "floating-point"),
    ("f9fc00", "floating-point"),
    ("fa7f800000", "floating-point"),
    ("fa7fc00000", "floating-point"),
    ("faff800000", "floating-point"),
    ("fb7ff0000000000000", "floating-point"),
    ("fb7ff8000000000000", "floating-point"),
    ("fbfff0000000000000", "floating-point"),
    ("f7", "simple value 23"),  # undefined
    ("f0", "simple value 16"),
    ("f8ff", "two-byte simple value"),
    ("c074323031332d30332d32315432303a30343a30305a", "tag 0"),
    ("c11a514b67b0", "tag 1"),
    ("c1fb41d452d9ec200000", "tag 1"),
    ("d74401020304", "tag 23"),
    ("d818456449455446", "tag 24"),
    ("d82076687474703a2f2f7777772e6578616d706c652e636f6d", "tag 32"),
    ("5f42010243030405ff", "indefinite-length byte string"),
    ("7f657374726561646d696e67ff", "indefinite-length text string"),
    ("9fff", "indefinite-length array"),
    ("9f018202039f0405ffff", "indefinite-length array"),
    ("9f01820203820405ff", "indefinite-length array"),
    ("83018202039f0405ff", "indefinite-length array"),
    ("83019f0203ff820405", "indefinite-length array"),
    ("9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff", "indefinite-length array"),
    ("bf61610161629f0203ffff", "indefinite-length map"),
    ("826161bf61626163ff", "indefinite-length map"),
    ("bf6346756ef563416d7421ff", "indefinite-length map"),
]

# Shaped like a fuel.sale record: ~20 small integer keys, nested maps, a 32-byte hash, short text.
RECORD = {
    0: 1,
    1: "gw-000123",
    2: 17,
    3: 1234567,
    4: bytes(range(32)),
    5: 8640000,
    6: 1718000000000,
    7: "S",
    8: 2,
    9: 57,
    10: {0: "meterseal-gw", 1: "0.1.0", 2: bytes(32)},
    11: {0: 1, 1: 2},
    12: "fuel.sale",
    15: 40123,
    16: 789,
    17: 31657,
    18: {0: 1718000000000, 1: 1718000095000, 2: 95000},
    19: {0: [123456789, 98765432100], 1: [123496912, 98765463757]},
    20: [310, 420, 455, 460, 458, 459, 461, 460, 300, 120],
    21: None,
    22: True,
}


def _nested_arrays(depth):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


def _typed(value):
    """A comparable form that keeps types apart, so that True never passes for 1."""
    if isinstance(value, dict):
        return ("map", {_typed(key): _typed(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_typed(item) for item in value))
    if isinstance(value, (cbor.Tag, cbor2.CBORTag)):
        return ("tag", value.tag, _typed(value.value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    return (type(value).__name__, value)


def _for_cbor2(value, key_order=None):
    """``value`` rebuilt for cbor2: CBORTag for Tag, each map's keys inserted in ``key_order``."""
    if isinstance(value, dict):
        keys = sorted(value, key=key_order) if key_order else list(value)
        return {key: _for_cbor2(value[key], key_order) for key in keys}
    if isinstance(value, list):
        return [_for_cbor2(item, key_order) for item in value]
    if isinstance(value, cbor.Tag):
        return cbor2.CBORTag(value.tag, _for_cbor2(value.value, key_order))
    return value


def _cbor2_bytewise_reference(value):
    # cbor2 keeps a dict's insertion order when canonical=False, so sorting the keys ourselves
    # by cbor2's own encoding of each key gives the RFC 8949 §4.2.1 order independently of cbor.
    return cbor2.dumps(_for_cbor2(value, key_order=cbor2.dumps))


def _tag_as_cbor_tag(decoder, tag):
    return cbor.Tag(tag.tag, tag.value)


def _depth(value):
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, cbor.Tag):
        return 1 + _depth(value.value)
    return 0


INTEGERS = st.integers(min_value=-(2**64), max_value=2**64 - 1)
# Arguments at the shortest-form boundaries, where encoders and decoders usually slip.
_BOUNDARY_ARGUMENTS = (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1)
BOUNDARY_INTEGERS = st.sampled_from(
    list(_BOUNDARY_ARGUMENTS) + [-1 - n for n in _BOUNDARY_ARGUMENTS]
)
SCALARS = (
    st.none()
    | st.booleans()
    | INTEGERS
    | BOUNDARY_INTEGERS
    | st.binary(max_size=40)
    | st.text(max_size=12)
)
KEYS = INTEGERS | BOUNDARY_INTEGERS | st.integers(-30, 30) | st.text(max_size=6)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(KEYS, children, max_size=6)
        | children.map(lambda item: cbor.Tag(18, item))
    ),
    max_leaves=24,
).filter(lambda value: _depth(value) <= cbor.MAX_DEPTH)


def _assert_rejected(data, fragment):
    with pytest.raises(CBORError) as caught:
        cbor.loads(data)
    assert fragment in str(caught.value)
    return str(caught.value)


# --- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "hex_data"), APPENDIX_A_IN_SUBSET, ids=lambda v: str(v)[:30])
def test_appendix_a_vector_decodes_and_reencodes_byte_for_byte(value, hex_data):
    data = bytes.fromhex(hex_data)
    assert _typed(cbor.loads(data)) == _typed(value)
    assert cbor.dumps(value) == data
    assert cbor.dumps(cbor.loads(data)) == data


@pytest.mark.parametrize(("hex_data", "fragment"), APPENDIX_A_OUT_OF_SUBSET)
def test_appendix_a_vector_outside_the_subset_is_rejected(hex_data, fragment):
    _assert_rejected(bytes.fromhex(hex_data), fragment)


def test_cose_sign1_tag_18_round_trips():
    data = bytes.fromhex(RFC9052_C21_SIGN1_HEX)
    message = cbor.loads(data)
    protected_header = b"\xa1\x01\x26"  # {1: -7}, ES256
    payload = b"This is the content."
    assert message == cbor.Tag(18, [protected_header, {4: b"11"}, payload, data[-64:]])
    assert cbor.dumps(message) == data


def test_map_keys_sort_bytewise_by_encoding_not_length_first():
    value = {"aa": 0, "b": 0, "a": 0, -25: 0, -24: 0, -1: 0, 24: 0, 23: 0, 0: 0}
    # 00 < 17 < 1818 < 20 < 37 < 3818 < 6161 < 6162 < 626161
    expected = "a9" + "0000" + "1700" + "181800" + "2000" + "3700" + "381800"
    expected += "616100" + "616200" + "62616100"
    assert cbor.dumps(value).hex() == expected
    assert cbor.loads(bytes.fromhex(expected)) == value


def test_record_round_trips_from_every_buffer_type():
    data = cbor.dumps(RECORD)
    for buffer in (data, bytearray(data), memoryview(data), memoryview(b"xx" + data)[2:]):
        assert _typed(cbor.loads(buffer)) == _typed(RECORD)


def test_depth_limit_is_exact_both_ways():
    deepest = _nested_arrays(cbor.MAX_DEPTH)
    assert cbor.loads(cbor.dumps(deepest)) == deepest
    with pytest.raises(CBORError, match="MAX_DEPTH"):
        cbor.dumps([deepest])


# --- encoder -----------------------------------------------------------------------------------


def test_encoder_accepts_sequences_and_buffers():
    assert cbor.dumps((1, bytearray(b"ab"), memoryview(b"cd"))).hex() == "8301426162426364"
    # A view's len() counts items; the encoder must count bytes.
    assert cbor.dumps(memoryview(array("H", [1, 2]))) == b"\x44" + array("H", [1, 2]).tobytes()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (1.0, "cannot encode float"),
        ({1, 2}, "cannot encode set"),
        (object(), "cannot encode object"),
        (2**64, "64 bits"),
        (-(2**64) - 1, "64 bits"),
        ("\ud800", "not valid Unicode"),
        ({b"key": 1}, "map key"),
        ({True: 1}, "map key"),
        ({None: 1}, "map key"),
        ({(1, 2): 1}, "map key"),
        (cbor.Tag(2, b"\x01"), "tag 2"),
        ([_nested_arrays(cbor.MAX_DEPTH)], "MAX_DEPTH"),
    ],
)
def test_encoder_rejects_what_is_outside_the_subset(value, fragment):
    with pytest.raises(CBORError, match=fragment):
        cbor.dumps(value)


def test_encoder_rejects_a_self_referential_list_without_recursion_error():
    loop = []
    loop.append(loop)
    with pytest.raises(CBORError, match="MAX_DEPTH"):
        cbor.dumps(loop)


def test_tag_value_semantics():
    assert cbor.Tag(18, [1]) == cbor.Tag(18, [1])
    assert cbor.Tag(18, [1]) != cbor.Tag(18, [2])
    assert cbor.Tag(18, [1]) != cbor.Tag(19, [1])
    assert cbor.Tag(18, 1) != (18, 1)
    assert repr(cbor.Tag(18, [b"x"])) == "Tag(18, [b'x'])"


def test_errors_are_protocol_errors_and_value_errors():
    assert issubclass(CBORError, ProtocolError) and issubclass(CBORError, ValueError)


@pytest.mark.parametrize("data", ["a0", None, 7, [0]], ids=repr)
def test_decoder_rejects_non_buffer_input(data):
    with pytest.raises(CBORError, match="expected bytes-like"):
        cbor.loads(data)


# --- hostile input, one class per test -----------------------------------------------------------


@pytest.mark.parametrize(
    "value", [RECORD, 2**64 - 1, "\u6c34", [b"abc", {"k": -300}], cbor.Tag(18, [1])], ids=repr
)
def test_truncation_at_every_point(value):
    data = cbor.dumps(value)
    for cut in range(len(data)):
        _assert_rejected(data[:cut], "truncated input")


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("5fff", "indefinite-length byte string at offset 0"),
        ("7fff", "indefinite-length text string at offset 0"),
        ("9fff", "indefinite-length array at offset 0"),
        ("bfff", "indefinite-length map at offset 0"),
        ("8201 9fff", "indefinite-length array at offset 2"),
        ("1f", "unsigned integer with additional info 31"),
        ("3f", "negative integer with additional info 31"),
        ("df00", "tag with additional info 31"),
        ("ff", "break stop code"),
    ],
)
def test_indefinite_lengths_are_rejected(hex_data, fragment):
    _assert_rejected(bytes.fromhex(hex_data), fragment)


@pytest.mark.parametrize("major", range(8))
@pytest.mark.parametrize("info", [28, 29, 30])
def test_reserved_additional_info_is_rejected(major, info):
    _assert_rejected(bytes([major << 5 | info]) + bytes(9), "reserved additional info %d" % info)


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("1817", "argument 23 at offset 0"),
        ("1800", "argument 0 at offset 0"),
        ("1900ff", "argument 255 at offset 0"),
        ("1a0000ffff", "argument 65535 at offset 0"),
        ("1b00000000ffffffff", "argument 4294967295 at offset 0"),
        ("3817", "argument 23"),
        ("390000", "argument 0"),
        ("58016a", "argument 1"),
        ("79000161", "argument 1"),
        ("980100", "argument 1"),
        ("b8010000", "argument 1"),
        ("d81280", "argument 18"),
        ("82 00 1b0000000000000001", "at offset 2"),
    ],
)
def test_non_shortest_forms_are_rejected(hex_data, fragment):
    message = _assert_rejected(bytes.fromhex(hex_data), "non-shortest encoding")
    assert fragment in message


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("a2 01 00 01 00", "duplicate key 1"),
        ("a2 20 00 20 00", "duplicate key -1"),
        ("a2 6161 00 6161 00", "duplicate key 'a'"),
        ("a3 01 00 6161 00 01 00", "duplicate key 1"),
        ("82 00 a2 1bffffffffffffffff 00 1bffffffffffffffff 00", "map at offset 2"),
    ],
)
def test_duplicate_map_keys_are_rejected(hex_data, fragment):
    message = _assert_rejected(bytes.fromhex(hex_data), "duplicate key")
    assert fragment in message


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("a2 02 00 01 00", "key 1 is out of order"),
        ("a2 21 00 20 00", "key -1 is out of order"),
        ("a2 20 00 01 00", "key 1 is out of order"),
        ("a2 6162 00 6161 00", "key 'a' is out of order"),
        ("a2 6161 00 01 00", "key 1 is out of order"),
        # RFC 7049 "length first" canonical order, which cbor2's canonical=True uses: -1 before
        # 100 and "b" before "aa". RFC 8949 deterministic order is bytewise: 1864 < 20.
        ("a2 20 00 1864 00", "key 100 is out of order"),
        ("a2 626161 00 6162 00", "key 'b' is out of order"),
    ],
)
def test_unsorted_map_keys_are_rejected(hex_data, fragment):
    message = _assert_rejected(bytes.fromhex(hex_data), "out of order")
    assert fragment in message


@pytest.mark.parametrize(
    "hex_data",
    [
        "81" * (cbor.MAX_DEPTH + 1) + "00",
        "a100" * (cbor.MAX_DEPTH + 1) + "00",
        "d2" * (cbor.MAX_DEPTH + 1) + "00",
        "81" * 100000,
    ],
    ids=["arrays", "maps", "tags", "100000-arrays"],
)
def test_excessive_nesting_is_rejected(hex_data):
    _assert_rejected(bytes.fromhex(hex_data), "deeper than MAX_DEPTH=%d" % cbor.MAX_DEPTH)


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("5b8000000000000000", "byte string content at offset 9: 9223372036854775808 bytes needed"),
        ("7bffffffffffffffff00", "text string content at offset 9:"),
        ("9b0000000100000000", "array of 4294967296 entries at offset 0"),
        ("9affffffff0000", "array of 4294967295 entries"),
        ("bbffffffffffffffff", "map of 18446744073709551615 entries"),
        ("ba80000000" + "00" * 40, "map of 2147483648 entries"),
        ("4401020304"[:-2], "byte string content"),
        ("1a000f42", "item head at offset 0: 5 bytes needed, 4 left"),
        ("8301 8102", "item at offset 4: 1 bytes needed, 0 left"),
        ("", "item at offset 0"),
    ],
)
def test_lengths_beyond_the_input_fail_before_allocating(hex_data, fragment):
    data = bytes.fromhex(hex_data)
    tracemalloc.start()
    try:
        message = _assert_rejected(data, "truncated input")
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fragment in message
    assert peak_bytes < 64 * 1024


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("0000", "trailing bytes after the top-level item: 1 at offset 1"),
        ("a0 ff", "at offset 1"),
        ("8101 010203", "item: 3 at offset 2"),
    ],
)
def test_trailing_bytes_are_rejected(hex_data, fragment):
    message = _assert_rejected(bytes.fromhex(hex_data), "trailing bytes")
    assert fragment in message


INVALID_UTF8 = [
    "80",  # stray continuation byte
    "c3",  # sequence cut short
    "c328",  # bad continuation
    "c080",  # overlong NUL
    "c1bf",  # overlong
    "e08080",  # overlong 3-byte
    "eda080",  # UTF-16 surrogate
    "edbfbf",  # UTF-16 surrogate
    "f08f8080",  # overlong 4-byte
    "f4908080",  # past U+10FFFF
    "f5808080",  # lead byte past U+10FFFF
    "ff",
    "f8888080 80",  # 5-byte form
]


@pytest.mark.parametrize("lax_platform_decoder", [False, True], ids=["cpython", "micropython-path"])
@pytest.mark.parametrize("hex_text", INVALID_UTF8)
def test_invalid_utf8_is_rejected(hex_text, lax_platform_decoder, monkeypatch):
    # The micropython-path case runs the strict validator MicroPython relies on; the same cases
    # run under the real interpreter in tests/mpy/cbor_checks.py.
    monkeypatch.setattr(cbor, "_LAX_UTF8", lax_platform_decoder)
    raw = bytes.fromhex(hex_text)
    data = bytes([0x82, 0x00, 0x60 | len(raw)]) + raw
    _assert_rejected(data, "invalid UTF-8 in text string at offset 2")


@pytest.mark.parametrize(
    ("hex_data", "fragment"),
    [
        ("a1 40 00", "key 0 is a bytes"),
        ("a1 80 00", "key 0 is a list"),
        ("a1 a0 00", "key 0 is a dict"),
        ("a1 f4 00", "key 0 is a bool"),
        ("a1 f6 00", "key 0 is a NoneType"),
        ("a1 d280 00", "key 0 is a Tag"),
        ("a2 00 00 4100 00", "key 1 is a bytes"),
        ("82 00 a1 40 00", "map at offset 2"),
    ],
)
def test_map_keys_other_than_integers_and_text_are_rejected(hex_data, fragment):
    message = _assert_rejected(bytes.fromhex(hex_data), "not an integer or text string")
    assert fragment in message


# --- properties, cross-checked against cbor2 -----------------------------------------------------


@given(VALUES)
@settings(max_examples=400)
def test_round_trip(value):
    assert _typed(cbor.loads(cbor.dumps(value))) == _typed(value)


@given(VALUES)
@settings(max_examples=400)
def test_cbor2_decodes_our_encoding(value):
    decoded = cbor2.loads(cbor.dumps(value), tag_hook=_tag_as_cbor_tag)
    assert _typed(decoded) == _typed(value)


@given(VALUES)
@settings(max_examples=400)
@example({100: 0, -1: 0, "b": 0, "aa": 0})
def test_encoding_equals_cbor2_with_bytewise_sorted_keys(value):
    assert cbor.dumps(value) == _cbor2_bytewise_reference(value)


@given(VALUES)
@settings(max_examples=400)
@example({100: 0, -1: 0})
@example({"b": 0, "aa": 0})
def test_cbor2_canonical_output_is_accepted_when_its_key_order_agrees(value):
    # cbor2 5.x canonical=True sorts map keys length-first (RFC 7049 §3.9). Where that differs
    # from bytewise order, the decoder must refuse it; everywhere else it must accept it.
    canonical = cbor2.dumps(_for_cbor2(value), canonical=True)
    if canonical == cbor.dumps(value):
        assert _typed(cbor.loads(canonical)) == _typed(value)
    else:
        _assert_rejected(canonical, "out of order")


def _only_cbor_error_or_the_deterministic_encoding(data):
    try:
        value = cbor.loads(data)
    except CBORError:
        return
    # Whatever is accepted is the one deterministic encoding of its value.
    assert cbor.dumps(value) == bytes(data)


@given(st.binary(max_size=80))
@settings(max_examples=3000)
def test_arbitrary_bytes_decode_or_raise_cbor_error(data):
    _only_cbor_error_or_the_deterministic_encoding(data)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete"]), st.integers(0, 2**16), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


@given(VALUES, MUTATIONS)
@settings(max_examples=1500)
def test_mutated_encodings_decode_or_raise_cbor_error(value, mutations):
    data = bytearray(cbor.dumps(value))
    for kind, position, byte in mutations:
        position %= len(data) + 1
        if kind == "insert":
            data.insert(position, byte)
        elif position < len(data):
            if kind == "set":
                data[position] = byte
            else:
                del data[position]
    _only_cbor_error_or_the_deterministic_encoding(bytes(data))


# Bytes at the edges of RFC 3629's ranges, so short random strings hit every rule.
UTF8_BOUNDARY_BYTES = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF]
UTF8_BOUNDARY_BYTES += [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]


@given(
    st.binary(max_size=16)
    | st.text(max_size=8).map(str.encode)
    | st.lists(st.sampled_from(UTF8_BOUNDARY_BYTES), max_size=8).map(bytes)
)
@settings(max_examples=3000)
def test_strict_utf8_check_matches_cpython(raw):
    # MicroPython's decoder is lax, so there the module's own check is what stands between
    # hostile bytes and a str; it must agree with CPython's strict decoder exactly.
    try:
        raw.decode("utf-8")
        cpython_accepts = True
    except UnicodeDecodeError:
        cpython_accepts = False
    assert cbor._is_strict_utf8(raw) == cpython_accepts
