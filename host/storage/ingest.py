"""From one received item, an envelope and its verifier verdict, to the row the store keeps.

Pure: no database here. The store then decides, against what it already holds, whether the row
is new, a replay or a fork (store.py).

An item is accepted into the gateway's chain when its verdict is VERIFIED or
VERIFIED_WITH_WARNINGS, the record names the gateway that sent it, and its seq fits the column.
Anything else is quarantined: kept verbatim with the reason, never dropped.
"""

from hashlib import sha256

from meterseal.protocol import cose, records
from meterseal.protocol.errors import ProtocolError

from .errors import StorageError
from .migrations import OUTCOMES

ACCEPTED_OUTCOMES = ("VERIFIED", "VERIFIED_WITH_WARNINGS")

# What became of an item (IngestResult.outcome).
STORED = "stored"
REPLAY = "replay"
FORK = "fork"
QUARANTINED = "quarantined"

# seq is a u64 on the wire but a signed 64-bit column; one less, so that seq + 1 stays in range.
MAX_STORED_SEQ = 2**63 - 2

_DECODED_COLUMNS = ("gateway_id", "boot_epoch", "seq", "kind", "event_type", "dispenser_address",
                   "nozzle", "scale_id", "tank_number", "wall_time_ms")


def _claimed_record(envelope):
    """The record an envelope's payload claims to be, if it parses; its signature is not checked."""
    try:
        return records.parse(cose.parse_sign1(envelope).payload)
    except ProtocolError:
        return None


def _decoded(record):
    if record is None:
        return dict.fromkeys(_DECODED_COLUMNS)
    device = record.get("device", {})
    seq = record["seq"]
    return {
        "gateway_id": record["gateway_id"],
        "boot_epoch": record["boot_epoch"],
        "seq": seq if seq <= MAX_STORED_SEQ else None,
        "kind": record["kind"],
        "event_type": record["body"]["event_type"] if record["kind"] == "event" else None,
        "dispenser_address": device.get("dispenser_address"),
        "nozzle": device.get("nozzle"),
        "scale_id": device.get("scale_id"),
        "tank_number": device.get("tank_number"),
        "wall_time_ms": record["wall_time_ms"],
    }


def record_row(index, envelope, verdict, sender_gateway_id, received_at_ms):
    """The records row for item ``index`` of a batch (every column but record_id).

    ``verdict`` is a meterseal.host.verify.Verdict, or anything with its outcome, kid, record
    and detail. Raises StorageError for an item no verifier could have produced."""
    if not isinstance(envelope, (bytes, bytearray, memoryview)):
        raise StorageError(f"batch item {index}: envelope must be bytes, "
                           f"got {type(envelope).__name__}")
    envelope = bytes(envelope)
    if verdict.outcome not in OUTCOMES:
        raise StorageError(f"batch item {index}: outcome {verdict.outcome!r} is not one of "
                           + ", ".join(OUTCOMES))
    accepted = verdict.outcome in ACCEPTED_OUTCOMES
    if accepted and not isinstance(verdict.record, dict):
        raise StorageError(f"batch item {index}: a {verdict.outcome} verdict must carry the "
                           "parsed record")
    record = verdict.record if isinstance(verdict.record, dict) else _claimed_record(envelope)
    row = _decoded(record)
    detail = verdict.detail
    if accepted and row["gateway_id"] != sender_gateway_id:
        accepted = False
        detail = (f"the record names gateway {row['gateway_id']} but was sent by gateway "
                  f"{sender_gateway_id}")
    elif accepted and row["seq"] is None:
        accepted = False
        detail = f"seq {record['seq']} is above {MAX_STORED_SEQ}, the highest seq stored"
    row.update(
        sender_gateway_id=sender_gateway_id,
        received_at_ms=received_at_ms,
        kid=verdict.kid,
        outcome=verdict.outcome,
        detail=detail,
        quarantined=not accepted,
        envelope=envelope,
        envelope_sha256=sha256(envelope).digest(),
    )
    return row
