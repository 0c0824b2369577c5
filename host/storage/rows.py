"""The plain values the store takes and returns. Field names are the column names
(docs/storage.md describes each); times are integer milliseconds since 1970-01-01 UTC."""

import json
from dataclasses import dataclass, fields

from .errors import StorageError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def check_limit(limit):
    """Refuse a page size outside 1..MAX_PAGE_SIZE."""
    if not (isinstance(limit, int) and 1 <= limit <= MAX_PAGE_SIZE):
        raise StorageError(f"limit must be a whole number in 1..{MAX_PAGE_SIZE}, got {limit!r}")


def columns(cls):
    """The SELECT list for a row type whose fields are all columns."""
    return ", ".join(field.name for field in fields(cls))


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    address: str | None


@dataclass(frozen=True)
class Gateway:
    gateway_id: str
    serial: str
    site_id: str
    status: str
    registered_at_ms: int
    software_id: str | None = None  # as registered (software_ids.software_id); None: not given


@dataclass(frozen=True)
class GatewayKey:
    kid: bytes
    public_key: bytes
    gateway_id: str
    valid_from_ms: int
    revoked_at_ms: int | None
    replaced_by_kid: bytes | None


@dataclass(frozen=True)
class Device:
    gateway_id: str
    device_ref: str
    device_type: str
    model: str
    serial: str
    type_approval_cert: str
    expected_software_id: str


@dataclass(frozen=True)
class StoredRecord:
    """One received envelope, verbatim, with the fields decoded for queries. For a quarantined
    record those fields hold what its payload claims, when it parses: nothing vouches for them."""

    record_id: int
    sender_gateway_id: str
    gateway_id: str | None
    boot_epoch: int | None
    seq: int | None
    kind: str | None
    event_type: str | None
    dispenser_address: int | None
    nozzle: int | None
    scale_id: str | None
    tank_number: int | None
    wall_time_ms: int | None
    received_at_ms: int
    kid: bytes | None
    outcome: str
    detail: str
    quarantined: bool
    envelope: bytes
    envelope_sha256: bytes

    @classmethod
    def from_row(cls, row):
        # SQLite hands BOOLEAN back as 0 or 1.
        return cls(**dict(row, quarantined=bool(row["quarantined"])))


@dataclass(frozen=True)
class Fork:
    """Two verified envelopes for one seq: the one the chain holds and the twin that came later."""

    fork_id: int
    gateway_id: str
    seq: int
    stored: StoredRecord
    twin: StoredRecord
    first_seen_ms: int


@dataclass(frozen=True)
class NewFinding:
    """A chain finding to record with a batch: ``detail`` is a JSON-able dict that explains it
    (expected, observed, which records)."""

    kind: str
    first_seq: int
    last_seq: int
    detail: dict


@dataclass(frozen=True)
class ChainFinding:
    finding_id: int
    gateway_id: str
    kind: str
    first_seq: int
    last_seq: int
    detail: dict
    first_seen_ms: int
    resolved_at_ms: int | None

    @classmethod
    def from_row(cls, row):
        row = dict(row)
        return cls(detail=json.loads(row.pop("detail_json")), **row)


@dataclass(frozen=True)
class IngestState:
    """Where a gateway's chain stands: every seq 0..contiguous_seq is held (None until seq 0
    is); highest_seq_sha256 is the prev the record after highest_seq must name."""

    gateway_id: str
    contiguous_seq: int | None
    highest_seq: int
    highest_seq_sha256: bytes
    last_boot_epoch: int
    updated_at_ms: int


@dataclass(frozen=True)
class IngestResult:
    """What became of one item of a batch: ``outcome`` is stored, replay, fork or quarantined;
    ``record_id`` is the row that now holds the envelope (for a replay, the earlier one)."""

    outcome: str
    record_id: int
    detail: str


@dataclass(frozen=True)
class Page:
    """One page of a query. Pass ``next_after`` back for the next page; None: this was the last."""

    items: tuple
    next_after: int | None


@dataclass(frozen=True)
class Alert:
    """A scored finding an officer works on (docs/alerts.md). ``parameters`` are those that made
    the call; ``evidence_record_ids`` the records that show it, ascending; ``occurrences`` how
    many sightings this open alert has absorbed."""

    alert_id: int
    gateway_id: str
    device_ref: str | None
    rule: str
    severity: str
    score: float
    explanation_en: str
    explanation_zh: str
    parameters: dict
    evidence_record_ids: tuple
    state: str
    close_reason: str | None
    assignee: str | None
    occurrences: int
    first_seen_ms: int
    last_seen_ms: int
    updated_at_ms: int

    @classmethod
    def from_row(cls, row, evidence_record_ids):
        row = dict(row)
        return cls(parameters=json.loads(row.pop("parameters_json")),
                   evidence_record_ids=tuple(evidence_record_ids), **row)


@dataclass(frozen=True)
class AlertNote:
    note_id: int
    alert_id: int
    author: str
    role: str
    text: str
    at_ms: int


@dataclass(frozen=True)
class AlertTransition:
    transition_id: int
    alert_id: int
    action: str
    from_state: str
    to_state: str
    close_reason: str | None
    actor: str
    role: str
    at_ms: int


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log; ``details`` is parsed from ``details_json``, which is what the
    hash covers."""

    seq: int
    at_ms: int
    actor: str
    action: str
    subject: str
    details_json: str
    prev_hash: bytes
    entry_hash: bytes

    @property
    def details(self):
        return json.loads(self.details_json)

    @classmethod
    def from_row(cls, row):
        return cls(**dict(row, prev_hash=bytes(row["prev_hash"]),
                          entry_hash=bytes(row["entry_hash"])))


@dataclass(frozen=True)
class AuditCheck:
    """What verify_audit_log found: ``entries_checked`` intact entries from seq 1, ending in
    ``head_hash`` (32 zero bytes for an empty log); then, if the chain breaks, the seq of the
    first broken (or missing) entry and why. Removing entries from the very end leaves an intact
    chain: compare ``entries_checked`` and ``head_hash`` with a copy kept elsewhere."""

    entries_checked: int
    head_hash: bytes
    broken_seq: int | None
    problem: str | None

    @property
    def intact(self):
        return self.broken_seq is None
