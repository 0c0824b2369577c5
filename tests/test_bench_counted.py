"""`meterseal bench --part counted` (meterseal.host.bench_counted): the real ingest host under
valgrind's callgrind, the detectors off and on, at tiny counts. Counts are deterministic, but the
test compares none with a fixed figure: only what must hold whatever the code costs."""

import os
import shutil

import pytest

from meterseal.fraud_rules import native
from meterseal.host import bench_counted, bench_ingest
from meterseal.host.storage import open_store

TINY = bench_ingest.Plan(gateways=2, records_per_gateway=24, batch_records=8, postgres=False)

# A dump as callgrind_control --dump writes it, trailing zero counts left out of the summary.
DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
cmd: python -m meterseal.host.ingest
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
summary: 2000 900 400 30 50 20 6 0 0 300 40 25 20
fl=(1) x.c
fn=(1) f
0 2000 900 400 30 50 20 6 0 0 300 40 25 20
totals: 2100 900 400 30 50 20 6 0 0 300 40 25 20
"""


def _valgrind_or_skip():
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("valgrind is missing; .ci/run installs it")
    pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")


def test_a_dump_is_read_per_record_with_its_left_out_zeros():
    counts = bench_counted.parse_dump(DUMP, records=10)
    assert counts.instructions == 200  # the summary (since zeroing), not the totals line
    assert counts.first_level_misses == (30 + 50 + 20) / 10
    assert counts.last_level_misses == 6 / 10  # DLmr and DLmw zero
    assert counts.mispredicted_branches == (40 + 20) / 10
    assert counts.cycle_estimate == 200 + 10 * 6 + 10 * 10 + 100 * 0.6
    # Trailing zero counts are left out of the summary: no indirect branch mispredicted.
    left_out = DUMP.replace("summary: 2000 900 400 30 50 20 6 0 0 300 40 25 20",
                            "summary: 2000 900 400 30 50 20 6 0 0 300 40 25")
    assert bench_counted.parse_dump(left_out, records=10).mispredicted_branches == 40 / 10


@pytest.mark.parametrize("text, message", [
    ("events: Ir\n", "no events and summary"),
    ("events: Ir\nsummary: 5 6\n", "no events and summary"),
    ("events: Ir Dr\nsummary: 5 6\n", "lacks I1mr"),
    ("events: Ir I1mr D1mr D1mw ILmr DLmr DLmw\nsummary: 5\n", "lacks Bcm, Bim"),
])
def test_a_dump_without_the_cache_and_branch_simulations_is_a_clear_error(text, message):
    with pytest.raises(bench_ingest.BenchError, match=message):
        bench_counted.parse_dump(text, records=1)


def test_a_load_that_fits_in_the_first_batches_counts_nothing_and_says_so():
    with pytest.raises(bench_ingest.BenchError, match="no record was counted"):
        bench_counted.parse_dump(DUMP, records=0)


def test_the_counted_part_runs_both_hosts_under_callgrind_and_reports(tmp_path):
    _valgrind_or_skip()
    said = []
    figures = bench_counted.run(TINY, tmp_path, said.append)
    assert any("under callgrind" in line for line in said)
    without, with_ = figures["without"], figures["with"]
    # Each gateway's first batch is outside the count; the rest of the load is counted in both.
    assert without.records == with_.records == 2 * (24 - 8)
    # The same load and ingest; with the detectors the host executes their code as well.
    assert with_.instructions > without.instructions > 0
    # Only the upload is counted: a record takes about 1.4 million instructions, and the host's
    # start (an interpreter importing cryptography, SQLite and the detectors) would add tens of
    # millions a record here if the counters were not zeroed after it.
    assert with_.instructions < 5e6
    assert without.first_level_misses > 0 and without.mispredicted_branches > 0
    for arm in ("without", "with"):
        with open_store(tmp_path / f"counted-{arm}.db") as store:
            assert sum(store.outcome_counts().values()) == 48
    lines = bench_counted.report(figures)
    assert "2 gateways x 24 fuel sales (32 counted per arm), detectors " in lines[0]
    # The host with the detectors logged which ones it ran, as the package would load them.
    fresh = native.build_state()[0] == "fresh"
    assert figures["detectors"].startswith("compiled" if fresh else "pure Python")
    instructions = next(line for line in lines if line.strip().startswith("instructions"))
    assert f"{without.instructions:,.0f} without them" in instructions
    assert f"{with_.instructions:,.0f} with them" in instructions
