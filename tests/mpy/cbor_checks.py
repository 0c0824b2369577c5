# Deterministic CBOR on both interpreters: RFC 8949 Appendix A vectors in the subset, round trips,
# and one case per class of hostile input. Plain asserts, so it runs on MicroPython unchanged.
# heapsize: 192K

from binascii import hexlify, unhexlify

from known_vectors import APPENDIX_A_IN_SUBSET
from meterseal.protocol import cbor
from meterseal.protocol.errors import CBORError


def rejects(hex_data, fragment):
    try:
        value = cbor.loads(unhexlify(hex_data))
    except CBORError as error:
        assert fragment in str(error), (hex_data, str(error))
        return
    raise AssertionError("accepted %s as %r" % (hex_data, value))


def dumps_rejects(value, fragment):
    try:
        data = cbor.dumps(value)
    except CBORError as error:
        assert fragment in str(error), (value, str(error))
        return
    raise AssertionError("encoded %r as %s" % (value, hexlify(data)))


# RFC 8949 Appendix A, the examples inside the subset: decode, then re-encode byte for byte.
for value, hex_data in APPENDIX_A_IN_SUBSET:
    data = unhexlify(hex_data)
    assert cbor.loads(data) == value, hex_data
    assert cbor.dumps(value) == data, hex_data

# RFC 9052 C.2.1, a COSE_Sign1 message: tag 18 is the one tag in the subset.
COSE_SIGN1 = (
    "d28443a10126a10442313154546869732069732074686520636f6e74656e742e5840"
    "8eb33e4ca31d1c465ab05aac34cc6b23d58fef5c083106c4d25a91aef0b0117e"
    "2af9a291aa32e14ab834dc56ed2a223444547e01f11d3b0916e5a4c345cacb36"
)
message = cbor.loads(unhexlify(COSE_SIGN1))
assert message.tag == 18 and message.value[1] == {4: b"11"}, message
assert message.value[2] == b"This is the content."
assert cbor.dumps(message) == unhexlify(COSE_SIGN1)

# Appendix A examples outside the subset: floats, undefined, other simple values, other tags
# (bignums, dates, URIs) and indefinite lengths.
for hex_data, fragment in (
    ("f90000", "floating-point"),
    ("f93c00", "floating-point"),
    ("fa47c35000", "floating-point"),
    ("fb3ff199999999999a", "floating-point"),
    ("f97e00", "floating-point"),
    ("f7", "simple value 23"),
    ("f0", "simple value 16"),
    ("f8ff", "two-byte simple value"),
    ("c249010000000000000000", "tag 2"),
    ("c349010000000000000000", "tag 3"),
    ("c074323031332d30332d32315432303a30343a30305a", "tag 0"),
    ("c11a514b67b0", "tag 1"),
    ("d74401020304", "tag 23"),
    ("d818456449455446", "tag 24"),
    ("5f42010243030405ff", "indefinite-length byte string"),
    ("7f657374726561646d696e67ff", "indefinite-length text string"),
    ("9fff", "indefinite-length array"),
    ("9f018202039f0405ffff", "indefinite-length array"),
    ("83018202039f0405ff", "indefinite-length array"),
    ("bf61610161629f0203ffff", "indefinite-length map"),
    ("bf6346756ef563416d7421ff", "indefinite-length map"),
):
    rejects(hex_data, fragment)

# Round trips, including the kind of map a record is, and every accepted input type.
record = {
    0: 1,
    1: "gw-000123",
    3: 1234567,
    4: bytes(range(32)),
    6: 1718000000000,
    10: {0: "meterseal-gw", 1: "0.1.0"},
    18: [310, 420, -5, None, True, False],
    -1: "negative keys sort after unsigned ones",
    "kind": "fuel.sale",
}
data = cbor.dumps(record)
assert cbor.loads(data) == record
assert cbor.loads(bytearray(data)) == record
assert cbor.loads(memoryview(data)) == record
assert cbor.loads(memoryview(b"\x00" + data)[1:]) == record
assert cbor.dumps((1, bytearray(b"ab"), memoryview(b"cd"))) == unhexlify("8301426162426364")
assert cbor.dumps(cbor.Tag(18, [])) == unhexlify("d280")
assert cbor.Tag(18, [1]) == cbor.Tag(18, [1]) and cbor.Tag(18, [1]) != cbor.Tag(18, [2])
assert repr(cbor.Tag(18, 1)) == "Tag(18, 1)"
# Keys sort by encoded bytes, not by length first: 100 (1864) before -1 (20) before "a" (6161).
assert cbor.dumps({"a": 0, -1: 0, 100: 0}) == unhexlify("a31864002000616100")

nested = 0
for _ in range(cbor.MAX_DEPTH):
    nested = [nested]
assert cbor.loads(cbor.dumps(nested)) == nested

# Hostile input, one class at a time; each must be CBORError and never anything else.
for cut in range(len(data)):
    rejects(hexlify(data[:cut]), "truncated")
for hex_data, fragment in (
    # reserved additional info 28..30
    ("1c", "reserved additional info 28"),
    ("3d", "reserved additional info 29"),
    ("5e", "reserved additional info 30"),
    ("fc", "reserved additional info 28"),
    # indefinite lengths and a stray break
    ("5fff", "indefinite-length"),
    ("bfff", "indefinite-length"),
    ("1f", "additional info 31"),
    ("ff", "break"),
    # non-shortest forms, in integers, lengths and the tag number
    ("1817", "non-shortest"),
    ("1900ff", "non-shortest"),
    ("1a0000ffff", "non-shortest"),
    ("1b00000000ffffffff", "non-shortest"),
    ("3800", "non-shortest"),
    ("580100", "non-shortest"),
    ("780161", "non-shortest"),
    ("980100", "non-shortest"),
    ("b8010000", "non-shortest"),
    ("d81280", "non-shortest"),
    # duplicate and unsorted map keys
    ("a201000100", "duplicate"),
    ("a2616100616100", "duplicate"),
    ("a202000100", "out of order"),
    ("a2616200616100", "out of order"),
    ("a22000186400", "out of order"),
    ("a26161000100", "out of order"),
    ("a262000000616100", "out of order"),
    # nesting beyond MAX_DEPTH
    ("81" * (cbor.MAX_DEPTH + 1) + "00", "MAX_DEPTH"),
    ("d2" * (cbor.MAX_DEPTH + 1) + "00", "MAX_DEPTH"),
    # lengths beyond the input, refused before allocating
    ("5b8000000000000000", "truncated"),
    ("7b7fffffffffffffff", "truncated"),
    ("9b0000000100000000", "truncated"),
    ("9affffffff00", "truncated"),
    ("bb000000010000000000", "truncated"),
    ("4401", "truncated"),
    ("1a0001", "truncated"),
    ("", "truncated"),
    # trailing bytes after the top-level item
    ("0000", "trailing"),
    ("a000", "trailing"),
    # invalid UTF-8: stray continuation, cut sequence, overlong, surrogate, past U+10FFFF
    ("6180", "UTF-8"),
    ("61c3", "UTF-8"),
    ("62c080", "UTF-8"),
    ("63e08080", "UTF-8"),
    ("63eda080", "UTF-8"),
    ("64f4908080", "UTF-8"),
    ("61ff", "UTF-8"),
    # map keys that are neither integers nor text
    ("a14000", "not an integer or text string"),
    ("a18000", "not an integer or text string"),
    ("a1a000", "not an integer or text string"),
    ("a1f400", "not an integer or text string"),
    ("a1f600", "not an integer or text string"),
    ("a1d20000", "not an integer or text string"),
):
    rejects(hex_data, fragment)

for value, fragment in (
    (1.5, "cannot encode float"),
    ({1, 2}, "cannot encode set"),
    (18446744073709551616, "64 bits"),
    (-18446744073709551617, "64 bits"),
    ({b"k": 1}, "map key"),
    ({True: 1}, "map key"),
    ({(1,): 1}, "map key"),
    (cbor.Tag(2, b"\x01"), "tag 2"),
    ([nested], "MAX_DEPTH"),
):
    dumps_rejects(value, fragment)

print("PASS cbor_checks")
