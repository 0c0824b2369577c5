"""Wayne DART: the line protocol (level 2) and the pump interface transactions (level 3) that a
forecourt controller and a fuel dispenser exchange over RS-485 (9600 baud, 8 data bits, odd
parity, 1 stop bit; half duplex; pump addresses 0x50..0x6F). docs/protocols/dart.md is the full
description, with the sources and the choices made where they disagree.

API
    Frames (level 2)
        Frame(address, kind, block=0, data=b"")  .ctrl  .encode()  .transactions(direction)
        encode_short(address, kind, block=0) -> bytes        POLL, ACK, NAK, EOT, ACKPOLL
        encode_data(address, block, transactions) -> bytes   typed or raw transactions
        encode_frame(frame) -> bytes
        decode_frame(raw) -> Frame                 exactly one frame, else DARTError
        FrameDecoder().feed(data, start=0, end=None) -> (used, Frame | NEED_MORE | BAD_FRAME)
                      .push(byte) -> Frame | NEED_MORE | BAD_FRAME
                      .frames_in(data) -> [Frame]
            counters: frames, bad_frames, discarded_bytes; last_error; reset()
        next_block(block) -> int                   1..15, wrapping 15 -> 1
    Transactions (level 3); direction is TO_PUMP or FROM_PUMP, since CDn and DCn share numbers
        split_transactions(data) -> [RawTransaction]
        decode_transactions(data, direction) -> [typed transaction | RawTransaction]
        encode_transactions(transactions) -> bytes
        to pump:   CD1Command(command)  CD2AllowedNozzles(nozzles)  CD3PresetVolume(volume)
                   CD4PresetAmount(amount)  CD5PriceUpdate(prices)
                   CD101RequestTotalCounters(counter)
        from pump: DC1PumpStatus(status)  DC2FilledVolumeAmount(volume, amount)
                   DC3NozzleStatusPrice(price, nozzle, nozzle_out)  DC5AlarmCode(alarm)
                   DC7PumpParameters(volume_decimals, amount_decimals, price_decimals,
                                     max_amount, grades, reserved=None)
                   DC9PumpIdentity(identity)  DC101TotalCounters(counter, total, meter1, meter2)
        each: .TRANS  .encode() -> TRANS LNG DATA bytes  Class.decode(payload) -> instance
    Values
        bcd_encode(value, size) -> bytes   bcd_decode(data) -> int
        rescale(value, decimals, target_decimals) -> int   exact: rescale(1645, 3, 5) == 164500
    Constants: POLL DATA NAK EOT ACK ACKPOLL (KIND_NAMES), CMD_* (COMMAND_NAMES), STATUS_*
        (STATUS_NAMES), ALARM_NAMES, ADDRESS_MIN, ADDRESS_MAX, MAX_FRAME_BYTES, MAX_DATA_BYTES
    DARTError(ProtocolError): malformed values and transactions, bad arguments to encoders

Frames on the wire::

    data frame     [ADR][CTRL 3n][TRANS][LNG][DATA: LNG bytes]...[CRC lo][CRC hi][ETX 03][SF FA]
                   |<------ CRC-16/ARC over these bytes ------->|
    control frame  [ADR][CTRL][SF FA]

    CTRL = kind (high nibble) | block sequence number (low nibble)
        POLL 0x20   DATA 0x3n   NAK 0x5n   EOT 0x7n   ACK 0xCn   ACKPOLL 0xEn

Byte stuffing: a DLE (0x10) goes before every 0xFA from ADR through CRC hi, so an SF that is not
preceded by DLE always ends a frame. DLE itself is not doubled and ETX SF are never stuffed. The
rule is unambiguous because the byte before a frame's own SF is ETX (data frames) or CTRL (control
frames), never DLE. ADR and CTRL can never be 0xFA, so in practice only DATA and CRC are stuffed.

Recovery in FrameDecoder: bytes are de-stuffed into one preallocated buffer until an unescaped SF.
The bytes before that SF are then searched, left to right, for the first position that reads as
a whole valid frame (ADR in range, a known CTRL kind, and for data frames ETX and a matching
CRC); what precedes it is counted in discarded_bytes. A control frame, which has no CRC, is not
taken behind a failed data frame start (it is likelier to be that frame's damaged tail). If no
position qualifies, but bytes that start like a frame (ADR, then a known CTRL) are there, the
frame is counted in bad_frames, reported as BAD_FRAME and never delivered.

A run longer than MAX_FRAME_BYTES without an SF drops bytes from the front up to the next
plausible frame start (one bad frame per such run). A frame whose SF is lost merges with the
next one; the next data frame is still found, because the search tries every start. The price of
trying every start: garbage that happens to read as ADR, CTRL and a matching CRC (odds about
2^-16 per plausible start) would pass as a frame, as on any CRC-16 link.
"""

from .crc import crc16_arc
from .errors import ProtocolError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


class DARTError(ProtocolError):
    pass


ETX = const(0x03)
DLE = const(0x10)
SF = const(0xFA)

ADDRESS_MIN = const(0x50)
ADDRESS_MAX = const(0x6F)

# Frame kinds: the high nibble of CTRL. Only DATA carries transactions, a CRC and ETX.
POLL = const(0x20)
DATA = const(0x30)
NAK = const(0x50)
EOT = const(0x70)
ACK = const(0xC0)
ACKPOLL = const(0xE0)
KIND_NAMES = {POLL: "POLL", DATA: "DATA", NAK: "NAK", EOT: "EOT", ACK: "ACK", ACKPOLL: "ACKPOLL"}

# Indexed by CTRL >> 4: 0 unknown kind, 1 control frame, 2 data frame. A table keeps the
# per-candidate test in the decoder free of allocation.
_KIND_TABLE = b"\x00\x00\x01\x02\x00\x01\x00\x01\x00\x00\x00\x00\x01\x00\x01\x00"
_CONTROL = const(1)
_DATA = const(2)

# Longest frame accepted, counted de-stuffed from ADR through ETX. It bounds the decoder's one
# buffer: without it a line that never sends SF (noise, a stuck transmitter, a hostile tap) would
# grow the buffer until the gateway runs out of heap. The largest pump interface block seen in
# practice (DC7 with DC1 and DC3) is under 80 bytes.
MAX_FRAME_BYTES = const(256)
# ADR CTRL + CRC lo, CRC hi, ETX around the transactions.
_DATA_OVERHEAD = const(5)
MAX_DATA_BYTES = const(251)

TO_PUMP = const(0)
FROM_PUMP = const(1)

# Results of FrameDecoder.feed besides a Frame.
NEED_MORE = None
BAD_FRAME = "bad frame"

# CD1 commands (the DCC byte).
CMD_RETURN_STATUS = const(0x00)
CMD_RETURN_PUMP_PARAMETERS = const(0x02)
CMD_RETURN_PUMP_IDENTITY = const(0x03)
CMD_RETURN_FILLING_INFORMATION = const(0x04)
CMD_RESET = const(0x05)
CMD_AUTHORIZE = const(0x06)
CMD_STOP = const(0x08)
CMD_SWITCH_OFF = const(0x0A)
CMD_SUSPEND = const(0x0D)
CMD_RESUME = const(0x0E)
CMD_RETURN_PRICES = const(0x0F)
COMMAND_NAMES = {
    CMD_RETURN_STATUS: "return status",
    CMD_RETURN_PUMP_PARAMETERS: "return pump parameters",
    CMD_RETURN_PUMP_IDENTITY: "return pump identity",
    CMD_RETURN_FILLING_INFORMATION: "return filling information",
    CMD_RESET: "reset",
    CMD_AUTHORIZE: "authorize",
    CMD_STOP: "stop",
    CMD_SWITCH_OFF: "switch off",
    CMD_SUSPEND: "suspend",
    CMD_RESUME: "resume",
    CMD_RETURN_PRICES: "return prices of all current grades",
}

# DC1 pump states.
STATUS_NOT_PROGRAMMED = const(0)
STATUS_RESET = const(1)
STATUS_AUTHORIZED = const(2)
STATUS_FILLING = const(4)
STATUS_FILLING_COMPLETED = const(5)
STATUS_MAX_REACHED = const(6)
STATUS_SWITCHED_OFF = const(7)
STATUS_SUSPENDED = const(8)
STATUS_NAMES = {
    STATUS_NOT_PROGRAMMED: "pump not programmed",
    STATUS_RESET: "reset",
    STATUS_AUTHORIZED: "authorized",
    STATUS_FILLING: "filling",
    STATUS_FILLING_COMPLETED: "filling completed",
    STATUS_MAX_REACHED: "max amount/volume reached",
    STATUS_SWITCHED_OFF: "switched off",
    STATUS_SUSPENDED: "suspended",
}

# DC5 alarm codes.
ALARM_NAMES = {
    0x01: "CPU reset",
    0x03: "RAM error",
    0x04: "PROM checksum error",
    0x06: "pulser error",
    0x07: "pulser current error",
    0x09: "emergency stop",
    0x0A: "power failure",
    0x0B: "pressure lost",
    0x0C: "blend ratio error",
    0x0D: "low leak error",
    0x0E: "high leak error",
    0x0F: "hose leak error",
    0x10: "VR monitor, error reset",
    0x11: "VR monitor, 10 consecutive errors",
    0x12: "VR monitor, shut down pump",
    0x13: "VR monitor, internal error",
    0x19: "VR control error",
    0x20: "VR control error, consecutive",
}

_NOZZLE_MAX = const(15)
_NOZZLE_OUT = const(0x10)
_PRICE_BYTES = const(3)
_VALUE_BYTES = const(4)
_TOTAL_BYTES = const(5)
_IDENTITY_BYTES = const(5)
_DC7_LENGTH = const(50)
_DC7_GRADES = const(15)
# DC7 bytes whose meaning the sources leave open, kept verbatim so a frame re-encodes exactly:
# 22 before the decimals, 4 between the decimals and the max amount, 2 before the grades.
_DC7_RESERVED = const(28)


# --- values ---------------------------------------------------------------------------------


def bcd_decode(data):
    """The unsigned integer in packed BCD `data`, most significant digit first."""
    value = 0
    for byte in data:
        high = byte >> 4
        low = byte & 0x0F
        if high > 9 or low > 9:
            raise DARTError("0x%02X is not a packed BCD byte" % byte)
        value = value * 100 + high * 10 + low
    return value


def bcd_encode(value, size):
    """`value` as `size` bytes of packed BCD (2 digits a byte), zero-padded on the left."""
    _check_int("BCD value", value, 0, None)
    out = bytearray(size)
    rest = value
    for i in range(size - 1, -1, -1):
        rest, low = divmod(rest, 10)
        rest, high = divmod(rest, 10)
        out[i] = high << 4 | low
    if rest:
        raise DARTError("%d does not fit in %d BCD digits" % (value, 2 * size))
    return bytes(out)


def rescale(value, decimals, target_decimals):
    """An integer read with `decimals` implied decimal places, as a count of units that have
    `target_decimals` places: rescale(31, 2, 3) == 310 (0.31 L in mL). Raises DARTError rather
    than round, so no quantity is silently changed."""
    if target_decimals >= decimals:
        return value * 10 ** (target_decimals - decimals)
    divisor = 10 ** (decimals - target_decimals)
    if value % divisor:
        raise DARTError(
            "%d with %d decimals is not a whole number of units with %d decimals"
            % (value, decimals, target_decimals)
        )
    return value // divisor


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise DARTError("%s must be an integer, got %r" % (name, value))
    if value < low or (high is not None and value > high):
        if high is None:
            raise DARTError("%s must be at least %d, got %d" % (name, low, value))
        raise DARTError("%s must be %d..%d, got %d" % (name, low, high, value))


def _check_length(name, payload, expected):
    if len(payload) != expected:
        raise DARTError("%s: LNG must be %d, got %d" % (name, expected, len(payload)))


# --- frames ---------------------------------------------------------------------------------


class Frame:
    """One DART frame, de-stuffed. `data` is the concatenated transactions of a DATA frame and
    empty for control frames; `block` is the sequence number in CTRL's low nibble."""

    def __init__(self, address, kind, block=0, data=b""):
        self.address = address
        self.kind = kind
        self.block = block
        self.data = data

    @property
    def ctrl(self):
        return self.kind | self.block

    def encode(self):
        return encode_frame(self)

    def transactions(self, direction):
        """The typed transactions of a DATA frame; see decode_transactions."""
        return decode_transactions(self.data, direction)

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.address == other.address
            and self.kind == other.kind
            and self.block == other.block
            and bytes(self.data) == bytes(other.data)
        )

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Frame(0x%02X, %s, %d, %r)" % (
            self.address,
            KIND_NAMES.get(self.kind, "0x%02X" % self.kind),
            self.block,
            bytes(self.data),
        )


def next_block(block):
    """The block sequence number after `block`: 1..15, wrapping 15 -> 1. 0 is only used for the
    first block after a reset."""
    return block % 15 + 1


def _check_address_and_block(address, block):
    _check_int("ADR", address, ADDRESS_MIN, ADDRESS_MAX)
    _check_int("block number", block, 0, 15)


def encode_short(address, kind, block=0):
    """A control frame: ADR CTRL SF. `kind` is POLL, ACK, NAK, EOT or ACKPOLL."""
    _check_address_and_block(address, block)
    if kind not in KIND_NAMES or _KIND_TABLE[kind >> 4] != _CONTROL:
        raise DARTError("kind 0x%02X is not a control frame kind" % kind)
    return bytes((address, kind | block, SF))


def encode_data(address, block, transactions):
    """A DATA frame carrying `transactions` (typed transactions or RawTransaction)."""
    return _encode_data_bytes(address, block, encode_transactions(transactions))


def _encode_data_bytes(address, block, data):
    _check_address_and_block(address, block)
    if len(data) > MAX_DATA_BYTES:
        raise DARTError("frame data is %d bytes; the limit is %d" % (len(data), MAX_DATA_BYTES))
    body = bytearray((address, DATA | block))
    body.extend(data)
    crc = crc16_arc(body)
    body.append(crc & 0xFF)
    body.append(crc >> 8)
    out = bytearray()
    for byte in body:
        if byte == SF:
            out.append(DLE)
        out.append(byte)
    out.append(ETX)
    out.append(SF)
    return bytes(out)


def encode_frame(frame):
    """The wire bytes of a Frame, stuffed and terminated."""
    if frame.kind == DATA:
        return _encode_data_bytes(frame.address, frame.block, frame.data)
    if frame.data:
        raise DARTError("a %s frame carries no data" % KIND_NAMES.get(frame.kind, "control"))
    return encode_short(frame.address, frame.kind, frame.block)


def decode_frame(raw):
    """The one frame that `raw` holds exactly (stuffed, through its SF). Raises DARTError on
    anything else: garbage, a bad frame, a missing SF or trailing bytes."""
    decoder = FrameDecoder()
    used, result = decoder.feed(raw)
    if result is BAD_FRAME:
        raise DARTError(decoder.last_error)
    if result is NEED_MORE:
        raise DARTError("no complete frame: %d byte(s) without a valid frame and SF" % len(raw))
    if decoder.discarded_bytes:
        raise DARTError("%d byte(s) of garbage before the frame" % decoder.discarded_bytes)
    if used != len(raw):
        raise DARTError("%d byte(s) after the frame's SF" % (len(raw) - used))
    return result


class FrameDecoder:
    """Stream decoder: feed it bytes as they arrive, in chunks of any size, and take frames out.

    feed returns (used, result) after the first frame event or at the end of the input:
    result is a Frame, BAD_FRAME (a corrupted frame was dropped; last_error says why) or
    NEED_MORE (all bytes consumed, no frame yet). Call again from start + used for the rest.
    push(byte) is the same for one byte, returning only the result. Neither raises on line
    input. A frame cut short by the MAX_FRAME_BYTES limit is counted, not reported.

    Counters: frames, bad_frames, discarded_bytes (garbage and dropped frames, counted
    de-stuffed). reset() drops a partial frame, e.g. after a line-idle timeout.
    """

    def __init__(self):
        # One buffer for the life of the decoder: the per-byte path never allocates.
        self._buffer = bytearray(MAX_FRAME_BYTES)
        self._view = memoryview(self._buffer)
        self._length = 0
        self._dle_pending = False
        self._overflowing = False
        self.frames = 0
        self.bad_frames = 0
        self.discarded_bytes = 0
        self.last_error = None

    def reset(self):
        self.discarded_bytes += self._length + self._dle_pending
        self._length = 0
        self._dle_pending = False
        self._overflowing = False

    def push(self, byte):
        """Take one byte off the line: a Frame, BAD_FRAME or NEED_MORE. It allocates nothing
        until a frame ends."""
        if self._dle_pending:
            self._dle_pending = False
            if byte == SF:
                self._append(SF)
                return NEED_MORE
            self._append(DLE)
        if byte == DLE:
            self._dle_pending = True
        elif byte == SF:
            return self._end_of_frame()
        else:
            self._append(byte)
        return NEED_MORE

    def feed(self, data, start=0, end=None):
        if end is None:
            end = len(data)
        i = start
        while i < end:
            result = self.push(data[i])
            i += 1
            if result is not NEED_MORE:
                return i - start, result
        return i - start, NEED_MORE

    def frames_in(self, data):
        """Every good Frame in `data` (host-side convenience; allocates a list)."""
        found = []
        position = 0
        while position < len(data):
            used, result = self.feed(data, position)
            position += used
            if isinstance(result, Frame):
                found.append(result)
        return found

    def _append(self, byte):
        if self._length == MAX_FRAME_BYTES:
            self._drop_to_next_start()
        self._buffer[self._length] = byte
        self._length += 1

    def _drop_to_next_start(self):
        buffer = self._buffer
        length = self._length
        drop = length
        for i in range(1, length):
            if _starts_frame(buffer, i, length):
                drop = i
                break
        # Count a run without SF once, however many plausible starts it holds.
        if _starts_frame(buffer, 0, length) and not self._overflowing:
            self._reject("frame longer than MAX_FRAME_BYTES")
        self._overflowing = True
        # Rare path: a byte loop moves the tail without a temporary copy.
        for i in range(drop, length):
            buffer[i - drop] = buffer[i]
        self._length = length - drop
        self.discarded_bytes += drop

    def _reject(self, reason):
        self.bad_frames += 1
        self.last_error = reason

    def _end_of_frame(self):
        buffer = self._buffer
        length = self._length
        self._length = 0
        self._overflowing = False
        first_error = None
        data_start_failed = False
        for i in range(length - 1):
            if not _starts_frame(buffer, i, length):
                continue
            error = self._check(i, length)
            kind = buffer[i + 1] & 0xF0
            # A control frame has no CRC: behind a data frame start that failed, it is more
            # likely that frame's damaged tail (a CRC byte in 0x50..0x6F, then a corrupted ETX)
            # than a frame of its own.
            if error is None and not (data_start_failed and kind != DATA):
                self.discarded_bytes += i
                self.frames += 1
                data = bytes(self._view[i + 2 : length - 3]) if kind == DATA else b""
                return Frame(buffer[i], kind, buffer[i + 1] & 0x0F, data)
            if kind == DATA:
                data_start_failed = True
            if first_error is None:
                first_error = error
        self.discarded_bytes += length
        if first_error is None:
            return NEED_MORE
        self._reject(first_error)
        return BAD_FRAME

    def _check(self, start, end):
        buffer = self._buffer
        if _KIND_TABLE[buffer[start + 1] >> 4] == _CONTROL:
            if end - start != 2:
                return "control frame 0x%02X 0x%02X followed by %d byte(s) before SF" % (
                    buffer[start],
                    buffer[start + 1],
                    end - start - 2,
                )
            return None
        if end - start < _DATA_OVERHEAD:
            return "data frame of %d byte(s) is shorter than ADR CTRL CRC ETX" % (end - start)
        if buffer[end - 1] != ETX:
            return "data frame ends in 0x%02X, not ETX, before SF" % buffer[end - 1]
        received = buffer[end - 3] | buffer[end - 2] << 8
        computed = crc16_arc(self._view[start : end - 3])
        if received != computed:
            return "CRC 0x%04X received, 0x%04X computed" % (received, computed)
        return None


def _starts_frame(buffer, i, length):
    # ADR in range, then (if already received) a known CTRL kind.
    if not ADDRESS_MIN <= buffer[i] <= ADDRESS_MAX:
        return False
    return i + 1 >= length or _KIND_TABLE[buffer[i + 1] >> 4] != 0


# --- transactions ---------------------------------------------------------------------------


class _Transaction:
    TRANS = None
    NAME = None

    def encode(self):
        payload = self.payload()
        if len(payload) > 255:
            raise DARTError("%s: data is %d bytes; LNG allows 255" % (self.NAME, len(payload)))
        return bytes((self.TRANS, len(payload))) + payload

    def __eq__(self, other):
        return type(other) is type(self) and other._fields() == self._fields()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "%s%r" % (self.NAME, self._fields())


class RawTransaction(_Transaction):
    """A transaction kept as bytes: one this module does not type, in either direction."""

    NAME = "RawTransaction"

    def __init__(self, trans, payload):
        _check_int("TRANS", trans, 0, 255)
        self.TRANS = trans
        self.data = bytes(payload)

    def payload(self):
        return self.data

    def _fields(self):
        return (self.TRANS, self.data)


class CD1Command(_Transaction):
    """CD1 command to pump: one DCC byte (CMD_RESET, CMD_AUTHORIZE, ...)."""

    TRANS = 0x01
    NAME = "CD1Command"

    def __init__(self, command):
        _check_int("CD1 command", command, 0, 255)
        self.command = command

    def payload(self):
        return bytes((self.command,))

    def _fields(self):
        return (self.command,)

    @classmethod
    def decode(cls, payload):
        _check_length("CD1", payload, 1)
        return cls(payload[0])


class CD2AllowedNozzles(_Transaction):
    """CD2 allowed nozzle numbers: one byte per nozzle (1..15) that may be used for the next
    filling."""

    TRANS = 0x02
    NAME = "CD2AllowedNozzles"

    def __init__(self, nozzles):
        nozzles = tuple(nozzles)
        if not 1 <= len(nozzles) <= _NOZZLE_MAX:
            raise DARTError("CD2: 1..15 nozzles, got %d" % len(nozzles))
        for nozzle in nozzles:
            _check_int("CD2 nozzle", nozzle, 1, _NOZZLE_MAX)
        self.nozzles = nozzles

    def payload(self):
        return bytes(self.nozzles)

    def _fields(self):
        return (self.nozzles,)

    @classmethod
    def decode(cls, payload):
        return cls(tuple(payload))


class _BCDValue(_Transaction):
    # One 4-byte packed BCD value, scaled by the pump's decimals (DC7).
    def __init__(self, value):
        _check_int(self.NAME, value, 0, 99999999)
        self.value = value

    def payload(self):
        return bcd_encode(self.value, _VALUE_BYTES)

    def _fields(self):
        return (self.value,)

    @classmethod
    def decode(cls, payload):
        _check_length(cls.NAME, payload, _VALUE_BYTES)
        return cls(bcd_decode(payload))


class CD3PresetVolume(_BCDValue):
    """CD3 preset volume: 8 BCD digits, volume decimals as in DC7."""

    TRANS = 0x03
    NAME = "CD3PresetVolume"

    @property
    def volume(self):
        return self.value


class CD4PresetAmount(_BCDValue):
    """CD4 preset amount: 8 BCD digits, amount decimals as in DC7."""

    TRANS = 0x04
    NAME = "CD4PresetAmount"

    @property
    def amount(self):
        return self.value


class CD5PriceUpdate(_Transaction):
    """CD5 price update: one 6-digit BCD unit price per logical nozzle, nozzle 1 first."""

    TRANS = 0x05
    NAME = "CD5PriceUpdate"

    def __init__(self, prices):
        prices = tuple(prices)
        if not 1 <= len(prices) <= _NOZZLE_MAX:
            raise DARTError("CD5: 1..15 prices, got %d" % len(prices))
        for price in prices:
            _check_int("CD5 price", price, 0, 999999)
        self.prices = prices

    def payload(self):
        return b"".join(bcd_encode(price, _PRICE_BYTES) for price in self.prices)

    def _fields(self):
        return (self.prices,)

    @classmethod
    def decode(cls, payload):
        if len(payload) % _PRICE_BYTES:
            raise DARTError("CD5: LNG must be a multiple of 3, got %d" % len(payload))
        return cls(
            tuple(
                bcd_decode(payload[i : i + _PRICE_BYTES])
                for i in range(0, len(payload), _PRICE_BYTES)
            )
        )


class CD101RequestTotalCounters(_Transaction):
    """CD101 request total counters: COUN 0x01..0x09 for a logical nozzle's volume counters,
    0x11..0x19 for its amount counters (see DC101)."""

    TRANS = 0x65
    NAME = "CD101RequestTotalCounters"

    def __init__(self, counter):
        _check_int("CD101 counter", counter, 0, 255)
        self.counter = counter

    def payload(self):
        return bytes((self.counter,))

    def _fields(self):
        return (self.counter,)

    @classmethod
    def decode(cls, payload):
        _check_length("CD101", payload, 1)
        return cls(payload[0])


class DC1PumpStatus(_Transaction):
    """DC1 pump status: one byte, STATUS_* (unknown codes are kept as they are)."""

    TRANS = 0x01
    NAME = "DC1PumpStatus"

    def __init__(self, status):
        _check_int("DC1 status", status, 0, 255)
        self.status = status

    def payload(self):
        return bytes((self.status,))

    def _fields(self):
        return (self.status,)

    @classmethod
    def decode(cls, payload):
        _check_length("DC1", payload, 1)
        return cls(payload[0])


class DC2FilledVolumeAmount(_Transaction):
    """DC2 filled volume and amount of the current or last filling: 8 BCD digits each, with the
    pump's volume and amount decimals."""

    TRANS = 0x02
    NAME = "DC2FilledVolumeAmount"

    def __init__(self, volume, amount):
        _check_int("DC2 volume", volume, 0, 99999999)
        _check_int("DC2 amount", amount, 0, 99999999)
        self.volume = volume
        self.amount = amount

    def payload(self):
        return bcd_encode(self.volume, _VALUE_BYTES) + bcd_encode(self.amount, _VALUE_BYTES)

    def _fields(self):
        return (self.volume, self.amount)

    @classmethod
    def decode(cls, payload):
        _check_length("DC2", payload, 2 * _VALUE_BYTES)
        return cls(bcd_decode(payload[:_VALUE_BYTES]), bcd_decode(payload[_VALUE_BYTES:]))


class DC3NozzleStatusPrice(_Transaction):
    """DC3 nozzle status and filling price: 6 BCD digits of unit price, then NOZIO (selected
    nozzle 0..15 in bits 0-3, nozzle out of its holster in bit 4; bits 5-7 must be 0)."""

    TRANS = 0x03
    NAME = "DC3NozzleStatusPrice"

    def __init__(self, price, nozzle, nozzle_out):
        _check_int("DC3 price", price, 0, 999999)
        _check_int("DC3 nozzle", nozzle, 0, _NOZZLE_MAX)
        self.price = price
        self.nozzle = nozzle
        self.nozzle_out = bool(nozzle_out)

    def payload(self):
        nozio = self.nozzle | (_NOZZLE_OUT if self.nozzle_out else 0)
        return bcd_encode(self.price, _PRICE_BYTES) + bytes((nozio,))

    def _fields(self):
        return (self.price, self.nozzle, self.nozzle_out)

    @classmethod
    def decode(cls, payload):
        _check_length("DC3", payload, _PRICE_BYTES + 1)
        nozio = payload[_PRICE_BYTES]
        if nozio & 0xE0:
            raise DARTError("DC3: NOZIO 0x%02X sets bits 5-7; only bits 0-4 are defined" % nozio)
        return cls(bcd_decode(payload[:_PRICE_BYTES]), nozio & 0x0F, bool(nozio & _NOZZLE_OUT))


class DC5AlarmCode(_Transaction):
    """DC5 alarm code: one byte, see ALARM_NAMES."""

    TRANS = 0x05
    NAME = "DC5AlarmCode"

    def __init__(self, alarm):
        _check_int("DC5 alarm", alarm, 0, 255)
        self.alarm = alarm

    def payload(self):
        return bytes((self.alarm,))

    def _fields(self):
        return (self.alarm,)

    @classmethod
    def decode(cls, payload):
        _check_length("DC5", payload, 1)
        return cls(payload[0])


class DC7PumpParameters(_Transaction):
    """DC7 pump parameters, 50 bytes: 22 reserved, decimals of volume, amount and unit price
    (one byte each), 4 reserved, max amount (8 BCD digits), 2 reserved, the grade of each of
    nozzles 1..15. `reserved` holds the 28 reserved bytes in order (zeros by default), so a
    received DC7 re-encodes byte for byte."""

    TRANS = 0x07
    NAME = "DC7PumpParameters"

    def __init__(
        self, volume_decimals, amount_decimals, price_decimals, max_amount, grades, reserved=None
    ):
        _check_int("DC7 volume decimals", volume_decimals, 0, 255)
        _check_int("DC7 amount decimals", amount_decimals, 0, 255)
        _check_int("DC7 price decimals", price_decimals, 0, 255)
        _check_int("DC7 max amount", max_amount, 0, 99999999)
        grades = tuple(grades)
        if len(grades) != _DC7_GRADES:
            raise DARTError("DC7: 15 grades (one per nozzle), got %d" % len(grades))
        for grade in grades:
            _check_int("DC7 grade", grade, 0, 255)
        reserved = bytes(_DC7_RESERVED) if reserved is None else bytes(reserved)
        if len(reserved) != _DC7_RESERVED:
            raise DARTError("DC7: %d reserved bytes, got %d" % (_DC7_RESERVED, len(reserved)))
        self.volume_decimals = volume_decimals
        self.amount_decimals = amount_decimals
        self.price_decimals = price_decimals
        self.max_amount = max_amount
        self.grades = grades
        self.reserved = reserved

    def payload(self):
        reserved = self.reserved
        return (
            reserved[:22]
            + bytes((self.volume_decimals, self.amount_decimals, self.price_decimals))
            + reserved[22:26]
            + bcd_encode(self.max_amount, _VALUE_BYTES)
            + reserved[26:]
            + bytes(self.grades)
        )

    def _fields(self):
        return (
            self.volume_decimals,
            self.amount_decimals,
            self.price_decimals,
            self.max_amount,
            self.grades,
            self.reserved,
        )

    @classmethod
    def decode(cls, payload):
        _check_length("DC7", payload, _DC7_LENGTH)
        payload = bytes(payload)
        return cls(
            payload[22],
            payload[23],
            payload[24],
            bcd_decode(payload[29:33]),
            tuple(payload[35:50]),
            payload[:22] + payload[25:29] + payload[33:35],
        )


class DC9PumpIdentity(_Transaction):
    """DC9 pump identity: 10 BCD digits, kept as a string so leading zeros survive."""

    TRANS = 0x09
    NAME = "DC9PumpIdentity"

    def __init__(self, identity):
        if not isinstance(identity, str) or len(identity) != 2 * _IDENTITY_BYTES:
            raise DARTError("DC9 identity must be a string of 10 digits, got %r" % (identity,))
        for digit in identity:
            if not "0" <= digit <= "9":
                raise DARTError("DC9 identity must be a string of 10 digits, got %r" % identity)
        self.identity = identity

    def payload(self):
        return bcd_encode(int(self.identity), _IDENTITY_BYTES)

    def _fields(self):
        return (self.identity,)

    @classmethod
    def decode(cls, payload):
        _check_length("DC9", payload, _IDENTITY_BYTES)
        digits = str(bcd_decode(payload))
        return cls("0" * (2 * _IDENTITY_BYTES - len(digits)) + digits)


class DC101TotalCounters(_Transaction):
    """DC101 total counters, the reply to CD101: COUN, then three 10-digit BCD totals.

    COUN 0x01..0x09 (volume counters of logical nozzle COUN): total is the nozzle's volume
    total, meter1 and meter2 the volume totals of its two meters (meter2 is 0 on a non-blending
    pump, and meter1 equals total). COUN 0x11..0x19 (amount counters of nozzle COUN - 0x10):
    total is the amount total, meter1 the number of fillings, meter2 unused. Totals use the
    pump's volume or amount decimals."""

    TRANS = 0x65
    NAME = "DC101TotalCounters"

    def __init__(self, counter, total, meter1, meter2):
        _check_int("DC101 counter", counter, 0, 255)
        for name, value in (("total", total), ("meter1", meter1), ("meter2", meter2)):
            _check_int("DC101 " + name, value, 0, 9999999999)
        self.counter = counter
        self.total = total
        self.meter1 = meter1
        self.meter2 = meter2

    def payload(self):
        return (
            bytes((self.counter,))
            + bcd_encode(self.total, _TOTAL_BYTES)
            + bcd_encode(self.meter1, _TOTAL_BYTES)
            + bcd_encode(self.meter2, _TOTAL_BYTES)
        )

    def _fields(self):
        return (self.counter, self.total, self.meter1, self.meter2)

    @classmethod
    def decode(cls, payload):
        _check_length("DC101", payload, 1 + 3 * _TOTAL_BYTES)
        return cls(
            payload[0],
            bcd_decode(payload[1:6]),
            bcd_decode(payload[6:11]),
            bcd_decode(payload[11:16]),
        )


_TO_PUMP_TYPES = {
    cls.TRANS: cls
    for cls in (
        CD1Command,
        CD2AllowedNozzles,
        CD3PresetVolume,
        CD4PresetAmount,
        CD5PriceUpdate,
        CD101RequestTotalCounters,
    )
}
_FROM_PUMP_TYPES = {
    cls.TRANS: cls
    for cls in (
        DC1PumpStatus,
        DC2FilledVolumeAmount,
        DC3NozzleStatusPrice,
        DC5AlarmCode,
        DC7PumpParameters,
        DC9PumpIdentity,
        DC101TotalCounters,
    )
}


def split_transactions(data):
    """The TRANS LNG DATA units of a DATA frame's data, as RawTransaction. Raises DARTError if
    a header is cut short or an LNG runs past the data."""
    found = []
    position = 0
    length = len(data)
    while position < length:
        if length - position < 2:
            raise DARTError(
                "transaction at offset %d: 1 byte left, TRANS and LNG need 2" % position
            )
        trans = data[position]
        end = position + 2 + data[position + 1]
        if end > length:
            raise DARTError(
                "TRANS 0x%02X at offset %d: LNG %d runs past the %d byte(s) left"
                % (trans, position, data[position + 1], length - position - 2)
            )
        found.append(RawTransaction(trans, data[position + 2 : end]))
        position = end
    return found


def decode_transactions(data, direction):
    """Typed transactions of a DATA frame sent TO_PUMP (CDn) or FROM_PUMP (DCn); a TRANS this
    module does not type stays a RawTransaction. Raises DARTError on a malformed transaction."""
    if direction == TO_PUMP:
        types = _TO_PUMP_TYPES
    elif direction == FROM_PUMP:
        types = _FROM_PUMP_TYPES
    else:
        raise DARTError("direction must be TO_PUMP or FROM_PUMP, got %r" % (direction,))
    decoded = []
    for raw in split_transactions(data):
        cls = types.get(raw.TRANS)
        decoded.append(raw if cls is None else cls.decode(raw.data))
    return decoded


def encode_transactions(transactions):
    """TRANS LNG DATA of each transaction, concatenated: the data of a DATA frame."""
    return b"".join(transaction.encode() for transaction in transactions)


# --- DC7 vendor layout ------------------------------------------------------------------------
# DART leaves 28 bytes of DC7 to the manufacturer. Pumps that follow the layout below (the
# meterseal emulator does, docs/emulators.md) put their legally relevant parameters in the first
# 22 bytes of the payload, i.e. DC7PumpParameters.reserved[0:22]:
#
#     0..15   K-factor of nozzles 1..4, pulses per kL, 8 BCD digits each (0 = no nozzle)
#     16..17  software version, 4 BCD digits ("0231" = 2.31)
#     18..19  calibration counter, 4 BCD digits, +1 on each logged K-factor change
#     20..21  parameter checksum, CRC-16/ARC (high byte first) over payload bytes 0..19, 22..49
#
# A pump with another layout gives other bytes here; these accessors only read, and raise
# DARTError where BCD is expected and not found, so they never invent a value.

DC7_VENDOR_NOZZLES = const(4)
_DC7_SOFTWARE_AT = const(16)
_DC7_COUNTER_AT = const(18)
_DC7_CHECKSUM_AT = const(20)
_DC7_VENDOR_BYTES = const(22)


def dc7_k_factors(dc7):
    """K-factors of nozzles 1..4 in pulses per kL (0 for an absent nozzle), nozzle 1 first."""
    head = dc7.reserved
    return tuple(bcd_decode(head[4 * i : 4 * i + 4]) for i in range(DC7_VENDOR_NOZZLES))


def dc7_software_version(dc7):
    """The pump's software version as its 4 digits, e.g. "0231" for 2.31."""
    return "%04d" % bcd_decode(dc7.reserved[_DC7_SOFTWARE_AT : _DC7_SOFTWARE_AT + 2])


def dc7_calibration_count(dc7):
    """The calibration counter: +1 on each logged K-factor change, 0..9999."""
    return bcd_decode(dc7.reserved[_DC7_COUNTER_AT : _DC7_COUNTER_AT + 2])


def dc7_param_checksum(dc7):
    """The 2 parameter checksum bytes as the pump sent them (high byte first)."""
    return bytes(dc7.reserved[_DC7_CHECKSUM_AT:_DC7_VENDOR_BYTES])


def dc7_param_checksum_ok(dc7):
    """Whether the checksum matches the parameters it covers (payload bytes 0..19 and 22..49):
    a mismatch means the pump's own parameter memory is inconsistent."""
    payload = dc7.payload()
    crc = crc16_arc(payload[:_DC7_CHECKSUM_AT] + payload[_DC7_VENDOR_BYTES:])
    return dc7_param_checksum(dc7) == bytes((crc >> 8, crc & 0xFF))
