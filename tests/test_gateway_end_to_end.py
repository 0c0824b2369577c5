"""The whole gateway, as `meterseal gateway run` starts it on the MicroPython unix port, attached
over ptys to an emulated dispenser (DART master, with its pulser channel), price scale and tank
gauge, uploading to a loopback host. Every record must verify with cryptography, chain without a
finding, and carry exactly what the devices indicated."""

import json
import random
import subprocess
import sys
import time

import pytest

from meterseal.hil.emulators.controller import Controller
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle
from meterseal.hil.emulators.scale import PriceScale
from meterseal.hil.emulators.tank_gauge import Tank, TankGauge
from meterseal.hil.serial_link import PtyPort, SharedLine
from meterseal.hil.simclock import SimClock
from meterseal.hil import micropython
from meterseal.host import chain

from gateway_site import (HostThread, chain_findings, gateway_key, kill_gateway, kind,
                          records, start_gateway, wait_for, write_config)
from host_pki import HOST_NAME, host_pki


class Site:
    """Emulated dispenser, scale and tank gauge on ptys, a loopback host, and a gateway
    configuration pointing at them, with the gateway's key made beforehand so the host knows
    it (the registry's role)."""

    def __init__(self, tmp_path):
        self.clock = SimClock(speed=20)
        self.ports = (PtyPort(), PtyPort(), PtyPort())
        pump_port, scale_port, gauge_port = self.ports
        self.pump = Dispenser(pump_port, self.clock, address=0x50, seed=3, nozzles=(
            Nozzle(grade=1, max_flow_lpm=40, unit_price_minor_per_kl=789000),
            Nozzle(grade=2, max_flow_lpm=40, unit_price_minor_per_kl=832000),
        ))
        self.scale = PriceScale(scale_port, self.clock, seed=3)
        self.gauge = TankGauge(gauge_port, self.clock, tanks=(Tank(number=1, volume_ml=18_000_000),),
                               seed=3)
        for device in (self.pump, self.scale, self.gauge):
            device.start()
        root = tmp_path / "gateway"
        root.mkdir()
        self.host_thread = HostThread(gateway_key(root))
        self.host = self.host_thread.host
        self.config_path = write_config(tmp_path / "gateway.json", {
            "gateway_id": "MS-GW-E2E",
            "host": {"address": "127.0.0.1", "port": self.host.port, "tls": False},
            "devices": [
                {"name": "forecourt", "protocol": "dart", "port": pump_port.path, "mode": "master",
                 "addresses": [0x50],
                 "pulse_input": {"port": self.pump.pulser_path, "pulses_per_litre": 100}},
                {"name": "deli", "protocol": "mtsics", "port": scale_port.path},
                {"name": "tanks", "protocol": "tls", "port": gauge_port.path, "addresses": [1]},
            ],
            "intervals": {"heartbeat_s": 10, "tank_poll_s": 10},
            "paths": {"storage_root": str(root)},
            "journal": {"segment_bytes": 65536, "segments": 8, "commit_records": 4, "commit_ms": 200},
            "watchdog": {"timeout_ms": 20000, "checkin_ms": 10000},
        })
        self.gateway = None

    def start_gateway(self, image=None):
        """`meterseal gateway run` (builds the image), or the image's command directly."""
        self.gateway = start_gateway(self.config_path, image)
        return self.gateway

    def start_gateway_as_a_service(self, image, attempts=5):
        """Start the gateway and, like a service manager, start it again when it stops at boot
        (after a SIGKILL a pty can refuse its settings for a while: docs/operations.md)."""
        for _ in range(attempts):
            gateway = self.start_gateway(image)
            try:
                gateway.wait(3)
            except subprocess.TimeoutExpired:
                return gateway
            output = gateway.stdout.read()
            assert "cannot start" in output, output
        pytest.fail(f"the gateway did not start in {attempts} attempts: {output}")

    def kill_gateway(self):
        kill_gateway(self.gateway)

    def close(self):
        if self.gateway is not None:
            self.kill_gateway()
        self.host_thread.close()
        for device in (self.pump, self.scale, self.gauge):
            device.stop()
        for port in self.ports:
            port.close()


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    yield site
    site.close()


def test_gateway_signs_what_the_devices_indicated(site):
    pump, scale, gauge, host = site.pump, site.scale, site.gauge, site.host
    gateway = site.start_gateway()
    for nozzle, target_ml in ((1, 12000), (2, 31000)):
        draw = pump.customer_draw(nozzle, target_ml, patience_s=600)
        assert draw.wait(60) and draw.entry is not None, draw.outcome
        # The gateway reads the sale at FILLING COMPLETED; let it before the next customer.
        wait_for(host, gateway, lambda rs, n=len(pump.truth): len(kind(rs, "fuel.sale")) >= n)
    weighings = []
    for mass_mg in (615_000, 1_240_000):
        weighings.append(scale.customer_weighing(mass_mg, tare_mg=12_000,
                                                 unit_price_minor_per_kg=1280, plu=7))
        # The scale shows only its last sale (MST): the next customer waits for this one to be
        # read, as a loaded machine may be slower than the emulated clock.
        wait_for(host, gateway, lambda rs, n=len(weighings): len(kind(rs, "scale.weighing")) >= n)
    held = wait_for(host, gateway, lambda rs: kind(rs, "tank.inventory"))

    assert chain_findings(held) == []
    assert held[0][1]["kind"] == "event" and held[0][1]["body"]["event_type"] == "boot"

    sales = kind(held, "fuel.sale")
    for sale, truth in zip(sales, pump.truth.entries()):
        body = sale["body"]
        assert sale["device"] == {"dispenser_address": 0x50, "nozzle": truth["nozzle"]}
        assert body["volume_ml"] == truth["indicated_volume_ml"]
        assert body["amount_minor"] == truth["indicated_amount_minor"]
        assert body["unit_price_minor_per_kl"] == truth["unit_price_minor_per_kl"]
        assert body["totalizer_end_ml"] - body["totalizer_start_ml"] == truth["indicated_volume_ml"]
        # The gateway's own pulse count agrees with the honest pump's encoder.
        assert body["pulses_counted"] == truth["pulser_pulses"]
    assert not [r for _, r in held if r["kind"] == "event" and r["body"]["event_type"] == "pulse_mismatch"]

    signed_weighings = kind(held, "scale.weighing")
    for weighing, truth in zip(signed_weighings, weighings):
        body = weighing["body"]
        indicated = ("gross_mg", "tare_mg", "net_mg", "amount_minor", "unit_price_minor_per_kg",
                     "stable", "tare_mode", "plu")
        assert {k: body[k] for k in indicated} == {k: truth[k] for k in indicated}
        assert body["sale_number"] == truth["txn"]

    inventory = kind(held, "tank.inventory")[0]
    assert inventory["device"] == {"tank_number": 1}
    assert abs(inventory["body"]["volume_ml"] - gauge.true_state(1)["volume_ml"]) < 50_000


def test_gateway_killed_at_random_moments_loses_nothing_it_sent_and_keeps_one_chain(site, tmp_path):
    """SIGKILL mid-run, again and again, some of the time mid-delivery: after every restart the
    chain continues, no seq is used twice, and nothing the host acknowledged is lost."""
    image = tmp_path / "image"
    micropython.build_image(image)
    rng = random.Random(11)
    acknowledged = {}
    for run in range(5):
        site.start_gateway_as_a_service(image)
        # A short patience: a customer the killed gateway never authorized simply leaves.
        draw = site.pump.customer_draw(1 + run % 2, rng.randrange(3000, 30000), patience_s=40)
        time.sleep(rng.uniform(0.3, 2.5))
        site.kill_gateway()
        draw.wait(30)
        acknowledged.update(site.host.stored)
    before = max(acknowledged, default=-1)
    gateway = site.start_gateway_as_a_service(image)
    held = wait_for(site.host, gateway, lambda rs: any(
        r["seq"] > before and r["kind"] == "event" and r["body"]["event_type"] == "boot"
        for _, r in rs))

    assert site.host.forks == []
    stored = dict((r["seq"], envelope) for envelope, r in held)
    assert all(stored[seq] == envelope for seq, envelope in acknowledged.items())
    boots = [r["boot_epoch"] for _, r in held if r["kind"] == "event" and r["body"]["event_type"] == "boot"]
    assert boots == sorted(set(boots)) and len(boots) >= 2
    recovered = any(r["kind"] == "event" and r["body"]["event_type"] == "journal_recovered"
                    for _, r in held)
    findings = chain_findings(held)
    # A kill never tears a journal write, so the journal stays intact and the seqs run on
    # without a gap; only a truncating recovery (signed) may leave one.
    assert [f.kind for f in findings if f.kind != chain.GAP] == []
    assert recovered or not findings


def test_gateway_that_cannot_open_a_device_says_which_and_stops(tmp_path):
    root = tmp_path / "gateway"
    root.mkdir()
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({
        "gateway_id": "MS-GW-X",
        "host": {"address": "127.0.0.1", "port": 9, "tls": False},
        "devices": [{"name": "deli", "protocol": "mtsics", "port": "/dev/ttyMISSING7"}],
        "paths": {"storage_root": str(root)},
    }))
    result = subprocess.run(
        [sys.executable, "-m", "meterseal.host.cli", "gateway", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "serial port /dev/ttyMISSING7 cannot be opened" in output
    assert "Traceback" not in output


def test_gateway_in_tap_mode_records_the_stations_sales_without_a_byte_on_the_line(tmp_path):
    """The station's own controller drives the pump on a shared RS-485 line; the gateway only
    listens (DART tap) and must still sign every sale exactly."""
    clock = SimClock(speed=20)
    line = SharedLine()
    pump = Dispenser(line.attach_local("pump"), clock, address=0x50, seed=5, nozzles=(
        Nozzle(grade=1, max_flow_lpm=40, unit_price_minor_per_kl=789000),))
    station = Controller(line.attach_local("controller"), clock, addresses=(0x50,),
                         prices={0x50: (789000,)})
    tap_path = line.attach_pty("gateway")
    pump.start()
    root = tmp_path / "gateway"
    root.mkdir()
    host_thread = HostThread(gateway_key(root))
    host = host_thread.host
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": "MS-GW-TAP",
        "host": {"address": "127.0.0.1", "port": host.port, "tls": False},
        "devices": [{"name": "forecourt", "protocol": "dart", "port": tap_path, "mode": "tap",
                     "addresses": [0x50],
                     "pulse_input": {"port": pump.pulser_path, "pulses_per_litre": 100}}],
        "paths": {"storage_root": str(root)},
        "journal": {"commit_records": 1, "commit_ms": 100},
    })
    gateway = start_gateway(config)
    try:
        # The tap learns the pump's decimals from the controller's first DC7 read, so it must be
        # listening before the station's controller starts (a late joiner needs them configured).
        wait_for(host, gateway, lambda rs: bool(rs))
        station.start()
        for target_ml in (9000, 26000):
            draw = pump.customer_draw(1, target_ml, patience_s=600)
            assert draw.wait(60) and draw.entry is not None, draw.outcome
            wait_for(host, gateway, lambda rs, n=len(pump.truth): len(kind(rs, "fuel.sale")) >= n)
        held = records(host)
        sales = kind(held, "fuel.sale")
        assert len(sales) == len(station.sales) == 2
        for sale, truth in zip(sales, pump.truth.entries()):
            assert sale["body"]["volume_ml"] == truth["indicated_volume_ml"]
            assert sale["body"]["amount_minor"] == truth["indicated_amount_minor"]
            assert sale["body"]["pulses_counted"] == truth["pulser_pulses"]
        # Anything the gateway wrote would reach the pump and the controller as garbage.
        assert pump.link_stats["bad_frames_in"] == 0
        assert station.link_stats[0x50]["bad_frames"] == 0
        assert pump.errors == [] and station.errors == []
    finally:
        gateway.kill()
        gateway.wait(10)
        host_thread.close()
        station.stop()
        pump.stop()
        line.close()


def test_gateway_uploads_over_tls_to_the_host_its_ca_names(tmp_path):
    """`host.tls` with `host.ca_file`: the gateway talks TLS to a host whose certificate the
    configured CA issued for `host.server_name`, and signs what the scale indicated."""
    ca_file, server_context = host_pki(tmp_path, "meterseal-test-ca")
    clock = SimClock(speed=20)
    port = PtyPort()
    scale = PriceScale(port, clock, seed=5)
    scale.start()
    root = tmp_path / "gateway"
    root.mkdir()
    host_thread = HostThread(gateway_key(root), tls=server_context)
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": "MS-GW-TLS",
        "host": {"address": "127.0.0.1", "port": host_thread.host.port, "tls": True,
                 "ca_file": str(ca_file), "server_name": HOST_NAME},
        "devices": [{"name": "deli", "protocol": "mtsics", "port": port.path}],
        "paths": {"storage_root": str(root)},
    })
    gateway = start_gateway(config)
    try:
        truth = scale.customer_weighing(815_000, tare_mg=0, unit_price_minor_per_kg=1280, plu=3)
        held = wait_for(host_thread.host, gateway, lambda held: kind(held, "scale.weighing"))
        assert kind(held, "scale.weighing")[0]["body"]["net_mg"] == truth["net_mg"]
        assert all(session["auth_ok"] for session in host_thread.host.sessions)
        assert chain_findings(held) == []
    finally:
        kill_gateway(gateway)
        host_thread.close()
        scale.stop()
        port.close()


def test_gateway_with_an_unusable_host_ca_says_so_and_stops(tmp_path):
    root = tmp_path / "gateway"
    root.mkdir()
    not_a_certificate = tmp_path / "host-ca.pem"
    not_a_certificate.write_text("this is not a certificate\n")
    scale_port = PtyPort()  # the devices open first, so the CA is what stops it
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": "MS-GW-X",
        "host": {"address": "127.0.0.1", "port": 9, "tls": True,
                 "ca_file": str(not_a_certificate)},
        "devices": [{"name": "deli", "protocol": "mtsics", "port": scale_port.path}],
        "paths": {"storage_root": str(root)},
    })
    try:
        gateway = start_gateway(config)
        output = gateway.communicate(timeout=120)[0]
    finally:
        scale_port.close()
    assert gateway.returncode == 1, output
    assert f"host CA certificate {not_a_certificate} cannot be used" in output
    assert "Traceback" not in output
