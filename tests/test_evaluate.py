"""The evaluation harness: the record-level fleet (hil_tests/record_fleet.py), its labels, the
scoring arithmetic and the small scenario end to end (fraud_rules/evaluate.py)."""

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from meterseal.fraud_rules import Engine, StaticFacts, evaluate, load_params, native
from meterseal.fraud_rules.flow_drift import steady_flow_lpm, tail_flow_lpm
from meterseal.hil.record_fleet import Fleet, FleetScenarioError, Label, load_scenario
from meterseal.host import evaluate_cli
from meterseal.protocol import records

SCENARIOS = Path(__file__).resolve().parents[1] / "hil_tests" / "scenarios"
DAY = evaluate.DAY_MS
HOUR = evaluate.HOUR_MS


def _scenario(cheats, days=3, **overrides):
    scenario = load_scenario(SCENARIOS / "eval_small.toml")
    scenario.update(days=days, cheat_start_day=1.0, validate_every=1, cheats=cheats)
    scenario.update(overrides)
    return scenario


def _site_of(fleet, record):
    return fleet.facts.site_of(record["gateway_id"])


def test_records_are_schema_valid_in_seq_order_and_deterministic():
    scenario = _scenario([{"kind": "pulse_scaling_board", "sizes": [3]},
                          {"kind": "k_factor_logged", "sizes": [3]},
                          {"kind": "tare_abuse", "sizes": [10]}], days=2)
    first = [(r, t) for _, r, t in Fleet(scenario).records()]
    again = [(r, t) for _, r, t in Fleet(scenario).records()]
    other = [(r, t) for _, r, t in Fleet(scenario, seed=7).records()]
    assert first == again
    assert first != other
    last_seq, last_wall = {}, 0
    kinds = set()
    for record, _ in first:
        records.build(record)  # raises on any schema violation
        gateway = record["gateway_id"]
        assert record["seq"] == last_seq.get(gateway, -1) + 1
        last_seq[gateway] = record["seq"]
        assert record["wall_time_ms"] >= last_wall  # interleaved by wall time
        last_wall = record["wall_time_ms"]
        kinds.add(record["kind"] if record["kind"] != "event" else record["body"]["event_type"])
    assert kinds >= {"fuel.sale", "scale.weighing", "status", "tank.inventory", "tank.delivery",
                     "calibration", "pulse_mismatch"}


def test_board_cheat_makes_reported_and_pulse_volume_disagree_by_its_gain():
    fleet = Fleet(_scenario([{"kind": "pulse_scaling_board", "sizes": [3]},
                             {"kind": "pulse_scaling_encoder", "sizes": [3]}]))
    board, encoder = fleet.labels
    ratios = {(label.kind, active): [] for label in fleet.labels for active in (True, False)}
    for _, record, truth in fleet.records():
        if record["kind"] != "fuel.sale" or record["body"]["volume_ml"] < 5000:
            continue
        for label in (board, encoder):
            if _site_of(fleet, record) == label.site_id and label.covers(
                    f"{record['device']['dispenser_address']}/{record['device']['nozzle']}"):
                assert truth == (record["wall_time_ms"] >= label.start_ms)
                body = record["body"]
                ratios[(label.kind, truth)].append(body["volume_ml"] / body["pulse_volume_ml"])
    # The board sits between encoder and CPU: the gateway's own pulses see the true volume.
    def median(kind, active):
        return statistics.median(ratios[(kind, active)])

    assert median("pulse_scaling_board", True) == pytest.approx(1.03, abs=0.002)
    assert median("pulse_scaling_board", False) == pytest.approx(1.0, abs=0.002)
    # An encoder cheat fools the pulse input too.
    assert median("pulse_scaling_encoder", True) == pytest.approx(1.0, abs=0.002)


def test_heartbeats_come_every_15_minutes_with_the_totalizers_of_the_sales_so_far():
    fleet = Fleet(_scenario([], days=1))
    latest, last_status, checked = {}, {}, 0
    for _, record, _ in fleet.records():
        gateway = record["gateway_id"]
        if record["kind"] == "fuel.sale":
            device = record["device"]
            key = (gateway, device["dispenser_address"], device["nozzle"])
            latest[key] = record["body"]["totalizer_end_ml"]
        elif record["kind"] == "status":
            assert record["wall_time_ms"] - last_status.get(gateway, record["wall_time_ms"]) \
                <= 15 * 60 * 1000
            last_status[gateway] = record["wall_time_ms"]
            for entry in record["body"]["totalizers"]:
                key = (gateway, entry["dispenser_address"], entry["nozzle"])
                if key in latest:
                    assert entry["totalizer_ml"] == latest[key]
                    checked += 1
    assert checked > 100


def _honest_fleet(visits=0.0, cuts=0.0, days=3):
    scenario = _scenario([], days=days)
    for section in ("forecourt", "market"):
        scenario[section] = dict(scenario[section], service_visit_share=visits,
                                 power_cut_share=cuts)
    return Fleet(scenario)


def _event_type(record):
    return record["body"]["event_type"] if record["kind"] == "event" else None


def test_service_visits_come_under_work_orders_and_recalibrate_the_meter():
    fleet = _honest_fleet(visits=1.0)
    orders = {(o.site_id, o.device_ref): o for o in fleet.facts.work_orders}
    # Every dispenser and scale (no cheats here): a forecourt of 4 pumps, a market of 5 scales.
    assert len(orders) == sum(kind in ("dispenser", "scale") for kind in fleet.devices.values()) \
        == 9
    visit_events, after = {}, {}
    for _, record, truth in fleet.records():
        site, event = _site_of(fleet, record), _event_type(record)
        device = record.get("device", {})
        ref = str(device.get("dispenser_address", device.get("scale_id")))
        if event in ("seal_open", "calibration", "seal_close"):
            assert truth is False
            order = orders[(site, ref)]
            assert order.valid_from_ms <= record["wall_time_ms"] <= order.valid_to_ms
            if event != "seal_close":
                assert fleet.facts.work_order(site, record["gateway_id"], evaluate_ref(device),
                                              event, record["wall_time_ms"]) is order
            visit_events.setdefault((site, ref), []).append(event)
            if event == "calibration" and "nozzle" in device:
                body = record["body"]
                after[(site, ref, device["nozzle"])] = (
                    100000 / body["new_k_factor_pulses_per_kl"], [])
        elif record["kind"] == "fuel.sale" and "pulse_volume_ml" in record["body"]:
            key = (site, ref, device["nozzle"])
            if key in after and record["body"]["volume_ml"] >= 20000:
                after[key][1].append(record["body"]["volume_ml"] / record["body"]["pulse_volume_ml"])
    for (site, ref), events in visit_events.items():
        nozzles = 2 if ref.isdigit() else 0
        assert events == (["seal_open"] + ["calibration"] * (nozzles or 1) + ["seal_close"])
    # After the calibration the dispenser shows the true volume and the gateway, dividing by
    # its sealed K, counts the meter's error: the ratio is the calibration's K step, not 1.
    checked = 0
    for expected, ratios in after.values():
        if ratios:
            assert statistics.median(ratios) == pytest.approx(expected, abs=0.0006)
            checked += 1
    assert checked >= 8
    assert any(abs(expected - 1) > 0.001 for expected, _ in after.values())


def test_recalibrated_meters_at_the_mpe_make_mismatch_events_that_raise_nothing():
    # Meters drifting fast to the ±0.3 % MPE, each recalibrated under a work order: the gateway
    # flags large draws afterwards (its allowance is ~0.26 % there), and the cross-check reads
    # them against the calibration's K step. Without the work orders they are findings.
    scenario = _scenario([], days=5)
    scenario["forecourt"] = dict(scenario["forecourt"], service_visit_share=1.0,
                                 power_cut_share=0.0, honest_drift_percent=6.0)
    scenario["market"] = dict(scenario["market"], service_visit_share=0.0)
    fleet = Fleet(scenario)
    feed = [(rid, record) for rid, record, _ in fleet.records()]
    mismatches = [r for _, r in feed if _event_type(r) == "pulse_mismatch"]
    assert len(mismatches) >= 20

    def crosscheck_rules(facts):
        engine = Engine(load_params(), facts)
        return Counter(f.rule for rid, record in feed for f in engine.feed(rid, record)
                       if f.rule.startswith(("dispenser.pulse_crosscheck", "config.")))

    assert crosscheck_rules(fleet.facts) == {}
    no_orders = StaticFacts(fleet.facts.sites, fleet.facts.prices, fleet.facts.tanks,
                            fleet.facts.max_flows, models=fleet.facts.models)
    unauthorised = crosscheck_rules(no_orders)
    assert unauthorised["dispenser.pulse_crosscheck.mismatch"] >= 1
    assert unauthorised["config.unauthorised_change"] >= 8  # a seal and two calibrations each


def evaluate_ref(device):
    """The device_ref the engine gives a record's device."""
    if "scale_id" in device:
        return device["scale_id"]
    if "nozzle" in device:
        return f"{device['dispenser_address']}/{device['nozzle']}"
    return str(device["dispenser_address"])


def test_a_power_cut_silences_the_whole_site_and_the_gateway_boots_after_it():
    fleet = _honest_fleet(cuts=1.0)
    cuts = {site.gateway.chain.gateway_id: site.power_cut for site in fleet.sites}
    assert all(cuts.values()) and any(c[2] for c in cuts.values()) \
        and not all(c[2] for c in cuts.values())
    seen = {gateway: [] for gateway in cuts}
    totals_before, totals_after = {}, {}
    for _, record, _ in fleet.records():
        gateway = record["gateway_id"]
        begin, duration, logged = cuts[gateway]
        at, event = record["wall_time_ms"], _event_type(record)
        if begin <= at <= begin + duration:
            seen[gateway].append((at - begin, event))
        if record["kind"] == "fuel.sale" and at < begin:
            device = record["device"]
            totals_before.setdefault(gateway, {})[
                (device["dispenser_address"], device["nozzle"])] = \
                record["body"]["totalizer_end_ml"]
        elif record["kind"] == "status" and record["body"].get("totalizers"):
            totals = {(t["dispenser_address"], t["nozzle"]): t["totalizer_ml"]
                      for t in record["body"]["totalizers"]}
            if at < begin:
                totals_before.setdefault(gateway, {}).update(totals)
            elif gateway not in totals_after:
                totals_after[gateway] = totals
    for gateway, (begin, duration, logged) in cuts.items():
        # Nothing while the power is off: a power_fail at its start if the gateway signed one,
        # the boot at its end.
        assert seen[gateway] == ([(0, "power_fail")] if logged else []) + [(duration, "boot")]
        if gateway in totals_before:  # forecourts: no fuel moved while the power was off
            assert totals_after[gateway] == totals_before[gateway]


def test_honest_events_leave_the_customers_as_they_were():
    # The honest events draw from a generator of their own, so the sites' customers stay.
    plain = [r for _, r, _ in _honest_fleet().records() if r["kind"] == "fuel.sale"]
    fleet = _honest_fleet(visits=1.0)
    windows = [(o.valid_from_ms, o.valid_to_ms) for o in fleet.facts.work_orders]
    visited = [r for _, r, _ in fleet.records() if r["kind"] == "fuel.sale" and not any(
        start <= r["wall_time_ms"] <= end for start, end in windows)]
    assert len(plain) > 500 and len(windows) == 9
    # The same customers at the same times; a preset sale after a calibration takes a few ms
    # more or less, as the meter's error taken out changes the fuel a preset amount buys.
    assert len(plain) == len(visited)
    assert max(abs(a["body"]["start_wall_time_ms"] - b["body"]["start_wall_time_ms"])
               for a, b in zip(plain, visited)) < 1000


def test_selective_board_leaves_test_draws_honest_and_gains_only_past_the_threshold():
    fleet = Fleet(_scenario([{"kind": "pulse_scaling_board", "sizes": [10],
                              "schedules": ["draws_above:20000"]}]))
    label, = fleet.labels
    seen = {True: 0, False: 0}
    for _, record, truth in fleet.records():
        body = record["body"]
        if (record["kind"] != "fuel.sale" or _site_of(fleet, record) != label.site_id
                or str(record["device"]["dispenser_address"]) != label.device_ref
                or record["wall_time_ms"] < label.start_ms or body["volume_ml"] < 5000):
            continue
        seen[truth] += 1
        true_ml = body["pulse_volume_ml"]
        expected = 1 + 0.1 * max(0, true_ml - 20000) / true_ml
        assert body["volume_ml"] / true_ml == pytest.approx(expected, abs=0.004)
        assert truth == (true_ml > 19900)
    assert seen[True] > 10 and seen[False] > 5


def test_flow_profile_is_the_display_read_each_second_and_shows_a_threshold_board():
    fleet = Fleet(_scenario([{"kind": "pulse_scaling_board", "sizes": [10],
                              "schedules": ["draws_above:20000"]}]))
    label, = fleet.labels
    honest, stepped = [], 0
    for _, record, truth in fleet.records():
        body = record["body"]
        if record["kind"] != "fuel.sale":
            continue
        profile = body["flow_profile_ml"]
        assert sum(profile) == body["volume_ml"]
        assert all(v % 10 == 0 for v in profile[:-1])  # the display's 10 mL steps
        assert profile[0] < profile[2]  # the ramp-up
        head, _ = steady_flow_lpm({"flow_interval_ms": body["flow_interval_ms"],
                                   "flow_profile_ml": profile[:10]}, 0.15)
        if truth and body["volume_ml"] > 40000:
            # The board counts extra only past 20 L: the tail flows 10 % faster than the head.
            tail, _ = tail_flow_lpm(body, 25000, 0.15)
            assert tail / head - 1 == pytest.approx(0.10, abs=0.02)
            stepped += 1
        elif (_site_of(fleet, record) != label.site_id and body["volume_ml"] > 10000
              and body["flow_interval_ms"] == 1000):
            honest.append(steady_flow_lpm(body, 0.15)[0] / head)
    assert stepped > 5
    # An honest sale flows evenly: its head and its whole steady part agree to the display step.
    assert max(abs(r - 1) for r in honest) < 0.02


def test_backoffice_rewrite_cuts_the_sale_below_the_totalizer_movement_and_profile():
    fleet = Fleet(_scenario([{"kind": "backoffice_rewrite", "sizes": [10]}]))
    label, = fleet.labels
    cut = []
    for _, record, truth in fleet.records():
        if truth and record["kind"] == "fuel.sale" and record["body"]["volume_ml"] > 10000:
            body = record["body"]
            moved = body["totalizer_end_ml"] - body["totalizer_start_ml"]
            cut.append(body["volume_ml"] / moved)
            assert record["wall_time_ms"] >= label.start_ms
            # The gateway's profile keeps what the display showed, as the firmware records it.
            assert sum(body["flow_profile_ml"]) == moved
    assert cut and all(0.898 <= c <= 0.9 for c in cut)


def test_scale_offset_adds_its_grams_to_the_pre_portioned_item_only_while_active():
    fleet = Fleet(_scenario([{"kind": "remote_offset_g", "sizes": [20],
                              "schedules": ["hours:7-11"]}]))
    label, = fleet.labels
    nets = {True: [], False: []}
    for _, record, truth in fleet.records():
        if (record["kind"] == "scale.weighing" and record["device"]["scale_id"] == label.device_ref
                and record["body"].get("plu") == 402):
            nets[truth].append(record["body"]["net_mg"])
            if truth:
                local_hour = (record["wall_time_ms"] // HOUR + 8) % 24
                assert 7 <= local_hour < 11
    assert statistics.median(nets[True]) - statistics.median(nets[False]) == pytest.approx(
        20000, abs=10000)
    assert statistics.median(nets[False]) == pytest.approx(500000, abs=10000)


def test_bad_scenarios_are_refused_with_the_key_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('seed = 1\nstart = "2026-03-02T00:00:00+08:00"\ndays = 1\n'
                    'cheat_start_day = 0.5\n[[cheats]]\nkind = "magnet"\nsizes = [1]\n')
    with pytest.raises(FleetScenarioError, match="cheat kind 'magnet' is not one of"):
        load_scenario(path)
    path.write_text('seed = 1\ndays = 1\n')
    with pytest.raises(FleetScenarioError, match="missing 'start'"):
        load_scenario(path)


# --- scoring ---------------------------------------------------------------------------------

BOARD = Label("A", "80", "dispenser", "pulse_scaling_board", 3.0, "always", 2 * DAY)
OFFSET = Label("B", "S1", "scale", "remote_offset_g", 20.0, "always", 2 * DAY)
DEVICES = {("A", None): "gateway", ("A", "80"): "dispenser", ("A", "81"): "dispenser",
           ("A", "tank/1"): "tank", ("B", "S1"): "scale", ("B", "S2"): "scale"}


def _alarm(site, device, rule, at_ms):
    return {"site_id": site, "device_ref": device, "rule": rule, "at_ms": at_ms}


def test_scoring_arithmetic_on_hand_made_alarms():
    alarms = [
        _alarm("A", "80/1", "dispenser.pulse_scaling", 2 * DAY + 5 * HOUR),   # true, 5 h
        _alarm("A", "tank/1", "tank.wetstock", 4 * DAY),                      # true: its tank
        _alarm("A", "80/2", "dispenser.selective", 1 * DAY),                  # before the start
        _alarm("A", "81/1", "dispenser.selective", 3 * DAY),                  # honest pump
        _alarm("B", "S1", "scale.step_gain", 10 * DAY + HOUR),                # true, too late
        _alarm("B", None, "gateway.heartbeat", 5 * DAY),                      # honest gateway
    ]
    tanks = {BOARD: {"tank/1"}}
    report = evaluate.score(alarms, [BOARD, OFFSET], DEVICES, 0, 11 * DAY,
                            tanks_of=lambda label: tanks.get(label, set()))
    board = report["classes"]["pulse_scaling_board 3 always"]
    assert (board["devices"], board["detected"], board["recall"]) == (1, 1, 1.0)
    assert (board["true_alarms"], board["alarms"]) == (2, 3)
    assert board["precision"] == pytest.approx(2 / 3)
    assert board["median_ttd_h"] == 5.0
    assert board["caught_by"] == {"dispenser.pulse_scaling": 1, "tank.wetstock": 1}
    offset = report["classes"]["remote_offset_g 20 always"]
    assert (offset["recall"], offset["precision"], offset["median_ttd_h"]) == (0.0, 1.0, None)
    assert (report["alarms"], report["true_alarms"], report["false_alarms"]) == (6, 3, 3)
    assert report["precision"] == 0.5
    # 6 devices × 11 days, less 9 cheating days of the pump, its tank and the scale.
    assert report["honest_device_days"] == 66 - 27 == 39
    assert report["false_alarms_per_1000_device_days"] == pytest.approx(3000 / 39)
    assert report["rules"]["dispenser.selective"] == {
        "alarms": 2, "true": 0, "false": 2, "false_per_1000_device_days": pytest.approx(2000 / 39)}
    assert report["rules"]["tank.wetstock"]["false"] == 0
    assert board["full_window"] and offset["full_window"]


def test_cheats_starting_after_the_run_are_left_out_and_short_windows_flagged():
    report = evaluate.score([], [BOARD, OFFSET], DEVICES, 0, 2 * DAY)
    assert report["classes"] == {} and report["honest_device_days"] == 12
    report = evaluate.score([], [BOARD], DEVICES, 0, 5 * DAY)
    assert report["classes"]["pulse_scaling_board 3 always"]["full_window"] is False


def test_a_device_rule_pair_alarms_once_per_site():
    def finding(site, device, rule, at):
        return SimpleNamespace(site_id=site, device_ref=device, rule=rule, at_ms=at)

    findings = [finding("A", "80/1", "r", 1), finding("A", "80/1", "r", 2),
                finding("A", "80/1", "q", 3), finding("B", "80/1", "r", 4)]
    assert [f.at_ms for f in evaluate.alarms_from(findings)] == [1, 3, 4]


# --- end to end ------------------------------------------------------------------------------

def _args(**values):
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers(dest="command"))
    argv = ["evaluate"]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return parser.parse_args(argv)


def test_small_scenario_runs_end_to_end_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "eval"
    args = _args(scenario=SCENARIOS / "eval_small.toml", out=out)
    assert args.run(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scenario"] == "eval_small" and report["days"] == 4
    assert report["cheating_devices"] == len(report["classes"]) >= 4
    assert report["records"] > 5000 and report["records_cheated"] > 100
    assert report["engine_records_per_s"] > 0
    # Honest devices, service visits and power cuts included, raise nothing here.
    assert report["false_alarms"] == 0, report["rules"]
    for name in ("delay.png", "recall.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| device | cheat | size |" in printed
    assert "records/s of CPU time through the engine" in printed
    # Which detectors ran, since the throughput depends on it (fraud_rules/native.py).
    assert report["detectors_build"] == native.describe()
    assert f"detectors {native.describe()}); whole run" in printed
    assert f"parameters {report['params_version']}." in printed


def test_cli_errors_are_one_line(tmp_path):
    args = _args(scenario=tmp_path / "missing.toml", out=tmp_path)
    with pytest.raises(evaluate_cli.EvaluateCliError, match="cannot read scenario"):
        args.run(args)
    params = tmp_path / "p.toml"
    params.write_text('schema = 1\nversion = "x"\n[nonsense]\nenabled = true\n')
    args = _args(scenario=SCENARIOS / "eval_small.toml", out=tmp_path, params=params, days=1)
    with pytest.raises(evaluate_cli.EvaluateCliError, match="unknown detector"):
        args.run(args)
