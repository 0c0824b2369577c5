"""The ingest's pure core for one gateway: verify a RECORDS batch, check its chain and clock,
and say what to store, which findings to record and which rotated keys to register.

The server (ingest.py) only moves bytes between the wire, this checker and the store. A
GatewayChecker is loaded from the store (registry keys, ingest state) when a gateway first
connects, or again after a restart, and then lives as long as the server.
"""

from dataclasses import dataclass, field

from meterseal.host import chain, software_ids, verify
from meterseal.host.storage import NewFinding
from meterseal.protocol import cose, records
from meterseal.protocol.errors import ProtocolError

# The store records forks itself, when it finds the seq taken (docs/storage.md).
_STORED_BY_THE_STORE = (chain.FORK,)
_PAGE = 1000


@dataclass
class Rotation:
    """A verified key_rotated record: register ``public_key`` as replacing ``replaces_kid``."""

    public_key: bytes
    replaces_kid: bytes
    valid_from_ms: int
    seq: int


@dataclass
class RefusedRotation:
    """A verified key_rotated record whose new key is not a P-256 public key: the record is
    stored like any other, the key is not registered (rotated_key_problem says why)."""

    public_key: bytes
    signed_by_kid: bytes
    seq: int
    problem: str


@dataclass
class BatchCheck:
    items: list = field(default_factory=list)  # (envelope, Verdict) for store.ingest_batch
    findings: list = field(default_factory=list)  # NewFinding
    rotations: list = field(default_factory=list)  # Rotation, in seq order
    refused_rotations: list = field(default_factory=list)  # RefusedRotation, in seq order
    # (seq, software id) of records signed by other software than the gateway's registered.
    unexpected_software: list = field(default_factory=list)
    # The highest seq the batch's envelopes claim (signed or not): what its ACK may name.
    highest_claimed_seq: int | None = None


def new_finding(finding):
    """The store's NewFinding for a chain.Finding: its explanation and facts as the detail."""
    detail = {"explanation": finding.detail, "seq": finding.seq, **finding.facts}
    return NewFinding(finding.kind, finding.first_seq, finding.last_seq, detail)


def claimed_seq(envelope):
    """The seq an envelope's payload claims, unauthenticated; None if it does not parse."""
    try:
        seq = records.parse(cose.parse_sign1(envelope).payload)["seq"]
    except ProtocolError:
        return None
    return seq


def rotated_key_problem(record):
    """Why the new key a verified key_rotated ``record`` announces cannot be registered, or
    None. Honest firmware derives it from its secret, so it is always a P-256 public key;
    anything else is a fault, or other software signing with the gateway's key."""
    try:
        verify.load_public_key(record["body"]["new_public_key"])
    except ValueError as exc:
        return f"its new_public_key is not a P-256 public key ({exc})"
    return None


def _parse_stored(envelope):
    return records.parse(cose.parse_sign1(envelope).payload)


class GatewayChecker:
    def __init__(self, gateway_id, keyring, tracker, clock_watch, gap_grace):
        self.gateway_id = gateway_id
        self.keyring = keyring
        self.tracker = tracker
        self.clock_watch = clock_watch
        self.gap_grace = gap_grace
        # The registry's software id for the gateway (None: none registered, nothing checked);
        # the server refreshes it at every handshake.
        self.expected_software = None

    @classmethod
    def load(cls, store, gateway_id, *, gap_grace_s, gap_grace_records, clock_tolerance_ms,
             now_s):
        """The checker for ``gateway_id`` as the store leaves it: its keys and registered
        software, the chain resumed after its highest stored record, and the holes below it
        held as gaps from ``now_s``."""
        keyring = verify.Keyring()
        for key in store.registry.keys(gateway_id):
            keyring.add(key.kid, key.public_key, key.revoked_at_ms)
        state = store.ingest_state(gateway_id)
        grace = chain.GapGrace(gap_grace_s, gap_grace_records)
        if state is None:
            checker = cls(gateway_id, keyring, chain.ChainTracker.resume(),
                          chain.ClockWatch(clock_tolerance_ms), grace)
        else:
            tracker = chain.ChainTracker.resume(state.highest_seq, state.highest_seq_sha256,
                                                state.last_boot_epoch)
            newest = store.records(gateway_id, seq_from=state.highest_seq,
                                   seq_to=state.highest_seq, limit=1).items
            last_record = _parse_stored(newest[0].envelope) if newest else None
            checker = cls(gateway_id, keyring, tracker,
                          chain.ClockWatch(clock_tolerance_ms, last_record), grace)
            checker._hold_holes(store, state, now_s)
        gateway = store.registry.gateway(gateway_id)
        checker.expected_software = gateway.software_id if gateway is not None else None
        return checker

    def _hold_holes(self, store, state, now_s):
        """Hold as gaps the seqs below the highest that the store does not hold: a restart
        must not forget a gap whose grace had not run out."""
        expected = 0 if state.contiguous_seq is None else state.contiguous_seq + 1
        after = None if state.contiguous_seq is None else state.contiguous_seq
        while expected < state.highest_seq:
            page = store.records(self.gateway_id, after_seq=after, seq_to=state.highest_seq,
                                 limit=_PAGE)
            for stored in page.items:
                if stored.seq > expected:
                    last = stored.seq - 1
                    self.gap_grace.hold(chain.Finding(
                        chain.GAP, stored.seq,
                        f"{last - expected + 1} record(s) missing: seq {expected}..{last}",
                        expected, last,
                        {"expected_seq": expected, "observed_seq": stored.seq}), now_s)
                expected = stored.seq + 1
            if page.next_after is None:
                break
            after = page.next_after

    def verify(self, envelopes, received_at_ms):
        """Each envelope of a batch with its verdict: (envelope bytes, Verdict) pairs for
        check(). Reads the checker only, so it may run on another thread than check(), but
        never during a check() of the same gateway."""
        envelopes = [bytes(envelope) for envelope in envelopes]
        return list(zip(envelopes, self.keyring.verify_batch(envelopes, received_at_ms)))

    def check(self, verified, received_at_ms, now_s, stored_digest):
        """Chain-check one verified batch (from verify()) in order. ``stored_digest(seq)`` gives
        the SHA-256 of the envelope the store holds for this gateway's ``seq``, or None; it is
        asked only about seqs the tracker no longer remembers. Mutates the checker: a caller
        whose store write then fails must load a fresh checker."""
        result = BatchCheck()
        for envelope, verdict in verified:
            if verdict.outcome == verify.UNKNOWN_KEY and verdict.kid in self.keyring:
                # Signed with a key that a key_rotated record earlier in this batch announced.
                verdict = self.keyring.verify(envelope, received_at_ms)
            result.items.append((envelope, verdict))
            claimed = verdict.record["seq"] if verdict.record else claimed_seq(envelope)
            if claimed is not None and (result.highest_claimed_seq is None
                                        or claimed > result.highest_claimed_seq):
                result.highest_claimed_seq = claimed
            if (verdict.outcome not in verify.ACCEPTED
                    or verdict.record["gateway_id"] != self.gateway_id):
                continue  # quarantined by the store; nothing to chain
            self._chain(envelope, verdict, now_s, stored_digest, result)
        result.findings.extend(new_finding(f) for f in self.gap_grace.due(now_s))
        return result

    def _chain(self, envelope, verdict, now_s, stored_digest, result):
        record = verdict.record
        seq = record["seq"]
        if self.tracker.needs_lookup(seq):
            digest = stored_digest(seq)
            if digest is not None:
                self.tracker.remember(seq, digest)
        findings = self.tracker.feed(envelope, seq, record["boot_epoch"], record["prev"])
        if any(f.kind in (chain.FORK, chain.REPLAY) for f in findings):
            result.findings.extend(new_finding(f) for f in findings
                                   if f.kind not in _STORED_BY_THE_STORE)
            return
        self.gap_grace.fill(seq)
        for finding in findings:
            if finding.kind == chain.GAP:
                self.gap_grace.hold(finding, now_s)
            else:
                result.findings.append(new_finding(finding))
        result.findings.extend(new_finding(f) for f in self.clock_watch.feed(record))
        if self.expected_software is not None:
            reported = software_ids.of_record(record)
            if reported != self.expected_software:
                result.unexpected_software.append((seq, reported))
        body = record["body"]
        if record["kind"] == "event" and body["event_type"] == "key_rotated":
            new_key = bytes(body["new_public_key"])
            problem = rotated_key_problem(record)
            if problem is not None:  # kept as evidence; a key that verifies nothing is not used
                result.refused_rotations.append(RefusedRotation(new_key, verdict.kid, seq,
                                                                problem))
                return
            kid = cose.kid_for(new_key)
            if kid not in self.keyring:
                self.keyring.add(kid, new_key)
            result.rotations.append(Rotation(new_key, verdict.kid, record["wall_time_ms"], seq))

    def due_gaps(self, now_s):
        """Gap findings whose grace ran out with no record arriving (the server's sweep)."""
        return [new_finding(f) for f in self.gap_grace.due(now_s)]
