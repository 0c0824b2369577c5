"""`meterseal records` and `meterseal status` print exactly what a store prepared here holds:
records verified with a real key, a quarantined forgery, a gap finding and two alerts. Each runs
on both backends, `--db` naming the database by URL (sqlite:///PATH, postgresql://...)."""

import json

import pytest

from meterseal.host import cli, verify
from meterseal.host.simulated_gateway import START_WALL_MS, RecordMaker, provision
from meterseal.host.storage import NewFinding, open_store
from meterseal.protocol import cose

from ingest_site import new_signer

GW = "GW-A"
RECEIVED_MS = START_WALL_MS + 60_000


@pytest.fixture
def db(store_url):
    """Seq 0..4 of GW-A (seq 2 a fuel sale), a forged seq 5, a gap 6..7 and two open alerts."""
    key = new_signer()
    keyring = verify.Keyring()
    keyring.add(cose.kid_for(key.public_key()), key.public_key())
    maker = RecordMaker(GW, key)
    sale = {"grade": 92, "volume_ml": 20000, "unit_price_minor_per_kl": 7800,
            "amount_minor": 15600, "start_wall_time_ms": START_WALL_MS, "end_wall_time_ms":
            START_WALL_MS + 60_000, "duration_ms": 60_000, "flow_interval_ms": 1000,
            "flow_profile_ml": [20000], "end_status": "completed"}
    envelopes = maker.batch(2) + [maker.make(kind="fuel.sale", body=sale, device={
        "dispenser_address": 80, "nozzle": 2})] + maker.batch(2)
    forged = bytearray(maker.make())
    forged[-1] ^= 1
    envelopes.append(bytes(forged))
    with open_store(store_url) as store:
        provision(store, GW, key.public_key())
        provision(store, "GW-B", new_signer().public_key())
        store.ingest_batch(GW, [(e, keyring.verify(e, RECEIVED_MS)) for e in envelopes],
                           [NewFinding("gap", 6, 7, {"explanation": "2 missing"})], RECEIVED_MS)
        for rule, severity in (("chain.gap", "medium"), ("verify.bad_signature", "critical")):
            store.alerts.raise_alert(GW, None, rule, severity, 0.5, "why", "为何", [1], {},
                                     seen_at_ms=RECEIVED_MS)
    return store_url


def meterseal(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


TABLE = """\
record  seq  boot  kind       event   device                 wall time (UTC)                outcome
2       1    1     event      tamper  -                      2026-01-01T00:00:01.000+00:00  VERIFIED
3       2    1     fuel.sale  -       dispenser 80 nozzle 2  2026-01-01T00:00:02.000+00:00  VERIFIED
4       3    1     event      tamper  -                      2026-01-01T00:00:03.000+00:00  VERIFIED
(more: --from-seq 4)
"""


def test_records_are_listed_as_a_table_with_filters_and_a_next_page_hint(db, capsys):
    assert meterseal(capsys, "records", "--gateway", GW, "--from-seq", "1", "--to-seq", "4",
                     "--limit", "3", "--db", db) == (0, TABLE, "")


def test_records_as_json_with_a_kind_filter(db, capsys):
    status, out, _ = meterseal(capsys, "records", "--gateway", GW, "--kind", "fuel.sale",
                               "--json", "--db", db)
    (sale,) = json.loads(out)
    assert status == 0
    assert {k: sale[k] for k in ("record_id", "seq", "kind", "dispenser_address", "nozzle",
                                 "outcome", "received_at_ms")} == {
        "record_id": 3, "seq": 2, "kind": "fuel.sale", "dispenser_address": 80, "nozzle": 2,
        "outcome": "VERIFIED", "received_at_ms": RECEIVED_MS}


def test_status_reports_each_gateway_and_the_outcomes(db, capsys):
    with open_store(db) as store:
        kids = {gateway: store.registry.keys(gateway)[0].kid.hex()[:16]
                for gateway in (GW, "GW-B")}
    assert meterseal(capsys, "status", "--db", db) == (0, f"""\
gateway GW-A  site SITE-1  active
  key {kids[GW]}...  active
  records: contiguous to seq 4, highest seq 4, last stored 2026-01-01T00:01:00.000+00:00
  open findings: gap 1
  open alerts: critical 1, medium 1
gateway GW-B  site SITE-1  active
  key {kids["GW-B"]}...  active
  records: none stored
  open findings: none
  open alerts: none
records by outcome: VERIFIED 5, BAD_SIGNATURE 1
""", "")


@pytest.mark.parametrize("argv, status, message", [
    (("records", "--gateway", "GW-Z"), 1, "gateway GW-Z is not registered"),
    (("records", "--gateway", GW, "--limit", "0"), 2, "must be a whole number in 1..1000"),
])
def test_bad_queries_are_one_line_errors(db, capsys, argv, status, message):
    got_status, out, err = meterseal(capsys, *argv, "--db", db)
    assert (got_status, out) == (status, "")
    assert message in err.splitlines()[-1] and "Traceback" not in err
