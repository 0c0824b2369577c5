"""Numbered schema migrations, applied in order when a store is opened.

The ``schema_version`` table holds one row per applied migration. Opening a database applies
whatever is missing, all in one transaction under a lock, so two processes opening the same
database at once cannot both migrate it, and a migration that fails leaves the database exactly
as it was. A database whose version is newer than the highest migration here was written by a
newer meterseal and is refused rather than guessed at.

Statements are written once for both backends. Only two things differ and are filled in per
backend: ``{blob}`` (BLOB / BYTEA) and ``{id}``, an integer key that the database assigns.
Every other integer column is BIGINT, which SQLite stores as its 64-bit INTEGER.

A migration is never edited once released: a change to the schema is a new migration at the end.
"""

import time
from dataclasses import dataclass

from .errors import StorageError

# The set of values a CHECK constraint admits is written into the schema, so these are schema
# facts; meterseal.host.verify and meterseal.host.chain produce them (DESIGN.md section 7).
OUTCOMES = ("VERIFIED", "VERIFIED_WITH_WARNINGS", "BAD_SIGNATURE", "UNKNOWN_KEY", "REVOKED_KEY",
            "UNSUPPORTED_ALG", "MALFORMED")
FINDING_KINDS = ("gap", "fork", "replay", "chain_break", "rewind", "clock_anomaly")
GATEWAY_STATUSES = ("active", "suspended", "retired")
DEVICE_TYPES = ("dispenser", "scale", "tank_gauge")
# Alerts (docs/alerts.md). Severities are listed from the least to the most urgent.
ALERT_SEVERITIES = ("low", "medium", "high", "critical")
ALERT_STATES = ("new", "acknowledged", "escalated", "closed")
CLOSE_REASONS = ("confirmed_cheat", "honest_drift", "data_fault", "false_positive", "duplicate")
USER_ROLES = ("officer", "supervisor", "manufacturer", "admin")


def _one_of(values):
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple


_REGISTRY = Migration(1, "registry: sites, gateways, gateway keys, attached devices", (
    """CREATE TABLE sites (
        site_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        address TEXT
    )""",
    f"""CREATE TABLE gateways (
        gateway_id TEXT PRIMARY KEY,
        serial TEXT NOT NULL UNIQUE,
        site_id TEXT NOT NULL REFERENCES sites (site_id),
        status TEXT NOT NULL CHECK (status IN {_one_of(GATEWAY_STATUSES)}),
        registered_at_ms BIGINT NOT NULL
    )""",
    # kid = SHA-256 of the 65-byte public key. A rotation leaves the old key in place and names
    # its successor; a revocation marks the key bad from revoked_at_ms on.
    """CREATE TABLE gateway_keys (
        kid {blob} PRIMARY KEY CHECK (length(kid) = 32),
        public_key {blob} NOT NULL UNIQUE CHECK (length(public_key) = 65),
        gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
        valid_from_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT,
        replaced_by_kid {blob} REFERENCES gateway_keys (kid)
    )""",
    "CREATE INDEX gateway_keys_by_gateway ON gateway_keys (gateway_id)",
    f"""CREATE TABLE devices (
        gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
        device_ref TEXT NOT NULL,
        device_type TEXT NOT NULL CHECK (device_type IN {_one_of(DEVICE_TYPES)}),
        model TEXT NOT NULL,
        serial TEXT NOT NULL,
        type_approval_cert TEXT NOT NULL,
        expected_software_id TEXT NOT NULL,
        PRIMARY KEY (gateway_id, device_ref)
    )""",
))

_RECORDS = Migration(2, "records (verbatim envelopes), forks, chain findings, ingest state", (
    # Every distinct envelope received, accepted or quarantined, exactly once (envelope_sha256 is
    # unique). No foreign key to the registry: evidence is never refused for a missing row there.
    f"""CREATE TABLE records (
        record_id {{id}},
        sender_gateway_id TEXT NOT NULL,
        gateway_id TEXT,
        boot_epoch BIGINT,
        seq BIGINT,
        kind TEXT,
        event_type TEXT,
        dispenser_address BIGINT,
        nozzle BIGINT,
        scale_id TEXT,
        tank_number BIGINT,
        wall_time_ms BIGINT,
        received_at_ms BIGINT NOT NULL,
        kid {{blob}},
        outcome TEXT NOT NULL CHECK (outcome IN {_one_of(OUTCOMES)}),
        detail TEXT NOT NULL,
        quarantined BOOLEAN NOT NULL,
        envelope {{blob}} NOT NULL,
        envelope_sha256 {{blob}} NOT NULL UNIQUE,
        CHECK (quarantined OR (gateway_id IS NOT NULL AND seq IS NOT NULL AND kind IS NOT NULL))
    )""",
    # The chain: one accepted record per (gateway, seq). A different envelope for a taken seq is
    # kept as a quarantined twin and listed in forks.
    "CREATE UNIQUE INDEX records_accepted_by_seq ON records (gateway_id, seq)"
    " WHERE NOT quarantined",
    "CREATE INDEX records_by_wall_time ON records (gateway_id, wall_time_ms) WHERE NOT quarantined",
    "CREATE INDEX records_quarantined ON records (sender_gateway_id, record_id) WHERE quarantined",
    """CREATE TABLE forks (
        fork_id {id},
        gateway_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        stored_record_id BIGINT NOT NULL REFERENCES records (record_id),
        twin_record_id BIGINT NOT NULL UNIQUE REFERENCES records (record_id),
        first_seen_ms BIGINT NOT NULL
    )""",
    "CREATE INDEX forks_by_gateway ON forks (gateway_id, seq)",
    f"""CREATE TABLE chain_findings (
        finding_id {{id}},
        gateway_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN {_one_of(FINDING_KINDS)}),
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL CHECK (last_seq >= first_seq),
        detail_json TEXT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        resolved_at_ms BIGINT,
        UNIQUE (gateway_id, kind, first_seq, last_seq)
    )""",
    # What a verifier needs to go on after a restart, and what the host ACKs.
    """CREATE TABLE gateway_ingest_state (
        gateway_id TEXT PRIMARY KEY,
        contiguous_seq BIGINT,
        highest_seq BIGINT NOT NULL,
        highest_seq_sha256 {blob} NOT NULL,
        last_boot_epoch BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )""",
))

_ALERTS = Migration(3, "alerts, their evidence, notes and transitions; the audit log", (
    # One alert per (gateway, device, rule) while it is open: a repeat sighting updates it. A
    # gateway-wide alert (a chain finding) has no device_ref.
    f"""CREATE TABLE alerts (
        alert_id {{id}},
        gateway_id TEXT NOT NULL,
        device_ref TEXT,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN {_one_of(ALERT_SEVERITIES)}),
        score DOUBLE PRECISION NOT NULL,
        explanation_en TEXT NOT NULL,
        explanation_zh TEXT NOT NULL,
        parameters_json TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN {_one_of(ALERT_STATES)}),
        close_reason TEXT CHECK (close_reason IN {_one_of(CLOSE_REASONS)}),
        assignee TEXT,
        occurrences BIGINT NOT NULL CHECK (occurrences >= 1),
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        CHECK ((state = 'closed') = (close_reason IS NOT NULL))
    )""",
    "CREATE UNIQUE INDEX alerts_open_per_device_and_rule"
    " ON alerts (gateway_id, COALESCE(device_ref, ''), rule) WHERE state <> 'closed'",
    "CREATE INDEX alerts_by_state ON alerts (state, last_seen_ms)",
    """CREATE TABLE alert_evidence (
        alert_id BIGINT NOT NULL REFERENCES alerts (alert_id),
        record_id BIGINT NOT NULL REFERENCES records (record_id),
        PRIMARY KEY (alert_id, record_id)
    )""",
    f"""CREATE TABLE alert_notes (
        note_id {{id}},
        alert_id BIGINT NOT NULL REFERENCES alerts (alert_id),
        author TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN {_one_of(USER_ROLES)}),
        text TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    )""",
    "CREATE INDEX alert_notes_by_alert ON alert_notes (alert_id, note_id)",
    f"""CREATE TABLE alert_transitions (
        transition_id {{id}},
        alert_id BIGINT NOT NULL REFERENCES alerts (alert_id),
        action TEXT NOT NULL,
        from_state TEXT NOT NULL CHECK (from_state IN {_one_of(ALERT_STATES)}),
        to_state TEXT NOT NULL CHECK (to_state IN {_one_of(ALERT_STATES)}),
        close_reason TEXT CHECK (close_reason IN {_one_of(CLOSE_REASONS)}),
        actor TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN {_one_of(USER_ROLES)}),
        at_ms BIGINT NOT NULL
    )""",
    "CREATE INDEX alert_transitions_by_alert ON alert_transitions (alert_id, transition_id)",
    # Append-only and hash-chained (audit.py): seq is assigned by the writer, under a lock, with
    # no gaps, because it is part of what each entry_hash covers.
    """CREATE TABLE audit_log (
        seq BIGINT PRIMARY KEY CHECK (seq >= 1),
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        details_json TEXT NOT NULL,
        prev_hash {blob} NOT NULL CHECK (length(prev_hash) = 32),
        entry_hash {blob} NOT NULL UNIQUE CHECK (length(entry_hash) = 32)
    )""",
))

# The software id an installer registered for the gateway (its provisioning request's), which the
# ingest compares with what each record says signed it (docs/ingest.md, "Software").
_GATEWAY_SOFTWARE = Migration(4, "gateways: registered software id", (
    "ALTER TABLE gateways ADD COLUMN software_id TEXT",
))

# What the detectors know beyond the records (fraud_rules.facts, docs/host.md "Detection"), as
# officers enter it, and the detectors' saved state. Facts are keyed by site, like the registry;
# work kinds are stored as a comma-separated list of fraud_rules.facts.AUTHORISED_WORK.
# detection_facts_revision is one counter that every change to the facts raises, so the ingest
# (which holds its own connection) sees an officer's change at its next batch.
_DETECTION = Migration(5, "detection: work orders, announced prices, grade tanks, nozzle flows, "
                          "detector checkpoints", (
    """CREATE TABLE work_orders (
        work_order_id TEXT PRIMARY KEY,
        site_id TEXT NOT NULL REFERENCES sites (site_id),
        gateway_id TEXT REFERENCES gateways (gateway_id),
        device_ref TEXT,
        work TEXT NOT NULL,
        valid_from_ms BIGINT NOT NULL,
        valid_to_ms BIGINT NOT NULL,
        technician TEXT NOT NULL,
        reference TEXT NOT NULL,
        entered_by TEXT NOT NULL,
        entered_at_ms BIGINT NOT NULL,
        CHECK (valid_to_ms >= valid_from_ms)
    )""",
    "CREATE INDEX work_orders_by_site ON work_orders (site_id, valid_from_ms)",
    """CREATE TABLE announced_prices (
        site_id TEXT NOT NULL REFERENCES sites (site_id),
        grade BIGINT NOT NULL,
        valid_from_ms BIGINT NOT NULL,
        price_minor_per_kl BIGINT NOT NULL CHECK (price_minor_per_kl >= 0),
        entered_by TEXT NOT NULL,
        entered_at_ms BIGINT NOT NULL,
        PRIMARY KEY (site_id, grade, valid_from_ms)
    )""",
    """CREATE TABLE grade_tanks (
        site_id TEXT NOT NULL REFERENCES sites (site_id),
        grade BIGINT NOT NULL,
        tank_number BIGINT NOT NULL,
        PRIMARY KEY (site_id, grade)
    )""",
    """CREATE TABLE nozzle_max_flows (
        site_id TEXT NOT NULL REFERENCES sites (site_id),
        device_ref TEXT NOT NULL,
        max_flow_lpm DOUBLE PRECISION NOT NULL CHECK (max_flow_lpm > 0),
        PRIMARY KEY (site_id, device_ref)
    )""",
    """CREATE TABLE detection_facts_revision (
        one BIGINT PRIMARY KEY CHECK (one = 1),
        revision BIGINT NOT NULL
    )""",
    "INSERT INTO detection_facts_revision (one, revision) VALUES (1, 0)",
    # One row per site: fraud_rules.engine's checkpoint of that site's detectors and the seq
    # each of its gateways was fed up to (host/detection.py).
    """CREATE TABLE detector_checkpoints (
        site_id TEXT PRIMARY KEY,
        checkpoint_json TEXT NOT NULL,
        saved_at_ms BIGINT NOT NULL
    )""",
))

MIGRATIONS = (_REGISTRY, _RECORDS, _ALERTS, _GATEWAY_SOFTWARE, _DETECTION)
LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)"""


def upgrade(backend, migrations=MIGRATIONS):
    """Bring the database up to the last of ``migrations``; return its version afterwards."""
    latest = migrations[-1].version
    with backend.transaction():
        backend.lock_schema()
        backend.execute(_CREATE_VERSION_TABLE)
        (row,) = backend.query("SELECT MAX(version) AS version FROM schema_version")
        current = row["version"] or 0
        if current > latest:
            raise StorageError(
                f"{backend.label} is at schema version {current}, newer than this meterseal "
                f"understands (up to {latest}); upgrade meterseal to open it"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            try:
                for statement in migration.statements:
                    backend.execute(statement.format(**backend.ddl_types))
            except StorageError as exc:
                raise StorageError(
                    f"migration {migration.version} ({migration.name}): {exc}") from exc
            backend.execute(
                "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
                (migration.version, migration.name, int(time.time() * 1000)),
            )
            current = migration.version
    return current
