"""The backtest part of `meterseal bench` (meterseal.host.bench_backtest), end to end on a tiny
site: simulated, signed, uploaded to the real ingest host and backtested. The figures must be
consistent (every record simulated is stored and backtested, the split covers every detector
fed); none is compared with a time, since tests never time anything."""

import argparse

from meterseal.fraud_rules import Engine, load_params, native
from meterseal.host import bench, bench_backtest
from meterseal.host.storage import open_store

TINY = bench_backtest.Plan(days=1, dispensers=2, arrivals_per_hour=2)


def test_the_backtest_part_stores_the_site_and_reports_its_split(tmp_path):
    said = []
    figures = bench_backtest.run(TINY, tmp_path, said.append)
    assert len(said) == 4  # a line before each long step
    kinds = figures["kinds"]
    assert kinds["fuel.sale"] > 0 and kinds["status"] == 96 and kinds["tank.inventory"] == 48
    assert figures["records"] == sum(kinds.values())
    with open_store(tmp_path / "backtest.db") as store:
        assert store.outcome_counts()["VERIFIED"] == figures["records"]
        # The site's facts, entered as an officer would: the detectors check against them.
        assert len(store.detection.prices(figures["site_id"])) == 2
        assert len(store.detection.max_flows(figures["site_id"])) == 2 * TINY.dispensers
    assert figures["wall_s"] > 0 and figures["cpu_s"] >= 0 and figures["findings"] >= 0
    assert figures["read_cpu_s"] >= 0 and figures["engine_cpu_s"] >= 0
    # Every enabled detector of the records' kinds, and no scale detector (no scale record).
    fed = {d.name for d in Engine(load_params(), None).detectors
           if set(d.kinds) & set(kinds)}
    assert set(figures["detectors_cpu_s"]) == fed and "dispenser.selective" in fed
    lines = bench_backtest.report(figures)
    assert f"{figures['records']} records ({kinds['fuel.sale']} sales)" in lines[0]
    assert "records/s" in lines[1] and f"detectors {native.describe()}" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["reading", "the", "each"]


def test_meterseal_bench_runs_the_backtest_part_alone(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--part", "backtest", "--backtest-days", "1",
                              "--backtest-dispensers", "1"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "backtest of one site over 1 days" in out and "1 dispensers x 2 nozzles" in out
    assert "each detector alone" in out
    assert "host ingest" not in out and "ES256" not in out  # the other parts did not run
