"""The host's storage (meterseal.host.storage): one suite, run against both backends for real, a
SQLite file and a PostgreSQL server of the test session's own (postgres_server.py), through the
store_url and store fixtures of conftest.py.

Records are real: signed with a gateway key (SoftwareSigner), wrapped by cose.sign1 and checked
by the host's verifier, so every verdict stored is one the verifier gave.
"""

import threading
from hashlib import sha256

import pytest

from meterseal.firmware.signer import SoftwareSigner
from meterseal.host import chain, verify
from meterseal.host.storage import store as storage_module
from meterseal.host.storage.detection import FLEET_ROW
from meterseal.host.storage import (FORK, LATEST_VERSION, OUTCOMES, QUARANTINED, REPLAY, STORED,
                                    NewFinding, StorageError, migrations, open_backend, open_store,
                                    postgres)
from meterseal.protocol import cbor, cose, records

from gateway_site import free_port
from known_vectors import RFC_KEY
from test_records import example

GATEWAY = "GW-3301-0042"
KEY = SoftwareSigner(RFC_KEY)
KID = cose.kid_for(KEY.public_key())
KEYRING = {KID: verify.load_public_key(KEY.public_key())}
# 65 bytes, uncompressed SEC1 in form, but (1, 1) is no point of P-256.
OFF_THE_CURVE = b"\x04" + b"\x01" * 64
START_MS = 1767225600000
RECEIVED_MS = 1767230000000
ALL_VERSIONS = [migration.version for migration in migrations.MIGRATIONS]

# One record of each shape, in this order along the chain: kinds, device references, events.
SHAPES = ("fuel.sale", "scale.weighing", "tank.inventory", "status", "boot", "fuel.sale:preset",
          "tank.delivery", "pulse_mismatch", "time_set", "self_test", "fuel.sale", "link_lost")


def sign(plain, key=KEY):
    return cose.sign1(records.encode(plain), key, cose.kid_for(key.public_key()))


def make_chain(count, boot_epoch=1):
    """``count`` records of GATEWAY, seq 0 up, each naming the SHA-256 of the one before:
    (plain records, envelopes)."""
    plains, envelopes, prev = [], [], chain.GENESIS_PREV
    for seq in range(count):
        plain = example(SHAPES[seq % len(SHAPES)])
        plain.update(gateway_id=GATEWAY, boot_epoch=boot_epoch, seq=seq, prev=prev,
                     wall_time_ms=START_MS + seq * 60000)
        envelope = sign(plain)
        plains.append(plain)
        envelopes.append(envelope)
        prev = sha256(envelope).digest()
    return plains, envelopes


PLAINS, CHAIN = make_chain(len(SHAPES))


def verified(envelopes, keyring=KEYRING):
    return [(envelope, verify.verify_record(envelope, keyring)) for envelope in envelopes]


def ingest(store, envelopes, sender=GATEWAY, **options):
    options.setdefault("received_at_ms", RECEIVED_MS)
    return store.ingest_batch(sender, verified(envelopes), **options)


def outcomes(results):
    return [result.outcome for result in results]


def every_page(query, **filters):
    """Follow a query's pages to the end: (items, number of pages)."""
    items, pages, after = [], 0, None
    while True:
        page = query(**filters, after=after)
        items += page.items
        pages += 1
        if page.next_after is None:
            return items, pages
        after = page.next_after


def schema_versions(url):
    backend = open_backend(url)
    try:
        return [(row["version"], row["applied_at_ms"]) for row in backend.query(
            "SELECT version, applied_at_ms FROM schema_version ORDER BY version")]
    finally:
        backend.close()


# --- migrations -----------------------------------------------------------------------------------


def test_a_new_database_gets_every_migration_once(store_url):
    with open_store(store_url) as store:
        assert store.schema_version == LATEST_VERSION
    applied = schema_versions(store_url)
    assert [version for version, _ in applied] == ALL_VERSIONS
    with open_store(store_url) as store:
        assert store.schema_version == LATEST_VERSION
    assert schema_versions(store_url) == applied


@pytest.mark.parametrize("older", ALL_VERSIONS[:-1])
def test_an_older_database_is_upgraded_and_keeps_its_data(store_url, older):
    backend = open_backend(store_url)
    assert migrations.upgrade(backend, migrations.MIGRATIONS[:older]) == older
    backend.execute("INSERT INTO sites (site_id, name, address) VALUES ('S-1', 'Depot', NULL)")
    backend.close()
    with open_store(store_url) as store:
        assert store.schema_version == LATEST_VERSION
        assert [site.site_id for site in store.registry.sites()] == ["S-1"]
        (stored,) = ingest(store, CHAIN[:1])
        assert stored.outcome == STORED
        alert = store.alerts.raise_alert(GATEWAY, None, "gap", "high", 1.0, "A gap.", "缺口。",
                                         [stored.record_id], {})
        assert alert.state == "new" and store.verify_audit_log().entries_checked == 1
    assert [version for version, _ in schema_versions(store_url)] == ALL_VERSIONS


def test_a_database_newer_than_this_meterseal_is_refused(store_url):
    open_store(store_url).close()
    backend = open_backend(store_url)
    backend.execute("INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
                    (LATEST_VERSION + 1, "from the future", 0))
    backend.close()
    with pytest.raises(StorageError, match=f"schema version {LATEST_VERSION + 1}, newer than "
                                           f"this meterseal understands") as raised:
        open_store(store_url)
    assert "\n" not in str(raised.value)


def test_a_failing_migration_leaves_the_database_as_it_was(store_url):
    open_store(store_url).close()
    broken = migrations.Migration(LATEST_VERSION + 1, "broken", (
        "CREATE TABLE half_done (x BIGINT)",
        "CREATE TABLE oops (",
    ))
    backend = open_backend(store_url)
    try:
        with pytest.raises(StorageError, match=f"migration {LATEST_VERSION + 1} \\(broken\\)"):
            migrations.upgrade(backend, migrations.MIGRATIONS + (broken,))
        with pytest.raises(StorageError, match="half_done"):
            backend.query("SELECT COUNT(*) AS n FROM half_done")
    finally:
        backend.close()
    assert [version for version, _ in schema_versions(store_url)] == ALL_VERSIONS


# --- ingest ---------------------------------------------------------------------------------------


def test_a_batch_is_stored_verbatim_with_its_decoded_fields(store):
    results = ingest(store, CHAIN)
    assert outcomes(results) == [STORED] * len(CHAIN)
    assert len({result.record_id for result in results}) == len(CHAIN)
    page = store.records(GATEWAY)
    assert page.next_after is None
    assert [r.envelope for r in page.items] == CHAIN
    for stored, plain, result in zip(page.items, PLAINS, results):
        device = plain.get("device", {})
        assert stored.record_id == result.record_id
        assert (stored.gateway_id, stored.sender_gateway_id) == (GATEWAY, GATEWAY)
        assert (stored.boot_epoch, stored.seq, stored.kind) == (1, plain["seq"], plain["kind"])
        assert stored.event_type == plain["body"].get("event_type")
        assert (stored.dispenser_address, stored.nozzle, stored.scale_id, stored.tank_number) == (
            device.get("dispenser_address"), device.get("nozzle"), device.get("scale_id"),
            device.get("tank_number"))
        assert stored.wall_time_ms == plain["wall_time_ms"]
        assert (stored.received_at_ms, stored.kid, stored.outcome) == (RECEIVED_MS, KID,
                                                                         "VERIFIED")
        assert not stored.quarantined
        assert stored.envelope_sha256 == sha256(stored.envelope).digest()
        assert store.record(stored.record_id) == stored
    assert store.outcome_counts(GATEWAY) == dict(dict.fromkeys(OUTCOMES, 0), VERIFIED=len(CHAIN))


def test_a_resent_batch_is_a_replay_and_stores_nothing_new(store):
    first = ingest(store, CHAIN[:5])
    state = store.ingest_state(GATEWAY)
    again = ingest(store, CHAIN[:5] + CHAIN[2:3], received_at_ms=RECEIVED_MS + 1)
    assert outcomes(again) == [REPLAY] * 6
    assert [r.record_id for r in again] == [r.record_id for r in first] + [first[2].record_id]
    assert store.outcome_counts()["VERIFIED"] == 5
    assert store.ingest_state(GATEWAY) == state
    # Within one batch too: the second copy is a replay of the first.
    assert outcomes(ingest(store, [CHAIN[5], CHAIN[5]])) == [STORED, REPLAY]


def test_the_same_seq_with_different_bytes_keeps_both_envelopes(store):
    ingest(store, CHAIN[:4])
    plain = dict(PLAINS[2], body=dict(PLAINS[2]["body"], volume_ml=999))
    twin = sign(plain)
    (result,) = ingest(store, [twin], received_at_ms=RECEIVED_MS + 5)
    assert result.outcome == FORK and "seq 2" in result.detail
    (fork,) = store.forks(GATEWAY)
    assert (fork.seq, fork.first_seen_ms) == (2, RECEIVED_MS + 5)
    assert fork.stored.envelope == CHAIN[2] and not fork.stored.quarantined
    assert fork.twin.envelope == twin and fork.twin.quarantined
    assert fork.twin.outcome == "VERIFIED" and fork.twin.record_id == result.record_id
    # The chain keeps the record that came first.
    assert store.records(GATEWAY, seq_from=2, seq_to=2).items[0].envelope == CHAIN[2]
    (finding,) = store.findings(GATEWAY, kind="fork")
    assert (finding.first_seq, finding.last_seq) == (2, 2)
    assert finding.detail["twin_record_id"] == fork.twin.record_id
    assert finding.detail["stored_record_id"] == fork.stored.record_id
    assert outcomes(ingest(store, [twin])) == [REPLAY]
    assert len(store.forks(GATEWAY)) == 1


def test_replays_and_forks_are_found_across_lookup_chunks(store, monkeypatch):
    monkeypatch.setattr(storage_module, "_LOOKUP_CHUNK", 2)
    ingest(store, CHAIN[:5])
    twin = sign(dict(PLAINS[3], wall_time_ms=PLAINS[3]["wall_time_ms"] + 1))
    assert outcomes(ingest(store, CHAIN[:6] + [twin])) == [REPLAY] * 5 + [STORED, FORK]
    assert [(fork.seq, fork.twin.envelope) for fork in store.forks(GATEWAY)] == [(3, twin)]


def _with_alg(envelope, alg):
    sign1 = cose.parse_sign1(envelope)
    protected = cbor.dumps({1: alg, 4: sign1.kid})
    return cbor.dumps(cbor.Tag(cose.TAG_SIGN1, [protected, {}, sign1.payload, sign1.signature]))


def test_records_that_fail_verification_are_quarantined_byte_for_byte(store):
    bad_signature = CHAIN[0][:-1] + bytes([CHAIN[0][-1] ^ 1])
    foreign = sign(PLAINS[1], SoftwareSigner(RFC_KEY + 1))
    unsupported = _with_alg(CHAIN[2], -35)
    garbage = b"\x00garbage\xff\xfe"
    items = verified([bad_signature, foreign, unsupported, garbage, b""])
    # The verifier has no revocation yet; this is the verdict it will give.
    items.append((CHAIN[3], verify.Verdict("REVOKED_KEY", KID, detail="revoked from 1767225")))
    results = store.ingest_batch(GATEWAY, items, received_at_ms=RECEIVED_MS)
    assert outcomes(results) == [QUARANTINED] * 6
    assert store.records(GATEWAY).items == ()
    held = store.quarantine(GATEWAY).items
    assert [r.envelope for r in held] == [envelope for envelope, _ in items]
    assert [r.outcome for r in held] == ["BAD_SIGNATURE", "UNKNOWN_KEY", "UNSUPPORTED_ALG",
                                         "MALFORMED", "MALFORMED", "REVOKED_KEY"]
    assert all(r.quarantined and r.sender_gateway_id == GATEWAY for r in held)
    assert [r.detail for r in held] == [verdict.detail for _, verdict in items]
    # What a quarantined payload claims is indexed where it parses; garbage has nothing to claim.
    assert (held[0].gateway_id, held[0].seq, held[0].kind) == (GATEWAY, 0, "fuel.sale")
    assert (held[3].gateway_id, held[3].seq, held[3].kid) == (None, None, None)
    assert store.record(held[3].record_id).envelope == garbage
    assert [r.envelope for r in store.quarantine(outcome="MALFORMED").items] == [garbage, b""]
    assert store.outcome_counts(quarantined=True) == dict(
        dict.fromkeys(OUTCOMES, 0), BAD_SIGNATURE=1, UNKNOWN_KEY=1, UNSUPPORTED_ALG=1,
        MALFORMED=2, REVOKED_KEY=1)
    assert store.ingest_state(GATEWAY) is None
    assert outcomes(store.ingest_batch(GATEWAY, items)) == [REPLAY] * 6


def test_a_verified_record_naming_another_gateway_is_quarantined(store):
    (result,) = ingest(store, CHAIN[:1], sender="GW-OTHER")
    assert result.outcome == QUARANTINED
    assert result.detail == f"the record names gateway {GATEWAY} but was sent by gateway GW-OTHER"
    assert store.records(GATEWAY).items == () and store.records("GW-OTHER").items == ()
    assert store.quarantine("GW-OTHER").items[0].outcome == "VERIFIED"


def test_a_seq_beyond_the_column_is_quarantined_not_lost(store):
    envelope = sign(dict(PLAINS[0], seq=2**64 - 1))
    (result,) = ingest(store, [envelope])
    assert result.outcome == QUARANTINED and f"seq {2**64 - 1} is above" in result.detail
    (held,) = store.quarantine(GATEWAY).items
    assert held.seq is None and held.envelope == envelope


def test_items_no_verifier_produces_are_refused_before_anything_is_stored(store):
    items = verified(CHAIN[:2]) + [(CHAIN[2], verify.Verdict("FINE"))]
    with pytest.raises(StorageError, match="batch item 2: outcome 'FINE' is not one of"):
        store.ingest_batch(GATEWAY, items)
    with pytest.raises(StorageError, match="batch item 0: a VERIFIED verdict must carry"):
        store.ingest_batch(GATEWAY, [(CHAIN[0], verify.Verdict("VERIFIED", KID))])
    with pytest.raises(StorageError, match="finding 0: kind 'hole' is not one of"):
        ingest(store, CHAIN[:1], findings=[NewFinding("hole", 1, 1, {})])
    assert store.outcome_counts() == dict.fromkeys(OUTCOMES, 0)


def test_a_batch_that_fails_midway_leaves_nothing(store, monkeypatch):
    ingest(store, CHAIN[:2])
    state = store.ingest_state(GATEWAY)
    real = store._insert_records
    calls = []

    def fail_once_the_records_are_written(rows):
        calls.append([row["seq"] for row in rows])
        real(rows)
        raise RuntimeError("host killed midway")

    monkeypatch.setattr(store, "_insert_records", fail_once_the_records_are_written)
    gap = NewFinding("gap", 7, 7, {"missing": [7]})
    with pytest.raises(RuntimeError, match="host killed midway"):
        ingest(store, CHAIN[2:6] + CHAIN[8:9], findings=[gap])
    assert calls == [[2, 3, 4, 5, 8]]
    assert [r.seq for r in store.records(GATEWAY).items] == [0, 1]
    assert store.ingest_state(GATEWAY) == state and store.findings(GATEWAY) == []
    monkeypatch.undo()
    assert outcomes(ingest(store, CHAIN[2:6] + CHAIN[8:9], findings=[gap])) == [STORED] * 5
    assert len(store.findings(GATEWAY)) == 1


# --- chain state and findings ---------------------------------------------------------------------


def test_ingest_state_survives_reopening(store_url):
    with open_store(store_url) as store:
        ingest(store, CHAIN[:4] + CHAIN[5:6])
    with open_store(store_url) as store:
        state = store.ingest_state(GATEWAY)
        assert (state.contiguous_seq, state.highest_seq, state.last_boot_epoch) == (3, 5, 1)
        assert state.highest_seq_sha256 == sha256(CHAIN[5]).digest() == PLAINS[6]["prev"]
        assert state.updated_at_ms == RECEIVED_MS
        # A late record fills the hole; the chain's head stays where it was.
        ingest(store, CHAIN[4:5], received_at_ms=RECEIVED_MS + 9)
    with open_store(store_url) as store:
        state = store.ingest_state(GATEWAY)
        assert (state.contiguous_seq, state.highest_seq) == (5, 5)
        assert state.highest_seq_sha256 == sha256(CHAIN[5]).digest()
        assert state.updated_at_ms == RECEIVED_MS + 9
        assert store.ingest_state("GW-NEVER-SEEN") is None


def test_contiguous_seq_waits_for_seq_zero(store):
    ingest(store, CHAIN[1:3])
    assert store.ingest_state(GATEWAY).contiguous_seq is None
    ingest(store, CHAIN[0:1])
    assert store.ingest_state(GATEWAY).contiguous_seq == 2


def test_a_gap_finding_is_resolved_when_every_missing_record_arrives(store):
    gap = NewFinding("gap", 3, 4, {"expected": "seq 3", "observed": "seq 5", "records": [5]})
    ingest(store, CHAIN[:3] + CHAIN[5:6], findings=[gap])
    (found,) = store.findings(GATEWAY, open_only=True)
    assert (found.kind, found.first_seq, found.last_seq, found.detail) == ("gap", 3, 4,
                                                                           gap.detail)
    assert (found.first_seen_ms, found.resolved_at_ms) == (RECEIVED_MS, None)
    ingest(store, CHAIN[3:4], findings=[gap], received_at_ms=RECEIVED_MS + 1)
    assert store.findings(GATEWAY, open_only=True) == [found]
    ingest(store, CHAIN[4:5], received_at_ms=RECEIVED_MS + 2)
    assert store.findings(GATEWAY, open_only=True) == []
    (resolved,) = store.findings(GATEWAY)
    assert (resolved.first_seen_ms, resolved.resolved_at_ms) == (RECEIVED_MS, RECEIVED_MS + 2)


def test_findings_of_every_kind_are_kept_per_gateway(store):
    reported = [NewFinding(kind, 3, 3, {"kind": kind}) for kind in migrations.FINDING_KINDS]
    store.ingest_batch(GATEWAY, [], findings=reported, received_at_ms=RECEIVED_MS)
    kept = store.findings(GATEWAY)
    assert sorted((f.kind, f.first_seq, f.last_seq, f.detail["kind"]) for f in kept) == sorted(
        (f.kind, 3, 3, f.kind) for f in reported)
    assert [f.kind for f in store.findings(GATEWAY, kind="rewind")] == ["rewind"]
    assert store.findings("GW-OTHER") == []


def test_the_schema_admits_every_outcome_and_finding_the_host_produces():
    produced = {verify.VERIFIED, verify.BAD_SIGNATURE, verify.UNKNOWN_KEY,
                verify.UNSUPPORTED_ALG, verify.MALFORMED}
    assert produced <= set(OUTCOMES) and len(OUTCOMES) == 7
    assert {chain.GAP, chain.FORK, chain.REPLAY, chain.CHAIN_BREAK, chain.REWIND} <= set(
        migrations.FINDING_KINDS)


# --- queries --------------------------------------------------------------------------------------


def test_records_come_in_pages_in_seq_order(store):
    ingest(store, CHAIN[6:] + CHAIN[:6])  # arrival order is not seq order
    items, pages = every_page(lambda after, **f: store.records(GATEWAY, after_seq=after, **f),
                              limit=5)
    assert pages == 3 and [r.seq for r in items] == list(range(len(CHAIN)))
    items, pages = every_page(lambda after, **f: store.records(GATEWAY, after_seq=after, **f),
                              limit=len(CHAIN))
    assert pages == 1 and len(items) == len(CHAIN)
    for bad in (0, 1001, "5"):
        with pytest.raises(StorageError, match="limit must be a whole number in 1..1000"):
            store.records(GATEWAY, limit=bad)


def _seqs_where(test):
    return [plain["seq"] for plain in PLAINS if test(plain)]


@pytest.mark.parametrize("filters, expected", [
    ({"kind": "fuel.sale"}, _seqs_where(lambda p: p["kind"] == "fuel.sale")),
    ({"kind": "event", "event_type": "boot"}, [4]),
    ({"dispenser_address": 0x50}, _seqs_where(lambda p: p.get("device", {}).get(
        "dispenser_address") == 0x50)),
    ({"dispenser_address": 0x50, "nozzle": 1, "kind": "event"}, [7]),
    ({"scale_id": "SN-2231-0007"}, [1]),
    ({"tank_number": 2}, _seqs_where(lambda p: p.get("device", {}).get("tank_number") == 2)),
    ({"seq_from": 3, "seq_to": 5}, [3, 4, 5]),
    ({"wall_time_from_ms": START_MS + 2 * 60000, "wall_time_before_ms": START_MS + 4 * 60000},
     [2, 3]),
    ({"kind": "fuel.sale", "seq_from": 1}, [5, 10]),
])
def test_records_filter_by_kind_device_seq_and_time(store, filters, expected):
    assert expected  # each case selects something, and less than everything
    assert len(expected) < len(CHAIN)
    ingest(store, CHAIN)
    items, _ = every_page(lambda after, **f: store.records(GATEWAY, after_seq=after, **f),
                          limit=2, **filters)
    assert [r.seq for r in items] == expected


def test_quarantine_comes_in_pages_in_arrival_order(store):
    garbage = [b"junk %d" % i for i in range(5)]
    store.ingest_batch(GATEWAY, verified(garbage[:3]))
    store.ingest_batch("GW-OTHER", verified([b"not ours"]))
    store.ingest_batch(GATEWAY, verified(garbage[3:]))
    items, pages = every_page(
        lambda after, **f: store.quarantine(GATEWAY, after_record_id=after, **f), limit=2)
    assert pages == 3 and [r.envelope for r in items] == garbage
    assert len(store.quarantine().items) == 6


# --- concurrency ----------------------------------------------------------------------------------


def test_readers_see_only_whole_batches_while_a_writer_commits(store_url):
    batches, size = 15, 4
    open_store(store_url).close()
    failures = []

    def write():
        try:
            with open_store(store_url) as writer:
                for batch in range(batches):
                    writer.ingest_batch(GATEWAY, verified(
                        [b"batch %d item %d" % (batch, i) for i in range(size)]))
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    writer = threading.Thread(target=write)
    seen = []
    with open_store(store_url) as reader:
        writer.start()
        while writer.is_alive():
            seen.append(reader.outcome_counts()["MALFORMED"])
        writer.join()
        seen.append(reader.outcome_counts()["MALFORMED"])
    assert failures == []
    assert all(count % size == 0 for count in seen), seen
    assert seen == sorted(seen) and seen[-1] == batches * size


def test_a_reader_snapshot_neither_blocks_nor_sees_the_writer(store_url):
    with open_store(store_url) as reader, open_store(store_url) as writer:
        ingest(writer, CHAIN[:2])
        with reader.snapshot():
            before = reader.records(GATEWAY).items
            # Under a rollback journal this commit would wait for the reader and time out.
            assert outcomes(ingest(writer, CHAIN[2:4])) == [STORED, STORED]
            assert reader.records(GATEWAY).items == before
            assert reader.ingest_state(GATEWAY).highest_seq == 1
        assert [r.seq for r in reader.records(GATEWAY).items] == [0, 1, 2, 3]


# --- durability and opening -----------------------------------------------------------------------


def test_commits_are_durable_when_they_return(store, store_url):
    expected = ({"journal_mode": "wal", "synchronous": "FULL"} if store_url.startswith("sqlite")
                else {"synchronous_commit": "on"})
    assert store.settings() == expected


def test_postgres_commits_are_synchronous_even_where_the_server_says_otherwise(postgres_server):
    name = postgres_server.create_database()
    try:
        postgres_server.admin(f"ALTER DATABASE {name} SET synchronous_commit = off")
        with open_store(postgres_server.url(name)) as store:
            assert store.settings() == {"synchronous_commit": "on"}
    finally:
        postgres_server.drop_database(name)


def test_a_data_directory_holds_meterseal_db(tmp_path):
    with open_store(tmp_path) as store:
        ingest(store, CHAIN[:1])
    assert (tmp_path / "meterseal.db").is_file()
    with open_store(f"sqlite://{tmp_path / 'meterseal.db'}") as store:
        assert [r.envelope for r in store.records(GATEWAY).items] == CHAIN[:1]



# For what only a PostgreSQL server does (end a session); conftest's store_url gives that alone.
postgresql_only = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


def end_other_sessions(url):
    """End every other client session of the PostgreSQL database at ``url``, as a server restart
    or a failover would (pg_terminate_backend, waiting until each process is gone); returns how
    many there were."""
    backend = open_backend(url)
    try:
        ended = backend.query(
            "SELECT pg_terminate_backend(pid, 10000) AS ended FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'")
    finally:
        backend.close()
    assert all(row["ended"] for row in ended), "a session outlived pg_terminate_backend"
    return len(ended)


@postgresql_only
def test_a_dropped_postgresql_session_fails_the_call_that_meets_it_and_the_next_reconnects(
        store, store_url, postgres_server):
    registry = store.registry
    registry.add_site("S-1", "Riverside station")
    # From now on the database's default is off: only a session that sets it again has it on.
    postgres_server.admin(f"ALTER DATABASE {store_url.rsplit('/', 1)[1]} "
                          "SET synchronous_commit = off")

    # A read: the one that meets the dropped session fails, the next one opens a new session.
    assert end_other_sessions(store_url) == 1
    with pytest.raises(StorageError, match="terminating connection") as raised:
        registry.sites()
    assert "\n" not in str(raised.value)
    assert [site.site_id for site in registry.sites()] == ["S-1"]
    assert store.settings() == {"synchronous_commit": "on"}

    # A write transaction: the one that meets it raises and stores nothing; the next commits.
    end_other_sessions(store_url)
    with pytest.raises(StorageError, match="terminating connection"):
        registry.add_site("S-2", "Market hall")
    registry.add_site("S-3", "Harbour")
    assert [site.site_id for site in registry.sites()] == ["S-1", "S-3"]

    # Inside a snapshot nothing reconnects: a new session would not share the snapshot's view.
    with pytest.raises(StorageError, match="the connection is closed"):  # its COMMIT
        with store.snapshot():
            registry.sites()
            end_other_sessions(store_url)
            with pytest.raises(StorageError, match="terminating connection"):
                registry.sites()
            with pytest.raises(StorageError, match="the connection is closed"):
                registry.sites()
    assert [site.site_id for site in registry.sites()] == ["S-1", "S-3"]
    assert store.settings() == {"synchronous_commit": "on"}


@pytest.mark.parametrize("target, message", [
    ("mysql://meter:s3cret@127.0.0.1/meterseal", "unsupported database URL scheme 'mysql'"),
    ("sqlite://relative.db", "must be sqlite:///ABSOLUTE/PATH"),
    ("{tmp}/no/such/dir/meterseal.db", "directory {tmp}/no/such/dir does not exist"),
    ("{tmp}/junk.db", "{tmp}/junk.db is not a SQLite database"),
    ("postgresql://meter:s3cret@[::1/meterseal", "invalid PostgreSQL URL"),
    ("postgresql://meter:s3cret@127.0.0.1:{port}/meterseal",
     "cannot connect to PostgreSQL database meterseal at 127.0.0.1:{port}: "),
])
def test_opening_fails_with_one_clear_line(tmp_path, target, message):
    (tmp_path / "junk.db").write_bytes(b"this is not a database, it is a text file " * 100)
    port = free_port()  # nothing listens there
    with pytest.raises(StorageError) as raised:
        open_store(target.format(tmp=tmp_path, port=port))
    text = str(raised.value)
    assert message.format(tmp=tmp_path, port=port) in text
    assert "\n" not in text and "s3cret" not in text


def test_without_psycopg_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(postgres, "psycopg", None)
    with pytest.raises(StorageError, match=r"pip install 'meterseal\[postgres\]'"):
        open_store("postgresql://127.0.0.1/meterseal")


# --- registry -------------------------------------------------------------------------------------


def test_the_site_id_of_the_detectors_shared_state_is_refused(store):
    with pytest.raises(StorageError, match="reserved"):
        store.registry.add_site(FLEET_ROW, "Star")
    assert store.registry.sites() == []


def test_the_registry_holds_sites_gateways_keys_and_devices(store):
    registry = store.registry
    registry.add_site("S-1", "Riverside station", "1 River Rd")
    registry.add_site("S-2", "Market hall")
    registry.add_gateway(GATEWAY, "SN-GW-1", "S-1", registered_at_ms=START_MS)
    registry.add_gateway("GW-2", "SN-GW-2", "S-2", status="suspended", registered_at_ms=START_MS)
    new_key = SoftwareSigner(RFC_KEY + 2).public_key()
    first = registry.add_key(GATEWAY, KEY.public_key(), valid_from_ms=START_MS)
    assert first.kid == KID == sha256(KEY.public_key()).digest()
    second = registry.add_key(GATEWAY, new_key, valid_from_ms=START_MS + 10, replaces_kid=KID)
    registry.revoke_key(second.kid, START_MS + 20)
    assert [(k.kid, k.replaced_by_kid, k.revoked_at_ms) for k in registry.keys(GATEWAY)] == [
        (KID, second.kid, None), (second.kid, None, START_MS + 20)]
    assert registry.key(KID).public_key == KEY.public_key()
    assert registry.key(b"\x00" * 32) is None
    registry.add_device(GATEWAY, "80", "dispenser", model="Helix 6000", serial="D-100",
                        type_approval_cert="CPA-2019-F123", expected_software_id="DFS-CPU 4.12")
    registry.add_device(GATEWAY, "tanks", "tank_gauge", model="TLS-350", serial="T-7",
                        type_approval_cert="CPA-2020-T9", expected_software_id="TLS 7.1")
    assert [(d.device_ref, d.device_type, d.type_approval_cert)
            for d in registry.devices(GATEWAY)] == [("80", "dispenser", "CPA-2019-F123"),
                                                    ("tanks", "tank_gauge", "CPA-2020-T9")]
    registry.set_gateway_status(GATEWAY, "retired")
    assert registry.gateway(GATEWAY).status == "retired"
    assert [g.gateway_id for g in registry.gateways()] == ["GW-2", GATEWAY]
    assert [g.gateway_id for g in registry.gateways("S-2")] == ["GW-2"]
    assert [(s.site_id, s.address) for s in registry.sites()] == [("S-1", "1 River Rd"),
                                                                  ("S-2", None)]
    assert registry.gateway("GW-NONE") is None


def test_the_registry_refuses_what_would_make_it_inconsistent(store):
    registry = store.registry
    registry.add_site("S-1", "Riverside station")
    registry.add_gateway(GATEWAY, "SN-GW-1", "S-1")
    registry.add_key(GATEWAY, KEY.public_key(), valid_from_ms=START_MS)
    other_key = SoftwareSigner(RFC_KEY + 3).public_key()
    device = dict(model="M", serial="S", type_approval_cert="C", expected_software_id="X")
    registry.add_device(GATEWAY, "80", "dispenser", **device)
    refusals = [
        (lambda: registry.add_site("S-1", "again"), "site S-1 is already registered"),
        (lambda: registry.add_gateway("GW-2", "SN-2", "S-9"), "site S-9 is not registered"),
        (lambda: registry.add_gateway(GATEWAY, "SN-3", "S-1"),
         f"gateway {GATEWAY} is already registered"),
        (lambda: registry.add_gateway("GW-3", "SN-GW-1", "S-1"),
         "a gateway with serial SN-GW-1 is already registered"),
        (lambda: registry.add_gateway("GW-4", "SN-4", "S-1", status="asleep"),
         "gateway status 'asleep' is not one of active, suspended, retired"),
        (lambda: registry.set_gateway_status("GW-9", "active"), "gateway GW-9 is not registered"),
        (lambda: registry.add_key("GW-9", other_key, 0), "gateway GW-9 is not registered"),
        (lambda: registry.add_key(GATEWAY, KEY.public_key(), 0),
         f"key {KID.hex()} is already registered"),
        (lambda: registry.add_key(GATEWAY, b"\x04" + bytes(10), 0), "public key must be 65"),
        (lambda: registry.add_key(GATEWAY, OFF_THE_CURVE, 0),
         f"gateway {GATEWAY}: public key {OFF_THE_CURVE.hex()} is not a P-256 point"),
        (lambda: registry.add_key(GATEWAY, other_key, 0, replaces_kid=b"\x01" * 32),
         f"key {'01' * 32} is not registered for gateway {GATEWAY}"),
        (lambda: registry.revoke_key(b"\x02" * 32, 0), f"key {'02' * 32} is not registered"),
        (lambda: registry.add_device(GATEWAY, "80", "dispenser", **device),
         f"device 80 of gateway {GATEWAY} is already registered"),
        (lambda: registry.add_device(GATEWAY, "81", "pump", **device),
         "device type 'pump' is not one of dispenser, scale, tank_gauge"),
    ]
    for attempt, message in refusals:
        with pytest.raises(StorageError) as raised:
            attempt()
        assert message in str(raised.value)
    registry.add_key(GATEWAY, other_key, 1, replaces_kid=KID)
    with pytest.raises(StorageError, match=f"key {KID.hex()} was already replaced"):
        registry.add_key(GATEWAY, SoftwareSigner(RFC_KEY + 4).public_key(), 2, replaces_kid=KID)
    registry.revoke_key(KID, 5)
    with pytest.raises(StorageError, match="is already revoked"):
        registry.revoke_key(KID, 6)
    assert [g.gateway_id for g in registry.gateways()] == [GATEWAY]
    assert len(registry.keys(GATEWAY)) == 2
