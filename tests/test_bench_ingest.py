"""The ingest part of `meterseal bench` (meterseal.host.bench_ingest), end to end at tiny counts:
the real ingest host in its own process, the simulated gateways over loopback, on both storage
backends. The figures must be consistent (every record sent stored exactly once, every batch
ACKed, every alert seen); none is compared with a time, since tests never time anything."""

import dataclasses

import pytest

from meterseal.fraud_rules import native
from meterseal.host import bench_backtest, bench_ingest, record_parser, verify
from meterseal.host.simulated_gateway import SITE
from meterseal.host.storage import open_store
from meterseal.protocol import uplink as wire

TINY = bench_ingest.Plan(gateways=2, records_per_gateway=40, batch_records=8, connections=6,
                         alert_trials=2, rounds=1, detection_rounds=2, postgres=False)


def test_the_load_is_chained_and_batched_as_a_gateway_batches():
    load = bench_ingest.make_load(TINY)
    assert [gateway.records for gateway in load] == [40, 40]
    for gateway in load:
        expected_seq = 0
        for frame, last_seq, count in gateway.frames:
            msg_type, fields = wire.decode_frame(frame)
            assert msg_type == wire.RECORDS and len(fields["envelopes"]) == count <= 8
            assert sum(map(len, fields["envelopes"])) <= wire.MAX_BATCH_BYTES
            expected_seq += count
            assert last_seq == expected_seq - 1


@pytest.mark.parametrize("interval_ms", [1000, 5000])
def test_the_loads_sales_carry_a_valid_profile_at_the_plans_interval(interval_ms):
    """Each sale's profile, read back from its signed record, sums to its volume at the plan's
    interval: a ramp-up, 36 L/min in 10 mL display steps, a partial last interval."""
    plan = dataclasses.replace(TINY, flow_interval_ms=interval_ms)
    steady_ml = 36 * interval_ms // 60
    for envelope in bench_ingest.envelopes_of(bench_ingest.make_load(plan), 80):
        body = record_parser.parse(verify.parse_envelope(bytes(envelope)).payload)["body"]
        profile = body["flow_profile_ml"]
        assert body["flow_interval_ms"] == interval_ms and sum(profile) == body["volume_ml"]
        assert profile[:2] == [steady_ml // 3, steady_ml * 4 // 5]
        assert all(abs(ml - steady_ml) <= 10 for ml in profile[2:-1])
        assert 0 < profile[-1] <= steady_ml + 10
    with pytest.raises(bench_ingest.BenchError, match="flow interval must be 1000"):
        dataclasses.replace(TINY, flow_interval_ms=500)


def test_every_record_sent_is_stored_once_and_every_forgery_raises_its_alert(store_url, tmp_path):
    load = bench_ingest.make_load(TINY)
    trials = bench_ingest.gateway_keys("TRIAL", TINY.alert_trials)
    host_core, _ = bench_ingest.cores()
    figures = bench_ingest.measure_backend(store_url, load, trials, host_core,
                                           tmp_path / "host.log")
    assert figures["acked"] == 80
    assert figures["sent"] == figures["stored"] == 80 + 2
    # Each gateway's first batch (8 records) goes before the clock starts.
    assert figures["timed_records"] == 80 - 2 * 8
    assert figures["records_per_s"] > 0 and figures["host_cpu_share"] >= 0
    assert len(figures["alert_latencies_s"]) == 2
    assert all(latency > 0 for latency in figures["alert_latencies_s"])
    # The load is honest: the detectors, which ran on every sale, raised nothing on it.
    with open_store(store_url) as store:
        assert sorted(alert.rule for alert in store.alerts.ranked()) == [
            "verify.bad_signature"] * 2


def test_the_whole_ingest_part_runs_and_reports(tmp_path):
    said = []
    figures = bench_ingest.run(TINY, tmp_path, said.append)
    assert len(said) == 3 + TINY.detection_rounds  # a line before each long step
    # With a fresh compiled build the host runs it, and each round runs pure Python too.
    compiled = native.build_state()[0] == "fresh"
    arms = {"off", "on"} | ({"on, pure Python"} if compiled else set())
    sqlite = figures["backends"]["SQLite"]
    assert sqlite["stored"] == sqlite["sent"] == 82
    held = figures["connections"]
    assert held["connections"] == 6 and held["rss_after"] > 0
    lines = bench_ingest.report(figures)
    assert any(line.strip().startswith("SQLite: verified and stored") and "ratio" in line
               for line in lines)
    assert any("6 connections" in line for line in lines)
    # Each round uploads the load without and with the detectors, and stores it whole; the
    # host with them logged their own CPU on close, and which detectors ran.
    assert len(figures["detection_rounds"]) == TINY.detection_rounds
    for measured in figures["detection_rounds"]:
        assert set(measured) == arms
        assert all(upload["stored"] == 82 for upload in measured.values())
        assert measured["on"]["detection_us"] > 0
        assert measured["on"]["detectors"].startswith("compiled" if compiled else "pure Python")
        if compiled:
            assert measured["on, pure Python"]["detectors"] == (
                "pure Python (compiled build disabled: METERSEAL_PURE_PYTHON=1)")
    costs = [line for line in lines if "detectors' cost in the ingest" in line]
    assert len(costs) == len(arms) - 1
    assert all(f"median of {TINY.detection_rounds}" in line for line in costs)
    assert any("the detectors timed inside the host" in line for line in lines)
    assert not any("PostgreSQL" in line for line in lines)  # left out by the plan
    # The detectors' share, as `meterseal bench` prints it under their cost: the load's sales
    # replayed from the store with detection on (the forged records were not accepted).
    replayed = bench_backtest.measure(figures["detection_store"], SITE, 0, 2**62)
    assert replayed["records"] == 80 and replayed["findings"] == 0
    assert "dispenser.selective" in replayed["detectors_cpu_s"]
    shared = bench_backtest.detector_lines(replayed)
    lines = bench_ingest.report(figures, shared)
    inside = next(i for i, line in enumerate(lines) if "timed inside the host" in line)
    assert "detectors' cost in the ingest" in lines[inside - 2]
    assert lines[inside + 1:inside + 1 + len(shared)] == shared


def test_a_host_log_without_the_detectors_cost_is_a_clear_error(tmp_path):
    log = tmp_path / "host.log"
    log.write_text("INFO meterseal.detection: detection: evaluated 80 records live with 0.004 s "
                   "of CPU, 52.5 us a record, detectors compiled (mypyc 2.4.1)\n"
                   "INFO meterseal.ingest: stopped\n")
    assert bench_ingest.logged_detection(log) == (52.5, "compiled (mypyc 2.4.1)")
    log.write_text("INFO meterseal.ingest: stopped\n")
    with pytest.raises(bench_ingest.BenchError, match="did not log its detectors' cost"):
        bench_ingest.logged_detection(log)
