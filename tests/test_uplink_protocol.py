"""protocol/uplink.py on CPython: the frame against the scapy layer and zlib, the named limits
against the record format, the AUTH message checked with cryptography, and property tests:
valid messages survive any chunking of the stream, and no input raises anything but
UplinkError. tests/mpy/uplink_checks.py covers the same codec on MicroPython."""

import zlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from known_vectors import RFC_KEY

from meterseal.firmware import signer
from meterseal.protocol import cose, records
from meterseal.protocol import uplink as wire
from meterseal.protocol.errors import UplinkError
from meterseal.protocol.scapy_layers import (
    UPLINK_MAGIC,
    UPLINK_MESSAGE_TYPES,
    UPLINK_VERSION,
    UplinkFrame,
)


def test_numbers_and_layout_match_the_scapy_layer():
    assert wire.TYPE_NAMES == UPLINK_MESSAGE_TYPES
    assert (wire.MAGIC, wire.VERSION) == (UPLINK_MAGIC, UPLINK_VERSION)
    frame = bytes(wire.encode(wire.ACK, {"seq": 7, "host_time_ms": 1767225600000}))
    dissected = UplinkFrame(frame)
    assert dissected.type == wire.ACK and dissected.length == len(frame) - 12
    assert bytes(UplinkFrame(type=wire.ACK, cbor_payload=dissected.cbor_payload)) == frame
    assert dissected.crc == zlib.crc32(frame[:-4])


def test_limits_hold_together():
    # The largest record payload in a COSE_Sign1 fits MAX_ENVELOPE_BYTES, one such envelope
    # fits a batch, and a full batch of the smallest-headed envelopes fits a frame.
    class Signer:
        def sign(self, message):
            return b"\x01" * 64

    envelope = cose.sign1(b"\x00" * records.MAX_PAYLOAD_BYTES, Signer(), b"\x02" * 32)
    assert len(envelope) <= wire.MAX_ENVELOPE_BYTES <= wire.MAX_BATCH_BYTES
    for count in (1, 2, 3, wire.MAX_BATCH_RECORDS):
        size = min(wire.MAX_BATCH_BYTES // count, wire.MAX_ENVELOPE_BYTES)
        payload = wire.encode_payload(wire.RECORDS, {"envelopes": [b"\x04" * size] * count})
        assert len(payload) <= wire.MAX_PAYLOAD_BYTES


def test_a_forged_length_is_refused_from_the_header_alone():
    decoder = wire.FrameDecoder()
    with pytest.raises(UplinkError, match="RECORDS payload length 4294967295 is over the limit"):
        decoder.feed(b"MS\x01\x04\xff\xff\xff\xff")
    # One past the limit is refused, the limit itself is awaited.
    over = (wire.MAX_PAYLOAD_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(UplinkError, match="over the limit"):
        wire.FrameDecoder().feed(b"MS\x01\x04" + over)
    at = wire.MAX_PAYLOAD_BYTES.to_bytes(4, "big")
    assert wire.FrameDecoder().feed(b"MS\x01\x04" + at) == (8, None)


def test_auth_signature_verifies_with_cryptography_and_binds_the_hello():
    hello = {
        "gateway_id": "MS-GW-0001",
        "software_name": "meterseal-gw",
        "software_version": "0.1.0",
        "software_digest": b"\x11" * 32,
        "boot": 3,
        "kid": b"\x22" * 32,
    }
    nonce = bytes(range(32))
    message = wire.auth_message(nonce, hello)
    # Decoded independently: the context, the nonce, the id and the HELLO payload as sent.
    context, signed_nonce, gateway_id, hello_payload = cbor2.loads(message)
    assert (context, signed_nonce, gateway_id) == ("meterseal uplink AUTH v1", nonce, "MS-GW-0001")
    assert hello_payload == bytes(wire.encode(wire.HELLO, hello))[8:-4]
    assert cbor2.loads(hello_payload) == {
        1: "MS-GW-0001", 2: "meterseal-gw", 3: "0.1.0", 4: b"\x11" * 32, 5: 3, 7: b"\x22" * 32
    }
    key = signer.SoftwareSigner(RFC_KEY)
    signature = key.sign(message)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public_key())
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    der = encode_dss_signature(r, s)
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    for name, value in (("boot", 4), ("highest_seq", 9), ("gateway_id", "MS-GW-0002")):
        assert wire.auth_message(nonce, dict(hello, **{name: value})) != message
    assert wire.auth_message(bytes(32), hello) != message
    # Never a COSE Sig_structure, whose first element is "Signature1".
    assert cbor2.loads(message)[0] != "Signature1"


# --- property tests -------------------------------------------------------------------------

_u64 = st.integers(0, 2**64 - 1)
_time_ms = st.integers(0, 2**48 - 1)
_id_text = st.text(min_size=1, max_size=wire.MAX_ID_CHARS)
_plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
_text_map = st.dictionaries(st.text(max_size=12), _plain_values, max_size=5)


def _fields(**strategies):
    return st.fixed_dictionaries(
        {name: s for name, s in strategies.items() if not name.startswith("opt_")},
        optional={name[4:]: s for name, s in strategies.items() if name.startswith("opt_")},
    )


_command_id = st.integers(0, 2**32 - 1)
_command_result = st.one_of(
    st.fixed_dictionaries({"id": _command_id, "ok": st.just(True), "result": _text_map}),
    st.fixed_dictionaries(
        {"id": _command_id, "ok": st.just(False), "error": st.text(min_size=1, max_size=200)}
    ),
)

MESSAGE_STRATEGIES = {
    wire.HELLO: _fields(
        gateway_id=_id_text,
        software_name=_id_text,
        software_version=_id_text,
        software_digest=st.binary(min_size=32, max_size=32),
        boot=_u64,
        opt_highest_seq=_u64,
        kid=st.binary(min_size=32, max_size=32),
    ),
    wire.CHALLENGE: _fields(nonce=st.binary(min_size=16, max_size=64), host_time_ms=_time_ms),
    wire.AUTH: _fields(signature=st.binary(min_size=64, max_size=64)),
    wire.RECORDS: _fields(
        envelopes=st.lists(
            st.binary(min_size=1, max_size=200), min_size=1, max_size=wire.MAX_BATCH_RECORDS
        )
    ),
    wire.ACK: _fields(opt_seq=_u64, host_time_ms=_time_ms),
    wire.NACK: _fields(code=st.integers(0, 255), reason=st.text(max_size=200)),
    wire.COMMAND: _fields(id=_command_id, name=_id_text, args=_text_map),
    wire.COMMAND_RESULT: _command_result,
    wire.PING: st.just({}),
    wire.PONG: st.just({}),
}

messages = st.sampled_from(sorted(MESSAGE_STRATEGIES)).flatmap(
    lambda msg_type: st.tuples(st.just(msg_type), MESSAGE_STRATEGIES[msg_type])
)


def _decode_in_chunks(stream, cuts):
    decoder = wire.FrameDecoder()
    decoded = []
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    for start, end in zip(bounds, bounds[1:]):
        view = memoryview(stream)[start:end]
        while view:
            used, message = decoder.feed(view)
            assert used > 0
            view = view[used:]
            if message is not None:
                decoded.append(message)
    return decoded


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.lists(st.integers(0, 2**16), max_size=30))
def test_valid_messages_survive_any_chunking(sent, cuts):
    stream = b"".join(bytes(wire.encode(msg_type, fields)) for msg_type, fields in sent)
    assert _decode_in_chunks(stream, cuts) == [(msg_type, fields) for msg_type, fields in sent]


def _decode_all(data, cuts):
    try:
        _decode_in_chunks(data, cuts)
    except UplinkError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10))
def test_random_bytes_raise_only_uplink_error(data, cuts):
    _decode_all(data, cuts)
    _decode_all(b"MS\x01" + data, cuts)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(MESSAGE_STRATEGIES)), st.binary(max_size=300))
def test_random_payloads_behind_a_valid_header_and_crc_raise_only_uplink_error(msg_type, payload):
    # A correct CRC gets random bytes through to the CBOR and schema checks.
    frame = b"MS\x01" + bytes([msg_type]) + len(payload).to_bytes(4, "big") + payload
    frame += zlib.crc32(frame).to_bytes(4, "big")
    _decode_all(frame, [])


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(0, 2**16), st.integers(1, 255))
def test_a_corrupted_byte_is_never_accepted(message, position, flip):
    frame = bytearray(wire.encode(*message))
    frame[position % len(frame)] ^= flip
    try:
        decoded = _decode_in_chunks(bytes(frame), [])
    except UplinkError:
        return
    assert decoded == []  # only a length now claiming more bytes than arrived: need more
