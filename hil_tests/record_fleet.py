"""A labelled fleet simulated per sale, not per 0.1 s: the evaluation harness's fast alternative
to the emulators (meterseal.fraud_rules.evaluate). Its physics follow the emulators
(hydraulics.py, dispenser.py, scale.py, tank_model.py) and its records are built with
plain_records, so they have exactly the shapes a gateway signs.

A fleet has forecourt sites (one gateway each: dispensers of two-nozzle pumps, a tank gauge, an
optional pulse input) and market sites (one gateway each: a row of price scales selling shared
PLUs). Cheats from the scenario file are spread over the sites, at most one cheating device per
site so that each cheater's peers and tanks stay honest.

    fleet = Fleet(load_scenario("eval_small.toml"))
    for record_id, record, truth in fleet.records():   # wall-time order, seq order per gateway
        ...
    fleet.facts      # StaticFacts: sites, prices, tanks, max flows
    fleet.labels     # one Label per cheating device
    fleet.devices    # every device: (site_id, device_ref) -> kind ("dispenser", "scale", ...)

``truth`` is True when a cheat changed that record (the label's kind applied to it), False for
an honest record of a device, None for records about no device's measurement (status, tank).
"""

import bisect
import heapq
import math
import random
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from meterseal.firmware.drivers import pulses as pulse_rules
from meterseal.fraud_rules.facts import StaticFacts, WorkOrder
from meterseal.hil.cheats import parse_schedule
from meterseal.hil.emulators.tank_model import (
    GASOLINE_EXPANSION_PER_C,
    HorizontalCylinder,
    tc_volume_ml,
)
from meterseal.hil.plain_records import (
    FLOW_INTERVAL_MS,
    Chain,
    delivery_body,
    event_body,
    fold_profile,
    inventory_body,
    sale_body,
    status_body,
    weighing_body,
)

DISPENSER_CHEATS = ("pulse_scaling_board", "pulse_scaling_encoder", "k_factor_silent",
                    "k_factor_logged", "board_swap", "backoffice_rewrite")
SCALE_CHEATS = ("remote_offset_g", "remote_offset_percent", "step_gain", "tare_abuse",
                "unstable_sale", "retained_base")
K_FACTOR = 100000          # pulses per kL, the sealed value the gateway divides by
DISPLAY_STEP_ML = 10       # the pump displays centilitres
TRIGGER_SHARE = 0.92       # a customer's squeeze gives about 92 % of the nozzle's Qmax
# Every forecourt's dispensers are one model (the scenario gives one nozzle spec for all), so
# they are each other's peers across sites (dispenser.pulse_scaling's model check).
DISPENSER_MODEL = "fleet dispenser"
RAMP_UP_S = 2.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_PPM = 1_000_000
# Honest service visits come at 01:00 local, before any site opens, and take at most 40 min per
# device; test draws go into a proving can and back into the tank.
SERVICE_HOUR = 1
SERVICE_SLOT_MS = 40 * 60 * 1000
TEST_DRAW_ML = 20000


class FleetScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Label:
    """A cheating device: what was fitted, how big, on what schedule, from when."""

    site_id: str
    device_ref: str          # "80" for a dispenser (all its nozzles), a scale's id
    device_kind: str         # "dispenser" or "scale"
    kind: str
    size: float
    schedule: str
    start_ms: int

    @property
    def cheat_class(self):
        return f"{self.kind} {self.size:g} {self.schedule}"

    def covers(self, device_ref):
        """The label's device, or one of its nozzles."""
        return device_ref == self.device_ref or (
            device_ref is not None and device_ref.startswith(self.device_ref + "/"))


def load_scenario(path):
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetScenarioError(f"cannot read scenario {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetScenarioError(f"{path}: not valid TOML: {exc}") from None
    for key in ("seed", "start", "days", "cheat_start_day"):
        if key not in data:
            raise FleetScenarioError(f"{path}: missing {key!r}")
    for cheat in data.get("cheats", []):
        kinds = DISPENSER_CHEATS + SCALE_CHEATS
        if cheat.get("kind") not in kinds:
            raise FleetScenarioError(f"{path}: cheat kind {cheat.get('kind')!r} is not one "
                                     "of " + ", ".join(kinds))
        for schedule in cheat.get("schedules", ["always"]):
            try:
                parse_schedule(schedule)
            except ValueError as exc:
                raise FleetScenarioError(f"{path}: {exc}") from None
    data["name"] = path.stem
    return data


def _lognormal(rng, spec):
    value = spec["median"] * math.exp(rng.gauss(0.0, spec["spread"]))
    return min(max(value, spec["min"]), spec["max"])


def _ramped_profile(duration_ms, flow_ml_per_ms, indicated_ml, displayed_of_true):
    """The gateway's flow profile of a sale: the display (10 mL steps) read every second while
    the flow ramps up over RAMP_UP_S and then runs steady, the last reading being the indicated
    volume; ``displayed_of_true`` maps mL delivered to mL displayed (where a cheat acts)."""
    ramp_ms = RAMP_UP_S * 1000
    profile, previous = [], 0
    for end_ms in range(FLOW_INTERVAL_MS, duration_ms + FLOW_INTERVAL_MS, FLOW_INTERVAL_MS):
        if end_ms >= duration_ms:
            shown = indicated_ml
        else:
            true_ml = flow_ml_per_ms * (end_ms * end_ms / (2 * ramp_ms) if end_ms < ramp_ms
                                        else end_ms - ramp_ms / 2)
            shown = min(indicated_ml,
                        int(displayed_of_true(true_ml)) // DISPLAY_STEP_ML * DISPLAY_STEP_ML)
        profile.append(shown - previous)
        previous = shown
    return fold_profile(profile)


def _poisson_times(rng, day_start_ms, opening_hours, per_hour):
    """Arrival times (ms) over the day's opening hours."""
    open_h, close_h = opening_hours
    t = day_start_ms + open_h * HOUR_MS
    end = day_start_ms + close_h * HOUR_MS
    times = []
    while True:
        t += int(rng.expovariate(per_hour) * HOUR_MS)
        if t >= end:
            return times
        times.append(t)


class _Cheat:
    def __init__(self, label, utc_offset_h):
        self.label = label
        self.schedule = parse_schedule(label.schedule)
        self.utc_offset_h = utc_offset_h

    def active(self, at_ms, draw):
        if at_ms < self.label.start_ms:
            return False
        hour = ((at_ms / HOUR_MS) + self.utc_offset_h) % 24
        return self.schedule.applies(hour, draw)


class _Gateway:
    """One gateway's records, generated a day at a time and given seqs in wall-time order."""

    def __init__(self, gateway_id, start_ms, validate_every):
        self.chain = Chain(gateway_id, start_wall_ms=start_ms, validate=False)
        self.validate_every = validate_every
        self.pending = []   # (wall_ms, order, kind, body, device, truth)
        self._order = 0

    def emit(self, wall_ms, kind, body, device=None, truth=None):
        self._order += 1
        self.pending.append((wall_ms, self._order, kind, body, device, truth))

    def flush(self):
        """This day's records in wall-time order: (wall_ms, record_id, record, truth)."""
        self.pending.sort(key=lambda row: (row[0], row[1]))
        out = []
        for wall_ms, _, kind, body, device, truth in self.pending:
            every = self.validate_every
            self.chain.validate = every > 0 and self.chain.seq % every == 0
            record_id, record = self.chain.add(kind, body, device=device, wall_time_ms=wall_ms)
            out.append((wall_ms, record_id, record, truth))
        self.pending = []
        return out


class _Site:
    """What forecourts and markets share: the honest events a scenario asks for. A share of the
    honest devices (``service_visit_share``) gets one authorised service visit, a seal opened
    and a calibration under a work order; a share of the sites (``power_cut_share``) loses power
    once, for 0.5 to 3 h in opening hours, gateway and devices together, and half of those
    gateways sign a power_fail first. Both are drawn from a generator of their own, so a
    scenario without them runs exactly as before. Subclasses name the devices a visit may come
    to (``honest_devices``: all but the site's cheater)."""

    def plan_honest_events(self, start_ms, days, seed):
        rng = random.Random(f"{seed}/{self.site_id}/honest-events")
        self.visits = {}        # day -> the device ids serviced that night
        self.work_orders = []
        share = self.spec.get("service_visit_share", 0.0)
        for device in self.honest_devices():
            if days > 1 and rng.random() < share:
                day = rng.randrange(1, days)
                slot = len(self.visits.setdefault(day, []))
                self.visits[day].append(device)
                at = start_ms + day * DAY_MS + SERVICE_HOUR * HOUR_MS + slot * SERVICE_SLOT_MS
                self.work_orders.append(WorkOrder(
                    f"WO-{self.site_id}-{device}", self.site_id, self.gateway.chain.gateway_id,
                    str(device), ("seal_open", "calibration"), at - HOUR_MS,
                    at + SERVICE_SLOT_MS + HOUR_MS, technician="fleet service"))
        self.power_cut = None
        if days > 1 and rng.random() < self.spec.get("power_cut_share", 0.0):
            open_h, close_h = self.spec["opening_hours"]
            begin = (rng.randrange(1, days) * DAY_MS
                     + int(rng.uniform(open_h, close_h - 1) * HOUR_MS))
            self.power_cut = (start_ms + begin, int(rng.uniform(0.5, 3.0) * HOUR_MS),
                              rng.random() < 0.5)
        self.service_rng = rng

    def cut_window(self, day_start_ms):
        """(from, to) ms of today's power cut, or None."""
        if self.power_cut is None:
            return None
        begin, duration, _ = self.power_cut
        if not day_start_ms <= begin < day_start_ms + DAY_MS:
            return None
        return begin, begin + duration

    def powered(self, at_ms, cut, margin_ms=0):
        """False within today's cut (or ``margin_ms`` before it: a sale would not finish)."""
        return cut is None or not cut[0] - margin_ms <= at_ms < cut[1]

    def power_events(self, cut):
        """What the gateway signs around a cut: perhaps a power_fail, then a boot."""
        if cut is None:
            return
        if self.power_cut[2]:
            self.gateway.emit(cut[0], "event", event_body("power_fail", supply_mv=9800))
        self.gateway.emit(cut[1], "event", event_body("boot", reset_cause="power_on"))

    def service_times(self, day, day_start_ms):
        """(start ms, device) of each visit tonight."""
        for slot, device in enumerate(self.visits.get(day, ())):
            yield day_start_ms + SERVICE_HOUR * HOUR_MS + slot * SERVICE_SLOT_MS, device


class _Nozzle:
    def __init__(self, rng, address, number, spec, honest_drift_percent):
        self.address = address
        self.number = number
        self.grade = spec["grade"]
        self.price = spec["unit_price_minor_per_kl"]
        self.max_flow_lpm = spec["max_flow_lpm"]
        self.tank = spec["tank"]
        self.flow_factor = 1.0 + rng.gauss(0.0, 0.02)     # this nozzle's hoses and filters
        self.meter_error = rng.uniform(-0.002, 0.002)      # honest, within the 0.3 % MPE
        # Honest drift: a wearing meter walks towards, never past, the MPE.
        self.drift_per_day = rng.uniform(-1, 1) * honest_drift_percent / 100 / 30
        self.totalizer_ml = rng.randrange(10_000_000, 900_000_000)
        self.moves = []   # today's (sale end ms, totalizer after), for the heartbeats
        self.k_factor = K_FACTOR   # the dispenser's own; a service calibration changes it

    def totalizer_at(self, at_ms, day_start_total):
        """The totalizer a heartbeat at ``at_ms`` sees: sales that ended by then have counted."""
        index = bisect.bisect_right(self.moves, (at_ms, math.inf))
        return self.moves[index - 1][1] if index else day_start_total

    def honest_error(self, day):
        return max(-0.003, min(0.003, self.meter_error + self.drift_per_day * day))


class _ForecourtSite(_Site):
    def __init__(self, fleet, site_id, spec, cheat, pulse_input, rng):
        self.site_id = site_id
        self.spec = spec
        self.rng = rng
        self.cheat = cheat
        self.cheat_address = None if cheat is None else int(cheat.label.device_ref)
        self.pulse_input = pulse_input
        self.gateway = _Gateway(f"GW-{site_id}", fleet.start_ms, fleet.validate_every)
        drift = spec.get("honest_drift_percent", 0.3)
        self.dispensers = {}
        for index in range(spec["dispensers"]):
            address = 0x50 + index
            self.dispensers[address] = [_Nozzle(rng, address, n + 1, nozzle_spec, drift)
                                        for n, nozzle_spec in enumerate(spec["nozzles"])]
        self.tanks = {}
        for tank_spec in spec["tanks"]:
            self.tanks[tank_spec["number"]] = {
                "shape": HorizontalCylinder(tank_spec["capacity_ml"], tank_spec["diameter_mm"]),
                "capacity_ml": tank_spec["capacity_ml"],
                "tc_ml": float(tank_spec["volume_ml"]),
                "sold_today": 0.0}
        self.config_event_sent = False

    def nozzles(self):
        for nozzles in self.dispensers.values():
            yield from nozzles

    def honest_devices(self):
        return [address for address in self.dispensers if address != self.cheat_address]

    def day(self, day, day_start_ms):
        """Simulate one local day: sales, heartbeats, tank readings, the night's deliveries."""
        day_start_totals = {}
        for nozzle in self.nozzles():
            day_start_totals[nozzle] = nozzle.totalizer_ml
            nozzle.moves = []
        for at, address in self.service_times(day, day_start_ms):
            self._service(day, at, address)
        cut = self.cut_window(day_start_ms)
        for nozzles in self.dispensers.values():
            busy_until = 0
            for arrival in _poisson_times(self.rng, day_start_ms, self.spec["opening_hours"],
                                          self.spec["arrivals_per_hour"]):
                start = max(arrival, busy_until)
                if not self.powered(start, cut, margin_ms=10 * 60 * 1000):
                    continue  # the customer drives on
                nozzle = self.rng.choice(nozzles)
                duration_ms = self._sale(day, nozzle, start)
                busy_until = start + duration_ms + self.spec.get("changeover_s", 45) * 1000
        self._config_events(day_start_ms)
        self.power_events(cut)
        interval_ms = self.spec.get("status_interval_s", 900) * 1000
        for t in range(day_start_ms + 1, day_start_ms + DAY_MS, interval_ms):
            if not self.powered(t, cut):
                continue
            totals = [(n.address, n.number, n.totalizer_at(t, day_start_totals[n]))
                      for n in self.nozzles()]
            self.gateway.emit(t, "status", status_body(totals, links=self._links()))
        self._tanks_day(day_start_ms, cut)
        return self.gateway.flush()

    def _service(self, day, at_ms, address):
        """An authorised visit: the seal opened, two 20 L test draws per nozzle into a proving
        can, each nozzle's K-factor set so that it shows the true volume, one draw more to
        confirm, the seal closed. The gateway's sealed K stays, so afterwards the dispenser's
        volume runs against the pulses by the meter error the calibration took out."""
        rng = self.service_rng
        device = {"dispenser_address": address}
        self.gateway.emit(at_ms, "event", event_body("seal_open", seal=f"S{address}"),
                          device=device, truth=False)
        t = at_ms + 2 * 60 * 1000
        for nozzle in self.dispensers[address]:
            for _ in range(2):
                t += self._sale(day, nozzle, t, rng=rng, test_draw_ml=TEST_DRAW_ML) + 60 * 1000
            old_k = nozzle.k_factor
            nozzle.k_factor = round(K_FACTOR * (1 + nozzle.honest_error(day)))
            t += 2 * 60 * 1000
            self.gateway.emit(t, "event", event_body(
                "calibration", old_k_factor_pulses_per_kl=old_k,
                new_k_factor_pulses_per_kl=nozzle.k_factor, calibration_count=1),
                device={**device, "nozzle": nozzle.number}, truth=False)
            t += self._sale(day, nozzle, t + 60 * 1000, rng=rng,
                            test_draw_ml=TEST_DRAW_ML) + 2 * 60 * 1000
        self.gateway.emit(t, "event", event_body("seal_close", seal=f"S{address}"),
                          device=device, truth=False)

    def _links(self):
        return ("dispenser", "tank_gauge", "pulse_input") if self.pulse_input else (
            "dispenser", "tank_gauge")

    def _config_events(self, day_start_ms):
        """The event a logged K-factor change or a swapped board leaves, at the cheat's start."""
        if self.cheat is None or self.config_event_sent:
            return
        label = self.cheat.label
        if not day_start_ms <= label.start_ms < day_start_ms + DAY_MS:
            return
        self.config_event_sent = True
        device = {"dispenser_address": self.cheat_address}
        if label.kind == "k_factor_logged":
            new_k = round(K_FACTOR / (1 + label.size / 100))
            self.gateway.emit(label.start_ms, "event", event_body(
                "calibration", old_k_factor_pulses_per_kl=K_FACTOR,
                new_k_factor_pulses_per_kl=new_k, calibration_count=1), device=device,
                truth=True)
        elif label.kind == "board_swap":
            self.gateway.emit(label.start_ms, "event", event_body(
                "device_identity_changed", old_identity=f"DISP-{self.site_id}-{label.device_ref}",
                new_identity=f"CLONE-{self.rng.randrange(10**6):06d}"), device=device,
                truth=True)

    def _sale(self, day, nozzle, start_ms, rng=None, test_draw_ml=None):
        """One sale (a customer's, or a service visit's test draw into a proving can, whose
        fuel goes back to the tank); returns its duration in ms."""
        rng, spec = rng or self.rng, self.spec
        preset_amount = None
        if test_draw_ml is not None:
            wanted_ml = test_draw_ml
        elif rng.random() < spec.get("preset_share", 0.25):
            preset_amount = rng.choice(spec["preset_amounts_minor"])
            wanted_ml = preset_amount * _PPM / nozzle.price
        else:
            wanted_ml = _lognormal(rng, spec["draw_ml"])
        cheat = self.cheat if nozzle.address == self.cheat_address else None
        kind = cheat.label.kind if cheat else None
        gain = cheat.label.size / 100 if cheat else 0.0
        active = bool(cheat and cheat.active(start_ms, wanted_ml))
        encoder_gain = gain if active and kind == "pulse_scaling_encoder" else 0.0
        cpu_gain = gain if active and kind in (
            "pulse_scaling_board", "k_factor_silent", "k_factor_logged", "board_swap") else 0.0
        # What the encoder's pulses say (the gateway counts these); the CPU multiplies them, a
        # draws-above board only for the pulses past its threshold (as in the emulator).
        counted_per_true = (1 + nozzle.honest_error(day)) * (1 + encoder_gain)
        extra_from = (cheat.schedule.threshold if active and cheat.schedule.mode == "draws_above"
                      else 0)
        # The CPU divides by its own K-factor, the gateway's pulse volume by the sealed one.
        k_scale = K_FACTOR / nozzle.k_factor

        def displayed(counted_ml):
            return (counted_ml + cpu_gain * max(0.0, counted_ml - extra_from)) * k_scale

        if preset_amount is not None:  # a preset stops at its mark
            indicated_ml = int(wanted_ml) // DISPLAY_STEP_ML * DISPLAY_STEP_ML
            cpu_ml = indicated_ml / k_scale
            counted_ml = (cpu_ml if cpu_ml <= extra_from else
                          extra_from + (cpu_ml - extra_from) / (1 + cpu_gain))
            true_ml = counted_ml / counted_per_true
        else:
            true_ml = wanted_ml
            counted_ml = true_ml * counted_per_true
            indicated_ml = int(displayed(counted_ml)) // DISPLAY_STEP_ML * DISPLAY_STEP_ML
        reported_ml = indicated_ml
        if active and kind == "backoffice_rewrite":
            reported_ml = int(indicated_ml * (1 - gain)) // DISPLAY_STEP_ML * DISPLAY_STEP_ML
        flow_lpm = (nozzle.max_flow_lpm * TRIGGER_SHARE * nozzle.flow_factor
                    * (1 + rng.gauss(0.0, 0.01)))
        duration_ms = int((RAMP_UP_S / 2 + true_ml / 1000 / flow_lpm * 60) * 1000)
        # What the display showed, as the gateway records it: a back office's rewrite of the final
        # figure leaves the profile summing above the reported volume (firmware/drivers/dart.py).
        flow = _ramped_profile(duration_ms, flow_lpm / 60, indicated_ml,
                               lambda true: displayed(true * counted_per_true))
        optional = {}
        if preset_amount is not None:
            optional["preset_amount_minor"] = preset_amount
        body = sale_body(
            grade=nozzle.grade, volume_ml=reported_ml, unit_price_minor_per_kl=nozzle.price,
            start_wall_time_ms=start_ms, duration_ms=max(1, duration_ms),
            totalizer_start_ml=nozzle.totalizer_ml,
            totalizer_end_ml=nozzle.totalizer_ml + indicated_ml,
            end_status="preset_reached" if preset_amount is not None else "completed",
            k_factor_pulses_per_kl=K_FACTOR, flow=flow, **optional)
        if self.pulse_input:
            pulses = int(counted_ml * K_FACTOR / _PPM)
            body["pulses_counted"] = pulses
            body["pulse_volume_ml"] = pulse_rules.pulse_volume_ml(pulses, K_FACTOR)
        nozzle.totalizer_ml += indicated_ml
        nozzle.moves.append((start_ms + duration_ms, nozzle.totalizer_ml))
        if test_draw_ml is None:
            self.tanks[nozzle.tank]["sold_today"] += true_ml
        device = {"dispenser_address": nozzle.address, "nozzle": nozzle.number}
        end_ms = start_ms + duration_ms
        self.gateway.emit(end_ms, "fuel.sale", body, device=device,
                          truth=active if test_draw_ml is None else False)
        if self.pulse_input and pulse_rules.mismatch(
                body["pulse_volume_ml"], reported_ml, K_FACTOR, DISPLAY_STEP_ML):
            self.gateway.emit(end_ms, "event", event_body(
                "pulse_mismatch", pulses_counted=body["pulses_counted"],
                pulse_volume_ml=body["pulse_volume_ml"], reported_volume_ml=reported_ml,
                difference_ml=reported_ml - body["pulse_volume_ml"],
                k_factor_pulses_per_kl=K_FACTOR), device=device, truth=active)
        return duration_ms

    def _tanks_day(self, day_start_ms, cut):
        """Hourly gauge readings (none while the power is cut); the tank falls evenly over
        opening hours by what its nozzles drew today, and a delivery at 03:00 tops it up to 70 %
        of capacity."""
        open_h, close_h = self.spec["opening_hours"]
        for number, tank in self.tanks.items():
            sold, tank["sold_today"] = tank["sold_today"], 0.0
            opening_tc = tank["tc_ml"]
            for hour in range(24):
                at = day_start_ms + hour * HOUR_MS
                if hour == 3:
                    self._delivery(number, tank, at)
                    opening_tc = tank["tc_ml"]
                share = min(max((hour - open_h) / (close_h - open_h), 0.0), 1.0)
                true_tc = opening_tc - sold * share
                if self.powered(at + 30 * 60 * 1000, cut):
                    self._reading(number, tank, at + 30 * 60 * 1000, true_tc, hour)
            tank["tc_ml"] = opening_tc - sold

    def _temperature_c(self, hour):
        return 18.0 + 1.5 * math.sin((hour - 9) / 24 * 2 * math.pi)

    def _reading(self, number, tank, at_ms, true_tc, hour):
        temperature = self._temperature_c(hour) + self.rng.uniform(-0.1, 0.1)
        volume = true_tc / (1 - GASOLINE_EXPANSION_PER_C * (temperature - 20.0))
        height_mm = tank["shape"].height_mm(max(volume, 0.0))
        # The probe's ±0.5 mm level noise, as tank_gauge.py gives it, moves the volume reading.
        noisy_height = min(max(height_mm + self.rng.uniform(-0.5, 0.5), 0.0),
                           tank["shape"].diameter_mm)
        measured = int(tank["shape"].volume_ml(noisy_height))
        tc = int(tc_volume_ml(measured, temperature, GASOLINE_EXPANSION_PER_C))
        # The console's clock is the fleet's clock, to the minute, as it times deliveries.
        self.gateway.emit(at_ms, "tank.inventory", inventory_body(
            volume_ml=measured, tc_volume_ml=tc, temperature_centi_c=round(temperature * 100),
            product_height_um=int(noisy_height * 1000), console_time_ms=at_ms // 60000 * 60000),
            device={"tank_number": number})

    def _delivery(self, number, tank, at_ms):
        target = tank["capacity_ml"] * 0.7
        if tank["tc_ml"] >= target:
            return
        start_tc = tank["tc_ml"]
        tank["tc_ml"] = target
        self.gateway.emit(at_ms + 20 * 60 * 1000, "tank.delivery", delivery_body(
            start_wall_time_ms=at_ms, end_wall_time_ms=at_ms + 20 * 60 * 1000,
            start_volume_ml=int(start_tc), end_volume_ml=int(target),
            start_tc_volume_ml=int(start_tc), end_tc_volume_ml=int(target),
            temperature_centi_c=2000), device={"tank_number": number})


class _Scale:
    def __init__(self, rng, scale_id, spec):
        self.scale_id = scale_id
        self.e_mg = spec.get("e_g", 5) * 1000
        self.max_mg = spec.get("max_g", 15000) * 1000
        # Honest span error within ±0.5 e at Max, drifting slowly (in-service MPE allows 2 e).
        self.span_error = rng.uniform(-0.5, 0.5) * self.e_mg / self.max_mg
        self.drift_per_day = rng.uniform(-0.05, 0.05) * self.e_mg / self.max_mg
        self.sale_number = rng.randrange(1000, 90000)


class _MarketSite(_Site):
    def __init__(self, fleet, site_id, spec, cheat, rng):
        self.site_id = site_id
        self.spec = spec
        self.rng = rng
        self.cheat = cheat
        self.gateway = _Gateway(f"GW-{site_id}", fleet.start_ms, fleet.validate_every)
        self.scales = [_Scale(rng, f"{site_id}-S{n + 1}", spec) for n in range(spec["scales"])]

    def day(self, day, day_start_ms):
        for at, scale_id in self.service_times(day, day_start_ms):
            self._service(day, at, scale_id)
        cut = self.cut_window(day_start_ms)
        for scale in self.scales:
            for at in _poisson_times(self.rng, day_start_ms, self.spec["opening_hours"],
                                     self.spec["arrivals_per_hour"]):
                if self.powered(at, cut, margin_ms=60 * 1000):
                    self._weighing(day, scale, at)
        self.power_events(cut)
        interval_ms = self.spec.get("status_interval_s", 900) * 1000
        for t in range(day_start_ms, day_start_ms + DAY_MS, interval_ms):
            if self.powered(t + 1, cut):
                self.gateway.emit(t + 1, "status", status_body(links=("scale",)))
        return self.gateway.flush()

    def honest_devices(self):
        cheater = self.cheat.label.device_ref if self.cheat else None
        return [scale.scale_id for scale in self.scales if scale.scale_id != cheater]

    def _service(self, day, at_ms, scale_id):
        """An authorised visit: the seal opened, the span adjusted to within ±0.1 e at Max of
        true, the seal closed."""
        scale = next(s for s in self.scales if s.scale_id == scale_id)
        device = {"scale_id": scale_id}
        self.gateway.emit(at_ms, "event", event_body("seal_open", seal=f"S-{scale_id}"),
                          device=device, truth=False)
        residual = self.service_rng.uniform(-0.1, 0.1) * scale.e_mg / scale.max_mg
        scale.span_error = residual - scale.drift_per_day * day
        self.gateway.emit(at_ms + 15 * 60 * 1000, "event", event_body(
            "calibration", calibration_count=1), device=device, truth=False)
        self.gateway.emit(at_ms + 25 * 60 * 1000, "event", event_body(
            "seal_close", seal=f"S-{scale_id}"), device=device, truth=False)

    def _weighing(self, day, scale, at_ms):
        rng, e = self.rng, scale.e_mg
        item = rng.choice(self.spec["items"])
        mass_mg = int(_lognormal(rng, item["mass_g"]) * 1000)
        container_mg = int(item.get("tare_g", 0) * 1000)
        cheat = self.cheat if self.cheat and self.cheat.label.device_ref == scale.scale_id else None
        kind, size = (cheat.label.kind, cheat.label.size) if cheat else (None, 0)
        load_mg = mass_mg + container_mg
        active = bool(cheat and cheat.active(at_ms, load_mg))
        span = 1 + scale.span_error + scale.drift_per_day * day
        gross = load_mg * span
        start_reading = 0
        stable, settle_ms = True, max(200, int(rng.gauss(900, 200)))
        tare = container_mg
        if active:
            if kind == "remote_offset_g":
                gross += size * 1000
            elif kind in ("remote_offset_percent", "step_gain"):
                gross *= 1 + size / 100
            elif kind == "retained_base":
                gross += size * 1000
                start_reading = int(size * 1000) // e * e
            elif kind == "tare_abuse":
                active = container_mg > 0
                tare = max(0, container_mg - int(size * 1000))
            elif kind == "unstable_sale":
                # Sold while still moving: the pan overshoots and has not settled.
                gross *= 1 + 0.03 * math.exp(-size / 400)
                stable = False
        gross_mg = min(int(round(gross / e)) * e, scale.max_mg)
        tare_mg = int(round(tare / e)) * e
        net_mg = gross_mg - tare_mg
        if net_mg <= 0:
            return
        optional = {"plu": item["plu"], "sale_number": scale.sale_number}
        if stable:
            optional["load_to_stable_ms"] = settle_ms
        scale.sale_number += 1
        body = weighing_body(
            net_mg=net_mg, tare_mg=tare_mg, unit_price_minor_per_kg=item["unit_price_minor_per_kg"],
            e_mg=e, max_mg=scale.max_mg, stable=stable, centre_of_zero=start_reading == 0,
            start_reading_mg=start_reading,
            tare_mode="weighed" if tare_mg or container_mg else "none", **optional)
        self.gateway.emit(at_ms + settle_ms, "scale.weighing", body,
                          device={"scale_id": scale.scale_id}, truth=active)


class Fleet:
    """The fleet a scenario describes, its facts, labels and devices; ``records()`` runs it."""

    def __init__(self, scenario, seed=None, days=None):
        self.scenario = scenario
        self.seed = scenario["seed"] if seed is None else seed
        self.days = scenario["days"] if days is None else days
        self.utc_offset_h = scenario.get("utc_offset_hours", 8)
        start = datetime.fromisoformat(scenario["start"])
        self.start_ms = int(start.timestamp() * 1000)
        self.validate_every = scenario.get("validate_every", 50)
        rng = random.Random(self.seed)
        cheat_start_ms = self.start_ms + int(scenario["cheat_start_day"] * DAY_MS)
        dispenser_cheats, scale_cheats = [], []
        for cheat in scenario.get("cheats", []):
            for size in cheat["sizes"]:
                for schedule in cheat.get("schedules", ["always"]):
                    for _ in range(cheat.get("devices", 1)):
                        row = (cheat["kind"], size, schedule)
                        (dispenser_cheats if cheat["kind"] in DISPENSER_CHEATS
                         else scale_cheats).append(row)
        self.sites = []
        self.labels = []
        forecourt = scenario.get("forecourt")
        if forecourt:
            count = len(dispenser_cheats) + forecourt.get("honest_sites", 1)
            for index in range(count):
                site_id = f"F{index + 1:03d}"
                cheat = None
                if index < len(dispenser_cheats):
                    address = 0x50 + rng.randrange(forecourt["dispensers"])
                    cheat = self._label(site_id, str(address), "dispenser",
                                        dispenser_cheats[index], cheat_start_ms, rng)
                pulse_input = rng.random() < forecourt.get("pulse_input_share", 1.0)
                self.sites.append(_ForecourtSite(self, site_id, forecourt, cheat, pulse_input,
                                                 random.Random(rng.random())))
        market = scenario.get("market")
        if market:
            count = len(scale_cheats) + market.get("honest_sites", 1)
            for index in range(count):
                site_id = f"M{index + 1:03d}"
                cheat = None
                if index < len(scale_cheats):
                    scale_id = f"{site_id}-S{rng.randrange(market['scales']) + 1}"
                    cheat = self._label(site_id, scale_id, "scale", scale_cheats[index],
                                        cheat_start_ms, rng)
                self.sites.append(_MarketSite(self, site_id, market, cheat,
                                              random.Random(rng.random())))
        for site in self.sites:
            site.plan_honest_events(self.start_ms, self.days, self.seed)
        if (dispenser_cheats and not forecourt) or (scale_cheats and not market):
            raise FleetScenarioError("cheats need a [forecourt] for dispensers and a [market] "
                                     "for scales")
        self.facts = self._facts()
        self.devices = self._devices()

    def _label(self, site_id, device_ref, device_kind, row, start_ms, rng):
        kind, size, schedule = row
        # Starts spread over the first day of cheating, so time of day does not favour anyone.
        label = Label(site_id, device_ref, device_kind, kind, float(size), schedule,
                      start_ms + rng.randrange(DAY_MS))
        self.labels.append(label)
        return _Cheat(label, self.utc_offset_h)

    def _facts(self):
        sites, prices, tanks, max_flows, models = {}, [], {}, {}, {}
        for site in self.sites:
            gateway_id = site.gateway.chain.gateway_id
            sites[gateway_id] = site.site_id
            if isinstance(site, _ForecourtSite):
                for nozzle in site.nozzles():
                    prices.append((site.site_id, nozzle.grade, nozzle.price, 0))
                    tanks[(site.site_id, nozzle.grade)] = nozzle.tank
                    max_flows[(site.site_id, f"{nozzle.address}/{nozzle.number}")] = \
                        nozzle.max_flow_lpm
                    models[(gateway_id, str(nozzle.address))] = DISPENSER_MODEL
        work_orders = [order for site in self.sites for order in site.work_orders]
        return StaticFacts(sites=sites, prices=sorted(set(prices)), tanks=tanks,
                           max_flows=max_flows, models=models, work_orders=work_orders)

    def _devices(self):
        """(site_id, device_ref) -> kind, for every device a finding may name."""
        devices = {}
        for site in self.sites:
            devices[(site.site_id, None)] = "gateway"
            if isinstance(site, _ForecourtSite):
                for address in site.dispensers:
                    devices[(site.site_id, str(address))] = "dispenser"
                for number in site.tanks:
                    devices[(site.site_id, f"tank/{number}")] = "tank"
            else:
                for scale in site.scales:
                    devices[(site.site_id, scale.scale_id)] = "scale"
        return devices

    def tanks_fed_by(self, label):
        """The tanks a cheating dispenser draws from (a wetstock alarm there is its alarm)."""
        for site in self.sites:
            if site.site_id == label.site_id and isinstance(site, _ForecourtSite):
                return {f"tank/{n.tank}" for n in site.dispensers.get(int(label.device_ref), ())}
        return set()

    def records(self):
        """(record_id, record, truth) for the whole run: every site's day, merged in wall-time
        order (each gateway's records stay in seq order)."""
        for day in range(self.days):
            day_start_ms = self.start_ms + day * DAY_MS
            streams = [site.day(day, day_start_ms) for site in self.sites]
            for wall_ms, record_id, record, truth in heapq.merge(*streams,
                                                                key=lambda row: row[0]):
                yield record_id, record, truth
