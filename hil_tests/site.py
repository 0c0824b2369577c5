"""An emulated site built from a scenario, and the replay of its customer plan.

    forecourt   every dispenser and the station's forecourt controller on one SharedLine, plus
                a pty on that line where a gateway taps it (``tap_path``; ``add_tap`` gives
                each further gateway its own), and one pulser pty per dispenser
    tank gauge  its own pty (``gauge_port.path``); fed with each sale's true volume
    market      each price scale on its own pty (``scale_ports[i].path``)

Replay runs each device's customers in a worker of its own, so pumps fill in parallel while
the scale weighs. Simulated time runs ``speed`` times real time while anyone is busy, and jumps
straight to the next visit while every device is idle, so a day costs only its busy minutes.
"""

import queue
import threading
import time

from meterseal.hil import cheats
from meterseal.hil.emulators.controller import Controller
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle
from meterseal.hil.emulators.scale import PriceScale
from meterseal.hil.emulators.tank_gauge import DIESEL_EXPANSION_PER_C, GASOLINE_EXPANSION_PER_C, Tank, TankGauge
from meterseal.hil.serial_link import PtyPort, SharedLine
from meterseal.hil.simclock import SimClock

# A customer who paid first fills until the pump stops at the preset; this is only the
# auto shut-off of an (improbably) large tank.
_PREPAID_TANK_ML = 200000
_EXPANSION = {"gasoline": GASOLINE_EXPANSION_PER_C, "diesel": DIESEL_EXPANSION_PER_C}
# Real seconds a worker may take for one visit before the replay reports it stuck.
_VISIT_TIMEOUT_S = 60.0


class SiteError(RuntimeError):
    pass


def _fit_cheats(board, specs, where):
    for i, spec in enumerate(specs or ()):
        try:
            board.fit(spec["kind"], spec["size"], cheats.parse_schedule(spec.get("schedule", "always")))
        except (KeyError, ValueError) as exc:
            raise SiteError(f"{where}.cheats[{i}]: {exc}")


class Site:
    def __init__(self, scenario, speed=600.0):
        self.scenario = scenario
        self.clock = SimClock(start_s=scenario["start_s"], speed=speed,
                              utc_offset_h=scenario["utc_offset_hours"])
        seed = scenario["seed"]
        self.pumps = {}
        self.tank_of = {}
        self.line = self.controller = self.tap_path = None
        self.gauge = self.gauge_port = None
        self.scales, self.scale_ports = [], []
        forecourt = scenario.get("forecourt")
        if forecourt:
            self.line = SharedLine()
            self._changeover_s = float(forecourt["changeover_s"])
            prices = {}
            for i, spec in enumerate(forecourt["dispensers"]):
                address = spec["address"]
                nozzles = tuple(
                    Nozzle(grade=n["grade"], max_flow_lpm=n["max_flow_lpm"],
                           unit_price_minor_per_kl=n["unit_price_minor_per_kl"])
                    for n in spec["nozzles"]
                )
                pump = Dispenser(self.line.attach_local(f"pump-{address:02x}"), self.clock,
                                 address=address, nozzles=nozzles, seed=seed + i)
                _fit_cheats(pump.cheats, spec.get("cheats"), f"forecourt.dispensers[{i}]")
                self.pumps[address] = pump
                prices[address] = tuple(n["unit_price_minor_per_kl"] for n in spec["nozzles"])
                for number, n in enumerate(spec["nozzles"], start=1):
                    if "tank" in n:
                        self.tank_of[(address, number)] = n["tank"]
            self.controller = Controller(self.line.attach_local("controller"), self.clock,
                                         addresses=tuple(self.pumps), prices=prices)
            self.tap_path = self.line.attach_pty("gateway-tap")
        gauge = scenario.get("tank_gauge")
        if gauge and gauge.get("tanks"):
            tanks = tuple(
                Tank(number=t["number"], label=t.get("product", "gasoline"),
                     capacity_ml=t["capacity_ml"], volume_ml=t["volume_ml"],
                     expansion_per_c=_EXPANSION.get(t.get("product"), GASOLINE_EXPANSION_PER_C))
                for t in gauge["tanks"]
            )
            self.gauge_port = PtyPort()
            self.gauge = TankGauge(self.gauge_port, self.clock, tanks=tanks, seed=seed)
        market = scenario.get("market")
        for i, scale_spec in enumerate(market["scales"] if market else ()):
            port = PtyPort()
            scale = PriceScale(port, self.clock, max_mg=scale_spec["max_g"] * 1000,
                               e_mg=scale_spec["e_g"] * 1000, seed=seed + i)
            _fit_cheats(scale.cheats, scale_spec.get("cheats"), f"market.scales[{i}]")
            self.scale_ports.append(port)
            self.scales.append(scale)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.failures = []
        # Called with the device (("pump", address) or ("scale", index)) before each of its
        # customers: an observer that must keep up (a gateway under test on a loaded machine)
        # can hold the next customer back.
        self.pace = None

    # --- life ------------------------------------------------------------------------------

    def start(self):
        for pump in self.pumps.values():
            pump.start()
        for device in (self.controller, self.gauge, *self.scales):
            if device is not None:
                device.start()
        return self

    def stop(self):
        for device in (self.controller, *self.pumps.values(), self.gauge, *self.scales):
            if device is not None:
                device.stop()
        for port in (self.gauge_port, *self.scale_ports):
            if port is not None:
                port.close()
        if self.line is not None:
            self.line.close()

    def add_tap(self, name):
        """Another pty on the forecourt line, for one more gateway listening to it."""
        return self.line.attach_pty(name)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def ports(self):
        """Device paths a gateway or a person can open, by role."""
        paths = {}
        if self.tap_path:
            paths["forecourt line (DART, listen only)"] = self.tap_path
        for address, pump in self.pumps.items():
            paths[f"pulser of pump 0x{address:02X}"] = pump.pulser_path
        if self.gauge_port:
            paths["tank gauge (TLS)"] = self.gauge_port.path
        for i, port in enumerate(self.scale_ports):
            paths[f"price scale {i + 1} (MT-SICS)"] = port.path
        return paths

    def errors(self):
        """Tracebacks recorded inside any emulator thread."""
        found = []
        for device in (self.controller, *self.pumps.values(), self.gauge, *self.scales):
            if device is not None:
                found += list(device.errors)
        return found

    # --- replay ----------------------------------------------------------------------------

    def replay(self, visits, progress=None):
        """Replay planned visits in time order; ``progress(done, total)`` is called as they end.
        Returns the list of visits that could not be completed (with the reason)."""
        workers = {}
        results = queue.Queue()
        for visit in visits:
            key = _device_of(visit)
            if key not in workers:
                workers[key] = _Worker(self, results)
        done = 0
        for visit in visits:
            self._wait_until(visit.at_s)
            workers[_device_of(visit)].submit(visit)
            done += _drain(results, self.failures)
            if progress:
                progress(done, len(visits))
        for worker in workers.values():
            worker.close()
        for worker in workers.values():
            worker.join()
        done += _drain(results, self.failures)
        if progress:
            progress(done, len(visits))
        return self.failures

    def _wait_until(self, at_s):
        while True:
            gap_s = at_s - self.clock.now()
            if gap_s <= 0:
                return
            with self._busy_lock:
                idle = self._busy == 0
            if idle:
                self.clock.advance(gap_s)
                return
            time.sleep(min(gap_s / max(self.clock.speed, 1.0), 0.01))

    def _mark(self, delta):
        with self._busy_lock:
            self._busy += delta

    def perform(self, visit):
        """Carry out one visit on the calling thread; raise SiteError if it cannot be done."""
        if visit.kind == "fuel":
            self._fuel(visit.params)
        elif visit.kind == "weighing":
            p = visit.params
            if self.pace is not None:
                self.pace(("scale", p["scale"]))
            self.scales[p["scale"]].customer_weighing(
                p["mass_mg"], tare_mg=p["tare_mg"],
                unit_price_minor_per_kg=p["unit_price_minor_per_kg"], plu=p["plu"])
        elif visit.kind == "delivery":
            p = visit.params
            self.gauge.deliver(p["tank"], p["volume_ml"], 1800)
        else:
            raise SiteError(f"unknown visit kind {visit.kind!r}")

    def _fuel(self, params):
        address, nozzle = params["address"], params["nozzle"]
        pump = self.pumps[address]
        if "preset_amount_minor" in params:
            self.controller.prepay(address, amount_minor=params["preset_amount_minor"])
            target_ml = _PREPAID_TANK_ML
        else:
            target_ml = params["target_ml"]
        if self.pace is not None:
            self.pace(("pump", address))
        # Patience covers the controller's real-time polling at high clock speeds.
        draw = pump.customer_draw(nozzle, target_ml, patience_s=max(120.0, self.clock.speed))
        if not draw.wait(_VISIT_TIMEOUT_S):
            raise SiteError(f"pump 0x{address:02X} nozzle {nozzle}: the draw did not finish")
        if draw.entry is None:
            raise SiteError(f"pump 0x{address:02X} nozzle {nozzle}: {draw.outcome}")
        tank = self.tank_of.get((address, nozzle))
        if self.gauge is not None and tank is not None:
            self.gauge.draw(tank, int(draw.entry["true_volume_ml"]))
        self.clock.sleep(self._changeover_s)


def _device_of(visit):
    """Which device serves a visit: each takes one customer at a time."""
    if visit.kind == "fuel":
        return ("pump", visit.params["address"])
    if visit.kind == "weighing":
        return ("scale", visit.params["scale"])
    return (visit.kind,)


class _Worker(threading.Thread):
    """Serves one device's visits in order: a pump or the scale does one customer at a time."""

    def __init__(self, site, results):
        super().__init__(daemon=True)
        self.site = site
        self.results = results
        self.visits = queue.Queue()
        self.start()

    def submit(self, visit):
        self.site._mark(+1)
        self.visits.put(visit)

    def close(self):
        self.visits.put(None)

    def run(self):
        while True:
            visit = self.visits.get()
            if visit is None:
                return
            try:
                self.site.perform(visit)
                self.results.put(None)
            except (SiteError, RuntimeError, ValueError) as exc:
                self.results.put((visit, str(exc)))
            finally:
                self.site._mark(-1)


def _drain(results, failures):
    count = 0
    while True:
        try:
            outcome = results.get_nowait()
        except queue.Empty:
            return count
        count += 1
        if outcome is not None:
            failures.append(outcome)
