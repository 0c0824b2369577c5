from hashlib import sha256

from meterseal.host import chain


def _records(count):
    """Fake envelopes with correct links: (envelope, seq, boot, prev)."""
    out, prev = [], chain.GENESIS_PREV
    for seq in range(count):
        envelope = b"record-%d" % seq
        out.append((envelope, seq, 1, prev))
        prev = sha256(envelope).digest()
    return out


def _kinds(findings):
    return [f.kind for f in findings]


def test_intact_chain_raises_nothing():
    tracker = chain.ChainTracker()
    assert all(tracker.feed(*r) == [] for r in _records(20))


def test_deleted_record_is_a_gap_naming_the_missing_seqs():
    tracker = chain.ChainTracker()
    records = _records(6)
    del records[2:4]
    findings = [f for r in records for f in tracker.feed(*r)]
    assert _kinds(findings) == [chain.GAP]
    assert findings[0].seq == 4 and "seq 2..3" in findings[0].detail


def test_replay_is_idempotent_and_a_different_twin_is_a_fork():
    tracker = chain.ChainTracker()
    records = _records(3)
    for r in records:
        tracker.feed(*r)
    assert _kinds(tracker.feed(*records[1])) == [chain.REPLAY]
    envelope, seq, boot, prev = records[1]
    assert _kinds(tracker.feed(b"forged", seq, boot, prev)) == [chain.FORK]


def test_altered_link_is_a_chain_break():
    tracker = chain.ChainTracker()
    records = _records(3)
    tracker.feed(*records[0])
    envelope, seq, boot, _ = records[1]
    assert _kinds(tracker.feed(envelope, seq, boot, b"\x01" * 32)) == [chain.CHAIN_BREAK]


def test_first_record_must_start_from_genesis():
    tracker = chain.ChainTracker()
    assert _kinds(tracker.feed(b"r0", 0, 1, b"\x02" * 32)) == [chain.CHAIN_BREAK]


def test_seq_going_back_across_a_reboot_is_a_rewind():
    tracker = chain.ChainTracker()
    records = _records(5)
    for r in records[:2] + records[3:]:
        tracker.feed(*r)
    assert _kinds(tracker.feed(b"restored-state", 2, 2, records[2][3])) == [chain.REWIND]


def test_boot_epoch_going_back_is_a_rewind():
    tracker = chain.ChainTracker()
    records = _records(5)
    for r in records:
        tracker.feed(*r)
    next_prev = sha256(records[-1][0]).digest()
    assert _kinds(tracker.feed(b"record-5", 5, 0, next_prev)) == [chain.REWIND]


def test_late_record_filling_a_gap_is_not_a_rewind():
    tracker = chain.ChainTracker()
    records = _records(4)
    for r in (records[0], records[1], records[3]):
        tracker.feed(*r)
    assert tracker.feed(*records[2]) == []
