"""Per-gateway chain checks: every record names its predecessor, so deletion, insertion,
reordering and replay show up as findings (DESIGN.md section 7).

The tracker is fed verified records of one gateway in arrival order. It remembers the digest of
every seq it has accepted (32 bytes each) so a resent record can be told from a forged twin.
"""

from hashlib import sha256

GAP = "gap"
FORK = "fork"
REPLAY = "replay"
CHAIN_BREAK = "chain_break"
REWIND = "rewind"

GENESIS_PREV = bytes(32)


class Finding:
    __slots__ = ("kind", "seq", "detail")

    def __init__(self, kind, seq, detail):
        self.kind = kind
        self.seq = seq
        self.detail = detail

    def __repr__(self):
        return f"Finding({self.kind}, seq={self.seq}, {self.detail!r})"


class ChainTracker:
    def __init__(self):
        self._digests = {}
        self._last_seq = None
        self._last_digest = None
        self._last_boot = None

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
                findings.append(
                    Finding(GAP, seq, f"{last - first + 1} record(s) missing: seq {first}..{last}")
                )
            elif prev != self._last_digest:
                findings.append(Finding(CHAIN_BREAK, seq, "prev does not match the previous record"))
            if boot < self._last_boot:
                findings.append(Finding(REWIND, seq, f"boot epoch went back from {self._last_boot}"))
        elif boot > self._last_boot:
            # A lower seq from the same or an earlier boot is a late record filling a gap; from a
            # later boot it means the gateway's counter was restored to an older state.
            findings.append(
                Finding(REWIND, seq, f"seq went back from {self._last_seq} across a reboot")
            )
        self._digests[seq] = digest
        if self._last_seq is None or seq > self._last_seq:
            self._last_seq, self._last_digest, self._last_boot = seq, digest, boot
        return findings
