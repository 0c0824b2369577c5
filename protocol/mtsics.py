"""MT-SICS (Mettler Toledo Standard Interface Command Set) as a retail price scale speaks it on
RS-232, plus meterseal's price extension, the ``MS`` commands.

Line settings: 9600 baud, 8 data bits, no parity, 1 stop bit, no handshake. Every command and
every reply is one line of printable ASCII ending in CR LF. Fields are separated by spaces; a
weight value is right-aligned in 10 characters, so a reply may hold runs of spaces:

    command  [ name ]( SP [ parameter ] )* CR LF            "TA      0.250 kg" CR LF
    reply    [ id ] SP [ status ]( SP [ field ] )* CR LF    "S S      1.235 kg" CR LF
    error    [ ES | ET | EL ] CR LF                         "ES" CR LF

    weight   [ value: 10 chars, right-aligned, '-' sign, one '.' ] SP [ unit: mg | g | kg ]
    text     '"' printable ASCII without '"' '"'            I2 A "PS15 15.000 kg"

Status: S stable, D dynamic (moving), A done, I not executable now, + overload or above a range,
- underload or below a range, L wrong parameter. Errors: ES syntax (unknown command), ET
transmission (a damaged line), EL logical (not possible in this state).

Standard commands, with the id of their reply:

    S    -> S   stable net weight          SI  -> S   net weight now, S or D
    SIR  -> S   SI, repeated until the next command
    T    -> T   tare the stable load       TA  -> TA  query, or preset with "TA <weight>"
    TAC  -> TAC clear the tare             Z   -> Z   zero (stable only)
    ZI   -> ZI  zero now                   @   -> I4  reset, answered with the serial number
    I2   -> I2  model and capacity         I4  -> I4  serial number

meterseal extension. MT-SICS describes balances; a price-computing scale must also tell its unit
price, the amount it charged and its metrology. These commands are meterseal's own, not Mettler
Toledo's, under a prefix (MS) that no MT-SICS command list we know uses (docs/protocols/mt-sics.md):

    MSI                 -> MSI A <Max> <e> <d> <class>       Max, e and d as weights; I..IIII
    MSC                 -> MSC A <count>                     event counter (audit trail): +1 per
                                                             calibration or parameter change
    MSU [<price> <plu>] -> MSU A <price> <plu>               query or set unit price and PLU
    MST                 -> MST A <txn> <S|D> <gross> <tare> <net> <price> <amount> <plu>
                                 <N|W|P> <start> <Z|N> <load_to_stable_ms>
                                                             the last completed sale; MST I if none

Money and counts are decimal integers: a unit price in minor currency units per kg (0..99999999),
an amount in minor units, a PLU (0 = none). A sale's <txn> counts sales from 1, so a reader that
polls MST sees every sale or knows how many it missed. <N|W|P> is the tare mode (none, weighed
with T, preset with TA); <start> is the gross reading when the load was put on an empty pan and
<Z|N> whether the scale was then at centre of zero; <S|D> is the stability of the sold reading.

Values: parsed masses are integers in mg (``Weight.mg``), as the record schema stores them, with
the unit and number of decimals kept so that a value re-encodes to the same field. A weight with
more decimals than mg resolve is refused, never rounded.

Hostile input: ``LineReader`` splits a byte stream into lines; drained after each feed, it holds at
most one fed chunk plus MAX_LINE_BYTES. ``parse_command`` and ``parse_reply`` turn one line into a
value. Whatever bytes arrive, the result is a value, None ("need more bytes"), or MTSICSError
naming the fault; the reader drops the bad bytes first, so the next call carries on.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from .errors import MTSICSError
from .plain import PlainValue

# The longest reply defined here, an MST with every field at its widest, is 115 bytes with CR LF.
# A peer that never sends a line end costs at most this much buffer.
MAX_LINE_BYTES = const(160)

_WEIGHT_WIDTH = const(10)
_CR = const(13)

_UNIT_MG = {"mg": 1, "g": 1000, "kg": 1000000}
_DECIMALS_BY_UNIT = {"mg": 0, "g": 3, "kg": 6}  # most decimals that still land on whole mg
ACCURACY_CLASSES = ("I", "II", "III", "IIII")
ERROR_CODES = ("ES", "ET", "EL")
FAILURE_STATUSES = ("I", "+", "-", "L")

MAX_UNIT_PRICE_MINOR_PER_KG = 99999999
MAX_AMOUNT_MINOR = 999999999
MAX_PLU = 999999
MAX_TXN = 99999999
_MAX_U32 = 0xFFFFFFFF

# Command name -> id of its reply.
REPLY_IDS = {
    "S": "S",
    "SI": "S",
    "SIR": "S",
    "T": "T",
    "TA": "TA",
    "TAC": "TAC",
    "Z": "Z",
    "ZI": "ZI",
    "@": "I4",
    "I2": "I2",
    "I4": "I4",
    "MSI": "MSI",
    "MSC": "MSC",
    "MSU": "MSU",
    "MST": "MST",
}

# Reply shapes after "<id> <status>" for the statuses that carry data (or, for _NONE, that
# acknowledge). Any reply may instead carry one of FAILURE_STATUSES and nothing else.
_NONE = const(0)
_WEIGHT = const(1)
_TEXT = const(2)
_METROLOGY = const(3)
_COUNTER = const(4)
_PRICE = const(5)
_SALE = const(6)
_REPLY_SHAPES = {
    "S": ("SD", _WEIGHT),
    "T": ("S", _WEIGHT),
    "TA": ("A", _WEIGHT),
    "TAC": ("A", _NONE),
    "Z": ("A", _NONE),
    "ZI": ("SD", _NONE),
    "I2": ("A", _TEXT),
    "I4": ("A", _TEXT),
    "MSI": ("A", _METROLOGY),
    "MSC": ("A", _COUNTER),
    "MSU": ("A", _PRICE),
    "MST": ("A", _SALE),
}

TARE_MODE_LETTERS = {"none": "N", "weighed": "W", "preset": "P"}
_TARE_MODES_BY_LETTER = {"N": "none", "W": "weighed", "P": "preset"}


class Weight(PlainValue):
    """A weight field: ``mg`` as displayed with ``decimals`` decimals in ``unit`` (mg, g or kg)."""

    def __init__(self, mg, unit="kg", decimals=3):
        self.mg = mg
        self.unit = unit
        self.decimals = decimals

    def field(self):
        """The 10-character right-aligned value, a space, and the unit."""
        if self.unit not in _UNIT_MG:
            raise MTSICSError("weight unit %r is not mg, g or kg" % (self.unit,))
        if type(self.decimals) is not int or not 0 <= self.decimals <= _DECIMALS_BY_UNIT[self.unit]:
            raise MTSICSError(
                "weight in %s takes 0..%d decimals, not %r"
                % (self.unit, _DECIMALS_BY_UNIT[self.unit], self.decimals)
            )
        step_mg = _UNIT_MG[self.unit] // 10**self.decimals
        if type(self.mg) is not int or self.mg % step_mg:
            raise MTSICSError(
                "weight %r mg is not a whole number of %d mg steps (%d decimals in %s)"
                % (self.mg, step_mg, self.decimals, self.unit)
            )
        digits = str(abs(self.mg) // step_mg)
        digits = "0" * (self.decimals + 1 - len(digits)) + digits
        if self.decimals:
            digits = digits[: -self.decimals] + "." + digits[-self.decimals :]
        if self.mg < 0:
            digits = "-" + digits
        if len(digits) > _WEIGHT_WIDTH:
            raise MTSICSError("weight %s %s is wider than 10 characters" % (digits, self.unit))
        return "%10s %s" % (digits, self.unit)


class Command(PlainValue):
    """A command line. ``tare`` (a Weight) only for a TA preset; ``unit_price_minor_per_kg`` and
    ``plu`` only for an MSU setting; otherwise None."""

    def __init__(self, name, tare=None, unit_price_minor_per_kg=None, plu=None):
        self.name = name
        self.tare = tare
        self.unit_price_minor_per_kg = unit_price_minor_per_kg
        self.plu = plu

    def encode(self):
        if self.name not in REPLY_IDS:
            raise MTSICSError("unknown command %r" % (self.name,))
        text = self.name
        if self.tare is not None:
            if self.name != "TA":
                raise MTSICSError("only TA takes a tare weight, not %s" % self.name)
            text += " " + self.tare.field()
        has_price = self.unit_price_minor_per_kg is not None or self.plu is not None
        if has_price:
            if self.name != "MSU":
                raise MTSICSError("only MSU takes a unit price and PLU, not %s" % self.name)
            _check_int("unit_price_minor_per_kg", self.unit_price_minor_per_kg, 0,
                       MAX_UNIT_PRICE_MINOR_PER_KG)
            _check_int("plu", self.plu, 0, MAX_PLU)
            text += " %d %d" % (self.unit_price_minor_per_kg, self.plu)
        return _line(text)


class StatusReply(PlainValue):
    """A reply that is an id and a status only: "Z A", "ZI S", "S I", "TA L", "MST I"."""

    def __init__(self, id, status):
        self.id = id
        self.status = status

    def encode(self):
        _check_status(self.id, self.status, _NONE)
        return _line("%s %s" % (self.id, self.status))


class WeightReply(PlainValue):
    """A weight from S/SI/SIR (status S or D), T (S) or TA (A)."""

    def __init__(self, id, status, weight):
        self.id = id
        self.status = status
        self.weight = weight

    def encode(self):
        _check_status(self.id, self.status, _WEIGHT)
        return _line("%s %s %s" % (self.id, self.status, self.weight.field()))


class TextReply(PlainValue):
    """I2 (model and capacity) or I4 (serial number), both with status A."""

    def __init__(self, id, text):
        self.id = id
        self.text = text

    def encode(self):
        _check_status(self.id, "A", _TEXT)
        for char in self.text:
            if not " " <= char <= "~" or char == '"':
                raise MTSICSError("%s text %r holds %r" % (self.id, self.text, char))
        return _line('%s A "%s"' % (self.id, self.text))


class ErrorReply(PlainValue):
    """ES (syntax), ET (transmission) or EL (logical)."""

    def __init__(self, code):
        self.code = code

    def encode(self):
        if self.code not in ERROR_CODES:
            raise MTSICSError("error code %r is not ES, ET or EL" % (self.code,))
        return _line(self.code)


class MetrologyReply(PlainValue):
    """MSI (extension): maximum capacity, verification interval e, display interval d, class."""

    def __init__(self, max, e, d, accuracy_class):
        self.max = max
        self.e = e
        self.d = d
        self.accuracy_class = accuracy_class

    def encode(self):
        if self.accuracy_class not in ACCURACY_CLASSES:
            raise MTSICSError(
                "accuracy class %r is not I, II, III or IIII" % (self.accuracy_class,))
        return _line("MSI A %s %s %s %s" % (self.max.field(), self.e.field(), self.d.field(),
                                            self.accuracy_class))


class CounterReply(PlainValue):
    """MSC (extension): the event counter, +1 per calibration or metrological parameter change."""

    def __init__(self, count):
        self.count = count

    def encode(self):
        _check_int("count", self.count, 0, _MAX_U32)
        return _line("MSC A %d" % self.count)


class PriceReply(PlainValue):
    """MSU (extension): the unit price in minor units per kg and the PLU (0 = none)."""

    def __init__(self, unit_price_minor_per_kg, plu):
        self.unit_price_minor_per_kg = unit_price_minor_per_kg
        self.plu = plu

    def encode(self):
        _check_int("unit_price_minor_per_kg", self.unit_price_minor_per_kg, 0,
                   MAX_UNIT_PRICE_MINOR_PER_KG)
        _check_int("plu", self.plu, 0, MAX_PLU)
        return _line("MSU A %d %d" % (self.unit_price_minor_per_kg, self.plu))


class SaleReply(PlainValue):
    """MST (extension): one completed sale, exactly as the scale indicated and charged it.

    ``tare_mode`` is "none", "weighed" or "preset"; ``start`` the gross reading when the load went
    on an empty pan, ``centre_of_zero`` whether the scale was then within 0.25 e of zero;
    ``load_to_stable_ms`` the time from the last load change to stability (to the sale, for a
    reading sold while still moving)."""

    def __init__(self, txn, stable, gross, tare, net, unit_price_minor_per_kg, amount_minor, plu,
                 tare_mode, start, centre_of_zero, load_to_stable_ms):
        self.txn = txn
        self.stable = stable
        self.gross = gross
        self.tare = tare
        self.net = net
        self.unit_price_minor_per_kg = unit_price_minor_per_kg
        self.amount_minor = amount_minor
        self.plu = plu
        self.tare_mode = tare_mode
        self.start = start
        self.centre_of_zero = centre_of_zero
        self.load_to_stable_ms = load_to_stable_ms

    def encode(self):
        _check_int("txn", self.txn, 1, MAX_TXN)
        _check_int("unit_price_minor_per_kg", self.unit_price_minor_per_kg, 0,
                   MAX_UNIT_PRICE_MINOR_PER_KG)
        _check_int("amount_minor", self.amount_minor, 0, MAX_AMOUNT_MINOR)
        _check_int("plu", self.plu, 0, MAX_PLU)
        _check_int("load_to_stable_ms", self.load_to_stable_ms, 0, _MAX_U32)
        if self.tare_mode not in TARE_MODE_LETTERS:
            raise MTSICSError("tare mode %r is not none, weighed or preset" % (self.tare_mode,))
        return _line("MST A %d %s %s %s %s %d %d %d %s %s %s %d" % (
            self.txn,
            "S" if self.stable is True else "D",
            self.gross.field(),
            self.tare.field(),
            self.net.field(),
            self.unit_price_minor_per_kg,
            self.amount_minor,
            self.plu,
            TARE_MODE_LETTERS[self.tare_mode],
            self.start.field(),
            "Z" if self.centre_of_zero is True else "N",
            self.load_to_stable_ms,
        ))


def _line(text):
    return text.encode() + b"\r\n"


def _check_int(name, value, low, high):
    # type() rather than isinstance: True is an int on CPython.
    if type(value) is not int or not low <= value <= high:
        raise MTSICSError("%s must be an integer in %d..%d, got %r" % (name, low, high, value))


def _check_status(reply_id, status, shape):
    if reply_id not in _REPLY_SHAPES:
        raise MTSICSError("unknown reply id %r" % (reply_id,))
    statuses, expected_shape = _REPLY_SHAPES[reply_id]
    if shape == _NONE and status in FAILURE_STATUSES:
        return
    if expected_shape != shape or type(status) is not str or len(status) != 1 or (
            status not in statuses):
        raise MTSICSError("%r is not a valid status for this %s reply" % (status, reply_id))


# ---------------------------------------------------------------------------------------------
# Parsing


class LineReader:
    """Splits received bytes into lines. ``feed`` what arrives; ``next_line`` then returns one
    line without its CR LF, None while a line is incomplete, or raises MTSICSError for a line that
    is too long or not ended by CR LF (its bytes are dropped, so the next call goes on)."""

    def __init__(self, max_line_bytes=MAX_LINE_BYTES):
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False  # inside an over-long line: drop bytes up to its LF
        self._dropped = 0  # bytes of over-long lines, not yet reported

    def feed(self, data):
        buffer = self._buffer
        buffer.extend(data)
        if self._discarding:
            end = buffer.find(b"\n")
            self._dropped += len(buffer) if end < 0 else end + 1
            self._buffer = bytearray() if end < 0 else buffer[end + 1 :]
            self._discarding = end < 0
            buffer = self._buffer
        # A partial line already longer than the limit can never become valid: drop it now rather
        # than let a peer that never sends LF grow the buffer.
        if len(buffer) > self._max and buffer.find(b"\n") < 0:
            self._dropped += len(buffer)
            self._buffer = bytearray()
            self._discarding = True

    def next_line(self):
        if self._dropped and not self._discarding:
            dropped, self._dropped = self._dropped, 0
            raise MTSICSError(
                "line longer than MAX_LINE_BYTES=%d dropped (%d bytes)" % (self._max, dropped)
            )
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(buffer[:end])
        self._buffer = buffer[end + 1 :]
        if end + 1 > self._max:
            raise MTSICSError(
                "line of %d bytes is longer than MAX_LINE_BYTES=%d" % (end + 1, self._max)
            )
        if not line or line[-1] != _CR:
            raise MTSICSError("line ends with LF but not CR LF: %r" % (line,))
        line = line[:-1]
        if b"\r" in line:
            raise MTSICSError("CR inside a line (a line end without LF?): %r" % (line,))
        return line


def _text_of(line):
    """The line as text, refusing any byte that is not printable ASCII."""
    for column in range(len(line)):
        byte = line[column]
        if byte < 0x20 or byte > 0x7E:
            raise MTSICSError("byte 0x%02X at column %d is not printable ASCII" % (byte, column))
    return bytes(line).decode()


def _tokens(text):
    if not text:
        raise MTSICSError("empty line")
    if text[0] == " " or text[-1] == " ":
        raise MTSICSError("leading or trailing space in %r" % (text,))
    return text.split()


def _integer(token, name, low, high):
    for char in token:
        if not "0" <= char <= "9":
            raise MTSICSError("%s %r is not a decimal integer" % (name, token))
    # A length check first, so a hostile 150-digit number is not converted.
    if not token or len(token) > 10 or not low <= int(token) <= high:
        raise MTSICSError("%s %r is outside %d..%d" % (name, token, low, high))
    return int(token)


def _weight(value, unit, name):
    if unit not in _UNIT_MG:
        raise MTSICSError("%s unit %r is not mg, g or kg" % (name, unit))
    negative = value[:1] == "-"
    whole, point, fraction = (value[1:] if negative else value).partition(".")
    if not whole or (point and not fraction) or len(value) > _WEIGHT_WIDTH:
        raise MTSICSError("%s %r is not a weight value" % (name, value))
    for char in whole + fraction:
        if not "0" <= char <= "9":
            raise MTSICSError("%s %r is not a weight value" % (name, value))
    if len(fraction) > _DECIMALS_BY_UNIT[unit]:
        raise MTSICSError(
            "%s %s %s has more decimals than whole mg (at most %d in %s)"
            % (name, value, unit, _DECIMALS_BY_UNIT[unit], unit)
        )
    mg = int(whole + fraction) * (_UNIT_MG[unit] // 10 ** len(fraction))
    return Weight(-mg if negative else mg, unit, len(fraction))


def parse_command(line):
    """One command line (bytes, without CR LF) -> Command."""
    tokens = _tokens(_text_of(line))
    name = tokens[0]
    if name not in REPLY_IDS:
        raise MTSICSError("unknown command %r" % (name,))
    arguments = tokens[1:]
    if not arguments:
        return Command(name)
    if name == "TA" and len(arguments) == 2:
        return Command(name, tare=_weight(arguments[0], arguments[1], "TA tare"))
    if name == "MSU" and len(arguments) == 2:
        price = _integer(arguments[0], "MSU unit price", 0, MAX_UNIT_PRICE_MINOR_PER_KG)
        return Command(name, unit_price_minor_per_kg=price,
                       plu=_integer(arguments[1], "MSU PLU", 0, MAX_PLU))
    raise MTSICSError("%s takes %s, got %r" % (
        name,
        {"TA": "nothing or a weight", "MSU": "nothing or a price and a PLU"}.get(name, "nothing"),
        " ".join(arguments),
    ))


def parse_reply(line):
    """One reply line (bytes, without CR LF) -> StatusReply, WeightReply, TextReply, ErrorReply,
    MetrologyReply, CounterReply, PriceReply or SaleReply."""
    text = _text_of(line)
    if text in ERROR_CODES:
        return ErrorReply(text)
    tokens = _tokens(text)
    reply_id = tokens[0]
    if reply_id not in _REPLY_SHAPES or len(tokens) < 2:
        raise MTSICSError("not a reply: %r" % (text,))
    status = tokens[1]
    statuses, shape = _REPLY_SHAPES[reply_id]
    if status in FAILURE_STATUSES or shape == _NONE:
        if len(tokens) != 2 or not (status in FAILURE_STATUSES or status in statuses):
            raise MTSICSError("%s reply %r: status %r with %d fields" % (
                reply_id, text, status, len(tokens) - 2))
        return StatusReply(reply_id, status)
    if status not in statuses or len(status) != 1:
        raise MTSICSError("%s reply has status %r, expected one of %s" % (
            reply_id, status, ", ".join(statuses + "".join(FAILURE_STATUSES))))
    if shape == _TEXT:
        return TextReply(reply_id, _quoted(text, len(reply_id) + 3))
    fields = tokens[2:]
    expected = _FIELD_COUNTS[shape]
    if len(fields) != expected:
        raise MTSICSError("%s reply has %d fields, expected %d: %r" % (
            reply_id, len(fields), expected, text))
    if shape == _WEIGHT:
        return WeightReply(reply_id, status, _weight(fields[0], fields[1], reply_id + " weight"))
    if shape == _METROLOGY:
        if fields[6] not in ACCURACY_CLASSES:
            raise MTSICSError("MSI accuracy class %r is not I, II, III or IIII" % (fields[6],))
        return MetrologyReply(_weight(fields[0], fields[1], "MSI Max"),
                              _weight(fields[2], fields[3], "MSI e"),
                              _weight(fields[4], fields[5], "MSI d"), fields[6])
    if shape == _COUNTER:
        return CounterReply(_integer(fields[0], "MSC count", 0, _MAX_U32))
    if shape == _PRICE:
        return PriceReply(_integer(fields[0], "MSU unit price", 0, MAX_UNIT_PRICE_MINOR_PER_KG),
                          _integer(fields[1], "MSU PLU", 0, MAX_PLU))
    return _sale(fields)


# Fields after "<id> <status>" per shape; a weight is two fields (value and unit).
_FIELD_COUNTS = {_WEIGHT: 2, _METROLOGY: 7, _COUNTER: 1, _PRICE: 2, _SALE: 16}


def _quoted(text, start):
    quoted = text[start:]
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"' or '"' in quoted[1:-1] or (
            text[start - 1] != " "):
        raise MTSICSError("expected one quoted text after %r, got %r" % (text[:start], quoted))
    return quoted[1:-1]


def _flag(token, true_letter, false_letter, name):
    if token == true_letter:
        return True
    if token == false_letter:
        return False
    raise MTSICSError("%s %r is neither %s nor %s" % (name, token, true_letter, false_letter))


def _sale(fields):
    if fields[11] not in _TARE_MODES_BY_LETTER:
        raise MTSICSError("MST tare mode %r is not N, W or P" % (fields[11],))
    return SaleReply(
        txn=_integer(fields[0], "MST txn", 1, MAX_TXN),
        stable=_flag(fields[1], "S", "D", "MST stability"),
        gross=_weight(fields[2], fields[3], "MST gross"),
        tare=_weight(fields[4], fields[5], "MST tare"),
        net=_weight(fields[6], fields[7], "MST net"),
        unit_price_minor_per_kg=_integer(fields[8], "MST unit price", 0,
                                         MAX_UNIT_PRICE_MINOR_PER_KG),
        amount_minor=_integer(fields[9], "MST amount", 0, MAX_AMOUNT_MINOR),
        plu=_integer(fields[10], "MST PLU", 0, MAX_PLU),
        tare_mode=_TARE_MODES_BY_LETTER[fields[11]],
        start=_weight(fields[12], fields[13], "MST start"),
        centre_of_zero=_flag(fields[14], "Z", "N", "MST zero flag"),
        load_to_stable_ms=_integer(fields[15], "MST load-to-stable ms", 0, _MAX_U32),
    )
