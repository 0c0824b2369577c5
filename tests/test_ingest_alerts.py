"""Chain findings and quarantined records become alerts as the ingest stores them: a real ingest
server on 127.0.0.1 over each storage backend (a SQLite file, a PostgreSQL database), frames
built by hand from a real gateway key."""

from meterseal.host import software_ids
from meterseal.host.simulated_gateway import SOFTWARE, START_WALL_MS, RecordMaker
from meterseal.host.storage import open_store
from meterseal.protocol import cose
from meterseal.protocol import uplink as wire

from ingest_site import new_signer
from test_ingest import GW, _corpus_run, key, registered  # noqa: F401 (fixtures)


def upload(db, key, batches, **config):
    """Upload each batch over one session, each acknowledged; returns the open alerts, ranked."""
    assert all(ack[0] == wire.ACK for ack in _corpus_run(db, key, batches, **config))
    with open_store(db) as store:
        return store.alerts.ranked(GW)


def record_ids(db, *seqs):
    with open_store(db) as store:
        return tuple(store.records(GW, seq_from=seq, seq_to=seq).items[0].record_id
                     for seq in seqs)


def quarantined_ids(db):
    with open_store(db) as store:
        return tuple(record.record_id for record in store.quarantine(GW).items)


def explains(alert, *numbers):
    for text in (alert.explanation_en, alert.explanation_zh):
        for number in numbers:
            assert str(number) in text, (number, text)


def test_a_gap_after_its_grace_is_a_medium_alert_naming_the_missing_records(registered, key):
    maker = RecordMaker(GW, key)
    before = [maker.batch(21), maker.batch(20)]
    for _ in range(4):
        maker.make()  # seq 41..44 withheld
    after = maker.batch(2)
    (alert,) = upload(registered, key, [*before, after], gap_grace_records=1, gap_grace_s=3600)
    assert (alert.rule, alert.severity, alert.device_ref) == ("chain.gap", "medium", None)
    assert "Expected seq 41 after 40, received 45: 4 records missing" in alert.explanation_en
    assert "应在序号40之后收到序号41，实际收到45：缺少4条记录" in alert.explanation_zh
    assert alert.evidence_record_ids == record_ids(registered, 40, 45)
    assert alert.parameters["missing_records"] == 4
    assert alert.parameters["gap_grace_records"] == 1


def test_a_fork_is_a_critical_alert_citing_both_records(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(3)
    twin_maker = RecordMaker(GW, key)
    twin_maker.batch(2)
    twin = twin_maker.make(body={"event_type": "tamper", "sensor": "door"})
    (alert,) = upload(registered, key, [batch, [twin]])
    assert (alert.rule, alert.severity) == ("chain.fork", "critical")
    assert alert.evidence_record_ids == record_ids(registered, 2) + quarantined_ids(registered)
    assert "for seq 2," in alert.explanation_en and "序号2收到" in alert.explanation_zh


def test_a_broken_prev_and_a_rewind_are_high_alerts(registered, key):
    maker = RecordMaker(GW, key, boot_epoch=5)
    batch = maker.batch(2) + [maker.make(prev=b"\x01" * 32)] + [maker.make(boot_epoch=3)]
    alerts = upload(registered, key, [batch])
    chain_break, rewind = sorted(alerts, key=lambda alert: alert.rule)
    assert [(a.rule, a.severity) for a in (chain_break, rewind)] == [
        ("chain.chain_break", "high"), ("chain.rewind", "high")]
    assert chain_break.evidence_record_ids == record_ids(registered, 1, 2)
    explains(chain_break, "0101010101010101", "1", "2")
    assert rewind.evidence_record_ids == record_ids(registered, 2, 3)
    assert "went from 5 to 3, back by 2" in rewind.explanation_en
    assert "从5变为3，倒退了2" in rewind.explanation_zh


def test_a_clock_set_back_is_a_medium_alert_with_the_amount(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(2) + [maker.make(wall_time_ms=maker.wall_time_ms - 3_600_000)]
    (alert,) = upload(registered, key, [batch], clock_tolerance_ms=5000)
    assert (alert.rule, alert.severity) == ("chain.clock_anomaly", "medium")
    assert alert.evidence_record_ids == record_ids(registered, 1, 2)
    explains(alert, 3599000, 5000)
    assert alert.parameters["tolerance_ms"] == 5000


def test_quarantined_records_are_alerts_one_per_rule(registered, key):
    stranger, retired_key = new_signer(), new_signer()
    with open_store(registered) as store:
        store.registry.add_key(GW, retired_key.public_key(), 0)
        store.registry.revoke_key(cose.kid_for(retired_key.public_key()), START_WALL_MS - 1)
    maker = RecordMaker(GW, key)
    forged = [bytearray(maker.make()) for _ in range(2)]
    for envelope in forged:
        envelope[-1] ^= 1  # the last byte of the signature
    batch = [bytes(f) for f in forged] + [maker.make(key=stranger), maker.make(key=retired_key),
                                          b"\xa0garbage", maker.make(gateway_id="GW-B")]
    alerts = upload(registered, key, [batch])
    by_rule = {alert.rule: alert for alert in alerts}
    assert {rule: alert.severity for rule, alert in by_rule.items()} == {
        "verify.bad_signature": "critical", "verify.revoked_key": "high",
        "verify.sender_mismatch": "high", "verify.unknown_key": "high",
        "verify.malformed": "medium"}
    ids = quarantined_ids(registered)
    assert by_rule["verify.bad_signature"].evidence_record_ids == ids[0:2]
    explains(by_rule["verify.bad_signature"], "0, 1")
    assert "2 record(s)" in by_rule["verify.bad_signature"].explanation_en
    assert "2条记录" in by_rule["verify.bad_signature"].explanation_zh
    assert by_rule["verify.unknown_key"].evidence_record_ids == (ids[2],)
    explains(by_rule["verify.unknown_key"], cose.kid_for(stranger.public_key()).hex()[:16])
    assert by_rule["verify.revoked_key"].evidence_record_ids == (ids[3],)
    explains(by_rule["verify.revoked_key"], "2025-12-31 23:59:59.999 UTC")
    assert by_rule["verify.malformed"].evidence_record_ids == (ids[4],)
    assert "1 item(s) of 8 bytes" in by_rule["verify.malformed"].explanation_en
    assert "1条数据（8字节）" in by_rule["verify.malformed"].explanation_zh
    assert by_rule["verify.sender_mismatch"].evidence_record_ids == (ids[5],)
    explains(by_rule["verify.sender_mismatch"], "GW-B", "GW-A")


def test_a_second_sighting_folds_into_the_open_alert(registered, key):
    maker = RecordMaker(GW, key)
    first, second = bytearray(maker.make()), bytearray(maker.make())
    first[-1] ^= 1
    second[-1] ^= 1
    (alert,) = upload(registered, key, [[bytes(first)], [bytes(second)]])
    assert (alert.rule, alert.occurrences) == ("verify.bad_signature", 2)
    assert alert.evidence_record_ids == quarantined_ids(registered)


def test_a_replay_raises_no_alert(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(4)
    forged = bytearray(maker.make())
    forged[-1] ^= 1
    (alert,) = upload(registered, key, [batch + [bytes(forged)], batch + [bytes(forged)]])
    assert (alert.rule, alert.occurrences) == ("verify.bad_signature", 1)
    with open_store(registered) as store:
        assert {f.kind for f in store.findings(GW)} == {"replay"}


def test_a_key_rotation_announcing_no_p256_key_is_a_high_alert_citing_it(registered, key):
    maker = RecordMaker(GW, key)
    announced = b"\x04" + b"\x01" * 64  # (1, 1) is no point of P-256
    batch = [maker.make(), maker.make(body={"event_type": "key_rotated",
                                            "new_public_key": announced}, event_count=1)]
    (alert,) = upload(registered, key, [batch, batch])  # the resend, a replay, raises nothing
    assert (alert.rule, alert.severity, alert.score, alert.occurrences) == (
        "verify.invalid_rotated_key", "high", 0.7, 1)
    assert alert.evidence_record_ids == record_ids(registered, 1)
    explains(alert, "0401010101010101", cose.kid_for(key.public_key()).hex()[:16], GW)
    assert "(seq 1)" in alert.explanation_en and "（序号1）" in alert.explanation_zh
    assert "not a P-256 public key" in alert.explanation_en
    assert alert.parameters["seqs"] == [1]
    assert alert.parameters["announced_public_keys"] == [announced.hex()]


def _register_software(db, software_id):
    with open_store(db) as store:
        store.registry.set_gateway_software(GW, software_id)


def test_records_of_unregistered_software_are_a_high_alert_and_registered_software_is_not(
        registered, key):
    reported = software_ids.software_id(SOFTWARE["software_name"], SOFTWARE["software_version"],
                                        SOFTWARE["software_digest"])
    maker = RecordMaker(GW, key)
    _register_software(registered, reported)
    assert upload(registered, key, [maker.batch(3)]) == []

    expected = "meterseal-gw 0.1.1 sha256:" + "ab" * 32
    _register_software(registered, expected)  # the registry now expects another build
    (alert,) = upload(registered, key, [maker.batch(2)])
    assert (alert.rule, alert.severity) == ("registry.unexpected_software", "high")
    assert alert.evidence_record_ids == record_ids(registered, 3, 4)
    assert alert.parameters == {"seqs": [3, 4], "registered_software_id": expected,
                                "reported_software_ids": [reported]}
    explains(alert, expected, reported, "3, 4")


def test_a_gateway_without_registered_software_is_not_checked(registered, key):
    assert upload(registered, key, [RecordMaker(GW, key).batch(3)]) == []
