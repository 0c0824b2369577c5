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
from .detection import Detection
from .errors import StorageError
from .registry import Registry
from .rows import (DEFAULT_PAGE_SIZE, ChainFinding, Fork, IngestResult, IngestState, NewFinding,
                   Page, StoredRecord, check_limit, columns)

# Envelopes looked up per query: far below either database's limit on parameters.
_LOOKUP_CHUNK = 500
# Seqs read per query when following the chain's contiguous run.
_RUN_PAGE = 1000

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
        self.detection = Detection(backend)

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
            results = self._store_rows(rows, held, now)
            for kind, first_seq, last_seq, detail in finding_values:
                self._add_finding(gateway_id, kind, first_seq, last_seq, detail, now)
            stored = [row for row, result in zip(rows, results) if result.outcome == ingest.STORED]
            if stored:
                self._advance_state(gateway_id, stored, now)
            self._resolve_gaps(gateway_id, now)
        return results

    def _held(self, gateway_id, rows):
        """What the database already holds of a batch, in one lookup per chunk rather than two
        per record: {envelope_sha256: (record_id, quarantined)} and, of the gateway's chain,
        {seq: record_id}. (Only accepted rows have a seq to look up, and an accepted row always
        names the gateway that sent it.)"""
        by_sha256, by_seq = {}, {}
        digests = [row["envelope_sha256"] for row in rows]
        seqs = [row["seq"] for row in rows if not row["quarantined"]]
        for start in range(0, len(digests), _LOOKUP_CHUNK):
            digest_chunk, seq_chunk = (digests[start:start + _LOOKUP_CHUNK],
                                       seqs[start:start + _LOOKUP_CHUNK])
            # Both lookups in one statement (a round trip less to a PostgreSQL server): found
            # by digest, a row comes with no seq; found in the chain, always with one. (There
            # are never more seqs than digests, so this loop reaches every seq too.)
            sql = ("SELECT record_id, quarantined, envelope_sha256, NULL AS seq FROM records"
                   f" WHERE envelope_sha256 IN ({', '.join('?' * len(digest_chunk))})")
            params = list(digest_chunk)
            if seq_chunk:
                sql += (" UNION ALL SELECT record_id, quarantined, NULL, seq FROM records"
                        f" WHERE gateway_id = ? AND seq IN ({', '.join('?' * len(seq_chunk))})"
                        " AND NOT quarantined")
                params += [gateway_id, *seq_chunk]
            for found in self._backend.query(sql, params):
                if found["seq"] is None:
                    by_sha256[found["envelope_sha256"]] = (found["record_id"],
                                                           bool(found["quarantined"]))
                else:
                    by_seq[found["seq"]] = found["record_id"]
        return by_sha256, by_seq

    def _store_rows(self, rows, held, now):
        """Store each row unless it is a replay, in arrival order; returns one IngestResult per
        row. New rows are queued and inserted together (insert_each: one round trip to a
        PostgreSQL server rather than one per row); the queue is flushed first whenever a row
        needs the id of a queued one (a repeat or a fork of a record of this very batch, which
        is rare). ``held`` (from _held) is kept up to date: a record id of None in it means
        queued, not yet inserted."""
        by_sha256, by_seq = held
        results, queued = [], []

        def flush():
            record_ids = self._insert_records([rows[index] for index in queued])
            for index, record_id in zip(queued, record_ids):
                row, (outcome, detail) = rows[index], results[index]
                results[index] = IngestResult(outcome, record_id, detail)
                by_sha256[row["envelope_sha256"]] = (record_id, outcome != ingest.STORED)
                if outcome == ingest.STORED:
                    by_seq[row["seq"]] = record_id
            queued.clear()

        for index, row in enumerate(rows):
            digest = row["envelope_sha256"]
            if digest in by_sha256:
                if by_sha256[digest][0] is None:
                    flush()
                record_id, quarantined = by_sha256[digest]
                where = " (in quarantine)" if quarantined else ""
                results.append(IngestResult(
                    ingest.REPLAY, record_id,
                    f"identical envelope already stored as record {record_id}{where}"))
                continue
            if row["quarantined"]:
                outcome, detail = ingest.QUARANTINED, row["detail"]
            elif row["seq"] in by_seq:
                if by_seq[row["seq"]] is None:
                    flush()
                result = self._keep_fork(row, by_seq[row["seq"]], now)
                by_sha256[digest] = (result.record_id, True)
                results.append(result)
                continue
            else:
                outcome, detail = ingest.STORED, ""
                by_seq[row["seq"]] = None
            by_sha256[digest] = (None, outcome != ingest.STORED)
            queued.append(index)
            results.append((outcome, detail))  # an IngestResult once flushed
        flush()
        return results

    def _keep_fork(self, row, stored_id, now):
        gateway_id, seq = row["gateway_id"], row["seq"]
        detail = (f"fork: seq {seq} of gateway {gateway_id} is already held by record "
                  f"{stored_id}, whose envelope differs; both are kept")
        (twin_id,) = self._insert_records([dict(row, quarantined=True, detail=detail)])
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

    def _insert_records(self, rows):
        """Insert ``rows`` (record_row dicts, all with the same columns) in this order; returns
        their record ids in the same order."""
        if not rows:
            return []
        names = ", ".join(rows[0])
        marks = ", ".join("?" * len(rows[0]))
        return self._backend.insert_each(f"INSERT INTO records ({names}) VALUES ({marks})",
                                         [tuple(row.values()) for row in rows], "record_id")

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
        contiguous = self._contiguous_seq(gateway_id, state,
                                          sorted(row["seq"] for row in stored))
        self._backend.execute(
            f"INSERT INTO gateway_ingest_state ({_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (gateway_id) DO UPDATE SET contiguous_seq = excluded.contiguous_seq,"
            " highest_seq = excluded.highest_seq,"
            " highest_seq_sha256 = excluded.highest_seq_sha256,"
            " last_boot_epoch = excluded.last_boot_epoch, updated_at_ms = excluded.updated_at_ms",
            (gateway_id, contiguous, *highest, now),
        )

    def _contiguous_seq(self, gateway_id, state, stored_seqs):
        """The end of the run of accepted seqs that starts at 0, now that the batch stored
        ``stored_seqs`` (ascending) onto ``state``. In the usual case the run had reached the
        highest seq held and the batch carries it on without a hole: nothing above the batch is
        held, so its last seq is the end. Otherwise the seqs above the run's old end are read
        in order, a page at a time, up to the first hole (a range scan of the chain's index)."""
        held = None if state is None else state.contiguous_seq
        end = -1 if held is None else held
        if ((state is None or held == state.highest_seq) and stored_seqs[0] == end + 1
                and stored_seqs[-1] == end + len(stored_seqs)):  # distinct seqs, so no hole
            return stored_seqs[-1]
        while True:
            page = self._backend.query(
                "SELECT seq FROM records WHERE gateway_id = ? AND seq > ? AND NOT quarantined"
                " ORDER BY seq LIMIT ?", (gateway_id, end, _RUN_PAGE))
            for row in page:
                if row["seq"] != end + 1:
                    return held if end == -1 else end
                end += 1
            if len(page) < _RUN_PAGE:
                return held if end == -1 else end

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
