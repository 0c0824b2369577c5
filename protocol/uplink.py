"""Uplink frames and messages between the gateway and the host (docs/uplink-protocol.md).

One frame carries one message::

    [ "MS" ][ version u8 ][ type u8 ][ length u32 BE ][ payload: length bytes ][ CRC-32 u32 BE ]
      0  1       2            3          4 .. 7          8 .. 8+length-1        last 4 bytes

The CRC-32 (ISO-HDLC, protocol.crc.crc32) covers magic through payload. The payload is one
deterministic-CBOR map with small integer keys; each message type's keys are declared in
_SCHEMAS and checked both ways, so the gateway cannot send what the host would refuse.

The stream decoder (FrameDecoder) is fed whatever the socket returns and reports "need more
bytes" by returning no message. It checks the header (magic, version, known type, length at most
its payload limit) before allocating the frame buffer. There is no resync: TCP does not lose or
reorder bytes, so a bad frame means a broken or hostile peer, and skipping ahead could read
payload bytes as a header. Any fault raises UplinkError, and the connection must be closed.
Nothing else escapes the decoder, whatever the bytes.
"""

import struct

from meterseal.protocol import cbor
from meterseal.protocol.crc import crc32
from meterseal.protocol.errors import CBORError, UplinkError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


MAGIC = b"MS"
VERSION = const(1)

# Message types; the numbers are those of scapy_layers.UPLINK_MESSAGE_TYPES.
HELLO = const(1)
CHALLENGE = const(2)
AUTH = const(3)
RECORDS = const(4)
ACK = const(5)
NACK = const(6)
COMMAND = const(7)
COMMAND_RESULT = const(8)
PING = const(9)
PONG = const(10)

TYPE_NAMES = {
    HELLO: "HELLO",
    CHALLENGE: "CHALLENGE",
    AUTH: "AUTH",
    RECORDS: "RECORDS",
    ACK: "ACK",
    NACK: "NACK",
    COMMAND: "COMMAND",
    COMMAND_RESULT: "COMMAND_RESULT",
    PING: "PING",
    PONG: "PONG",
}

# NACK codes. After a NACK the host closes the connection; the gateway logs it and backs off.
NACK_MALFORMED = const(1)  # a frame or payload failed to decode
NACK_UNEXPECTED = const(2)  # a valid message at the wrong point of the session
NACK_AUTH_FAILED = const(3)  # the AUTH signature does not verify against the registered key
NACK_UNKNOWN_GATEWAY = const(4)  # gateway id or kid not in the registry, or revoked
NACK_BUSY = const(5)  # the host cannot take the session now; retry later

HEADER_BYTES = const(8)
CRC_BYTES = const(4)

# A record envelope: the record payload (at most records.MAX_PAYLOAD_BYTES = 4096) plus the
# COSE_Sign1 overhead (protected header with the 32-byte kid, 64-byte signature, heads: 112 bytes)
# with room to spare. tests/test_uplink_protocol.py holds the two together.
MAX_ENVELOPE_BYTES = const(4352)
# A RECORDS batch is bounded both ways: the gateway holds one batch (and its frame) in RAM, so the
# bytes bound is what a 192 KB heap can spare twice; the count bounds the host's per-batch work.
# Every single envelope fits a batch on its own.
MAX_BATCH_RECORDS = const(32)
MAX_BATCH_BYTES = const(8192)
# The largest payload a frame may claim. A peer announcing more is refused from the 8-byte
# header, before anything is allocated or read: otherwise one forged length field (up to 4 GiB)
# makes the receiver reserve or wait for that much, per connection (a memory-exhaustion DoS on
# the device and on a host holding thousands of connections). A full RECORDS batch needs
# MAX_BATCH_BYTES plus at most 3 head bytes per envelope and a few for the map.
MAX_PAYLOAD_BYTES = const(9216)

MIN_NONCE_BYTES = const(16)
MAX_NONCE_BYTES = const(64)
MAX_ID_CHARS = const(32)
MAX_TEXT_CHARS = const(200)
_MAX_TIME_MS = const(0xFFFFFFFFFFFF)  # as records: 48 bits of UTC ms reach year 10889
_MAX_U64 = const(0xFFFFFFFFFFFFFFFF)
_MAX_COMMAND_ID = const(0xFFFFFFFF)
_MAX_NACK_CODE = const(255)

# AUTH signs cbor([AUTH_CONTEXT, nonce, gateway_id, HELLO payload]). The context string keeps
# this signature apart from every other use of the gateway key: a COSE Sig_structure starts
# with "Signature1", so an AUTH signature can never pass for a record signature or back.
AUTH_CONTEXT = "meterseal uplink AUTH v1"

_STRUCT_HEADER = ">2sBBI"
_STRUCT_CRC = ">I"

# Field kinds of the schemas below.
_UINT = const(0)  # bounds: min, max value
_BYTES = const(1)  # bounds: min, max length
_TEXT = const(2)  # bounds: min, max characters
_BOOL = const(3)
_MAP = const(4)  # a map with text keys and any values of the CBOR subset
_ENVELOPES = const(5)  # array of byte strings: RECORDS batch limits

# Per message type: (key, name, kind, required, low, high).
_SCHEMAS = {
    HELLO: (
        (1, "gateway_id", _TEXT, True, 1, MAX_ID_CHARS),
        (2, "software_name", _TEXT, True, 1, MAX_ID_CHARS),
        (3, "software_version", _TEXT, True, 1, MAX_ID_CHARS),
        (4, "software_digest", _BYTES, True, 32, 32),
        (5, "boot", _UINT, True, 0, _MAX_U64),
        (6, "highest_seq", _UINT, False, 0, _MAX_U64),  # absent: the journal holds nothing
        (7, "kid", _BYTES, True, 32, 32),
        # The key_rotated record announcing `kid`, signed with the previous key: the host may not
        # hold it yet if the session that was to upload it ended first.
        (8, "key_announcement", _BYTES, False, 1, MAX_ENVELOPE_BYTES),
    ),
    CHALLENGE: (
        (1, "nonce", _BYTES, True, MIN_NONCE_BYTES, MAX_NONCE_BYTES),
        (2, "host_time_ms", _UINT, True, 0, _MAX_TIME_MS),
    ),
    AUTH: ((1, "signature", _BYTES, True, 64, 64),),
    RECORDS: ((1, "envelopes", _ENVELOPES, True, 1, MAX_BATCH_RECORDS),),
    ACK: (
        (1, "seq", _UINT, False, 0, _MAX_U64),  # absent: the host holds nothing of this gateway
        (2, "host_time_ms", _UINT, True, 0, _MAX_TIME_MS),
    ),
    NACK: (
        (1, "code", _UINT, True, 0, _MAX_NACK_CODE),
        (2, "reason", _TEXT, True, 0, MAX_TEXT_CHARS),
    ),
    COMMAND: (
        (1, "id", _UINT, True, 0, _MAX_COMMAND_ID),
        (2, "name", _TEXT, True, 1, MAX_ID_CHARS),
        (3, "args", _MAP, True, None, None),
    ),
    COMMAND_RESULT: (
        (1, "id", _UINT, True, 0, _MAX_COMMAND_ID),
        (2, "ok", _BOOL, True, None, None),
        (3, "result", _MAP, False, None, None),  # present exactly when ok
        (4, "error", _TEXT, False, 1, MAX_TEXT_CHARS),  # present exactly when not ok
    ),
    PING: (),
    PONG: (),
}


def type_name(msg_type):
    return TYPE_NAMES.get(msg_type, "type %d" % msg_type)


def _fail(msg_type, name, key, problem):
    return UplinkError("%s field %r (key %d): %s" % (type_name(msg_type), name, key, problem))


def _check_value(msg_type, field, value):
    key, name, kind, _, low, high = field
    if kind == _UINT:
        # Identity checks first: bool is an int subclass on CPython.
        if value is True or value is False or not isinstance(value, int):
            raise _fail(msg_type, name, key, "must be an unsigned integer")
        if not low <= value <= high:
            raise _fail(msg_type, name, key, "%d is outside %d..%d" % (value, low, high))
    elif kind == _BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise _fail(msg_type, name, key, "must be a byte string")
        if not low <= len(value) <= high:
            raise _fail(
                msg_type, name, key, "%d bytes is outside %d..%d" % (len(value), low, high)
            )
    elif kind == _TEXT:
        if not isinstance(value, str):
            raise _fail(msg_type, name, key, "must be a text string")
        if not low <= len(value) <= high:
            raise _fail(
                msg_type, name, key, "%d characters is outside %d..%d" % (len(value), low, high)
            )
    elif kind == _BOOL:
        if value is not True and value is not False:
            raise _fail(msg_type, name, key, "must be true or false")
    elif kind == _MAP:
        if not isinstance(value, dict):
            raise _fail(msg_type, name, key, "must be a map")
        for map_key in value:
            if not isinstance(map_key, str):
                raise _fail(msg_type, name, key, "map key %r is not a text string" % (map_key,))
    else:  # _ENVELOPES
        if not isinstance(value, (list, tuple)):
            raise _fail(msg_type, name, key, "must be an array of byte strings")
        if not low <= len(value) <= high:
            raise _fail(
                msg_type, name, key, "%d envelopes is outside %d..%d" % (len(value), low, high)
            )
        total_bytes = 0
        for index, envelope in enumerate(value):
            if not isinstance(envelope, (bytes, bytearray)) or not envelope:
                problem = "envelope %d is not a non-empty byte string" % index
                raise _fail(msg_type, name, key, problem)
            if len(envelope) > MAX_ENVELOPE_BYTES:
                raise _fail(
                    msg_type,
                    name,
                    key,
                    "envelope %d is %d bytes, over MAX_ENVELOPE_BYTES=%d"
                    % (index, len(envelope), MAX_ENVELOPE_BYTES),
                )
            total_bytes += len(envelope)
        if total_bytes > MAX_BATCH_BYTES:
            raise _fail(
                msg_type,
                name,
                key,
                "%d bytes in all, over MAX_BATCH_BYTES=%d" % (total_bytes, MAX_BATCH_BYTES),
            )


def _check_result_pairing(msg_type, fields):
    # COMMAND_RESULT carries a result map on success and an error text on failure, never both.
    if msg_type == COMMAND_RESULT:
        ok = fields["ok"]
        if ("result" in fields) != ok or ("error" in fields) == ok:
            raise UplinkError(
                "COMMAND_RESULT: ok=%s needs %s"
                % (ok, "a result and no error" if ok else "an error and no result")
            )


def _schema(msg_type):
    schema = _SCHEMAS.get(msg_type)
    if schema is None:
        raise UplinkError("unknown message type %r" % (msg_type,))
    return schema


def encode_payload(msg_type, fields):
    """The CBOR payload of a message. ``fields`` maps field names to values; an optional field
    is left out or None. Raises UplinkError naming the field that is missing, unknown or out of
    bounds."""
    schema = _schema(msg_type)
    wire = {}
    present = {}
    for field in schema:
        value = fields.get(field[1])
        if value is None:
            if field[3]:
                raise _fail(msg_type, field[1], field[0], "is required")
            continue
        _check_value(msg_type, field, value)
        wire[field[0]] = value
        present[field[1]] = value
    for name in fields:
        if name not in present and fields[name] is not None:
            raise UplinkError("%s has no field %r" % (type_name(msg_type), name))
    _check_result_pairing(msg_type, present)
    try:
        return cbor.dumps(wire)
    except CBORError as exc:  # a value inside args or result outside the CBOR subset
        raise UplinkError("%s: %s" % (type_name(msg_type), exc))


def decode_payload(msg_type, payload):
    """The fields (by name) of a message from its CBOR payload; raises UplinkError naming the
    field that is missing, unknown or out of bounds."""
    schema = _schema(msg_type)
    try:
        wire = cbor.loads(payload)
    except CBORError as exc:
        raise UplinkError("%s payload is not deterministic CBOR: %s" % (type_name(msg_type), exc))
    if not isinstance(wire, dict):
        raise UplinkError("%s payload must be a CBOR map" % type_name(msg_type))
    fields = {}
    for field in schema:
        key = field[0]
        if key in wire:
            _check_value(msg_type, field, wire[key])
            fields[field[1]] = wire[key]
        elif field[3]:
            raise _fail(msg_type, field[1], key, "is required")
    if len(fields) != len(wire):
        for key in wire:
            if not _known_key(schema, key):
                raise UplinkError("%s has no key %r" % (type_name(msg_type), key))
    _check_result_pairing(msg_type, fields)
    return fields


def _known_key(schema, key):
    for field in schema:
        if field[0] == key:
            return True
    return False


def encode(msg_type, fields):
    """One whole frame (a bytearray) for a message; see encode_payload."""
    payload = encode_payload(msg_type, fields)
    length = len(payload)
    frame = bytearray(HEADER_BYTES + length + CRC_BYTES)
    struct.pack_into(_STRUCT_HEADER, frame, 0, MAGIC, VERSION, msg_type, length)
    frame[HEADER_BYTES : HEADER_BYTES + length] = payload
    struct.pack_into(_STRUCT_CRC, frame, HEADER_BYTES + length, _frame_crc(frame, length))
    return frame


def _frame_crc(frame, payload_length):
    return crc32(memoryview(frame)[: HEADER_BYTES + payload_length])


def parse_header(header, max_payload_bytes=MAX_PAYLOAD_BYTES):
    """(type, payload length) from the first HEADER_BYTES of a frame, all checked."""
    magic, version, msg_type, length = struct.unpack_from(_STRUCT_HEADER, header, 0)
    if magic != MAGIC:
        raise UplinkError("bad magic %r, expected %r" % (bytes(magic), MAGIC))
    if version != VERSION:
        raise UplinkError("unsupported protocol version %d, expected %d" % (version, VERSION))
    if msg_type not in _SCHEMAS:
        raise UplinkError("unknown message type %d" % msg_type)
    if length > max_payload_bytes:
        raise UplinkError(
            "%s payload length %d is over the limit of %d bytes"
            % (type_name(msg_type), length, max_payload_bytes)
        )
    return msg_type, length


def decode_frame(frame):
    """(type, fields) from one whole frame (header, payload and CRC) with a checked header."""
    length = len(frame) - HEADER_BYTES - CRC_BYTES
    msg_type = frame[3]
    (received_crc,) = struct.unpack_from(_STRUCT_CRC, frame, HEADER_BYTES + length)
    expected_crc = _frame_crc(frame, length)
    if received_crc != expected_crc:
        raise UplinkError(
            "%s frame CRC-32 is %08x, computed %08x"
            % (type_name(msg_type), received_crc, expected_crc)
        )
    payload = memoryview(frame)[HEADER_BYTES : HEADER_BYTES + length]
    return msg_type, decode_payload(msg_type, payload)


class FrameDecoder:
    """Reassembles frames from a byte stream cut anywhere.

    ``feed(data)`` takes bytes up to the end of the current frame and returns ``(used, message)``:
    ``message`` is ``(type, fields)`` when a frame completed, else None (need more bytes); the
    caller feeds ``data[used:]`` next. The header is buffered in 8 preallocated bytes and the
    frame buffer is allocated only after the header passed parse_header. After an UplinkError the
    stream is out of step: close the connection (the decoder starts afresh if fed again).
    """

    def __init__(self, max_payload_bytes=MAX_PAYLOAD_BYTES):
        self._max_payload_bytes = max_payload_bytes
        self._header = bytearray(HEADER_BYTES)
        self._frame = None
        self._filled = 0

    def feed(self, data):
        available = len(data)
        used = 0
        if self._frame is None:
            used = min(HEADER_BYTES - self._filled, available)
            self._header[self._filled : self._filled + used] = data[:used]
            self._filled += used
            if self._filled < HEADER_BYTES:
                return used, None
            self._filled = 0  # the next header starts afresh, even if this one is refused
            _, length = parse_header(self._header, self._max_payload_bytes)
            self._frame = bytearray(HEADER_BYTES + length + CRC_BYTES)
            self._frame[:HEADER_BYTES] = self._header
            self._filled = HEADER_BYTES
        frame = self._frame
        take = min(len(frame) - self._filled, available - used)
        frame[self._filled : self._filled + take] = data[used : used + take]
        self._filled += take
        used += take
        if self._filled < len(frame):
            return used, None
        self._frame = None
        self._filled = 0
        return used, decode_frame(frame)


def auth_message(nonce, hello_fields):
    """The bytes AUTH signs: cbor([AUTH_CONTEXT, nonce, gateway_id, HELLO payload]).

    The nonce is the host's fresh CHALLENGE, so a captured AUTH is worthless on any other
    connection; the HELLO payload (deterministic, so the host re-encodes the identical bytes)
    binds the claimed gateway, software, boot epoch, journal height and kid to the signature.
    """
    return cbor.dumps(
        [AUTH_CONTEXT, nonce, hello_fields["gateway_id"], encode_payload(HELLO, hello_fields)]
    )
