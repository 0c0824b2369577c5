"""tank.wetstock: daily reconciliation of a tank gauge against the metered sales, the cumulative
slope test, the per-nozzle attribution and the single-day gross check."""

import json
import random

from meterseal.fraud_rules import Engine, StaticFacts, WorkOrder, load_params
from meterseal.fraud_rules.wetstock import Wetstock
from meterseal.hil.plain_records import (Chain, delivery_body, event_body, inventory_body,
                                         nozzle, sale_body, tank)

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


def reading(gauge, at_ms, stock_ml):
    return gauge.add("tank.inventory", inventory_body(volume_ml=stock_ml, tc_volume_ml=stock_ml),
                     device=tank(1), wall_time_ms=at_ms)


def sale(pumps, end_ms, volume_ml):
    return pumps.add("fuel.sale", sale_body(
        grade=92, volume_ml=volume_ml, unit_price_minor_per_kl=PRICE,
        start_wall_time_ms=end_ms - 60_000, duration_ms=60_000), device=nozzle(80, 1),
        wall_time_ms=end_ms)


def delivery(gauge, end_ms, start_ml, end_ml):
    return gauge.add("tank.delivery", delivery_body(
        start_wall_time_ms=end_ms - 30 * 60_000, end_wall_time_ms=end_ms, start_volume_ml=start_ml,
        end_volume_ml=end_ml, start_tc_volume_ml=start_ml, end_tc_volume_ml=end_ml),
        device=tank(1), wall_time_ms=end_ms + 60_000)


def tank_state(engine):
    return engine.sites[SITE]["tank.wetstock"]["tanks"]["1"]


def test_daily_variance_boundary():
    gauge = Chain("GW-T", START)
    pumps = Chain("GW-D", START)

    def day_stream(shortfall_ml, settle_at=START + 31 * HOUR):
        # day 0 closes at the reading of 01:00 local on day 1 (START + 25 h); it is judged at
        # the first reading 6 h (settle_hours) later
        return [reading(gauge, START + HOUR, 30_000_000),
                sale(pumps, START + 10 * HOUR, 10_000_000),
                reading(gauge, START + 25 * HOUR, 20_000_000 - shortfall_ml),
                reading(gauge, settle_at, 20_000_000 - shortfall_ml)]

    # limit: 0.5 % of 10,000 L + 200 L = 250 L
    assert run(day_stream(249_000)) == []
    findings = run(day_stream(251_000))
    assert [(f.rule, f.severity) for f in findings] == [("tank.daily_variance", "medium")]
    assert findings[0].at_ms == START + 31 * HOUR
    assert findings[0].parameters["observed"] == {"variance_ml": 251_000,
                                                  "sales_ml": 10_000_000, "limit_ml": 250_000}
    assert "250.00 L" in findings[0].explanation_en and "251.00 L" in findings[0].explanation_en
    # 1 ms before the settling delay is over the day is not judged yet
    assert run(day_stream(251_000, settle_at=START + 31 * HOUR - 1)) == []


def service_day(test_draw_end_ms, seal_close_ms=None, authorised=True):
    """A 10,000 L day on which dispenser 80, its seal opened at 08:00 under a work order (or
    without one), draws 600 L into a proving can that go back into the tank; the findings."""
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    items = [reading(gauge, START + HOUR, 30_000_000),
             pumps.add("event", event_body("seal_open", seal="S80"),
                       device={"dispenser_address": 80}, wall_time_ms=START + 8 * HOUR)]
    if seal_close_ms is not None:
        items.append(pumps.add("event", event_body("seal_close", seal="S80"),
                               device={"dispenser_address": 80}, wall_time_ms=seal_close_ms))
    items += [sale(pumps, test_draw_end_ms, 600_000),
              sale(pumps, START + 14 * HOUR, 10_000_000),
              reading(gauge, START + 25 * HOUR, 20_000_000),
              reading(gauge, START + 31 * HOUR, 20_000_000)]
    orders = [WorkOrder("WO-80", SITE, "GW-D", "80", ("seal_open", "calibration"),
                        START + 7 * HOUR, START + 10 * HOUR)] if authorised else []
    facts = StaticFacts(sites=FACTS.sites, tanks=FACTS.tanks, work_orders=orders)
    engine = Engine(load_params(), facts, detectors=[Wetstock])
    return [f for record_id, record in items for f in engine.feed(record_id, record)]


def test_test_draws_under_authorised_service_are_not_taken_from_the_tank():
    assert service_day(START + 9 * HOUR) == []
    # Without the work order the 600 L are sales the tank never lost (limit 253 L).
    (finding,) = service_day(START + 9 * HOUR, authorised=False)
    assert finding.rule == "tank.daily_variance"
    assert finding.parameters["observed"]["variance_ml"] == -600_000


def test_the_service_window_ends_at_seal_close_or_after_four_hours():
    # Boundary: the window is 4 h (service_window_hours) from the seal_open at 08:00.
    assert service_day(START + 12 * HOUR) == []
    assert [f.rule for f in service_day(START + 12 * HOUR + 1)] == ["tank.daily_variance"]
    # A seal_close at 08:30 ends it: a 09:00 draw is a sale again.
    assert [f.rule for f in service_day(START + 9 * HOUR, seal_close_ms=START + 8 * HOUR
                                        + 30 * 60_000)] == ["tank.daily_variance"]


def late_delivery_stream(gauge, pumps, delivery_after_judging=False):
    """Day 0: 30,000 L, a 10,000 L sale at 10:00, a 5,000 L delivery ending 23:30 local whose
    record is fed after the reading that closes the day (00:00 local) and the next one, as the
    demo's gateway does; hourly readings continue to 08:00 local on day 1."""
    records = [reading(gauge, START + HOUR, 30_000_000),
               sale(pumps, START + 10 * HOUR, 10_000_000)]
    for hour in range(11, 24):
        records.append(reading(gauge, START + hour * HOUR, 20_000_000))
    records.append(reading(gauge, START + 24 * HOUR, 25_000_000))
    records.append(reading(gauge, START + 25 * HOUR, 25_000_000))
    late_end = START + 23 * HOUR + 30 * 60_000
    if not delivery_after_judging:
        records.append(delivery(gauge, late_end, 20_000_000, 25_000_000))
    for hour in range(26, 33):
        records.append(reading(gauge, START + hour * HOUR, 25_000_000))
    if delivery_after_judging:
        records.append(delivery(gauge, late_end, 20_000_000, 25_000_000))
    return records


def test_delivery_fed_after_the_closing_reading_is_booked_to_its_day():
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    records = late_delivery_stream(gauge, pumps)
    engine = Engine(load_params(), FACTS, detectors=[Wetstock])
    findings = [f for rid, record in records for f in engine.feed(rid, record)]
    assert findings == []
    judged = tank_state(engine)["days"]
    assert len(judged) == 1
    assert judged[0]["variance"] == 0 and judged[0]["sales"] == 10_000_000
    assert judged[0]["deliveries"] == [records[17][0]]
    # the open day 1 got nothing from it
    assert tank_state(engine)["day"]["variance"] == 0
    # the hourly interval that ended at 00:00 local took the delivery: attribution sees no
    # variance at all
    assert tank_state(engine)["attribution"]["yy"] == 0.0


def test_delivery_fed_after_its_day_was_judged_corrects_the_totals_only():
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    records = late_delivery_stream(gauge, pumps, delivery_after_judging=True)
    engine = Engine(load_params(), FACTS, detectors=[Wetstock])
    findings = [f for rid, record in records for f in engine.feed(rid, record)]
    # judged at 07:00 local on day 1 without the delivery: the alert stays raised
    assert [f.rule for f in findings] == ["tank.daily_variance"]
    assert findings[0].parameters["observed"]["variance_ml"] == -5_000_000
    day = tank_state(engine)["days"][0]
    assert day["variance"] == 0 and day["deliveries"] == [records[-1][0]]


def test_late_sale_is_booked_to_its_day_and_interval():
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    records = [reading(gauge, START + HOUR, 30_000_000)]
    for hour in range(2, 26):
        records.append(reading(gauge, START + hour * HOUR, 30_000_000 if hour < 10
                               else 20_000_000))
    # the sale ended at 09:30 local but its gateway uploads it after day 0 closed
    records.append(sale(pumps, START + 9 * HOUR + 30 * 60_000, 10_000_000))
    records.append(reading(gauge, START + 26 * HOUR, 20_000_000))
    engine = Engine(load_params(), FACTS, detectors=[Wetstock])
    findings = [f for rid, record in records for f in engine.feed(rid, record)]
    day = tank_state(engine)["unjudged"][0]
    assert day["variance"] == 0 and day["sales"] == 10_000_000
    late_interval = [i for i in day["intervals"] if i["close_ms"] == START + 10 * HOUR][0]
    assert late_interval == {"close_ms": START + 10 * HOUR, "sales": {"80/1": 10_000_000},
                             "variance": 0}
    assert all(i["variance"] == 0 for i in day["intervals"])
    saved = json.loads(json.dumps(engine.checkpoint()))
    engine = Engine(load_params(), FACTS, checkpoint=saved, detectors=[Wetstock])
    findings += engine.feed(*reading(gauge, START + 31 * HOUR, 20_000_000))
    assert findings == []
    assert tank_state(engine)["days"][0]["variance"] == 0


def clock_stream(gauge, pumps, console_behind_ms=None, stale_boundary=False):
    """Day 0 from 30,000 L, a 10,000 L sale at 10:00 local, hourly readings at 2 past the hour,
    a 5,000 L delivery from 00:10 to 00:40 local on day 1, readings on to 08:02 local. The
    readings carry the console's time ``console_behind_ms`` behind the gateway's (None: no
    console time), and the console times the delivery by the same clock. ``stale_boundary``: the
    reading that closes day 0 was read at 00:02 but stamped at 01:05, as a gateway held up
    between asking and stamping (the demo's clock leaping) would do."""
    def at(hour, minute=2):
        return START + hour * HOUR + minute * 60_000

    def read(stamp_ms, read_ms, stock_ml):
        body = inventory_body(volume_ml=stock_ml, tc_volume_ml=stock_ml)
        if console_behind_ms is not None:
            body["console_time_ms"] = (read_ms - console_behind_ms) // 60_000 * 60_000
        return gauge.add("tank.inventory", body, device=tank(1), wall_time_ms=stamp_ms)

    records = [read(at(1), at(1), 30_000_000), sale(pumps, at(10, 0), 10_000_000)]
    records += [read(at(hour), at(hour), 30_000_000 if hour < 10 else 20_000_000)
                for hour in range(2, 24)]
    if stale_boundary:
        records.append(read(at(25, 5), at(24), 20_000_000))
    else:
        records.append(read(at(24), at(24), 20_000_000))
    behind = console_behind_ms or 0
    records.append(gauge.add("tank.delivery", delivery_body(
        start_wall_time_ms=at(24, 10) - behind, end_wall_time_ms=at(24, 40) - behind,
        start_volume_ml=20_000_000, end_volume_ml=25_000_000, start_tc_volume_ml=20_000_000,
        end_tc_volume_ml=25_000_000), device=tank(1), wall_time_ms=at(25, 5) + 60_000))
    records += [read(at(hour), at(hour), 25_000_000) for hour in range(26 if stale_boundary
                                                                       else 25, 33)]
    return records


def test_a_console_clock_an_hour_slow_keeps_a_night_delivery_in_its_day():
    # The console times the delivery 23:10-23:40 on day 0; the level rose after day 0's
    # closing reading (00:02), so it belongs to day 1.
    gauge, pumps = Chain("GW-T", START, validate=True), Chain("GW-D", START)
    assert run(clock_stream(gauge, pumps, console_behind_ms=HOUR)) == []
    # The console's clock ignored, as before console times: day 0 holds a delivery its closing
    # level does not, 5,000 L lost.
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    slow = run(clock_stream(gauge, pumps, console_behind_ms=HOUR), params=_without_clock())
    assert [f.rule for f in slow] == ["tank.daily_variance"]
    assert slow[0].parameters["observed"]["variance_ml"] == 5_000_000
    # A console on time, with or without its times, is honest either way.
    for behind in (None, 0):
        gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
        assert run(clock_stream(gauge, pumps, console_behind_ms=behind)) == []


def _without_clock():
    """The packaged parameters, with the console's clock ignored up to a day."""
    params = load_params()
    params.section("tank.wetstock")["console_clock_tolerance_ms"] = 24 * HOUR
    return params


def test_a_reading_stamped_long_after_it_was_read_takes_the_console_time():
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    assert run(clock_stream(gauge, pumps, console_behind_ms=30_000, stale_boundary=True)) == []
    # Taken at its stamp, the reading closes day 0 after the delivery without holding it.
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    stale = run(clock_stream(gauge, pumps, console_behind_ms=30_000, stale_boundary=True),
                params=_without_clock())
    assert [f.rule for f in stale] == ["tank.daily_variance"]
    assert stale[0].parameters["observed"]["variance_ml"] == 5_000_000


def test_the_console_offset_moves_deliveries_only_beyond_its_tolerance():
    detector = Wetstock(load_params(), FACTS)
    tolerance = detector.params["console_clock_tolerance_ms"]
    assert detector._console_offset({"console_offsets": [tolerance] * 2}) == 0  # too few
    assert detector._console_offset({"console_offsets": [tolerance] * 3}) == 0
    assert detector._console_offset({"console_offsets": [tolerance + 1] * 3}) == tolerance + 1
    assert detector._console_offset({"console_offsets": [-tolerance - 1, 0, -HOUR]}) == (
        -tolerance - 1)  # the median: one odd reading does not decide
    assert detector._console_offset({}) == 0  # a checkpoint from before console times


def test_record_before_the_first_reading_is_dropped():
    gauge, pumps = Chain("GW-T", START), Chain("GW-D", START)
    records = [reading(gauge, START + 5 * HOUR, 30_000_000),
               sale(pumps, START + HOUR, 10_000_000),
               reading(gauge, START + 6 * HOUR, 30_000_000)]
    engine = Engine(load_params(), FACTS, detectors=[Wetstock])
    assert [f for rid, record in records for f in engine.feed(rid, record)] == []
    assert tank_state(engine)["day"]["sales"] == 0 and tank_state(engine)["pending"] == {}


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
