"""Per-gateway chain checks: every record names its predecessor, so deletion, insertion,
reordering and replay show up as findings (DESIGN.md section 7, docs/record-format.md section 7).

- ChainTracker is fed verified records of one gateway in arrival order and reports gaps, forks,
  replays, chain breaks and rewinds at once. It can resume from what the store holds.
- GapGrace holds gap findings back until they are still open after a grace period: a record
  that is merely late (a resend after a lost connection) is not reported as withheld.
- ClockWatch compares each record's wall time with the one before it in the same boot and with
  the monotonic ``opsec``: time going back or drifting from opsec without a clock setting is a
  clock anomaly.
"""

from hashlib import sha256

GAP = "gap"
FORK = "fork"
REPLAY = "replay"
CHAIN_BREAK = "chain_break"
REWIND = "rewind"
CLOCK_ANOMALY = "clock_anomaly"

GENESIS_PREV = bytes(32)

# Digests of recent seqs kept in memory to tell a resend from a forged twin; older ones are
# looked up in the store by the ingest (the store itself never stores a twin as the chain).
# 4096 x (32-byte digest + dict entry) is about 0.5 MB per connected gateway at most.
MAX_REMEMBERED_DIGESTS = 4096


class Finding:
    """A chain finding: ``seq`` is the record that showed it; ``first_seq``..``last_seq`` the
    seqs it concerns (a gap's missing range); ``facts`` what was expected and observed."""

    __slots__ = ("kind", "seq", "detail", "first_seq", "last_seq", "facts")

    def __init__(self, kind, seq, detail, first_seq=None, last_seq=None, facts=None):
        self.kind = kind
        self.seq = seq
        self.detail = detail
        self.first_seq = seq if first_seq is None else first_seq
        self.last_seq = seq if last_seq is None else last_seq
        self.facts = facts or {}

    def __repr__(self):
        return f"Finding({self.kind}, seq={self.seq}, {self.detail!r})"


class ChainTracker:
    def __init__(self):
        self._digests = {}
        self._last_seq = None
        self._last_digest = None
        self._last_boot = None

    @classmethod
    def resume(cls, highest_seq=None, highest_sha256=None, boot_epoch=0):
        """A tracker that continues after ``highest_seq`` (whose envelope's SHA-256 the next
        record must name as prev) of ``boot_epoch``: the store's ingest state after a restart.
        With no highest_seq the gateway has sent nothing yet, so its first record must be seq 0
        naming the all-zero prev, and a later first seq is a gap from 0."""
        tracker = cls()
        if highest_seq is None:
            tracker._last_seq, tracker._last_digest, tracker._last_boot = -1, GENESIS_PREV, 0
        else:
            tracker._last_seq, tracker._last_digest = highest_seq, bytes(highest_sha256)
            tracker._last_boot = boot_epoch
        return tracker

    def remember(self, seq, digest):
        """Note that the chain already holds ``seq`` with this envelope SHA-256 (from the store),
        so that receiving it again is told apart: a replay or a fork."""
        self._digests[seq] = bytes(digest)

    def needs_lookup(self, seq):
        """True when ``seq`` is not above the highest seq seen but its digest is not (or no
        longer) remembered: ask the store, and remember() what it holds."""
        return seq not in self._digests and self._last_seq is not None and seq <= self._last_seq

    def feed(self, envelope, seq, boot, prev):
        """Account for one verified record; return the findings it raises (often none)."""
        digest = sha256(envelope).digest()
        seen = self._digests.get(seq)
        if seen is not None:
            if seen == digest:
                return [Finding(REPLAY, seq, "identical record received again; stored once")]
            return [Finding(FORK, seq, "two different records carry the same seq")]
        findings = []
        if self._last_seq is None:
            if prev != GENESIS_PREV and seq == 0:
                findings.append(Finding(CHAIN_BREAK, seq, "first record must name the all-zero prev"))
        elif seq > self._last_seq:
            if seq > self._last_seq + 1:
                first, last = self._last_seq + 1, seq - 1
                findings.append(Finding(
                    GAP, seq, f"{last - first + 1} record(s) missing: seq {first}..{last}",
                    first, last, {"expected_seq": first, "observed_seq": seq},
                ))
            elif prev != self._last_digest:
                findings.append(Finding(
                    CHAIN_BREAK, seq, "prev does not match the previous record",
                    facts={"expected_prev": self._last_digest.hex(), "observed_prev": prev.hex()},
                ))
            if boot < self._last_boot:
                findings.append(Finding(
                    REWIND, seq, f"boot epoch went back from {self._last_boot}",
                    facts={"previous_boot_epoch": self._last_boot, "observed_boot_epoch": boot},
                ))
        elif boot > self._last_boot:
            # A lower seq from the same or an earlier boot is a late record filling a gap; from a
            # later boot it means the gateway's counter was restored to an older state.
            findings.append(Finding(
                REWIND, seq, f"seq went back from {self._last_seq} across a reboot",
                facts={"highest_seq": self._last_seq, "observed_seq": seq,
                       "previous_boot_epoch": self._last_boot, "observed_boot_epoch": boot},
            ))
        self._digests[seq] = digest
        if len(self._digests) > MAX_REMEMBERED_DIGESTS:
            # Dicts keep insertion order: the oldest half goes.
            for old in list(self._digests)[: MAX_REMEMBERED_DIGESTS // 2]:
                del self._digests[old]
        if self._last_seq is None or seq > self._last_seq:
            self._last_seq, self._last_digest, self._last_boot = seq, digest, boot
        return findings


class GapGrace:
    """Gap findings held back until they are still open ``grace_s`` seconds after they were
    seen, or after ``grace_records`` further records of the gateway, whichever comes first.

    ``hold(finding, now_s)`` takes a GAP finding; ``fill(seq)`` notes an arrived record (which
    may close or split a held gap); ``due(now_s)`` returns the findings whose grace is over,
    each naming only the seqs still missing, and forgets them."""

    def __init__(self, grace_s, grace_records):
        self.grace_s = grace_s
        self.grace_records = grace_records
        self._held = []  # [first, last, seen_at_s, records_since, finding]

    def hold(self, finding, now_s):
        self._held.append([finding.first_seq, finding.last_seq, now_s, 0, finding])

    def fill(self, seq):
        kept = []
        for first, last, seen_at_s, records_since, finding in self._held:
            if first <= seq <= last:
                if first < seq:
                    kept.append([first, seq - 1, seen_at_s, records_since + 1, finding])
                if seq < last:
                    kept.append([seq + 1, last, seen_at_s, records_since + 1, finding])
            else:
                kept.append([first, last, seen_at_s, records_since + 1, finding])
        self._held = kept

    def due(self, now_s):
        due, kept = [], []
        for entry in self._held:
            first, last, seen_at_s, records_since, finding = entry
            if now_s - seen_at_s >= self.grace_s or records_since >= self.grace_records:
                facts = dict(finding.facts, grace_s=self.grace_s,
                             grace_records=self.grace_records, records_since=records_since)
                due.append(Finding(
                    GAP, finding.seq,
                    f"{last - first + 1} record(s) still missing after the grace period: "
                    f"seq {first}..{last}", first, last, facts,
                ))
            else:
                kept.append(entry)
        self._held = kept
        return due

    def __len__(self):
        return len(self._held)


class ClockWatch:
    """Wall time along one gateway's records in seq order (record-format.md section 7.3).

    Within one boot, between two records with the same ``clock_set_count`` (no time_set between
    them), the wall time must not go back by more than ``tolerance_ms``, and must advance as
    opsec does (seconds) within ``tolerance_ms``. Across a reboot the clock may restart
    unsynchronised, so only the next boot's records are compared with each other."""

    def __init__(self, tolerance_ms, last_record=None):
        self.tolerance_ms = tolerance_ms
        self._last = last_record

    def feed(self, record):
        """Check one verified record (a parsed record dict) against the previous one in seq
        order; records arriving late (a lower seq) are not compared."""
        last = self._last
        if last is not None and record["seq"] <= last["seq"]:
            return []
        self._last = record
        if (last is None or record["boot_epoch"] != last["boot_epoch"]
                or record["clock_set_count"] != last["clock_set_count"]):
            return []
        wall_delta_ms = record["wall_time_ms"] - last["wall_time_ms"]
        opsec_delta_ms = (record["opsec"] - last["opsec"]) * 1000
        if wall_delta_ms < -self.tolerance_ms:
            detail = (f"wall time went back {-wall_delta_ms} ms since seq {last['seq']} without "
                      "a time_set event")
        elif abs(wall_delta_ms - opsec_delta_ms) > self.tolerance_ms:
            detail = (f"wall time advanced {wall_delta_ms} ms while opsec advanced "
                      f"{opsec_delta_ms} ms since seq {last['seq']}, without a time_set event")
        else:
            return []
        facts = {"previous_seq": last["seq"], "previous_wall_time_ms": last["wall_time_ms"],
                 "observed_wall_time_ms": record["wall_time_ms"],
                 "opsec_advance_s": record["opsec"] - last["opsec"],
                 "clock_set_count": record["clock_set_count"], "tolerance_ms": self.tolerance_ms}
        return [Finding(CLOCK_ANOMALY, record["seq"], detail, facts=facts)]
