# The uplink codec and the client's pure parts, on both interpreters and in a 192 KB heap: known
# frames byte for byte, every message type through the stream decoder one byte at a time,
# header and payload faults raising UplinkError that names the field, the AUTH message, the
# client's backoff bounds, ACK ceiling and command results.
# heapsize: 192K
from binascii import unhexlify

from known_vectors import RFC_KEY
from meterseal.firmware import signer
from meterseal.firmware.uplink import UplinkClient
from meterseal.protocol import cbor
from meterseal.protocol import uplink as wire
from meterseal.protocol.errors import ProtocolError, UplinkError


def raises_uplink_error(function, *args):
    try:
        function(*args)
    except UplinkError as exc:
        assert isinstance(exc, ProtocolError) and isinstance(exc, ValueError)
        return str(exc)
    raise AssertionError("no UplinkError from %r" % (args,))


# Known frames; CRCs from zlib.crc32 on CPython.
PING_FRAME = unhexlify("4d53010900000001a0" "5cc8cc0e")
ACK_FRAME = unhexlify("4d53010500000009a2011907d0021903e8" "fa878077")
assert wire.encode(wire.PING, {}) == PING_FRAME
assert wire.encode(wire.ACK, {"seq": 2000, "host_time_ms": 1000}) == ACK_FRAME

DIGEST = b"\x11" * 32
KID = b"\x22" * 32
HELLO = {
    "gateway_id": "MS-GW-0001",
    "software_name": "meterseal-gw",
    "software_version": "0.1.0",
    "software_digest": DIGEST,
    "boot": 3,
    "highest_seq": 41,
    "kid": KID,
}
MESSAGES = (
    (wire.HELLO, HELLO),
    (wire.CHALLENGE, {"nonce": b"\x33" * 16, "host_time_ms": 1767225600000}),
    (wire.AUTH, {"signature": b"\x44" * 64}),
    (wire.RECORDS, {"envelopes": [b"\xd2\x84", b"\x55" * 300]}),
    (wire.ACK, {"seq": 41, "host_time_ms": 1767225600000}),
    (wire.ACK, {"host_time_ms": 5}),
    (wire.NACK, {"code": wire.NACK_BUSY, "reason": "maintenance"}),
    (wire.COMMAND, {"id": 9, "name": "read_totalizers", "args": {"nozzles": [1, 2]}}),
    (wire.COMMAND_RESULT, {"id": 9, "ok": True, "result": {"totalizers_ml": [5, 6]}}),
    (wire.COMMAND_RESULT, {"id": 10, "ok": False, "error": "unknown command"}),
    (wire.PING, {}),
    (wire.PONG, {}),
)

# Every message, all in one stream, fed one byte at a time.
stream = bytearray()
for msg_type, fields in MESSAGES:
    stream.extend(wire.encode(msg_type, fields))
decoder = wire.FrameDecoder()
decoded = []
for index in range(len(stream)):
    used, message = decoder.feed(memoryview(stream)[index : index + 1])
    assert used == 1
    if message is not None:
        decoded.append(message)
assert len(decoded) == len(MESSAGES)
for (msg_type, fields), (got_type, got_fields) in zip(MESSAGES, decoded):
    assert got_type == msg_type and got_fields == fields, (msg_type, got_fields)

# Whole stream at once: feed stops at each frame's end.
decoder = wire.FrameDecoder()
view = memoryview(stream)
count = 0
while view:
    used, message = decoder.feed(view)
    view = view[used:]
    count += message is not None
assert count == len(MESSAGES)

# Header faults are caught from the 8 header bytes alone, before the frame buffer exists.
huge = unhexlify("4d530104ffffffff")
assert "over the limit" in raises_uplink_error(wire.FrameDecoder().feed, huge)
assert "over the limit" in raises_uplink_error(
    wire.FrameDecoder(100).feed, unhexlify("4d53010400000065")
)
assert "magic" in raises_uplink_error(wire.FrameDecoder().feed, b"GET / HTTP/1.1\r\n")
assert "version" in raises_uplink_error(wire.FrameDecoder().feed, unhexlify("4d53020900000001"))
assert "unknown message type 0" in raises_uplink_error(
    wire.FrameDecoder().feed, unhexlify("4d53010000000001")
)
corrupt = bytearray(PING_FRAME)
corrupt[-1] ^= 1
assert "CRC-32" in raises_uplink_error(wire.FrameDecoder().feed, corrupt)
assert wire.FrameDecoder().feed(PING_FRAME[:11]) == (11, None)  # need more bytes

# Payload faults name the message and the field.
def fault(msg_type, fields):
    return raises_uplink_error(wire.encode, msg_type, fields)


short_nonce = {"nonce": b"x" * 15, "host_time_ms": 0}
assert "CHALLENGE field 'nonce' (key 1)" in fault(wire.CHALLENGE, short_nonce)
assert "'kid'" in fault(wire.HELLO, dict(HELLO, kid=None))
assert "'boot'" in fault(wire.HELLO, dict(HELLO, boot=True))
assert "no field 'colour'" in fault(wire.PING, {"colour": 1})
assert "'envelopes'" in fault(wire.RECORDS, {"envelopes": []})
oversized = {"envelopes": [b"x" * (wire.MAX_ENVELOPE_BYTES + 1)]}
assert "over MAX_ENVELOPE_BYTES" in fault(wire.RECORDS, oversized)
assert "MAX_BATCH_BYTES" in fault(wire.RECORDS, {"envelopes": [b"x" * 4000] * 3})
assert "ok=True" in fault(wire.COMMAND_RESULT, {"id": 1, "ok": True, "error": "x"})
assert "ok=False" in fault(wire.COMMAND_RESULT, {"id": 1, "ok": False})
assert "map key 1" in fault(wire.COMMAND, {"id": 1, "name": "x", "args": {1: 2}})
assert "unknown message type 11" in fault(11, {})
# Decoding: unknown keys, non-deterministic CBOR and non-maps are refused.
assert "no key 3" in raises_uplink_error(wire.decode_payload, wire.ACK, cbor.dumps({2: 1, 3: 0}))
unsorted_map = b"\xa2\x02\x00\x01\x00"
assert "deterministic" in raises_uplink_error(wire.decode_payload, wire.PING, unsorted_map)
assert "must be a CBOR map" in raises_uplink_error(wire.decode_payload, wire.PONG, b"\x80")

# AUTH signs [context, nonce, gateway id, HELLO payload]; the host re-encodes the same bytes.
nonce = b"\x66" * 32
message = wire.auth_message(nonce, HELLO)
assert cbor.loads(message) == [
    "meterseal uplink AUTH v1",
    nonce,
    "MS-GW-0001",
    wire.encode_payload(wire.HELLO, HELLO),
]
hello_as_received = wire.decode_payload(wire.HELLO, wire.encode_payload(wire.HELLO, HELLO))
assert wire.auth_message(nonce, hello_as_received) == message
assert wire.auth_message(nonce, dict(HELLO, boot=4)) != message

# The client: backoff bounds, ACK ceiling, command results.
class Journal:
    def __init__(self):
        self.acknowledged = []

    def acknowledge(self, seq):
        self.acknowledged.append(seq)


class Recorder:
    def __init__(self):
        self.host_times = []

    def host_time(self, host_ms):
        self.host_times.append(host_ms)

    def key_announcement(self):
        return None  # the first key: nothing to announce

    def command(self, name, args):
        if name == "raise":
            raise OSError(5)
        if name == "float":
            return {"value": 1.5}
        if name == "list":
            return [1]
        return {"error": "unknown command " + name} if name != "echo" else {"args": args}


journal = Journal()
recorder = Recorder()
lines = []
client = UplinkClient(
    "127.0.0.1", 1, "MS-GW-0001", {"name": "gw", "version": "1", "digest": DIGEST}, 1,
    signer.SoftwareSigner(RFC_KEY), journal, recorder, log=lines.append,
    backoff_min_ms=100, backoff_max_ms=3000,
)
for failures in range(1, 30):
    ceiling_ms = min(3000, 100 << (failures - 1))
    for _ in range(5):
        delay_ms = client.backoff_ms(failures)
        assert ceiling_ms - ceiling_ms // 2 <= delay_ms <= ceiling_ms, (failures, delay_ms)

client._ack_ceiling = 10
client._on_ack({"seq": 10, "host_time_ms": 77})
client._on_ack({"seq": 9, "host_time_ms": 78})  # older: no cursor move, time still passed on
assert journal.acknowledged == [10] and recorder.host_times == [77, 78]
too_far = {"seq": 11, "host_time_ms": 0}
assert "beyond the highest seq sent" in raises_uplink_error(client._on_ack, too_far)

answer = client._run_command({"id": 1, "name": "echo", "args": {"a": 1}})
assert answer == {"id": 1, "ok": True, "result": {"args": {"a": 1}}}
answer = client._run_command({"id": 2, "name": "nope", "args": {}})
assert answer == {"id": 2, "ok": False, "error": "unknown command nope"}
for name in ("raise", "float", "list"):
    answer = client._run_command({"id": 3, "name": name, "args": {}})
    assert answer["ok"] is False and answer["error"], answer
    wire.encode(wire.COMMAND_RESULT, answer)  # every answer is sendable
assert client._run_command({"id": 3, "name": "raise", "args": {}})["error"].startswith("OSError")

print("PASS uplink_checks")
