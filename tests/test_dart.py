"""Wayne DART codec: captured frames, stuffing, the stream decoder's recovery, typed transactions.

tests/mpy/dart_checks.py runs the same vectors on MicroPython; this file adds the properties
that need hypothesis.
"""

from binascii import unhexlify

import pytest
from hypothesis import given
from hypothesis import strategies as st
from known_vectors import DART_CAPTURED_FRAMES, DART_CONTROL_FRAMES, DART_STUFFED_FRAMES

from meterseal.protocol import dart
from meterseal.protocol.crc import crc16_arc
from meterseal.protocol.errors import ProtocolError


def typed(expected):
    return [getattr(dart, name)(*args) for name, args in expected]


# --- captured and constructed frames ---------------------------------------------------------


@pytest.mark.parametrize("frame_hex, address, block, expected", DART_CAPTURED_FRAMES)
def test_captured_frame_decodes_and_reencodes_byte_for_byte(frame_hex, address, block, expected):
    raw = unhexlify(frame_hex)
    frame = dart.decode_frame(raw)
    assert (frame.address, frame.kind, frame.block) == (address, dart.DATA, block)
    transactions = frame.transactions(dart.FROM_PUMP)
    assert transactions == typed(expected)
    assert dart.encode_data(address, block, transactions) == raw
    assert frame.encode() == raw


def test_end_of_sale_values():
    frame = dart.decode_frame(unhexlify(DART_CAPTURED_FRAMES[1][0]))
    filled, price, status = frame.transactions(dart.FROM_PUMP)
    assert (filled.volume, filled.amount) == (31, 51)
    assert (price.price, price.nozzle, price.nozzle_out) == (1645, 0, False)
    assert status.status == dart.STATUS_FILLING_COMPLETED == 5
    # 0.31 L x 1.645 = 0.50995, which the pump shows as 0.51: the price has three decimals.
    assert round(31 * 1645 / 1000) == 51
    assert dart.rescale(filled.volume, 2, 3) == 310  # mL
    assert dart.rescale(price.price, 3, 5) == 164500  # minor units per kilolitre


def test_suspended_and_totals_values():
    (status,) = dart.decode_frame(unhexlify(DART_CAPTURED_FRAMES[0][0])).transactions(
        dart.FROM_PUMP
    )
    assert status.status == dart.STATUS_SUSPENDED
    (totals,) = dart.decode_frame(unhexlify(DART_CAPTURED_FRAMES[2][0])).transactions(
        dart.FROM_PUMP
    )
    assert (totals.counter, totals.total, totals.meter1, totals.meter2) == (1, 281249, 281249, 0)
    assert dart.rescale(totals.total, 2, 3) == 2812490  # mL


@pytest.mark.parametrize("frame_hex, direction, address, block, expected", DART_STUFFED_FRAMES)
def test_stuffed_frame_round_trips(frame_hex, direction, address, block, expected):
    raw = unhexlify(frame_hex)
    frame = dart.decode_frame(raw)
    assert (frame.address, frame.block) == (address, block)
    assert frame.transactions(direction) == typed(expected)
    assert dart.encode_data(address, block, typed(expected)) == raw


@pytest.mark.parametrize("crc_byte", [0, 1], ids=["crc_low", "crc_high"])
def test_fa_in_crc_is_stuffed_wherever_it_falls(crc_byte):
    # Search DC2 payloads until the CRC has 0xFA in the wanted byte.
    for volume in range(100000):
        transactions = [dart.DC2FilledVolumeAmount(volume, 7)]
        body = bytes((0x52, 0x34)) + dart.encode_transactions(transactions)
        crc = crc16_arc(body)
        if (crc >> (8 * crc_byte)) & 0xFF == 0xFA:
            break
    raw = dart.encode_data(0x52, 4, transactions)
    crc_wire = bytes((crc & 0xFF, crc >> 8)).replace(b"\xfa", b"\x10\xfa")
    assert raw == body + crc_wire + b"\x03\xfa"
    assert dart.decode_frame(raw).transactions(dart.FROM_PUMP) == transactions


def test_dle_without_fa_is_not_doubled():
    raw = dart.encode_data(0x50, 1, [dart.RawTransaction(0x42, b"\x10\x10\x03")])
    assert b"\x10\x10\x03" in raw and raw.count(b"\x10") == 2
    assert dart.decode_frame(raw).data == b"\x42\x03\x10\x10\x03"


@pytest.mark.parametrize("frame_hex, address, kind, block", DART_CONTROL_FRAMES)
def test_control_frames(frame_hex, address, kind, block):
    raw = unhexlify(frame_hex)
    assert dart.encode_short(address, kind, block) == raw
    frame = dart.decode_frame(raw)
    assert frame == dart.Frame(address, kind, block)
    assert frame.ctrl == raw[1] and frame.encode() == raw


def test_pump_states_and_commands_use_the_specified_codes():
    assert sorted(dart.STATUS_NAMES) == [0, 1, 2, 4, 5, 6, 7, 8]
    assert (dart.CMD_RESET, dart.CMD_AUTHORIZE, dart.CMD_STOP) == (5, 6, 8)
    assert (dart.CMD_SUSPEND, dart.CMD_RESUME, dart.CMD_SWITCH_OFF) == (0x0D, 0x0E, 0x0A)


def test_next_block_cycles_one_to_fifteen():
    seen = [1]
    for _ in range(20):
        seen.append(dart.next_block(seen[-1]))
    assert seen[:16] == list(range(1, 16)) + [1]
    assert dart.next_block(0) == 1


# --- strategies -------------------------------------------------------------------------------

addresses = st.integers(dart.ADDRESS_MIN, dart.ADDRESS_MAX)
blocks = st.integers(0, 15)
nozzles = st.integers(1, 15)
prices = st.integers(0, 999999)
values = st.integers(0, 99999999)
totals = st.integers(0, 9999999999)
bytes_ = st.integers(0, 255)

to_pump_transactions = st.one_of(
    st.builds(dart.CD1Command, bytes_),
    st.builds(dart.CD2AllowedNozzles, st.lists(nozzles, min_size=1, max_size=15)),
    st.builds(dart.CD3PresetVolume, values),
    st.builds(dart.CD4PresetAmount, values),
    st.builds(dart.CD5PriceUpdate, st.lists(prices, min_size=1, max_size=15)),
    st.builds(dart.CD101RequestTotalCounters, bytes_),
)
from_pump_transactions = st.one_of(
    st.builds(dart.DC1PumpStatus, bytes_),
    st.builds(dart.DC2FilledVolumeAmount, values, values),
    st.builds(dart.DC3NozzleStatusPrice, prices, st.integers(0, 15), st.booleans()),
    st.builds(dart.DC5AlarmCode, bytes_),
    st.builds(
        dart.DC7PumpParameters,
        bytes_,
        bytes_,
        bytes_,
        values,
        st.lists(bytes_, min_size=15, max_size=15),
        st.binary(min_size=28, max_size=28),
    ),
    st.builds(dart.DC9PumpIdentity, st.text("0123456789", min_size=10, max_size=10)),
    st.builds(dart.DC101TotalCounters, bytes_, totals, totals, totals),
)
raw_transactions = st.builds(dart.RawTransaction, bytes_, st.binary(max_size=40))
control_kinds = st.sampled_from([dart.POLL, dart.ACK, dart.NAK, dart.EOT, dart.ACKPOLL])


@st.composite
def frames(draw):
    if draw(st.booleans()):
        return dart.Frame(draw(addresses), draw(control_kinds), draw(blocks))
    transactions = draw(st.lists(raw_transactions, max_size=5))
    return dart.Frame(
        draw(addresses), dart.DATA, draw(blocks), dart.encode_transactions(transactions)
    )


def feed_in_chunks(decoder, stream, chunk_sizes):
    delivered = []
    position = 0
    sizes = iter(chunk_sizes)
    while position < len(stream):
        chunk = stream[position : position + next(sizes, 64)]
        position += len(chunk)
        offset = 0
        while offset < len(chunk):
            used, result = decoder.feed(chunk, offset)
            assert used > 0
            offset += used
            if isinstance(result, dart.Frame):
                delivered.append(result)
    return delivered


# --- properties -------------------------------------------------------------------------------


@given(frames())
def test_frame_round_trips(frame):
    raw = dart.encode_frame(frame)
    assert raw.endswith(b"\xfa") and b"\xfa" not in raw[:-1].replace(b"\x10\xfa", b"")
    assert dart.decode_frame(raw) == frame


@given(addresses, blocks, st.lists(to_pump_transactions, min_size=1, max_size=4))
def test_to_pump_transactions_round_trip(address, block, transactions):
    raw = dart.encode_data(address, block, transactions)
    assert dart.decode_frame(raw).transactions(dart.TO_PUMP) == transactions


@given(addresses, blocks, st.lists(from_pump_transactions, min_size=1, max_size=4))
def test_from_pump_transactions_round_trip(address, block, transactions):
    raw = dart.encode_data(address, block, transactions)
    frame = dart.decode_frame(raw)
    assert frame.transactions(dart.FROM_PUMP) == transactions
    assert dart.encode_data(address, block, frame.transactions(dart.FROM_PUMP)) == raw


def starts_a_data_frame(garbage):
    return any(
        dart.ADDRESS_MIN <= garbage[i] <= dart.ADDRESS_MAX and garbage[i + 1] >> 4 == 3
        for i in range(len(garbage) - 1)
    )


line_noise = st.binary(max_size=20).map(lambda b: b.replace(b"\xfa", b""))


@given(
    st.lists(frames(), min_size=1, max_size=8),
    st.lists(line_noise.filter(lambda b: not starts_a_data_frame(b)), min_size=9),
    st.lists(st.integers(1, 40), max_size=200),
)
def test_stream_decoder_recovers_every_frame_through_garbage_and_chunking(
    frame_list, garbage, chunk_sizes
):
    # Garbage without SF glues onto the next frame; the decoder must still find that frame.
    stream = bytearray(garbage[0])
    for frame, filler in zip(frame_list, garbage[1:]):
        stream += dart.encode_frame(frame) + filler
    decoder = dart.FrameDecoder()
    assert feed_in_chunks(decoder, bytes(stream), chunk_sizes) == frame_list
    assert decoder.frames == len(frame_list)


@given(
    st.lists(frames().filter(lambda f: f.kind == dart.DATA), min_size=1, max_size=8),
    st.lists(line_noise, min_size=9),
)
def test_data_frames_survive_garbage_that_starts_like_a_frame(frame_list, garbage):
    stream = bytearray(garbage[0])
    for frame, filler in zip(frame_list, garbage[1:]):
        stream += dart.encode_frame(frame) + filler
    assert dart.FrameDecoder().frames_in(bytes(stream)) == frame_list


@given(st.lists(frames(), min_size=1, max_size=6), st.lists(st.binary(max_size=30), min_size=7))
def test_garbage_with_sf_never_hides_a_data_frame(frame_list, garbage):
    # Garbage that contains SF may form frames of its own (a stray "50 20 FA" is a POLL), and
    # may hide a control frame behind a failed data frame start, but every real data frame
    # still comes out, in order.
    stream = bytearray(garbage[0])
    for frame, filler in zip(frame_list, garbage[1:]):
        stream += dart.encode_frame(frame) + filler
    delivered = iter(dart.FrameDecoder().frames_in(bytes(stream)))
    data_frames = [frame for frame in frame_list if frame.kind == dart.DATA]
    assert all(any(frame == got for got in delivered) for frame in data_frames)


def test_damaged_data_frame_tail_is_not_taken_for_a_control_frame():
    # CRC hi 0x63 followed by ETX corrupted to 0x70 reads "63 70": an EOT for pump 0x63.
    data = bytes.fromhex("bc0c3a010b53d93bb04b000000012004b301d701c5017c00018f")
    frame = dart.Frame(0x50, dart.DATA, 0, data)
    raw = bytearray(dart.encode_frame(frame))
    assert raw[-3:-1] == b"\x63\x03"
    raw[-2] = 0x70
    decoder = dart.FrameDecoder()
    assert decoder.feed(bytes(raw)) == (len(raw), dart.BAD_FRAME)
    assert decoder.last_error.startswith("data frame ends in 0x70")


def test_control_frames_behind_noise_or_a_lost_sf_are_kept():
    decoder = dart.FrameDecoder()
    # A turnaround glitch before a POLL; a POLL whose SF was lost, then an ACK.
    assert decoder.frames_in(b"\x00\xff\x50\x20\xfa" + b"\x51\x20" + b"\x51\xc1\xfa") == [
        dart.Frame(0x50, dart.POLL),
        dart.Frame(0x51, dart.ACK, 1),
    ]


@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=50))
def test_stream_decoder_never_raises(noise, chunk_sizes):
    decoder = dart.FrameDecoder()
    for frame in feed_in_chunks(decoder, noise, chunk_sizes):
        assert isinstance(frame, dart.Frame)
    assert decoder.discarded_bytes <= len(noise)


@given(st.binary(max_size=300))
def test_one_shot_decoders_raise_only_their_own_error(noise):
    for attempt in (
        lambda: dart.decode_frame(noise),
        lambda: dart.decode_transactions(noise, dart.TO_PUMP),
        lambda: dart.decode_transactions(noise, dart.FROM_PUMP),
    ):
        try:
            attempt()
        except dart.DARTError:
            pass


@given(frames().filter(lambda f: f.kind == dart.DATA), st.data())
def test_any_changed_byte_in_a_data_frame_is_never_delivered(frame, data):
    raw = bytearray(dart.encode_frame(frame))
    index = data.draw(st.integers(0, len(raw) - 1))
    replacement = data.draw(bytes_.filter(lambda b: b != raw[index]))
    raw[index] = replacement
    sentinel = dart.Frame(0x6F, dart.DATA, 9, b"\x01\x01\x04")
    decoder = dart.FrameDecoder()
    delivered = decoder.frames_in(bytes(raw) + dart.encode_frame(sentinel))
    assert delivered == [sentinel]


def test_corrupted_crc_is_counted_and_reported():
    good = unhexlify(DART_CAPTURED_FRAMES[1][0])
    bad = bytearray(good)
    bad[-4] ^= 0xFF
    decoder = dart.FrameDecoder()
    used, result = decoder.feed(bytes(bad) + good)
    assert result is dart.BAD_FRAME and used == len(bad)
    assert decoder.last_error == "CRC 0x%04X received, 0x85B3 computed" % (0x8500 | bad[-4])
    assert decoder.frames_in(good) == [dart.decode_frame(good)]
    assert (decoder.frames, decoder.bad_frames) == (1, 1)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x50\x31\x01\x03\xfa", "shorter than ADR CTRL CRC ETX"),
        (b"\x50\x31\x01\x01\x05\x00\x00\x04\xfa", "not ETX"),
        (b"\x50\x20\x00\xfa", "followed by 1 byte(s)"),
    ],
)
def test_bad_frames_say_why(raw, reason):
    decoder = dart.FrameDecoder()
    assert decoder.feed(raw) == (len(raw), dart.BAD_FRAME)
    assert reason in decoder.last_error
    with pytest.raises(dart.DARTError, match="ETX|CRC|byte"):
        dart.decode_frame(raw)


def test_overflow_drops_garbage_but_not_the_frame_behind_it():
    good = unhexlify(DART_CAPTURED_FRAMES[2][0])
    decoder = dart.FrameDecoder()
    flood = b"\x61\xe0" * dart.MAX_FRAME_BYTES
    assert decoder.frames_in(flood + good) == [dart.decode_frame(good)]
    assert decoder.bad_frames == 1 and decoder.discarded_bytes == len(flood)
    assert len(decoder._buffer) == dart.MAX_FRAME_BYTES


def test_reset_drops_a_partial_frame():
    good = unhexlify(DART_CAPTURED_FRAMES[0][0])
    decoder = dart.FrameDecoder()
    decoder.feed(good[:5])
    decoder.reset()
    assert decoder.discarded_bytes == 5
    assert decoder.frames_in(good[5:]) == []
    assert decoder.frames_in(good) == [dart.decode_frame(good)]


def test_decode_frame_is_strict():
    good = unhexlify(DART_CAPTURED_FRAMES[0][0])
    with pytest.raises(dart.DARTError, match="garbage"):
        dart.decode_frame(b"\x00" + good)
    with pytest.raises(dart.DARTError, match="after the frame"):
        dart.decode_frame(good + b"\x00")
    with pytest.raises(dart.DARTError, match="no complete frame"):
        dart.decode_frame(good[:-1])


# --- transactions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, direction, message",
    [
        (b"\x01", dart.FROM_PUMP, "1 byte left"),
        (b"\x02\x08\x00", dart.FROM_PUMP, "LNG 8 runs past the 1 byte"),
        (b"\x01\x02\x05\x05", dart.FROM_PUMP, "DC1: LNG must be 1, got 2"),
        (b"\x07\x01\x00", dart.FROM_PUMP, "DC7: LNG must be 50"),
        (b"\x65\x0f" + bytes(15), dart.FROM_PUMP, "DC101: LNG must be 16"),
        (b"\x02\x08\x00\x00\x00\x3a\x00\x00\x00\x00", dart.FROM_PUMP, "0x3A is not a packed BCD"),
        (b"\x03\x04\x00\x16\x45\x21", dart.FROM_PUMP, "NOZIO 0x21"),
        (b"\x05\x04\x00\x16\x45\x00", dart.TO_PUMP, "multiple of 3"),
        (b"\x02\x01\x10", dart.TO_PUMP, "CD2 nozzle must be 1..15, got 16"),
        (b"\x02\x00", dart.TO_PUMP, "1..15 nozzles, got 0"),
    ],
)
def test_malformed_transactions_raise_dart_error(data, direction, message):
    with pytest.raises(dart.DARTError, match=message.replace(".", r"\.")) as caught:
        dart.decode_transactions(data, direction)
    assert isinstance(caught.value, ProtocolError) and isinstance(caught.value, ValueError)


def test_unknown_trans_stays_raw_and_reencodes():
    data = b"\x0e\x01\x00\x66\x02\x01\x00"
    transactions = dart.decode_transactions(data, dart.FROM_PUMP)
    assert transactions == [
        dart.RawTransaction(0x0E, b"\x00"),
        dart.RawTransaction(0x66, b"\x01\x00"),
    ]
    assert dart.encode_transactions(transactions) == data


def test_direction_decides_cd_or_dc():
    data = b"\x01\x01\x05"
    assert dart.decode_transactions(data, dart.TO_PUMP) == [dart.CD1Command(dart.CMD_RESET)]
    assert dart.decode_transactions(data, dart.FROM_PUMP) == [dart.DC1PumpStatus(5)]
    with pytest.raises(dart.DARTError, match="direction"):
        dart.decode_transactions(data, 2)


def test_dc7_layout():
    grades = tuple(range(1, 16))
    reserved = bytes(range(100, 128))
    payload = dart.DC7PumpParameters(2, 2, 3, 123456, grades, reserved).payload()
    assert len(payload) == 50
    assert payload[:22] == reserved[:22]
    assert payload[22:25] == b"\x02\x02\x03"
    assert payload[25:29] == reserved[22:26]
    assert payload[29:33] == b"\x00\x12\x34\x56"
    assert payload[33:35] == reserved[26:]
    assert payload[35:] == bytes(grades)


def test_dc3_nozio_and_dc9_identity():
    assert dart.DC3NozzleStatusPrice(1645, 3, True).encode() == b"\x03\x04\x00\x16\x45\x13"
    assert dart.DC9PumpIdentity.decode(b"\x00\x00\x00\x00\x07").identity == "0000000007"
    with pytest.raises(dart.DARTError, match="10 digits"):
        dart.DC9PumpIdentity("12345")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dart.encode_short(0x70, dart.POLL), "ADR must be 80..111, got 112"),
        (lambda: dart.encode_short(0x50, dart.ACK, 16), "block number must be 0..15"),
        (lambda: dart.encode_short(0x50, dart.DATA), "not a control frame kind"),
        (lambda: dart.encode_short(0x50, 0x40), "not a control frame kind"),
        (lambda: dart.encode_frame(dart.Frame(0x50, dart.POLL, 0, b"\x01")), "carries no data"),
        (
            lambda: dart.encode_data(0x50, 0, [dart.RawTransaction(1, bytes(250))]),
            "frame data is 252 bytes; the limit is 251",
        ),
        (lambda: dart.RawTransaction(1, bytes(256)).encode(), "LNG allows 255"),
        (lambda: dart.CD3PresetVolume(100000000), "must be 0..99999999"),
        (lambda: dart.DC1PumpStatus(True), "must be an integer"),
        (lambda: dart.DC7PumpParameters(2, 2, 3, 0, range(14)), "15 grades"),
    ],
)
def test_encoders_reject_bad_arguments(call, message):
    with pytest.raises(dart.DARTError, match=message):
        call()


# --- BCD and scaling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, size, wire",
    [
        (0, 1, "00"),
        (9, 1, "09"),
        (99, 1, "99"),
        (0, 4, "00000000"),
        (1645, 3, "001645"),
        (99999999, 4, "99999999"),
        (1234567890, 5, "1234567890"),
        (9999999999, 5, "9999999999"),
    ],
)
def test_bcd_round_trip(value, size, wire):
    assert dart.bcd_encode(value, size) == unhexlify(wire)
    assert dart.bcd_decode(unhexlify(wire)) == value


@pytest.mark.parametrize("value, size", [(100, 1), (100000000, 4), (-1, 2)])
def test_bcd_encode_refuses_what_does_not_fit(value, size):
    with pytest.raises(dart.DARTError):
        dart.bcd_encode(value, size)


@pytest.mark.parametrize("wire", ["0A", "A0", "FF", "001F"])
def test_bcd_decode_refuses_non_decimal_nibbles(wire):
    with pytest.raises(dart.DARTError, match="not a packed BCD byte"):
        dart.bcd_decode(unhexlify(wire))


def test_bcd_decode_of_nothing_is_zero():
    assert dart.bcd_decode(b"") == 0


@given(st.integers(0, 10**20 - 1))
def test_bcd_round_trips_any_value(value):
    assert dart.bcd_decode(dart.bcd_encode(value, 10)) == value


@pytest.mark.parametrize(
    "value, decimals, target, expected",
    [(31, 2, 3, 310), (1645, 3, 5, 164500), (51, 2, 2, 51), (3100, 3, 1, 31), (0, 8, 0, 0)],
)
def test_rescale(value, decimals, target, expected):
    assert dart.rescale(value, decimals, target) == expected


def test_rescale_refuses_to_round():
    with pytest.raises(dart.DARTError, match="1645 with 3 decimals"):
        dart.rescale(1645, 3, 2)


def test_frame_repr_is_readable():
    frame = dart.decode_frame(unhexlify(DART_CONTROL_FRAMES[1][0]))
    assert repr(frame) == "Frame(0x51, ACK, 3, b'')"
    assert repr(dart.DC1PumpStatus(5)) == "DC1PumpStatus(5,)"


# --- DC7 vendor layout (the emulator's reserved bytes) ----------------------------------------


def _emulated_dc7(**kwargs):
    from meterseal.hil.emulators.dispenser import Dispenser
    from meterseal.hil.emulators.hydraulics import Nozzle
    from meterseal.hil.serial_link import PtyPort
    from meterseal.hil.simclock import SimClock

    port = PtyPort()
    try:
        pump = Dispenser(port, SimClock(speed=0), nozzles=(
            Nozzle(grade=92, k_factor_pulses_per_kl=100250),
            Nozzle(grade=95, k_factor_pulses_per_kl=99875),
        ), **kwargs)
        pump._pulser.close()
        # The wire form, as a gateway receives it.
        raw = dart.encode_data(0x50, 1, [pump._dc7()])
        return dart.decode_frame(raw).transactions(dart.FROM_PUMP)[0]
    finally:
        port.close()


def test_dc7_vendor_fields_read_from_the_emulated_pump():
    dc7 = _emulated_dc7(software_version="0231")
    assert dart.dc7_k_factors(dc7) == (100250, 99875, 0, 0)
    assert dart.dc7_software_version(dc7) == "0231"
    assert dart.dc7_calibration_count(dc7) == 0
    assert len(dart.dc7_param_checksum(dc7)) == 2
    assert dart.dc7_param_checksum_ok(dc7)


def test_dc7_vendor_checksum_covers_the_parameters_and_not_bcd_is_refused():
    dc7 = _emulated_dc7()
    changed = dart.DC7PumpParameters(3, dc7.amount_decimals, dc7.price_decimals, dc7.max_amount,
                                     dc7.grades, dc7.reserved)
    assert not dart.dc7_param_checksum_ok(changed)
    other = _emulated_dc7(software_version="0232")
    assert dart.dc7_param_checksum(other) != dart.dc7_param_checksum(dc7)
    garbage = dart.DC7PumpParameters(2, 2, 3, 0, [0] * 15, b"\xff" * 28)
    for accessor in (dart.dc7_k_factors, dart.dc7_software_version, dart.dc7_calibration_count):
        with pytest.raises(dart.DARTError, match="BCD"):
            accessor(garbage)
