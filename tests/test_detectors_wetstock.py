"""tank.wetstock: daily reconciliation of a tank gauge against the metered sales, the cumulative
slope test, the per-nozzle attribution and the single-day gross check."""

import json
import random

from meterseal.fraud_rules import Engine, StaticFacts, load_params
from meterseal.fraud_rules.wetstock import Wetstock
from meterseal.hil.plain_records import (Chain, delivery_body, inventory_body, nozzle,
                                         sale_body, tank)

SITE = "S1"
HOUR = 3_600_000
# 2026-01-01 00:00 local (UTC+8) = 2025-12-31 16:00 UTC
START = 1767225600000 - 8 * HOUR
FACTS = StaticFacts(sites={"GW-D": SITE, "GW-T": SITE}, tanks={(SITE, 92): 1})
PRICE = 750000


def simulate(days, gains=(0.0, 0.0), seed=1, tc=True, daily_litres=6000, validate=False,
             start_stock_l=40000, leak_l_per_day=0.0, honest_days=()):
    """A site whose tank 1 (grade 92) feeds nozzles 80/1 and 80/2: the gauge reads at 2 minutes
    past each hour with ±0.05 % noise and a daily temperature cycle; ``gains`` are the nozzles'
    over-registrations (metered = dispensed × (1 + g)); a 20,000 L delivery when the stock falls
    below 12,000 L; the nozzles are honest on the local days in ``honest_days``. Returns the records (record_id, record) in time order."""
    rng = random.Random(seed)
    gauge, pumps = Chain("GW-T", START, validate), Chain("GW-D", START, validate)
    stock = start_stock_l * 1000.0
    out = []
    for hour in range(days * 24 + 1):
        t = START + hour * HOUR
        local = hour % 24
        busy = 0.0 if local < 6 else (1.6 if 7 <= local <= 9 or 17 <= local <= 19 else 1.0)
        for index, gain in enumerate(gains):
            gain = 0.0 if hour // 24 in honest_days else gain
            count = rng.randint(0, round(6 * busy)) if busy else 0
            for _ in range(count):
                metered = int(rng.uniform(0.4, 1.6) * daily_litres / 80 * 1000)
                end = t + rng.randint(3 * 60_000, 58 * 60_000)
                stock -= metered / (1 + gain)
                out.append((end, pumps, "fuel.sale", sale_body(
                    grade=92, volume_ml=metered, unit_price_minor_per_kl=PRICE,
                    start_wall_time_ms=end - 60_000, duration_ms=60_000),
                    nozzle(80, index + 1)))
        stock -= leak_l_per_day * 1000 / 24
        if stock < 12_000_000 and local == 13:
            before = stock
            stock += 20_000_000
            end = t + 30 * 60_000
            out.append((end, gauge, "tank.delivery", delivery_body(
                start_wall_time_ms=t + 10 * 60_000, end_wall_time_ms=end,
                start_volume_ml=int(before), end_volume_ml=int(stock),
                start_tc_volume_ml=int(before) if tc else None,
                end_tc_volume_ml=int(stock) if tc else None), tank(1)))
        read_at = t + 2 * 60_000 + HOUR
        temperature = 15 + 5 * ((local - 6) % 24) / 24
        measured = stock * (1 + rng.uniform(-0.0005, 0.0005))
        body = inventory_body(volume_ml=int(measured * (1 + 0.0012 * (temperature - 15))),
                              tc_volume_ml=int(measured) if tc else None,
                              temperature_centi_c=int(temperature * 100))
        out.append((read_at, gauge, "tank.inventory", body, tank(1)))
    out.sort(key=lambda item: item[0])
    return [chain.add(kind, body, device=device, wall_time_ms=at)
            for at, chain, kind, body, device in out]


def run(records, params=None, split=None):
    params = params or load_params()
    engine = Engine(params, FACTS, detectors=[Wetstock])
    findings = []
    for index, (record_id, record) in enumerate(records):
        if index == split:
            saved = json.loads(json.dumps(engine.checkpoint()))
            engine = Engine(params, FACTS, checkpoint=saved, detectors=[Wetstock])
        findings.extend(engine.feed(record_id, record))
    return findings


def day_of(finding):
    return (finding.at_ms - START) // (24 * HOUR)


def test_honest_site_fourteen_days_no_finding():
    for seed in range(6):
        rng = random.Random(100 + seed)
        gains = (rng.uniform(-0.003, 0.003), rng.uniform(-0.003, 0.003))
        assert run(simulate(14, gains, seed=seed)) == [], (seed, gains)


def test_over_registering_nozzle_fires_high_with_share_and_suspect():
    records = simulate(14, gains=(0.03, 0.0), seed=3, validate=True)
    findings = run(records)
    assert [f.rule for f in findings] == ["tank.wetstock"]
    finding = findings[0]
    assert finding.severity == "high" and finding.device_ref == "tank/1"
    # fires on the close of day 4, the first day the fit is judged
    assert day_of(finding) == 4
    observed = finding.parameters["observed"]
    # half the sales on the 3 % nozzle: slope ≈ -0.03 / 1.03 / 2 ≈ -1.46 %
    assert -0.0165 < observed["slope"] < -0.0128
    assert observed["days"] == 4
    assert observed["suspect_nozzle"] == "80/1"
    assert -0.036 < observed["suspect_coefficient"] < -0.022
    assert "nozzle 80/1" in finding.explanation_en and "80/1" in finding.explanation_zh
    assert f"{observed['slope'] * 100:+.2f} %" in finding.explanation_en
    assert "temperature-compensated volume (" not in finding.explanation_en
    assert ("Over 4 days" in finding.explanation_en
            and f"{observed['cumulative_variance_ml'] / 1000:.2f} L against "
                f"{observed['cumulative_sales_ml'] / 1000:.2f} L" in finding.explanation_en)
    assert f"{observed['suspect_coefficient'] * 100:+.2f} %" in finding.explanation_en
    readings = {rid for rid, r in records if r["kind"] == "tank.inventory"}
    assert set(finding.evidence_record_ids) <= readings | {
        rid for rid, r in records if r["kind"] == "tank.delivery"}
    # 4 days: the 5 readings that open and close them, plus the day's delivery
    assert len(set(finding.evidence_record_ids) & readings) == 5
    for rid in finding.evidence_record_ids:
        assert str(rid) in finding.explanation_en


def test_boundary_around_the_slope_threshold():
    # both nozzles over-register: the tank slope is -g / (1 + g); threshold 0.5 %
    inside = run(simulate(14, gains=(0.0046, 0.0046), seed=5, daily_litres=12000))
    outside = run(simulate(14, gains=(0.0056, 0.0056), seed=5, daily_litres=12000))
    assert inside == []
    assert [f.rule for f in outside] == ["tank.wetstock"]
    assert -0.0062 < outside[0].parameters["observed"]["slope"] < -0.005


def test_deliveries_are_reconciled():
    records = simulate(14, seed=7)
    assert any(r["kind"] == "tank.delivery" for _, r in records)
    assert run(records) == []
    # the same stream without its delivery records: the refill shows as a huge negative day
    without = [(rid, r) for rid, r in records if r["kind"] != "tank.delivery"]
    findings = run(without)
    assert "tank.daily_variance" in [f.rule for f in findings]
    daily = [f for f in findings if f.rule == "tank.daily_variance"][0]
    assert daily.severity == "medium"
    assert daily.parameters["observed"]["variance_ml"] < -19_000_000


def test_missing_tc_volume_uses_volume_and_says_so():
    records = simulate(10, gains=(0.03, 0.0), seed=9, tc=False)
    findings = run(records)
    assert [f.rule for f in findings] == ["tank.wetstock"]
    assert "uncompensated volume on 4 of the 4 days" in findings[0].explanation_en
    assert findings[0].parameters["observed"]["uncompensated_days"] == 4


def test_steady_leak_is_a_medium_shortfall():
    findings = run(simulate(10, seed=11, leak_l_per_day=120.0))
    assert [(f.rule, f.severity) for f in findings] == [("tank.wetstock", "medium")]
    assert "shortfall" in findings[0].explanation_en
    assert findings[0].parameters["observed"]["slope"] > 0.005


def test_fires_once_per_tank_and_rearms_below_half_threshold(tmp_path):
    findings = run(simulate(20, gains=(0.03, 0.0), seed=13))
    assert [f.rule for f in findings] == ["tank.wetstock"]
    # a 5-day window: cheat, honest long enough for the slope to fall under 0.25 %, cheat again
    override = tmp_path / "params.toml"
    override.write_text('schema = 1\nversion = "t"\n["tank.wetstock"]\nwindow_days = 5\n')
    records = simulate(24, gains=(0.03, 0.0), seed=13, honest_days=range(8, 16))
    findings = run(records, params=load_params(override))
    assert [(f.rule, day_of(f)) for f in findings] == [("tank.wetstock", 4),
                                                        ("tank.wetstock", 19)]


def test_daily_variance_boundary():
    gauge = Chain("GW-T", START)
    pumps = Chain("GW-D", START)

    def day_stream(shortfall_ml):
        records = [gauge.add("tank.inventory", inventory_body(volume_ml=30_000_000,
                   tc_volume_ml=30_000_000), device=tank(1), wall_time_ms=START + HOUR)]
        end = START + 10 * HOUR
        records.append(pumps.add("fuel.sale", sale_body(
            grade=92, volume_ml=10_000_000, unit_price_minor_per_kl=PRICE,
            start_wall_time_ms=end - 60_000, duration_ms=60_000), device=nozzle(80, 1),
            wall_time_ms=end))
        closing = 20_000_000 - shortfall_ml
        records.append(gauge.add("tank.inventory", inventory_body(
            volume_ml=closing, tc_volume_ml=closing), device=tank(1),
            wall_time_ms=START + 25 * HOUR))
        return records

    # limit: 0.5 % of 10,000 L + 200 L = 250 L
    assert run(day_stream(249_000)) == []
    findings = run(day_stream(251_000))
    assert [(f.rule, f.severity) for f in findings] == [("tank.daily_variance", "medium")]
    assert findings[0].parameters["observed"] == {"variance_ml": 251_000,
                                                  "sales_ml": 10_000_000, "limit_ml": 250_000}
    assert "250.00 L" in findings[0].explanation_en and "251.00 L" in findings[0].explanation_en


def test_sale_of_unmapped_grade_is_not_reconciled():
    records = simulate(6, gains=(0.05, 0.05), seed=15)
    for _, record in records:
        if record["kind"] == "fuel.sale":
            record["body"]["grade"] = 95
    assert all(f.rule == "tank.daily_variance" for f in run(records))


def test_checkpoint_round_trip_gives_the_same_findings():
    records = simulate(8, gains=(0.03, 0.0), seed=17)
    whole = run(records)
    assert whole
    assert run(records, split=len(records) // 3) == whole
    assert run(records, split=len(records) // 3 * 2 + 1) == whole


def test_hostile_values_do_not_crash():
    gauge = Chain("GW-T", START)
    pumps = Chain("GW-D", START)
    records = [gauge.add("tank.inventory", inventory_body(volume_ml=0), device=tank(2),
                         wall_time_ms=START)]
    records.append(pumps.add("fuel.sale", sale_body(
        grade=92, volume_ml=0, unit_price_minor_per_kl=0, start_wall_time_ms=START,
        duration_ms=0), device=nozzle(80, 1), wall_time_ms=START + 1))
    for day in range(1, 7):
        records.append(gauge.add("tank.inventory", inventory_body(volume_ml=10 ** 10, mm_per_kl=0),
                                 device=tank(1), wall_time_ms=START + day * 24 * HOUR))
        records.append(gauge.add("tank.delivery", delivery_body(
            start_wall_time_ms=0, end_wall_time_ms=0, start_volume_ml=10 ** 10,
            end_volume_ml=0), device=tank(1), wall_time_ms=START + day * 24 * HOUR + 1))
    run(records)
