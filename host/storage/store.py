"""The store: one interface over either backend (sqlite.py, postgres.py), which differ only in how
they connect, lock and name two column types. All SQL here is common to both.

A Store holds one connection. It may be handed from thread to thread (an executor) but must not
be used by two at once; open one Store per concurrent reader or writer.
"""

import json
import time
from contextlib import contextmanager

from . import audit, ingest, migrations
from .alerts import Alerts
from .errors import StorageError
from .registry import Registry
from .rows import (DEFAULT_PAGE_SIZE, ChainFinding, Fork, IngestResult, IngestState, NewFinding,
                   Page, StoredRecord, check_limit, columns)

# Envelopes looked up per query: far below either database's limit on parameters.
_LOOKUP_CHUNK = 500

_RECORD_COLUMNS = columns(StoredRecord)
_STATE_COLUMNS = columns(IngestState)
_FINDING_COLUMNS = ("finding_id, gateway_id, kind, first_seq, last_seq, detail_json, "
                    "first_seen_ms, resolved_at_ms")


def _now_ms():
    return int(time.time() * 1000)


def _finding_values(index, finding):
    if not isinstance(finding, NewFinding):
        raise StorageError(f"finding {index}: expected a NewFinding, got {type(finding).__name__}")
    if finding.kind not in migrations.FINDING_KINDS:
        raise StorageError(f"finding {index}: kind {finding.kind!r} is not one of "
                           + ", ".join(migrations.FINDING_KINDS))
    if not 0 <= finding.first_seq <= finding.last_seq <= ingest.MAX_STORED_SEQ:
        raise StorageError(f"finding {index}: seq range {finding.first_seq}..{finding.last_seq} "
                           f"must be ascending within 0..{ingest.MAX_STORED_SEQ}")
    try:
        detail = json.dumps(finding.detail, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"finding {index}: detail is not JSON ({exc})") from exc
    return finding.kind, finding.first_seq, finding.last_seq, detail


def _where(filters):
    """The SQL conditions, and their parameters, of the (condition, value) pairs whose value is
    set. A condition takes its value as its one ``?``; one without ``?`` is a switch."""
    chosen = [(condition, value) for condition, value in filters if value is not None]
    return (" AND ".join(condition for condition, _ in chosen),
            [value for condition, value in chosen if "?" in condition])


class Store:
    def __init__(self, backend):
        self._backend = backend
        self.label = backend.label
        self.schema_version = migrations.upgrade(backend)
        self.registry = Registry(backend)
        self.alerts = Alerts(backend)

    def close(self):
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settings(self):
        """The backend's durability settings as the database reports them."""
        return self._backend.settings()

    @contextmanager
    def snapshot(self):
        """Run several queries against one consistent view (an evidence export, a report)."""
        with self._backend.snapshot():
            yield self

    # --- ingest ---------------------------------------------------------------------------------

    def ingest_batch(self, gateway_id, items, findings=(), received_at_ms=None):
        """Store one batch from ``gateway_id``: ``items`` are (envelope bytes, verdict) pairs,
        ``findings`` the NewFindings its chain check raised. Returns one IngestResult per item.

        All or nothing, and durable when it returns: the host may ACK the batch then."""
        now = _now_ms() if received_at_ms is None else received_at_ms
        rows = [ingest.record_row(index, envelope, verdict, gateway_id, now)
                for index, (envelope, verdict) in enumerate(items)]
        finding_values = [_finding_values(index, f) for index, f in enumerate(findings)]
        with self._backend.transaction():
            held = self._held(gateway_id, rows)
            results = [self._ingest_row(row, held, now) for row in rows]
            for kind, first_seq, last_seq, detail in finding_values:
                self._add_finding(gateway_id, kind, first_seq, last_seq, detail, now)
            stored = [row for row, result in zip(rows, results) if result.outcome == ingest.STORED]
            if stored:
                self._advance_state(gateway_id, stored, now)
            self._resolve_gaps(gateway_id, now)
        return results

    def _held(self, gateway_id, rows):
        """What the database already holds of a batch, in two lookups per chunk rather than
        two per record: {envelope_sha256: (record_id, quarantined)} and, of the gateway's
        chain, {seq: record_id}. (Only accepted rows have a seq to look up, and an accepted row
        always names the gateway that sent it.)"""
        by_sha256, by_seq = {}, {}
        digests = [row["envelope_sha256"] for row in rows]
        seqs = [row["seq"] for row in rows if not row["quarantined"]]
        for start in range(0, len(digests), _LOOKUP_CHUNK):
            chunk = digests[start:start + _LOOKUP_CHUNK]
            for found in self._backend.query(
                "SELECT record_id, quarantined, envelope_sha256 FROM records"
                f" WHERE envelope_sha256 IN ({', '.join('?' * len(chunk))})", chunk,
            ):
                by_sha256[found["envelope_sha256"]] = (found["record_id"],
                                                       bool(found["quarantined"]))
        for start in range(0, len(seqs), _LOOKUP_CHUNK):
            chunk = seqs[start:start + _LOOKUP_CHUNK]
            for found in self._backend.query(
                "SELECT record_id, seq FROM records WHERE gateway_id = ?"
                f" AND seq IN ({', '.join('?' * len(chunk))}) AND NOT quarantined",
                (gateway_id, *chunk),
            ):
                by_seq[found["seq"]] = found["record_id"]
        return by_sha256, by_seq

    def _ingest_row(self, row, held, now):
        """Store one row unless it is a replay; ``held`` (from _held) is kept up to date."""
        by_sha256, by_seq = held
        digest = row["envelope_sha256"]
        if digest in by_sha256:
            record_id, quarantined = by_sha256[digest]
            where = " (in quarantine)" if quarantined else ""
            return IngestResult(ingest.REPLAY, record_id,
                                f"identical envelope already stored as record {record_id}{where}")
        if row["quarantined"]:
            result = IngestResult(ingest.QUARANTINED, self._insert_record(row), row["detail"])
        elif row["seq"] in by_seq:
            result = self._keep_fork(row, by_seq[row["seq"]], now)
        else:
            result = IngestResult(ingest.STORED, self._insert_record(row), "")
            by_seq[row["seq"]] = result.record_id
        by_sha256[digest] = (result.record_id, result.outcome != ingest.STORED)
        return result

    def _keep_fork(self, row, stored_id, now):
        gateway_id, seq = row["gateway_id"], row["seq"]
        detail = (f"fork: seq {seq} of gateway {gateway_id} is already held by record "
                  f"{stored_id}, whose envelope differs; both are kept")
        twin_id = self._insert_record(dict(row, quarantined=True, detail=detail))
        self._backend.execute(
            "INSERT INTO forks (gateway_id, seq, stored_record_id, twin_record_id, first_seen_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (gateway_id, seq, stored_id, twin_id, now),
        )
        explanation = {
            "expected": f"one record for seq {seq}",
            "observed": "two different envelopes, each verified, for the same seq: the key "
                        "may be cloned or the gateway's state tampered with",
            "stored_record_id": stored_id,
            "twin_record_id": twin_id,
        }
        self._add_finding(gateway_id, "fork", seq, seq, json.dumps(explanation, sort_keys=True),
                          now)
        return IngestResult(ingest.FORK, twin_id, detail)

    def _insert_record(self, row):
        names = ", ".join(row)
        marks = ", ".join("?" * len(row))
        (inserted,) = self._backend.query(
            f"INSERT INTO records ({names}) VALUES ({marks}) RETURNING record_id",
            tuple(row.values()),
        )
        return inserted["record_id"]

    def _add_finding(self, gateway_id, kind, first_seq, last_seq, detail, now):
        # The same finding reported again (a resent batch, a restarted verifier) keeps its
        # first sighting.
        self._backend.execute(
            "INSERT INTO chain_findings (gateway_id, kind, first_seq, last_seq, detail_json,"
            " first_seen_ms) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (gateway_id, kind, first_seq, last_seq) DO NOTHING",
            (gateway_id, kind, first_seq, last_seq, detail, now),
        )

    def _advance_state(self, gateway_id, stored, now):
        newest = max(stored, key=lambda row: row["seq"])
        state = self.ingest_state(gateway_id)
        highest = (newest["seq"], newest["envelope_sha256"], newest["boot_epoch"])
        if state is not None and state.highest_seq > newest["seq"]:
            highest = (state.highest_seq, state.highest_seq_sha256, state.last_boot_epoch)
        contiguous = self._contiguous_seq(gateway_id, state.contiguous_seq if state else None)
        self._backend.execute(
            f"INSERT INTO gateway_ingest_state ({_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (gateway_id) DO UPDATE SET contiguous_seq = excluded.contiguous_seq,"
            " highest_seq = excluded.highest_seq,"
            " highest_seq_sha256 = excluded.highest_seq_sha256,"
            " last_boot_epoch = excluded.last_boot_epoch, updated_at_ms = excluded.updated_at_ms",
            (gateway_id, contiguous, *highest, now),
        )

    def _contiguous_seq(self, gateway_id, held):
        """The end of the run of accepted seqs that starts at 0, given that it reached ``held``."""
        start = 0 if held is None else held + 1
        if not self._backend.query(
            "SELECT 1 AS present FROM records WHERE gateway_id = ? AND seq = ? AND NOT quarantined",
            (gateway_id, start),
        ):
            return held
        (end,) = self._backend.query(
            "SELECT r.seq FROM records r WHERE r.gateway_id = ? AND r.seq >= ?"
            " AND NOT r.quarantined AND NOT EXISTS (SELECT 1 FROM records n"
            " WHERE n.gateway_id = r.gateway_id AND n.seq = r.seq + 1 AND NOT n.quarantined)"
            " ORDER BY r.seq LIMIT 1",
            (gateway_id, start),
        )
        return end["seq"]

    def _resolve_gaps(self, gateway_id, now):
        """Mark resolved each open gap finding whose every seq has now arrived."""
        self._backend.execute(
            "UPDATE chain_findings SET resolved_at_ms = ?"
            " WHERE gateway_id = ? AND kind = 'gap' AND resolved_at_ms IS NULL"
            " AND (SELECT COUNT(*) FROM records r WHERE r.gateway_id = chain_findings.gateway_id"
            " AND r.seq BETWEEN chain_findings.first_seq AND chain_findings.last_seq"
            " AND NOT r.quarantined) = chain_findings.last_seq - chain_findings.first_seq + 1",
            (now, gateway_id),
        )

    # --- queries --------------------------------------------------------------------------------

    def record(self, record_id):
        """One stored envelope, accepted or quarantined, by its id; None if there is none."""
        rows = self._backend.query(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE record_id = ?", (record_id,)
        )
        return StoredRecord.from_row(rows[0]) if rows else None

    def records(self, gateway_id, *, seq_from=None, seq_to=None, kind=None, event_type=None,
                wall_time_from_ms=None, wall_time_before_ms=None, dispenser_address=None,
                nozzle=None, scale_id=None, tank_number=None, after_seq=None,
                limit=DEFAULT_PAGE_SIZE):
        """A gateway's accepted records in seq order, one page at a time. seq_from..seq_to is
        inclusive; the wall-time window is [wall_time_from_ms, wall_time_before_ms)."""
        check_limit(limit)
        where, params = _where([
            ("gateway_id = ?", gateway_id),
            ("seq >= ?", seq_from),
            ("seq <= ?", seq_to),
            ("seq > ?", after_seq),
            ("kind = ?", kind),
            ("event_type = ?", event_type),
            ("wall_time_ms >= ?", wall_time_from_ms),
            ("wall_time_ms < ?", wall_time_before_ms),
            ("dispenser_address = ?", dispenser_address),
            ("nozzle = ?", nozzle),
            ("scale_id = ?", scale_id),
            ("tank_number = ?", tank_number),
        ])
        rows = self._backend.query(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {where} AND NOT quarantined"
            " ORDER BY seq LIMIT ?",
            (*params, limit + 1),
        )
        return self._page(rows, limit, "seq")

    def quarantine(self, sender_gateway_id=None, *, outcome=None, after_record_id=None,
                   limit=DEFAULT_PAGE_SIZE):
        """Quarantined envelopes (fork twins included) in the order they arrived, optionally
        only those one gateway sent or with one verifier outcome."""
        check_limit(limit)
        where, params = _where([
            ("quarantined", True),
            ("sender_gateway_id = ?", sender_gateway_id),
            ("outcome = ?", outcome),
            ("record_id > ?", after_record_id),
        ])
        rows = self._backend.query(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {where} ORDER BY record_id LIMIT ?",
            (*params, limit + 1),
        )
        return self._page(rows, limit, "record_id")

    @staticmethod
    def _page(rows, limit, key):
        items = tuple(StoredRecord.from_row(row) for row in rows[:limit])
        return Page(items, getattr(items[-1], key) if len(rows) > limit else None)

    def forks(self, gateway_id):
        """Every fork of a gateway's chain, with both envelopes, in seq order."""
        rows = self._backend.query(
            "SELECT fork_id, gateway_id, seq, stored_record_id, twin_record_id, first_seen_ms"
            " FROM forks WHERE gateway_id = ? ORDER BY seq, fork_id",
            (gateway_id,),
        )
        return [Fork(row["fork_id"], row["gateway_id"], row["seq"],
                     self.record(row["stored_record_id"]), self.record(row["twin_record_id"]),
                     row["first_seen_ms"]) for row in rows]

    def findings(self, gateway_id, *, kind=None, open_only=False):
        """A gateway's chain findings in seq order; ``open_only`` leaves out resolved ones."""
        where, params = _where([
            ("gateway_id = ?", gateway_id),
            ("kind = ?", kind),
            ("resolved_at_ms IS NULL", open_only or None),
        ])
        rows = self._backend.query(
            f"SELECT {_FINDING_COLUMNS} FROM chain_findings WHERE {where}"
            " ORDER BY first_seq, finding_id",
            tuple(params),
        )
        return [ChainFinding.from_row(row) for row in rows]

    def ingest_state(self, gateway_id):
        rows = self._backend.query(
            f"SELECT {_STATE_COLUMNS} FROM gateway_ingest_state WHERE gateway_id = ?",
            (gateway_id,),
        )
        return IngestState(**rows[0]) if rows else None

    def outcome_counts(self, sender_gateway_id=None, *, quarantined=None):
        """How many stored envelopes got each verifier outcome (every outcome is a key)."""
        where, params = _where([
            ("sender_gateway_id = ?", sender_gateway_id),
            ("quarantined = ?", quarantined),
        ])
        rows = self._backend.query(
            "SELECT outcome, COUNT(*) AS count FROM records"
            + (f" WHERE {where}" if where else "") + " GROUP BY outcome",
            tuple(params),
        )
        counts = dict.fromkeys(migrations.OUTCOMES, 0)
        counts.update((row["outcome"], row["count"]) for row in rows)
        return counts

    # --- audit log ------------------------------------------------------------------------------

    def audit_log(self, *, after_seq=None, limit=DEFAULT_PAGE_SIZE):
        """Audit log entries in seq order, one page at a time (pass next_after as after_seq)."""
        check_limit(limit)
        return audit.entries(self._backend, after_seq, limit)

    def verify_audit_log(self):
        """Recompute the audit log's hash chain from its first entry: an AuditCheck that names
        the first broken or missing entry, if any."""
        return audit.verify(self._backend)
