# The DART driver's pure logic on both interpreters: a sale assembled from the frames a tap
# hears, unit conversion, a corrupted frame kept out of the record, the flow profile's bound,
# the pulse-mismatch rule and the pulser channel's parser.
# heapsize: 192K
from meterseal.firmware.drivers import dart as driver
from meterseal.firmware.drivers import pulses
from meterseal.protocol import dart
from meterseal.protocol.records import MAX_FLOW_POINTS

A = 0x50


class Clock:
    def __init__(self):
        self.now_ms = 1000

    def ticks_ms(self):
        return self.now_ms

    def ticks_diff(self, a, b):
        return a - b

    def wall_ms(self):
        return 1767225600000 + self.now_ms


class Recorder:
    def __init__(self):
        self.calls = []

    def sale(self, device, body):
        self.calls.append(("sale", device, body))
        return len(self.calls)

    def event(self, event_type, device=None, **fields):
        self.calls.append(("event", event_type, device, fields))

    def device_facts(self, device_key, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        self.calls.append(("facts", identity, software_id, param_checksum, k_factors))

    def totalizer(self, device, totalizer_ml, amount_totalizer_minor=None):
        self.calls.append(("totalizer", device["nozzle"], totalizer_ml, amount_totalizer_minor))

    def link_state(self, link, up, error_count):
        self.calls.append(("link_state", up))

    def of(self, kind):
        return [call for call in self.calls if call[0] == kind]


class Meter:
    def __init__(self):
        self.position = 0

    def count(self, meter):
        return self.position if meter == 1 else 7


def pump_block(block, transactions):
    return (dart.encode_short(A, dart.POLL) + dart.encode_data(A, block, transactions)
            + dart.encode_short(A, dart.ACK, block))


def controller_block(block, transactions):
    return dart.encode_data(A, block, transactions) + dart.encode_short(A, dart.ACK, block)


vendor = bytearray(28)
vendor[0:4] = dart.bcd_encode(100000, 4)
vendor[4:8] = dart.bcd_encode(100250, 4)
vendor[16:18] = dart.bcd_encode(231, 2)
vendor[20:22] = b"\x9c\x48"
dc7 = dart.DC7PumpParameters(2, 2, 3, 999999, (92, 95) + (0,) * 13, bytes(vendor))

clock, recorder, meter = Clock(), Recorder(), Meter()
tap = driver.DartTap(lambda: b"", recorder, clock, (A,), pulse_inputs={A: meter},
                     errors_report_ms=0)
assert not hasattr(tap, "write")
tap.feed(dart.encode_short(A, dart.EOT))  # a tap joining mid-line learns the exchange first
tap.feed(pump_block(0, [dc7, dart.DC9PumpIdentity("1000000080"),
                        dart.DC3NozzleStatusPrice(1645, 0, False), dart.DC1PumpStatus(1)]))
assert recorder.of("facts") == [("facts", "1000000080", "0231", b"\x9c\x48", (100000, 100250, 0, 0))]
tap.feed(pump_block(1, [dart.DC101TotalCounters(0x01, 12345, 12345, 0),
                        dart.DC101TotalCounters(0x11, 99900, 5, 0)]))
assert recorder.of("totalizer") == [("totalizer", 1, 123450, 99900)]
tap.feed(pump_block(2, [dart.DC3NozzleStatusPrice(1645, 1, True)]))
tap.feed(controller_block(0, [dart.CD3PresetVolume(31), dart.CD1Command(dart.CMD_AUTHORIZE)]))
tap.feed(pump_block(3, [dart.DC2FilledVolumeAmount(0, 0), dart.DC1PumpStatus(2),
                        dart.DC1PumpStatus(4)]))
clock.now_ms += 1500
meter.position = 20
tap.feed(pump_block(4, [dart.DC2FilledVolumeAmount(20, 33)]))
clock.now_ms += 1000
meter.position = 31
# The final figures, first corrupted on the line: never absorbed, only counted.
final = dart.encode_data(A, 5, [dart.DC2FilledVolumeAmount(31, 51), dart.DC1PumpStatus(6)])
corrupted = bytearray(final)
corrupted[6] ^= 0x01
tap.feed(dart.encode_short(A, dart.POLL) + bytes(corrupted))
assert tap.link.crc_errors == 1 and not recorder.of("sale")
tap.feed(pump_block(5, [dart.DC2FilledVolumeAmount(31, 51), dart.DC1PumpStatus(6)]))
tap.feed(controller_block(1, [dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION),
                              dart.CD101RequestTotalCounters(0x01),
                              dart.CD101RequestTotalCounters(0x11)]))
assert not recorder.of("sale")  # still waiting for the totals after the end
tap.feed(pump_block(6, [dart.DC2FilledVolumeAmount(31, 51),
                        dart.DC3NozzleStatusPrice(1645, 0, False),
                        dart.DC101TotalCounters(0x01, 12376, 12376, 0),
                        dart.DC101TotalCounters(0x11, 99951, 6, 0)]))
sales = recorder.of("sale")
assert len(sales) == 1, recorder.calls
_, device, body = sales[0]
assert device == {"dispenser_address": A, "nozzle": 1}
# The captured sale's units: 31 cL, 0.51, 1.645 per litre.
expected = {
    "grade": 92, "volume_ml": 310, "amount_minor": 51, "unit_price_minor_per_kl": 164500,
    "preset_volume_ml": 310, "end_status": "preset_reached",
    "totalizer_start_ml": 123450, "totalizer_end_ml": 123760,
    "amount_totalizer_start_minor": 99900, "amount_totalizer_end_minor": 99951,
    "start_wall_time_ms": 1767225601000, "end_wall_time_ms": 1767225603500,
    "duration_ms": 2500, "flow_interval_ms": 1000, "flow_profile_ml": [0, 200, 110],
    "dispenser_identity": "1000000080", "dispenser_software_id": "0231",
    "dispenser_param_checksum": b"\x9c\x48", "pulses_counted": 31, "pulse_volume_ml": 310,
}
for name in expected:
    assert body[name] == expected[name], (name, body[name])
assert sorted(body) == sorted(expected), sorted(body)
assert not recorder.of("event") or all(c[1] == "link_errors" for c in recorder.of("event"))
# The controller resets the pump; nothing more is recorded.
tap.feed(controller_block(2, [dart.CD1Command(dart.CMD_RESET)]))
tap.feed(pump_block(7, [dart.DC1PumpStatus(1)]))
assert len(recorder.of("sale")) == 1

# A sale the tap did not see end: recorded after close_timeout_ms, flagged link_lost.
tracker = driver.PumpTracker(A, recorder, clock, close_timeout_ms=3000)
tracker.absorb(dart.FROM_PUMP, [dc7, dart.DC3NozzleStatusPrice(1645, 2, True)])
tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(4), dart.DC2FilledVolumeAmount(100, 165)])
tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(5)])
clock.now_ms += 2999
tracker.tick()
assert len(recorder.of("sale")) == 1
clock.now_ms += 1
tracker.tick()
body = recorder.of("sale")[-1][2]
assert body["end_status"] == "link_lost" and body["volume_ml"] == 1000 and body["grade"] == 95

# Flow profile: bounded, interval doubling, nothing lost.
profile = driver.FlowProfile(100)
for second in range(1, 1001):
    profile.add(second * 1000, second * 250)
assert len(profile.volumes_ml) <= MAX_FLOW_POINTS
assert profile.interval_ms == 12800 and sum(profile.volumes_ml) == 250000
assert profile.volumes_ml[:2] == [12 * 250, 13 * 250]  # readings at 1..12 s, 13..25 s
profile.add(1000000, 100)  # a display that goes down adds nothing
assert sum(profile.volumes_ml) == 250000

# The mismatch rule: 0.5 % MPE, half of it allowed by default, plus a display step and a pulse.
assert pulses.pulse_volume_ml(1200, 100000) == 12000
assert pulses.pulse_volume_ml(1003, 100250) == 10004
assert pulses.mismatch_allowance_ml(10000, 100000, 10) == 10 + 10 + 25
assert pulses.mismatch(10000, 10100, 100000, 10)  # a 1 % board at 10 L
assert not pulses.mismatch(10000, 10040, 100000, 10)  # within quantization and the allowance
assert not pulses.mismatch(3000, 3030, 100000, 10)  # below the 5 L minimum: not judged
assert pulses.mismatch(3000, 3100, 100000, 10, min_volume_ml=2000)
assert pulses.mismatch(10100, 10000, 100000, 10)  # fewer reported than pulsed counts too
assert pulses.mismatch(10000, 10050, 100000, 10)  # 0.5 %: beyond half the MPE
assert not pulses.mismatch(10000, 10050, 100000, 10, mpe_fraction_percent=100)


# The pulser channel's parser, on a HAL-like port.
class Port:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.written = b""

    def read(self):
        return self.chunks.pop(0) if self.chunks else b""

    def write(self, data):
        self.written += data


port = Port([b"P 50 1 10 10 10\nP 50 2 4294967295 4294967295 4294967295\nP 5",
             b"1 1 99 99 99\nX ignored\nP 50 1 12 11\nP 50 1 a b c\n", b"P 50 1 25 24 25\n"])
channel = pulses.PulserChannel(port, A)
assert port.written == b"R\n"
assert channel.count(1) == 25 and channel.edges(1) == (25, 24)
assert channel.count(2) == 4294967295 and channel.count(3) is None and channel.count(16) is None
assert channel.lines == 3 and channel.bad_lines == 3  # other address, 5 fields, not numbers
assert (5 - 4294967295) & 0xFFFFFFFF == 6  # differences modulo 2^32 need no special case

print("PASS dart_driver_checks")
