# Wayne DART codec on both interpreters: captured and stuffed frames byte for byte, the stream
# decoder through garbage, chunking, corruption and overflow, and typed transactions.
# heapsize: 192K
from binascii import unhexlify

from known_vectors import DART_CAPTURED_FRAMES, DART_CONTROL_FRAMES, DART_STUFFED_FRAMES
from meterseal.protocol import dart


def typed(expected):
    return [getattr(dart, name)(*args) for name, args in expected]


def raises_dart_error(function, *args):
    try:
        function(*args)
    except dart.DARTError:
        return True
    return False


# Captured frames: decode to the expected values, re-encode to the same bytes.
wire_frames = []
for frame_hex, address, block, expected in DART_CAPTURED_FRAMES:
    raw = unhexlify(frame_hex)
    frame = dart.decode_frame(raw)
    assert (frame.address, frame.kind, frame.block) == (address, dart.DATA, block), frame
    transactions = frame.transactions(dart.FROM_PUMP)
    assert transactions == typed(expected), transactions
    assert dart.encode_data(address, block, transactions) == raw, frame_hex
    assert frame.encode() == raw
    wire_frames.append((raw, frame))

sale = dart.decode_frame(unhexlify(DART_CAPTURED_FRAMES[1][0])).transactions(dart.FROM_PUMP)
assert dart.rescale(sale[0].volume, 2, 3) == 310  # mL
assert dart.rescale(sale[0].amount, 2, 2) == 51  # minor units
assert dart.rescale(sale[1].price, 3, 5) == 164500  # minor units per kilolitre
assert sale[2].status == dart.STATUS_FILLING_COMPLETED

# Stuffing: DLE before FA in CRC low, CRC high and data; a literal DLE is not doubled.
for frame_hex, direction, address, block, expected in DART_STUFFED_FRAMES:
    raw = unhexlify(frame_hex)
    frame = dart.decode_frame(raw)
    assert (frame.address, frame.block) == (address, block)
    assert frame.transactions(direction) == typed(expected)
    assert dart.encode_data(address, block, typed(expected)) == raw, frame_hex
    wire_frames.append((raw, frame))

for frame_hex, address, kind, block in DART_CONTROL_FRAMES:
    raw = unhexlify(frame_hex)
    assert dart.encode_short(address, kind, block) == raw
    assert dart.decode_frame(raw) == dart.Frame(address, kind, block)
    wire_frames.append((raw, dart.Frame(address, kind, block)))

# The stream decoder: garbage between frames (including a stray DLE and a lone SF), every chunk
# size, each frame delivered once and in order.
garbage = b"\x00\xff\x10\xfa\x03\x99\x10"
stream = bytearray(garbage)
for raw, _ in wire_frames:
    stream.extend(raw)
    stream.extend(garbage)
expected_frames = [frame for _, frame in wire_frames]
for chunk_size in (1, 2, 3, 7, 64, len(stream)):
    decoder = dart.FrameDecoder()
    got = []
    for chunk_start in range(0, len(stream), chunk_size):
        chunk = bytes(stream[chunk_start : chunk_start + chunk_size])
        position = 0
        while position < len(chunk):
            used, result = decoder.feed(chunk, position)
            position += used
            if isinstance(result, dart.Frame):
                got.append(result)
    assert got == expected_frames, (chunk_size, got)
    assert decoder.bad_frames == 0 and decoder.frames == len(expected_frames)

# A corrupted frame is counted and reported, never delivered; the next frame still arrives.
good = wire_frames[1][0]
for index in range(len(good) - 1):
    corrupted = bytearray(good)
    corrupted[index] ^= 0x01
    decoder = dart.FrameDecoder()
    frames = decoder.frames_in(bytes(corrupted) + good)
    assert frames == [wire_frames[1][1]], (index, frames)
    if index > 0 and corrupted[index] not in (dart.SF, dart.DLE):
        assert decoder.bad_frames == 1, (index, decoder.last_error)
decoder = dart.FrameDecoder()
used, result = decoder.feed(good[:-3] + b"\x00\x03\xfa")
assert result is dart.BAD_FRAME and decoder.last_error.startswith("CRC"), decoder.last_error

# A frame whose SF is lost merges with the next one; the next one is still found.
decoder = dart.FrameDecoder()
assert decoder.frames_in(good[:-1] + good) == [wire_frames[1][1]]

# A run longer than MAX_FRAME_BYTES without SF neither grows the buffer nor hides a frame.
decoder = dart.FrameDecoder()
flood = b"\x50\x30\x01" * (dart.MAX_FRAME_BYTES // 2)
assert decoder.frames_in(flood + good) == [wire_frames[1][1]]
assert decoder.bad_frames == 1 and decoder.discarded_bytes >= len(flood)

# Never a raise on line input, whatever the bytes.
decoder = dart.FrameDecoder()
seed = 12345
noise = bytearray(4000)
for i in range(len(noise)):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    noise[i] = (seed >> 16) & 0xFF
decoder.frames_in(bytes(noise))
assert decoder.frames_in(good) == [wire_frames[1][1]]

# On MicroPython the per-byte path allocates nothing until a frame ends.
try:
    from micropython import heap_lock, heap_unlock
except ImportError:
    heap_lock = heap_unlock = None


def push_all(decoder, data):
    push = decoder.push
    count = len(data)
    i = 0
    heap_lock()
    try:
        while i < count:
            push(data[i])
            i += 1
    finally:
        heap_unlock()


if heap_lock is not None:
    decoder = dart.FrameDecoder()
    push_all(decoder, b"\x00\x10\x10\xfa\x41\x99\xfa" + good[:-1])
    assert decoder.push(dart.SF) == wire_frames[1][1]

# Typed transactions, both directions, round-trip through a frame.
to_pump = [
    dart.CD1Command(dart.CMD_AUTHORIZE),
    dart.CD2AllowedNozzles((1, 2, 15)),
    dart.CD3PresetVolume(2000),
    dart.CD4PresetAmount(99999999),
    dart.CD5PriceUpdate((1645, 999999, 0)),
    dart.CD101RequestTotalCounters(0x11),
]
from_pump = [
    dart.DC1PumpStatus(dart.STATUS_FILLING),
    dart.DC2FilledVolumeAmount(12345678, 0),
    dart.DC3NozzleStatusPrice(1645, 2, True),
    dart.DC5AlarmCode(0x09),
    dart.DC7PumpParameters(2, 2, 3, 99999999, range(15)),
    dart.DC9PumpIdentity("0012345678"),
    dart.DC101TotalCounters(0x11, 9999999999, 42, 0),
]
for direction, transactions in ((dart.TO_PUMP, to_pump), (dart.FROM_PUMP, from_pump)):
    raw = dart.encode_data(0x6F, 15, transactions)
    assert dart.decode_frame(raw).transactions(direction) == transactions
assert dart.DC3NozzleStatusPrice(1645, 2, True).encode() == unhexlify("030400164512")

# Malformed transactions raise DARTError with the field in the message.
assert raises_dart_error(dart.split_transactions, b"\x01\x02\x05")  # LNG past the data
assert raises_dart_error(dart.split_transactions, b"\x01\x01\x05\x02")  # header cut short
assert raises_dart_error(dart.decode_transactions, b"\x02\x07" + bytes(7), dart.FROM_PUMP)
assert raises_dart_error(dart.decode_transactions, b"\x03\x04\x00\x16\x45\x20", dart.FROM_PUMP)
assert raises_dart_error(dart.decode_transactions, b"\x02\x08" + b"\x0a" * 8, dart.FROM_PUMP)
assert dart.decode_transactions(b"\x42\x00", dart.FROM_PUMP) == [dart.RawTransaction(0x42, b"")]
assert raises_dart_error(dart.decode_frame, good + b"\x00")
assert raises_dart_error(dart.decode_frame, good[:-1])
assert raises_dart_error(dart.encode_short, 0x4F, dart.POLL)
assert raises_dart_error(dart.encode_short, 0x50, dart.DATA)
assert raises_dart_error(dart.encode_data, 0x50, 16, [])

# BCD and scaling edges.
assert dart.bcd_encode(0, 4) == bytes(4)
assert dart.bcd_encode(99999999, 4) == b"\x99\x99\x99\x99"
assert dart.bcd_decode(b"\x12\x34\x56\x78\x90") == 1234567890
assert raises_dart_error(dart.bcd_encode, 100000000, 4)
assert raises_dart_error(dart.bcd_encode, -1, 4)
assert raises_dart_error(dart.bcd_decode, b"\x1a")
assert dart.rescale(1645, 3, 3) == 1645 and dart.rescale(3100, 3, 1) == 31
assert raises_dart_error(dart.rescale, 1645, 3, 2)
assert [dart.next_block(n) for n in (0, 1, 14, 15)] == [1, 2, 15, 1]

print("PASS dart_checks")
