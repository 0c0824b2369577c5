"""Scapy layers: they dissect the captured DART frames, build the bytes meterseal.protocol.dart
builds, survive fuzzing, and frame uplink messages with their CRC-32."""

import random
import struct
from binascii import unhexlify

import pytest
from hypothesis import given
from hypothesis import strategies as st
from known_vectors import DART_CAPTURED_FRAMES, DART_CONTROL_FRAMES, DART_STUFFED_FRAMES
from scapy.packet import Raw, fuzz

from meterseal.protocol import cbor, dart
from meterseal.protocol.crc import crc32
from meterseal.protocol.scapy_layers import (
    DART_KINDS,
    UPLINK_MESSAGE_TYPES,
    DARTFrame,
    DARTTransaction,
    UplinkFrame,
    dissect_dart,
)

ALL_DART_FRAMES = (
    [row[0] for row in DART_CAPTURED_FRAMES]
    + [row[0] for row in DART_STUFFED_FRAMES]
    + [row[0] for row in DART_CONTROL_FRAMES]
)


def test_dissects_the_end_of_sale_capture():
    packet = dissect_dart(unhexlify(DART_CAPTURED_FRAMES[1][0]))
    assert (packet.adr, packet.kind, packet.block) == (0x50, 3, 2)
    assert packet.sprintf("%DARTFrame.kind%") == "DATA"
    assert [(t.trans, t.lng, t.data) for t in packet.transactions] == [
        (0x02, 8, unhexlify("0000003100000051")),
        (0x03, 4, unhexlify("00164500")),
        (0x01, 1, b"\x05"),
    ]
    assert (packet.crc, packet.etx, packet.sf) == (0x85B3, 0x03, 0xFA)
    assert packet.crc_ok()
    filled = packet.transactions[0].typed(dart.FROM_PUMP)
    assert (filled.volume, filled.amount) == (31, 51)


def test_dissects_the_totals_capture():
    packet = dissect_dart(unhexlify(DART_CAPTURED_FRAMES[2][0]))
    (totals,) = packet.transactions
    assert (totals.trans, totals.lng) == (0x65, 16)
    assert totals.typed(dart.FROM_PUMP) == dart.DC101TotalCounters(1, 281249, 281249, 0)


@pytest.mark.parametrize("frame_hex", ALL_DART_FRAMES)
def test_dissect_and_rebuild_every_vector(frame_hex):
    raw = unhexlify(frame_hex)
    packet = dissect_dart(raw)
    assert bytes(packet) == raw
    assert packet.crc_ok()
    assert packet.to_frame() == dart.decode_frame(raw)


def test_stuffed_crc_is_dissected_destuffed():
    packet = dissect_dart(unhexlify(DART_STUFFED_FRAMES[0][0]))
    assert packet.crc == 0xFA9C and packet.crc_ok()
    packet = dissect_dart(unhexlify(DART_STUFFED_FRAMES[2][0]))
    assert packet.transactions[0].data == b"\x10\xfa\xfa"


@pytest.mark.parametrize("frame_hex, address, kind, block", DART_CONTROL_FRAMES)
def test_control_frames(frame_hex, address, kind, block):
    packet = DARTFrame(adr=address, kind=kind >> 4, block=block)
    assert bytes(packet) == unhexlify(frame_hex)
    assert DART_KINDS[kind >> 4] == dart.KIND_NAMES[kind]


addresses = st.integers(dart.ADDRESS_MIN, dart.ADDRESS_MAX)
blocks = st.integers(0, 15)
transaction_lists = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=30)), min_size=1, max_size=5
)


@given(addresses, blocks, transaction_lists)
def test_scapy_builds_what_dart_encodes(address, block, transactions):
    packet = DARTFrame(
        adr=address,
        block=block,
        transactions=[DARTTransaction(trans=trans, data=data) for trans, data in transactions],
    )
    raw = dart.encode_data(
        address, block, [dart.RawTransaction(trans, data) for trans, data in transactions]
    )
    assert bytes(packet) == raw
    assert bytes(dissect_dart(raw)) == raw


@given(addresses, st.sampled_from(sorted(DART_KINDS)), blocks)
def test_scapy_builds_what_dart_encodes_for_control_frames(address, kind, block):
    if kind == dart.DATA >> 4:
        expected = dart.encode_data(address, block, [])
    else:
        expected = dart.encode_short(address, kind << 4, block)
    assert bytes(DARTFrame(adr=address, kind=kind, block=block)) == expected


def test_explicit_wrong_crc_is_sent_and_rejected_by_the_decoder():
    packet = DARTFrame(adr=0x50, block=1, transactions=[DARTTransaction(trans=1, data=b"\x05")])
    good = bytes(packet)
    packet.crc = 0xFA00
    bad = bytes(packet)
    assert bad[-5:] == b"\x00\x10\xfa\x03\xfa"
    assert not dissect_dart(bad).crc_ok()
    decoder = dart.FrameDecoder()
    assert decoder.feed(bad) == (len(bad), dart.BAD_FRAME)
    assert decoder.frames_in(good) == [dart.decode_frame(good)]


def test_truncated_frame_dissects_as_raw():
    assert isinstance(dissect_dart(b"\x50\x31\x01"), Raw)


def test_fuzzed_dart_frames_never_break_the_decoder():
    random.seed(20240611)  # scapy's random fields draw from the random module
    templates = (
        DARTFrame(),
        DARTFrame(kind=3),
        DARTFrame(kind=3, transactions=[DARTTransaction(), DARTTransaction(trans=2)]),
    )
    delivered = 0
    for _ in range(300):
        for template in templates:
            raw = bytes(fuzz(template.copy()))
            decoder = dart.FrameDecoder()
            for frame in decoder.frames_in(raw):
                delivered += 1
                for direction in (dart.TO_PUMP, dart.FROM_PUMP):
                    try:
                        frame.transactions(direction)
                    except dart.DARTError:
                        pass
            try:
                dart.decode_frame(raw)
            except dart.DARTError:
                pass
    assert delivered > 0  # fuzzed control frames with a valid ADR and kind do get through


# --- uplink ---------------------------------------------------------------------------------


def test_uplink_message_types_follow_design_section_6():
    assert UPLINK_MESSAGE_TYPES == {
        1: "HELLO",
        2: "CHALLENGE",
        3: "AUTH",
        4: "RECORDS",
        5: "ACK",
        6: "NACK",
        7: "COMMAND",
        8: "COMMAND_RESULT",
        9: "PING",
        10: "PONG",
    }


@pytest.mark.parametrize("message_type", sorted(UPLINK_MESSAGE_TYPES))
def test_uplink_round_trip_with_crc(message_type):
    payload = cbor.dumps({1: message_type, 2: b"\x00\x01", 3: "gateway"})
    raw = bytes(UplinkFrame(type=message_type, cbor_payload=payload))
    header = b"MS" + bytes((1, message_type)) + struct.pack("!I", len(payload))
    assert raw == header + payload + struct.pack("!I", crc32(header + payload))

    frame = UplinkFrame(raw)
    assert (frame.magic, frame.version, frame.type, frame.length) == (
        b"MS",
        1,
        message_type,
        len(payload),
    )
    assert frame.sprintf("%UplinkFrame.type%") == UPLINK_MESSAGE_TYPES[message_type]
    assert frame.crc_ok() and bytes(frame) == raw
    assert frame.payload_value() == {1: message_type, 2: b"\x00\x01", 3: "gateway"}


def test_uplink_corruption_fails_the_crc():
    raw = bytes(UplinkFrame(type=9, cbor_payload=b"\xa0\xa0"))
    # Bytes 4..7 are the length: changing it misaligns the frame rather than the CRC.
    for index in (0, 1, 2, 3, 8, 9, 10, 11, 12, 13):
        corrupted = bytearray(raw)
        corrupted[index] ^= 0x04
        assert not UplinkFrame(bytes(corrupted)).crc_ok(), index
