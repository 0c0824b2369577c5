"""`meterseal backtest` (host/backtest.py): a site's stored history replayed through fresh
detectors under given parameters, leaving the live alerts and checkpoints alone; over each
storage backend."""

import argparse
import json

import pytest

from meterseal.fraud_rules.engine import Detector
from meterseal.fraud_rules.params import Params
from meterseal.host import backtest as host_backtest
from meterseal.host import detection as host_detection
from meterseal.host.simulated_gateway import SITE, START_WALL_MS, RecordMaker
from meterseal.host.storage import open_store

from test_detection_host import GW, PRICE, announce, key, registered, sale, upload  # noqa: F401

DAY_MS = 86_400_000


class PriceTolerance(Detector):
    """A test's own detector: a unit price further than ``tolerance`` from the announced one."""

    name = "test.tolerance"
    kinds = ("fuel.sale",)

    def feed(self, entry, state):
        announced = self.facts.announced_price(entry.site_id, entry.body["grade"],
                                               entry.wall_time_ms)
        off = abs(entry.body["unit_price_minor_per_kl"] - announced)
        if off <= self.params["tolerance"]:
            return []
        return [self.finding(entry, severity="medium", score=0.5, en=f"off by {off}",
                             zh=f"偏差{off}", observed={"off": off}, evidence=[entry.record_id])]


def params(tolerance):
    return Params(f"tol-{tolerance}", {"test.tolerance": {"enabled": True,
                                                          "tolerance": tolerance}}, ["test"])


@pytest.fixture
def history(registered, key):
    """Four sales, 1, 100, 1000 and 0 minor units off the announced price, stored with the
    ingest's detection switched off."""
    announce(registered)
    maker = RecordMaker(GW, key)
    upload(registered, key, [[sale(maker, PRICE + off) for off in (1, 100, 1000, 0)]],
           detection=False)
    return registered


def run(db, tolerance, start=START_WALL_MS, end=START_WALL_MS + DAY_MS):
    with open_store(db) as store:
        findings, fed = host_backtest.backtest(store, SITE, start, end, params(tolerance),
                                               detectors=[PriceTolerance])
    return [f.parameters["observed"]["off"] for f in findings], fed


def test_other_parameters_give_other_findings_and_the_live_state_is_untouched(history):
    with open_store(history) as store:
        before = (store.alerts.ranked(GW), store.detection.checkpoints(),
                  store.audit_log().items)
    assert run(history, 0) == ([1, 100, 1000], 4)
    assert run(history, 50) == ([100, 1000], 4)
    assert run(history, 500) == ([1000], 4)
    # The window: the first two records only (one second apart).
    assert run(history, 0, end=START_WALL_MS + 2000) == ([1, 100], 2)
    with open_store(history) as store:
        assert (store.alerts.ranked(GW), store.detection.checkpoints(),
                store.audit_log().items) == before


def backtest_command(argv):
    """`meterseal backtest ARGV`, as host/cli.py wires it."""
    parser = argparse.ArgumentParser()
    host_backtest.add_parser(parser.add_subparsers())
    args = parser.parse_args(["backtest", *argv])
    return args.run(args)


def test_the_command_refuses_bad_input_in_one_line(history, tmp_path):
    db = history
    with pytest.raises(host_backtest.BacktestError, match="site NOWHERE is not registered"):
        backtest_command(["--db", db, "--site", "NOWHERE", "--from", "2026-01-01",
                          "--to", "2026-01-02"])
    with pytest.raises(host_backtest.BacktestError, match="--from 'yesterday' is not an ISO"):
        backtest_command(["--db", db, "--site", SITE, "--from", "yesterday",
                          "--to", "2026-01-02"])
    with pytest.raises(host_backtest.BacktestError, match="--to must be after --from"):
        backtest_command(["--db", db, "--site", SITE, "--from", "2026-01-02",
                          "--to", "2026-01-01T00:00:00+08:00"])
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 1\n")
    with pytest.raises(host_backtest.BacktestError, match="'version' must be a non-empty"):
        backtest_command(["--db", db, "--site", SITE, "--from", "2026-01-01",
                          "--to", "2026-01-02", "--params", str(bad)])


def test_the_command_runs_the_catalogue_and_reports_json_and_a_table(history, capsys):
    window = ["--db", history, "--site", SITE, "--from", "2026-01-01", "--to", "2026-01-02"]
    assert backtest_command([*window, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["site_id"], report["records"], report["from_ms"]) == (SITE, 4, START_WALL_MS)
    assert backtest_command(window) == 0
    summary = capsys.readouterr().out.splitlines()
    assert f"findings from 4 records of site {SITE}" in [
        line for line in summary if "records of site" in line][0]


class SharedProbe(Detector):
    """A test's own detector: reports how many other sites its fleet state knows."""

    name = "test.shared"
    kinds = ("fuel.sale",)

    def feed(self, entry, state):
        known = len(self.fleet.get("sites", {}))
        self.fleet.setdefault("sites", {})[entry.site_id] = True
        return [self.finding(entry, severity="low", score=0.1, en=f"{known}", zh=f"{known}",
                             observed={"known": known}, evidence=[entry.record_id])]


def test_the_backtest_starts_from_what_the_live_detectors_share_and_leaves_it(history):
    shared = {"format": 1, "fed": {}, "records_fed": 0, "sites": {},
              "fleet": {"test.shared": {"sites": {"SITE-7": True, "SITE-8": True}}}}
    with open_store(history) as store:
        store.detection.save_checkpoints({host_detection.FLEET_ROW: shared})
        findings, _ = host_backtest.backtest(
            store, SITE, START_WALL_MS, START_WALL_MS + DAY_MS,
            Params("shared", {"test.shared": {"enabled": True}}, ["test"]),
            detectors=[SharedProbe])
        # The first sale sees the two sites the live detectors saved, then its own site too.
        assert [f.parameters["observed"]["known"] for f in findings] == [2, 3, 3, 3]
        assert store.detection.checkpoint(host_detection.FLEET_ROW) == shared
        assert store.detection.checkpoint("NO-SUCH-SITE") is None
