"""Scenarios: a site's devices and its customers, as a TOML file, turned into a deterministic
plan of what happens when.

``load(path)`` reads and checks a scenario (errors name the key and the limit);
``plan(scenario)`` draws every customer visit and delivery from ``random.Random(seed)``, so the
same seed always gives the same day. The plan is plain data: the runner replays it against the
emulators on an accelerated clock.

Customers arrive as a Poisson process within opening hours. Fuel draws and weighed masses are
log-normal (``median``, ``spread`` = sigma of the log, clipped to ``min``..``max``): most draws are
near the median, a few are large, none negative, which is what forecourt and market data look
like.
"""

import math
import random
import tomllib
from datetime import datetime

from meterseal.protocol import records

MAX_DURATION_HOURS = 24 * 366
MAX_ARRIVALS_PER_HOUR = 600
# Simulated seconds a fuelling point stands idle between customers (one car drives off, the next
# pulls in and its driver lifts a nozzle), unless the scenario says otherwise.
DEFAULT_CHANGEOVER_S = 30.0


class ScenarioError(ValueError):
    pass


class Visit:
    """One planned event. ``kind`` is "fuel", "weighing" or "delivery"."""

    __slots__ = ("at_s", "kind", "params")

    def __init__(self, at_s, kind, params):
        self.at_s = at_s
        self.kind = kind
        self.params = params

    def __repr__(self):
        return f"Visit({self.at_s:.1f}, {self.kind}, {self.params})"

    def __eq__(self, other):
        return (self.at_s, self.kind, self.params) == (other.at_s, other.kind, other.params)


def _need(table, key, kind, where, low=None, high=None):
    if key not in table:
        raise ScenarioError(f"{where}.{key}: missing")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ScenarioError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    if low is not None and value < low or high is not None and value > high:
        raise ScenarioError(f"{where}.{key}: {value} is outside {low}..{high}")
    return value


def _hours(table, where):
    hours = table.get("opening_hours", [0, 24])
    if (not isinstance(hours, list) or len(hours) != 2
            or not all(isinstance(h, (int, float)) and 0 <= h <= 24 for h in hours)
            or hours[0] >= hours[1]):
        raise ScenarioError(f"{where}.opening_hours: expected [open, close] with 0 <= open < close <= 24")
    return hours


def _distribution(table, key, where):
    dist = table.get(key)
    if not isinstance(dist, dict):
        raise ScenarioError(f"{where}.{key}: expected a table {{median, spread, min, max}}")
    here = f"{where}.{key}"
    median = _need(dist, "median", int, here, 1)
    low = _need(dist, "min", int, here, 1)
    high = _need(dist, "max", int, here, low)
    _need(dist, "spread", float, here, 0.0, 3.0)
    if not low <= median <= high:
        raise ScenarioError(f"{here}: median {median} must lie within min..max")
    return dist


def load(path):
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}")
    return check(data)


def check(data):
    """Validate a parsed scenario; return it with `start` turned into epoch seconds."""
    _need(data, "seed", int, "scenario", 0)
    _need(data, "duration_hours", float, "scenario", 0.01, MAX_DURATION_HOURS)
    start = _need(data, "start", str, "scenario")
    try:
        start_at = datetime.fromisoformat(start)
    except ValueError:
        raise ScenarioError(f"scenario.start: {start!r} is not an ISO 8601 date-time")
    if start_at.tzinfo is None:
        raise ScenarioError("scenario.start: give a UTC offset, e.g. 2026-03-02T00:00:00+08:00")
    data["start_s"] = start_at.timestamp()
    data.setdefault("utc_offset_hours", 8)
    if "forecourt" in data:
        _check_forecourt(data["forecourt"])
    for i, tank in enumerate(data.get("tank_gauge", {}).get("tanks", [])):
        where = f"tank_gauge.tanks[{i}]"
        _need(tank, "number", int, where, 1, 99)
        capacity = _need(tank, "capacity_ml", int, where, 1, records.MAX_TANK_VOLUME_ML)
        _need(tank, "volume_ml", int, where, 0, capacity)
    tanks = {t["number"] for t in data.get("tank_gauge", {}).get("tanks", [])}
    for i, delivery in enumerate(data.get("tank_gauge", {}).get("deliveries", [])):
        where = f"tank_gauge.deliveries[{i}]"
        if _need(delivery, "tank", int, where, 1, 99) not in tanks:
            raise ScenarioError(f"{where}.tank: no tank {delivery['tank']} in tank_gauge.tanks")
        _need(delivery, "at_hour", float, where, 0.0, 24.0)
        _need(delivery, "volume_ml", int, where, 1, records.MAX_TANK_VOLUME_ML)
    if "market" in data:
        _check_market(data["market"])
    return data


def _check_forecourt(forecourt):
    _hours(forecourt, "forecourt")
    _need(forecourt, "arrivals_per_hour", float, "forecourt", 0.0, MAX_ARRIVALS_PER_HOUR)
    _need(forecourt, "preset_share", float, "forecourt", 0.0, 1.0)
    if forecourt["preset_share"] and not forecourt.get("preset_amounts_minor"):
        raise ScenarioError("forecourt.preset_amounts_minor: needed when preset_share > 0")
    _distribution(forecourt, "draw_ml", "forecourt")
    forecourt.setdefault("changeover_s", DEFAULT_CHANGEOVER_S)
    _need(forecourt, "changeover_s", float, "forecourt", 0.0, 600.0)
    dispensers = forecourt.get("dispensers")
    if not dispensers:
        raise ScenarioError("forecourt.dispensers: at least one dispenser is needed")
    for i, dispenser in enumerate(dispensers):
        where = f"forecourt.dispensers[{i}]"
        _need(dispenser, "address", int, where, 0x50, 0x6F)
        nozzles = dispenser.get("nozzles")
        if not nozzles or len(nozzles) > 4:
            raise ScenarioError(f"{where}.nozzles: 1 to 4 nozzles")
        for j, nozzle in enumerate(nozzles):
            here = f"{where}.nozzles[{j}]"
            _need(nozzle, "grade", int, here, 1, 99)
            _need(nozzle, "max_flow_lpm", float, here, 1.0, 200.0)
            _need(nozzle, "unit_price_minor_per_kl", int, here, 1, records.MAX_UNIT_PRICE_MINOR_PER_KL)


def _check_market(market):
    _hours(market, "market")
    _need(market, "arrivals_per_hour", float, "market", 0.0, MAX_ARRIVALS_PER_HOUR)
    items = market.get("items")
    if not items:
        raise ScenarioError("market.items: at least one item is needed")
    for i, item in enumerate(items):
        where = f"market.items[{i}]"
        _need(item, "plu", int, where, 1, 999999)
        _need(item, "unit_price_minor_per_kg", int, where, 1, records.MAX_UNIT_PRICE_MINOR)
        _distribution(item, "mass_g", where)
        _need(item, "tare_g", int, where, 0)
    # One stall's scale ([market.scale]) or a row of stalls ([[market.scales]]).
    if "scale" in market:
        if "scales" in market:
            raise ScenarioError("market: give [market.scale] or [[market.scales]], not both")
        market["scales"] = [market.pop("scale")]
    scales = market.get("scales")
    if not scales:
        raise ScenarioError("market.scales: at least one scale is needed")
    for i, scale in enumerate(scales):
        where = f"market.scales[{i}]"
        _need(scale, "max_g", int, where, 1)
        _need(scale, "e_g", int, where, 1)


def _lognormal(rng, dist):
    value = dist["median"] * math.exp(rng.gauss(0.0, dist["spread"]))
    return int(min(max(value, dist["min"]), dist["max"]))


def _arrivals(rng, rate_per_hour, opening_hours, start_s, duration_s, utc_offset_h):
    """Arrival times (epoch seconds) of a Poisson process that runs only while open."""
    if rate_per_hour <= 0:
        return []
    times, t = [], start_s
    while True:
        t += rng.expovariate(rate_per_hour / 3600.0)
        if t >= start_s + duration_s:
            return times
        hour = ((t / 3600.0) + utc_offset_h) % 24.0
        if opening_hours[0] <= hour < opening_hours[1]:
            times.append(t)


def plan(scenario):
    """Every visit and delivery of the scenario, in time order."""
    rng = random.Random(scenario["seed"])
    start_s = scenario["start_s"]
    duration_s = scenario["duration_hours"] * 3600.0
    offset_h = scenario["utc_offset_hours"]
    visits = []
    forecourt = scenario.get("forecourt")
    if forecourt:
        nozzles = [(d["address"], n + 1) for d in forecourt["dispensers"] for n in range(len(d["nozzles"]))]
        for at_s in _arrivals(rng, forecourt["arrivals_per_hour"], forecourt["opening_hours"],
                              start_s, duration_s, offset_h):
            address, nozzle = rng.choice(nozzles)
            params = {"address": address, "nozzle": nozzle}
            if rng.random() < forecourt["preset_share"]:
                params["preset_amount_minor"] = rng.choice(forecourt["preset_amounts_minor"])
            else:
                params["target_ml"] = _lognormal(rng, forecourt["draw_ml"])
            visits.append(Visit(at_s, "fuel", params))
    market = scenario.get("market")
    if market:
        for at_s in _arrivals(rng, market["arrivals_per_hour"], market["opening_hours"],
                              start_s, duration_s, offset_h):
            item = rng.choice(market["items"])
            # A single scale draws no number, so a one-scale scenario's plan stays as it was.
            stall = rng.randrange(len(market["scales"])) if len(market["scales"]) > 1 else 0
            visits.append(Visit(at_s, "weighing", {
                "scale": stall,
                "plu": item["plu"],
                "unit_price_minor_per_kg": item["unit_price_minor_per_kg"],
                "mass_mg": _lognormal(rng, item["mass_g"]) * 1000,
                "tare_mg": item["tare_g"] * 1000,
            }))
    day_start_s = start_s - ((start_s / 3600.0 + offset_h) % 24.0) * 3600.0
    for delivery in scenario.get("tank_gauge", {}).get("deliveries", []):
        at_s = day_start_s + delivery["at_hour"] * 3600.0
        while at_s < start_s + duration_s:
            if at_s >= start_s:
                visits.append(Visit(at_s, "delivery", {"tank": delivery["tank"],
                                                      "volume_ml": delivery["volume_ml"]}))
            at_s += 86400.0
    visits.sort(key=lambda v: v.at_s)
    return visits
