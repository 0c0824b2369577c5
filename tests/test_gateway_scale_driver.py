"""The gateway's scale driver (firmware/drivers/mtsics.py) on the real MicroPython unix port,
attached over a pty to the emulated price scale: every sale exactly once with the values the
scale indicated, sales made while the gateway was stopped, calibration, garbage and silence.

The driver runs in tests/mpy/gateway_driver_run.py with a recorder double that prints each
observation as JSON; GatewayProcess collects them. The emulator's clock is stepped, so sales are
made only when a test makes them; waits are bounded and nothing asserts on time.
"""

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from meterseal.hil import micropython
from meterseal.hil.emulators.scale import PriceScale
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock

RUNNER = Path(__file__).parent / "mpy" / "gateway_driver_run.py"
WAIT_S = 30.0  # bound on any wait; a healthy run needs well under a second
MAX_RUN_MS = 120000  # the MicroPython process ends itself if a test forgets it

SCALE_CONFIG = {"scale_id": "MS00000001", "poll_ms": 20, "facts_ms": 100,
                "reply_timeout_ms": 300, "lost_after": 2, "error_report_ms": 0}
# The weighing fields the scale indicated, as its ground truth names them.
INDICATED = ("gross_mg", "tare_mg", "net_mg", "tare_mode", "amount_minor", "stable",
             "centre_of_zero", "start_reading_mg", "load_to_stable_ms",
             "unit_price_minor_per_kg")


class GatewayProcess:
    """One MicroPython process running a driver; ``obs`` holds what it printed, parsed."""

    def __init__(self, image, kind, path, config):
        config = dict(config, max_run_ms=MAX_RUN_MS)
        self.obs = []
        self.noise = []  # lines that are not JSON: tracebacks
        self._changed = threading.Condition()
        self._process = subprocess.Popen(
            [micropython.micropython_command(), str(RUNNER), kind, path, json.dumps(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, MICROPYPATH=f"{image}:.frozen"))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self._process.stdout:
            with self._changed:
                try:
                    self.obs.append(json.loads(line))
                except ValueError:
                    self.noise.append(line)
                self._changed.notify_all()

    def of(self, obs, **match):
        return [o for o in self.obs if o["obs"] == obs
                and all(o.get(key) == value for key, value in match.items())]

    def wait_for(self, predicate, what):
        with self._changed:
            if not self._changed.wait_for(lambda: predicate() or self.crashed(), WAIT_S):
                raise AssertionError(f"no {what}; saw {self.obs[-8:]} {self.noise[-5:]}")
        assert not self.crashed(), (self.obs[-5:], self.noise)

    def crashed(self):
        return bool(self.noise) or any(o["obs"] == "crash" for o in self.obs)

    def state(self):
        states = self.of("state")
        return states[-1]["value"] if states else None

    def stop(self):
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join(timeout=5)


@pytest.fixture
def rig(device_image):
    """A running scale on a pty and a factory for gateway processes attached to it."""
    clock, port = SimClock(speed=0), PtyPort()
    scale = PriceScale(port, clock, max_mg=15_000_000, e_mg=5_000, seed=7).start()
    gateways = []

    def gateway(**config):
        process = GatewayProcess(device_image, "scale", port.path, dict(SCALE_CONFIG, **config))
        gateways.append(process)
        return process

    yield scale, port, gateway
    for process in gateways:
        process.stop()
    scale.stop()
    port.close()
    assert not scale.errors, scale.errors[-1]


def sell(scale, gateway, mass_mg, tare_mg, price, plu):
    """One customer; returns the truth entry once the gateway has recorded its sale."""
    recorded = len(gateway.of("weighing"))
    entry = scale.customer_weighing(mass_mg, tare_mg=tare_mg, unit_price_minor_per_kg=price,
                                    plu=plu)
    gateway.wait_for(lambda: len(gateway.of("weighing")) > recorded, f"weighing {entry['txn']}")
    gateway.wait_for(lambda: gateway.state() == entry["txn"], f"state {entry['txn']}")
    return entry


def assert_indicated(body, entry, scale):
    """The signed body equals what the scale indicated, field for field."""
    assert {name: body[name] for name in INDICATED} == {name: entry[name] for name in INDICATED}
    assert body.get("plu", 0) == entry["plu"]
    assert (body["e_mg"], body["d_mg"], body["max_mg"]) == (scale.e_mg, scale.d_mg, scale.max_mg)


def test_every_sale_once_with_the_indicated_values(rig):
    scale, _, gateway = rig
    gw = gateway()
    gw.wait_for(lambda: gw.of("device_facts"), "device facts")
    # Reported at connect (again only after a reconnect, with the same values).
    facts = gw.of("device_facts")
    assert {(f["identity"], f["param_checksum"], f["software_id"]) for f in facts} == {
        ("MS-PS15/MS00000001", "MSC 0 MSI 15000000 5000 5000 III", None)}
    assert gw.of("link_state", link="scale", up=True)

    entries = [sell(scale, gw, 1_234_000, 12_000, 1280, 123),
               sell(scale, gw, 480_000, 0, 2990, 0),
               sell(scale, gw, 2_000_000, 0, 450, 7),
               sell(scale, gw, 95_000, 35_000, 8800, 42)]
    weighings = gw.of("weighing")
    assert len(weighings) == len(entries)
    for weighing, entry in zip(weighings, entries):
        assert weighing["device"] == {"scale_id": "MS00000001"}
        assert_indicated(weighing["body"], entry, scale)
    assert "plu" not in weighings[1]["body"]  # PLU 0 means none
    assert not gw.of("event", event_type="records_dropped")


def test_sales_while_the_gateway_was_away_and_calibration_at_reconnect(rig):
    scale, _, gateway = rig
    first = gateway()
    sell(scale, first, 500_000, 0, 1000, 1)
    first.stop()

    # Unseen: three sales and a calibration.
    away = [scale.customer_weighing(300_000 + 1000 * n, unit_price_minor_per_kg=1500, plu=2)
            for n in range(3)]
    scale.calibrate(1_000_200)

    second = gateway(last_sale_number=first.state())
    second.wait_for(lambda: second.of("weighing"), "the last sale after the restart")
    facts = second.of("device_facts")
    assert facts[0]["param_checksum"] == "MSC 1 MSI 15000000 5000 5000 III"
    # Only the last sale is still shown by the scale: it is recorded, the two before it counted.
    dropped = second.of("event", event_type="records_dropped")
    assert [d["fields"] for d in dropped] == [{"dropped_count": 2}]
    assert dropped[0]["device"] == {"scale_id": "MS00000001"}
    assert_indicated(second.of("weighing")[0]["body"], away[-1], scale)
    second.wait_for(lambda: second.state() == away[-1]["txn"], "state")

    # A restart with nothing new records nothing; the next sale is recorded once.
    second.stop()
    third = gateway(last_sale_number=second.state())
    entry = sell(scale, third, 777_000, 0, 1200, 3)
    assert [w["body"]["net_mg"] for w in third.of("weighing")] == [entry["net_mg"]]
    assert not third.of("event", event_type="records_dropped")


def test_calibration_while_connected_changes_the_reported_facts(rig):
    scale, _, gateway = rig
    gw = gateway()
    gw.wait_for(lambda: gw.of("device_facts"), "device facts")
    scale.calibrate(999_000)
    gw.wait_for(lambda: gw.of("device_facts", param_checksum="MSC 1 MSI 15000000 5000 5000 III"),
                "facts after the calibration")
    scale.set_parameter("price_interval_minor", 10)
    gw.wait_for(lambda: gw.of("device_facts", param_checksum="MSC 2 MSI 15000000 5000 5000 III"),
                "facts after the parameter change")
    counters = [f["param_checksum"].split()[1] for f in gw.of("device_facts")]
    assert counters == sorted(counters) and set(counters) == {"0", "1", "2"}


def test_garbage_and_silence_are_link_events_and_never_values(rig):
    scale, port, gateway = rig
    gw = gateway()
    before = sell(scale, gw, 1_000_000, 0, 1000, 1)

    # Noise on the line, including a sale line that does not parse and a spoofed error reply.
    port.write(b"\x00\xfe\xffjunk\r\nMST A 9 S garbage\r\nES\r\n")
    gw.wait_for(lambda: any(e["fields"]["framing_errors"] >= 2
                            for e in gw.of("event", event_type="link_errors")), "link_errors")

    # Unplugged: the scale stops answering; a sale happens meanwhile; it comes back.
    scale.stop()
    gw.wait_for(lambda: gw.of("event", event_type="link_lost"), "link_lost")
    gw.wait_for(lambda: gw.of("link_state", link="scale", up=False), "link down state")
    during = scale.customer_weighing(650_000, unit_price_minor_per_kg=2000, plu=5)
    scale.start()
    gw.wait_for(lambda: gw.of("event", event_type="link_restored"), "link_restored")
    gw.wait_for(lambda: len(gw.of("weighing")) == 2, "the sale made during the outage")
    after = sell(scale, gw, 250_000, 0, 3000, 6)

    weighings = gw.of("weighing")
    assert len(weighings) == 3
    for weighing, entry in zip(weighings, (before, during, after)):
        assert_indicated(weighing["body"], entry, scale)
    # Reconnecting re-reads the facts; nothing changed, so they are the same.
    facts = {f["param_checksum"] for f in gw.of("device_facts")}
    assert facts == {"MSC 0 MSI 15000000 5000 5000 III"}
    errors = gw.of("event", event_type="link_errors")[-1]["fields"]
    assert errors["timeouts"] >= 2 and errors["crc_errors"] == 0
    assert not gw.of("event", event_type="records_dropped")
