"""An emulated Veeder-Root TLS automatic tank gauge console: tanks of product with water below,
measured by a magnetostrictive probe, answering the TLS serial interface (computer format i201
inventory and i202 deliveries) on a serial line, with a ground-truth log.

Usage::

    clock = SimClock(speed=0)
    port = PtyPort()
    gauge = TankGauge(port, clock, seed=3, tanks=(
        Tank(number=1, product="1", label="92# gasoline", capacity_ml=30_000_000,
             volume_ml=12_000_000),
        Tank(number=2, product="3", label="0# diesel", capacity_ml=50_000_000,
             diameter_mm=2800, volume_ml=20_000_000, expansion_per_c=DIESEL_EXPANSION_PER_C),
    ))
    gauge.start()
    gauge.draw(1, 35_000)                    # what a dispenser's sale took out, true volume
    gauge.deliver(1, 10_000_000, 1800)       # a tanker drops 10 m3 over 30 minutes
    clock.advance(1800)                      # the i202 record exists once the drop has ended
    gauge.stop(); port.close()

API
    TankGauge(port, clock, tanks=(Tank(number=1),), seed=0,
              reference_temperature_c=REFERENCE_TEMPERATURE_C, height_noise_mm=0.5,
              temperature_noise_c=0.1, thermal_time_constant_h=72.0, security_code=None)
        .start()  .stop()   thread life (also a context manager); the port belongs to the caller
        .truth    TruthLog: one entry per completed delivery (kind "delivery")
        .errors   tracebacks of anything that went wrong inside the thread
        .link_stats  commands_in, bad_bytes_in, not_understood
        .draw(tank, volume_ml)                     product leaves now (a dispenser's true outflow)
        .deliver(tank, volume_ml, duration_s, temperature_c=None) -> end time (Unix s)
        .inventory_report(tank=0) .delivery_report(tank=0)   the tls values the console sends
        .true_state(tank) -> dict   the tank's true product volume, temperature, heights
    Tank(number, product="1", label="92# gasoline", capacity_ml=30_000_000,
         diameter_mm=2500, volume_ml=15_000_000, water_height_mm=0, temperature_c=15,
         expansion_per_c=GASOLINE_EXPANSION_PER_C, ground_temperature_c=15)

What the console reports, per tank, in metric units (litres, millimetres, degC):
- height: the liquid level from the tank bottom as the probe reads it: true level plus noise
  uniform within +-height_noise_mm, fresh each SAMPLE_MS; water the same (exactly 0 when there is
  none); temperature the true product temperature plus noise within +-temperature_noise_c;
- volume = V(height) - V(water) from the strapping (``tank_model``: horizontal cylinder);
  water volume V(water); ullage = capacity - V(height); TC volume = volume (1 - alpha (T -
  T_ref)) with the tank's alpha and T_ref = 20 degC (China, GB/T 1885) unless configured;
- status bit 0 while a delivery is in progress.
The product temperature relaxes towards the ground temperature (time constant
``thermal_time_constant_h``) and a delivery mixes in at its own temperature.

Deliveries: ``deliver`` starts one now; product flows in evenly for ``duration_s``. At its end the
console stores a delivery record (i202: start and end date/time, and the measured volume, TC
volume, water, temperature and height at both ends); it keeps the last MAX_STORED_DELIVERIES per
tank, most recent first. A real console detects a delivery from the level rise and waits for the
product to settle; the emulator knows the exact start and end.

Every measurement is a pure function of the sample time and the seed (``noise.symmetric``), and
deliveries fold into the tank at their exact end time, so a stepped clock gives the same reports
whenever the thread happens to run.
"""

import math
import threading

from meterseal.hil.emulators import noise
from meterseal.hil.emulators.base import EmulatorThread
from meterseal.hil.emulators.tank_model import (
    DIESEL_EXPANSION_PER_C,
    GASOLINE_EXPANSION_PER_C,
    REFERENCE_TEMPERATURE_C,
    HorizontalCylinder,
    tc_volume_ml,
)
from meterseal.hil.ground_truth import TruthLog
from meterseal.protocol import tls
from meterseal.protocol.errors import TLSError

# The expansion coefficients and reference temperature are re-exported for configuring tanks.
__all__ = ["DIESEL_EXPANSION_PER_C", "GASOLINE_EXPANSION_PER_C", "MAX_STORED_DELIVERIES",
           "REFERENCE_TEMPERATURE_C", "SAMPLE_MS", "Tank", "TankGauge"]

SAMPLE_MS = 1000  # the probe is read once a second
MAX_STORED_DELIVERIES = 10
_IDLE_WAIT_S = 0.01
_HEIGHT, _WATER, _TEMPERATURE = 0, 1, 2  # noise channels per tank


class Tank:
    """One tank's configuration and its state at power on."""

    def __init__(self, number, product="1", label="92# gasoline", capacity_ml=30_000_000,
                 diameter_mm=2500.0, volume_ml=15_000_000, water_height_mm=0.0,
                 temperature_c=15.0, expansion_per_c=GASOLINE_EXPANSION_PER_C,
                 ground_temperature_c=15.0):
        if not 1 <= number <= 99:
            raise ValueError("tank numbers run 1..99")
        self.number = number
        self.product = product
        self.label = label
        self.capacity_ml = capacity_ml
        self.diameter_mm = diameter_mm
        self.volume_ml = volume_ml
        self.water_height_mm = water_height_mm
        self.temperature_c = temperature_c
        self.expansion_per_c = expansion_per_c
        self.ground_temperature_c = ground_temperature_c


class _Inflow:
    """A delivery under way: ``volume_ml`` arriving evenly between start and end."""

    def __init__(self, start_ms, end_ms, volume_ml, temperature_c, start_reading):
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.volume_ml = volume_ml
        self.temperature_c = temperature_c
        self.start_reading = start_reading

    def arrived_ml(self, time_ms):
        fraction = (time_ms - self.start_ms) / (self.end_ms - self.start_ms)
        return self.volume_ml * min(max(fraction, 0.0), 1.0)


class _TankState:
    def __init__(self, tank, time_ms, time_constant_ms):
        self.tank = tank
        self.cylinder = HorizontalCylinder(tank.capacity_ml, tank.diameter_mm)
        self.water_ml = self.cylinder.volume_ml(tank.water_height_mm)
        self.product_ml = float(tank.volume_ml)  # every delivery folded in, every draw taken
        self.temperature_c = tank.temperature_c
        self.temperature_ms = time_ms
        self.time_constant_ms = time_constant_ms
        self.inflows = []
        self.deliveries = []  # tls.Delivery, most recent first

    def settled_temperature_c(self, time_ms):
        ground = self.tank.ground_temperature_c
        decay = math.exp(-(time_ms - self.temperature_ms) / self.time_constant_ms)
        return ground + (self.temperature_c - ground) * decay

    def relax_to(self, time_ms):
        self.temperature_c = self.settled_temperature_c(time_ms)
        self.temperature_ms = time_ms

    def product_at(self, time_ms):
        """True product volume (mL) and temperature (degC), deliveries under way mixed in."""
        volume = self.product_ml
        heat = volume * self.settled_temperature_c(time_ms)
        for inflow in self.inflows:
            arrived = inflow.arrived_ml(time_ms)
            volume += arrived
            heat += arrived * inflow.temperature_c
        return volume, (heat / volume if volume else self.settled_temperature_c(time_ms))


class TankGauge(EmulatorThread):
    def __init__(self, port, clock, tanks=(Tank(number=1),), seed=0,
                 reference_temperature_c=REFERENCE_TEMPERATURE_C, height_noise_mm=0.5,
                 temperature_noise_c=0.1, thermal_time_constant_h=72.0, security_code=None):
        numbers = [tank.number for tank in tanks]
        if len(set(numbers)) != len(numbers):
            raise ValueError("tank numbers must differ")
        super().__init__("tank-gauge")
        self.port = port
        self.clock = clock
        self.seed = seed
        self.reference_temperature_c = reference_temperature_c
        self.height_noise_mm = height_noise_mm
        self.temperature_noise_c = temperature_noise_c
        self.security_code = security_code
        self.truth = TruthLog()
        self.link_stats = {"commands_in": 0, "bad_bytes_in": 0, "not_understood": 0}
        now_ms = clock.now_ms()
        time_constant_ms = thermal_time_constant_h * 3600 * 1000
        self._tanks = {tank.number: _TankState(tank, now_ms, time_constant_ms)
                       for tank in sorted(tanks, key=lambda tank: tank.number)}
        self._lock = threading.RLock()
        self._reader = tls.CommandReader(security_code)

    # --- thread life ---------------------------------------------------------------------

    def _serve_once(self):
        data = self.port.read(_IDLE_WAIT_S)
        if data:
            self._reader.feed(data)
        self._serve_commands(self._reader)
        with self._lock:
            self._fold_all(self.clock.now_ms())

    def _serve_commands(self, reader):
        while True:
            try:
                command = reader.next_command()
            except TLSError:
                self.link_stats["bad_bytes_in"] += 1
                continue
            if command is None:
                return
            self.link_stats["commands_in"] += 1
            reply = self._answer(command)
            if isinstance(reply, tls.NotUnderstood):
                self.link_stats["not_understood"] += 1
            self.port.write(reply.encode())

    def _answer(self, command):
        if command.tank and command.tank not in self._tanks:
            return tls.NotUnderstood()
        if command.function == tls.INVENTORY:
            return self.inventory_report(command.tank)
        if command.function == tls.DELIVERY:
            return self.delivery_report(command.tank)
        return tls.NotUnderstood()

    # --- the forecourt and the tanker ----------------------------------------------------

    def _state(self, tank):
        if tank not in self._tanks:
            raise ValueError("no tank %r; the gauge has %s" % (tank, sorted(self._tanks)))
        return self._tanks[tank]

    def draw(self, tank, volume_ml):
        """``volume_ml`` of product (true volume, at tank temperature) leaves ``tank`` now."""
        if volume_ml < 0:
            raise ValueError("a draw cannot be negative")
        with self._lock:
            state = self._state(tank)
            now_ms = self.clock.now_ms()
            self._fold(state, now_ms)
            available_ml, _ = state.product_at(now_ms)
            if volume_ml > available_ml:
                raise ValueError("tank %d holds %d mL of product, cannot draw %d mL"
                                 % (tank, available_ml, volume_ml))
            state.relax_to(now_ms)
            state.product_ml -= volume_ml

    def deliver(self, tank, volume_ml, duration_s, temperature_c=None):
        """A delivery into ``tank`` starts now and lasts ``duration_s``; returns its end (Unix s).
        The product arrives at ``temperature_c`` (default: the tank's ground temperature)."""
        if volume_ml <= 0 or duration_s <= 0:
            raise ValueError("a delivery needs a positive volume and duration")
        with self._lock:
            state = self._state(tank)
            now_ms = self.clock.now_ms()
            self._fold(state, now_ms)
            product_ml, _ = state.product_at(now_ms)
            coming_ml = sum(inflow.volume_ml - inflow.arrived_ml(now_ms)
                            for inflow in state.inflows)
            if product_ml + coming_ml + volume_ml + state.water_ml > state.tank.capacity_ml:
                raise ValueError("tank %d would overfill: %d mL free, %d mL delivered"
                                 % (tank, state.tank.capacity_ml - product_ml - coming_ml
                                    - state.water_ml, volume_ml))
            if temperature_c is None:
                temperature_c = state.tank.ground_temperature_c
            end_ms = now_ms + int(duration_s * 1000)
            state.inflows.append(_Inflow(now_ms, end_ms, volume_ml, temperature_c,
                                         self._measure(state, now_ms)))
            state.inflows.sort(key=lambda inflow: inflow.end_ms)
            return end_ms / 1000.0

    def _fold_all(self, time_ms):
        for state in self._tanks.values():
            self._fold(state, time_ms)

    def _fold(self, state, time_ms):
        """Mix every delivery that ended by ``time_ms`` into the tank, at its exact end time,
        and store its delivery record."""
        while state.inflows and state.inflows[0].end_ms <= time_ms:
            inflow = state.inflows.pop(0)
            state.relax_to(inflow.end_ms)
            volume = state.product_ml + inflow.volume_ml
            state.temperature_c = (state.product_ml * state.temperature_c
                                   + inflow.volume_ml * inflow.temperature_c) / volume
            state.product_ml = volume
            self._record_delivery(state, inflow)

    def _record_delivery(self, state, inflow):
        start, end = inflow.start_reading, self._measure(state, inflow.end_ms)
        offset_s = self._utc_offset_s()
        fields = {}
        for name, _ in tls.DELIVERY_FIELDS:
            reading, key = (start, name[6:]) if name.startswith("start_") else (end, name[4:])
            fields[name] = reading[key]
        state.deliveries.insert(0, tls.Delivery(
            tls.time_from_unix_s(inflow.start_ms // 1000, offset_s),
            tls.time_from_unix_s(inflow.end_ms // 1000, offset_s), **fields))
        del state.deliveries[MAX_STORED_DELIVERIES:]
        true_end_ml, _ = state.product_at(inflow.end_ms)
        self.truth.append({
            "kind": "delivery",
            "tank": state.tank.number,
            "start_ms": inflow.start_ms,
            "end_ms": inflow.end_ms,
            "delivered_ml": inflow.volume_ml,
            "temperature_c": inflow.temperature_c,
            "true_end_volume_ml": round(true_end_ml),
            "start_volume_ml": start["volume_ml"],
            "end_volume_ml": end["volume_ml"],
            "indicated_delivered_ml": end["volume_ml"] - start["volume_ml"],
            "start_tc_volume_ml": start["tc_volume_ml"],
            "end_tc_volume_ml": end["tc_volume_ml"],
        })

    # --- measurement ---------------------------------------------------------------------

    def _utc_offset_s(self):
        return int(self.clock.utc_offset_h * 3600)

    def _measure(self, state, time_ms):
        """What the probe and the console make of the tank at ``time_ms``, in record units."""
        sample = time_ms // SAMPLE_MS
        channel = state.tank.number * 4
        cylinder = state.cylinder
        product_ml, temperature_c = state.product_at(time_ms)
        level_mm = cylinder.height_mm(product_ml + state.water_ml)
        height_mm = min(max(level_mm + noise.symmetric(
            self.seed, channel + _HEIGHT, sample, self.height_noise_mm), 0.0), cylinder.diameter_mm)
        water_mm = 0.0
        if state.tank.water_height_mm > 0:
            water_mm = min(max(state.tank.water_height_mm + noise.symmetric(
                self.seed, channel + _WATER, sample, self.height_noise_mm), 0.0), height_mm)
        temperature_c += noise.symmetric(self.seed, channel + _TEMPERATURE, sample,
                                         self.temperature_noise_c)
        total_ml = cylinder.volume_ml(height_mm)
        water_ml = cylinder.volume_ml(water_mm)
        volume_ml = total_ml - water_ml
        return {
            "volume_ml": round(volume_ml),
            "tc_volume_ml": round(tc_volume_ml(volume_ml, temperature_c,
                                               state.tank.expansion_per_c,
                                               self.reference_temperature_c)),
            "ullage_ml": round(state.tank.capacity_ml - total_ml),
            "height_um": round(height_mm * 1000),
            "water_um": round(water_mm * 1000),
            "temperature_centi_c": round(temperature_c * 100),
            "water_volume_ml": round(water_ml),
        }

    def inventory_report(self, tank=0):
        """The i201 report for ``tank`` (0: every tank) as of now."""
        with self._lock:
            now_ms = self.clock.now_ms()
            self._fold_all(now_ms)
            records = []
            for state in self._selected(tank):
                in_progress = any(inflow.start_ms <= now_ms for inflow in state.inflows)
                status = tls.STATUS_DELIVERY_IN_PROGRESS if in_progress else 0
                records.append(tls.TankInventory(state.tank.number, state.tank.product,
                                                 status, **self._measure(state, now_ms)))
            return tls.InventoryReport(tank, self._console_time(now_ms), records)

    def delivery_report(self, tank=0):
        """The i202 report for ``tank`` (0: every tank) as of now."""
        with self._lock:
            now_ms = self.clock.now_ms()
            self._fold_all(now_ms)
            return tls.DeliveryReport(tank, self._console_time(now_ms), [
                tls.TankDeliveries(state.tank.number, state.tank.product, state.deliveries)
                for state in self._selected(tank)])

    def _selected(self, tank):
        return list(self._tanks.values()) if tank == 0 else [self._state(tank)]

    def _console_time(self, time_ms):
        return tls.time_from_unix_s(time_ms // 1000, self._utc_offset_s())

    def true_state(self, tank):
        """The tank as it really is now: product volume and temperature, levels, TC volume."""
        with self._lock:
            state = self._state(tank)
            now_ms = self.clock.now_ms()
            self._fold(state, now_ms)
            product_ml, temperature_c = state.product_at(now_ms)
            return {
                "volume_ml": product_ml,
                "temperature_c": temperature_c,
                "tc_volume_ml": tc_volume_ml(product_ml, temperature_c,
                                             state.tank.expansion_per_c,
                                             self.reference_temperature_c),
                "height_mm": state.cylinder.height_mm(product_ml + state.water_ml),
                "water_height_mm": state.tank.water_height_mm,
                "water_ml": state.water_ml,
                "deliveries_in_progress": len(state.inflows),
            }
