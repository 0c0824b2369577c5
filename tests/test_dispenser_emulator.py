"""The emulated dispenser, driven over a real pty by a DART master built on pyserial, as a
gateway or a forecourt controller would drive a real pump.

Every test runs on a stepped clock: simulated time moves only when the master steps it between
polls, so the numbers are exact and repeatable and no test depends on machine speed.
"""

import os
import threading
import time

import pytest
import serial

from meterseal.hil import cheats
from meterseal.hil.emulators import dispenser as emulator
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle, amount_minor
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock
from meterseal.protocol import dart
from meterseal.protocol.crc import crc16_arc

ADDRESS = 0x50
PRICE_92 = 789000  # 7.890 per litre, in minor units per kL
PRICE_DIESEL = 745000
# The display shows whole centilitres and the CPU counts whole pulses (10 mL at 100 per litre,
# a little more under a K-factor cheat): indicated and expected may differ by this much.
ROUNDING_ML = 21


class DartMaster:
    """A minimal DART master on pyserial: the test's stand-in for a controller or gateway."""

    def __init__(self, path, clock, address=ADDRESS):
        self.line = serial.Serial(path, 9600, parity=serial.PARITY_ODD, timeout=0.05)
        self.clock = clock
        self.address = address
        self.decoder = dart.FrameDecoder()
        self.block = 0

    def close(self):
        self.line.close()

    def exchange(self, raw, wait_s=1.0):
        """Send ``raw``; the first frame event that comes back (a Frame or BAD_FRAME), else
        None after ``wait_s`` of silence."""
        self.line.write(raw)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            data = self.line.read(1)
            data += self.line.read(self.line.in_waiting)
            position = 0
            while position < len(data):
                used, result = self.decoder.feed(data, position)
                position += used
                if result is not dart.NEED_MORE:
                    return result
        return None

    def poll(self):
        """POLL; the pump's transactions (ACKed), [] for EOT; raises on anything else."""
        reply = self.exchange(dart.encode_short(self.address, dart.POLL))
        assert isinstance(reply, dart.Frame), "no answer to POLL: %r" % (reply,)
        if reply.kind == dart.EOT:
            return []
        assert reply.kind == dart.DATA
        self.line.write(dart.encode_short(self.address, dart.ACK, reply.block))
        return reply.transactions(dart.FROM_PUMP)

    def command(self, *transactions):
        self.block = dart.next_block(self.block)
        reply = self.exchange(dart.encode_data(self.address, self.block, transactions))
        assert isinstance(reply, dart.Frame) and reply.kind == dart.ACK, reply
        assert reply.block == self.block

    def ask(self, *transactions):
        """Command, then poll until the pump has answered; all the transactions it sent."""
        self.command(*transactions)
        return self.poll_all()

    def poll_all(self):
        answers = []
        for _ in range(10):
            got = self.poll()
            if not got:
                return answers
            answers += got
        return answers

    def run(self, until, step_s=0.5, max_steps=2000):
        """Poll, step the clock, repeat, until ``until(transactions)`` holds; every transaction
        seen on the way."""
        seen = []
        for _ in range(max_steps):
            got = self.poll_all()
            seen += got
            if until(got):
                return seen
            self.clock.advance(step_s)
        raise AssertionError("condition not reached; last transactions %r" % seen[-5:])


def of(kind, transactions):
    return [t for t in transactions if isinstance(t, kind)]


def status_in(transactions):
    return [t.status for t in of(dart.DC1PumpStatus, transactions)]


def reached(*states):
    return lambda got: any(s in states for s in status_in(got))


@pytest.fixture
def clock():
    return SimClock(speed=0)


@pytest.fixture
def station(clock):
    """Factory: a started Dispenser on a fresh pty and a DartMaster on its other side; both
    are stopped and closed afterwards, and the pump's thread must have recorded no error."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("nozzles", (Nozzle(grade=92, unit_price_minor_per_kl=PRICE_92),))
        port = PtyPort()
        pump_clock = kwargs.pop("clock", clock)
        pump = Dispenser(port, pump_clock, address=ADDRESS, **kwargs)
        pump.start()
        master = DartMaster(port.path, pump_clock)
        made.append((pump, port, master))
        return pump, master

    yield make
    for pump, port, master in made:
        master.close()
        pump.stop()
        port.close()
        assert pump.errors == []


@pytest.fixture(autouse=True)
def no_leaks():
    """Every thread stopped and every pty and socket closed when a test ends."""
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    yield
    assert [t for t in threading.enumerate() if t not in threads and t.is_alive()] == []
    assert set(os.listdir("/proc/self/fd")) - fds == set()


def serve_sale(pump, master, target_ml, nozzle=1, presets=()):
    """A customer draws ``target_ml``; the master authorizes on lift (with ``presets``), polls
    to the end and reads the filling information. Returns (draw, transactions seen)."""
    draw = pump.customer_draw(nozzle, target_ml)
    seen = master.run(lambda got: any(t.nozzle_out for t in of(dart.DC3NozzleStatusPrice, got)))
    master.command(*presets, dart.CD1Command(dart.CMD_AUTHORIZE))
    seen += master.run(reached(dart.STATUS_FILLING_COMPLETED, dart.STATUS_MAX_REACHED))
    for _ in range(100):  # the customer hangs up a few simulated seconds later
        if draw.wait(0.01):
            return draw, seen
        master.clock.advance(0.5)
        master.poll_all()
    raise AssertionError("the customer never hung up: %s" % draw.phase)


def read_sale(master, nozzle=1):
    """DC2 volume (mL) and amount, DC3 price (minor/kL), DC101 totals (mL, minor)."""
    answers = master.ask(
        dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION),
        dart.CD101RequestTotalCounters(nozzle),
        dart.CD101RequestTotalCounters(0x10 + nozzle),
    )
    (filled,) = of(dart.DC2FilledVolumeAmount, answers)
    (price,) = of(dart.DC3NozzleStatusPrice, answers)
    volume_total, amount_total = of(dart.DC101TotalCounters, answers)
    return {
        "volume_ml": dart.rescale(filled.volume, 2, 3),
        "amount_minor": filled.amount,
        "unit_price_minor_per_kl": dart.rescale(price.price, 3, 5),
        "totalizer_ml": dart.rescale(volume_total.total, 2, 3),
        "amount_totalizer_minor": amount_total.total,
        "fillings": amount_total.meter1,
    }


def read_parameters(master):
    (params,) = of(dart.DC7PumpParameters, master.ask(
        dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS)))
    return params


def k_factor(params, nozzle=1):
    start = 4 * (nozzle - 1)
    return dart.bcd_decode(params.reserved[start : start + 4])


# --- a whole sale -------------------------------------------------------------------------


def test_full_sale_over_dart_agrees_with_ground_truth(station):
    pump, master = station(nozzles=(
        Nozzle(grade=92, max_flow_lpm=40, totalizer_ml=1234560),
        Nozzle(grade=10, max_flow_lpm=130),
    ))
    # Power-up: not programmed; it says who it is and how it counts, and takes prices.
    assert status_in(master.poll_all()) == [dart.STATUS_NOT_PROGRAMMED]
    answers = master.ask(dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS),
                         dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY))
    (params,) = of(dart.DC7PumpParameters, answers)
    (identity,) = of(dart.DC9PumpIdentity, answers)
    assert (params.volume_decimals, params.amount_decimals, params.price_decimals) == (2, 2, 3)
    assert params.grades[:3] == (92, 10, 0)
    assert identity.identity == pump.identity
    assert k_factor(params, 1) == k_factor(params, 2) == 100000
    master.command(dart.CD1Command(dart.CMD_AUTHORIZE))  # refused: no prices yet
    assert status_in(master.poll_all()) == [dart.STATUS_NOT_PROGRAMMED]
    master.command(dart.CD5PriceUpdate((7890, 7450)))
    assert status_in(master.poll_all()) == [dart.STATUS_RESET]

    draw, seen = serve_sale(pump, master, 20000)

    assert dart.STATUS_FILLING in status_in(seen)
    live = [t.volume for t in of(dart.DC2FilledVolumeAmount, seen)]
    assert live == sorted(live) and len(set(live)) > 10  # the display ran up during filling
    truth = pump.truth.last()
    assert draw.entry == truth and draw.outcome == "delivered"
    assert truth["cheats"] == [] and truth["end_status"] == "completed"
    sale = read_sale(master)
    assert abs(sale["volume_ml"] - truth["true_volume_ml"]) <= ROUNDING_ML
    assert sale["volume_ml"] == truth["indicated_volume_ml"] == truth["reported_volume_ml"]
    assert sale["unit_price_minor_per_kl"] == PRICE_92
    assert sale["amount_minor"] == amount_minor(sale["volume_ml"], PRICE_92)
    assert sale["totalizer_ml"] == 1234560 + sale["volume_ml"] == truth["totalizer_end_ml"]
    assert sale["amount_totalizer_minor"] == sale["amount_minor"]
    assert sale["fillings"] == 1
    assert truth["pulser_pulses"] == truth["cpu_pulses"] == sale["volume_ml"] // 10
    assert 0 < truth["peak_flow_lpm"] <= 40
    # 20 L at under 40 L/min takes more than 30 s of simulated time.
    assert truth["duration_s"] > 30
    # The pump waits for the controller's reset before the next sale.
    master.command(dart.CD1Command(dart.CMD_RESET))
    assert status_in(master.poll_all()) == [dart.STATUS_RESET]


def test_preset_volume_stops_on_the_exact_display_value(station):
    pump, master = station()
    draw, seen = serve_sale(pump, master, 50000,
                            presets=[dart.CD3PresetVolume(1000)])  # 10.00 L
    assert dart.STATUS_MAX_REACHED in status_in(seen)
    sale = read_sale(master)
    assert sale["volume_ml"] == 10000
    truth = pump.truth.last()
    assert truth["end_status"] == "preset_reached" and truth["preset_volume_ml"] == 10000
    assert abs(truth["true_volume_ml"] - 10000) <= ROUNDING_ML
    assert draw.outcome == "stopped"


def test_preset_amount_never_exceeds_the_prepaid_sum(station):
    pump, master = station()
    serve_sale(pump, master, 50000, presets=[dart.CD4PresetAmount(5000)])  # 50.00 prepaid
    sale = read_sale(master)
    assert sale["amount_minor"] <= 5000
    assert amount_minor(sale["volume_ml"] + 10, PRICE_92) > 5000  # one more cL would be over


def test_unknown_or_malformed_commands_are_refused_without_harm(station):
    pump, master = station()
    master.block = dart.next_block(master.block)
    bad = dart.encode_data(ADDRESS, master.block, [dart.RawTransaction(0x01, b"\x06\x06")])
    reply = master.exchange(bad)
    assert reply.kind == dart.NAK and reply.block == master.block
    assert pump.link_stats["naks_sent"] == 1
    assert pump.status == dart.STATUS_RESET


def test_a_slow_master_still_sees_every_nozzle_movement_in_order(station):
    pump, master = station()
    master.poll_all()
    pump.lift(1)
    pump.hang_up(1)
    pump.lift(1)
    moves = [(t.nozzle, t.nozzle_out) for t in of(dart.DC3NozzleStatusPrice, master.poll_all())]
    assert moves == [(1, True), (0, False), (1, True)]


def test_suspend_resume_and_stop(station):
    pump, master = station()
    pump.lift(1)
    master.command(dart.CD1Command(dart.CMD_AUTHORIZE))
    master.run(lambda got: any(t.volume >= 200 for t in of(dart.DC2FilledVolumeAmount, got)))
    master.command(dart.CD1Command(dart.CMD_SUSPEND))
    assert pump.status == dart.STATUS_SUSPENDED
    master.clock.advance(2)  # the valve closes, the flow runs down
    held = pump.totalizers()  # unchanged until the sale ends
    master.poll_all()
    (filled,) = of(dart.DC2FilledVolumeAmount, master.ask(
        dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION)))
    master.clock.advance(10)
    (still,) = of(dart.DC2FilledVolumeAmount, master.ask(
        dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION)))
    assert still == filled and pump.totalizers() == held
    master.command(dart.CD1Command(dart.CMD_RESUME))
    master.run(lambda got: any(t.volume >= filled.volume + 200
                               for t in of(dart.DC2FilledVolumeAmount, got)))
    master.command(dart.CD1Command(dart.CMD_STOP))
    assert status_in(master.poll_all())[-1] == dart.STATUS_FILLING_COMPLETED
    truth = pump.truth.last()
    assert truth["end_status"] == "stopped"
    assert read_sale(master)["volume_ml"] == truth["indicated_volume_ml"]


def test_allowed_nozzles_keep_other_nozzles_dry(station):
    pump, master = station(nozzles=(Nozzle(grade=92, unit_price_minor_per_kl=PRICE_92),
                                    Nozzle(grade=95, unit_price_minor_per_kl=PRICE_92)))
    pump.lift(1)
    master.command(dart.CD2AllowedNozzles((2,)), dart.CD1Command(dart.CMD_AUTHORIZE))
    master.clock.advance(10)
    assert pump.status == dart.STATUS_AUTHORIZED and len(pump.truth) == 0
    pump.hang_up(1)
    pump.lift(2)
    assert pump.status == dart.STATUS_FILLING


def test_honest_meter_drift_is_not_labelled_a_cheat(station):
    pump, master = station(nozzles=(
        Nozzle(grade=92, unit_price_minor_per_kl=PRICE_92, meter_pulses_per_kl=100500),
    ))
    serve_sale(pump, master, 40000)
    truth = pump.truth.last()
    assert truth["cheats"] == []
    assert abs(read_sale(master)["volume_ml"] - 40000 * 1.005) <= ROUNDING_ML


class FailingPort:
    """A port whose first read fails, as a yanked USB adapter would."""

    def __init__(self):
        self.reads = 0

    def read(self, timeout):
        self.reads += 1
        if self.reads == 1:
            raise OSError(5, "Input/output error")
        time.sleep(timeout)
        return b""

    def write(self, data):
        pass


def test_errors_inside_the_thread_are_recorded_not_lost(clock):
    port = FailingPort()
    pump = Dispenser(port, clock).start()
    try:
        deadline = time.monotonic() + 5
        while not pump.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "OSError" in pump.errors[0]
        while port.reads < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert port.reads >= 3  # and the pump keeps serving
    finally:
        pump.stop()


# --- cheats -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [
    emulator.PULSE_SCALING_BOARD,
    emulator.PULSE_SCALING_ENCODER,
    emulator.K_FACTOR_LOGGED,
    emulator.K_FACTOR_SILENT,
    emulator.BOARD_SWAP,
])
def test_over_registration_cheats_inflate_the_indicated_volume_as_configured(station, kind):
    pump, master = station()
    pump.cheats.fit(kind, 3)
    serve_sale(pump, master, 30000)
    truth = pump.truth.last()
    sale = read_sale(master)
    assert [c["kind"] for c in truth["cheats"]] == [kind]
    assert abs(sale["volume_ml"] - truth["true_volume_ml"] * 1.03) <= ROUNDING_ML
    assert sale["amount_minor"] == amount_minor(sale["volume_ml"], PRICE_92)
    # The totalizer follows the display, so totalizer continuity cannot see these cheats.
    assert sale["totalizer_ml"] == sale["volume_ml"]


def test_honest_pump_agrees_with_ground_truth_sale_after_sale(station):
    pump, master = station()
    for target_ml in (3000, 17500, 41000):
        serve_sale(pump, master, target_ml)
        sale = read_sale(master)
        truth = pump.truth.last()
        assert truth["cheats"] == []
        assert abs(sale["volume_ml"] - target_ml) <= ROUNDING_ML
        master.command(dart.CD1Command(dart.CMD_RESET))
    entries = pump.truth.entries()
    assert [e["totalizer_start_ml"] for e in entries[1:]] == [
        e["totalizer_end_ml"] for e in entries[:-1]
    ]


def test_backoffice_rewrite_reports_less_than_the_totalizer_moved(station):
    pump, master = station()
    pump.cheats.fit(emulator.BACKOFFICE_REWRITE, 3)
    serve_sale(pump, master, 30000)
    truth = pump.truth.last()
    sale = read_sale(master)
    moved_ml = truth["totalizer_end_ml"] - truth["totalizer_start_ml"]
    assert moved_ml == truth["indicated_volume_ml"]
    assert abs(moved_ml - truth["true_volume_ml"]) <= ROUNDING_ML
    assert abs(sale["volume_ml"] - moved_ml * 0.97) <= ROUNDING_ML
    assert sale["volume_ml"] == truth["reported_volume_ml"] < moved_ml
    assert sale["amount_minor"] == amount_minor(sale["volume_ml"], PRICE_92)
    assert sale["amount_totalizer_minor"] > sale["amount_minor"]


def test_k_factor_change_logged_shows_in_dc7_and_silent_does_not(station):
    pump, master = station()
    sealed = read_parameters(master)
    pump.cheats.fit(emulator.K_FACTOR_SILENT, 3)
    assert read_parameters(master) == sealed
    pump.cheats.remove(emulator.K_FACTOR_SILENT)
    pump.cheats.fit(emulator.K_FACTOR_LOGGED, 3)
    logged = read_parameters(master)
    assert k_factor(logged) == round(100000 / 1.03) and k_factor(sealed) == 100000
    counter = dart.bcd_decode(logged.reserved[18:20])
    assert counter == dart.bcd_decode(sealed.reserved[18:20]) + 1
    assert logged.reserved[20:22] != sealed.reserved[20:22]
    # The checksum is CRC-16/ARC over the rest of the parameter block, so anyone can check it.
    payload = logged.payload()
    assert crc16_arc(payload[:20] + payload[22:]) == int.from_bytes(payload[20:22], "big")


def test_swapped_board_changes_the_identity(station):
    pump, master = station()
    ask_identity = dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY)
    (before,) = of(dart.DC9PumpIdentity, master.ask(ask_identity))
    pump.cheats.fit(emulator.BOARD_SWAP, 0)
    (after,) = of(dart.DC9PumpIdentity, master.ask(ask_identity))
    assert before.identity == pump.identity != after.identity == pump.swap_identity
    serve_sale(pump, master, 10000)
    assert abs(read_sale(master)["volume_ml"] - 10000) <= ROUNDING_ML  # size 0: same calibration


def test_a_preset_hides_a_pulse_board_from_the_customers_display(station):
    pump, master = station()
    pump.cheats.fit(emulator.PULSE_SCALING_BOARD, 3)
    serve_sale(pump, master, 50000, presets=[dart.CD3PresetVolume(2000)])
    truth = pump.truth.last()
    assert read_sale(master)["volume_ml"] == 20000
    assert abs(truth["true_volume_ml"] - 20000 / 1.03) <= ROUNDING_ML


def test_remote_and_draw_size_schedules_apply_only_when_they_should(station):
    pump, master = station()
    pump.cheats.fit(emulator.PULSE_SCALING_BOARD, 5, cheats.remote())
    serve_sale(pump, master, 10000)
    assert pump.truth.last()["cheats"] == []
    master.command(dart.CD1Command(dart.CMD_RESET))
    pump.cheats.toggle(emulator.PULSE_SCALING_BOARD, True)
    serve_sale(pump, master, 10000)
    assert pump.truth.last()["cheats"][0]["kind"] == emulator.PULSE_SCALING_BOARD
    master.command(dart.CD1Command(dart.CMD_RESET))
    # A chip that only starts scaling past 20 L: a 10 L test can stays honest, 40 L does not.
    pump.cheats.fit(emulator.PULSE_SCALING_BOARD, 5, cheats.draws_above(20000))
    serve_sale(pump, master, 10000)
    assert pump.truth.last()["cheats"] == []
    master.command(dart.CD1Command(dart.CMD_RESET))
    serve_sale(pump, master, 40000)
    truth = pump.truth.last()
    assert abs(truth["indicated_volume_ml"] - (20000 + 20000 * 1.05)) <= ROUNDING_ML + 10


# --- the pulser channel -------------------------------------------------------------------


class PulserReader:
    def __init__(self, path):
        self.line = serial.Serial(path, 115200, timeout=0.05)
        self.counts = {}

    def drain(self):
        """Read everything waiting; the latest (A, B, position) per meter."""
        buffer = b""
        while True:
            chunk = self.line.read(4096)
            if not chunk:
                break
            buffer += chunk
        for line in buffer.split(b"\n"):
            fields = line.split()
            if len(fields) == 6 and fields[0] == b"P":
                assert int(fields[1], 16) == ADDRESS
                self.counts[int(fields[2])] = tuple(int(f) for f in fields[3:])
        return self.counts

    def request(self):
        self.line.write(b"R\n")
        time.sleep(0.05)
        return self.drain()


def test_pulser_lines_a_slow_reader_missed_are_sent_again(station):
    """A reader that falls behind (the pty full, lines dropped) still gets the final count of a
    delivery within one interval, not only at the next heartbeat."""
    pump, master = station(pulser_interval_s=0.001, pulser_heartbeat_s=3600.0)
    pulser = PulserReader(pump.pulser_path)
    try:
        before = pulser.request()[1]
        serve_sale(pump, master, 400000)  # nobody reads the channel meanwhile: the pty fills
        assert pump.link_stats["pulser_lines_dropped"] > 0
        pulser.drain()  # what the full pty held: counts from the middle of the delivery
        master.clock.advance(0.5)  # one pulser interval and more
        master.poll()
        time.sleep(0.1)
        after = pulser.drain()[1]
    finally:
        pulser.line.close()
    assert after[2] - before[2] == pump.truth.last()["pulser_pulses"]


@pytest.mark.parametrize("kind, pulser_gain, dart_gain", [
    (None, 1.0, 1.0),
    (emulator.PULSE_SCALING_BOARD, 1.0, 1.03),  # between encoder and CPU
    (emulator.PULSE_SCALING_ENCODER, 1.03, 1.03),  # the encoder itself
])
def test_pulser_channel_shows_what_the_encoder_gives(station, kind, pulser_gain, dart_gain):
    pump, master = station()
    if kind:
        pump.cheats.fit(kind, 3)
    pulser = PulserReader(pump.pulser_path)
    try:
        before = pulser.request()[1]
        assert before[0] == before[1] == before[2]
        serve_sale(pump, master, 25000)
        # The final count went out when the meter stopped, without being asked for.
        after = pulser.drain()[1]
        assert pulser.request()[1] == after
    finally:
        pulser.line.close()
    truth = pump.truth.last()
    pulses = after[0] - before[0]
    assert after[0] - before[0] == after[1] - before[1] == after[2] - before[2]
    assert pulses == truth["pulser_pulses"]
    assert abs(pulses - truth["true_volume_ml"] / 10 * pulser_gain) <= 1
    sale = read_sale(master)
    assert abs(sale["volume_ml"] - truth["true_volume_ml"] * dart_gain) <= ROUNDING_ML
    # The gateway's check: volume implied by its own pulse count against what DART reports.
    mismatch_ml = sale["volume_ml"] - pulses * 1000000 // 100000
    assert (abs(mismatch_ml) > 500) == (kind == emulator.PULSE_SCALING_BOARD)


# --- link faults --------------------------------------------------------------------------


def test_bad_crc_is_detected_and_the_block_comes_again(station):
    pump, master = station()
    master.poll_all()
    pump.inject_fault("bad_crc")
    master.command(dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY))
    reply = master.exchange(dart.encode_short(ADDRESS, dart.POLL))
    assert reply is dart.BAD_FRAME and master.decoder.last_error.startswith("CRC")
    again = master.poll()  # not ACKed, so sent again, intact
    assert of(dart.DC9PumpIdentity, again) == [dart.DC9PumpIdentity(pump.identity)]
    assert pump.link_stats["retransmissions"] == 1


def test_dropped_byte_is_detected(station):
    pump, master = station()
    master.poll_all()
    pump.inject_fault("drop_byte")
    master.command(dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS))
    assert master.exchange(dart.encode_short(ADDRESS, dart.POLL)) is dart.BAD_FRAME
    assert of(dart.DC7PumpParameters, master.poll())


def test_silence_is_a_timeout(station):
    pump, master = station()
    pump.inject_fault("silence", count=2)
    for _ in range(2):
        assert master.exchange(dart.encode_short(ADDRESS, dart.POLL), wait_s=0.2) is None
    assert status_in(master.poll()) == [dart.STATUS_RESET]


def test_mid_frame_disconnect_leaves_a_partial_frame_then_silence(station):
    pump, master = station()
    pump.inject_fault("disconnect", count=2)
    assert master.exchange(dart.encode_short(ADDRESS, dart.POLL), wait_s=0.2) is None
    assert master.exchange(dart.encode_short(ADDRESS, dart.POLL), wait_s=0.2) is None
    assert master.exchange(dart.encode_short(ADDRESS, dart.POLL), wait_s=0.2) is None
    # Half a frame arrived and never finished; a master drops it after the line-idle timeout.
    discarded = master.decoder.discarded_bytes
    master.decoder.reset()
    assert master.decoder.discarded_bytes > discarded
    assert status_in(master.poll()) == [dart.STATUS_RESET]  # reconnected: the block again


# --- power --------------------------------------------------------------------------------


def test_power_loss_mid_delivery_keeps_the_transaction(station):
    pump, master = station()
    draw = pump.customer_draw(1, 40000)
    master.run(lambda got: any(t.nozzle_out for t in of(dart.DC3NozzleStatusPrice, got)))
    master.command(dart.CD1Command(dart.CMD_AUTHORIZE))
    master.run(lambda got: any(t.volume >= 1000 for t in of(dart.DC2FilledVolumeAmount, got)))
    pump.power_fail()
    assert master.exchange(dart.encode_short(ADDRESS, dart.POLL), wait_s=0.2) is None
    truth = pump.truth.last()
    assert truth["end_status"] == "power_fail"
    assert 10000 <= truth["indicated_volume_ml"] < 40000
    master.clock.advance(60)
    pump.power_restore()
    after = master.poll_all()
    assert of(dart.DC5AlarmCode, after) == [dart.DC5AlarmCode(0x0A)]
    assert status_in(after) == [dart.STATUS_FILLING_COMPLETED]
    sale = read_sale(master)
    assert sale["volume_ml"] == truth["indicated_volume_ml"]
    assert sale["amount_minor"] == truth["indicated_amount_minor"]
    assert sale["totalizer_ml"] == truth["totalizer_end_ml"]
    assert draw.wait(5) and draw.outcome == "stopped"


# --- determinism --------------------------------------------------------------------------


def scripted_day(station, seed):
    pump, master = station(seed=seed, clock=SimClock(speed=0), nozzles=(
        Nozzle(grade=92, unit_price_minor_per_kl=PRICE_92),
        Nozzle(grade=10, max_flow_lpm=130, unit_price_minor_per_kl=PRICE_DIESEL),
    ))
    pump.cheats.fit(emulator.PULSE_SCALING_BOARD, 2, cheats.draws_above(15000))
    for nozzle, target_ml, presets in ((1, 12000, ()), (2, 90000, ()),
                                       (1, 30000, [dart.CD4PresetAmount(10000)])):
        serve_sale(pump, master, target_ml, nozzle=nozzle, presets=presets)
        master.command(dart.CD1Command(dart.CMD_RESET))
    return pump.truth.entries()


def test_same_seed_same_ground_truth(station):
    first = scripted_day(station, seed=11)
    again = scripted_day(station, seed=11)
    other = scripted_day(station, seed=12)
    assert first == again
    assert len(first) == 3
    assert [e["peak_flow_lpm"] for e in first] != [e["peak_flow_lpm"] for e in other]
