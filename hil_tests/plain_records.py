"""Records in plain form (docs/record-format.md) built directly, without a gateway: the detector
unit tests and the evaluation harness's record-level fleet (record_fleet.py) make theirs here,
so both produce exactly the shapes a real gateway signs. ``Chain.add`` validates each record
against the schema (protocol.records.build) unless told not to.

    chain = Chain("GW-1")
    rec = chain.add("fuel.sale", sale_body(grade=92, volume_ml=30000, ...),
                    device={"dispenser_address": 80, "nozzle": 1}, wall_time_ms=t)
    chain.record_id(rec)  # ids as a store would assign them: one counter over all chains
"""

import itertools

from meterseal.protocol import records

SOFTWARE = {"software_name": "meterseal-gw", "software_version": "0.1.0",
            "software_digest": b"\x5a" * 32}
FLOW_INTERVAL_MS = 1000
_PPM = 1000000


class Chain:
    """One gateway's records: seq from 0 up, opsec following wall time."""

    _ids = itertools.count(1)  # record ids, unique across every chain of the process

    def __init__(self, gateway_id, start_wall_ms=1767225600000, validate=True):
        self.gateway_id = gateway_id
        self.seq = 0
        self.start_wall_ms = start_wall_ms
        self.validate = validate
        self.event_count = 0
        self.ids = {}

    def add(self, kind, body, device=None, wall_time_ms=None, skip=0):
        """The next record (``skip`` seqs left out before it, as if lost); returns
        (record_id, record)."""
        self.seq += skip
        wall = self.start_wall_ms if wall_time_ms is None else wall_time_ms
        if kind == "event" and body["event_type"] in records.AUDIT_EVENT_TYPES:
            self.event_count += 1
        record = {
            "version": records.SCHEMA_VERSION, "gateway_id": self.gateway_id, "boot_epoch": 1,
            "seq": self.seq, "prev": bytes(32),
            "opsec": max(0, (wall - self.start_wall_ms) // 1000),
            "wall_time_ms": wall, "time_status": "S", "clock_set_count": 0,
            "event_count": self.event_count, **SOFTWARE, "kind": kind, "body": body}
        if device is not None:
            record["device"] = device
        if self.validate:
            records.build(record)
        self.seq += 1
        record_id = next(self._ids)
        return record_id, record


def amount_minor(volume_ml, unit_price_minor_per_kl):
    """Price computing as a dispenser does it: volume × price, rounded half up to one minor
    unit."""
    return (volume_ml * unit_price_minor_per_kl + _PPM // 2) // _PPM


def fold_profile(profile, interval_ms=FLOW_INTERVAL_MS):
    """(interval_ms, profile) folded (interval doubled, pairs summed) to at most
    MAX_FLOW_POINTS entries, as the gateway does."""
    while len(profile) > records.MAX_FLOW_POINTS:
        profile = [sum(profile[i:i + 2]) for i in range(0, len(profile), 2)]
        interval_ms *= 2
    return interval_ms, profile


def flow_profile(volume_ml, duration_ms, interval_ms=FLOW_INTERVAL_MS):
    """An even flow profile for ``volume_ml`` over ``duration_ms``."""
    points = max(1, -(-duration_ms // interval_ms))
    base, extra = divmod(volume_ml, points)
    return fold_profile([base + (1 if i < extra else 0) for i in range(points)], interval_ms)


def sale_body(*, grade, volume_ml, unit_price_minor_per_kl, start_wall_time_ms, duration_ms,
              amount=None, totalizer_start_ml=None, end_status="completed", pulses=None,
              k_factor_pulses_per_kl=100000, flow=None, **optional):
    """A fuel.sale body; the amount is price-computed unless given, the end time follows the
    duration, the totalizer end follows the start, ``flow`` is (interval_ms, profile) (an even
    profile unless given), and ``pulses`` (the gateway's own count) adds pulses_counted and
    pulse_volume_ml."""
    interval, profile = flow or flow_profile(volume_ml, duration_ms)
    body = {
        "grade": grade, "volume_ml": volume_ml,
        "unit_price_minor_per_kl": unit_price_minor_per_kl,
        "amount_minor": amount_minor(volume_ml, unit_price_minor_per_kl) if amount is None
        else amount,
        "start_wall_time_ms": start_wall_time_ms,
        "end_wall_time_ms": start_wall_time_ms + duration_ms, "duration_ms": duration_ms,
        "flow_interval_ms": interval, "flow_profile_ml": profile, "end_status": end_status,
    }
    if totalizer_start_ml is not None:
        body["totalizer_start_ml"] = totalizer_start_ml
        body["totalizer_end_ml"] = totalizer_start_ml + volume_ml
    if pulses is not None:
        body["pulses_counted"] = pulses
        body["pulse_volume_ml"] = pulses * _PPM // k_factor_pulses_per_kl  # 10^6 mL per kL
    body.update(optional)
    return body


def weighing_body(*, net_mg, unit_price_minor_per_kg, e_mg=5000, max_mg=15000000, tare_mg=0,
                  tare_mode=None, stable=True, centre_of_zero=True, start_reading_mg=0,
                  amount=None, price_interval_minor=1, **optional):
    """A scale.weighing body; gross is net + tare, d = e, and the amount is net × price rounded
    half up to the price interval unless given."""
    if amount is None:
        exact = net_mg * unit_price_minor_per_kg
        step = price_interval_minor * _PPM
        amount = (exact + step // 2) // step * price_interval_minor
    body = {
        "gross_mg": net_mg + tare_mg, "tare_mg": tare_mg, "net_mg": net_mg,
        "e_mg": e_mg, "d_mg": e_mg, "max_mg": max_mg, "stable": stable,
        "centre_of_zero": centre_of_zero, "start_reading_mg": start_reading_mg,
        "unit_price_minor_per_kg": unit_price_minor_per_kg, "amount_minor": amount,
    }
    if tare_mode is not None:
        body["tare_mode"] = tare_mode
    body.update(optional)
    return body


def inventory_body(*, volume_ml, tc_volume_ml=None, temperature_centi_c=1500,
                   mm_per_kl=1, **optional):
    """A tank.inventory body; the product height follows the volume (``mm_per_kl``)."""
    body = {"volume_ml": volume_ml, "product_height_um": volume_ml * mm_per_kl,
            "temperature_centi_c": temperature_centi_c}
    if tc_volume_ml is not None:
        body["tc_volume_ml"] = tc_volume_ml
    body.update(optional)
    return body


def delivery_body(*, start_wall_time_ms, end_wall_time_ms, start_volume_ml, end_volume_ml,
                  start_tc_volume_ml=None, end_tc_volume_ml=None, temperature_centi_c=1500):
    body = {"start_wall_time_ms": start_wall_time_ms, "end_wall_time_ms": end_wall_time_ms,
            "start_volume_ml": start_volume_ml, "end_volume_ml": end_volume_ml,
            "start_temperature_centi_c": temperature_centi_c,
            "end_temperature_centi_c": temperature_centi_c}
    if start_tc_volume_ml is not None:
        body["start_tc_volume_ml"] = start_tc_volume_ml
        body["end_tc_volume_ml"] = end_tc_volume_ml
    return body


def status_body(totalizers=(), links=("dispenser",)):
    """A status body: ``totalizers`` [(dispenser_address, nozzle, totalizer_ml)]."""
    return {
        "totalizers": [{"dispenser_address": a, "nozzle": n, "totalizer_ml": t}
                       for a, n, t in totalizers],
        "links": [{"link": link, "up": True, "error_count": 0} for link in links],
        "journal_used_bytes": 0, "journal_capacity_bytes": 1 << 20,
        "journal_unacked_records": 0, "records_dropped_total": 0,
    }


def event_body(event_type, **fields):
    return {"event_type": event_type, **fields}


def nozzle(address, number):
    return {"dispenser_address": address, "nozzle": number}


def scale(scale_id):
    return {"scale_id": scale_id}


def tank(number):
    return {"tank_number": number}
