# Veeder-Root TLS codec on both interpreters: the manual's FF1B checksum and a captured reply,
# float vectors decoded to record units without floats, i201/i202 reports both ways, the readers
# against split frames, noise and over-long frames, and garbage.
# heapsize: 192K

from known_vectors import (
    TLS_CAPTURED_REPLY,
    TLS_CHECKSUM_VECTORS,
    TLS_FLOAT_VECTORS,
)
from meterseal.protocol import tls
from meterseal.protocol.errors import TLSError


def rejects(function, argument, fragment):
    try:
        value = function(argument)
    except TLSError as error:
        assert fragment in str(error), (argument, str(error))
        return
    raise AssertionError("accepted %r as %r" % (argument, value))


for summed, expected in TLS_CHECKSUM_VECTORS:
    assert tls.checksum(summed) == expected, (summed, hex(tls.checksum(summed)))
    # What a receiver checks: the characters plus the checksum add up to 0 mod 2^16.
    assert (sum(summed) + expected) & 0xFFFF == 0
assert tls.NOT_UNDERSTOOD == b"\x019999" + b"FF1B" + b"\x03"
assert tls.parse_reply(tls.NOT_UNDERSTOOD) == tls.NotUnderstood()
assert tls.NotUnderstood().encode() == tls.NOT_UNDERSTOOD
# The captured i101 reply passes the checksum and is then refused only for its function.
rejects(tls.parse_reply, TLS_CAPTURED_REPLY, "function 'i101' is not i201 or i202")
rejects(tls.parse_reply, TLS_CAPTURED_REPLY.replace(b"FB3B", b"FB3C"), "checksum FB3C")
rejects(tls.parse_reply, b"\x019999FF1C\x03", "checksum FF1C")

for hex_text, quantity, expected in TLS_FLOAT_VECTORS:
    bits = int(hex_text, 16)
    units = tls._units_from_bits(bits, tls.UNITS_METRIC[quantity], "vector")
    assert units == expected, (hex_text, units)
# Encoding picks the nearest single; on the way back the record units come out unchanged.
for units in (0, 1, -1, 999, 1000, 16384000, 50000000, 99999999, -5000, 123456789):
    bits = tls._bits_from_units(units, tls.UNITS_METRIC[0], "volume")
    assert abs(tls._units_from_bits(bits, tls.UNITS_METRIC[0], "volume") - units) <= 4, units
# US consoles: gallons, inches, degrees F.
assert tls._units_from_bits(0x3F800000, tls.UNITS_US[0], "volume") == 3785  # 1 gal
assert tls._units_from_bits(0x3F800000, tls.UNITS_US[1], "height") == 25400  # 1 in
assert tls._units_from_bits(0x43540000, tls.UNITS_US[2], "temperature") == 10000  # 212 F
assert tls._units_from_bits(0x42D40000, tls.UNITS_US[2], "temperature") == 4111  # 106 F
rejects(lambda bits: tls._units_from_bits(bits, tls.UNITS_METRIC[0], "volume"), 0x7FC00000,
        "not a number")
rejects(lambda bits: tls._units_from_bits(bits, tls.UNITS_METRIC[0], "volume"), 0x7F000000,
        "beyond 2^40")

NOW = (2026, 3, 14, 9, 26)
tank_one = tls.TankInventory(
    1, "1", tls.STATUS_DELIVERY_IN_PROGRESS, volume_ml=15234567, tc_volume_ml=15101234,
    ullage_ml=14765433, height_um=1303250, water_um=12500, temperature_centi_c=1837,
    water_volume_ml=40321)
tank_two = tls.TankInventory(2, "3", 0, volume_ml=900000, height_um=200000,
                             temperature_centi_c=-250)
inventory = tls.InventoryReport(0, NOW, [tank_one, tank_two])
frame = inventory.encode()
assert frame.startswith(b"\x01i20100" + b"2603140926" + b"01" + b"1" + b"0001" + b"07")
assert tls.parse_reply(frame) == inventory
assert tls.parse_reply(frame).encode() == frame

delivery = tls.Delivery(
    (2026, 3, 14, 7, 0), (2026, 3, 14, 7, 40), start_volume_ml=5000000,
    start_tc_volume_ml=4990000, start_water_um=12500, start_temperature_centi_c=1500,
    end_volume_ml=25000000, end_tc_volume_ml=24950000, end_water_um=12500,
    end_temperature_centi_c=1650, start_height_um=600000, end_height_um=1900000)
deliveries = tls.DeliveryReport(0, NOW, [tls.TankDeliveries(1, "1", [delivery, delivery]),
                                         tls.TankDeliveries(2, "3", [])])
frame = deliveries.encode()
assert frame.startswith(b"\x01i20200260314092601102" + b"2603140700" + b"2603140740" + b"0A")
assert tls.parse_reply(frame) == deliveries and tls.parse_reply(frame).encode() == frame

# Older consoles send 8 delivery fields; '?' means no data; fields past the known ones survive.
short = tls.Delivery((2026, 1, 1, 0, 0), (2026, 1, 1, 0, 30), start_volume_ml=1000,
                     end_volume_ml=2000)
frame = tls.DeliveryReport(1, NOW, [tls.TankDeliveries(1, "1", [short])]).encode()
assert b"05" + b"3F800000" + b"????????" * 3 + b"40000000&&" in frame
extra = tls.TankInventory(1, "1", 0, extra=(0x3F800000, None), volume_ml=1000)
report = tls.InventoryReport(1, NOW, [extra])
assert tls.parse_reply(report.encode()) == report

# Commands, and the console side splitting what a host sends.
assert tls.Command(tls.INVENTORY, 0).encode() == b"\x01i20100"
assert tls.Command(tls.DELIVERY, 3, "ABC123").encode() == b"\x01ABC123i20203"
commands = tls.CommandReader()
for byte in b"\x01i20100\x01I10100":
    commands.feed(bytes([byte]))
assert commands.next_command() == tls.Command("i201", 0)
assert commands.next_command() == tls.Command("I101", 0)  # the console answers NOT_UNDERSTOOD
assert commands.next_command() is None
commands.feed(b"junk\x01i20\x01i20201\x01i201x1\x01i2\x02011")
for fragment in ("4 bytes before SOH", "cut short by a new SOH"):
    rejects(lambda reader: reader.next_command(), commands, fragment)
assert commands.next_command() == tls.Command("i202", 1)
rejects(lambda reader: reader.next_command(), commands, "tank 'x1' is not decimal")
rejects(lambda reader: reader.next_command(), commands, "not printable ASCII")
assert commands.next_command() is None
secure = tls.CommandReader("ABC123")
secure.feed(b"\x01ABC123i20100\x01ZYX987i20100")
assert secure.next_command() == tls.Command("i201", 0, "ABC123")
rejects(lambda reader: reader.next_command(), secure, "wrong security code")

# The gateway side: frames split anywhere, noise between them, an over-long frame.
frames = tls.ReplyReader()
stream = b"\xff\x00" + inventory.encode() + tls.NOT_UNDERSTOOD
for index in range(len(stream)):
    frames.feed(stream[index : index + 1])
rejects(lambda reader: reader.next_frame(), frames, "2 bytes before SOH dropped")
assert tls.parse_reply(frames.next_frame()) == inventory
assert frames.next_frame() == tls.NOT_UNDERSTOOD and frames.next_frame() is None
frames.feed(b"\x01" + b"1" * 9000)
frames.feed(b"2" * 9000 + b"\x03" + tls.NOT_UNDERSTOOD)
rejects(lambda reader: reader.next_frame(), frames, "18002 bytes")
assert frames.next_frame() == tls.NOT_UNDERSTOOD
frames.feed(b"noise")
rejects(lambda reader: reader.next_frame(), frames, "5 bytes outside any frame")
frames.feed(b"\x01i2010\x01" + tls.NOT_UNDERSTOOD[1:])
rejects(lambda reader: reader.next_frame(), frames, "cut short by a new SOH")
assert frames.next_frame() == tls.NOT_UNDERSTOOD

# Malformed reports name the problem.
good = inventory.encode()


def reframed(content):
    message = b"\x01" + content + b"&&"
    return message + ("%04X" % tls.checksum(message)).encode() + b"\x03"


rejects(tls.parse_reply, reframed(b"i201002613140926"), "date and time")
rejects(tls.parse_reply, reframed(b"i20100260314092601100010"), "ends inside a field")
rejects(tls.parse_reply, reframed(b"i2010026031409260110001017F800000"), "infinite")
rejects(tls.parse_reply, reframed(b"i201002603140926011000G"), "not hexadecimal")
rejects(tls.parse_reply, good[:-7] + b"\x01" + good[-6:], "not printable ASCII")
rejects(tls.parse_reply, b"\x01abc\x03", "not a frame")

# Console time <-> Unix seconds (China Standard Time is 8 h ahead of UTC).
assert tls.time_from_unix_s(1767225600, 28800) == (2026, 1, 1, 8, 0)
assert tls.unix_s_from_time((2026, 1, 1, 8, 0), 28800) == 1767225600
for unix_s in (946684800, 951782400, 1709164800, 1767225600 + 86400 * 59, 4102444740):
    assert tls.unix_s_from_time(tls.time_from_unix_s(unix_s, 0), 0) == unix_s - unix_s % 60

# Garbage: whatever arrives, a frame, None or TLSError, nothing else. A small LCG keeps this
# identical on both interpreters.
state = 54321
frames = tls.ReplyReader(max_frame_bytes=512)
commands = tls.CommandReader()
alphabet = b"\x01\x03i2010&?F9ABC\xff\x00"
errors = 0
for _ in range(3000):
    chunk = bytearray()
    for _ in range(9):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        chunk.append(alphabet[state % len(alphabet)])
    frames.feed(chunk)
    commands.feed(chunk)
    while True:
        try:
            frame = frames.next_frame()
        except TLSError:
            errors += 1
            continue
        if frame is None:
            break
        try:
            tls.parse_reply(frame)
        except TLSError:
            errors += 1
    while True:
        try:
            if commands.next_command() is None:
                break
        except TLSError:
            errors += 1
assert errors > 100

print("PASS tls_checks")
