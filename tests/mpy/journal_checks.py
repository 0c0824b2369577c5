# The journal and the gateway state on both interpreters, on real files and on the simulated
# storage: append, group commit, pending and acknowledge, segment rollover and deletion, capacity
# and drops, torn-tail recovery, the cursor, seq order, state save/load/corruption, and an
# append hot path that does not allocate.
# heapsize: 192K

import gc
import os
import random

from meterseal.firmware.journal import FRAME_OVERHEAD, Journal, JournalError, JournalFull
from meterseal.firmware.state import State, StateError
from sim_storage import PowerCut, SimStorage

try:
    import micropython
except ImportError:
    micropython = None

ROOT = "/tmp/journal_checks_%d" % random.getrandbits(30)
SMALL = {"segment_bytes": 256, "max_segments": 3, "group_records": 4, "group_ms": 100,
         "buffer_bytes": 128, "reserve_bytes": 48}

now_ms = [0]


def clock():
    return now_ms[0]


def envelope(seq):
    return b"E%d:" % seq + b"x" * (seq % 13)


def open_journal(root, storage=None, **overrides):
    options = dict(SMALL)
    options.update(overrides)
    return Journal(root, clock=clock, files=storage, **options)


def seqs(pairs):
    return [seq for seq, _ in pairs]


def remove_tree(path):
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    os.rmdir(path)


os.mkdir(ROOT)

# --- append, group commit, pending, acknowledge, rollover, deletion (real files) ---
root = ROOT + "/j1"
journal = open_journal(root)
assert journal.recovery == {"bytes_truncated": 0, "last_good_seq": None, "cursor_lost": False}
assert journal.last() is None and journal.highest_seq() is None and journal.pending(10) == []
assert journal.stats() == {"used_bytes": 0, "capacity_bytes": 768, "unacked_records": 0,
                           "dropped_total": 0}
for seq in range(1, 4):
    journal.append(seq, envelope(seq))
# Three records wait in RAM (group of 4, 100 ms not passed): a reopen does not see them.
assert open_journal(root).highest_seq() is None
journal.append(4, envelope(4))  # the fourth completes the group
assert open_journal(root).highest_seq() == 4
journal.append(5, envelope(5))
now_ms[0] += 100
journal.poll()  # the group's time is up
assert open_journal(root).last() == (5, envelope(5))
assert journal.last() == (5, envelope(5)) and journal.highest_seq() == 5

for seq in range(6, 21):
    journal.append(seq, envelope(seq))
assert journal.last() == (20, envelope(20))  # served from the RAM buffer
segment_names = sorted(n for n in os.listdir(root) if n.endswith(".jnl"))
assert len(segment_names) >= 2, segment_names
assert seqs(journal.pending(100)) == list(range(1, 21))  # pending flushes first
assert journal.pending(3) == [(1, envelope(1)), (2, envelope(2)), (3, envelope(3))]
assert journal.stats()["unacked_records"] == 20

journal.acknowledge(7)
assert seqs(journal.pending(3)) == [8, 9, 10]
assert journal.stats()["unacked_records"] == 13
journal.acknowledge(7)  # a repeated ACK changes nothing
journal.acknowledge(3)
assert seqs(journal.pending(1)) == [8]
journal.acknowledge(10**6)  # beyond the newest record: capped at it
assert journal.pending(10) == [] and journal.stats()["unacked_records"] == 0
remaining = sorted(n for n in os.listdir(root) if n.endswith(".jnl"))
assert remaining == segment_names[-1:], remaining  # only the newest segment is kept
assert journal.last() == (20, envelope(20))

# The cursor survives a reboot; records after it come back, nothing before it.
journal.append(21, envelope(21))
journal.append(22, envelope(22))
journal.flush()
journal.close()
journal = open_journal(root)
assert seqs(journal.pending(10)) == [21, 22] and journal.highest_seq() == 22
journal.acknowledge(21)
journal = open_journal(root)
assert seqs(journal.pending(10)) == [22]
assert journal.stats()["unacked_records"] == 1

# --- seq order and limits ---
for bad in (22, 21, 0, "23"):
    try:
        journal.append(bad, b"x")
        raise AssertionError("seq %r accepted" % (bad,))
    except ValueError:
        pass
try:
    journal.append(23, b"x" * (journal.max_envelope_bytes + 1))
    raise AssertionError("oversized envelope accepted")
except ValueError as e:
    assert "limit of %d" % journal.max_envelope_bytes in str(e), e
journal.append(23, b"x" * journal.max_envelope_bytes)
journal.flush()
assert journal.last() == (23, b"x" * journal.max_envelope_bytes)

# --- torn tail: garbage and a half frame after the last flush, then a reboot ---
newest = sorted(n for n in os.listdir(root) if n.endswith(".jnl"))[-1]
size_before = os.stat(root + "/" + newest)[6]
with open(root + "/" + newest, "ab") as f:
    f.write(b"\x00\x00\x00\x20\x00\x00")  # a frame header cut short
journal = open_journal(root)
assert journal.recovery == {"bytes_truncated": 6, "last_good_seq": 23, "cursor_lost": False}
assert os.stat(root + "/" + newest)[6] == size_before
assert open_journal(root).recovery["bytes_truncated"] == 0  # truncated for good
journal.append(24, envelope(24))
journal.flush()
assert seqs(journal.pending(10)) == [22, 23, 24]

# A frame whose CRC fails is cut off with everything after it.
journal.append(25, envelope(25))
journal.flush()
path = root + "/" + sorted(n for n in os.listdir(root) if n.endswith(".jnl"))[-1]
with open(path, "rb") as f:
    data = bytearray(f.read())
data[-5] ^= 0x01  # last envelope byte of seq 25
with open(path, "wb") as f:
    f.write(data)
journal = open_journal(root)
assert journal.recovery["bytes_truncated"] == FRAME_OVERHEAD + len(envelope(25))
assert journal.recovery["last_good_seq"] == 24 and journal.highest_seq() == 24

# A corrupt cursor is reported, and everything kept is offered again (the host dedups).
with open(root + "/cursor", "wb") as f:
    f.write(b"MSC\x01garbage!garb")
journal = open_journal(root)
assert journal.recovery["cursor_lost"] is True
assert seqs(journal.pending(100))[0] <= 22

# A segment that is not ours is refused, never deleted.
with open(root + "/seg99999999.jnl", "wb") as f:
    f.write(b"NOPE and more")
try:
    open_journal(root)
    raise AssertionError("foreign segment accepted")
except JournalError as e:
    assert "seg99999999.jnl" in str(e) and "bad magic" in str(e), e
os.remove(root + "/seg99999999.jnl")
remove_tree(root)

# --- capacity: full, reserve, dropped counts, room again after an ACK ---
root = ROOT + "/j2"
journal = open_journal(root)
seq = 0
try:
    while True:
        seq += 1
        journal.append(seq, envelope(seq))
except JournalFull as e:
    assert e.seq == seq and e.dropped == 1
first_dropped = seq
used = journal.stats()["used_bytes"]
assert journal.stats()["capacity_bytes"] - used >= SMALL["reserve_bytes"] - FRAME_OVERHEAD - 16
assert not journal.has_room(len(envelope(seq + 1)))
for seq in range(seq + 1, seq + 4):
    try:
        journal.append(seq, envelope(seq))
        raise AssertionError("appended into a full journal")
    except JournalFull as e:
        assert e.dropped == seq - first_dropped + 1
assert journal.dropped() == (4, first_dropped, seq)
assert journal.stats()["dropped_total"] == 4
# The journal_full event goes into the reserve; nothing unacknowledged was evicted.
seq += 1
journal.append(seq, b"journal_full event", reserved=True)
journal.flush()
assert seqs(journal.pending(100)) == list(range(1, first_dropped)) + [seq]
# A dropped seq is never reused.
try:
    journal.append(first_dropped, b"again")
    raise AssertionError("dropped seq reused")
except ValueError:
    pass
journal.acknowledge(first_dropped - 1)
assert journal.has_room(len(envelope(seq + 1)))
seq += 1
journal.append(seq, b"records_dropped event")
journal.dropped_reported()
assert journal.dropped() is None and journal.stats()["dropped_total"] == 4
journal.flush()
assert journal.stats()["unacked_records"] == 2
remove_tree(root)

# --- the append hot path allocates nothing (between flushes) ---
if micropython:
    root = ROOT + "/j3"
    journal = open_journal(root, segment_bytes=65536, buffer_bytes=8192, group_records=1000,
                           group_ms=10**6)
    payload = b"p" * 200
    journal.append(1, payload)
    gc.collect()
    micropython.heap_lock()
    try:
        for seq in range(2, 30):
            journal.append(seq, payload)
    finally:
        micropython.heap_unlock()
    journal.flush()
    assert seqs(journal.pending(100)) == list(range(1, 30))
    journal.close()
    remove_tree(root)

# --- a power cut at every step of a short workload (the pytest suite sweeps longer ones) ---
def workload(storage, flushed, acked):
    # acked: [cursor confirmed, cursor being written]; either may survive a cut.
    journal = open_journal("/sim", storage)
    for seq in range(1, 40):
        journal.append(seq, envelope(seq))
        if seq % 3 == 0:
            journal.flush()
            flushed[0] = seq
        if seq % 10 == 0:
            acked[1] = seq - 5
            journal.acknowledge(seq - 5)
            acked[0] = seq - 5


storage = SimStorage()
workload(storage, [0], [0, 0])
total_steps = storage.steps
for cut in range(0, total_steps + 1, 7):
    storage = SimStorage()
    flushed, acked = [0], [0, 0]
    storage.cut_after(cut)
    try:
        workload(storage, flushed, acked)
    except (PowerCut, JournalError):
        pass
    storage.power_on()
    journal = open_journal("/sim", storage)
    got = seqs(journal.pending(100))
    assert got == sorted(set(got)), (cut, got)
    for record in journal.pending(100):
        assert record[1] == envelope(record[0]), (cut, record)
    durable = [s for s in got if s <= flushed[0]]
    assert durable in (list(range(c + 1, flushed[0] + 1)) for c in acked), (cut, got, acked)
    assert open_journal("/sim", storage).recovery["bytes_truncated"] == 0

# --- state: save, load, reservation, corruption ---
path = ROOT + "/state"
state = State.load(path, seq_block=4)
assert state.created and state.boot_epoch == 0 and state.heartbeat_interval_s == 300
assert state.begin_boot(None) == 0 and state.boot_epoch == 1
assert [state.next_seq() for _ in range(5)] == [1, 2, 3, 4, 5]
assert state.seq_reserved_until == 8
state.opsec = 3600
state.event_count = 7
state.set_device_fact("dart:80", "identity", "WAYNE-123")
state.set_device_fact("dart:80", "param_checksum", b"\x12\x34")
state.set_device_fact("dart:80", "k_factors", [100000, 100250])
state.totalizers["80/1"] = [123456789, 98765]
state.save()
again = State.load(path, seq_block=4)
assert not again.created and again.opsec == 3600 and again.event_count == 7
assert again.device_fact("dart:80", "param_checksum") == b"\x12\x34"
assert again.device_fact("dart:80", "k_factors") == [100000, 100250]
assert again.device_fact("dart:81", "identity") is None
assert again.totalizers["80/1"] == [123456789, 98765]
# Journal lost entirely: the reservation still moves past every seq handed out.
assert again.begin_boot(None) == 8 and again.boot_epoch == 2
# Journal ahead of the reservation (state restored from an old copy): the journal wins.
assert State.load(path, seq_block=4).begin_boot(100) == 101

with open(path, "rb") as f:
    data = bytearray(f.read())
for position in (0, 10, len(data) - 1):
    damaged = bytearray(data)
    damaged[position] ^= 0x40
    with open(path, "wb") as f:
        f.write(damaged)
    try:
        State.load(path)
        raise AssertionError("corrupt state accepted at byte %d" % position)
    except StateError as e:
        assert path in str(e), e
fresh = State.replace_corrupt(path)
assert fresh.created and fresh.boot_epoch == 0
with open(path + ".bad", "rb") as f:
    assert f.read() == damaged  # kept as evidence
os.remove(path + ".bad")
remove_tree(ROOT)

print("PASS journal_checks")
