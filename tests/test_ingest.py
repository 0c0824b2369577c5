"""The ingest server (host/ingest.py) on 127.0.0.1, over each storage backend (conftest's
store_url: a SQLite file and a database on the session's PostgreSQL server): the handshake and
its refusals, verify -> store -> ACK, the adversarial corpus built from a real gateway key and
hand-made frames, the real firmware under MicroPython uploading to it, and a host SIGKILLed in
the middle of an upload."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import pytest

from meterseal.firmware.signer import SoftwareSigner, generate_secret
from meterseal.hil import micropython
from meterseal.hil.emulators.tank_gauge import Tank, TankGauge
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock
from meterseal.host import verify
from meterseal.host.simulated_gateway import START_WALL_MS, RecordMaker, provision
from meterseal.host.storage import open_backend, open_store
from meterseal.protocol import cose
from meterseal.protocol import uplink as wire

from gateway_site import free_port, gateway_key, kill_gateway, start_gateway, write_config
from ingest_site import (RawGateway, ServerThread, new_signer, running_server, sqlite_only,
                         stop_server, wait_until)
from test_storage import OFF_THE_CURVE, end_other_sessions, postgresql_only

GW = "GW-A"


@pytest.fixture
def key():
    return new_signer()


@pytest.fixture
def registered(store_url, key):
    """The database, on each backend, with GW registered under ``key``."""
    with open_store(store_url) as store:
        provision(store, GW, key.public_key())
    return store_url


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def accepted_seqs(store, gateway_id=GW):
    return [r.seq for r in store.records(gateway_id, limit=1000).items]


def finding_kinds(store, gateway_id=GW):
    return sorted({f.kind for f in store.findings(gateway_id)})


# --- handshake, verify -> store -> ACK ----------------------------------------------------------


def test_batches_are_verified_stored_then_acknowledged_and_a_reconnect_resumes(registered, key):
    maker = RecordMaker(GW, key)

    async def scenario():
        server = await running_server(registered)
        gateway = RawGateway(GW, key)
        try:
            ack = await gateway.handshake(server.port)
            assert ack[0] == wire.ACK and "seq" not in ack[1]  # the host holds nothing yet
            assert ack[1]["host_time_ms"] >= START_WALL_MS
            assert await gateway.upload(maker.batch(5)) == (wire.ACK, {
                "seq": 4, "host_time_ms": pytest.approx(ack[1]["host_time_ms"], abs=60_000)})
            assert (await gateway.upload(maker.batch(3)))[1]["seq"] == 7
            await gateway.send(wire.PING, {})
            assert await gateway.receive() == (wire.PONG, {})
            await gateway.close()
            # A new session: the handshake ACK says what the host holds, capped at the journal.
            ack = await RawGateway(GW, key).handshake(server.port, highest_seq=9)
            assert ack[0] == wire.ACK and ack[1]["seq"] == 7
            ack = await RawGateway(GW, key).handshake(server.port, highest_seq=5)
            assert ack[1]["seq"] == 5
        finally:
            await stop_server(server)

    run(scenario())
    with open_store(registered) as store:
        assert accepted_seqs(store) == list(range(8))
        assert store.outcome_counts(GW)["VERIFIED"] == 8
        assert store.findings(GW) == []
        state = store.ingest_state(GW)
        assert (state.contiguous_seq, state.highest_seq) == (7, 7)


@pytest.mark.parametrize("case, code, reason", [
    ("unknown gateway", wire.NACK_UNKNOWN_GATEWAY, "not registered"),
    ("unknown kid", wire.NACK_UNKNOWN_GATEWAY, "is not registered for gateway"),
    ("revoked key", wire.NACK_UNKNOWN_GATEWAY, "is revoked"),
    ("suspended gateway", wire.NACK_UNKNOWN_GATEWAY, "is suspended"),
    ("retired gateway", wire.NACK_UNKNOWN_GATEWAY, "is retired"),
    ("bad AUTH", wire.NACK_AUTH_FAILED, "does not verify"),
])
def test_handshake_refusals_are_nacked_with_a_reason_and_closed(registered, key, case, code,
                                                                reason, caplog):
    gateway_id, signing_key = GW, key
    with open_store(registered) as store:
        if case == "unknown gateway":
            gateway_id = "GW-NOBODY"
        elif case == "unknown kid":
            signing_key = new_signer()
        elif case == "revoked key":
            store.registry.revoke_key(cose.kid_for(key.public_key()), 1)
        elif case in ("suspended gateway", "retired gateway"):
            store.registry.set_gateway_status(GW, case.split()[0])

    async def scenario():
        server = await running_server(registered)
        gateway = RawGateway(gateway_id, signing_key)
        try:
            if case == "bad AUTH":
                await gateway.connect(server.port)
                await gateway.send(wire.HELLO, gateway.hello())
                await gateway.receive()  # CHALLENGE
                await gateway.send(wire.AUTH, {"signature": bytes(64)})
                answer = await gateway.receive()
            else:
                answer = await gateway.handshake(server.port)
            closed = await gateway.receive()
        finally:
            await stop_server(server)
        return answer, closed

    answer, closed = run(scenario())
    assert answer[0] == wire.NACK and answer[1]["code"] == code
    assert reason in answer[1]["reason"]
    assert closed is None
    lines = [r for r in caplog.records if r.name == "meterseal.ingest" and "NACK" in r.message]
    assert len(lines) == 1 and reason in lines[0].message and lines[0].exc_info is None



@pytest.mark.parametrize("gateway_id, announces_a_key", [
    ("GW\x00A", False), ("GW\x00A", True), ("GW\nA", False), ("GW A", False), ("GW-\u00c4", False),
], ids=["NUL", "NUL, announcing a key", "newline", "space", "non-ASCII"])
def test_a_hello_whose_gateway_id_is_no_identifier_is_refused_as_unknown(
        registered, key, gateway_id, announces_a_key, caplog):
    """No registry holds such an id (records name their gateway in the schema's identifier
    alphabet): it is refused before any lookup, which PostgreSQL would fail on a NUL."""
    signing_key, announcement = key, None
    if announces_a_key:  # the HELLO names a new kid and carries the record announcing it
        signing_key = new_signer()
        announcement = RecordMaker(GW, key).make(body={
            "event_type": "key_rotated", "new_public_key": signing_key.public_key()})

    async def scenario():
        server = await running_server(registered)
        gateway = RawGateway(gateway_id, signing_key)
        try:
            answer = await gateway.handshake(server.port, key_announcement=announcement)
            return answer, await gateway.receive()
        finally:
            await stop_server(server)

    answer, closed = run(scenario())
    assert answer == (wire.NACK, {"code": wire.NACK_UNKNOWN_GATEWAY, "reason": (
        f"gateway_id: must be 1..32 characters from A-Z a-z 0-9 . _ -, got {gateway_id!r}")})
    assert closed is None
    (line,) = [r for r in caplog.records if r.name == "meterseal.ingest"]
    assert "NACK 4" in line.message and repr(gateway_id) in line.message
    assert not {"\x00", "\n"} & set(line.message) and line.exc_info is None  # one line

# --- the adversarial corpus ---------------------------------------------------------------------


def _corpus_run(db, key, batches, **config):
    """Upload each batch over one session; returns the ACKs."""

    async def scenario():
        server = await running_server(db, **config)
        gateway = RawGateway(GW, key)
        try:
            assert (await gateway.handshake(server.port))[0] == wire.ACK
            return [await gateway.upload(batch) for batch in batches]
        finally:
            await stop_server(server)

    return run(scenario())


def test_forged_signature_is_quarantined_as_bad_signature_and_still_acknowledged(registered, key):
    maker = RecordMaker(GW, key)
    good = maker.batch(2)
    forged = bytearray(maker.make())
    forged[-1] ^= 1  # the last byte of the signature
    acks = _corpus_run(registered, key, [good + [bytes(forged)]])
    assert acks[0][1]["seq"] == 2
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1]
        (quarantined,) = store.quarantine(GW).items
        assert quarantined.outcome == verify.BAD_SIGNATURE and quarantined.envelope == forged


def test_unknown_and_revoked_keys_are_quarantined_with_their_outcome(registered, key):
    stranger, retired_key = new_signer(), new_signer()
    with open_store(registered) as store:
        store.registry.add_key(GW, retired_key.public_key(), 0)
        store.registry.revoke_key(cose.kid_for(retired_key.public_key()), START_WALL_MS - 1)
    maker = RecordMaker(GW, key)
    batch = [maker.make(), maker.make(key=stranger), maker.make(key=retired_key)]
    _corpus_run(registered, key, [batch])
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0]
        outcomes = [r.outcome for r in store.quarantine(GW).items]
        assert outcomes == [verify.UNKNOWN_KEY, verify.REVOKED_KEY]


def test_replayed_batch_gets_the_same_ack_and_is_stored_once(registered, key):
    batch = RecordMaker(GW, key).batch(4)
    acks = _corpus_run(registered, key, [batch, batch])
    assert acks[0][1]["seq"] == acks[1][1]["seq"] == 3
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1, 2, 3]
        assert sum(store.outcome_counts(GW).values()) == 4
        assert store.forks(GW) == []
        assert finding_kinds(store) == ["replay"]


def test_dropped_record_is_a_gap_only_once_the_grace_period_is_over(registered, key):
    maker = RecordMaker(GW, key)
    first = maker.batch(3)
    maker.make()  # seq 3 is withheld
    later = [maker.batch(2), maker.batch(2)]
    _corpus_run(registered, key, [first, later[0]], gap_grace_records=3, gap_grace_s=3600)
    with open_store(registered) as store:
        assert store.findings(GW) == []  # within its grace: perhaps merely late
    _corpus_run(registered, key, [later[1]], gap_grace_records=1, gap_grace_s=3600)
    with open_store(registered) as store:
        (gap,) = store.findings(GW)
        assert (gap.kind, gap.first_seq, gap.last_seq) == ("gap", 3, 3)
        assert "still missing after the grace period" in gap.detail["explanation"]


def test_gap_found_by_time_alone_is_reported_by_the_sweep(registered, key):
    maker = RecordMaker(GW, key)
    first = maker.batch(2)
    maker.make()

    async def scenario():
        server = await running_server(registered, gap_grace_s=0.2, gap_check_interval_s=0.1)
        gateway = RawGateway(GW, key)
        try:
            await gateway.handshake(server.port)
            await gateway.upload(first + [maker.make()])
            with open_store(registered) as reader:  # the server's own store is its worker's
                for _ in range(100):
                    if reader.findings(GW):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await stop_server(server)

    run(scenario())
    with open_store(registered) as store:
        assert [(f.kind, f.first_seq, f.last_seq) for f in store.findings(GW)] == [("gap", 2, 2)]


def test_same_seq_with_different_content_is_a_fork_and_both_are_kept(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(3)
    twin_maker = RecordMaker(GW, key)
    twin_maker.batch(2)
    twin = twin_maker.make(body={"event_type": "tamper", "sensor": "door"})
    _corpus_run(registered, key, [batch, [twin]])
    with open_store(registered) as store:
        (fork,) = store.forks(GW)
        assert fork.seq == 2 and fork.stored.envelope == batch[2] and fork.twin.envelope == twin
        assert finding_kinds(store) == ["fork"]
        assert accepted_seqs(store) == [0, 1, 2]


def test_reordered_records_are_stored_and_raise_no_gap(registered, key):
    records = RecordMaker(GW, key).batch(6)
    _corpus_run(registered, key, [records[:2], [records[3], records[2]], records[4:]],
                gap_grace_records=10)
    with open_store(registered) as store:
        assert accepted_seqs(store) == list(range(6))
        assert store.findings(GW) == []


def test_broken_prev_is_a_chain_break(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(2) + [maker.make(prev=b"\x01" * 32)]
    _corpus_run(registered, key, [batch])
    with open_store(registered) as store:
        (finding,) = store.findings(GW)
        assert (finding.kind, finding.first_seq) == ("chain_break", 2)
        assert finding.detail["observed_prev"] == "01" * 32


def test_boot_epoch_going_backwards_is_a_rewind(registered, key):
    maker = RecordMaker(GW, key, boot_epoch=5)
    batch = maker.batch(2) + [maker.make(boot_epoch=4)]
    _corpus_run(registered, key, [batch])
    with open_store(registered) as store:
        assert finding_kinds(store) == ["rewind"]


def test_clock_set_back_without_time_set_is_a_clock_anomaly_and_with_one_is_not(registered, key):
    maker = RecordMaker(GW, key)
    batch = maker.batch(2)
    batch.append(maker.make(wall_time_ms=maker.wall_time_ms - 3_600_000))  # an hour back
    stepped = maker.wall_time_ms - 7_200_000
    batch.append(maker.make(body={"event_type": "time_set", "old_wall_time_ms": maker.wall_time_ms,
                                  "new_wall_time_ms": stepped, "source": "host"},
                            wall_time_ms=stepped, clock_set_count=1))
    batch += maker.batch(2)
    _corpus_run(registered, key, [batch])
    with open_store(registered) as store:
        findings = store.findings(GW)
        assert [(f.kind, f.first_seq) for f in findings] == [("clock_anomaly", 2)]
        assert "went back 3599000 ms" in findings[0].detail["explanation"]


def test_unsynchronised_time_is_verified_with_a_warning(registered, key):
    maker = RecordMaker(GW, key)
    maker.time_status = "U"
    _corpus_run(registered, key, [maker.batch(2)])
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1]
        assert store.outcome_counts(GW)[verify.VERIFIED_WITH_WARNINGS] == 2


def test_a_verified_key_rotation_registers_the_new_key_for_records_and_auth(registered, key):
    maker = RecordMaker(GW, key)
    successor = new_signer()
    batch = [maker.make(), maker.make(body={"event_type": "key_rotated",
                                            "new_public_key": successor.public_key()},
                                      event_count=1)]
    batch += [maker.make(key=successor, event_count=1) for _ in range(2)]
    _corpus_run(registered, key, [batch])

    async def reconnect():
        server = await running_server(registered)
        try:
            return await RawGateway(GW, successor).handshake(server.port)
        finally:
            await stop_server(server)

    assert run(reconnect())[0] == wire.ACK
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1, 2, 3]
        old = store.registry.key(cose.kid_for(key.public_key()))
        assert old.replaced_by_kid == cose.kid_for(successor.public_key())


def test_a_hello_carrying_the_announcement_registers_a_key_whose_record_never_arrived(
        registered, key):
    """The gateway switched keys but its session ended before the key_rotated record went up:
    the next HELLO names the new kid and carries that record, signed with the old key."""
    maker = RecordMaker(GW, key)
    _corpus_run(registered, key, [[maker.make()]])
    successor, impostor = new_signer(), new_signer()
    announcement = maker.make(body={"event_type": "key_rotated",
                                    "new_public_key": successor.public_key()}, event_count=1)
    forged = RecordMaker(GW, impostor).make(body={"event_type": "key_rotated",
                                                  "new_public_key": impostor.public_key()})

    async def hello_with(gateway_key, carried):
        server = await running_server(registered)
        gateway = RawGateway(GW, gateway_key)
        try:
            return await gateway.handshake(server.port, key_announcement=carried)
        finally:
            await gateway.close()
            await stop_server(server)

    refused = run(hello_with(impostor, forged))  # announced under a key the host never had
    assert refused[0] == wire.NACK and "not registered" in refused[1]["reason"]
    assert run(hello_with(successor, announcement))[0] == wire.ACK
    with open_store(registered) as store:
        old = store.registry.key(cose.kid_for(key.public_key()))
        assert old.replaced_by_kid == cose.kid_for(successor.public_key())
        assert store.registry.key(cose.kid_for(impostor.public_key())) is None



NOT_P256_KEYS = {"off the curve": OFF_THE_CURVE, "compressed form": b"\x02" + bytes(64)}


@pytest.mark.parametrize("case", sorted(NOT_P256_KEYS))
def test_a_key_rotation_announcing_no_p256_key_is_stored_and_its_key_not_registered(
        registered, key, case, caplog):
    """A verified key_rotated record is evidence and is kept, but a key that can verify nothing
    is not registered: the batch is stored and acknowledged, not resent forever."""
    maker = RecordMaker(GW, key)
    batch = [maker.make(), maker.make(body={"event_type": "key_rotated",
                                            "new_public_key": NOT_P256_KEYS[case]},
                                      event_count=1), maker.make(event_count=1)]
    (ack,) = _corpus_run(registered, key, [batch])
    assert ack[0] == wire.ACK and ack[1]["seq"] == 2
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1, 2]
        (rotation,) = store.records(GW, event_type="key_rotated").items
        assert (rotation.seq, rotation.outcome) == (1, verify.VERIFIED)
        (only,) = store.registry.keys(GW)
        assert only.kid == cose.kid_for(key.public_key()) and only.replaced_by_kid is None
    (line,) = [r for r in caplog.records if "key_rotated seq 1" in r.message]
    assert "not a P-256 public key" in line.message and line.exc_info is None


@pytest.mark.parametrize("case", sorted(NOT_P256_KEYS))
def test_a_hello_announcing_no_p256_key_is_refused_and_registers_nothing(registered, key, case):
    maker = RecordMaker(GW, key)
    _corpus_run(registered, key, [[maker.make()]])
    announced = NOT_P256_KEYS[case]
    announcement = maker.make(body={"event_type": "key_rotated", "new_public_key": announced},
                              event_count=1)

    async def scenario():
        server = await running_server(registered)
        gateway = RawGateway(GW, key)
        try:
            await gateway.connect(server.port)
            hello = dict(gateway.hello(), kid=sha256(announced).digest(),
                         key_announcement=announcement)
            await gateway.send(wire.HELLO, hello)
            return await gateway.receive()
        finally:
            await gateway.close()
            await stop_server(server)

    answer = run(scenario())
    assert answer[0] == wire.NACK and answer[1]["code"] == wire.NACK_UNKNOWN_GATEWAY
    assert "is not registered for gateway" in answer[1]["reason"]
    with open_store(registered) as store:
        assert [k.kid for k in store.registry.keys(GW)] == [cose.kid_for(key.public_key())]

MALFORMED_INPUTS = {
    "garbage": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad CRC": bytes(wire.encode(wire.PING, {}))[:-1] + b"\x00",
    "oversized": b"MS\x01\x04" + (wire.MAX_PAYLOAD_BYTES + 1).to_bytes(4, "big"),
    "truncated": bytes(wire.encode(wire.PING, {}))[:-3],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_INPUTS))
def test_malformed_input_closes_that_connection_only(registered, key, case, caplog):
    bad_key = new_signer()
    with open_store(registered) as store:
        provision(store, "GW-BAD", bad_key.public_key())
    maker = RecordMaker(GW, key)

    async def scenario():
        server = await running_server(registered)
        good, bad = RawGateway(GW, key), RawGateway("GW-BAD", bad_key)
        try:
            assert (await good.handshake(server.port))[0] == wire.ACK
            assert (await bad.handshake(server.port))[0] == wire.ACK
            assert (await good.upload(maker.batch(2)))[1]["seq"] == 1
            await bad.send_bytes(MALFORMED_INPUTS[case])
            if case == "truncated":
                bad.writer.write_eof()
            answers = []
            while (answer := await bad.receive()) is not None:
                answers.append(answer)
            # The good gateway, connected all along, carries on.
            assert (await good.upload(maker.batch(2)))[1]["seq"] == 3
            return answers
        finally:
            await stop_server(server)

    answers = run(scenario())
    if case != "truncated":
        assert [a[0] for a in answers] == [wire.NACK]
        assert answers[0][1]["code"] == wire.NACK_MALFORMED
    lines = [r for r in caplog.records if "GW-BAD" in r.message and "closed" in r.message
             or "GW-BAD" in r.message and "lost" in r.message]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert ("truncated" in lines[0].message) == (case == "truncated")
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1, 2, 3]


@sqlite_only  # a timeout of the connection: the store plays no part
def test_idle_connection_is_closed_after_the_idle_timeout(registered, key):
    async def scenario():
        server = await running_server(registered, idle_timeout_s=0.3)
        gateway = RawGateway(GW, key)
        try:
            assert (await gateway.handshake(server.port))[0] == wire.ACK
            return await gateway.receive()
        finally:
            await stop_server(server)

    assert run(scenario()) is None


@sqlite_only  # refused before anything reaches the store
def test_batch_over_the_configured_limit_is_refused(registered, key):
    batch = RecordMaker(GW, key).batch(3)
    (answer,) = _corpus_run(registered, key, [batch], max_batch_records=2)
    assert answer[0] == wire.NACK and "max_batch_records=2" in answer[1]["reason"]
    with open_store(registered) as store:
        assert accepted_seqs(store) == []



def store_failures(caplog):
    return [r for r in caplog.records
            if r.name == "meterseal.ingest" and "the store failed" in r.message]


def test_a_store_failure_during_a_batch_is_logged_as_an_error_and_nothing_is_acknowledged(
        registered, key, caplog):
    """The store refuses the batch (its ingest state's table renamed behind the server's back):
    the transaction rolls back, no ACK goes out and one ERROR line says why. Once the store
    works again the gateway's resend is stored, once."""
    caplog.set_level(logging.INFO, logger="meterseal.ingest")
    batch = RecordMaker(GW, key).batch(3)

    def rename(old, new):
        backend = open_backend(registered)
        try:
            backend.execute(f"ALTER TABLE {old} RENAME TO {new}")
        finally:
            backend.close()

    async def scenario():
        server = await running_server(registered)
        try:
            gateway = RawGateway(GW, key)
            assert (await gateway.handshake(server.port))[0] == wire.ACK
            rename("gateway_ingest_state", "ingest_state_away")
            refused = await gateway.upload(batch)
            rename("ingest_state_away", "gateway_ingest_state")
            resent = RawGateway(GW, key)
            assert (await resent.handshake(server.port))[0] == wire.ACK
            return refused, await resent.upload(batch)
        finally:
            await stop_server(server)

    refused, answer = run(scenario())
    assert refused is None  # closed, unacknowledged
    assert answer[0] == wire.ACK and answer[1]["seq"] == 2
    (failure,) = store_failures(caplog)
    assert failure.levelno == logging.ERROR and failure.exc_info is None
    assert "gateway_ingest_state" in failure.message and "\n" not in failure.message
    assert not [r for r in caplog.records if "connection lost" in r.message]
    with open_store(registered) as store:
        assert accepted_seqs(store) == [0, 1, 2]
        assert sum(store.outcome_counts(GW).values()) == 3
        assert store.findings(GW) == []  # not even a replay: the first attempt stored nothing


@postgresql_only
def test_a_batch_that_meets_a_dropped_database_session_is_resent_and_stored_once(
        registered, key, caplog):
    """The database server drops the store's session (a restart, a failover) while a gateway is
    connected: its next batch fails, unacknowledged; its reconnect and resend find a new session
    and everything is stored exactly once."""
    maker = RecordMaker(GW, key)
    first, second = maker.batch(3), maker.batch(3)

    async def scenario():
        server = await running_server(registered)
        try:
            gateway = RawGateway(GW, key)
            assert (await gateway.handshake(server.port))[0] == wire.ACK
            assert (await gateway.upload(first))[1]["seq"] == 2
            assert end_other_sessions(registered) == 1  # the server's store's
            lost = await gateway.upload(second)
            resent = RawGateway(GW, key)
            ack = await resent.handshake(server.port, highest_seq=5)
            return lost, ack, await resent.upload(second)
        finally:
            await stop_server(server)

    lost, ack, answer = run(scenario())
    assert lost is None  # closed, unacknowledged: the gateway keeps the batch
    assert ack[0] == wire.ACK and ack[1]["seq"] == 2
    assert answer[0] == wire.ACK and answer[1]["seq"] == 5
    (failure,) = store_failures(caplog)
    assert "terminating connection" in failure.message
    with open_store(registered) as store:
        assert accepted_seqs(store) == list(range(6))
        assert sum(store.outcome_counts(GW).values()) == 6
        assert store.findings(GW) == []

def test_configuration_limits_are_checked():
    from meterseal.host.ingest import IngestConfig

    with pytest.raises(ValueError, match="max_frame_payload_bytes"):
        IngestConfig(max_frame_payload_bytes=wire.MAX_PAYLOAD_BYTES + 1)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        IngestConfig(idle_timeout_s=0)


# --- the real firmware under MicroPython --------------------------------------------------------


def test_the_whole_gateway_uploads_to_the_ingest_and_obeys_its_commands(tmp_path, store_url,
                                                                       device_image):
    """`gateway run` on the MicroPython unix port, with a tank gauge on a pty: every record it
    signs is verified and stored exactly once, commands are answered, and a key rotation made
    on command is registered so the records after it verify under the new key."""
    gateway_id = "MS-GW-INGEST"
    root = tmp_path / "gateway"
    root.mkdir()
    with open_store(store_url) as store:
        provision(store, gateway_id, gateway_key(root))
    clock = SimClock(speed=20)
    port = PtyPort()
    gauge = TankGauge(port, clock, tanks=(Tank(number=1, volume_ml=18_000_000),), seed=3)
    gauge.start()
    host = ServerThread(store_url)
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": gateway_id,
        "host": {"address": "127.0.0.1", "port": host.port, "tls": False},
        "devices": [{"name": "tanks", "protocol": "tls", "port": port.path, "addresses": [1]}],
        "intervals": {"heartbeat_s": 10, "tank_poll_s": 10},
        "paths": {"storage_root": str(root)},
        "journal": {"segment_bytes": 65536, "segments": 8, "commit_records": 4,
                    "commit_ms": 200},
        "watchdog": {"timeout_ms": 20000, "checkin_ms": 10000},
    })
    gateway = start_gateway(config, device_image)
    reader = open_store(store_url)
    try:
        wait_until(lambda: gateway_id in host.server.connected(), 60, "the gateway's session")

        def held(seq):
            return wait_until(lambda: reader.ingest_state(gateway_id) is not None
                              and reader.ingest_state(gateway_id).contiguous_seq is not None
                              and reader.ingest_state(gateway_id).contiguous_seq >= seq,
                              60, f"seq {seq} stored")

        answer = host.call(host.server.send_command(gateway_id, "read_totalizers", {}))
        assert answer["ok"] is True
        held(answer["result"]["seq"])
        rotated = host.call(host.server.send_command(gateway_id, "rotate_key", {}))
        assert rotated["ok"] is True, rotated
        new_kid = cose.kid_for(rotated["result"]["new_public_key"])
        after = host.call(host.server.send_command(gateway_id, "read_totalizers", {}))
        last_seq = after["result"]["seq"]
        held(last_seq)
        unknown = host.call(host.server.send_command(gateway_id, "launch_rocket", {}))
        assert unknown["ok"] is False and "unknown command" in unknown["error"]
    finally:
        kill_gateway(gateway)
        host.close()
        gauge.stop()
        port.close()
    try:
        stored = reader.records(gateway_id, limit=1000).items
        highest = reader.ingest_state(gateway_id).highest_seq
        assert [r.seq for r in stored] == list(range(highest + 1))  # exact: no gap, no twin
        assert {r.outcome for r in stored} <= set(verify.ACCEPTED)
        assert reader.quarantine(gateway_id).items == () and reader.forks(gateway_id) == []
        counts = reader.outcome_counts(gateway_id)
        assert sum(counts.values()) == len(stored) == highest + 1
        assert reader.findings(gateway_id) == []
        assert stored[0].event_type == "boot"
        rotation = next(r for r in stored if r.event_type == "key_rotated")
        assert rotation.seq == rotated["result"]["seq"]
        assert all(r.kid == new_kid for r in stored if r.seq > rotation.seq)
        assert reader.registry.key(new_kid).replaced_by_kid is None
        assert stored[last_seq].kind == "status" and stored[last_seq].kid == new_kid
    finally:
        reader.close()


# --- a host crash -------------------------------------------------------------------------------


def _start_host(db, port, *options):
    process = subprocess.Popen(
        [sys.executable, "-m", "meterseal.host.ingest", "--db", db, "--port", str(port),
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "listening on 127.0.0.1:%d" % port in line, line + process.stderr.read()
    return process


def test_host_killed_in_the_middle_of_uploads_loses_and_duplicates_nothing(tmp_path, store_url,
                                                                          device_image):
    """The host runs as its own process and is SIGKILLed twice while the real MicroPython
    uplink client uploads a backlog of 240 records in batches of 16 (the host's rate limit keeps
    a batch in hand most of the time); after each restart the client resends what was not
    acknowledged. The store ends with seq 0..239 exactly once, and nothing else."""
    total, secret = 240, generate_secret()
    key = SoftwareSigner(secret)
    with open_store(store_url) as store:
        provision(store, GW, key.public_key())
    maker = RecordMaker(GW, key)
    journal = tmp_path / "journal.bin"
    journal.write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in maker.batch(total)))
    port = free_port()
    config = write_config(tmp_path / "gateway.json", {
        "host": "127.0.0.1", "port": port, "gateway_id": GW, "secret": "%x" % secret,
        "journal": str(journal), "batch_records": 16, "backoff_min_ms": 100,
        "backoff_max_ms": 400, "poll_ms": 10, "deadline_ms": 90000,
    })
    options = ("--max-records-per-s", "60")
    host = _start_host(store_url, port, *options)
    gateway = subprocess.Popen(
        [micropython.micropython_command(), str(Path(__file__).parent / "ingest_gateway_mpy.py"),
         str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, MICROPYPATH=f"{device_image}:.frozen"))
    reader = open_store(store_url)
    try:
        for crash_after in (40, 120):
            wait_until(lambda: len(accepted_seqs(reader)) >= crash_after, 60,
                       f"{crash_after} records stored")
            host.send_signal(signal.SIGKILL)
            host.wait(10)
            host = _start_host(store_url, port, *options)
        output, _ = gateway.communicate(timeout=120)
    finally:
        for process in (gateway, host):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    try:
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert lines[-1] == {"done": True, "cursor": total - 1}, output
        sessions_ended = [l["log"] for l in lines if "log" in l and "session ended" in l["log"]]
        assert len(sessions_ended) >= 2  # each crash cut a session
        assert accepted_seqs(reader) == list(range(total))
        assert sum(reader.outcome_counts(GW).values()) == total  # nothing stored twice
        assert reader.forks(GW) == [] and reader.quarantine(GW).items == ()
        assert {f.kind for f in reader.findings(GW)} <= {"replay"}
    finally:
        reader.close()
