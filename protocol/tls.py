"""Veeder-Root TLS tank gauge serial interface, computer format: the in-tank inventory report
(function 201) and the delivery report (function 202), as in the TLS-300/350 and TLS-4xx serial
interface manuals (576013-635, 577013-950).

Line settings are whatever the console's port is set to (commonly 9600 baud, 7 data bits, odd
parity, 1 stop bit). A command has no terminator; the console knows its length:

    command    [SOH][security code: 6 chars, only if one is set]['i'][function: 3][TT: 2]
               <SOH>i20100: inventory of every tank; <SOH>i20203: deliveries into tank 3

    reply      [SOH]['i'][function: 3][TT: 2][YYMMDDHHmm][data ...]['&&'][CCCC][ETX]
    refusal    [SOH]['9999']['FF1B'][ETX]          a function code the console does not know

    i201 data, per tank:  [TT][p][ssss][NN][FFFFFFFF] x NN
    i202 data, per tank:  [TT][p][dd]
                          then dd x ([start YYMMDDHHmm][end YYMMDDHHmm][NN][FFFFFFFF] x NN)

TT is a decimal tank number (00 = all), p the product code (one character 0x20..0x7E), ssss the
tank status bits in hex (bit 0 delivery in progress, bit 1 leak test in progress, bit 2 invalid
fuel height alarm), NN the number of float fields that follow in hex, dd the number of deliveries
in decimal. YYMMDDHHmm is the console's local date and time (years 2000..2099).

Float fields, in order, i201: volume, TC volume, ullage, height, water (height), temperature,
water volume. i202: start volume, start TC volume, start water, start temperature, end volume,
end TC volume, end water, end temperature, start height, end height (older consoles send the
first 8). A field of eight '?' means "no valid data" and decodes to None; fields past the known
ones are kept as raw bits in ``extra`` so that they re-encode unchanged.

Checksum. CCCC is four hex digits: the 16-bit two's complement of the sum of every character from
SOH up to and including the last one before CCCC, which is the second '&' of "&&" in a report and
the last '9' of the refusal. Bit 7 (parity) of each character is cleared before it is summed, and
the sum is taken mod 2^16. The refusal shows it: SOH + "9999" = 0x01 + 4 x 0x39 = 0xE5, and
0x10000 - 0xE5 = 0xFF1B. A receiver adds the checksum to that sum and expects 0 mod 2^16.

Floats never reach a record. Each field is an IEEE 754 single in 8 hex digits, in the console's
units (``UNITS_METRIC``: litres, millimetres, degrees C; ``UNITS_US``: US gallons, inches,
degrees F). Decoding turns the exact binary value into integer record units (mL, um, centi-degC)
with integer arithmetic only, rounding half away from zero, so every port (a 32-bit float
MicroPython build included) gets the same integers. Encoding picks the nearest single (ties to
even). A single carries 24 bits: volumes up to 16384 L survive encode and decode to the mL, a
50000 L volume to within 2 mL.

Hostile input: ``ReplyReader`` and ``CommandReader`` split a byte stream into frames and commands;
``parse_reply`` turns one frame into a value. Whatever bytes arrive, the result is a value, None
("need more bytes"), or TLSError naming the fault; the readers drop the bad bytes first, so the
next call carries on with the stream.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from .errors import TLSError
from .plain import PlainValue

# Function codes in computer format ("I201" would ask for the display format).
INVENTORY = "i201"
DELIVERY = "i202"

SOH = const(0x01)
ETX = const(0x03)
NOT_UNDERSTOOD = b"\x019999FF1B\x03"

# An i201 for 99 tanks is 6.4 KB; an i202 for one tank with its 10 stored deliveries about 1 KB.
# Ask for deliveries tank by tank when a console has many tanks. The limit bounds what a peer
# that never sends ETX can make the gateway buffer.
MAX_FRAME_BYTES = const(8192)
MAX_DELIVERIES_PER_TANK = const(99)

# Per quantity (volume in mL, height in um, temperature in centi-degC), a triple (numerator,
# denominator, offset): record units = (console value + offset) * numerator / denominator.
UNITS_METRIC = ((1000, 1, 0), (1000, 1, 0), (100, 1, 0))
UNITS_US = ((3785411784, 1000000, 0), (25400, 1, 0), (500, 9, -32))
_VOLUME = const(0)
_HEIGHT = const(1)
_TEMPERATURE = const(2)

INVENTORY_FIELDS = (
    ("volume_ml", _VOLUME),
    ("tc_volume_ml", _VOLUME),
    ("ullage_ml", _VOLUME),
    ("height_um", _HEIGHT),
    ("water_um", _HEIGHT),
    ("temperature_centi_c", _TEMPERATURE),
    ("water_volume_ml", _VOLUME),
)
DELIVERY_FIELDS = (
    ("start_volume_ml", _VOLUME),
    ("start_tc_volume_ml", _VOLUME),
    ("start_water_um", _HEIGHT),
    ("start_temperature_centi_c", _TEMPERATURE),
    ("end_volume_ml", _VOLUME),
    ("end_tc_volume_ml", _VOLUME),
    ("end_water_um", _HEIGHT),
    ("end_temperature_centi_c", _TEMPERATURE),
    ("start_height_um", _HEIGHT),
    ("end_height_um", _HEIGHT),
)

STATUS_DELIVERY_IN_PROGRESS = const(0x0001)
STATUS_LEAK_TEST_IN_PROGRESS = const(0x0002)
STATUS_INVALID_HEIGHT = const(0x0004)

# A decoded single beyond 2^40 console units (1e12 L) is refused before any big integer is built.
_MAX_BINARY_EXPONENT = const(40)
_NO_DATA = "????????"
_HEX_DIGITS = "0123456789ABCDEFabcdef"


def checksum(data):
    """Two's complement, mod 2^16, of the 7-bit character sum of ``data``: SOH through the
    character before CCCC ('&&' in a report)."""
    total = 0
    for byte in data:
        total += byte & 0x7F
    return -total & 0xFFFF


class Command(PlainValue):
    """``function`` as 4 characters (INVENTORY "i201", DELIVERY "i202", or any other code a host
    may send), ``tank`` 0 (all) to 99, an optional 6-character security code."""

    def __init__(self, function, tank, security_code=None):
        self.function = function
        self.tank = tank
        self.security_code = security_code

    def encode(self):
        if type(self.function) is not str or len(self.function) != 4 or not _printable(
                self.function):
            raise TLSError("function must be 4 characters 0x20..0x7E, got %r" % (self.function,))
        _check_int("tank", self.tank, 0, 99)
        code = self.security_code or ""
        if self.security_code is not None and (len(code) != 6 or not _printable(code)):
            raise TLSError("security code must be 6 characters 0x20..0x7E, got %r" % (code,))
        return b"\x01" + ("%s%s%02d" % (code, self.function, self.tank)).encode()


class NotUnderstood(PlainValue):
    """The console's <SOH>9999FF1B<ETX>: it did not recognise the function code. ``encode``
    takes ``units`` only to match the reports' signature."""

    def encode(self, units=UNITS_METRIC):
        return NOT_UNDERSTOOD


class TankInventory(PlainValue):
    """One tank of an i201 report; the INVENTORY_FIELDS are attributes (int or None)."""

    def __init__(self, tank, product, status, extra=(), **fields):
        self.tank = tank
        self.product = product
        self.status = status
        self.extra = tuple(extra)
        _set_fields(self, INVENTORY_FIELDS, fields)


class Delivery(PlainValue):
    """One stored delivery of an i202 report; the DELIVERY_FIELDS are attributes (int or None)."""

    def __init__(self, start_time, end_time, extra=(), **fields):
        self.start_time = tuple(start_time)
        self.end_time = tuple(end_time)
        self.extra = tuple(extra)
        _set_fields(self, DELIVERY_FIELDS, fields)


class TankDeliveries(PlainValue):
    """One tank of an i202 report: its stored deliveries, most recent first."""

    def __init__(self, tank, product, deliveries):
        self.tank = tank
        self.product = product
        self.deliveries = list(deliveries)


class InventoryReport(PlainValue):
    """An i201 reply: ``tank`` as asked (0 = all), the console's ``time`` (year, month, day,
    hour, minute) and one TankInventory per tank."""

    def __init__(self, tank, time, tanks):
        self.tank = tank
        self.time = tuple(time)
        self.tanks = list(tanks)

    def encode(self, units=UNITS_METRIC):
        parts = [_header(INVENTORY, self.tank, self.time)]
        for record in self.tanks:
            parts.append(_tank_head(record.tank, record.product))
            _check_int("status", record.status, 0, 0xFFFF)
            parts.append("%04X" % record.status)
            parts.append(_fields(record, INVENTORY_FIELDS, units))
        return _frame("".join(parts))


class DeliveryReport(PlainValue):
    """An i202 reply: ``tank`` as asked (0 = all), the console's ``time`` and one TankDeliveries
    per tank."""

    def __init__(self, tank, time, tanks):
        self.tank = tank
        self.time = tuple(time)
        self.tanks = list(tanks)

    def encode(self, units=UNITS_METRIC):
        parts = [_header(DELIVERY, self.tank, self.time)]
        for record in self.tanks:
            parts.append(_tank_head(record.tank, record.product))
            _check_int("number of deliveries", len(record.deliveries), 0, MAX_DELIVERIES_PER_TANK)
            parts.append("%02d" % len(record.deliveries))
            for delivery in record.deliveries:
                parts.append(_time_text(delivery.start_time))
                parts.append(_time_text(delivery.end_time))
                parts.append(_fields(delivery, DELIVERY_FIELDS, units))
        return _frame("".join(parts))


def _set_fields(target, spec, fields):
    for name, _ in spec:
        setattr(target, name, fields.pop(name, None))
    if fields:
        raise TypeError("unknown fields: %s" % ", ".join(sorted(fields)))


def _check_int(name, value, low, high):
    # type() rather than isinstance: True is an int on CPython.
    if type(value) is not int or not low <= value <= high:
        raise TLSError("%s must be an integer in %d..%d, got %r" % (name, low, high, value))


def _printable(text):
    for char in text:
        if not " " <= char <= "~":
            return False
    return True


def _header(function, tank, time):
    _check_int("tank", tank, 0, 99)
    return "%s%02d%s" % (function, tank, _time_text(time))


def _tank_head(tank, product):
    _check_int("tank", tank, 1, 99)
    if type(product) is not str or len(product) != 1 or not _printable(product):
        raise TLSError("product code must be one character 0x20..0x7E, got %r" % (product,))
    return "%02d%s" % (tank, product)


def _time_text(time):
    if len(time) != 5:
        raise TLSError("time must be (year, month, day, hour, minute), got %r" % (time,))
    year, month, day, hour, minute = time
    _check_int("year", year, 2000, 2099)
    _check_int("month", month, 1, 12)
    _check_int("day", day, 1, 31)
    _check_int("hour", hour, 0, 23)
    _check_int("minute", minute, 0, 59)
    return "%02d%02d%02d%02d%02d" % (year - 2000, month, day, hour, minute)


def _fields(record, spec, units):
    values = [getattr(record, name) for name, _ in spec]
    if not record.extra:
        while values and values[-1] is None:  # an older console's shorter list
            values.pop()
    parts = ["%02X" % (len(values) + len(record.extra))]
    for index in range(len(values)):
        value = values[index]
        if value is None:
            parts.append(_NO_DATA)
        else:
            name, quantity = spec[index]
            parts.append("%08X" % _bits_from_units(value, units[quantity], name))
    for bits in record.extra:
        if bits is None:
            parts.append(_NO_DATA)
        else:
            _check_int("extra field", bits, 0, 0xFFFFFFFF)
            parts.append("%08X" % bits)
    if len(parts) > 0x100:
        raise TLSError("%d float fields do not fit NN (at most 255)" % (len(parts) - 1))
    return "".join(parts)


def _frame(content):
    message = b"\x01" + content.encode() + b"&&"
    return message + ("%04X" % checksum(message)).encode() + b"\x03"


# ---------------------------------------------------------------------------------------------
# Integer-only conversion between IEEE 754 singles and record units


def _bit_length(value):
    # MicroPython ints have no bit_length().
    length = 0
    while value >= 0x10000:
        value >>= 16
        length += 16
    while value:
        value >>= 1
        length += 1
    return length


def _divide_half_away(numerator, denominator):
    # denominator > 0
    if numerator >= 0:
        return (2 * numerator + denominator) // (2 * denominator)
    return -((-2 * numerator + denominator) // (2 * denominator))


def _units_from_bits(bits, scale, name):
    """Record units nearest to the exact value of the single ``bits`` (half away from zero)."""
    exponent = (bits >> 23) & 0xFF
    if exponent == 0xFF:
        raise TLSError("%s: float %08X is infinite or not a number" % (name, bits))
    if exponent > 127 + _MAX_BINARY_EXPONENT:
        raise TLSError("%s: float %08X is beyond 2^%d" % (name, bits, _MAX_BINARY_EXPONENT))
    mantissa = bits & 0x7FFFFF
    if exponent:
        mantissa |= 0x800000
        shift = exponent - 150
    else:
        shift = -149  # subnormal
    if bits >> 31:
        mantissa = -mantissa
    numerator, denominator, offset = scale
    if shift >= 0:
        value_numerator, value_denominator = mantissa << shift, 1
    else:
        value_numerator, value_denominator = mantissa, 1 << -shift
    return _divide_half_away(
        (value_numerator + offset * value_denominator) * numerator, value_denominator * denominator
    )


def _bits_from_units(units, scale, name):
    """The single nearest to ``units`` in console units (ties to even)."""
    if type(units) is not int:
        raise TLSError("%s must be an integer, got %r" % (name, units))
    numerator, denominator, offset = scale
    # console value = units * denominator / numerator - offset
    top = units * denominator - offset * numerator
    bottom = numerator
    if top == 0:
        return 0
    sign = 0
    if top < 0:
        sign = 0x80000000
        top = -top
    # Choose the power of two that puts top / bottom / 2^shift in [2^23, 2^24).
    shift = _bit_length(top) - _bit_length(bottom) - 24
    while True:
        if shift >= 0:
            mantissa, remainder = divmod(top, bottom << shift)
            half = bottom << shift
        else:
            mantissa, remainder = divmod(top << -shift, bottom)
            half = bottom
        if mantissa < 0x1000000:
            break
        shift += 1
    twice = 2 * remainder
    if twice > half or (twice == half and mantissa & 1):
        mantissa += 1
        if mantissa == 0x1000000:
            mantissa >>= 1
            shift += 1
    biased = shift + 150
    if not 0 < biased < 0xFF:
        raise TLSError("%s: %d is outside what a single-precision float holds" % (name, units))
    return sign | biased << 23 | (mantissa & 0x7FFFFF)


# ---------------------------------------------------------------------------------------------
# Local date and time (the console's clock) <-> Unix seconds, without time zone tables


def _days_from_civil(year, month, day):
    # Howard Hinnant's days_from_civil: days since 1970-01-01 in the proleptic Gregorian calendar.
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def unix_s_from_time(time, utc_offset_s):
    """Unix seconds of a console time (year, month, day, hour, minute) kept ``utc_offset_s``
    ahead of UTC (28800 for China Standard Time)."""
    year, month, day, hour, minute = time
    return (_days_from_civil(year, month, day) * 1440 + hour * 60 + minute) * 60 - utc_offset_s


def time_from_unix_s(unix_s, utc_offset_s):
    """The console time (year, month, day, hour, minute) at ``unix_s``, seconds dropped."""
    minutes = (int(unix_s) + utc_offset_s) // 60
    days = minutes // 1440
    minute_of_day = minutes - days * 1440
    # Hinnant's civil_from_days.
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    year = year_of_era + era * 400 + (month <= 2)
    return (year, month, day, minute_of_day // 60, minute_of_day % 60)


# ---------------------------------------------------------------------------------------------
# Framing


class CommandReader:
    """Splits what a host sends into commands, for a console (the emulator). ``feed`` bytes, then
    ``next_command`` returns a Command, None while one is incomplete, or raises TLSError for
    bytes that are not a command (they are dropped, so the next call goes on). A well-formed
    command with a function the console lacks is returned; the console answers NOT_UNDERSTOOD."""

    def __init__(self, security_code=None):
        self._code_length = 0 if security_code is None else 6
        self._security_code = security_code
        self._buffer = b""

    def feed(self, data):
        self._buffer += bytes(data)

    def next_command(self):
        buffer = self._buffer
        start = buffer.find(b"\x01")
        if start < 0:
            self._buffer = b""
            if buffer:
                raise TLSError("%d bytes outside any command dropped" % len(buffer))
            return None
        if start:
            self._buffer = buffer[start:]
            raise TLSError("%d bytes before SOH dropped" % start)
        size = 1 + self._code_length + 6
        # A second SOH inside means the first command was cut short: resynchronise on it.
        cut = buffer.find(b"\x01", 1, size)
        if cut > 0:
            self._buffer = buffer[cut:]
            raise TLSError("command cut short by a new SOH: %r" % (buffer[:cut],))
        if len(buffer) < size:
            return None
        self._buffer = buffer[size:]
        for byte in buffer[1:size]:
            if not 0x20 <= byte <= 0x7E:
                raise TLSError(
                    "command %r holds a byte that is not printable ASCII" % (buffer[:size],))
        text = buffer[1:size].decode()
        code, body = text[: self._code_length], text[self._code_length :]
        if self._code_length and code != self._security_code:
            raise TLSError("wrong security code")
        return Command(body[:4], _decimal(body[4:6], "tank"), self._security_code)


class ReplyReader:
    """Splits what a console sends into frames (SOH .. ETX), for the gateway. ``feed`` bytes, then
    ``next_frame`` returns one frame's bytes, None while one is incomplete, or raises TLSError for
    bytes outside a frame or a frame longer than ``max_frame_bytes`` (they are dropped, so the
    next call goes on). Drained after each feed, it holds at most one fed chunk plus the limit."""

    def __init__(self, max_frame_bytes=MAX_FRAME_BYTES):
        self._max = max_frame_bytes
        self._buffer = b""
        self._dropped = 0  # bytes of an over-long frame, not yet reported
        self._discarding = False  # inside an over-long frame: drop bytes up to its ETX

    def feed(self, data):
        buffer = self._buffer + bytes(data)
        if self._discarding:
            end = buffer.find(b"\x03")
            self._dropped += len(buffer) if end < 0 else end + 1
            buffer = b"" if end < 0 else buffer[end + 1 :]
            self._discarding = end < 0
        start = buffer.find(b"\x01")
        if start >= 0 and buffer.find(b"\x03", start) < 0 and len(buffer) - start > self._max:
            # An unfinished frame already past the limit can never become valid.
            self._dropped += len(buffer)
            buffer = b""
            self._discarding = True
        self._buffer = buffer

    def next_frame(self):
        if self._dropped and not self._discarding:
            dropped, self._dropped = self._dropped, 0
            raise TLSError(
                "frame longer than MAX_FRAME_BYTES=%d dropped (%d bytes)" % (self._max, dropped)
            )
        buffer = self._buffer
        start = buffer.find(b"\x01")
        if start < 0:
            # Noise without SOH: nothing here can be part of a frame.
            self._buffer = b""
            if buffer:
                raise TLSError("%d bytes outside any frame dropped" % len(buffer))
            return None
        if start:
            self._buffer = buffer[start:]
            raise TLSError("%d bytes before SOH dropped" % start)
        end = buffer.find(b"\x03")
        if end < 0:
            return None
        restart = buffer.find(b"\x01", 1, end)
        if restart > 0:
            self._buffer = buffer[restart:]
            raise TLSError("frame cut short by a new SOH after %d bytes" % restart)
        self._buffer = buffer[end + 1 :]
        if end + 1 > self._max:
            raise TLSError(
                "frame of %d bytes is longer than MAX_FRAME_BYTES=%d" % (end + 1, self._max))
        return buffer[: end + 1]


# ---------------------------------------------------------------------------------------------
# Parsing a frame


def parse_reply(frame, units=UNITS_METRIC):
    """One whole frame (SOH .. ETX, as ReplyReader returns it) -> InventoryReport, DeliveryReport
    or NotUnderstood."""
    frame = bytes(frame)
    if len(frame) < 7 or frame[0] != SOH or frame[-1] != ETX:
        raise TLSError("not a frame: %r" % (frame[:40],))
    for index in range(1, len(frame) - 1):
        if not 0x20 <= frame[index] <= 0x7E:
            raise TLSError(
                "byte 0x%02X at offset %d is not printable ASCII" % (frame[index], index))
    text = frame[1:-1].decode()
    # The refusal has no '&&'; a report ends in '&&CCCC'. Either way the checksum covers all
    # that precedes it, from SOH on.
    body_end = len(frame) - 5
    expected = checksum(frame[:body_end])
    received = _hex(text[-4:], "checksum")
    if received != expected:
        raise TLSError("checksum %04X does not match %04X computed over SOH..%r"
                       % (received, expected, text[-10:-4]))
    if text == "9999FF1B":
        return NotUnderstood()
    if text[-6:-4] != "&&":
        raise TLSError("no '&&' before the checksum")
    content = text[:-6]
    if len(content) < 16 or content[0] != "i":
        raise TLSError("report %r does not start with i, a function, a tank and a time"
                       % (content[:16],))
    function = content[:4]
    tank = _decimal(content[4:6], "tank")
    time = _time(content, 6)
    reader = _Cursor(content, 16)
    if function == INVENTORY:
        tanks = []
        while reader.more():
            number = reader.decimal(2, "tank")
            product = reader.take(1)
            status = reader.hex(4, "status")
            bits, extra = reader.floats(INVENTORY_FIELDS)
            tanks.append(TankInventory(number, product, status, extra,
                                       **_decoded(bits, INVENTORY_FIELDS, units)))
        return InventoryReport(tank, time, tanks)
    if function == DELIVERY:
        tanks = []
        while reader.more():
            number = reader.decimal(2, "tank")
            product = reader.take(1)
            deliveries = []
            for _ in range(reader.decimal(2, "number of deliveries")):
                start = _time(reader.take(10), 0)
                end = _time(reader.take(10), 0)
                bits, extra = reader.floats(DELIVERY_FIELDS)
                deliveries.append(Delivery(start, end, extra,
                                           **_decoded(bits, DELIVERY_FIELDS, units)))
            tanks.append(TankDeliveries(number, product, deliveries))
        return DeliveryReport(tank, time, tanks)
    raise TLSError("function %r is not i201 or i202" % (function,))


class _Cursor:
    def __init__(self, text, position):
        self.text = text
        self.position = position

    def more(self):
        return self.position < len(self.text)

    def take(self, count):
        start = self.position
        if start + count > len(self.text):
            raise TLSError("report ends inside a field at offset %d" % (start + 1))
        self.position = start + count
        return self.text[start : self.position]

    def decimal(self, count, name):
        return _decimal(self.take(count), name)

    def hex(self, count, name):
        return _hex(self.take(count), name)

    def floats(self, spec):
        """NN, then NN fields: (bits of the fields in ``spec``, bits of any past them); None
        stands for a field of '?' (no valid data)."""
        count = self.hex(2, "number of fields")
        fields = []
        for _ in range(count):
            field = self.take(8)
            fields.append(None if field == _NO_DATA else _hex(field, "float field"))
        return fields[: len(spec)], fields[len(spec) :]


def _decoded(bits, spec, units):
    values = {}
    for index in range(len(spec)):
        name, quantity = spec[index]
        raw = bits[index] if index < len(bits) else None
        values[name] = None if raw is None else _units_from_bits(raw, units[quantity], name)
    return values


def _decimal(text, name):
    if not text:
        raise TLSError("%s is missing" % name)
    for char in text:
        if not "0" <= char <= "9":
            raise TLSError("%s %r is not decimal" % (name, text))
    return int(text)


def _hex(text, name):
    if not text:
        raise TLSError("%s is missing" % name)
    for char in text:
        if char not in _HEX_DIGITS:
            raise TLSError("%s %r is not hexadecimal" % (name, text))
    return int(text, 16)


def _time(text, start):
    year = _decimal(text[start : start + 2], "year")
    month = _decimal(text[start + 2 : start + 4], "month")
    day = _decimal(text[start + 4 : start + 6], "day")
    hour = _decimal(text[start + 6 : start + 8], "hour")
    minute = _decimal(text[start + 8 : start + 10], "minute")
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59):
        raise TLSError("date and time %r are out of range" % (text[start : start + 10],))
    return (2000 + year, month, day, hour, minute)
