"""dispenser.pulse_scaling and dispenser.selective on simulated forecourts: honest nozzles with
the emulator's hydraulics (full trigger at 0.92 x max, AR(1) noise, ramps, 10 mL display steps,
1 s flow profile, dead time between lift, trigger and hang-up), with and without scaling."""

import gc
import json
import math
import random

import pytest

from meterseal.fraud_rules.engine import Engine, Entry
from meterseal.fraud_rules.facts import StaticFacts, WorkOrder
from meterseal.fraud_rules import flow_drift
from meterseal.fraud_rules.flow_drift import (PeerValues, PeerView, PulseScaling, SelectiveFlow,
                                              steady_flow_lpm, tail_flow_lpm)
from meterseal.fraud_rules.params import load_params
from meterseal.fraud_rules.stats import median
from meterseal.hil.plain_records import Chain, event_body, nozzle, sale_body

DAY_MS = 86400000
START_MS = 1767225600000  # 2026-01-01 00:00 UTC
STEP_S = 0.1
PRICE = 7890000


def simulate_sale(rng, max_lpm, target_ml, gain=0.0, gain_above_ml=None, meter_error=0.0):
    """(duration_ms, profile, displayed volume) of one full-trigger draw. ``gain``: reported
    volume / true volume - 1 (applied past ``gain_above_ml`` of true volume when given)."""
    demand = 0.92 * max_lpm
    dead_s = rng.uniform(3, 10)
    flow = noise = true_ml = reported = 0.0
    t = dead_s
    readings = []  # (elapsed_ms, displayed cumulative mL)
    gauss, rise, to_ml = rng.gauss, max_lpm / 2.0 * STEP_S, 1000 / 60 * STEP_S
    above = -1.0 if gain_above_ml is None else gain_above_ml
    while true_ml < target_ml:
        flow = min(demand, flow + rise)
        noise = 0.8 * noise + gauss(0.0, 0.015)
        ml = min(min(max_lpm, flow * (1 + noise)) * to_ml, target_ml - true_ml)
        scale = 1 + gain if true_ml > above else 1.0
        true_ml += ml
        reported += ml * scale * (1 + meter_error)
        t += STEP_S
        readings.append((int(t * 1000), int(reported // 10 * 10)))
    duration_ms = int((t + 3.0) * 1000)
    profile = [0] * (duration_ms // 1000 + 1)
    before = 0
    for elapsed, shown in readings:
        profile[elapsed // 1000] += shown - before
        before = shown
    interval = 1000
    while len(profile) > 120:
        profile = [sum(profile[i:i + 2]) for i in range(0, len(profile), 2)]
        interval *= 2
    return duration_ms, interval, profile, before


def forecourt(seed, days=4, sales_per_day=40, nozzles=((80, 1), (81, 1), (82, 1)),
              cheat=None, drift=None, start_day=0, gateway_id="GW-FLOW"):
    """Records of one gateway: ``nozzles`` of grade 92, each with its own maximum flow (a few %
    apart). ``cheat``: {(address, nozzle): dict(gain=, gain_above_ml=, hours=(start, end),
    from_day=)}; ``drift``: {(address, nozzle): honest meter error}. Returns [(id, record)]."""
    rng = random.Random(seed)
    cheat, drift = cheat or {}, drift or {}
    max_flow = {n: 40.0 * (1 + rng.gauss(0, 0.02)) for n in nozzles}
    sales = []
    for day in range(start_day, start_day + days):
        for n in nozzles:
            for _ in range(sales_per_day):
                sales.append((START_MS + day * DAY_MS + rng.randrange(DAY_MS), n, day))
    sales.sort()
    chain = Chain(gateway_id, start_wall_ms=START_MS, validate=False)
    out = []
    for start, n, day in sales:
        target = rng.choice((rng.uniform(5000, 20000), rng.uniform(20000, 60000)))
        c = cheat.get(n)
        gain = 0.0
        if c and day >= c.get("from_day", 0):
            hours = c.get("hours")
            local = (start // 3600000 + 8) % 24
            if hours is None or hours[0] <= local < hours[1]:
                gain = c["gain"]
        duration, interval, profile, volume = simulate_sale(
            rng, max_flow[n], target, gain, c.get("gain_above_ml") if c else None,
            drift.get(n, 0.0))
        body = sale_body(grade=92, volume_ml=volume, unit_price_minor_per_kl=PRICE,
                         start_wall_time_ms=start, duration_ms=duration)
        body["flow_interval_ms"], body["flow_profile_ml"] = interval, profile
        out.append(chain.add("fuel.sale", body, device=nozzle(*n),
                             wall_time_ms=start + duration))
    return out


def run(records, detector, params=None, facts=None):
    engine = Engine(params or load_params(), facts or StaticFacts(), detectors=[detector])
    findings = []
    for record_id, record in records:
        findings.extend(engine.feed(record_id, record))
    return findings


def excess_of(finding):
    return finding.parameters["observed"]["excess"]


# --- the steady-flow measure ----------------------------------------------------------------

def test_steady_flow_ignores_ramps_creep_and_dead_time():
    body = {"flow_interval_ms": 1000,
            "flow_profile_ml": [0, 0, 300, 600, 610, 600, 620, 600, 610, 100, 100, 40, 0]}
    flow, intervals = steady_flow_lpm(body, 0.15)
    assert intervals == 6
    assert flow == pytest.approx((600 + 610 + 600 + 620 + 600 + 610) / 6 * 60 / 1000)
    assert steady_flow_lpm({"flow_interval_ms": 1000, "flow_profile_ml": []}, 0.15) == (None, 0)
    assert steady_flow_lpm({"flow_interval_ms": 1000, "flow_profile_ml": [0] * 9}, 0.15) == (
        None, 0)


def test_the_tail_starts_where_a_walk_from_the_first_interval_reaches_the_split():
    """The tail's first interval, found from the volume's share of the intervals, is the one a
    walk that adds interval by interval stops at: zero intervals (pauses), ramps, a split on an
    interval's end, before the first interval and past the last."""
    def walked(profile, split_ml):
        dispensed = 0
        for start, interval_ml in enumerate(profile, 1):
            dispensed += interval_ml
            if dispensed >= split_ml:
                return start
        return None

    rng = random.Random(11)
    for _ in range(3000):
        profile = [rng.choice((0, 0, 10, 300, 600, 610, 620, 3000))
                   for _ in range(rng.randint(0, 40))]
        for split_ml in (-1, 0, 1, 600, 1210, sum(profile), sum(profile) + 1,
                         rng.randint(1, 25000)):
            assert flow_drift._tail_start(profile, split_ml) == walked(profile, split_ml)
    body = {"flow_interval_ms": 1000,
            "flow_profile_ml": [300, 600, 0, 600, 600, 610, 700, 700, 710, 700, 690, 50]}
    # 4 L is reached within the eighth interval (4110 mL after it): the tail is the ninth on,
    # without the last.
    assert flow_drift._tail_start(body["flow_profile_ml"], 4000) == 8
    assert tail_flow_lpm(body, 4000, 0.15) == (pytest.approx(700 * 60 / 1000), 3)


def test_hostile_sales_do_not_crash():
    chain = Chain("GW-H", start_wall_ms=START_MS)
    bodies = [sale_body(grade=92, volume_ml=0, unit_price_minor_per_kl=0,
                        start_wall_time_ms=START_MS, duration_ms=0),
              sale_body(grade=92, volume_ml=10 ** 9 - 1, unit_price_minor_per_kl=0,
                        start_wall_time_ms=START_MS, duration_ms=1),
              {**sale_body(grade=92, volume_ml=30000, unit_price_minor_per_kl=PRICE,
                           start_wall_time_ms=START_MS, duration_ms=1000),
               "duration_ms": 2 ** 32 - 1, "flow_interval_ms": 3600000,
               "flow_profile_ml": [10 ** 9 - 1] * 120},
              sale_body(grade=92, volume_ml=30000, unit_price_minor_per_kl=PRICE,
                        start_wall_time_ms=START_MS, duration_ms=60000, flow_profile_ml=[])]
    records = [chain.add("fuel.sale", b, device=nozzle(80, 1), wall_time_ms=START_MS + i)
               for i, b in enumerate(bodies)]
    assert run(records, PulseScaling) == []
    assert run(records, SelectiveFlow) == []


# --- dispenser.pulse_scaling ----------------------------------------------------------------

def test_honest_forecourt_with_drift_inside_mpe_gives_no_finding():
    records = forecourt(1, days=4, drift={(80, 1): 0.003, (81, 1): -0.003})
    assert run(records, PulseScaling) == []
    assert run(records, SelectiveFlow) == []


def test_three_percent_scaling_after_the_baseline_is_caught_by_cusum():
    # The baseline is the first 60 qualifying sales: a day and a half at 40 sales a day.
    records = forecourt(2, days=4, cheat={(81, 1): {"gain": 0.03, "from_day": 2}})
    findings = run(records, PulseScaling)
    assert len(findings) == 1  # one finding for a sustained cheat, not one per sale
    f = findings[0]
    assert (f.rule, f.severity, f.device_ref) == ("dispenser.pulse_scaling", "high", "81/1")
    assert f.parameters["observed"]["reference"] == "baseline"
    assert excess_of(f) == pytest.approx(0.03, abs=0.01)
    assert f.score == pytest.approx(min(1.0, excess_of(f) / 0.10), abs=0.001)
    by_id = dict(records)
    seqs = sorted(by_id[rid]["seq"] for rid in f.evidence_record_ids)
    assert all(by_id[rid]["device"] == nozzle(81, 1) for rid in f.evidence_record_ids)
    assert by_id[f.evidence_record_ids[0]]["wall_time_ms"] >= START_MS + 2 * DAY_MS
    assert f"seq {seqs[0]}..{seqs[-1]}" in f.explanation_en
    assert f"序号 {seqs[0]}..{seqs[-1]}" in f.explanation_zh
    assert percent_text(excess_of(f)) in f.explanation_en


def percent_text(ratio):
    return f"{ratio * 100:+.2f} %"


def test_boundary_mpe_drift_is_silent_and_one_percent_fires():
    # 0.3 % (the MPE) appearing after the baseline: the sums climb only past 0.3 % + 0.2 sigma.
    assert run(forecourt(3, days=5, drift={(80, 1): 0.0},
                         cheat={(80, 1): {"gain": 0.003, "from_day": 2}}), PulseScaling) == []
    # 1 %, the documented CUSUM size: found within the day after the baseline.
    findings = run(forecourt(3, days=4, cheat={(80, 1): {"gain": 0.01, "from_day": 2}}),
                   PulseScaling)
    assert [(f.device_ref, f.parameters["observed"]["reference"]) for f in findings] == [
        ("80/1", "baseline")]
    assert findings[0].at_ms < START_MS + 3 * DAY_MS
    assert excess_of(findings[0]) == pytest.approx(0.01, abs=0.006)


def test_authorised_calibration_restarts_the_baseline_and_unauthorised_does_not():
    # A 3 % K-factor change on dispenser 81 at the start of day 2, announced by its event.
    sales = forecourt(2, days=5, cheat={(81, 1): {"gain": 0.03, "from_day": 2}})
    at_ms = START_MS + 2 * DAY_MS
    event = (10 ** 6, {**sales[0][1], "kind": "event", "wall_time_ms": at_ms,
                       "device": {"dispenser_address": 81},
                       "body": event_body("calibration", old_k_factor_pulses_per_kl=100000,
                                          new_k_factor_pulses_per_kl=97087,
                                          calibration_count=1)})
    merged = sorted(sales + [event], key=lambda r: r[1]["wall_time_ms"])
    records = [(rid, {**rec, "seq": i}) for i, (rid, rec) in enumerate(merged)]
    order = WorkOrder("WO-7", "SITE-A", "GW-FLOW", "81", ("calibration",), at_ms - 3600000,
                      at_ms + 3600000)
    authorised = StaticFacts(sites={"GW-FLOW": "SITE-A"}, work_orders=[order])
    assert run(records, PulseScaling, facts=authorised) == []
    # The same change with no work order is measured against the flow before it.
    unauthorised = StaticFacts(sites={"GW-FLOW": "SITE-A"})
    assert [f.device_ref for f in run(records, PulseScaling, facts=unauthorised)] == ["81/1"]
    # A work order for another dispenser's calibration does not restart this one's.
    elsewhere = StaticFacts(sites={"GW-FLOW": "SITE-A"}, work_orders=[
        WorkOrder("WO-8", "SITE-A", "GW-FLOW", "80", ("calibration",), 0, 2 * at_ms)])
    assert [f.device_ref for f in run(records, PulseScaling, facts=elsewhere)] == ["81/1"]


def test_cheat_from_the_first_record_is_caught_by_peers_only_when_large():
    big = run(forecourt(4, days=1, cheat={(82, 1): {"gain": 0.15}}), PulseScaling)
    assert [(f.device_ref, f.parameters["observed"]["reference"]) for f in big] == [
        ("82/1", "peers")]
    assert excess_of(big[0]) == pytest.approx(0.15, abs=0.05)  # plus the honest spread
    assert "peer nozzle(s) of grade 92" in big[0].explanation_en
    assert len(big[0].evidence_record_ids) == 20  # the window when it fired
    # 3 % (and 6 %) inside the nozzle's own baseline hide within the honest spread between
    # nozzles: the peer tolerance is 10 %.
    for gain in (0.03, 0.06):
        assert run(forecourt(4, days=1, cheat={(82, 1): {"gain": gain}}), PulseScaling) == []


def test_peers_of_another_class_are_no_reference():
    records = forecourt(5, days=1, nozzles=((80, 1), (81, 1)))
    # An HGV nozzle of the same grade with twice the flow: no finding on either side.
    chain_hgv = [(rid, {**rec, "device": nozzle(90, 1), "body": {
        **rec["body"], "flow_profile_ml": [v * 2 for v in rec["body"]["flow_profile_ml"]]}})
        for rid, rec in records if rec["device"] == nozzle(80, 1)]
    merged = sorted(records + chain_hgv, key=lambda r: r[1]["wall_time_ms"])
    merged = [(rid, {**rec, "seq": i}) for i, (rid, rec) in enumerate(merged)]
    assert run(merged, PulseScaling) == []


# --- dispenser.selective ---------------------------------------------------------------------

def test_size_selective_cheat_is_found_and_named():
    records = forecourt(6, days=3, cheat={(80, 1): {"gain": 0.03, "gain_above_ml": 20000}})
    findings = run(records, SelectiveFlow)
    assert [f.device_ref for f in findings] == ["80/1"]
    f = findings[0]
    assert (f.rule, f.severity) == ("dispenser.selective", "high")
    assert f.parameters["observed"]["split"] == "draws above 20 L (the part past 20 L)"
    assert excess_of(f) == pytest.approx(0.03, abs=0.01)
    assert "draws above 20 L" in f.explanation_en and "20 L 以上" in f.explanation_zh
    by_id = dict(records)
    assert all(by_id[rid]["body"]["volume_ml"] >= 20000 for rid in f.evidence_record_ids)
    # pulse_scaling, if it sees the diluted whole-sale excess at all, blames no other nozzle.
    assert all(g.device_ref == "80/1" for g in run(records, PulseScaling))


def test_time_of_day_cheat_is_found_with_its_hours():
    # Night shift 00-06 local (UTC+8), 3 %.
    records = forecourt(7, days=4, cheat={(81, 1): {"gain": 0.03, "hours": (0, 6)}})
    findings = run(records, SelectiveFlow)
    assert [f.device_ref for f in findings] == ["81/1"]
    f = findings[0]
    assert f.parameters["observed"]["split"] == "sales between 00:00-06:00 (UTC+8)"
    assert excess_of(f) == pytest.approx(0.03, abs=0.01)
    by_id = dict(records)
    hours = {(by_id[rid]["wall_time_ms"] // 3600000 + 8) % 24 for rid in f.evidence_record_ids}
    assert hours <= set(range(6))


def test_selective_boundary_half_percent_is_silent():
    records = forecourt(8, days=3, cheat={(80, 1): {"gain": 0.005, "gain_above_ml": 20000}})
    assert run(records, SelectiveFlow) == []


# --- checkpoint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("detector", [PulseScaling, SelectiveFlow])
def test_checkpoint_round_trip_gives_the_same_findings(detector):
    cheat = {(81, 1): {"gain": 0.03, "from_day": 2, "gain_above_ml": 20000}}
    records = forecourt(9, days=4, cheat=cheat)
    params = load_params()
    whole = run(records, detector, params)
    assert whole
    half = len(records) // 2
    engine = Engine(params, StaticFacts(), detectors=[detector])
    first = [f for rid, rec in records[:half] for f in engine.feed(rid, rec)]
    saved = json.loads(json.dumps(engine.checkpoint()))
    resumed = Engine(params, StaticFacts(), checkpoint=saved, detectors=[detector])
    second = [f for rid, rec in records[half:] for f in resumed.feed(rid, rec)]
    assert first + second == whole


def test_sigma_of_one_sale_is_as_documented():
    rng = random.Random(10)
    flows = []
    for _ in range(200):
        duration, interval, profile, volume = simulate_sale(rng, 40.0, 30000)
        flows.append(steady_flow_lpm({"flow_interval_ms": interval,
                                      "flow_profile_ml": profile}, 0.15)[0])
    mean = sum(flows) / len(flows)
    sigma = math.sqrt(sum((f - mean) ** 2 for f in flows) / (len(flows) - 1)) / mean
    assert 0.002 < sigma < 0.006


def test_peer_index_stays_what_the_state_holds():
    """PeerValues.publish keeps the index equal to one built afresh from the state, and a
    nozzle's peers are the others of its grade, else its dispenser's siblings."""
    index = PeerValues("median", lambda n: n.get("median"))
    nozzles = {f"G|{a}/1": {"grade": 92, "dispenser": f"G|{a}"} for a in (80, 81, 82, 83)}
    nozzles["G|80/2"] = {"grade": 95, "dispenser": "G|80"}
    rng = random.Random(7)
    for _ in range(200):
        key = rng.choice(sorted(nozzles))
        index.publish("S", nozzles, key, nozzles[key], round(rng.uniform(30, 40), 3))
        fresh = PeerValues("median", lambda n: n.get("median"))
        for key, nozzle in nozzles.items():
            others = sorted(n["median"] for k, n in nozzles.items() if k != key and "median" in n
                            and n["grade"] == nozzle["grade"])
            assert list(index.of_peers("S", nozzles, key, nozzle)) == list(fresh.of_peers(
                "S", nozzles, key, nozzle))
            if nozzle["grade"] == 92:
                assert list(index.of_peers("S", nozzles, key, nozzle)) == others
    # The only grade-95 nozzle is compared with its dispenser's sibling, 80/1.
    assert list(index.of_peers("S", nozzles, "G|80/2", nozzles["G|80/2"])) == [
        nozzles["G|80/1"]["median"]]
    # A value changed behind the index's back is noticed at the next publish: rebuilt.
    nozzles["G|81/1"]["median"] = 99.0
    index.publish("S", nozzles, "G|81/1", nozzles["G|81/1"], 35.5)
    assert 35.5 in list(index.of_peers("S", nozzles, "G|80/1", nozzles["G|80/1"]))
    assert 99.0 not in list(index.of_peers("S", nozzles, "G|80/1", nozzles["G|80/1"]))


def test_a_peer_view_reads_what_a_copy_without_the_own_value_would_give():
    """PeerView's count and median, whole and within bounds, equal those of a copy of the list
    with the own value removed (stats.median), for every own value and bounds, ties included."""
    rng = random.Random(3)
    for _ in range(300):
        values = sorted(rng.choice((30.0, 31.5, 33.0)) if rng.random() < 0.3
                        else round(rng.uniform(28, 36), 2) for _ in range(rng.randint(1, 12)))
        own = rng.choice(values + [None])
        copy = list(values)
        if own is not None:
            copy.remove(own)
        view = PeerView(values, None if own is None else values.index(own))
        assert list(view) == copy and len(view) == len(copy)
        if copy:
            assert view.median() == median(copy)
        low = rng.uniform(27, 35)
        high = low + rng.uniform(0, 4)
        inside = [v for v in copy if low <= v <= high]
        within = view.within(low, high)
        assert list(within) == inside and len(within) == len(inside)
        if inside:
            assert within.median() == median(inside)
        else:
            with pytest.raises(ValueError):
                within.median()


class _CountedWrites(dict):
    """Entry.shared that records its writes: each is one measurement of the sale."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)


def test_a_sale_is_measured_once_for_both_flow_detectors():
    # Through Entry.shared rather than by patching steady_flow_lpm: compiled detectors
    # (fraud_rules/native.py) call it directly, not through the module's namespace.
    params = load_params()
    p = params.section("dispenser.selective")
    detectors = [PulseScaling(params, StaticFacts()), SelectiveFlow(params, StaticFacts())]
    states = [{}, {}]
    measured = []
    for record_id, record in forecourt(seed=3, days=1, sales_per_day=10):
        entry = Entry(record_id, "S", record)
        entry.shared = _CountedWrites()
        for detector, state in zip(detectors, states):
            detector.feed(entry, state)
        assert len(entry.shared.writes) == 1, entry.shared.writes
        flow = entry.shared[entry.shared.writes[0]]
        steady, intervals = steady_flow_lpm(record["body"], p["steady_band"])
        if record["body"]["volume_ml"] >= p["min_volume_ml"] and intervals >= p["min_steady_intervals"]:
            assert flow == steady
            measured.append(flow)
        else:
            assert flow is None
    assert len(measured) >= 20


def test_the_windows_sales_leave_the_garbage_collector_nothing_to_walk():
    """A host keeps thousands of nozzles' windows, and each full collection walks every object
    the collector tracks. A sale in a window is a tuple of numbers, which a collection stops
    tracking (a list it would track for good)."""
    engine = Engine(load_params(), StaticFacts(), detectors=[PulseScaling, SelectiveFlow])
    for record_id, record in forecourt(seed=5, days=4, nozzles=((80, 1),)):
        engine.feed(record_id, record)
    gc.collect()
    (site,) = engine.sites.values()
    selective = site["dispenser.selective"]["nozzles"]["GW-FLOW|80/1"]
    windows = [*selective["size"].values(), *selective["hours"].values()]
    sales = [row for window in windows for row in window["rows"]]
    sales += site["dispenser.pulse_scaling"]["nozzles"]["GW-FLOW|80/1"]["window_ids"]
    assert len(sales) > 200
    assert [row for row in sales if gc.is_tracked(row)] == []


def model_fleet(gain, honest_sites=4, days=3):
    """Forecourts of one dispenser model at sites S1.. (one gateway each), the last with every
    nozzle scaled by ``gain`` from its first record; their facts, with and without the model."""
    sites, models, records = {}, {}, []
    for number in range(1, honest_sites + 2):
        gateway_id = f"GW-{number}"
        sites[gateway_id] = f"S{number}"
        models.update({(gateway_id, str(address)): "TQ-2" for address in (80, 81, 82)})
        scaled = {(address, 1): {"gain": gain} for address in (80, 81, 82)}
        records += forecourt(100 + number, days=days, gateway_id=gateway_id,
                             cheat=scaled if number == honest_sites + 1 else None)
    records.sort(key=lambda item: item[1]["wall_time_ms"])
    return records, StaticFacts(sites=sites, models=models), StaticFacts(sites=sites)


def test_a_site_scaled_on_every_nozzle_from_the_first_record_is_seen_by_model_peers_only():
    records, with_models, without = model_fleet(gain=0.25)
    findings = run(records, PulseScaling, facts=with_models)
    assert {(f.site_id, f.parameters["observed"]["reference"]) for f in findings} == {
        ("S5", "model")}
    assert len(findings) == 1  # one finding per site and model until it is back in tolerance
    observed = findings[0].parameters["observed"]
    assert observed["model"] == "TQ-2" and observed["other_sites"] == 4
    assert 1 <= observed["site_nozzles"] <= 3 and 0.2 < observed["excess"] < 0.3
    assert "dispenser model TQ-2" in findings[0].explanation_en
    assert "TQ-2 型加油机" in findings[0].explanation_zh
    # Without the registry's models the same records raise nothing: the cheat is in every
    # nozzle's baseline and in all of the site's peers.
    assert run(records, PulseScaling, facts=without) == []


def test_model_peers_are_silent_inside_their_tolerance():
    records, with_models, _ = model_fleet(gain=0.10)
    assert run(records, PulseScaling, facts=with_models) == []


def test_model_peers_survive_a_checkpoint():
    records, facts, _ = model_fleet(gain=0.25)
    params = load_params()
    whole = run(records, PulseScaling, params, facts)
    half = len(records) // 2
    engine = Engine(params, facts, detectors=[PulseScaling])
    first = [f for rid, rec in records[:half] for f in engine.feed(rid, rec)]
    saved = json.loads(json.dumps(engine.checkpoint()))
    assert saved["fleet"]["dispenser.pulse_scaling"]["models"]["TQ-2"]
    resumed = Engine(params, facts, checkpoint=saved, detectors=[PulseScaling])
    second = [f for rid, rec in records[half:] for f in resumed.feed(rid, rec)]
    assert first + second == whole
