"""The journal under power cuts: simulated at every step of a workload, and real SIGKILLs of a
MicroPython writer. tests/mpy/journal_checks.py covers the plain behaviour on both interpreters.
"""

import copy
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterseal.firmware.journal import (
    FRAME_OVERHEAD,
    SEGMENT_MAGIC,
    Journal,
    JournalError,
    JournalFull,
)
from meterseal.hil import micropython

MPY_DIR = Path(__file__).parent / "mpy"
sys.path.insert(0, str(MPY_DIR))
from sim_storage import PowerCut, SimStorage  # noqa: E402

SMALL = dict(segment_bytes=256, max_segments=3, group_records=4, group_ms=50,
             buffer_bytes=128, reserve_bytes=48)


def envelope(seq):
    return b"%d|" % seq + bytes([seq & 0xFF]) * (seq * 7 % 23)


class Ledger:
    """What the workload knows for sure, updated only after a call returns."""

    def __init__(self):
        self.appended = {}  # seq -> envelope, every append that returned
        self.durable = set()  # seqs whose flush returned
        self.acked = [-1, -1]  # cursor confirmed, cursor being written


def workload(storage, ledger, clock):
    """Appends, group and explicit flushes, timed flushes, acknowledges, rollovers, deletions,
    a full journal with drops and a reserved append, and room again."""
    journal = Journal("/j", clock=lambda: clock[0], files=storage, **SMALL)

    def append(seq, reserved=False):
        journal.append(seq, envelope(seq), reserved)
        ledger.appended[seq] = envelope(seq)

    def flush():
        journal.flush()
        ledger.durable.update(ledger.appended)

    def acknowledge(seq):
        ledger.acked[1] = seq
        journal.acknowledge(seq)
        ledger.acked[0] = seq

    seq = 0
    for seq in range(1, 25):
        append(seq)
        if seq % 5 == 0:
            flush()
        if seq % 7 == 0:
            clock[0] += 60
            journal.poll()
        if seq % 4 == 0:
            acknowledge(seq - 3)
    flush()
    try:  # no ACKs for a while: the journal fills up
        while True:
            seq += 1
            append(seq)
    except JournalFull:
        pass
    seq += 1
    append(seq, reserved=True)
    flush()
    acknowledge(seq - 3)
    for seq in range(seq + 1, seq + 8):
        append(seq)
    journal.pending(100)
    ledger.durable.update(ledger.appended)  # pending() flushes
    acknowledge(seq - 2)
    append(seq + 1)
    flush()


def expected_truncation(storage):
    """Bytes recovery must cut: the partial frame of a segment write the cut tore."""
    torn = storage.torn
    if storage.lose_unsynced or torn is None or not torn[0].endswith(".jnl"):
        return 0
    _, file_offset, data, written = torn
    # A new segment starts with its magic; a cut inside the magic tears the whole file.
    pos = 0 if file_offset == 0 and written < len(SEGMENT_MAGIC) else len(SEGMENT_MAGIC)
    pos = pos if file_offset == 0 else 0
    while pos + FRAME_OVERHEAD <= written:
        end = pos + FRAME_OVERHEAD + struct.unpack_from(">I", data, pos)[0]
        if end > written:
            break
        pos = end
    return written - pos


def check_recovered(storage, ledger, clock, expect_truncated=None):
    journal = Journal("/j", clock=lambda: clock[0], files=storage, **SMALL)
    report = journal.recovery
    records = journal.pending(1000)
    seqs = [s for s, _ in records]
    assert seqs == sorted(set(seqs)), "duplicate or unordered seqs"
    for seq, env in records:
        assert ledger.appended.get(seq) == env or seq > max(ledger.appended, default=0)
        assert env == envelope(seq)
    # The cursor is the old or the new one, and nothing flushed after it is lost.
    assert any(
        all(s > cursor for s in seqs) and {s for s in ledger.durable if s > cursor} <= set(seqs)
        for cursor in ledger.acked
    ), (seqs, sorted(ledger.durable), ledger.acked)
    if expect_truncated is not None:
        assert report["bytes_truncated"] == expect_truncated
    if report["bytes_truncated"]:
        newest = journal.last()
        assert report["last_good_seq"] == (newest[0] if newest else None)
    # Truncation is for good, and the journal goes on from its last good record.
    again = Journal("/j", clock=lambda: clock[0], files=storage, **SMALL)
    assert again.recovery["bytes_truncated"] == 0
    next_seq = (again.highest_seq() or 0) + 1000
    again.append(next_seq, envelope(next_seq), reserved=True)
    again.flush()
    assert again.last() == (next_seq, envelope(next_seq))
    return report


def run_to_cut(cut, lose_unsynced):
    storage = SimStorage(lose_unsynced=lose_unsynced)
    ledger, clock = Ledger(), [0]
    storage.cut_after(cut)
    with pytest.raises((PowerCut, JournalError)):
        workload(storage, ledger, clock)
    storage.power_on()
    return storage, ledger, clock


def total_steps():
    storage = SimStorage()
    workload(storage, Ledger(), [0])
    return storage.steps


def test_workload_covers_what_it_claims():
    storage = SimStorage()
    ledger = Ledger()
    workload(storage, ledger, [0])
    journal = Journal("/j", files=storage, **SMALL)
    assert journal.recovery["bytes_truncated"] == 0
    names = sorted(storage.data)
    assert "/j/cursor" in names and "/j/seg00000001.jnl" not in names  # deleted after its ACK
    assert max(int(n[6:14]) for n in names if n.endswith(".jnl")) >= 4  # rolled over
    assert total_steps() > 1000


@pytest.mark.parametrize("lose_unsynced", [False, True], ids=["torn-writes", "unsynced-lost"])
def test_power_cut_at_every_step(lose_unsynced):
    truncated_cuts = 0
    for cut in range(total_steps()):
        storage, ledger, clock = run_to_cut(cut, lose_unsynced)
        report = check_recovered(storage, ledger, clock, expected_truncation(storage))
        truncated_cuts += bool(report["bytes_truncated"])
    if not lose_unsynced:
        assert truncated_cuts > 100  # the sweep really tore frames


def test_power_cut_during_recovery():
    """A second cut while recovery truncates: the next boot still ends in the same journal."""
    double_faults = 0
    for cut in range(0, total_steps(), 7):
        storage, ledger, clock = run_to_cut(cut, False)
        expect = expected_truncation(storage)
        if not expect:
            continue
        snapshot = copy.deepcopy((storage.data, storage.synced))
        storage.cut_after(10**9)
        Journal("/j", files=storage, **SMALL)
        recovery_steps = storage.steps
        for second_cut in range(recovery_steps):
            storage.data, storage.synced = copy.deepcopy(snapshot)
            storage.cut_after(second_cut)
            with pytest.raises(PowerCut):
                Journal("/j", files=storage, **SMALL)
            storage.power_on()
            report = check_recovered(storage, ledger, clock)
            # Reported again in full, or already gone when the rename got through.
            assert report["bytes_truncated"] in (0, expect)
            double_faults += 1
    assert double_faults > 50


def test_a_dropped_record_counts_and_the_reserve_holds():
    storage = SimStorage()
    journal = Journal("/j", files=storage, **SMALL)
    seq = 0
    with pytest.raises(JournalFull) as full:
        while True:
            seq += 1
            journal.append(seq, b"r" * 40)
    assert full.value.dropped == 1 and journal.dropped() == (1, seq, seq)
    # Two event-sized records still fit the reserve.
    journal.append(seq + 1, b"journal_full" * 2, reserved=True)
    journal.append(seq + 2, b"records_dropped", reserved=True)
    assert journal.stats()["used_bytes"] <= journal.stats()["capacity_bytes"]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_segments=1), "max_segments 1"),
        (dict(buffer_bytes=512), "buffer_bytes 512"),
        (dict(reserve_bytes=300), "reserve_bytes 300"),
        (dict(group_records=0), "group_records"),
    ],
)
def test_bad_configuration_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        Journal("/j", files=SimStorage(), **dict(SMALL, **options))


def test_the_default_group_buffer_fits_a_small_segment():
    # 4 KB is the smallest segment the gateway's configuration allows; the 8 KB default buffer
    # must give way to it instead of refusing to start.
    journal = Journal("/j", files=SimStorage(), segment_bytes=4096)
    assert journal.max_envelope_bytes == 4096 - (len(SEGMENT_MAGIC) + FRAME_OVERHEAD)
    journal.append(1, b"x" * journal.max_envelope_bytes)
    journal.flush()
    assert journal.pending(10) == [(1, b"x" * journal.max_envelope_bytes)]
    assert Journal("/k", files=SimStorage()).max_envelope_bytes == 8192 - (len(SEGMENT_MAGIC) + FRAME_OVERHEAD)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 90)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 40)),
        st.tuples(st.just("reboot"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_matches_a_simple_model(operations):
    """Against a list of records: pending is what is unacknowledged, oldest first; a clean
    reboot loses only the unflushed group; nothing unacknowledged is ever evicted."""
    storage = SimStorage()
    options = dict(SMALL, group_records=1000, clock=lambda: 0)
    journal = Journal("/j", files=storage, **options)
    kept, unflushed, acked, seq = [], [], -1, 0
    for op, arg in operations:
        if op == "append":
            seq += 1
            try:
                journal.append(seq, b"m" * arg)
                unflushed.append((seq, b"m" * arg))
            except JournalFull:
                pass
        elif op == "flush":
            journal.flush()
            kept += unflushed
            unflushed = []
        elif op == "ack":
            # A host acknowledges only what it was sent, and pending() flushes before sending.
            target = min(acked + arg, kept[-1][0] if kept else acked)
            journal.acknowledge(target)
            acked = max(acked, target)
            kept = [r for r in kept if r[0] > acked]
        else:
            journal = Journal("/j", files=storage, **options)
            got = journal.pending(1000)
            # What a reboot loses is the unflushed group, or the part of it a full buffer or a
            # new segment had not flushed already.
            survivors = len(got) - len(kept)
            assert got[: len(kept)] == kept and got[len(kept) :] == unflushed[:survivors]
            kept, unflushed = got, []
        assert journal.stats()["unacked_records"] == len(kept) + len(unflushed)
        if op == "flush":
            assert journal.pending(1000) == kept


def _popen_writer(image, root):
    env = dict(os.environ, MICROPYPATH=f"{image}:.frozen")
    script = MPY_DIR / "journal_crash_writer.py"
    return subprocess.Popen(
        [micropython.micropython_command(), str(script), str(root), "write"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _complete_lines(output):
    # A line the kill cut short does not count: only lines that reached their newline.
    return output.split("\n")[:-1]


def test_sigkill_never_loses_a_flushed_record(device_image, tmp_path):
    rng = random.Random(20240611)
    root = tmp_path / "journal"
    flushed, acked_done, acked_trying = set(), 0, 0  # seqs start at 1
    for run in range(30):
        writer = _popen_writer(device_image, root)
        lines = []
        if rng.random() < 0.2:
            # Early: possibly still recovering, or in its first group.
            try:
                writer.wait(timeout=rng.uniform(0.0, 0.05))
            except subprocess.TimeoutExpired:
                pass
        else:
            for _ in range(rng.randint(1, 150)):
                line = writer.stdout.readline()
                assert line, f"writer stopped: {writer.stderr.read()}"
                lines.append(line)
        writer.send_signal(signal.SIGKILL)
        # Through the same file objects: communicate() would read the pipes' descriptors and
        # miss what readline() had already buffered, such as the line before an acknowledge.
        rest, errors = writer.stdout.read(), writer.stderr.read()
        writer.wait()
        assert writer.returncode == -signal.SIGKILL, errors
        for line in _complete_lines("".join(lines) + rest):
            kind, _, value = line.partition(" ")
            if kind == "F":
                flushed.update(range(max(flushed, default=0) + 1, int(value) + 1))
            elif kind == "a":
                acked_trying = int(value)
            elif kind == "A":
                acked_done = int(value)
        if run % 3 == 2:
            continue  # let the next writer recover this one's torn tail itself
        result = micropython.run(MPY_DIR / "journal_crash_writer.py", device_image,
                                 args=(root, "check"))
        assert result.returncode == 0 and result.stdout.endswith("OK\n"), result.stdout
        pending_line = result.stdout.splitlines()[1]
        pending = [int(s) for s in pending_line[2:].split(",") if s]
        assert pending == sorted(set(pending)), "duplicate or unordered seqs"
        if pending:
            assert pending == list(range(pending[0], pending[-1] + 1)), "a gap in the chain"
            assert pending[0] - 1 in (acked_done, acked_trying)  # the old or the new cursor
        cursor = pending[0] - 1 if pending else acked_trying
        missing = sorted(s for s in flushed if s > cursor and s not in pending)
        assert not missing, f"run {run}: flushed seqs {missing[:10]} lost"
    assert len(flushed) > 500
