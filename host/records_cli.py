"""`meterseal records` (a gateway's accepted records, filtered, as a table or JSON) and
`meterseal status` (per gateway: keys, chain position, open findings and alerts; overall
counts by verifier outcome). Both only read the store ``--db`` names (cli_store.py)."""

import argparse
import json

from meterseal.host.cli_store import add_db_option, open_cli_store
from meterseal.host.registry_cli import RegistryError, utc_text
from meterseal.host.storage import ALERT_SEVERITIES, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, OUTCOMES

_TABLE_COLUMNS = ("record", "seq", "boot", "kind", "event", "device", "wall time (UTC)",
                  "outcome")


def _device(record):
    if record.dispenser_address is not None:
        return f"dispenser {record.dispenser_address}" + (
            f" nozzle {record.nozzle}" if record.nozzle is not None else "")
    if record.scale_id is not None:
        return f"scale {record.scale_id}"
    if record.tank_number is not None:
        return f"tank {record.tank_number}"
    return "-"


def _row(record):
    return (str(record.record_id), str(record.seq), str(record.boot_epoch), record.kind,
            record.event_type or "-", _device(record), utc_text(record.wall_time_ms),
            record.outcome)


def _json(record):
    return {"record_id": record.record_id, "seq": record.seq, "boot_epoch": record.boot_epoch,
            "kind": record.kind, "event_type": record.event_type,
            "dispenser_address": record.dispenser_address, "nozzle": record.nozzle,
            "scale_id": record.scale_id, "tank_number": record.tank_number,
            "wall_time_ms": record.wall_time_ms, "received_at_ms": record.received_at_ms,
            "outcome": record.outcome, "detail": record.detail, "kid": record.kid.hex(),
            "envelope_sha256": record.envelope_sha256.hex()}


def table(rows, header):
    """Rows of text cells as aligned columns, two spaces apart."""
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
                     for cells in (header, *rows))


def _limit(text):
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..{MAX_PAGE_SIZE}, "
                                         f"got {text!r}")
    return int(text)


def cmd_records(args):
    with open_cli_store(args.db, create=False) as store:
        if store.registry.gateway(args.gateway) is None:
            raise RegistryError(f"gateway {args.gateway} is not registered")
        page = store.records(args.gateway, kind=args.kind, seq_from=args.from_seq,
                             seq_to=args.to_seq, limit=args.limit)
    if args.json:
        print(json.dumps([_json(record) for record in page.items], indent=2))
        return 0
    print(table([_row(record) for record in page.items], _TABLE_COLUMNS))
    if page.next_after is not None:
        print(f"(more: --from-seq {page.next_after + 1})")
    return 0


def _key_state(key):
    if key.revoked_at_ms is not None:
        return f"revoked from {utc_text(key.revoked_at_ms)}"
    return "replaced" if key.replaced_by_kid is not None else "active"


def _counts(counts):
    shown = [f"{name} {count}" for name, count in counts.items() if count]
    return ", ".join(shown) or "none"


def _gateway_status(store, gateway):
    lines = [f"gateway {gateway.gateway_id}  site {gateway.site_id}  {gateway.status}"]
    for key in store.registry.keys(gateway.gateway_id):
        lines.append(f"  key {key.kid.hex()[:16]}...  {_key_state(key)}")
    state = store.ingest_state(gateway.gateway_id)
    if state is None:
        lines.append("  records: none stored")
    else:
        contiguous = "none" if state.contiguous_seq is None else state.contiguous_seq
        lines.append(f"  records: contiguous to seq {contiguous}, highest seq "
                     f"{state.highest_seq}, last stored {utc_text(state.updated_at_ms)}")
    findings = {}
    for finding in store.findings(gateway.gateway_id, open_only=True):
        if finding.kind != "replay":  # informational: a resend after a lost ACK
            findings[finding.kind] = findings.get(finding.kind, 0) + 1
    lines.append(f"  open findings: {_counts(dict(sorted(findings.items())))}")
    alerts = dict.fromkeys(reversed(ALERT_SEVERITIES), 0)
    for alert in store.alerts.ranked(gateway.gateway_id, limit=MAX_PAGE_SIZE):
        alerts[alert.severity] += 1
    lines.append(f"  open alerts: {_counts(alerts)}")
    return lines


def cmd_status(args):
    with open_cli_store(args.db, create=False) as store, store.snapshot():
        gateways = store.registry.gateways()
        lines = [line for gateway in gateways for line in _gateway_status(store, gateway)]
        counts = store.outcome_counts()
    lines.append(f"records by outcome: {_counts({o: counts[o] for o in OUTCOMES})}")
    print("\n".join(lines))
    return 0


def add_parsers(sub):
    p = sub.add_parser("records", help="a gateway's stored records, filtered")
    p.add_argument("--gateway", required=True)
    p.add_argument("--kind", help="only this record kind (fuel.sale, event, ...)")
    p.add_argument("--from-seq", type=int, help="the first seq (inclusive)")
    p.add_argument("--to-seq", type=int, help="the last seq (inclusive)")
    p.add_argument("--limit", type=_limit, default=DEFAULT_PAGE_SIZE,
                   help=f"at most this many (default {DEFAULT_PAGE_SIZE}, "
                        f"at most {MAX_PAGE_SIZE})")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    add_db_option(p)
    p.set_defaults(run=cmd_records)

    p = sub.add_parser("status", help="each gateway's keys, chain, open findings and alerts")
    add_db_option(p)
    p.set_defaults(run=cmd_status)
