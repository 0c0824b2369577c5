"""MT-SICS codec on CPython: documented vectors, property tests that every valid command and reply
survives encode -> line reader -> parse, and that hostile bytes raise only MTSICSError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from known_vectors import MTSICS_SALE_VECTOR, MTSICS_WEIGHT_VECTORS
from meterseal.protocol import mtsics
from meterseal.protocol.errors import MTSICSError, ProtocolError

_UNIT_MG = {"mg": 1, "g": 1000, "kg": 1000000}
_MAX_DECIMALS = {"mg": 0, "g": 3, "kg": 6}


@st.composite
def weights(draw):
    unit = draw(st.sampled_from(sorted(_UNIT_MG)))
    decimals = draw(st.integers(0, _MAX_DECIMALS[unit]))
    step_mg = _UNIT_MG[unit] // 10**decimals
    # The value field is 10 characters: sign, digits and the decimal point share them.
    width = 10 - (1 if decimals else 0)
    steps = draw(st.integers(-(10 ** (width - 1) - 1), 10**width - 1))
    return mtsics.Weight(steps * step_mg, unit, decimals)


prices = st.integers(0, mtsics.MAX_UNIT_PRICE_MINOR_PER_KG)
plus = st.integers(0, mtsics.MAX_PLU)
u32 = st.integers(0, 0xFFFFFFFF)

commands = st.one_of(
    st.sampled_from(sorted(mtsics.REPLY_IDS)).map(mtsics.Command),
    weights().map(lambda weight: mtsics.Command("TA", tare=weight)),
    st.builds(lambda price, plu: mtsics.Command("MSU", unit_price_minor_per_kg=price, plu=plu),
              prices, plus),
)

replies = st.one_of(
    st.builds(mtsics.WeightReply, st.just("S"), st.sampled_from("SD"), weights()),
    st.builds(mtsics.WeightReply, st.just("T"), st.just("S"), weights()),
    st.builds(mtsics.WeightReply, st.just("TA"), st.just("A"), weights()),
    st.builds(mtsics.StatusReply, st.sampled_from(["S", "T", "TA", "Z", "ZI", "MST", "MSU"]),
              st.sampled_from(mtsics.FAILURE_STATUSES)),
    st.builds(mtsics.StatusReply, st.sampled_from(["Z", "TAC"]), st.just("A")),
    st.builds(mtsics.StatusReply, st.just("ZI"), st.sampled_from("SD")),
    st.builds(mtsics.TextReply, st.sampled_from(["I2", "I4"]),
              st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"'),
                      max_size=40)),
    st.builds(mtsics.ErrorReply, st.sampled_from(mtsics.ERROR_CODES)),
    st.builds(mtsics.MetrologyReply, weights(), weights(), weights(),
              st.sampled_from(mtsics.ACCURACY_CLASSES)),
    st.builds(mtsics.CounterReply, u32),
    st.builds(mtsics.PriceReply, prices, plus),
    st.builds(mtsics.SaleReply, st.integers(1, mtsics.MAX_TXN), st.booleans(), weights(),
              weights(), weights(), prices, st.integers(0, mtsics.MAX_AMOUNT_MINOR), plus,
              st.sampled_from(["none", "weighed", "preset"]), weights(), st.booleans(), u32),
)


def _lines(stream, cuts):
    """Feed ``stream`` in pieces cut at ``cuts`` and collect what the reader returns."""
    reader = mtsics.LineReader()
    lines = []
    previous = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        reader.feed(stream[previous:cut])
        previous = cut
        while (line := reader.next_line()) is not None:
            lines.append(line)
    return lines


@pytest.mark.parametrize("line, reply_id, status, mg, unit, decimals", MTSICS_WEIGHT_VECTORS)
def test_documented_weight_replies(line, reply_id, status, mg, unit, decimals):
    reply = mtsics.parse_reply(line)
    assert reply == mtsics.WeightReply(reply_id, status, mtsics.Weight(mg, unit, decimals))
    assert reply.encode() == line + b"\r\n"


def test_sale_extension_vector():
    line, expected = MTSICS_SALE_VECTOR
    sale = mtsics.parse_reply(line)
    assert sale.encode() == line + b"\r\n"
    # 1.235 kg at 12.80 per kg is 15.808, charged as 1581 minor units.
    assert (sale.net.mg * sale.unit_price_minor_per_kg + 500000) // 1000000 == 1581
    assert sale.amount_minor == expected[6] == 1581


def test_longest_reply_fits_the_line_limit():
    widest = mtsics.Weight(-12345678000, "kg", 3)
    sale = mtsics.SaleReply(mtsics.MAX_TXN, True, widest, widest, widest,
                            mtsics.MAX_UNIT_PRICE_MINOR_PER_KG, mtsics.MAX_AMOUNT_MINOR,
                            mtsics.MAX_PLU, "preset", widest, False, 0xFFFFFFFF)
    assert len(sale.encode()) == 115 <= mtsics.MAX_LINE_BYTES


@settings(max_examples=300)
@given(st.lists(st.one_of(commands, replies), min_size=1, max_size=8),
       st.lists(st.integers(0, 1000), max_size=10))
def test_valid_messages_round_trip_through_the_line_reader(messages, cuts):
    stream = b"".join(message.encode() for message in messages)
    lines = _lines(stream, [cut for cut in cuts if cut < len(stream)])
    assert len(lines) == len(messages)
    for message, line in zip(messages, lines):
        parse = mtsics.parse_command if isinstance(message, mtsics.Command) else mtsics.parse_reply
        assert parse(line) == message
        assert parse(line).encode() == line + b"\r\n"


@settings(max_examples=500)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_garbage_raises_only_mtsics_error(data, cuts):
    reader = mtsics.LineReader()
    previous = 0
    for cut in sorted(set(c for c in cuts if c < len(data))) + [len(data)]:
        reader.feed(data[previous:cut])
        previous = cut
        while True:
            try:
                line = reader.next_line()
            except MTSICSError:
                continue
            if line is None:
                break
            for parse in (mtsics.parse_reply, mtsics.parse_command):
                try:
                    parse(line)
                except MTSICSError:
                    pass


_TOKENS = ["S", "D", "A", "I", "+", "-", "L", "MST", "MSI", "TA", "ZI", "I4", '"', "1", "-0",
           "0.005", "1.", "kg", "g", "mg", "III", "N", "W", "Z", "99999999999", " ", ""]


@settings(max_examples=500)
@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=20))
def test_near_miss_lines_raise_only_mtsics_error(tokens):
    line = " ".join(tokens).encode()
    for parse in (mtsics.parse_reply, mtsics.parse_command):
        try:
            value = parse(line)
        except MTSICSError:
            continue
        assert parse(value.encode()[:-2]) == value


def test_errors_are_protocol_errors_and_value_errors():
    with pytest.raises(ValueError):
        mtsics.parse_command(b"NOPE")
    assert issubclass(MTSICSError, ProtocolError)


@pytest.mark.parametrize(
    "value, fragment",
    [
        (mtsics.Weight(1234, "kg", 3), "1000 mg steps"),
        (mtsics.Weight(1, "lb", 0), "not mg, g or kg"),
        (mtsics.Weight(1000, "g", 4), "takes 0..3 decimals"),
        (mtsics.Weight(10**12, "kg", 3), "wider than 10 characters"),
    ],
)
def test_weights_that_cannot_be_shown_are_refused(value, fragment):
    with pytest.raises(MTSICSError, match=fragment):
        value.field()


@pytest.mark.parametrize(
    "message, fragment",
    [
        (mtsics.Command("X"), "unknown command"),
        (mtsics.Command("S", tare=mtsics.Weight(0)), "only TA takes"),
        (mtsics.Command("MSU", unit_price_minor_per_kg=1), "plu must be"),
        (mtsics.Command("MSU", unit_price_minor_per_kg=-1, plu=0), "unit_price_minor_per_kg"),
        (mtsics.StatusReply("S", "A"), "not a valid status"),
        (mtsics.WeightReply("Z", "A", mtsics.Weight(0)), "not a valid status"),
        (mtsics.TextReply("I4", 'say "hi"'), "holds '\"'"),
        (mtsics.ErrorReply("EX"), "not ES, ET or EL"),
        (mtsics.CounterReply(True), "count must be an integer"),
        (mtsics.MetrologyReply(mtsics.Weight(0), mtsics.Weight(0), mtsics.Weight(0), "V"),
         "accuracy class"),
    ],
)
def test_invalid_values_are_refused_when_encoding(message, fragment):
    with pytest.raises(MTSICSError, match=fragment):
        message.encode()
