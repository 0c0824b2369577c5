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


def test_resumed_tracker_continues_the_stored_chain_and_a_fresh_one_expects_seq_0():
    records = _records(6)
    tracker = chain.ChainTracker.resume(3, sha256(records[3][0]).digest(), 1)
    assert tracker.feed(*records[4]) == []
    assert _kinds(tracker.feed(b"forged-5", 5, 1, b"\x03" * 32)) == [chain.CHAIN_BREAK]
    fresh = chain.ChainTracker.resume()
    (gap,) = fresh.feed(*records[2])
    assert (gap.kind, gap.first_seq, gap.last_seq) == (chain.GAP, 0, 1)
    assert fresh.needs_lookup(1) and not fresh.needs_lookup(3)


def test_gap_grace_reports_only_what_is_still_missing_once_its_grace_is_over():
    grace = chain.GapGrace(grace_s=60, grace_records=3)
    grace.hold(chain.Finding(chain.GAP, 9, "seq 5..8", 5, 8), now_s=0)
    grace.fill(6)  # a late record splits the gap
    assert grace.due(now_s=59) == []
    (first, second) = grace.due(now_s=60)
    assert [(f.first_seq, f.last_seq) for f in (first, second)] == [(5, 5), (7, 8)]
    grace.hold(chain.Finding(chain.GAP, 3, "seq 2", 2, 2), now_s=0)
    for seq in (10, 11):
        grace.fill(seq)
    assert grace.due(now_s=1) == []
    grace.fill(12)
    assert [f.first_seq for f in grace.due(now_s=1)] == [2]
    grace.hold(chain.Finding(chain.GAP, 3, "seq 2", 2, 2), now_s=0)
    grace.fill(2)
    assert grace.due(now_s=1000) == [] and len(grace) == 0


def _clock_record(seq, wall_time_ms, opsec, clock_set_count=0, boot_epoch=1):
    return {"seq": seq, "wall_time_ms": wall_time_ms, "opsec": opsec,
            "clock_set_count": clock_set_count, "boot_epoch": boot_epoch}


def test_clock_watch_flags_time_going_back_or_drifting_from_opsec_without_a_time_set():
    watch = chain.ClockWatch(tolerance_ms=5000)
    assert watch.feed(_clock_record(0, 1_000_000, 10)) == []
    assert watch.feed(_clock_record(1, 1_060_000, 70)) == []
    (back,) = watch.feed(_clock_record(2, 1_000_000, 71))
    assert back.kind == chain.CLOCK_ANOMALY and "went back" in back.detail
    (fast,) = watch.feed(_clock_record(3, 2_000_000, 72))
    assert "opsec advanced" in fast.detail
    # A time_set (clock_set_count moved) or a reboot may step the clock.
    assert watch.feed(_clock_record(4, 5_000, 73, clock_set_count=1)) == []
    assert watch.feed(_clock_record(5, 0, 74, clock_set_count=1, boot_epoch=2)) == []
    assert watch.feed(_clock_record(3, 0, 1)) == []  # a late record is not compared
