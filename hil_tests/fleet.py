"""Real gateways on an emulated site: one gateway per device, as an installer fits them, each the
firmware on the MicroPython unix port, all uploading to one host.

    dispenser   a gateway tapping the forecourt line listen-only for that pump's address, with
                the pump's pulse output wired to its pulse input
    tank gauge  a gateway polling the gauge's inventories and deliveries
    scale       a gateway reading the scale's MT-SICS line

Every gateway follows the site's simulated clock (``SimClock.publish``), so its records carry
the simulated day's times; the host that ACKs them must use the same clock.

``Fleet.plan`` names the gateways and writes their configurations; ``provision`` creates each
gateway's key in its own storage directory (as its first boot would) and registers it, with
its devices, from its provisioning request; ``start`` and ``stop`` run the processes.
``UploadWatch`` follows what the host has stored, for pacing and for the end of a run.
"""

import json
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from meterseal.host import gateway_cli

SIM_CLOCK_VARIABLE = "METERSEAL_SIM_CLOCK"
PULSES_PER_LITRE = 100  # the emulated meters' pulser output (docs/emulators.md)
# The emulated pumps' unit conventions, as an installer reads them off the calculator's plate.
PUMP_DECIMALS = {"volume": 2, "amount": 2, "price": 3}
# Type-approval data the registry holds for each device (demo values, in the CPA format).
_MODELS = {"dispenser": ("DART-EMU 2x2", "CPA 2026-F101"),
           "tank_gauge": ("TLS-EMU 350", "CPA 2026-T201"),
           "scale": ("MTSICS-EMU 15", "CPA 2026-S301")}
_STOP_TIMEOUT_S = 10
# Every real delay lasts ``speed`` times longer on the simulated clock. An ACK that a busy
# gateway reads 300 ms after the host stamped it (eleven gateways on two cores do that) is
# 3 minutes old at 600x, and the gateway would step its clock to it and back at the next ACK.
# Clock comparisons allow 1.5 s of real delay; a gateway and host that share the site clock
# then never step, and their records carry the site's time exactly. (At 500 ms a gateway the
# machine held up for 0.7 s between two records, which happens with the demo's eleven, was
# reported as a clock anomaly.)
_REAL_JITTER_MS = 1500
GATEWAY_STEP_THRESHOLD_MS = 2000  # the firmware's default
HOST_CLOCK_TOLERANCE_MS = 5000  # the ingest's default


def clock_tolerance_ms(speed, default_ms):
    """A clock comparison's tolerance on a site clock running ``speed`` times real time."""
    return max(default_ms, int(_REAL_JITTER_MS * speed))


class FleetError(RuntimeError):
    pass


@dataclass
class Device:
    """A device as the registry records it; ``ref`` is how the gateway's records name it."""

    ref: str
    type: str
    model: str
    serial: str
    cert: str


@dataclass
class Gateway:
    gateway_id: str
    site_id: str
    serves: tuple  # the Site's device key: ("pump", address), ("scale", index) or ("tank_gauge",)
    devices: list
    storage: Path
    process: subprocess.Popen = None
    log_path: Path = None

    @property
    def config_path(self):
        return self.storage / "gateway.json"


class Fleet:
    def __init__(self, site, image, root, host_port, *, station_id, market_id,
                 heartbeat_s=10, tank_poll_s=10):
        self.site = site
        self.image = Path(image)
        self.root = Path(root)
        self.host_port = host_port
        self.station_id = station_id
        self.market_id = market_id
        self.heartbeat_s = heartbeat_s
        self.tank_poll_s = tank_poll_s
        self.clock_path = self.root / "site-clock"
        self.gateways = []

    # --- planning ------------------------------------------------------------------------

    def plan(self):
        """One gateway per device of the site; writes each one's configuration."""
        site = self.site
        forecourt = site.scenario.get("forecourt", {})
        for number, spec in enumerate(forecourt.get("dispensers", ()), 1):
            address = spec["address"]
            grades = {str(n): nozzle["grade"] for n, nozzle in enumerate(spec["nozzles"], 1)}
            device = {"name": f"pump-{address}", "protocol": "dart",
                      "port": site.add_tap(f"gateway-d{number}"), "mode": "tap",
                      "addresses": [address], "decimals": PUMP_DECIMALS, "grades": grades,
                      "pulse_input": {"port": site.pumps[address].pulser_path,
                                      "pulses_per_litre": PULSES_PER_LITRE}}
            self._add(f"MS-{self.station_id}-D{number}", self.station_id, ("pump", address),
                      [device], [self._device(str(address), "dispenser", f"EMU-{self.station_id}-D{number}")])
        if site.gauge is not None:
            numbers = [tank["number"] for tank in site.scenario["tank_gauge"]["tanks"]]
            device = {"name": "tanks", "protocol": "tls", "port": site.gauge_port.path,
                      "addresses": numbers}
            self._add(f"MS-{self.station_id}-T1", self.station_id, ("tank_gauge",), [device],
                      [self._device("tanks", "tank_gauge", f"EMU-{self.station_id}-T1")])
        for index, port in enumerate(site.scale_ports):
            name = f"stall-{index + 1}"
            device = {"name": name, "protocol": "mtsics", "port": port.path}
            self._add(f"MS-{self.market_id}-S{index + 1}", self.market_id, ("scale", index),
                      [device],
                      [self._device(name, "scale", f"EMU-{self.market_id}-S{index + 1}")])
        return self.gateways

    @staticmethod
    def _device(ref, device_type, serial):
        model, cert = _MODELS[device_type]
        return Device(ref, device_type, model, serial, cert)

    def _add(self, gateway_id, site_id, serves, devices, registry_devices):
        storage = self.root / "gateways" / gateway_id
        storage.mkdir(parents=True)
        config = {
            "gateway_id": gateway_id,
            # Plain TCP: the whole demo stays on loopback (the uplink's TLS is its own test).
            "host": {"address": "127.0.0.1", "port": self.host_port, "tls": False},
            "devices": devices,
            "intervals": {"heartbeat_s": self.heartbeat_s, "tank_poll_s": self.tank_poll_s},
            "paths": {"storage_root": str(storage)},
            "clock": {"step_threshold_ms": clock_tolerance_ms(self.site.clock.speed,
                                                              GATEWAY_STEP_THRESHOLD_MS)},
            "watchdog": {"timeout_ms": 30000, "checkin_ms": 10000},
        }
        gateway = Gateway(gateway_id, site_id, serves, registry_devices, storage)
        gateway.config_path.write_text(json.dumps(config, indent=1))
        self.gateways.append(gateway)

    # --- provisioning ----------------------------------------------------------------------

    def provision(self, store, valid_from_ms):
        """Create each gateway's key, write its provisioning request beside it, and register
        the gateway, its key and its devices from that request."""
        software_id = None
        for gateway in self.gateways:
            request = gateway_cli.provisioning_request(gateway.storage, gateway.gateway_id,
                                                       "SN-" + gateway.gateway_id, self.image)
            (gateway.storage / "provisioning-request.json").write_text(json.dumps(request, indent=2))
            software_id = request["software"]["id"]
            store.registry.add_gateway(gateway.gateway_id, request["serial"], gateway.site_id,
                                       software_id=software_id)
            store.registry.add_key(gateway.gateway_id, bytes.fromhex(request["public_key"]),
                                   valid_from_ms)
            for device in gateway.devices:
                store.registry.add_device(gateway.gateway_id, device.ref, device.type,
                                          model=device.model, serial=device.serial,
                                          type_approval_cert=device.cert,
                                          expected_software_id=software_id)
        return software_id

    # --- processes -------------------------------------------------------------------------

    def start(self):
        self.site.clock.publish(self.clock_path)
        for gateway in self.gateways:
            command, env = gateway_cli.run_command(self.image, gateway.config_path)
            env[SIM_CLOCK_VARIABLE] = str(self.clock_path.resolve())
            gateway.log_path = gateway.storage / "gateway.log"
            with open(gateway.log_path, "w") as log:
                gateway.process = subprocess.Popen(command, env=env, stdout=log,
                                                   stderr=subprocess.STDOUT,
                                                   preexec_fn=gateway_cli.die_with_parent)

    def check_running(self):
        """FleetError naming the first gateway that has exited, with its last words."""
        for gateway in self.gateways:
            if gateway.process is not None and gateway.process.poll() is not None:
                lines = gateway.log_path.read_text(errors="replace").strip().splitlines()
                raise FleetError(f"gateway {gateway.gateway_id} exited with status "
                                 f"{gateway.process.returncode}: "
                                 f"{lines[-1] if lines else 'no output'} (log {gateway.log_path})")

    def stop(self):
        for gateway in self.gateways:
            if gateway.process is not None and gateway.process.poll() is None:
                gateway.process.terminate()
        for gateway in self.gateways:
            if gateway.process is not None:
                try:
                    gateway.process.wait(_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    gateway.process.kill()
                    gateway.process.wait()

    def by_device(self):
        return {gateway.serves: gateway for gateway in self.gateways}


class UploadWatch:
    """What the host has stored, per gateway: counts by kind (and event type), followed on a
    thread of its own that owns its own store connection.

    ``wait(gateway_id, label, count, timeout_s)`` blocks until that many are stored."""

    def __init__(self, open_store, gateway_ids, poll_s=0.1):
        self._open_store = open_store
        self._gateway_ids = list(gateway_ids)
        self._poll_s = poll_s
        self._counts = defaultdict(Counter)
        self._after = dict.fromkeys(self._gateway_ids)
        self._changed = threading.Condition()
        self._stopping = False
        self._failure = None
        self._thread = threading.Thread(target=self._follow, name="upload-watch", daemon=True)
        self._thread.start()

    def _follow(self):
        try:
            with self._open_store() as store:
                while not self._stopping:
                    if self._read_new(store):
                        with self._changed:
                            self._changed.notify_all()
                    time.sleep(self._poll_s)
        except Exception as exc:  # reported by wait() and counts(), in the caller's thread
            with self._changed:
                self._failure = exc
                self._changed.notify_all()

    def _read_new(self, store):
        moved = False
        for gateway_id in self._gateway_ids:
            while True:
                page = store.records(gateway_id, after_seq=self._after[gateway_id], limit=500)
                if not page.items:
                    break
                with self._changed:
                    for record in page.items:
                        self._counts[gateway_id][record.kind] += 1
                        if record.event_type:
                            self._counts[gateway_id][record.event_type] += 1
                self._after[gateway_id] = page.items[-1].seq
                moved = True
                if page.next_after is None:
                    break
        return moved

    def counts(self):
        with self._changed:
            self._raise_failure()
            return {gateway_id: Counter(self._counts[gateway_id]) for gateway_id in self._gateway_ids}

    def total(self, label):
        with self._changed:
            return sum(counts[label] for counts in self._counts.values())

    def wait(self, gateway_id, label, count, timeout_s):
        """True once ``count`` records of ``label`` (a kind or an event type) from the gateway
        are stored; False if ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._counts[gateway_id][label] < count:
                self._raise_failure()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
            return True

    def _raise_failure(self):
        if self._failure is not None:
            raise FleetError(f"reading the host's database failed: {self._failure}")

    def close(self):
        self._stopping = True
        self._thread.join()


def signed_so_far(site, serves):
    """What the gateway serving ``serves`` must have signed for its device's work so far:
    (the record kind or label, how many), from the device's ground truth."""
    kind, index = serves[0], serves[-1]
    if kind == "pump":
        return "fuel.sale", len(site.pumps[index].truth.entries())
    if kind == "scale":
        return "scale.weighing", sum(1 for entry in site.scales[index].truth.entries()
                                     if entry["kind"] == "weighing")
    return "tank.delivery", len(site.gauge.truth)
