# MT-SICS codec on both interpreters: documented reply lines, the meterseal sale extension, every
# command, the line reader against split, over-long and badly ended lines, and garbage.
# heapsize: 192K

from known_vectors import MTSICS_SALE_VECTOR, MTSICS_WEIGHT_VECTORS
from meterseal.protocol import mtsics
from meterseal.protocol.errors import MTSICSError


def rejects(parse, line, fragment):
    try:
        value = parse(line)
    except MTSICSError as error:
        assert fragment in str(error), (line, str(error))
        return
    raise AssertionError("accepted %r as %r" % (line, value))


# Documented weight replies decode to mg and re-encode byte for byte.
for line, reply_id, status, mg, unit, decimals in MTSICS_WEIGHT_VECTORS:
    reply = mtsics.parse_reply(line)
    assert reply == mtsics.WeightReply(reply_id, status, mtsics.Weight(mg, unit, decimals)), reply
    assert reply.encode() == line + b"\r\n", reply.encode()

line, expected = MTSICS_SALE_VECTOR
sale = mtsics.parse_reply(line)
assert (sale.txn, sale.stable, sale.gross.mg, sale.tare.mg, sale.net.mg,
        sale.unit_price_minor_per_kg, sale.amount_minor, sale.plu, sale.tare_mode, sale.start.mg,
        sale.centre_of_zero, sale.load_to_stable_ms) == expected, sale
assert sale.encode() == line + b"\r\n"

# Every other reply shape, both ways.
kg = mtsics.Weight(15000000, "kg", 3)
five_g = mtsics.Weight(5000, "kg", 3)
for reply in (
    mtsics.StatusReply("S", "I"),
    mtsics.StatusReply("S", "+"),
    mtsics.StatusReply("S", "-"),
    mtsics.StatusReply("Z", "A"),
    mtsics.StatusReply("ZI", "D"),
    mtsics.StatusReply("TAC", "A"),
    mtsics.StatusReply("TA", "L"),
    mtsics.StatusReply("MST", "I"),
    mtsics.TextReply("I4", "0123456789"),
    mtsics.TextReply("I2", "PS15 15.000 kg"),
    mtsics.ErrorReply("ES"),
    mtsics.ErrorReply("ET"),
    mtsics.ErrorReply("EL"),
    mtsics.MetrologyReply(kg, five_g, five_g, "III"),
    mtsics.CounterReply(17),
    mtsics.PriceReply(1280, 0),
):
    data = reply.encode()
    assert data.endswith(b"\r\n") and mtsics.parse_reply(data[:-2]) == reply, (reply, data)

for command in (
    mtsics.Command("S"),
    mtsics.Command("SI"),
    mtsics.Command("SIR"),
    mtsics.Command("T"),
    mtsics.Command("TA"),
    mtsics.Command("TA", tare=mtsics.Weight(250000, "kg", 3)),
    mtsics.Command("TAC"),
    mtsics.Command("Z"),
    mtsics.Command("ZI"),
    mtsics.Command("@"),
    mtsics.Command("I2"),
    mtsics.Command("I4"),
    mtsics.Command("MSI"),
    mtsics.Command("MSC"),
    mtsics.Command("MSU"),
    mtsics.Command("MSU", unit_price_minor_per_kg=1280, plu=123),
    mtsics.Command("MST"),
):
    data = command.encode()
    assert mtsics.parse_command(data[:-2]) == command, (command, data)
assert mtsics.REPLY_IDS["@"] == "I4" and mtsics.REPLY_IDS["SIR"] == "S"

# Weights: exact mg or refused, never rounded.
assert mtsics.parse_reply(b"S S 1 g").weight.mg == 1000
rejects(mtsics.parse_reply, b"S S 1.0001 g", "more decimals than whole mg")
rejects(mtsics.parse_reply, b"S S 1.2.3 kg", "not a weight value")
rejects(mtsics.parse_reply, b"S S 1. kg", "not a weight value")
rejects(mtsics.parse_reply, b"S S +1 kg", "not a weight value")
rejects(mtsics.parse_reply, b"S S 1 lb", "unit 'lb'")
rejects(mtsics.parse_reply, b"S S 12345678901 g", "not a weight value")
try:
    mtsics.Weight(1234, "kg", 3).field()
    raise AssertionError("encoded 1234 mg with 3 decimals in kg")
except MTSICSError as error:
    assert "5 steps" not in str(error) and "1000 mg steps" in str(error), str(error)

# Malformed lines name the problem.
rejects(mtsics.parse_reply, b"", "empty line")
rejects(mtsics.parse_reply, b" S S 1 g", "leading or trailing space")
rejects(mtsics.parse_reply, b"S X 1 g", "status 'X'")
rejects(mtsics.parse_reply, b"S S 1", "has 1 fields, expected 2")
rejects(mtsics.parse_reply, b"Z A 1 g", "status 'A' with 2 fields")
rejects(mtsics.parse_reply, b"Q A", "not a reply")
rejects(mtsics.parse_reply, b"I4 A 123", "quoted text")
rejects(mtsics.parse_reply, b'I4 A "12"3"', "quoted text")
rejects(mtsics.parse_reply, b"S S\t1 g", "not printable ASCII")
rejects(mtsics.parse_reply, b"S S \xff g", "byte 0xFF")
rejects(mtsics.parse_reply, b"MSC A 99999999999999999999", "outside 0..4294967295")
rejects(mtsics.parse_reply, b"MSC A 1_0", "not a decimal integer")
rejects(mtsics.parse_reply, b"MSI A 15 kg 5 g 5 g V", "accuracy class 'V'")
rejects(mtsics.parse_command, b"XYZ", "unknown command 'XYZ'")
rejects(mtsics.parse_command, b"S 1", "S takes nothing")
rejects(mtsics.parse_command, b"MSU 1280", "MSU takes nothing or a price and a PLU")
rejects(mtsics.parse_command, b"MSU 1280 1234567", "outside 0..999999")

# The line reader: lines split anywhere, over-long lines, lines ended wrongly.
reader = mtsics.LineReader()
for byte in b"S S      1.235 kg\r\nZ A\r\nS":
    reader.feed(bytes([byte]))
assert reader.next_line() == b"S S      1.235 kg"
assert reader.next_line() == b"Z A"
assert reader.next_line() is None

reader = mtsics.LineReader()
reader.feed(b"x" * 1000)  # a peer that never ends its line
reader.feed(b"y" * 1000 + b"\r\nZ A\r\n")
try:
    reader.next_line()
    raise AssertionError("over-long line accepted")
except MTSICSError as error:
    assert "2002 bytes" in str(error), str(error)
assert reader.next_line() == b"Z A" and reader.next_line() is None

reader = mtsics.LineReader()
reader.feed(b"S" * (mtsics.MAX_LINE_BYTES - 1) + b"\r\nZ A\n" + b"T\rS\r\n" + b"I4\r\n")
for fragment in ("longer than MAX_LINE_BYTES", "LF but not CR LF", "CR inside a line"):
    try:
        reader.next_line()
        raise AssertionError("accepted a line that should fail with " + fragment)
    except MTSICSError as error:
        assert fragment in str(error), str(error)
assert reader.next_line() == b"I4"

# Garbage: whatever arrives, a line, None or MTSICSError, nothing else. A small LCG keeps this
# identical on both interpreters.
state = 12345
reader = mtsics.LineReader()
alphabet = b"SIDTAZ@MUC+-LE 0123456789.kgm\"\r\n\x00\xff"
errors = 0
for _ in range(3000):
    chunk = bytearray()
    for _ in range(7):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        chunk.append(alphabet[state % len(alphabet)])
    reader.feed(chunk)
    while True:
        try:
            line = reader.next_line()
        except MTSICSError:
            errors += 1
            continue
        if line is None:
            break
        for parse in (mtsics.parse_reply, mtsics.parse_command):
            try:
                parse(line)
            except MTSICSError:
                errors += 1
assert errors > 100

print("PASS mtsics_checks")
