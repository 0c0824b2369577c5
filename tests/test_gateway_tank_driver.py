"""The gateway's tank gauge driver (firmware/drivers/tls.py) on the real MicroPython unix port,
attached over a pty to the emulated TLS console: one tank.inventory per tank per poll with the
console's values, each delivery exactly once across restarts, bad frames and silence.

The emulator's clock is stepped: readings change only when a test moves it, so a test can compare
every inventory the driver reported with the console's report decoded by the codec.
"""

import pytest
from test_gateway_scale_driver import GatewayProcess

from meterseal.hil.emulators.tank_gauge import DIESEL_EXPANSION_PER_C, Tank, TankGauge
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock
from meterseal.protocol import tls

TANK_CONFIG = {"inventory_ms": 50, "delivery_ms": 50, "reply_timeout_ms": 300,
               "lost_after": 2, "error_report_ms": 0, "utc_offset_s": 8 * 3600}
TANKS = (
    Tank(number=1, capacity_ml=30_000_000, volume_ml=12_000_000, water_height_mm=20),
    Tank(number=2, product="3", label="0# diesel", capacity_ml=50_000_000, diameter_mm=2800,
         volume_ml=20_000_000, expansion_per_c=DIESEL_EXPANSION_PER_C),
)
MINUTE_MS = 60_000


@pytest.fixture
def rig(device_image):
    clock, port = SimClock(speed=0), PtyPort()
    gauge = TankGauge(port, clock, tanks=TANKS, seed=3).start()
    gateways = []

    def gateway(**config):
        process = GatewayProcess(device_image, "tank", port.path, dict(TANK_CONFIG, **config))
        gateways.append(process)
        return process

    yield gauge, clock, port, gateway
    for process in gateways:
        process.stop()
    gauge.stop()
    port.close()
    assert not gauge.errors, gauge.errors[-1]


def expected_inventories(gauge):
    """tank number -> the tank.inventory body of the console's report now, via the codec; the
    console's own time is the emulator's clock, cut to the minute."""
    report = tls.parse_reply(gauge.inventory_report().encode())
    return {t.tank: {"volume_ml": t.volume_ml, "tc_volume_ml": t.tc_volume_ml,
                     "product_height_um": t.height_um, "water_height_um": t.water_um,
                     "water_volume_ml": t.water_volume_ml,
                     "temperature_centi_c": t.temperature_centi_c, "ullage_ml": t.ullage_ml,
                     "console_time_ms": gauge.clock.now_ms() // MINUTE_MS * MINUTE_MS}
            for t in report.tanks}


def expected_delivery(gauge, truth):
    """The tank.delivery body of the console's stored record of ``truth``, via the codec; the
    console keeps minutes, so the wall times are the truth's, cut to the minute."""
    report = tls.parse_reply(gauge.delivery_report(truth["tank"]).encode())
    stored = report.tanks[0].deliveries[0]  # the most recent
    return {"start_wall_time_ms": truth["start_ms"] // MINUTE_MS * MINUTE_MS,
            "end_wall_time_ms": truth["end_ms"] // MINUTE_MS * MINUTE_MS,
            "start_volume_ml": stored.start_volume_ml, "end_volume_ml": stored.end_volume_ml,
            "start_tc_volume_ml": stored.start_tc_volume_ml,
            "end_tc_volume_ml": stored.end_tc_volume_ml,
            "start_product_height_um": stored.start_height_um,
            "end_product_height_um": stored.end_height_um,
            "start_water_height_um": stored.start_water_um,
            "end_water_height_um": stored.end_water_um,
            "start_temperature_centi_c": stored.start_temperature_centi_c,
            "end_temperature_centi_c": stored.end_temperature_centi_c}


def inventory_tanks(gw):
    return [o["device"]["tank_number"] for o in gw.of("tank_inventory")]


def test_inventory_per_tank_per_poll_and_each_delivery_once(rig):
    gauge, clock, _, gateway = rig
    expected = expected_inventories(gauge)
    gw = gateway()
    gw.wait_for(lambda: len(gw.of("tank_inventory")) >= 6, "three inventory polls")
    # Polls report tank 1 then tank 2, one each, with the console's values to the unit.
    polls = inventory_tanks(gw)
    assert polls[: len(polls) // 2 * 2] == [1, 2] * (len(polls) // 2)
    for inventory in gw.of("tank_inventory"):
        assert inventory["body"] == expected[inventory["device"]["tank_number"]]
    assert gw.of("link_state", link="tank_gauge", up=True)

    gauge.deliver(1, 8_000_000, 1800)
    clock.advance(1800)
    gw.wait_for(lambda: gw.of("tank_delivery"), "the delivery")
    truth = gauge.truth.last()
    delivery = gw.of("tank_delivery")[0]
    assert delivery["device"] == {"tank_number": 1}
    assert delivery["body"] == expected_delivery(gauge, truth)
    gw.wait_for(lambda: len(gw.of("tank_inventory")) >= len(polls) + 8, "more polls")
    assert len(gw.of("tank_delivery")) == 1
    seen = gw.state()
    assert seen == ["01:%s:%s" % (stamp(truth["start_ms"]), stamp(truth["end_ms"]))]

    # Restarted with the persisted keys: the stored delivery is not recorded again; the next is.
    gw.stop()
    again = gateway(seen_deliveries=seen)
    again.wait_for(lambda: len(again.of("tank_inventory")) >= 8, "polls after the restart")
    gauge.deliver(2, 5_000_000, 900)
    clock.advance(900)
    again.wait_for(lambda: again.of("tank_delivery"), "the second delivery")
    truth = gauge.truth.last()
    again.wait_for(lambda: len(again.state()) == 2, "both keys")
    assert [d["device"]["tank_number"] for d in again.of("tank_delivery")] == [2]
    assert again.of("tank_delivery")[0]["body"] == expected_delivery(gauge, truth)


def stamp(sim_ms):
    """The console's YYMMDDHHmm for a simulated time (China Standard Time)."""
    year, month, day, hour, minute = tls.time_from_unix_s(sim_ms // 1000, 8 * 3600)
    return "%02d%02d%02d%02d%02d" % (year % 100, month, day, hour, minute)


def test_first_start_records_the_stored_deliveries_once(rig):
    gauge, clock, _, gateway = rig
    gauge.deliver(1, 3_000_000, 600)
    clock.advance(700)
    gauge.deliver(1, 2_000_000, 600)
    clock.advance(700)
    gw = gateway()
    gw.wait_for(lambda: len(gw.state() or ()) == 2, "both stored deliveries")
    gw.wait_for(lambda: len(gw.of("tank_inventory")) >= 8, "more polls")
    starts = [d["body"]["start_volume_ml"] for d in gw.of("tank_delivery")]
    assert len(starts) == 2 and starts[0] < starts[1]  # oldest first


def test_bad_frames_and_silence_are_link_events_and_never_values(rig):
    gauge, _, port, gateway = rig
    expected = expected_inventories(gauge)
    gw = gateway()
    gw.wait_for(lambda: len(gw.of("tank_inventory")) >= 2, "a first poll")

    # A report with one digit changed (its checksum no longer matches), noise, a refusal.
    frame = bytearray(gauge.inventory_report().encode())
    frame[30] = ord("0") if frame[30] != ord("0") else ord("1")
    port.write(bytes(frame) + b"noise" + tls.NOT_UNDERSTOOD)
    gw.wait_for(lambda: any(e["fields"]["crc_errors"] >= 1
                            for e in gw.of("event", event_type="link_errors")), "a CRC error")

    # Unplugged, then back.
    gauge.stop()
    gw.wait_for(lambda: gw.of("event", event_type="link_lost"), "link_lost")
    # The link_state observation follows the event; wait for it rather than race the pipe.
    gw.wait_for(lambda: gw.of("link_state", link="tank_gauge", up=False), "link down state")
    gauge.start()
    gw.wait_for(lambda: gw.of("event", event_type="link_restored"), "link_restored")
    count = len(gw.of("tank_inventory"))
    gw.wait_for(lambda: len(gw.of("tank_inventory")) >= count + 4, "polls after the outage")

    for inventory in gw.of("tank_inventory"):
        assert inventory["body"] == expected[inventory["device"]["tank_number"]]
    errors = gw.of("event", event_type="link_errors")[-1]["fields"]
    assert errors["timeouts"] >= 2 and errors["framing_errors"] >= 1
    assert not gw.of("tank_delivery")
