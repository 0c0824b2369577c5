# The DART driver's pure logic on both interpreters: a sale assembled from the frames a tap
# hears, unit conversion, a corrupted frame kept out of the record, a tap joining late with and
# without the configured decimals and grades, a sale found finished at a master's first contact
# (recorded once, against the recorder's kept totalizer), the flow profile's bound, the
# pulse-mismatch rule and the pulser channel's parser.
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

    measure_ms = ticks_ms  # durations on the same clock, as on a board

    def ticks_diff(self, a, b):
        return a - b

    def wall_ms(self):
        return 1767225600000 + self.now_ms


class Recorder:
    def __init__(self, kept=None):
        self.calls = []
        self.kept = kept or {}  # nozzle -> [mL, amount]: the totalizers the recorder keeps

    def sale(self, device, body):
        self.calls.append(("sale", device, body))
        return len(self.calls)

    def event(self, event_type, device=None, **fields):
        self.calls.append(("event", event_type, device, fields))

    def device_facts(self, device_key, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        self.calls.append(("facts", identity, software_id, param_checksum, k_factors))

    def totalizer(self, device, totalizer_ml, amount_totalizer_minor=None, keep=False):
        self.calls.append(("totalizer", device["nozzle"], totalizer_ml, amount_totalizer_minor))
        self.kept[device["nozzle"]] = [totalizer_ml, amount_totalizer_minor]

    def last_totalizer(self, device):
        return self.kept.get(device["nozzle"])

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

# A tap joining after the controller read DC7 never hears the decimals and grades. The
# configured ones (config "decimals", "grades") stand in; without them the sale is not
# recordable. Once the line shows DC7, its values are used by both.
def late_sale(tap, volume, amount, totals, block):
    tap.feed(pump_block(block, [dart.DC3NozzleStatusPrice(1645, 1, True)]))
    tap.feed(controller_block(block, [dart.CD1Command(dart.CMD_AUTHORIZE)]))
    tap.feed(pump_block(block + 1, [dart.DC1PumpStatus(2), dart.DC1PumpStatus(4)]))
    tap.feed(pump_block(block + 2, [dart.DC2FilledVolumeAmount(volume, amount),
                                    dart.DC1PumpStatus(5)]))
    tap.feed(controller_block(block + 1, [dart.CD101RequestTotalCounters(0x01),
                                          dart.CD101RequestTotalCounters(0x11)]))
    tap.feed(pump_block(block + 3, [dart.DC3NozzleStatusPrice(1645, 0, False),
                                    dart.DC101TotalCounters(0x01, totals[0], totals[0], 0),
                                    dart.DC101TotalCounters(0x11, totals[1], 1, 0)]))
    tap.feed(controller_block(block + 2, [dart.CD1Command(dart.CMD_RESET)]))
    tap.feed(pump_block(block + 4, [dart.DC1PumpStatus(1)]))


configured, bare = Recorder(), Recorder()
taps = (driver.DartTap(lambda: b"", configured, clock, (A,), decimals=(2, 2, 3),
                       grades=(91, 95) + (0,) * 13),
        driver.DartTap(lambda: b"", bare, clock, (A,)))
for tap in taps:
    late_sale(tap, 1000, 1645, (20000, 32900), 0)
(_, device, body), = configured.of("sale")
assert device == {"dispenser_address": A, "nozzle": 1}
assert (body["grade"], body["volume_ml"], body["amount_minor"], body["unit_price_minor_per_kl"],
        body["totalizer_end_ml"], body["amount_totalizer_end_minor"], body["end_status"]) == (
            91, 10000, 1645, 164500, 200000, 32900, "completed"), body
assert "dispenser_identity" not in body and "totalizer_start_ml" not in body
assert bare.of("sale") == [] and taps[1].trackers[0].sales_unrecordable == 1
for tap in taps:
    tap.feed(controller_block(3, [dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS)]))
    tap.feed(pump_block(5, [dc7]))
    late_sale(tap, 500, 823, (20500, 33723), 6)
for recorder in (configured, bare):
    body = recorder.of("sale")[-1][2]
    assert body["grade"] == 92 and body["volume_ml"] == 5000 and body["amount_minor"] == 823
    assert body["totalizer_start_ml"] == 200000 and body["dispenser_software_id"] == "0231"
assert len(configured.of("sale")) == 2 and len(bare.of("sale")) == 1


# A master's first contact finds the pump at FILLING COMPLETED after a power failure (the
# pump's DC5 too). The totals decide: nozzle 1 moved since the recorder kept it -> that sale is
# recorded with the pump's figures, before the new totals are reported; unmoved -> nothing.
def found_at_first_contact(kept):
    recorder = Recorder(dict(kept))
    tracker = driver.PumpTracker(A, recorder, clock, check_unread=True)
    tracker.absorb(dart.FROM_PUMP, [dart.DC3NozzleStatusPrice(1645, 0, False),
                                    dart.DC5AlarmCode(0x0A), dart.DC1PumpStatus(5)])
    tracker.absorb(dart.FROM_PUMP, [dc7, dart.DC9PumpIdentity("1000000080"),
                                    dart.DC2FilledVolumeAmount(1000, 1645),
                                    dart.DC3NozzleStatusPrice(1645, 0, False),
                                    dart.DC1PumpStatus(5)])
    assert tracker.found == "power_fail" and not recorder.of("totalizer")
    tracker.absorb(dart.FROM_PUMP, [dart.DC101TotalCounters(0x01, 13376, 13376, 0),
                                    dart.DC101TotalCounters(0x11, 101545, 7, 0)])
    assert tracker.found == "power_fail" and not recorder.of("totalizer")  # nozzle 2 to come
    tracker.absorb(dart.FROM_PUMP, [dart.DC101TotalCounters(0x02, 5000, 5000, 0),
                                    dart.DC101TotalCounters(0x12, 8000, 3, 0)])
    assert tracker.found is None
    return recorder, tracker


recorder, tracker = found_at_first_contact({1: [123760, 99900], 2: [50000, 8000]})
# The end totals are kept only once the sale is recorded.
assert [c[0] for c in recorder.calls if c[0] in ("sale", "totalizer")][:2] == ["sale", "totalizer"]
(_, device, body), = recorder.of("sale")
assert device == {"dispenser_address": A, "nozzle": 1}
expected = {
    "grade": 92, "volume_ml": 10000, "amount_minor": 1645, "unit_price_minor_per_kl": 164500,
    "end_status": "power_fail", "totalizer_end_ml": 133760, "amount_totalizer_end_minor": 101545,
    "start_wall_time_ms": clock.wall_ms(), "end_wall_time_ms": clock.wall_ms(), "duration_ms": 0,
    "flow_interval_ms": 1000, "flow_profile_ml": [], "dispenser_identity": "1000000080",
    "dispenser_software_id": "0231", "dispenser_param_checksum": b"\x9c\x48",
}
assert body == expected, body
assert recorder.kept == {1: [133760, 101545], 2: [50000, 8000]}
recorder, tracker = found_at_first_contact({1: [133760, 101545], 2: [50000, 8000]})
assert recorder.of("sale") == [] and tracker.sales_recorded == 0
assert recorder.of("totalizer") == [("totalizer", 1, 133760, 101545), ("totalizer", 2, 50000, 8000)]
# A gateway that never kept a totalizer for the pump cannot tell: nothing is recorded.
recorder, tracker = found_at_first_contact({})
assert recorder.of("sale") == []
# Found after a link outage (no power alarm): link_lost.
tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(1)])
tracker.forget()
tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(5)])
assert tracker.found == "link_lost"


# The master holds the reset until the found sale is settled: it asks the filling and every
# nozzle's totals, waits answer_patience_polls, then settles with what it knows.
class NullPort:
    def read(self):
        return b""

    def write(self, data):
        pass


recorder = Recorder({1: [123760, 99900], 2: [50000, 8000]})
master = driver.DartMaster(NullPort(), recorder, clock, (A,), answer_patience_polls=2)
pump = master.pumps[0]
pump.tracker.absorb(dart.FROM_PUMP, [dc7, dart.DC2FilledVolumeAmount(1000, 1645),
                                     dart.DC3NozzleStatusPrice(1645, 0, False),
                                     dart.DC1PumpStatus(5)])
pump.info_requested = pump.totals_requested = True  # asked at first contact; no answer yet
ask = master._next_request(pump)
assert ask[0].command == dart.CMD_RETURN_FILLING_INFORMATION
assert [t.counter for t in ask[1:]] == [0x01, 0x11, 0x02, 0x12]
assert master._next_request(pump) is None and master._next_request(pump) is None
reset = master._next_request(pump)  # patience over: settled without totals, nothing recorded
assert [t.command for t in reset] == [dart.CMD_RESET] and pump.tracker.found is None
assert recorder.of("sale") == []
pump.tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(1)])
assert master._next_request(pump) is None

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
