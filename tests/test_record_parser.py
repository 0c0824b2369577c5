"""The host's record parser (meterseal.host.record_parser) gives exactly what the reference,
protocol.records.parse, gives: the same record, keys in the same order, for every valid payload,
and the same RecordError for every other one.

Valid records must take the fast path (cbor2 and the compiled walk), or the equality would say
nothing; payloads that lean on what cbor2 accepts and the deterministic subset does not
(non-shortest heads, indefinite lengths, tags, repeated or unsorted keys, floats, trailing bytes)
must be left to the reference.
"""

import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterseal.host import record_parser
from meterseal.protocol import records
from meterseal.protocol.errors import RecordError

from test_records import (WRONG, EXAMPLE_NAMES, cbor_values, example, places, set_at,
                          valid_records)


def outcome(parse, payload):
    """What a parser makes of a payload, comparable: the record's repr (types and key order
    included) or the refusal."""
    try:
        record = parse(payload)
    except RecordError as exc:
        return ("refused", exc.field, str(exc))
    return ("parsed", repr(record))


def assert_same(payload):
    expected = outcome(records.parse, payload)
    assert outcome(record_parser.parse, payload) == expected
    fast = record_parser._decoded(payload)
    # What the fast path vouches for, the reference parses the same way.
    assert fast is None or ("parsed", repr(fast)) == expected
    return fast


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_kind_and_event_type_takes_the_fast_path(name):
    payload = records.encode(example(name))
    assert assert_same(payload) is not None


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(valid_records())
def test_generated_valid_records_take_the_fast_path_and_parse_the_same(record):
    payload = records.encode(record)
    assert assert_same(payload) is not None


@pytest.mark.parametrize("name,plain,wire,value,suffix", WRONG)
def test_a_wrong_value_is_refused_the_same(name, plain, wire, value, suffix):
    wire_map = records.build(example(name))
    set_at(wire_map, wire, value)
    refusal = outcome(record_parser.parse, cbor2.dumps(wire_map))
    assert refusal[0] == "refused" and refusal == outcome(records.parse, cbor2.dumps(wire_map))


@pytest.mark.parametrize("text", ["", "caf\u00e9", "\u00e9\x01", "\u00e9\x7f", "\u00e9\n",
                                  "\u0085 C1 is no C0", "\u4eba" * 10 + "a" * 3,
                                  "\u4eba" * 10 + "a" * 4, "tab\there", "a" * 33, "a" * 32])
def test_text_is_judged_the_same(text):
    wire_map = records.build(example("fuel.sale"))
    wire_map[11] = text  # software_name: 1..32 UTF-8 bytes, no control character
    assert_same(cbor2.dumps(wire_map))


DEVICES = {
    "fuel.sale": [None, {}, {1: 0x50}, {2: 1}, {3: "SN-1"}, {1: 0x50, 2: 1, 3: "SN-1"},
                  {1: 0x50, 2: 1}, {1: 0x50, 2: 1, 9: 0}, [0x50, 1]],
    "status": [None, {}, {1: 0x50}, {4: 2}],
    "boot": [None, {}, {1: 0x50}, {1: 0x50, 2: 16}, {3: "SN-1"}, {4: 2}, {4: 2, 1: 0x50},
             {5: 1}],
    "pulse_mismatch": [None, {1: 0x50}, {1: 0x50, 2: 1}, {4: 2}],
    "scale.weighing": [None, {3: "SN-1"}, {3: "SN 1"}, {1: 0x50}],
}


@pytest.mark.parametrize("name,device", [(name, device) for name, devices in DEVICES.items()
                                         for device in devices])
def test_device_references_are_judged_the_same(name, device):
    wire_map = records.build(example(name))
    wire_map.pop(14, None)
    if device is not None:
        wire_map = dict(sorted({**wire_map, 14: device}.items()))
    assert_same(cbor2.dumps(wire_map))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLE_NAMES), st.data())
def test_any_value_in_any_field_parses_or_is_refused_the_same(name, data):
    record = example(name)
    wire = records.build(record)
    _, path, _ = data.draw(st.sampled_from(list(places(record))))
    set_at(wire, path, data.draw(cbor_values))
    assert_same(cbor2.dumps(wire, canonical=True))  # maps sorted again: a field may be new


@settings(max_examples=500)
@given(st.sampled_from(EXAMPLE_NAMES), st.integers(0, 10**6), st.integers(1, 255),
       st.sampled_from(["flip", "insert", "delete", "truncate"]))
def test_a_damaged_payload_parses_or_is_refused_the_same(name, where, value, how):
    payload = bytearray(records.encode(example(name)))
    at = where % len(payload)
    if how == "flip":
        payload[at] ^= value
    elif how == "insert":
        payload.insert(at, value)
    elif how == "delete":
        del payload[at]
    else:
        del payload[at:]
    assert_same(bytes(payload))


@settings(max_examples=400)
@given(cbor_values | st.floats() | st.dictionaries(st.integers(0, 20) | st.floats(0, 20),
                                                   cbor_values, max_size=6))
def test_any_cbor2_value_is_refused_the_same(value):
    assert_same(cbor2.dumps(value))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_the_same(payload):
    assert_same(payload)


# --- payloads in the forms cbor2 reads and the deterministic subset refuses ----------------------

def head(major, argument, width=None):
    """An item head with the argument in ``width`` bytes (0: in the initial byte)."""
    if width is None:
        width = next(w for w, limit in ((0, 24), (1, 2**8), (2, 2**16), (4, 2**32), (8, 2**64))
                     if argument < limit)
    if width == 0:
        return bytes([major << 5 | argument])
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + argument.to_bytes(width, "big")


@st.composite
def loose_encoding(draw, value):
    """``value`` (a wire map of a valid record) encoded with choices cbor2 accepts: each item
    may get a longer head, an indefinite length, a tag, keys out of order or repeated."""
    def encode(item):
        out = b""
        if draw(st.integers(0, 30)) == 0:
            out += head(6, draw(st.sampled_from([2, 24, 28, 32, 256, 55799])))
        width = draw(st.sampled_from([None] * 10 + [1, 2, 4, 8]))

        def item_head(major, argument):
            fits = width is not None and argument < 2 ** (8 * width)
            return head(major, argument, width if fits else None)

        if type(item) is bool:
            return out + (b"\xf5" if item else b"\xf4")
        if type(item) is int:
            if draw(st.integers(0, 20)) == 0:  # a bignum for a plain integer
                magnitude = item if item >= 0 else -1 - item
                digits = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "big")
                return out + head(6, 2 if item >= 0 else 3) + head(2, len(digits)) + digits
            return out + (item_head(0, item) if item >= 0 else item_head(1, -1 - item))
        if type(item) in (bytes, str):
            raw, major = (item, 2) if type(item) is bytes else (item.encode(), 3)
            if draw(st.integers(0, 10)) == 0:  # indefinite length, in two chunks
                # A text chunk may not split a character: text goes in one chunk and an empty one.
                cut = draw(st.integers(0, len(raw))) if major == 2 else len(raw)
                return (out + bytes([major << 5 | 31]) + head(major, cut) + raw[:cut]
                        + head(major, len(raw) - cut) + raw[cut:] + b"\xff")
            return out + item_head(major, len(raw)) + raw
        if type(item) is list:
            body = b"".join(encode(element) for element in item)
            if draw(st.integers(0, 10)) == 0:
                return out + b"\x9f" + body + b"\xff"
            return out + item_head(4, len(item)) + body
        pairs = list(item.items())
        if draw(st.integers(0, 10)) == 0:
            pairs = draw(st.permutations(pairs))
        if draw(st.integers(0, 10)) == 0:
            pairs.insert(draw(st.integers(0, len(pairs))), draw(st.sampled_from(pairs)))
        body = b"".join(encode(key) + encode(element) for key, element in pairs)
        if draw(st.integers(0, 10)) == 0:
            return out + b"\xbf" + body + b"\xff"
        return out + item_head(5, len(pairs)) + body

    return encode(value) + draw(st.sampled_from([b"", b"", b"", b"\x00", b"\xf6"]))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLE_NAMES), st.data())
def test_a_loosely_encoded_record_is_left_to_the_reference(name, data):
    wire = records.build(example(name))
    payload = data.draw(loose_encoding(wire))
    fast = assert_same(payload)
    if payload != records.encode(example(name)):
        assert fast is None


def swap_first_pair(payload):
    """A record's payload with its first two keys in the other order."""
    wire = records.build(records.parse(payload))
    keys = list(wire)
    return cbor2.dumps({keys[1]: wire[keys[1]], keys[0]: wire[keys[0]],
                        **{key: wire[key] for key in keys[2:]}})


SALE = records.encode(example("fuel.sale"))
SALE_WIRE = records.build(example("fuel.sale"))

CBOR2_ONLY = {
    "unsorted keys": swap_first_pair(SALE),
    "a repeated key": b"\xb1\x01\x01" + SALE[1:],  # 17 pairs: the version twice
    "non-shortest map head": b"\xb8\x10" + SALE[1:],
    "indefinite map": b"\xbf" + SALE[1:] + b"\xff",
    "trailing byte": SALE + b"\x00",
    "self-described": b"\xd9\xd9\xf7" + SALE,
    "a float key": cbor2.dumps({1.0 if key == 1 else key: value
                                for key, value in SALE_WIRE.items()}),
    "a boolean for the version": cbor2.dumps({**SALE_WIRE, 1: True}),
    "a bignum seq": cbor2.dumps({**SALE_WIRE, 4: cbor2.CBORTag(2, b"\x04\xd2")}),
    "a 64-bit float wall time": SALE.replace(
        b"\x07\x1b" + struct.pack(">Q", SALE_WIRE[7]),
        b"\x07\xfb" + struct.pack(">d", SALE_WIRE[7])),
    "a shareable list": cbor2.dumps({**SALE_WIRE, 16: {
        **SALE_WIRE[16], 15: cbor2.CBORTag(28, SALE_WIRE[16][15])}}),
    "a string reference": cbor2.dumps(SALE_WIRE, string_referencing=True),
    "value sharing": cbor2.dumps(SALE_WIRE, value_sharing=True),
}


@pytest.mark.parametrize("payload", CBOR2_ONLY.values(), ids=CBOR2_ONLY)
def test_what_only_cbor2_reads_is_left_to_the_reference(payload):
    assert payload != SALE
    assert assert_same(payload) is None
    with pytest.raises(RecordError):
        records.parse(payload)


def test_a_payload_over_the_limit_is_left_to_the_reference():
    payload = b"\xa1" + b"\x00" * records.MAX_PAYLOAD_BYTES
    assert assert_same(payload) is None
