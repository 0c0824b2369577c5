"""A simulated trading day at a 4-nozzle dispenser and its tank gauge, with the gateway on the
MicroPython unix port under a board-sized heap.

The station's controller drives the pump on a shared line; the gateway taps it with the pulse
input wired, and polls the tank gauge. The day (hil_tests/scenarios/dispenser_day.toml) runs on
an accelerated clock. The heap is `-X heapsize=192wK`: MicroPython's word-size-adjusted form of
a 192 KB heap, the same number of objects a 32-bit ESP32 or RP2040 holds in 192 KB on this 64-bit
build (docs/gateway.md, "Memory").

Checked: no MemoryError and the gateway stays up; every sale is signed with exactly what the pump
indicated and the gateway's own pulse count; an honest pump gives no pulse_mismatch all day; the
tank gauge's inventories and the delivery arrive; the heap after collection stays flat.
"""

import time
from pathlib import Path

import pytest

from meterseal.hil import scenario as scenarios
from meterseal.hil.site import Site

from gateway_site import (HostThread, chain_findings, events, gateway_key, kill_gateway, kind,
                          start_gateway, wait_for, write_config)

_SCENARIO = Path(scenarios.__file__).parent / "scenarios" / "dispenser_day.toml"
BOARD_HEAP = "192wK"
# Real seconds per simulated second while someone is at the pump: the day's ~220 sales take
# about a minute and a half, long enough for several heartbeats to report the heap.
_SPEED = 200.0
# Heap after a collection may move by what is in flight at that moment (a sale being read, a
# batch waiting for its ACK); a leak of even a few bytes per record exceeds this over a day.
_FLAT_BYTES = 6144


@pytest.fixture
def day(tmp_path):
    plan = scenarios.plan(scenarios.load(_SCENARIO))
    site = Site(scenarios.load(_SCENARIO), speed=_SPEED)
    root = tmp_path / "gateway"
    root.mkdir()
    host_thread = HostThread(gateway_key(root))
    address = 0x50
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": "MS-GW-DAY",
        "host": {"address": "127.0.0.1", "port": host_thread.host.port, "tls": False},
        "devices": [
            {"name": "forecourt", "protocol": "dart", "port": site.tap_path, "mode": "tap",
             "addresses": [address],
             "pulse_input": {"port": site.pumps[address].pulser_path, "pulses_per_litre": 100}},
            {"name": "tanks", "protocol": "tls", "port": site.gauge_port.path,
             "addresses": [1, 2, 3]},
        ],
        "intervals": {"heartbeat_s": 10, "tank_poll_s": 10},
        "paths": {"storage_root": str(root)},
        "watchdog": {"timeout_ms": 20000, "checkin_ms": 10000},
    })
    gateway = None
    try:
        gateway = start_gateway(config, heapsize=BOARD_HEAP)
        # The tap learns the pump's decimals from the controller's first reads, so it listens
        # before the station opens.
        wait_for(host_thread.host, gateway, lambda held: events(held, "boot"))
        site.start()
        # The station is idle for a while before it opens, as every morning: the tap reads the
        # pumps' rest counts then. (At this clock speed a customer waiting at opening time would
        # start filling within the tap's processing lag of its first idle block.)
        time.sleep(2)
        yield site, plan, host_thread.host, gateway
    finally:
        if gateway is not None:
            kill_gateway(gateway)
        site.stop()
        host_thread.close()


def test_a_day_at_the_pump_under_a_board_sized_heap(day):
    site, plan, host, gateway = day
    pump = site.pumps[0x50]

    def gateway_keeps_up(device):
        # The next car pulls in once the gateway has signed the last sale. At 200x a loaded
        # machine can delay the tap by more than a changeover, and the next sale's pulses would
        # then be counted into the last one: a race of the accelerated clock, not of a station.
        wait_for(host, gateway, lambda held: len(kind(held, "fuel.sale")) >= len(pump.truth))

    site.pace = gateway_keeps_up
    failures = site.replay(plan)
    assert failures == [] and site.errors() == []
    truth = pump.truth.entries()
    assert len(truth) > 150
    held = wait_for(host, gateway, lambda held: len(kind(held, "fuel.sale")) >= len(truth)
                    and len(kind(held, "status")) >= 4, timeout_s=120)
    assert gateway.poll() is None, gateway.stdout.read()
    kill_gateway(gateway)
    # The uplink ends a session on any exception and says why: none may be a MemoryError.
    output = gateway.stdout.read()
    assert "MemoryError" not in output, output

    assert chain_findings(held) == []
    sales = kind(held, "fuel.sale")
    assert len(sales) == len(truth)
    for number, (sale, entry) in enumerate(zip(sales, truth), 1):
        body = sale["body"]
        signed = (sale["device"]["nozzle"], body["volume_ml"], body["amount_minor"],
                  body["unit_price_minor_per_kl"], body.get("pulses_counted"))
        indicated = (entry["nozzle"], entry["indicated_volume_ml"], entry["indicated_amount_minor"],
                     entry["unit_price_minor_per_kl"], entry["pulser_pulses"])
        assert signed == indicated, (number, sale, entry)
    assert events(held, "pulse_mismatch") == []
    assert {r["device"]["tank_number"] for r in kind(held, "tank.inventory")} == {1, 2, 3}
    assert [r["device"]["tank_number"] for r in kind(held, "tank.delivery")] == [1]

    heap = [r["body"]["heap_used_bytes"] for r in kind(held, "status")]
    # The first status comes before the day's first sale has loaded everything it uses.
    settled = heap[1:]
    assert max(settled) - min(settled) <= _FLAT_BYTES, heap
