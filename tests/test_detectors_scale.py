"""Scale detectors (fraud_rules/scale.py): hand-built sequences that must fire, must not, and sit
at each threshold; a synthetic market of honest scales (no finding) with cheats on one scale."""

import json
import math
import random

import pytest

from meterseal.fraud_rules import Engine, StaticFacts, load_params
from meterseal.fraud_rules.scale import (DETECTORS, ScalePrice, ScaleStepGain, ScaleTareAbuse,
                                         ScaleUnstableSale, ScaleZero, expected_amount,
                                         in_service_mpe_mg)
from meterseal.fraud_rules.stats import chi_square_sf
from meterseal.hil.plain_records import Chain, scale, weighing_body

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
START_MS = 1767225600000 - 8 * HOUR_MS  # local midnight (UTC+8), 2026-01-01
D_MG = 5000
FACTS = StaticFacts({f"GW-S{i}": "MARKET" for i in range(8)})
# PLU: (median g, log-normal spread, weighed tare g or None, share of sales tared)
PLUS = {101: (500, 0.02, None, 0.0), 102: (250, 0.02, None, 0.0), 103: (1000, 0.015, 15, 0.9),
        201: (300, 0.4, 12, 0.6), 202: (800, 0.4, None, 0.0)}


class Market:
    """Scales S0..Sn of one site, each behind its own gateway GW-Si, fed to one engine."""

    def __init__(self, *detectors, checkpoint=None):
        self.detectors = list(detectors)
        self.engine = Engine(load_params(), FACTS, checkpoint=checkpoint,
                             detectors=self.detectors)
        self.chains = {}

    def sell(self, index, body, wall_ms=START_MS + 10 * HOUR_MS):
        chain = self.chains.setdefault(index, Chain(f"GW-S{index}", START_MS, validate=False))
        record_id, record = chain.add("scale.weighing", body, scale(f"S{index}"), wall_ms)
        return record_id, self.engine.feed(record_id, record)


def body(net_g, price=1280, **fields):
    return weighing_body(net_mg=int(net_g * 1000), unit_price_minor_per_kg=price, plu=101,
                         load_to_stable_ms=900, **fields)


def market_sales(days=5, scales=4, per_day=150, seed=1, cheat=None, tare_cheat=None):
    """(wall ms, scale index, body) in time order; local trading hours 07-21, d = e = 5 g.
    ``cheat(index, local hour, true net mg)`` gives the indicated net."""
    rng = random.Random(seed)
    sales = []
    for index in range(scales):
        for day in range(days):
            for _ in range(per_day):
                hour = rng.uniform(7, 21)
                plu = rng.choice(list(PLUS))
                median_g, spread, tare_g, tare_share = PLUS[plu]
                net = median_g * 1000 * math.exp(rng.gauss(0, spread))
                if cheat:
                    net = cheat(index, int(hour), net)
                net = max(D_MG, int(net / D_MG + 0.5) * D_MG)
                tare = 0
                if tare_g and rng.random() < tare_share:
                    tare = tare_g * 1000 + rng.choice((-1, 0, 0, 1)) * D_MG
                    if tare_cheat:
                        tare = tare_cheat(index, tare)
                sales.append((START_MS + day * DAY_MS + int(hour * HOUR_MS), index, weighing_body(
                    net_mg=net, unit_price_minor_per_kg=rng.choice((1280, 3990)), tare_mg=tare,
                    tare_mode="weighed" if tare else "none", plu=plu,
                    load_to_stable_ms=rng.randint(600, 1500))))
    sales.sort(key=lambda sale: sale[:2])
    return sales


def run(market, sales):
    findings = []
    for wall, index, sale_body in sales:
        findings += market.sell(index, sale_body, wall)[1]
    return findings


def as_records(sales):
    """The sales as (record id, record), built once so that two engines see the same ids."""
    chains = {}
    return [chains.setdefault(index, Chain(f"GW-S{index}", START_MS, validate=False)).add(
        "scale.weighing", sale_body, scale(f"S{index}"), wall) for wall, index, sale_body in sales]


def feed(engine, records):
    return [finding for record_id, record in records for finding in engine.feed(record_id, record)]


# --- scale.price ------------------------------------------------------------------------------

def test_price_rounds_half_up():
    assert expected_amount(1_234_000, 1280, 1) == 1580  # 1579.52
    assert expected_amount(5_000, 100, 1) == 1  # 0.5 rounds up
    assert expected_amount(1_234_000, 1280, 5) == 1580
    assert expected_amount(1_230_000, 1280, 5) == 1575  # 1574.4
    assert expected_amount(0, 1280, 1) == 0 and expected_amount(-5000, 1280, 1) == 0


def test_price_overcharge_fires_once_until_a_correct_sale():
    market = Market(ScalePrice)
    assert market.sell(0, body(1234))[1] == []
    rid, (finding,) = market.sell(0, body(1234, amount=1590))
    assert (finding.rule, finding.device_ref, finding.severity) == ("scale.price", "S0", "high")
    assert finding.evidence_record_ids == (rid,)
    assert "should cost 1580 minor units" in finding.explanation_en
    assert "it charged 1590, +10 (+0.63 %)" in finding.explanation_en
    assert "应收 1580 分" in finding.explanation_zh and "+10 分" in finding.explanation_zh
    assert finding.parameters["observed"]["difference_minor"] == 10
    assert market.sell(0, body(1234, amount=1600))[1] == []  # still the same open condition
    assert market.sell(1, body(1234, amount=1600))[1] != []  # another scale is its own case
    assert market.sell(0, body(1234))[1] == []  # a correct sale clears S0
    assert market.sell(0, body(1234, amount=1570))[1][0].severity == "medium"


def test_price_boundary_one_unit_under_is_low():
    market = Market(ScalePrice)
    # 5 g at 100 minor/kg is 0.5 minor: half up gives 1; charging 1 is right, 0 is one under.
    assert market.sell(0, body(5, price=100, amount=1))[1] == []
    (finding,) = market.sell(0, body(5, price=100, amount=0))[1]
    assert finding.severity == "low" and finding.parameters["observed"]["difference_minor"] == -1


# --- scale.zero -------------------------------------------------------------------------------

def test_zero_retained_base_fires_once_and_rearms():
    market = Market(ScaleZero)
    ids = []
    for n in range(5):
        rid, findings = market.sell(0, body(500, start_reading_mg=20_000, centre_of_zero=False))
        ids.append(rid)
        assert (findings == []) == (n < 4)
    (finding,) = findings
    assert (finding.rule, finding.severity) == ("scale.zero", "high")
    assert finding.evidence_record_ids == tuple(ids)
    assert "5 of its last 5 sales" in finding.explanation_en
    assert "median start reading 20 g = +4.0 e" in finding.explanation_en
    assert "起始示值中位数 20 g" in finding.explanation_zh
    assert market.sell(0, body(500, start_reading_mg=20_000, centre_of_zero=False))[1] == []
    for _ in range(10):
        assert market.sell(0, body(500))[1] == []
    for _ in range(4):  # the window still holds 6 off-zero starts: the first new one fires
        findings = market.sell(0, body(500, start_reading_mg=20_000, centre_of_zero=False))[1]
        if findings:
            break
    assert findings and findings[0].rule == "scale.zero"


def test_zero_occasional_off_zero_is_quiet():
    market = Market(ScaleZero)
    for n in range(40):
        off = n % 5 == 0  # 4 of every 20
        sale = body(500, start_reading_mg=15_000 if off else 0, centre_of_zero=not off)
        assert market.sell(0, sale)[1] == []


@pytest.mark.parametrize("start_mg, fires", [(1250, False), (1251, True), (-1251, True)])
def test_zero_centre_of_zero_band_boundary(start_mg, fires):
    market = Market(ScaleZero)
    findings = []
    for _ in range(5):
        findings += market.sell(0, body(500, start_reading_mg=start_mg))[1]
    assert bool(findings) == fires
    if fires:  # 1.251 g is under 1 e: medium
        assert findings[0].severity == "medium"
        assert findings[0].parameters["observed"]["median_start_mg"] == start_mg


def test_zero_beyond_zero_setting_range_is_high():
    market = Market(ScaleZero)
    for _ in range(5):
        findings = market.sell(0, body(500, start_reading_mg=-700_000, centre_of_zero=False))[1]
    (finding,) = findings
    assert finding.severity == "high"  # 700 g > 4 % of 15 kg
    assert "-4.67 % of Max; zero-setting can correct 600 g" in finding.explanation_en


# --- scale.unstable_sale ----------------------------------------------------------------------

def test_unstable_sales_over_allowance_fire():
    market = Market(ScaleUnstableSale)
    ids, fired = [], []
    for n in range(30):
        unstable = n in (3, 10, 20)
        sale = body(500, stable=not unstable)
        if unstable:
            del sale["load_to_stable_ms"]
        rid, findings = market.sell(0, sale)
        if unstable:
            ids.append(rid)
        assert (findings != []) == (n == 20)
        fired += findings
    assert market.sell(0, body(500, stable=False))[1] == []  # once until 50 clean sales
    (finding,) = fired
    assert (finding.rule, finding.severity) == ("scale.unstable_sale", "medium")
    assert finding.evidence_record_ids == tuple(ids)
    assert "3 of its last 21 sales" in finding.explanation_en
    assert "allowed: 2, so 1 over" in finding.explanation_en and "不稳定 3 笔" in finding.explanation_zh


def test_unstable_two_in_window_is_allowed():
    market = Market(ScaleUnstableSale)
    for n in range(100):
        assert market.sell(0, body(500, stable=n % 30 != 0 or n == 0))[1] == []


@pytest.mark.parametrize("settle_ms, fires", [(250, False), (249, True)])
def test_unstable_time_to_stable_against_peers(settle_ms, fires):
    market = Market(ScaleUnstableSale)
    for n in range(50):  # peers settle in 1 s: the site median, refreshed at the 50th
        market.sell(1 + n % 3, weighing_body(net_mg=500_000, unit_price_minor_per_kg=1280,
                                             load_to_stable_ms=1000))
    findings = []
    for _ in range(3):
        findings += market.sell(0, weighing_body(net_mg=500_000, unit_price_minor_per_kg=1280,
                                                 load_to_stable_ms=settle_ms))[1]
    assert bool(findings) == fires
    if fires:
        assert findings[0].parameters["observed"]["reasons"] == {"too_fast": 3}
        assert "under 250 ms" in findings[0].explanation_en


def test_unstable_scale_that_never_reports_settle_time_is_quiet():
    market = Market(ScaleUnstableSale)
    for _ in range(60):
        assert market.sell(0, weighing_body(net_mg=500_000, unit_price_minor_per_kg=1280))[1] == []


# --- scale.tare_abuse -------------------------------------------------------------------------

def _tare_sale(tare_mg, mode="weighed", plu=7):
    return weighing_body(net_mg=400_000, unit_price_minor_per_kg=1280, tare_mg=tare_mg,
                         tare_mode=mode, plu=plu)


@pytest.mark.parametrize("own_tare_mg, fires", [(10_000, True), (10_001, False)])
def test_tare_size_boundary_at_one_e(own_tare_mg, fires):
    market = Market(ScaleTareAbuse)
    for n in range(60):
        assert market.sell(1 + n % 3, _tare_sale(15_000))[1] == []
    findings, ids = [], []
    for _ in range(20):
        rid, new = market.sell(0, _tare_sale(own_tare_mg))
        ids.append(rid)
        findings += new
    assert bool(findings) == fires
    if fires:  # deficit 5 g = 1 e exactly
        (finding,) = findings
        assert (finding.rule, finding.device_ref, finding.severity) == (
            "scale.tare_abuse", "S0", "high")
        assert finding.evidence_record_ids == tuple(ids)
        assert "expected median 15 g, observed 10 g over 20 tares (60 peer tares), 5 g less " \
               "(-33.33 %" in finding.explanation_en
        assert "少 5 g" in finding.explanation_zh


def test_tare_frequency_far_above_peers_is_low():
    market = Market(ScaleTareAbuse)
    for n in range(90):
        market.sell(1 + n % 3, _tare_sale(0, mode="none"))
    findings = []
    for _ in range(30):
        findings += market.sell(0, _tare_sale(20_000, mode="preset"))[1]
    (finding,) = findings
    assert finding.severity == "low" and finding.parameters["observed"]["own_rate"] == 1.0
    assert "expected 0% of sales, observed 100% of its last 30" in finding.explanation_en


def test_tare_abuse_in_market_only_on_the_cheating_scale():
    honest = run(Market(ScaleTareAbuse), market_sales(days=3))
    assert honest == []
    cheat = run(Market(ScaleTareAbuse), market_sales(
        days=3, tare_cheat=lambda index, tare: max(0, tare - 10_000) if index == 2 else tare))
    assert {(f.rule, f.device_ref) for f in cheat} == {("scale.tare_abuse", "S2")}
    assert len(cheat) == 1  # one PLU fires; quiet for the scale while its tares stay short


# --- scale.step_gain --------------------------------------------------------------------------

def _constant_market(own_net_g, sales=30):
    """Three peers sell PLU 101 at exactly 500 g; then S0 sells it at ``own_net_g``."""
    market = Market(ScaleStepGain)
    for n in range(60):
        market.sell(1 + n % 3, body(500))
    return [market.sell(0, body(own_net_g))[1] for _ in range(sales)]


def test_step_gain_cusum_crosses_h_at_the_predicted_sale():
    # σ floored at the 2 % target, w = 1; allowance 0.5 × in-service MPE (5 g) = 2.5 g = 0.5 %:
    # k = 0.25 + 0.5 = 0.75. 520 g: z = ln(1.04)/0.02 = 1.961, +1.211 a sale: h = 10 at the 9th.
    assert in_service_mpe_mg(500_000, 5000) == 5000
    per_sale = _constant_market(520)
    assert [n for n, findings in enumerate(per_sale, 1) if findings] == [9]
    (finding,) = per_sale[8]
    assert (finding.rule, finding.severity) == ("scale.step_gain", "high")
    observed = finding.parameters["observed"]
    assert (observed["offset_mg"], observed["model"], observed["sales"]) == (20_000, "either", 9)
    assert ("expected (peer median) weight was 500 g and the observed 520 g"
            in finding.explanation_en)
    assert "about 20 g or +4.00 %" in finding.explanation_en
    assert "期望重量（同类秤中位数）为 500 g，实为 520 g" in finding.explanation_zh
    assert len(finding.evidence_record_ids) == 9


def test_step_gain_boundary_inside_the_reference_is_quiet():
    # 507.5 g: z = 0.744 < k = 0.75, the sums never grow; 510 g: z = 0.990, +0.240 a sale,
    # crosses h = 10 at the 42nd.
    assert not any(_constant_market(507.5, sales=80))
    assert [n for n, f in enumerate(_constant_market(510, sales=80), 1) if f] == [42]


def test_step_gain_lighter_is_medium():
    (finding,) = next(f for f in _constant_market(480) if f)
    assert finding.severity == "medium" and "lighter" in finding.explanation_en


def test_honest_market_no_finding_from_any_scale_detector():
    findings = run(Market(*DETECTORS), market_sales(days=5, seed=7))
    assert findings == []


def test_offset_20g_in_the_morning_on_one_scale():
    sales = market_sales(days=5, seed=3, cheat=lambda index, hour, net:
                         net + 20_000 if index == 1 and 7 <= hour < 11 else net)
    findings = run(Market(*DETECTORS), sales)
    assert findings and {(f.rule, f.device_ref) for f in findings} == {("scale.step_gain", "S1")}
    first = findings[0]
    assert first.at_ms - START_MS < 3 * DAY_MS
    assert "local hours 06-12" in first.explanation_en
    assert 15_000 <= first.parameters["observed"]["offset_mg"] <= 25_000
    days = [(f.at_ms - START_MS) // DAY_MS for f in findings]
    assert len(days) == len(set(days))  # at most one a local day


def test_gain_2_percent_fires():
    sales = market_sales(days=4, seed=5, cheat=lambda index, hour, net:
                         net * 1.02 if index == 1 else net)
    findings = run(Market(ScaleStepGain), sales)
    assert findings and {f.device_ref for f in findings} == {"S1"}
    observed = findings[0].parameters["observed"]
    assert 0.015 <= observed["gain"] <= 0.03 and observed["stream"] == "all"


def test_terminal_digit_heaping():
    rng = random.Random(11)
    market = Market(ScaleStepGain)
    findings = []
    for n in range(800):
        index = n % 4
        net = 300_000 * math.exp(rng.gauss(0, 0.4))
        step = 50_000 if index == 0 else D_MG  # S0 shows only whole 50 g: last digit 0
        sale = weighing_body(net_mg=max(step, round(net / step) * step),
                             unit_price_minor_per_kg=1280, plu=201)
        findings += market.sell(index, sale)[1]
    (finding,) = findings
    assert (finding.rule, finding.device_ref, finding.severity) == (
        "scale.digit_heaping", "S0", "medium")
    observed = finding.parameters["observed"]
    assert observed["counts"][0] == observed["n"] and observed["p_value"] < 1e-6
    assert "expected 10 of each digit" in finding.explanation_en


def test_chi_square_tail():
    assert chi_square_sf(16.92, 9) == pytest.approx(0.05, rel=0.05)
    assert chi_square_sf(27.88, 9) == pytest.approx(0.001, rel=0.1)
    assert chi_square_sf(0, 9) == 1.0


# --- every detector ---------------------------------------------------------------------------

def test_checkpoint_round_trip_gives_the_same_findings():
    sales = market_sales(days=3, seed=9, cheat=lambda index, hour, net:
                         net * 1.03 if index == 2 else net,
                         tare_cheat=lambda index, tare:
                         max(0, tare - 10_000) if index == 1 else tare)
    records = as_records(sales)
    whole = feed(Engine(load_params(), FACTS, detectors=DETECTORS), records)
    assert {f.rule for f in whole} == {"scale.step_gain", "scale.tare_abuse"}
    first = Engine(load_params(), FACTS, detectors=DETECTORS)
    half = len(records) // 2
    split = feed(first, records[:half])
    resumed = Engine(load_params(), FACTS, detectors=DETECTORS,
                     checkpoint=json.loads(json.dumps(first.checkpoint())))
    split += feed(resumed, records[half:])
    assert len(whole) >= 4 and split == whole


def test_hostile_but_valid_records_do_not_crash():
    market = Market(*DETECTORS)
    odd = [weighing_body(net_mg=0, unit_price_minor_per_kg=0, start_reading_mg=None),
           weighing_body(net_mg=-5000, unit_price_minor_per_kg=1280, plu=101, stable=False),
           weighing_body(net_mg=10**10, unit_price_minor_per_kg=10**8 - 1, amount=10**9 - 1,
                         max_mg=10**10, e_mg=10**10, plu=999_999, load_to_stable_ms=0),
           weighing_body(net_mg=1, unit_price_minor_per_kg=1, e_mg=1, plu=101,
                         tare_mg=10**10, tare_mode="preset")]
    del odd[0]["start_reading_mg"]
    for _ in range(40):
        for sale in odd:
            market.sell(0, sale)
