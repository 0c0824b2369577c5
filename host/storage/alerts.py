"""Alerts: the findings officers work on, deduplicated, ranked and moved through a state machine
that the server enforces; every change is appended to the audit log (docs/alerts.md).

    new ──acknowledge──▶ acknowledged ──escalate──▶ escalated
                            │     ▲                     │
              close(reason) │     │ reopen              │ close(reason)
                            ▼     │                     │
                           closed ◀─────────────────────┘

TRANSITIONS below is the whole machine, with who may take each step.

A refused change raises AlertError (one line) inside the transaction, so it changes nothing and
logs nothing. Every change first takes the audit log's lock, which also serialises changes to
alerts: two writers cannot both open an alert for the same (gateway, device, rule).
"""

import json
import math
import re
import time

from . import audit
from .errors import AlertError
from .migrations import ALERT_SEVERITIES, CLOSE_REASONS, USER_ROLES
from .rows import DEFAULT_PAGE_SIZE, Alert, AlertNote, AlertTransition, check_limit, columns

# The actor the host itself acts as: raising alerts from what the verifier and detectors find.
SYSTEM_ACTOR = "meterseal"

# A manufacturer may comment on alerts about its devices (add_note) but never decides or
# assigns them.
_DECIDERS = ("officer", "supervisor", "admin")
_SUPERVISORS = ("supervisor", "admin")
# (state, action): (the state it leads to, the roles that may take it). Anything else is refused.
# Once escalated, the decision is a supervisor's; so is undoing a closed decision.
TRANSITIONS = {
    ("new", "acknowledge"): ("acknowledged", _DECIDERS),
    ("acknowledged", "escalate"): ("escalated", _DECIDERS),
    ("acknowledged", "close"): ("closed", _DECIDERS),
    ("escalated", "close"): ("closed", _SUPERVISORS),
    ("closed", "reopen"): ("acknowledged", _SUPERVISORS),
}
# Each action, and what an alert is once it is taken.
ACTIONS = {"acknowledge": "acknowledged", "escalate": "escalated", "close": "closed",
           "reopen": "reopened"}

_RULE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# Bounds on what one request may store: long enough for any real explanation or note.
MAX_TEXT_CHARS = 10_000
MAX_EVIDENCE_RECORDS = 1000

_ALERT_COLUMNS = ("alert_id, gateway_id, device_ref, rule, severity, score, explanation_en,"
                  " explanation_zh, parameters_json, state, close_reason, assignee, occurrences,"
                  " first_seen_ms, last_seen_ms, updated_at_ms")
_SEVERITY_RANK = ("CASE severity "
                  + " ".join(f"WHEN '{name}' THEN {rank}" for rank, name in
                             enumerate(ALERT_SEVERITIES)) + " END")


def _now_ms():
    return int(time.time() * 1000)


def _text(name, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS:
        raise AlertError(f"{name} must be non-empty text of at most {MAX_TEXT_CHARS} characters, "
                         f"got {value!r:.80}")
    return value


def _role(role):
    if role not in USER_ROLES:
        raise AlertError(f"role {role!r} is not one of " + ", ".join(USER_ROLES))
    return role


def _subject(alert_id):
    return f"alert/{alert_id}"


class Alerts:
    def __init__(self, backend):
        self._backend = backend

    # --- raising --------------------------------------------------------------------------------

    def raise_alert(self, gateway_id, device_ref, rule, severity, score, explanation_en,
                    explanation_zh, evidence_record_ids, parameters, *, actor=SYSTEM_ACTOR,
                    seen_at_ms=None):
        """Raise an alert, or fold this sighting into the open alert of the same (gateway,
        device, rule): that one counts it, takes its time as last seen and its evidence, and
        takes its severity, score, explanations and parameters if they rank higher. Returns the
        alert. ``device_ref`` None: the gateway as a whole (a chain finding)."""
        fields = self._checked_sighting(gateway_id, device_ref, rule, severity, score,
                                        explanation_en, explanation_zh, parameters)
        evidence = self._checked_evidence_ids(evidence_record_ids)
        now = _now_ms() if seen_at_ms is None else seen_at_ms
        with self._backend.transaction():
            self._backend.lock_audit_log()
            self._require_records(evidence)
            open_alert = self._open_alert(gateway_id, device_ref, rule)
            if open_alert is None:
                alert_id = self._insert(fields, now)
                action = "alert.raise"
                details = {name: value for name, value in fields.items()
                           if name != "parameters_json"}
                details["parameters"] = parameters
            else:
                alert_id = open_alert.alert_id
                self._fold(open_alert, fields, now)
                action = "alert.repeat"
                details = {"severity": severity, "score": fields["score"],
                           "occurrences": open_alert.occurrences + 1}
            added = self._add_evidence(alert_id, evidence)
            audit.append(self._backend, _text("actor", actor), action, _subject(alert_id),
                         dict(details, evidence_record_ids=added, seen_at_ms=now), now)
        return self.alert(alert_id)

    @staticmethod
    def _checked_sighting(gateway_id, device_ref, rule, severity, score, explanation_en,
                          explanation_zh, parameters):
        if not isinstance(rule, str) or not _RULE.match(rule):
            raise AlertError(f"rule {rule!r} must be 1 to 64 characters of a-z, 0-9, '_', '.' "
                             "or '-', starting with a letter")
        if severity not in ALERT_SEVERITIES:
            raise AlertError(f"severity {severity!r} is not one of " + ", ".join(ALERT_SEVERITIES))
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(
                score):
            raise AlertError(f"score must be a finite number, got {score!r}")
        if not isinstance(parameters, dict):
            raise AlertError(f"parameters must be a dict, got {type(parameters).__name__}")
        try:
            parameters_json = json.dumps(parameters, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise AlertError(f"parameters are not JSON ({exc})") from exc
        return {"gateway_id": _text("gateway_id", gateway_id),
                "device_ref": _text("device_ref", device_ref, optional=True),
                "rule": rule, "severity": severity, "score": float(score),
                "explanation_en": _text("explanation_en", explanation_en),
                "explanation_zh": _text("explanation_zh", explanation_zh),
                "parameters_json": parameters_json}

    @staticmethod
    def _checked_evidence_ids(evidence_record_ids):
        evidence = list(evidence_record_ids)
        for record_id in evidence:
            if isinstance(record_id, bool) or not isinstance(record_id, int):
                raise AlertError(f"evidence record id {record_id!r} is not a whole number")
        if len(evidence) > MAX_EVIDENCE_RECORDS:
            raise AlertError(f"an alert cites at most {MAX_EVIDENCE_RECORDS} evidence records "
                             f"at a time, got {len(evidence)}")
        return sorted(set(evidence))

    def _require_records(self, record_ids):
        if not record_ids:
            return
        found = {row["record_id"] for row in self._backend.query(
            f"SELECT record_id FROM records WHERE record_id IN ({', '.join('?' * len(record_ids))})",
            record_ids)}
        missing = [record_id for record_id in record_ids if record_id not in found]
        if missing:
            raise AlertError("evidence records not stored: " + ", ".join(map(str, missing)))

    def _open_alert(self, gateway_id, device_ref, rule):
        # COALESCE matches the unique index on open alerts; device_ref is never empty text.
        found = self._alerts("WHERE gateway_id = ? AND COALESCE(device_ref, '') = ? AND rule = ?"
                             " AND state <> 'closed'", (gateway_id, device_ref or "", rule))
        return found[0] if found else None

    def _insert(self, fields, now):
        (row,) = self._backend.query(
            f"INSERT INTO alerts ({', '.join(fields)}, state, occurrences, first_seen_ms,"
            f" last_seen_ms, updated_at_ms) VALUES ({', '.join('?' * len(fields))},"
            " 'new', 1, ?, ?, ?) RETURNING alert_id",
            (*fields.values(), now, now, now),
        )
        return row["alert_id"]

    def _fold(self, alert, fields, now):
        """Count a repeat sighting into an open alert; the higher-ranked sighting explains it."""
        rank = ALERT_SEVERITIES.index
        if (rank(fields["severity"]), fields["score"]) > (rank(alert.severity), alert.score):
            self._backend.execute(
                "UPDATE alerts SET severity = ?, score = ?, explanation_en = ?,"
                " explanation_zh = ?, parameters_json = ? WHERE alert_id = ?",
                (fields["severity"], fields["score"], fields["explanation_en"],
                 fields["explanation_zh"], fields["parameters_json"], alert.alert_id),
            )
        self._backend.execute(
            "UPDATE alerts SET occurrences = occurrences + 1, last_seen_ms = ?, updated_at_ms = ?"
            " WHERE alert_id = ?",
            (max(alert.last_seen_ms, now), now, alert.alert_id),
        )

    def _add_evidence(self, alert_id, record_ids):
        """Cite these records (those not yet cited); returns the ones added."""
        cited = set(self._evidence([alert_id]).get(alert_id, ()))
        added = [record_id for record_id in record_ids if record_id not in cited]
        for record_id in added:
            self._backend.execute(
                "INSERT INTO alert_evidence (alert_id, record_id) VALUES (?, ?)",
                (alert_id, record_id),
            )
        return added

    # --- what officers do -----------------------------------------------------------------------

    def acknowledge(self, alert_id, actor, role):
        return self._transition(alert_id, "acknowledge", actor, role)

    def escalate(self, alert_id, actor, role):
        return self._transition(alert_id, "escalate", actor, role)

    def close(self, alert_id, reason, actor, role):
        if reason not in CLOSE_REASONS:
            raise AlertError(f"close reason {reason!r} is not one of " + ", ".join(CLOSE_REASONS))
        return self._transition(alert_id, "close", actor, role, reason)

    def reopen(self, alert_id, actor, role):
        """Reopen a closed alert as acknowledged: whoever reopens it has looked at it."""
        return self._transition(alert_id, "reopen", actor, role)

    def _transition(self, alert_id, action, actor, role, close_reason=None):
        actor, role = _text("actor", actor), _role(role)
        now = _now_ms()
        with self._backend.transaction():
            self._backend.lock_audit_log()
            alert = self._existing(alert_id)
            allowed = TRANSITIONS.get((alert.state, action))
            if allowed is None:
                possible = [ACTIONS[a] for a in ACTIONS if (alert.state, a) in TRANSITIONS]
                raise AlertError(f"alert {alert_id} is {alert.state}: it cannot be "
                                 f"{ACTIONS[action]}; from {alert.state} it can only be "
                                 + " or ".join(possible))
            to_state, roles = allowed
            if role not in roles:
                raise AlertError(f"role {role} may not {action} alert {alert_id} while it is "
                                 f"{alert.state} (only " + " or ".join(roles) + " may)")
            if action == "reopen" and self._open_alert(alert.gateway_id, alert.device_ref,
                                                       alert.rule):
                raise AlertError(f"alert {alert_id} cannot be reopened: an open alert already "
                                 "covers its gateway, device and rule")
            self._backend.execute(
                "UPDATE alerts SET state = ?, close_reason = ?, updated_at_ms = ?"
                " WHERE alert_id = ?",
                (to_state, close_reason, now, alert_id),
            )
            self._backend.execute(
                "INSERT INTO alert_transitions (alert_id, action, from_state, to_state,"
                " close_reason, actor, role, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (alert_id, action, alert.state, to_state, close_reason, actor, role, now),
            )
            audit.append(self._backend, actor, f"alert.{action}", _subject(alert_id),
                         {"role": role, "from_state": alert.state, "to_state": to_state,
                          "close_reason": close_reason}, now)
        return self.alert(alert_id)

    def assign(self, alert_id, assignee, actor, role):
        """Give an open alert to ``assignee`` (a user name), or to no one (None)."""
        assignee = _text("assignee", assignee, optional=True)
        actor, role = _text("actor", actor), _role(role)
        if role not in _DECIDERS:
            raise AlertError(f"role {role} may not assign alerts (only "
                             + " or ".join(_DECIDERS) + " may)")
        now = _now_ms()
        with self._backend.transaction():
            self._backend.lock_audit_log()
            alert = self._existing(alert_id)
            if alert.state == "closed":
                raise AlertError(f"alert {alert_id} is closed: reopen it before assigning it")
            self._backend.execute(
                "UPDATE alerts SET assignee = ?, updated_at_ms = ? WHERE alert_id = ?",
                (assignee, now, alert_id),
            )
            audit.append(self._backend, actor, "alert.assign", _subject(alert_id),
                         {"role": role, "from_assignee": alert.assignee, "to_assignee": assignee},
                         now)
        return self.alert(alert_id)

    def add_note(self, alert_id, text, author, role):
        """Add a note to an alert, in any state (a court's outcome may come after closing)."""
        text, author, role = _text("note", text), _text("author", author), _role(role)
        now = _now_ms()
        with self._backend.transaction():
            self._backend.lock_audit_log()
            self._existing(alert_id)
            (row,) = self._backend.query(
                "INSERT INTO alert_notes (alert_id, author, role, text, at_ms)"
                " VALUES (?, ?, ?, ?, ?) RETURNING note_id",
                (alert_id, author, role, text, now),
            )
            audit.append(self._backend, author, "alert.note", _subject(alert_id),
                         {"role": role, "note_id": row["note_id"], "text": text}, now)
        return AlertNote(row["note_id"], alert_id, author, role, text, now)

    # --- queries --------------------------------------------------------------------------------

    def alert(self, alert_id):
        """One alert by its id, with its evidence; None if there is none."""
        found = self._alerts("WHERE alert_id = ?", (alert_id,))
        return found[0] if found else None

    def _existing(self, alert_id):
        alert = self.alert(alert_id)
        if alert is None:
            raise AlertError(f"there is no alert {alert_id}")
        return alert

    def ranked(self, gateway_id=None, *, assignee=None, limit=DEFAULT_PAGE_SIZE):
        """The open alerts (new, acknowledged, escalated), most urgent first: by severity, then
        score, then the latest sighting, then the newest alert."""
        check_limit(limit)
        conditions, params = ["state <> 'closed'"], []
        for column, value in (("gateway_id", gateway_id), ("assignee", assignee)):
            if value is not None:
                conditions.append(f"{column} = ?")
                params.append(value)
        return self._alerts(
            f"WHERE {' AND '.join(conditions)} ORDER BY {_SEVERITY_RANK} DESC, score DESC,"
            " last_seen_ms DESC, alert_id DESC LIMIT ?", (*params, limit))

    def notes(self, alert_id):
        rows = self._backend.query(
            f"SELECT {columns(AlertNote)} FROM alert_notes WHERE alert_id = ? ORDER BY note_id",
            (alert_id,))
        return [AlertNote(**row) for row in rows]

    def transitions(self, alert_id):
        rows = self._backend.query(
            f"SELECT {columns(AlertTransition)} FROM alert_transitions WHERE alert_id = ?"
            " ORDER BY transition_id", (alert_id,))
        return [AlertTransition(**row) for row in rows]

    def _alerts(self, where_and_order, params):
        rows = self._backend.query(f"SELECT {_ALERT_COLUMNS} FROM alerts {where_and_order}",
                                   params)
        evidence = self._evidence([row["alert_id"] for row in rows])
        return [Alert.from_row(row, evidence.get(row["alert_id"], ())) for row in rows]

    def _evidence(self, alert_ids):
        """{alert_id: [record_id, ...] ascending} for these alerts."""
        if not alert_ids:
            return {}
        by_alert = {}
        for row in self._backend.query(
            "SELECT alert_id, record_id FROM alert_evidence"
            f" WHERE alert_id IN ({', '.join('?' * len(alert_ids))}) ORDER BY record_id",
            alert_ids,
        ):
            by_alert.setdefault(row["alert_id"], []).append(row["record_id"])
        return by_alert
