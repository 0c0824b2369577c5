"""The DART driver on the real MicroPython unix port, against the emulators over ptys.

tests/mpy/dart_gateway.py runs the driver with a recorder test double that prints every
observation as a JSON line; these tests play customers on the emulated pump and compare each
observation with the emulator's ground truth. Clocks are accelerated and every wait is bounded;
nothing asserts on how long anything took.
"""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from meterseal.hil import micropython
from meterseal.hil.emulators.controller import Controller
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle
from meterseal.hil.serial_link import PtyPort, SharedLine
from meterseal.hil.simclock import SimClock
from meterseal.protocol import records

SCRIPT = Path(__file__).parent / "mpy" / "dart_gateway.py"
PRICES = (789000, 745000)
WAIT_S = 30  # real seconds: an upper bound for slow machines, never a performance claim


def wait_for(condition, timeout_s=WAIT_S, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("%s not reached within %g s" % (what, timeout_s))


class GatewayProcess:
    """tests/mpy/dart_gateway.py under MicroPython; `observations` fills as it prints."""

    def __init__(self, image, config):
        env = dict(os.environ, MICROPYPATH=f"{image}:.frozen")
        self.proc = subprocess.Popen(
            [micropython.micropython_command(), str(SCRIPT), json.dumps(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.observations = []
        self.other_output = []
        self._reader = threading.Thread(target=self._read, name="gateway-stdout")
        self._reader.start()
        self.wait_for(lambda: self.of("ready"), "gateway start")

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.observations.append(json.loads(line))
            except ValueError:
                self.other_output.append(line.rstrip())

    def wait_for(self, condition, what="condition"):
        def done():
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited: %s" % "\n".join(self.other_output))
            return condition()

        wait_for(done, what=what)

    def of(self, op):
        return [o for o in list(self.observations) if o["op"] == op]

    def sales(self):
        return self.of("sale")

    def events(self, event_type=None):
        return [o for o in self.of("event") if event_type in (None, o["event_type"])]

    def kept_totalizers(self):
        """What the recorder would have kept when this process ended: the last totals per
        nozzle, in the form tests/mpy/dart_gateway.py takes as "totalizers"."""
        return {"%d,%d" % (o["device"]["dispenser_address"], o["device"]["nozzle"]):
                [o["totalizer_ml"], o["amount_totalizer_minor"]] for o in self.of("totalizer")}

    def stop(self):
        if self.proc.stdout.closed:
            return
        self.proc.kill()
        self.proc.wait()
        self._reader.join()
        self.proc.stdout.close()
        assert self.other_output == [], "\n".join(self.other_output)


@pytest.fixture
def gateway(device_image):
    """Factory: start the driver on MicroPython with a config; killed at the end."""
    started = []

    def start(config):
        started.append(GatewayProcess(device_image, config))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def pump_on_pty():
    """Factory: an emulated pump (prices programmed) on its own pty; stopped afterwards."""
    made = []

    def make(speed=60, **kwargs):
        port = PtyPort()
        kwargs.setdefault("nozzles", (
            Nozzle(grade=92, unit_price_minor_per_kl=PRICES[0], totalizer_ml=1_234_560,
                   amount_totalizer_minor=974_068),
            Nozzle(grade=95, max_flow_lpm=60, unit_price_minor_per_kl=PRICES[1]),
        ))
        pump = Dispenser(port, SimClock(speed=speed), address=0x50, seed=11, **kwargs)
        made.append((pump, port))
        return pump, port

    yield make
    for pump, port in made:
        pump.stop()
        port.close()
        assert pump.errors == []


def assert_sale_is_the_truth(observation, truth, found=False, facts=True):
    """A fuel.sale body equals what the emulator indicated, in record units, and validates.
    found: the sale was found finished at first contact (no timing or flow, power_fail);
    facts=False: identity and parameters were never heard (a tap joining late)."""
    body = observation["body"]
    assert observation["device"] == {"dispenser_address": truth["address"],
                                     "nozzle": truth["nozzle"]}
    assert body["grade"] == truth["grade"]
    assert body["volume_ml"] == truth["indicated_volume_ml"] == truth["reported_volume_ml"]
    assert body["amount_minor"] == truth["indicated_amount_minor"]
    assert body["unit_price_minor_per_kl"] == truth["unit_price_minor_per_kl"]
    assert body["totalizer_end_ml"] == truth["totalizer_end_ml"]
    assert body["amount_totalizer_end_minor"] == truth["amount_totalizer_end_minor"]
    if "totalizer_start_ml" in body:
        assert body["totalizer_start_ml"] == truth["totalizer_start_ml"]
        assert body["amount_totalizer_start_minor"] == truth["amount_totalizer_start_minor"]
    if found:
        assert body["end_status"] == "power_fail"
        assert body["flow_profile_ml"] == [] and body["duration_ms"] == 0
        assert body["start_wall_time_ms"] == body["end_wall_time_ms"]
        assert "totalizer_start_ml" not in body and "preset_volume_ml" not in body
    else:
        assert body["end_status"] == truth["end_status"]
        if truth["preset_volume_ml"] is not None:
            assert body["preset_volume_ml"] == truth["preset_volume_ml"]
        assert sum(body["flow_profile_ml"]) == body["volume_ml"]
    assert len(body["flow_profile_ml"]) <= records.MAX_FLOW_POINTS
    assert body["end_wall_time_ms"] >= body["start_wall_time_ms"] and body["duration_ms"] >= 0
    values = dict(body)
    if facts:
        assert body["dispenser_identity"] == truth["identity"]
        values["dispenser_param_checksum"] = bytes.fromhex(body["dispenser_param_checksum"])
    else:
        assert not {"dispenser_identity", "dispenser_param_checksum",
                    "dispenser_software_id"} & set(body)
    # The body is a valid fuel.sale as the recorder will build it.
    records.build({
        "version": records.SCHEMA_VERSION, "gateway_id": "gw-1", "boot_epoch": 1, "seq": 1,
        "prev": bytes(32), "opsec": 0, "wall_time_ms": body["end_wall_time_ms"],
        "time_status": "S", "clock_set_count": 0, "event_count": 0,
        "software_name": "meterseal", "software_version": "0.1",
        "software_digest": bytes(32), "device": observation["device"], "kind": "fuel.sale",
        "body": values,
    })


def serve(pump, draws):
    for nozzle, target_ml in draws:
        draw = pump.customer_draw(nozzle, target_ml)
        assert draw.wait(WAIT_S), "customer at nozzle %d still waiting" % nozzle


# --- master mode --------------------------------------------------------------------------------


def test_master_records_every_sale_with_totals_identity_and_parameters(pump_on_pty, gateway):
    pump, port = pump_on_pty()
    gw = gateway({"mode": "master", "port": port.path, "options": {"flow_interval_ms": 100}})
    pump.start()
    serve(pump, ((1, 15000), (2, 8000), (1, 42000)))
    gw.wait_for(lambda: len(gw.sales()) == 3, "three sales")
    truths = pump.truth.entries()
    assert [t["sale_number"] for t in truths] == [1, 2, 3]
    for observation, truth in zip(gw.sales(), truths):
        assert_sale_is_the_truth(observation, truth)
        assert observation["body"]["dispenser_software_id"] == "0231"
    # Totals read at first contact make the first sale's start totalizer known too.
    assert gw.sales()[0]["body"]["totalizer_start_ml"] == 1_234_560
    facts = gw.of("device_facts")[-1]
    assert facts["device_key"] == {"dispenser_address": 0x50}
    assert facts["identity"] == pump.identity and facts["software_id"] == "0231"
    assert facts["k_factors"] == [100000, 100000, 0, 0]
    assert facts["param_checksum"] == gw.sales()[-1]["body"]["dispenser_param_checksum"]
    totals = {o["device"]["nozzle"]: o["totalizer_ml"] for o in gw.of("totalizer")}
    assert totals == {n: ml for n, (ml, _) in enumerate(pump.totalizers(), 1)}
    # The long sale's profile was bounded by doubling its interval.
    assert gw.sales()[2]["body"]["flow_interval_ms"] >= 100
    assert gw.events("link_lost") == []


def test_master_authorizes_with_a_preset_policy(pump_on_pty, gateway):
    pump, port = pump_on_pty()
    gw = gateway({"mode": "master", "port": port.path, "preset": {"volume_ml": 5000}})
    pump.start()
    serve(pump, ((2, 30000),))
    gw.wait_for(lambda: gw.sales(), "the preset sale")
    sale = gw.sales()[0]["body"]
    assert sale["end_status"] == "preset_reached" and sale["volume_ml"] == 5000
    assert sale["preset_volume_ml"] == 5000
    assert_sale_is_the_truth(gw.sales()[0], pump.truth.last())


def test_master_rides_through_link_faults_and_never_records_a_corrupted_value(pump_on_pty,
                                                                             gateway):
    pump, port = pump_on_pty()
    gw = gateway({"mode": "master", "port": port.path, "options": {"errors_report_ms": 0}})
    pump.start()
    gw.wait_for(lambda: gw.of("device_facts"), "first contact")
    pump.inject_fault("bad_crc", 2)
    pump.inject_fault("drop_byte", 1)
    pump.inject_fault("disconnect", 8)  # more failed polls than lost_after: link_lost
    serve(pump, ((1, 20000),))
    pump.inject_fault("silence", 2)
    serve(pump, ((2, 6000),))
    gw.wait_for(lambda: len(gw.sales()) == 2, "both sales")
    for observation, truth in zip(gw.sales(), pump.truth.entries()):
        assert_sale_is_the_truth(observation, truth)
    assert pump.link_stats["faults_injected"] == 4
    lost, restored = gw.events("link_lost"), gw.events("link_restored")
    assert len(lost) == len(restored) == 1
    assert lost[0]["device"] == {"dispenser_address": 0x50}
    assert restored[0]["fields"]["outage_ms"] >= 0
    errors = gw.events("link_errors")
    assert sum(e["fields"]["crc_errors"] for e in errors) >= 3  # 2 flipped bits, 1 lost byte
    assert sum(e["fields"]["timeouts"] for e in errors) >= 5
    states = [o["up"] for o in gw.of("link_state")]
    assert states[0] is True and False in states and states[-1] is True
    # Readings resumed: a third sale after all that is exact too.
    serve(pump, ((1, 3000),))
    gw.wait_for(lambda: len(gw.sales()) == 3, "the sale after the faults")
    assert_sale_is_the_truth(gw.sales()[2], pump.truth.last())


def test_master_reads_a_sale_cut_by_a_power_failure(pump_on_pty, gateway):
    pump, port = pump_on_pty()
    gw = gateway({"mode": "master", "port": port.path})
    pump.start()
    gw.wait_for(lambda: gw.of("device_facts"), "first contact")
    draw = pump.customer_draw(1, 60000)
    wait_for(lambda: pump.totalizers() and pump.status == 4 and pump.nozzle_out == 1)
    time.sleep(0.2)
    pump.power_fail()
    assert draw.wait(WAIT_S)
    gw.wait_for(lambda: gw.events("link_lost"), "link lost")
    pump.power_restore()
    gw.wait_for(lambda: gw.sales(), "the cut sale")
    truth = pump.truth.last()
    assert truth["end_status"] == "power_fail"
    assert_sale_is_the_truth(gw.sales()[0], truth)


def test_master_restarted_after_a_sale_it_never_read_records_it_once(pump_on_pty, gateway):
    """The gateway loses power mid-sale; the customer finishes; the pump waits at FILLING
    COMPLETED. The restarted gateway finds the nozzle's totalizer moved since the recorder last
    kept it, records the sale with the pump's figures, then resets the pump."""
    pump, port = pump_on_pty()
    first = gateway({"mode": "master", "port": port.path})
    pump.start()
    first.wait_for(lambda: len(first.kept_totalizers()) == 2, "first contact's totals")
    draw = pump.customer_draw(1, 15000)
    wait_for(lambda: pump.status == 4, what="filling, authorized by the first gateway")
    first.stop()  # the gateway's power cut
    assert draw.wait(WAIT_S) and pump.status == 5  # nobody reset it
    kept = first.kept_totalizers()
    assert first.sales() == [] and kept["80,1"][0] == pump.truth.last()["totalizer_start_ml"]

    second = gateway({"mode": "master", "port": port.path, "totalizers": kept})
    second.wait_for(lambda: second.sales(), "the sale found at first contact")
    wait_for(lambda: pump.status == 1, what="the pump reset after the found sale was recorded")
    assert_sale_is_the_truth(second.sales()[0], pump.truth.last(), found=True)
    # Its end totals are kept after the sale, so a further restart would not record it again.
    assert second.kept_totalizers()["80,1"][0] == pump.truth.last()["totalizer_end_ml"]
    # Exactly once: the next customer's sale is the second one this gateway records.
    serve(pump, ((2, 8000),))
    second.wait_for(lambda: len(second.sales()) == 2, "the next sale")
    assert_sale_is_the_truth(second.sales()[1], pump.truth.last())
    assert len(pump.truth.entries()) == 2


def test_master_restarted_after_recording_a_sale_does_not_record_it_again(pump_on_pty, gateway):
    """The gateway records a sale, keeps its end totals, and loses power before it resets the
    pump. The restarted gateway finds the same totals: no second record, only the reset."""
    # One nozzle: its totalizer alone says whether the sale shown was recorded.
    pump, port = pump_on_pty(nozzles=(
        Nozzle(grade=92, unit_price_minor_per_kl=PRICES[0], totalizer_ml=1_234_560,
               amount_totalizer_minor=974_068),))
    first = gateway({"mode": "master", "port": port.path, "cut_after_sale": True})
    pump.start()
    serve(pump, ((1, 15000),))
    wait_for(lambda: first.of("cut"), what="the first gateway's power cut after its sale")
    assert first.proc.wait(WAIT_S) == 0
    assert len(first.sales()) == 1 and pump.status == 5  # recorded, never reset
    recorded = pump.truth.last()
    assert_sale_is_the_truth(first.sales()[0], recorded)
    kept = first.kept_totalizers()
    assert kept == {"80,1": [recorded["totalizer_end_ml"], recorded["amount_totalizer_end_minor"]]}

    second = gateway({"mode": "master", "port": port.path, "totalizers": kept})
    wait_for(lambda: pump.status == 1, what="the pump reset by the restarted gateway")
    serve(pump, ((1, 8000),))
    second.wait_for(lambda: second.sales(), "the next sale")
    # The only sale the restarted gateway recorded is the new one, which starts where the
    # recorded one ended.
    assert len(second.sales()) == 1 and len(pump.truth.entries()) == 2
    assert_sale_is_the_truth(second.sales()[0], pump.truth.last())
    assert second.sales()[0]["body"]["totalizer_start_ml"] == recorded["totalizer_end_ml"]


# --- passive tap --------------------------------------------------------------------------------


class CountingPort:
    """A party's port that counts the bytes the party puts on the line."""

    def __init__(self, port):
        self._port = port
        self.sent = 0

    def write(self, data):
        self.sent += len(data)
        self._port.write(data)

    def __getattr__(self, name):
        return getattr(self._port, name)


def test_tap_records_every_sale_exactly_and_never_transmits(gateway):
    line = SharedLine()
    clock = SimClock(speed=40)
    pump_port = CountingPort(line.attach_local("pump-50"))
    controller_port = CountingPort(line.attach_local("controller"))
    # A party that hears everything on the line: the tap's bytes would reach it as well.
    monitor = line.attach_local("monitor")
    heard = [0]
    listening = threading.Event()
    listening.set()

    def listen():
        while listening.is_set():
            heard[0] += len(monitor.read(0.05))

    listener = threading.Thread(target=listen, name="monitor")
    listener.start()
    pump = Dispenser(pump_port, clock, address=0x50, seed=5,
                     nozzles=(Nozzle(grade=92), Nozzle(grade=95)))
    controller = Controller(controller_port, clock, addresses=(0x50,), prices={0x50: PRICES})
    try:
        gw = gateway({"mode": "tap", "port": line.attach_pty("tap"),
                      "pulsers": {"80": pump.pulser_path}, "options": {"errors_report_ms": 0}})
        pump.start()
        controller.start()
        wait_for(lambda: pump.status == 1, what="prices programmed")
        # Each customer arrives once the last one's sale is recorded, as at a real pump (a
        # lift within milliseconds of a hang-up would blur the meter's rest count).
        for number, (nozzle, target_ml) in enumerate(((2, 20000), (1, 7000), (1, 60000)), 1):
            if number == 3:
                controller.prepay(0x50, volume_ml=12000)
            serve(pump, ((nozzle, target_ml),))
            gw.wait_for(lambda: len(gw.sales()) == number, "sale %d heard" % number)
        wait_for(lambda: len(controller.sales) == 3, what="the controller's reads")
        truths = pump.truth.entries()
        for observation, truth, read in zip(gw.sales(), truths, controller.sales):
            assert_sale_is_the_truth(observation, truth)
            assert observation["body"]["volume_ml"] == read["volume_ml"]
            assert observation["body"]["pulses_counted"] == truth["pulser_pulses"]
        assert gw.sales()[2]["body"]["end_status"] == "preset_reached"
        # The tap heard the controller's first contact: identity and parameters.
        facts = gw.of("device_facts")[-1]
        assert facts["identity"] == pump.identity and facts["k_factors"][:2] == [100000] * 2
        assert gw.events("pulse_mismatch") == []
        # Never a byte from the tap: the line carried exactly what pump and controller sent.
        controller.stop()
        pump.stop()
        sent = pump_port.sent + controller_port.sent
        wait_for(lambda: heard[0] >= sent, what="the monitor to hear everything")
        time.sleep(0.2)
        assert heard[0] == sent and line.dropped["monitor"] == 0
    finally:
        listening.clear()
        listener.join()
        controller.stop()
        pump.stop()
        line.close()
        for port in (pump_port, controller_port, monitor):
            port.close()
    assert pump.errors == [] and controller.errors == []


def test_tap_holds_no_write_method():
    from meterseal.firmware.drivers import dart as driver

    class Clock:
        ticks_ms = staticmethod(lambda: 0)
        ticks_diff = staticmethod(lambda a, b: a - b)
        wall_ms = staticmethod(lambda: 0)

    tap = driver.DartTap(lambda: b"", object(), Clock())
    held = [value for value in vars(tap).values() if hasattr(value, "write")]
    assert held == [] and not hasattr(tap, "write")


def test_tap_joining_after_the_controller_uses_the_configured_decimals_and_grades(gateway):
    """A tap that starts after the controller read DC7 never hears the pump's decimals and
    grades. With them configured it records every sale exactly; without, it records nothing
    until the controller asks for DC7 again (here: after the pump was off), and from then on
    the line's values are used."""
    line = SharedLine()
    clock = SimClock(speed=40)
    ports = [line.attach_local("pump-50"), line.attach_local("controller")]
    pump = Dispenser(ports[0], clock, address=0x50, seed=5,
                     nozzles=(Nozzle(grade=92), Nozzle(grade=95)))
    controller = Controller(ports[1], clock, addresses=(0x50,), prices={0x50: PRICES})
    view = controller.pumps[0x50]
    try:
        pump.start()
        controller.start()
        wait_for(lambda: pump.status == 1 and view.decimals is not None,
                 what="the controller configured the pump")
        # As firmware/config.py hands them over: (volume, amount, price), grades of nozzles 1..15.
        registry = {"decimals": [2, 2, 3], "grades": [92, 95] + [0] * 13}
        keyed = gateway({"mode": "tap", "port": line.attach_pty("tap"), "options": registry})
        bare = gateway({"mode": "tap", "port": line.attach_pty("bare-tap")})
        for number, (nozzle, target_ml) in enumerate(((2, 20000), (1, 7000)), 1):
            serve(pump, ((nozzle, target_ml),))
            keyed.wait_for(lambda: len(keyed.sales()) == number, "sale %d heard" % number)
        for observation, truth in zip(keyed.sales(), pump.truth.entries()):
            assert_sale_is_the_truth(observation, truth, facts=False)

        wait_for(lambda: pump.status == 1 and len(controller.sales) == 2,
                 what="the controller's reads")
        pump.power_fail()
        wait_for(lambda: view.decimals is None, what="the controller to see the pump off")
        pump.power_restore()
        wait_for(lambda: view.decimals is not None, what="the controller to read DC7 again")
        serve(pump, ((1, 12000),))
        keyed.wait_for(lambda: len(keyed.sales()) == 3, "sale 3 heard")
        bare.wait_for(lambda: bare.sales(), "the bare tap's first sale")
        assert_sale_is_the_truth(keyed.sales()[2], pump.truth.last())
        # The bare tap heard sales 1 and 2 before sale 3, and could record neither.
        assert len(bare.sales()) == 1
        assert_sale_is_the_truth(bare.sales()[0], pump.truth.last())
    finally:
        controller.stop()
        pump.stop()
        line.close()
        for port in ports:
            port.close()
    assert pump.errors == [] and controller.errors == []


# --- a restart against the real recorder -------------------------------------------------------


def test_the_recorders_kept_totalizer_survives_power_cuts_so_a_found_sale_is_recorded_once(
        tmp_path):
    """The tracker over the real Recorder, State and Journal, cut three times (nothing closed,
    nothing flushed on purpose): mid-sale; after the restarted gateway recorded the sale it
    found but before it reset the pump; and once more. The sale is in the journal exactly
    once, with the pump's figures."""
    from meterseal.firmware.drivers import dart as driver
    from meterseal.firmware.journal import Journal
    from meterseal.firmware.recorder import Recorder
    from meterseal.firmware.signer import SoftwareSigner
    from meterseal.firmware.state import State
    from meterseal.protocol import cose, dart

    signer = SoftwareSigner(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721)
    identity = {"gateway_id": "GW-TEST-1", "software_name": "meterseal-gw",
                "software_version": "0.1.0", "software_digest": bytes(32)}
    vendor = bytearray(28)
    vendor[0:8] = dart.bcd_encode(100000, 4) * 2
    vendor[16:18] = dart.bcd_encode(231, 2)
    dc7 = dart.DC7PumpParameters(2, 2, 3, 999999, (92, 95) + (0,) * 13, bytes(vendor))

    class Clock:
        ticks_ms = measure_ms = staticmethod(lambda: int(time.monotonic() * 1000))
        ticks_diff = staticmethod(lambda a, b: a - b)
        wall_ms = staticmethod(lambda: int(time.time() * 1000))
        set_wall_ms = staticmethod(lambda ms: None)

    def boot():
        """A gateway coming up on what the last one left on storage; its first contact."""
        journal = Journal(str(tmp_path / "journal"))
        recorder = Recorder(State.load(str(tmp_path / "state")), journal, signer, Clock(),
                            identity)
        recorder.start("power_on")
        tracker = driver.PumpTracker(0x50, recorder, Clock(), check_unread=True)
        tracker.absorb(dart.FROM_PUMP, [dc7, dart.DC9PumpIdentity("1000000080"),
                                        dart.DC2FilledVolumeAmount(*pump["filled"]),
                                        dart.DC3NozzleStatusPrice(1645, 0, False),
                                        dart.DC1PumpStatus(pump["status"])])
        tracker.absorb(dart.FROM_PUMP, [
            dart.DC101TotalCounters(counter, total, total, 0)
            for counter, total in ((0x01, pump["totals"][0]), (0x11, pump["totals"][1]),
                                   (0x02, 5000), (0x12, 8000))])
        return journal, tracker

    def sales():
        journal = Journal(str(tmp_path / "journal"))  # what survived on storage
        return [r for r in (records.parse(cose.parse_sign1(envelope).payload)
                            for _, envelope in journal.pending(100)) if r["kind"] == "fuel.sale"]

    pump = {"status": 1, "filled": (0, 0), "totals": (12376, 99900)}
    journal, tracker = boot()
    tracker.absorb(dart.FROM_PUMP, [dart.DC3NozzleStatusPrice(1645, 1, True)])
    tracker.absorb(dart.FROM_PUMP, [dart.DC1PumpStatus(2), dart.DC1PumpStatus(4)])
    # Cut mid-sale. The customer finishes; the pump keeps the sale and waits for a reset.
    pump = {"status": 5, "filled": (1000, 1645), "totals": (13376, 101545)}
    journal = tracker = None
    assert sales() == []

    journal, tracker = boot()  # finds the sale, records it; cut before the reset
    assert tracker.sales_recorded == 1
    journal = tracker = None
    journal, tracker = boot()  # the same pump again: recorded before, so nothing
    assert tracker.sales_recorded == 0 and tracker.found is None
    journal = tracker = None

    (sale,) = sales()
    assert sale["device"] == {"dispenser_address": 0x50, "nozzle": 1}
    body = sale["body"]
    assert (body["grade"], body["volume_ml"], body["amount_minor"],
            body["unit_price_minor_per_kl"], body["end_status"], body["totalizer_end_ml"],
            body["amount_totalizer_end_minor"], body["flow_profile_ml"]) == (
                92, 10000, 1645, 164500, "power_fail", 133760, 101545, [])
