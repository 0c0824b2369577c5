"""The audit log: an append-only, hash-chained list of every action taken (docs/alerts.md).

Each entry names the hash of the one before, so changing, inserting or removing an entry anywhere
but at the very end breaks the chain at that entry. The hash covers one canonical encoding that
any CBOR library reproduces (deterministic CBOR, RFC 8949 section 4.2.1, has exactly one encoding
for integers, text and byte strings):

    entry_hash = SHA-256( CBOR array [seq, at_ms, actor, action, subject, details_json, prev_hash] )

    seq           unsigned integer, 1 for the first entry, then +1 with no gaps
    at_ms         integer, milliseconds since 1970-01-01 UTC
    actor         text string: who acted (a user name, or "meterseal" for the host itself)
    action        text string, e.g. "alert.transition"
    subject       text string, e.g. "alert/17"
    details_json  text string: the details column exactly as stored (never re-serialised)
    prev_hash     byte string, 32 bytes: the previous entry's entry_hash; 32 zero bytes for seq 1

The storage layer offers no way to change or delete an entry. Appends are serialised: a writer
appends only inside a write transaction that first takes lock_audit_log(), and the seq primary key
refuses a second entry for the same place should anything bypass the lock.
"""

import json
from hashlib import sha256

from meterseal.protocol import cbor

from .rows import AuditCheck, AuditEntry, Page

GENESIS_PREV_HASH = bytes(32)
# Entries read per query while verifying: bounds memory for a log of any length.
_VERIFY_CHUNK = 1000

_COLUMNS = "seq, at_ms, actor, action, subject, details_json, prev_hash, entry_hash"


def entry_hash(seq, at_ms, actor, action, subject, details_json, prev_hash):
    """The SHA-256 an entry with these fields must carry (the encoding is in the module doc)."""
    encoded = cbor.dumps([seq, at_ms, actor, action, subject, details_json, bytes(prev_hash)])
    return sha256(encoded).digest()


def append(backend, actor, action, subject, details, at_ms):
    """Append one entry; the caller is inside a write transaction that took lock_audit_log()."""
    details_json = json.dumps(details, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    head = backend.query("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (head[0]["seq"] + 1, bytes(head[0]["entry_hash"])) if head else (
        1, GENESIS_PREV_HASH)
    digest = entry_hash(seq, at_ms, actor, action, subject, details_json, prev_hash)
    backend.execute(
        f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at_ms, actor, action, subject, details_json, prev_hash, digest),
    )
    return seq


def entries(backend, after_seq=None, limit=100):
    """One page of entries in seq order, after ``after_seq``."""
    rows = backend.query(
        f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq or 0, limit + 1),
    )
    items = tuple(AuditEntry.from_row(row) for row in rows[:limit])
    return Page(items, items[-1].seq if len(rows) > limit else None)


def verify(backend):
    """Walk the chain from seq 1 and report the first entry that breaks it (AuditCheck)."""
    expected_seq, prev_hash, checked = 1, GENESIS_PREV_HASH, 0
    while True:
        rows = backend.query(f"SELECT {_COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq"
                             " LIMIT ?", (expected_seq, _VERIFY_CHUNK))
        for row in rows:
            fault = _fault(row, expected_seq, prev_hash)
            if fault:
                return AuditCheck(checked, prev_hash, *fault)
            expected_seq, prev_hash, checked = row["seq"] + 1, bytes(row["entry_hash"]), checked + 1
        if len(rows) < _VERIFY_CHUNK:
            return AuditCheck(checked, prev_hash, None, None)


def _fault(row, expected_seq, prev_hash):
    """(the seq of the broken entry, why) if ``row`` cannot follow an intact chain at
    ``expected_seq``, else None."""
    seq = row["seq"]
    if seq != expected_seq:
        return expected_seq, f"entry {expected_seq} is missing: the next entry held is {seq}"
    if bytes(row["prev_hash"]) != prev_hash:
        return seq, (f"entry {seq} names prev_hash {bytes(row['prev_hash']).hex()}, but the "
                     f"entry before it hashes to {prev_hash.hex()}")
    recomputed = entry_hash(seq, row["at_ms"], row["actor"], row["action"], row["subject"],
                            row["details_json"], prev_hash)
    if recomputed != bytes(row["entry_hash"]):
        return seq, (f"entry {seq} has been altered: its fields hash to {recomputed.hex()}, "
                     f"not the stored {bytes(row['entry_hash']).hex()}")
    return None
