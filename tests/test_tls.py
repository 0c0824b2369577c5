"""Veeder-Root TLS codec on CPython: the FF1B checksum, exact float <-> integer conversion checked
against rational arithmetic, property tests that valid reports survive encode -> reader -> parse,
and that hostile bytes raise only TLSError."""

import struct
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from known_vectors import TLS_CAPTURED_REPLY, TLS_CHECKSUM_VECTORS, TLS_FLOAT_VECTORS
from meterseal.protocol import tls
from meterseal.protocol.errors import ProtocolError, TLSError


def test_refusal_checksum_is_ff1b():
    # The manual: a console that does not understand a command answers <SOH>9999FF1B<ETX>, FF1B
    # being the checksum of "<SOH>9999": 0x10000 - (0x01 + 4 * 0x39).
    assert tls.checksum(b"\x019999") == 0xFF1B
    assert tls.NOT_UNDERSTOOD == b"\x019999FF1B\x03"
    assert tls.parse_reply(tls.NOT_UNDERSTOOD) == tls.NotUnderstood()


@pytest.mark.parametrize("summed, expected", TLS_CHECKSUM_VECTORS)
def test_checksum_vectors(summed, expected):
    assert tls.checksum(summed) == expected


def test_captured_reply_checksum_covers_soh_through_the_ampersands():
    summed, checksum_text = TLS_CAPTURED_REPLY[:-5], TLS_CAPTURED_REPLY[-5:-1]
    assert summed.endswith(b"&&") and tls.checksum(summed) == int(checksum_text, 16)
    with pytest.raises(TLSError, match="'i101' is not i201 or i202"):
        tls.parse_reply(TLS_CAPTURED_REPLY)  # checksum accepted; function not one of ours


def test_parity_bit_is_cleared_before_summing():
    assert tls.checksum(b"\x81\xb9\xb9\xb9\xb9") == 0xFF1B


def _exact_value(bits):
    return Fraction(struct.unpack(">f", struct.pack(">I", bits))[0])


def _round_half_away(value):
    magnitude = int(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


SCALES = [
    (tls.UNITS_METRIC[0], Fraction(1000), 0),
    (tls.UNITS_METRIC[1], Fraction(1000), 0),
    (tls.UNITS_METRIC[2], Fraction(100), 0),
    (tls.UNITS_US[0], Fraction(3785411784, 1000000), 0),
    (tls.UNITS_US[1], Fraction(25400), 0),
    (tls.UNITS_US[2], Fraction(500, 9), -32),
]


@pytest.mark.parametrize("hex_text, quantity, expected", TLS_FLOAT_VECTORS)
def test_float_vectors(hex_text, quantity, expected):
    assert tls._units_from_bits(int(hex_text, 16), tls.UNITS_METRIC[quantity], "v") == expected


finite_bits = st.integers(0, 0xFFFFFFFF).filter(
    lambda bits: (bits >> 23) & 0xFF <= 127 + 40 and (bits >> 23) & 0xFF != 0xFF
)


@settings(max_examples=500)
@given(finite_bits, st.sampled_from(SCALES))
def test_decoding_is_the_exact_value_rounded_half_away(bits, scale):
    spec, factor, offset = scale
    expected = _round_half_away((_exact_value(bits) + offset) * factor)
    assert tls._units_from_bits(bits, spec, "v") == expected


@settings(max_examples=500)
@given(st.integers(-(10**11), 10**11), st.sampled_from(SCALES))
def test_encoding_picks_the_nearest_single(units, scale):
    spec, factor, offset = scale
    target = Fraction(units) / factor - offset
    bits = tls._bits_from_units(units, spec, "v")
    error = abs(_exact_value(bits) - target)
    for neighbour in (bits - 1, bits + 1):
        if 0 <= neighbour <= 0xFFFFFFFF and (neighbour >> 23) & 0xFF != 0xFF and (
                neighbour >> 31 == bits >> 31):
            assert error <= abs(_exact_value(neighbour) - target)
    # Where the double nearest to the target is exact, struct agrees (no double rounding).
    if Fraction(float(target)) == target:
        assert struct.pack(">f", float(target)) == struct.pack(">I", bits)
    # And back: the units come out within the single's resolution, and re-encode identically.
    decoded = tls._units_from_bits(bits, spec, "v")
    assert tls._bits_from_units(decoded, spec, "v") == bits
    spacing = Fraction(2) ** (((bits >> 23) & 0xFF) - 150) * factor  # in record units
    if spacing < 1:  # e.g. below 16384 L: the single resolves the record unit
        assert decoded == units
    else:
        assert abs(decoded - units) <= spacing / 2 + 1


# --- reports ---------------------------------------------------------------------------------

times = st.tuples(st.integers(2000, 2099), st.integers(1, 12), st.integers(1, 28),
                  st.integers(0, 23), st.integers(0, 59))
volumes = st.one_of(st.none(), st.integers(0, 10**11))
heights = st.one_of(st.none(), st.integers(0, 4 * 10**6))
temperatures = st.one_of(st.none(), st.integers(-5000, 10000))
products = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
extras = st.lists(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)), max_size=3)


@st.composite
def inventory_records(draw):
    fields = {}
    for name, quantity in tls.INVENTORY_FIELDS:
        fields[name] = draw((volumes, heights, temperatures)[quantity])
    return tls.TankInventory(draw(st.integers(1, 99)), draw(products),
                             draw(st.integers(0, 0xFFFF)), draw(extras), **fields)


@st.composite
def deliveries(draw):
    fields = {}
    for name, quantity in tls.DELIVERY_FIELDS:
        fields[name] = draw((volumes, heights, temperatures)[quantity])
    return tls.Delivery(draw(times), draw(times), draw(extras), **fields)


reports = st.one_of(
    st.builds(tls.InventoryReport, st.integers(0, 99), times,
              st.lists(inventory_records(), max_size=4)),
    st.builds(tls.DeliveryReport, st.integers(0, 99), times,
              st.lists(st.builds(tls.TankDeliveries, st.integers(1, 99), products,
                                 st.lists(deliveries(), max_size=3)), max_size=3)),
    st.just(tls.NotUnderstood()),
)


def _records(report):
    if isinstance(report, tls.InventoryReport):
        return [(record, tls.INVENTORY_FIELDS) for record in report.tanks]
    if isinstance(report, tls.DeliveryReport):
        return [(d, tls.DELIVERY_FIELDS) for tank in report.tanks for d in tank.deliveries]
    return []


def _assert_close(decoded, original):
    """Fields equal to within the single's resolution; trailing None fields may vanish."""
    assert type(decoded) is type(original)
    for (got, spec), (sent, _) in zip(_records(decoded), _records(original)):
        for name, quantity in spec:
            value, expected = getattr(got, name), getattr(sent, name)
            if expected is None:
                assert value is None
            else:
                # A single's spacing at this magnitude, in record units, plus the rounding.
                limit = abs(expected) * (1000 if quantity != 2 else 100) // 2**24 + 1
                assert abs(value - expected) <= max(limit, abs(expected) >> 23) + 1, name


@settings(max_examples=300)
@given(reports, st.lists(st.integers(0, 3000), max_size=8), st.binary(max_size=5))
def test_valid_reports_round_trip_through_the_reader(report, cuts, noise):
    assume(b"\x01" not in noise)
    frame = report.encode()
    stream = frame + frame
    reader = tls.ReplyReader()
    received = []
    previous = 0
    for cut in sorted(set(c for c in cuts if c < len(stream))) + [len(stream)]:
        reader.feed(stream[previous:cut])
        previous = cut
        while (got := reader.next_frame()) is not None:
            received.append(got)
    assert received == [frame, frame]
    decoded = tls.parse_reply(frame)
    _assert_close(decoded, report)
    assert decoded.encode() == frame  # a fixed point: what the codec writes, it reads back
    assert tls.parse_reply(decoded.encode()) == decoded


@settings(max_examples=200)
@given(st.sampled_from([tls.INVENTORY, tls.DELIVERY, "I201", "i101"]), st.integers(0, 99),
       st.one_of(st.none(), st.text(products, min_size=6, max_size=6)))
def test_commands_round_trip(function, tank, code):
    command = tls.Command(function, tank, code)
    reader = tls.CommandReader(code)
    reader.feed(command.encode())
    assert reader.next_command() == command and reader.next_command() is None


@settings(max_examples=500)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_garbage_raises_only_tls_error(data, cuts):
    frames = tls.ReplyReader(max_frame_bytes=256)
    commands = tls.CommandReader()
    previous = 0
    for cut in sorted(set(c for c in cuts if c < len(data))) + [len(data)]:
        chunk = data[previous:cut]
        previous = cut
        frames.feed(chunk)
        commands.feed(chunk)
        for next_item in (frames.next_frame, commands.next_command):
            while True:
                try:
                    item = next_item()
                except TLSError:
                    continue
                if item is None:
                    break
                if next_item == frames.next_frame:
                    try:
                        tls.parse_reply(item)
                    except TLSError:
                        pass


@settings(max_examples=200)
@given(reports.filter(lambda r: not isinstance(r, tls.NotUnderstood)), st.data())
def test_damaged_frames_raise_only_tls_error(report, data):
    frame = bytearray(report.encode())
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] = data.draw(st.integers(0, 255).filter(lambda b: b != frame[index]))
    try:
        value = tls.parse_reply(bytes(frame))
    except TLSError:
        return
    # The 16-bit sum misses some swaps that keep the total; they still decode to a report.
    assert isinstance(value, (tls.InventoryReport, tls.DeliveryReport, tls.NotUnderstood))


def test_errors_are_protocol_errors_and_value_errors():
    with pytest.raises(ValueError):
        tls.parse_reply(b"\x01\x03")
    assert issubclass(TLSError, ProtocolError)


@pytest.mark.parametrize(
    "value, fragment",
    [
        (tls.Command("i20", 0), "function must be 4 characters"),
        (tls.Command(tls.INVENTORY, 100), "tank must be"),
        (tls.Command(tls.INVENTORY, 0, "12345"), "security code"),
        (tls.InventoryReport(0, (1999, 1, 1, 0, 0), []), "year"),
        (tls.InventoryReport(0, (2026, 1, 1, 0, 0), [tls.TankInventory(0, "1", 0)]), "tank"),
        (tls.InventoryReport(0, (2026, 1, 1, 0, 0), [tls.TankInventory(1, "\x01", 0)]),
         "product code"),
        (tls.InventoryReport(0, (2026, 1, 1, 0, 0),
                             [tls.TankInventory(1, "1", 0, volume_ml=1.5)]), "integer"),
        (tls.InventoryReport(0, (2026, 1, 1, 0, 0),
                             [tls.TankInventory(1, "1", 0, volume_ml=10**60)]), "single"),
    ],
)
def test_invalid_values_are_refused_when_encoding(value, fragment):
    with pytest.raises(TLSError, match=fragment):
        value.encode()


def test_unknown_field_names_are_a_programming_error():
    with pytest.raises(TypeError, match="volume_l"):
        tls.TankInventory(1, "1", 0, volume_l=5)
