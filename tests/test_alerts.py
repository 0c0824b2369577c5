"""Alerts and the audit log (meterseal.host.storage.alerts, .audit), on both storage backends for
real through conftest.py's store fixtures: dedupe, ranking, the state machine (every allowed and
every forbidden transition), notes and assignees, and a hash chain that names what was tampered.
"""

import threading
from hashlib import sha256

import cbor2
import pytest

from meterseal.host.storage import (ACTIONS, ALERT_STATES, TRANSITIONS, AlertError, open_backend,
                                    open_store)

from test_storage import CHAIN, GATEWAY, ingest

SUPERVISOR = ("Li Wei", "supervisor")
OFFICER = ("Zhang Min", "officer")
SEEN_MS = 1767240000000

# The actions (taken by a supervisor, who may take them all) that bring a new alert to a state.
PATH_TO = {"new": [], "acknowledged": ["acknowledge"], "escalated": ["acknowledge", "escalate"],
           "closed": ["acknowledge", "close"]}
FORBIDDEN = [(state, action) for state in ALERT_STATES for action in ACTIONS
             if (state, action) not in TRANSITIONS]


@pytest.fixture
def record_ids(store):
    return [result.record_id for result in ingest(store, CHAIN[:6])]


def sighting(record_ids, device_ref="80", rule="pulse_scaling", severity="high", score=0.8,
             **changes):
    """raise_alert's arguments for one sighting, as a dict."""
    return {"gateway_id": GATEWAY, "device_ref": device_ref, "rule": rule, "severity": severity,
            "score": score, "explanation_en": f"Nozzle flow {score} above its baseline.",
            "explanation_zh": f"油枪流量高于基线 {score}。",
            "evidence_record_ids": record_ids[:1], "parameters": {"threshold": 0.5},
            "seen_at_ms": SEEN_MS, **changes}


def act(store, alert_id, action, user=SUPERVISOR, reason="honest_drift"):
    if action == "close":
        return store.alerts.close(alert_id, reason, *user)
    return getattr(store.alerts, action)(alert_id, *user)


def alert_in(store, record_ids, state):
    alert = store.alerts.raise_alert(**sighting(record_ids))
    for action in PATH_TO[state]:
        alert = act(store, alert.alert_id, action)
    assert alert.state == state
    return alert


def audit_entries(store):
    return store.audit_log(limit=1000).items


def what_a_refusal_must_not_change(store, alert_id):
    return (store.alerts.alert(alert_id), store.alerts.transitions(alert_id),
            store.alerts.notes(alert_id), audit_entries(store))


# --- raising, dedupe and ranking ------------------------------------------------------------------


def test_a_finding_becomes_a_new_alert_that_explains_itself(store, record_ids):
    alert = store.alerts.raise_alert(**sighting(record_ids, evidence_record_ids=record_ids[:3]))
    assert (alert.gateway_id, alert.device_ref, alert.rule, alert.severity, alert.score) == (
        GATEWAY, "80", "pulse_scaling", "high", 0.8)
    assert alert.explanation_zh == "油枪流量高于基线 0.8。"
    assert alert.parameters == {"threshold": 0.5}
    assert alert.evidence_record_ids == tuple(record_ids[:3])
    assert (alert.state, alert.close_reason, alert.assignee, alert.occurrences) == (
        "new", None, None, 1)
    assert alert.first_seen_ms == alert.last_seen_ms == SEEN_MS
    (entry,) = audit_entries(store)
    assert (entry.seq, entry.actor, entry.action, entry.subject) == (
        1, "meterseal", "alert.raise", f"alert/{alert.alert_id}")
    assert entry.details["evidence_record_ids"] == record_ids[:3]
    assert entry.details["explanation_zh"] == alert.explanation_zh


def test_a_repeat_while_open_updates_the_alert_instead_of_raising_another(store, record_ids):
    first = store.alerts.raise_alert(**sighting(record_ids, evidence_record_ids=record_ids[:2]))
    weaker = store.alerts.raise_alert(**sighting(
        record_ids, severity="medium", score=0.9, evidence_record_ids=record_ids[1:3],
        seen_at_ms=SEEN_MS + 1000))
    assert weaker.alert_id == first.alert_id
    assert (weaker.occurrences, weaker.last_seen_ms, weaker.first_seen_ms) == (
        2, SEEN_MS + 1000, SEEN_MS)
    assert weaker.evidence_record_ids == tuple(record_ids[:3])
    # A lower severity does not lower the alert, however high its score.
    assert (weaker.severity, weaker.score, weaker.explanation_en) == (
        "high", 0.8, first.explanation_en)
    stronger = store.alerts.raise_alert(**sighting(
        record_ids, score=0.95, parameters={"threshold": 0.4}, seen_at_ms=SEEN_MS + 2000))
    assert stronger.alert_id == first.alert_id and stronger.occurrences == 3
    assert (stronger.score, stronger.parameters) == (0.95, {"threshold": 0.4})
    assert stronger.explanation_en == "Nozzle flow 0.95 above its baseline."
    assert [e.action for e in audit_entries(store)] == ["alert.raise", "alert.repeat",
                                                        "alert.repeat"]
    assert audit_entries(store)[1].details["evidence_record_ids"] == [record_ids[2]]
    assert len(store.alerts.ranked()) == 1


def test_dedupe_is_per_gateway_device_and_rule_and_only_while_open(store, record_ids):
    raise_alert = store.alerts.raise_alert
    base = raise_alert(**sighting(record_ids))
    others = [raise_alert(**sighting(record_ids, device_ref="81")),
              raise_alert(**sighting(record_ids, device_ref=None)),
              raise_alert(**sighting(record_ids, rule="totalizer_continuity")),
              raise_alert(**sighting(record_ids, gateway_id="GW-OTHER"))]
    assert len({base.alert_id, *(alert.alert_id for alert in others)}) == 5
    assert raise_alert(**sighting(record_ids, device_ref=None)).alert_id == others[1].alert_id
    act(store, base.alert_id, "acknowledge")
    assert raise_alert(**sighting(record_ids)).alert_id == base.alert_id
    act(store, base.alert_id, "close")
    after_close = raise_alert(**sighting(record_ids))
    assert after_close.alert_id != base.alert_id
    assert (after_close.state, after_close.occurrences) == ("new", 1)


def test_open_alerts_rank_by_severity_then_score_then_recency(store, record_ids):
    def raised(device_ref, severity, score, seen_at_ms=SEEN_MS):
        return store.alerts.raise_alert(**sighting(
            record_ids, device_ref=device_ref, severity=severity, score=score,
            seen_at_ms=seen_at_ms)).alert_id

    low = raised("1", "low", 0.99)
    critical = raised("2", "critical", 0.1)
    high_old = raised("3", "high", 0.5, SEEN_MS)
    high_new = raised("4", "high", 0.5, SEEN_MS + 1)
    high_top = raised("5", "high", 0.7)
    medium = raised("6", "medium", 0.5)
    closed = raised("7", "critical", 1.0)
    act(store, closed, "acknowledge")
    act(store, closed, "close")
    escalated = raised("8", "medium", 0.6)
    act(store, escalated, "acknowledge")
    act(store, escalated, "escalate")
    ranked = [alert.alert_id for alert in store.alerts.ranked()]
    assert ranked == [critical, high_top, high_new, high_old, escalated, medium, low]
    assert [alert.alert_id for alert in store.alerts.ranked(limit=2)] == ranked[:2]
    assert store.alerts.ranked("GW-OTHER") == []


# --- the state machine ----------------------------------------------------------------------------


@pytest.mark.parametrize("state, action", sorted(TRANSITIONS))
def test_every_allowed_transition_is_made_recorded_and_logged(store, record_ids, state, action):
    alert = alert_in(store, record_ids, state)
    logged = len(audit_entries(store))
    after = act(store, alert.alert_id, action, reason="false_positive")
    to_state, _ = TRANSITIONS[state, action]
    assert after.state == to_state
    assert after.close_reason == ("false_positive" if to_state == "closed" else None)
    transition = store.alerts.transitions(alert.alert_id)[-1]
    assert (transition.action, transition.from_state, transition.to_state, transition.actor,
            transition.role) == (action, state, to_state, *SUPERVISOR)
    (entry,) = audit_entries(store)[logged:]
    assert (entry.actor, entry.action, entry.subject) == (
        SUPERVISOR[0], f"alert.{action}", f"alert/{alert.alert_id}")
    assert entry.details == {"role": "supervisor", "from_state": state, "to_state": to_state,
                             "close_reason": after.close_reason}


@pytest.mark.parametrize("state, action", FORBIDDEN)
def test_every_forbidden_transition_changes_nothing_and_logs_nothing(store, record_ids, state,
                                                                     action):
    alert = alert_in(store, record_ids, state)
    before = what_a_refusal_must_not_change(store, alert.alert_id)
    with pytest.raises(AlertError, match=f"alert {alert.alert_id} is {state}: it cannot be "
                                         f"{ACTIONS[action]}; from {state} it can only be"
                       ) as refused:
        act(store, alert.alert_id, action)
    assert "\n" not in str(refused.value)
    assert what_a_refusal_must_not_change(store, alert.alert_id) == before


@pytest.mark.parametrize("state, action, user", [
    ("new", "acknowledge", ("Acme QA", "manufacturer")),
    ("acknowledged", "close", ("Acme QA", "manufacturer")),
    ("escalated", "close", OFFICER),
    ("closed", "reopen", OFFICER),
])
def test_a_role_that_may_not_take_an_action_is_refused(store, record_ids, state, action, user):
    alert = alert_in(store, record_ids, state)
    before = what_a_refusal_must_not_change(store, alert.alert_id)
    with pytest.raises(AlertError, match=f"role {user[1]} may not {action} alert"):
        act(store, alert.alert_id, action, user)
    assert what_a_refusal_must_not_change(store, alert.alert_id) == before


def test_a_reopened_alert_is_acknowledged_again_and_can_be_closed_anew(store, record_ids):
    alert = alert_in(store, record_ids, "closed")
    reopened = act(store, alert.alert_id, "reopen")
    assert (reopened.state, reopened.close_reason) == ("acknowledged", None)
    closed = act(store, alert.alert_id, "close", reason="confirmed_cheat")
    assert (closed.state, closed.close_reason) == ("closed", "confirmed_cheat")
    assert [(t.from_state, t.to_state) for t in store.alerts.transitions(alert.alert_id)] == [
        ("new", "acknowledged"), ("acknowledged", "closed"), ("closed", "acknowledged"),
        ("acknowledged", "closed")]


def test_reopening_is_refused_while_another_alert_covers_the_same_device_and_rule(store,
                                                                                record_ids):
    closed = alert_in(store, record_ids, "closed")
    newer = store.alerts.raise_alert(**sighting(record_ids))
    before = what_a_refusal_must_not_change(store, closed.alert_id)
    with pytest.raises(AlertError, match=f"alert {closed.alert_id} cannot be reopened: an open "
                                         "alert already covers"):
        act(store, closed.alert_id, "reopen")
    assert what_a_refusal_must_not_change(store, closed.alert_id) == before
    act(store, newer.alert_id, "acknowledge")
    act(store, newer.alert_id, "close", reason="duplicate")
    assert act(store, closed.alert_id, "reopen").state == "acknowledged"


# --- assignees and notes --------------------------------------------------------------------------


def test_alerts_are_assigned_and_carry_notes(store, record_ids):
    alert = store.alerts.raise_alert(**sighting(record_ids))
    assert store.alerts.assign(alert.alert_id, "Zhang Min", *SUPERVISOR).assignee == "Zhang Min"
    assert [a.alert_id for a in store.alerts.ranked(assignee="Zhang Min")] == [alert.alert_id]
    assert store.alerts.assign(alert.alert_id, None, *SUPERVISOR).assignee is None
    first = store.alerts.add_note(alert.alert_id, "Test draw booked for Tuesday.", *OFFICER)
    second = store.alerts.add_note(alert.alert_id, "固件版本与登记一致。", "Acme QA",
                                   "manufacturer")
    assert store.alerts.notes(alert.alert_id) == [first, second]
    assert (second.author, second.role, second.text) == ("Acme QA", "manufacturer",
                                                         "固件版本与登记一致。")
    assert [(e.actor, e.action, e.details.get("to_assignee"), e.details.get("text"))
            for e in audit_entries(store)[1:]] == [
        ("Li Wei", "alert.assign", "Zhang Min", None),
        ("Li Wei", "alert.assign", None, None),
        ("Zhang Min", "alert.note", None, "Test draw booked for Tuesday."),
        ("Acme QA", "alert.note", None, "固件版本与登记一致。"),
    ]


def test_a_closed_alert_takes_notes_but_no_assignee(store, record_ids):
    alert = alert_in(store, record_ids, "closed")
    store.alerts.add_note(alert.alert_id, "Court upheld the fine.", *SUPERVISOR)
    before = what_a_refusal_must_not_change(store, alert.alert_id)
    with pytest.raises(AlertError, match=f"alert {alert.alert_id} is closed: reopen it before"):
        store.alerts.assign(alert.alert_id, "Zhang Min", *SUPERVISOR)
    assert what_a_refusal_must_not_change(store, alert.alert_id) == before


@pytest.mark.parametrize("change, message", [
    (lambda s, a, r: s.alerts.acknowledge(999, *OFFICER), "there is no alert 999"),
    (lambda s, a, r: s.alerts.close(a, "bored", *SUPERVISOR),
     "close reason 'bored' is not one of confirmed_cheat, honest_drift, data_fault, "
     "false_positive, duplicate"),
    (lambda s, a, r: s.alerts.acknowledge(a, "Li Wei", "janitor"), "role 'janitor' is not one"),
    (lambda s, a, r: s.alerts.assign(a, "Zhang Min", "Acme QA", "manufacturer"),
     "role manufacturer may not assign alerts"),
    (lambda s, a, r: s.alerts.add_note(a, "   ", *OFFICER), "note must be non-empty text"),
    (lambda s, a, r: s.alerts.raise_alert(**sighting(r, severity="urgent")),
     "severity 'urgent' is not one of low, medium, high, critical"),
    (lambda s, a, r: s.alerts.raise_alert(**sighting(r, score=float("nan"))),
     "score must be a finite number"),
    (lambda s, a, r: s.alerts.raise_alert(**sighting(r, rule="Pulse Scaling")),
     "rule 'Pulse Scaling' must be 1 to 64 characters"),
    (lambda s, a, r: s.alerts.raise_alert(**sighting(r, evidence_record_ids=[r[0], 999])),
     "evidence records not stored: 999"),
    (lambda s, a, r: s.alerts.raise_alert(**sighting(r, parameters={"k": object()})),
     "parameters are not JSON"),
])
def test_bad_requests_are_refused_with_one_line_and_change_nothing(store, record_ids, change,
                                                                   message):
    alert = store.alerts.raise_alert(**sighting(record_ids, device_ref="81"))
    before = what_a_refusal_must_not_change(store, alert.alert_id), store.alerts.ranked()
    with pytest.raises(AlertError, match=message) as refused:
        change(store, alert.alert_id, record_ids)
    assert "\n" not in str(refused.value)
    assert (what_a_refusal_must_not_change(store, alert.alert_id),
            store.alerts.ranked()) == before


# --- the audit log --------------------------------------------------------------------------------


def busy_log(store, record_ids):
    """An audit log of eight entries, one of each kind of action."""
    alert = store.alerts.raise_alert(**sighting(record_ids))
    store.alerts.raise_alert(**sighting(record_ids, score=0.9))
    store.alerts.assign(alert.alert_id, "Zhang Min", *SUPERVISOR)
    for action in ("acknowledge", "escalate", "close", "reopen"):
        act(store, alert.alert_id, action)
    store.alerts.add_note(alert.alert_id, "Reopened: new evidence.", *SUPERVISOR)
    return audit_entries(store)


def test_each_entry_hashes_its_documented_encoding_and_names_the_one_before(store, record_ids):
    entries = busy_log(store, record_ids)
    assert [entry.seq for entry in entries] == list(range(1, 9))
    prev_hash = bytes(32)
    for entry in entries:
        # Recomputed with another CBOR library, from the encoding docs/alerts.md gives.
        encoded = cbor2.dumps([entry.seq, entry.at_ms, entry.actor, entry.action, entry.subject,
                               entry.details_json, prev_hash])
        assert entry.prev_hash == prev_hash
        assert entry.entry_hash == sha256(encoded).digest()
        prev_hash = entry.entry_hash
    check = store.verify_audit_log()
    assert (check.intact, check.entries_checked, check.head_hash) == (True, 8, prev_hash)


def test_an_empty_audit_log_is_intact(store):
    check = store.verify_audit_log()
    assert (check.intact, check.entries_checked, check.head_hash) == (True, 0, bytes(32))


def tamper(store_url, sql, params=()):
    backend = open_backend(store_url)
    try:
        backend.execute(sql, params)
    finally:
        backend.close()


def test_one_changed_byte_in_an_entry_is_found_and_named(store, store_url, record_ids):
    entries = busy_log(store, record_ids)
    details = entries[4].details_json
    assert '"escalated"' in details
    tamper(store_url, "UPDATE audit_log SET details_json = ? WHERE seq = 5",
           (details.replace('"escalated"', '"escalatex"'),))
    check = store.verify_audit_log()
    assert (check.broken_seq, check.entries_checked, check.head_hash) == (
        5, 4, entries[3].entry_hash)
    assert check.problem.startswith("entry 5 has been altered: its fields hash to ")


def test_an_entry_rewritten_with_a_recomputed_hash_breaks_the_next_link(store, store_url,
                                                                        record_ids):
    entry = busy_log(store, record_ids)[2]
    forged = sha256(cbor2.dumps([entry.seq, entry.at_ms, "Someone Else", entry.action,
                                 entry.subject, entry.details_json, entry.prev_hash])).digest()
    tamper(store_url, "UPDATE audit_log SET actor = 'Someone Else', entry_hash = ? WHERE seq = 3",
           (forged,))
    check = store.verify_audit_log()
    assert (check.broken_seq, check.entries_checked, check.head_hash) == (4, 3, forged)
    assert check.problem.startswith(f"entry 4 names prev_hash {entry.entry_hash.hex()}, but")


def test_a_deleted_entry_is_found_and_named(store, store_url, record_ids):
    busy_log(store, record_ids)
    tamper(store_url, "DELETE FROM audit_log WHERE seq = 6")
    check = store.verify_audit_log()
    assert (check.broken_seq, check.entries_checked) == (6, 5)
    assert check.problem == "entry 6 is missing: the next entry held is 7"


def test_a_deleted_first_entry_is_found(store, store_url, record_ids):
    busy_log(store, record_ids)
    tamper(store_url, "DELETE FROM audit_log WHERE seq = 1")
    assert store.verify_audit_log().broken_seq == 1


def test_concurrent_writers_on_two_connections_keep_one_chain(store_url, record_ids):
    rounds = 25
    barrier = threading.Barrier(2)
    failures = []

    def work(user):
        try:
            with open_store(store_url) as writer:
                barrier.wait()
                for _ in range(rounds):
                    # Both writers hit the same (gateway, device, rule): exactly one alert.
                    alert = writer.alerts.raise_alert(**sighting(record_ids))
                    writer.alerts.add_note(alert.alert_id, f"seen by {user[0]}", *user)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(user,)) for user in (SUPERVISOR, OFFICER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with open_store(store_url) as reader:
        (alert,) = reader.alerts.ranked()
        assert alert.occurrences == 2 * rounds
        assert len(reader.alerts.notes(alert.alert_id)) == 2 * rounds
        check = reader.verify_audit_log()
        assert (check.intact, check.entries_checked) == (True, 4 * rounds)
