"""The emulated forecourt controller running pumps on a shared RS-485 line, and a listen-only
gateway tap (pyserial on a pty) that decodes the whole conversation.

The controller is a real-time master, so these tests run on an accelerated clock and wait with
bounded real timeouts; they assert on what happened, never on how long it took.
"""

import os
import threading
import time

import pytest
import serial

from meterseal.hil.emulators import dispenser as emulator
from meterseal.hil.emulators.controller import Controller, preset_policy
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle, amount_minor
from meterseal.hil.serial_link import SharedLine
from meterseal.hil.simclock import SimClock
from meterseal.protocol import dart

PRICES = (789000, 745000)
ROUNDING_ML = 21
WAIT_S = 30  # real seconds: an upper bound for slow machines, never a performance claim


@pytest.fixture(autouse=True)
def no_leaks():
    """Every thread stopped and every pty and socket closed when a test ends."""
    threads, fds = set(threading.enumerate()), set(os.listdir("/proc/self/fd"))
    yield
    assert [t for t in threading.enumerate() if t not in threads and t.is_alive()] == []
    assert set(os.listdir("/proc/self/fd")) - fds == set()


@pytest.fixture
def forecourt():
    """Factory: a SharedLine with pumps and a controller, all stopped and closed afterwards;
    no thread may have recorded an error."""
    line = SharedLine()
    clock = SimClock(speed=40)
    parties = []
    ports = []

    def attach(name):
        ports.append(line.attach_local(name))
        return ports[-1]

    def make(addresses=(0x50,), **controller_kwargs):
        pumps = {}
        for address in addresses:
            pump = Dispenser(attach("pump-%02X" % address), clock, address=address,
                             seed=address, nozzles=(Nozzle(grade=92), Nozzle(grade=95)))
            parties.append(pump.start())
            pumps[address] = pump
        controller_kwargs.setdefault("prices", {address: PRICES for address in addresses})
        controller = Controller(attach("controller"), clock, addresses=addresses,
                                **controller_kwargs)
        parties.append(controller.start())
        return pumps, controller

    make.line = line
    yield make
    for party in reversed(parties):
        party.stop()
    for port in ports:
        port.close()
    line.close()
    for party in parties:
        assert party.errors == []


def wait_for(condition, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached within %g s" % timeout_s)


def assert_sale_matches(sale, truth):
    assert sale["address"] == truth["address"] and sale["nozzle"] == truth["nozzle"]
    assert sale["grade"] == truth["grade"]
    assert sale["volume_ml"] == truth["reported_volume_ml"]
    assert sale["amount_minor"] == truth["reported_amount_minor"]
    assert sale["unit_price_minor_per_kl"] == truth["unit_price_minor_per_kl"]
    assert sale["totalizer_ml"] == truth["totalizer_end_ml"]
    assert sale["amount_totalizer_minor"] == truth["amount_totalizer_end_minor"]


def test_controller_programs_authorizes_and_reads_every_sale(forecourt):
    pumps, controller = forecourt()
    pump = pumps[0x50]
    wait_for(lambda: pump.status == dart.STATUS_RESET)  # prices arrived by CD5
    for nozzle, target_ml in ((1, 15000), (2, 8000)):
        draw = pump.customer_draw(nozzle, target_ml)
        assert draw.wait(WAIT_S) and draw.outcome == "delivered"
        wait_for(lambda: len(controller.sales) == len(pump.truth))
        truth = pump.truth.last()
        assert_sale_matches(controller.sales[-1], truth)
        assert abs(truth["indicated_volume_ml"] - target_ml) <= ROUNDING_ML
        assert truth["unit_price_minor_per_kl"] == PRICES[nozzle - 1]
    assert controller.sales[-1]["identity"] == pump.identity
    wait_for(lambda: pump.status == dart.STATUS_RESET)  # the controller reset it after reading


def test_one_controller_runs_two_fuelling_points_on_one_line(forecourt):
    pumps, controller = forecourt(addresses=(0x50, 0x51))
    wait_for(lambda: all(p.status == dart.STATUS_RESET for p in pumps.values()))
    draws = [pumps[0x50].customer_draw(1, 12000), pumps[0x51].customer_draw(2, 9000)]
    assert all(draw.wait(WAIT_S) for draw in draws)
    wait_for(lambda: len(controller.sales) == 2)
    by_address = {sale["address"]: sale for sale in controller.sales}
    for address, pump in pumps.items():
        assert_sale_matches(by_address[address], pump.truth.last())


def test_prepaid_policy_ends_the_sale_at_the_preset(forecourt):
    pumps, controller = forecourt(policy=preset_policy(amount_minor=5000))
    pump = pumps[0x50]
    wait_for(lambda: pump.status == dart.STATUS_RESET)
    draw = pump.customer_draw(1, 60000)
    assert draw.wait(WAIT_S) and draw.outcome == "stopped"
    wait_for(lambda: controller.sales)
    sale = controller.sales[-1]
    assert sale["status"] == dart.STATUS_MAX_REACHED
    assert sale["amount_minor"] <= 5000 < amount_minor(sale["volume_ml"] + 10, PRICES[0])
    # A customer who paid at the kiosk for 12 L: that preset beats the policy, once.
    wait_for(lambda: pump.status == dart.STATUS_RESET)
    controller.prepay(0x50, volume_ml=12000)
    assert pump.customer_draw(2, 60000).wait(WAIT_S)
    wait_for(lambda: len(controller.sales) == 2)
    assert controller.sales[-1]["volume_ml"] == 12000 == pump.truth.last()["preset_volume_ml"]


def test_controller_recovers_a_sale_cut_by_a_power_failure(forecourt):
    pumps, controller = forecourt()
    pump = pumps[0x50]
    wait_for(lambda: pump.status == dart.STATUS_RESET)
    draw = pump.customer_draw(1, 60000)
    seen = controller.pumps[0x50]
    wait_for(lambda: seen.status == dart.STATUS_FILLING and seen.filled and seen.filled[0] > 200)
    pump.power_fail()
    assert draw.wait(WAIT_S) and draw.outcome == "stopped"
    wait_for(lambda: controller.link_stats[0x50]["timeouts"] > 0)  # the pump fell silent
    pump.power_restore()
    wait_for(lambda: controller.sales)
    truth = pump.truth.last()
    assert truth["end_status"] == "power_fail" and truth["indicated_volume_ml"] > 0
    assert_sale_matches(controller.sales[-1], truth)
    assert 0x0A in controller.pumps[0x50].alarms


def test_controller_rides_through_link_faults(forecourt):
    pumps, controller = forecourt()
    pump = pumps[0x50]
    wait_for(lambda: pump.status == dart.STATUS_RESET)
    for kind in emulator.FAULTS:
        pump.inject_fault(kind)
    draw = pump.customer_draw(1, 10000)
    assert draw.wait(WAIT_S)
    wait_for(lambda: controller.sales)
    assert_sale_matches(controller.sales[-1], pump.truth.last())
    stats = controller.link_stats[0x50]
    assert stats["bad_frames"] >= 2 and stats["timeouts"] >= 2
    assert pump.link_stats["faults_injected"] == 3  # silence works on the pump's receiver


# --- the passive tap ----------------------------------------------------------------------


class Tap:
    """A listen-only gateway on the line: decodes every frame and tells the directions apart
    from the exchange (docs/protocols/dart.md, "Passive tap"). It never writes."""

    def __init__(self, path):
        self.line = serial.Serial(path, 9600, parity=serial.PARITY_ODD, timeout=0.05)
        self.decoder = dart.FrameDecoder()
        self.previous = {}  # address -> kind of the last frame seen for it
        self.log = []  # (address, "to pump" | "from pump" | "control", frame, transactions)

    def read(self):
        data = self.line.read(self.line.in_waiting or 1)
        for frame in self.decoder.frames_in(data):
            self._classify(frame)

    def _classify(self, frame):
        before = self.previous.get(frame.address)
        self.previous[frame.address] = frame.kind
        if frame.kind != dart.DATA:
            self.log.append((frame.address, "control", frame, None))
            return
        if before in (dart.POLL, dart.ACKPOLL):
            self.log.append((frame.address, "from pump", frame,
                             frame.transactions(dart.FROM_PUMP)))
        else:
            self.log.append((frame.address, "to pump", frame, frame.transactions(dart.TO_PUMP)))

    def transactions(self, direction, kind):
        return [t for _, d, _, ts in self.log if d == direction for t in ts if isinstance(t, kind)]


def test_listen_only_tap_decodes_a_full_sale(forecourt):
    tap = Tap(forecourt.line.attach_pty("tap"))
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            tap.read()

    listener = threading.Thread(target=listen, name="tap")
    listener.start()
    try:
        pumps, controller = forecourt()
        pump = pumps[0x50]
        wait_for(lambda: pump.status == dart.STATUS_RESET)
        draw = pump.customer_draw(2, 20000)
        assert draw.wait(WAIT_S)
        # The tap has heard the sale closed: the controller's reset and the pump's answer.
        wait_for(lambda: dart.STATUS_RESET in [
            t.status for t in tap.transactions("from pump", dart.DC1PumpStatus)[-1:]
        ] and controller.sales)
    finally:
        stop.set()
        listener.join()
        tap.line.close()
    truth = pump.truth.last()

    assert tap.decoder.bad_frames == 0 and tap.log
    prices = tap.transactions("to pump", dart.CD5PriceUpdate)
    assert prices == [dart.CD5PriceUpdate((7890, 7450))]
    commands = [t.command for t in tap.transactions("to pump", dart.CD1Command)]
    after_authorize = commands[commands.index(dart.CMD_AUTHORIZE) + 1 :]
    assert after_authorize[-2:] == [dart.CMD_RETURN_FILLING_INFORMATION, dart.CMD_RESET]
    states = [t.status for t in tap.transactions("from pump", dart.DC1PumpStatus)]
    for state in (dart.STATUS_FILLING, dart.STATUS_FILLING_COMPLETED, dart.STATUS_RESET):
        assert state in states
    lifted = [t for t in tap.transactions("from pump", dart.DC3NozzleStatusPrice) if t.nozzle_out]
    assert lifted[0].nozzle == 2 and lifted[0].price == 7450
    filled = tap.transactions("from pump", dart.DC2FilledVolumeAmount)
    assert len(filled) > 5  # the running display during the filling, then the final figures
    assert (dart.rescale(filled[-1].volume, 2, 3), filled[-1].amount) == (
        truth["reported_volume_ml"], truth["reported_amount_minor"])
    totals = {t.counter: t.total for t in tap.transactions("from pump", dart.DC101TotalCounters)}
    assert dart.rescale(totals[0x02], 2, 3) == truth["totalizer_end_ml"]
    assert totals[0x12] == truth["amount_totalizer_end_minor"]
