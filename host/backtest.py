"""`meterseal backtest`: replay a site's stored history through a fresh set of detectors, under
the given parameters, and print what they find (docs/operations.md, "Backtest").

    meterseal backtest --site SITE-1 --from 2026-01-01 --to 2026-02-01 [--params FILE] [--json]

Only the site's accepted records are read: each gateway's in seq order, merged across gateways
by wall time, as the live ingest feeds them. Nothing is written: the live alerts and the live
detectors' saved state are untouched, so a parameter change can be tried on history first.
"""

import json
import sys
import time
from datetime import datetime, timezone

from meterseal.fraud_rules import Engine, ParamsError, load_params
from meterseal.fraud_rules.engine import CHECKPOINT_FORMAT
from meterseal.fraud_rules.finding import utc_text
from meterseal.host import cli_store
from meterseal.host.detection import FLEET_ROW, StoreFacts, replay_records

# Records between two progress lines on stderr.
PROGRESS_EVERY = 50_000


class BacktestError(ValueError):
    """A backtest that cannot run: an unknown site, a bad time or parameters file. One line."""


def parse_time(text, option):
    """ms since 1970 of an ISO 8601 date or time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestError(f"{option} {text!r} is not an ISO 8601 date or time "
                            "(e.g. 2026-01-31 or 2026-01-31T08:00:00+08:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def backtest(store, site_id, from_ms, to_ms, params, detectors=None, progress=None):
    """The findings of a fresh Engine fed the site's records with wall time in [from_ms,
    to_ms); ``detectors`` as Engine takes them (default: the catalogue); ``progress(count)``
    is called every PROGRESS_EVERY records."""
    if not any(site.site_id == site_id for site in store.registry.sites()):
        raise BacktestError(f"site {site_id} is not registered")
    if to_ms <= from_ms:
        raise BacktestError("--to must be after --from")
    facts = StoreFacts(store)
    facts.refresh()
    # The other sites, as the live detectors last saved what they share (peers across sites):
    # a backtest replays one site, and would otherwise have no other site to compare it with.
    shared = store.detection.checkpoint(FLEET_ROW) or {}
    fleet = shared.get("fleet", {}) if shared.get("format") == CHECKPOINT_FORMAT else {}
    try:
        engine = Engine(params, facts, {"format": CHECKPOINT_FORMAT, "fleet": fleet},
                        detectors=detectors)
    except ParamsError as exc:
        raise BacktestError(str(exc)) from None
    gateways = {gateway.gateway_id: None for gateway in store.registry.gateways(site_id)}
    findings = []
    for count, (record_id, record) in enumerate(
            replay_records(store, gateways, from_ms, to_ms), 1):
        findings.extend(engine.feed(record_id, record))
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    return findings, engine.records_fed


def _table(findings):
    rows = [("rule", "device", "severity", "score", "time", "explanation")]
    rows += [(f.rule, f.device_ref or "-", f.severity, f"{f.score:.3f}", utc_text(f.at_ms),
              f.explanation_en) for f in findings]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5]
            for row in rows]


def _summary(findings):
    counts = {}
    for finding in findings:
        counts[(finding.rule, finding.severity)] = counts.get((finding.rule, finding.severity),
                                                              0) + 1
    return counts


def run(args):
    from_ms, to_ms = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        raise BacktestError(str(exc)) from None
    started = time.monotonic()

    def progress(count):
        print(f"meterseal backtest: {count} records, {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)

    with cli_store.open_cli_store(args.db, create=False) as store:
        findings, fed = backtest(store, args.site, from_ms, to_ms, params, progress=progress)
    elapsed = time.monotonic() - started
    counts = _summary(findings)
    if args.json:
        json.dump({"site_id": args.site, "from_ms": from_ms, "to_ms": to_ms,
                   "params_version": params.version, "records": fed,
                   "seconds": round(elapsed, 3),
                   "findings": [{"rule": f.rule, "gateway_id": f.gateway_id,
                                 "device_ref": f.device_ref, "severity": f.severity,
                                 "score": f.score, "at_ms": f.at_ms,
                                 "explanation_en": f.explanation_en,
                                 "explanation_zh": f.explanation_zh,
                                 "evidence_record_ids": list(f.evidence_record_ids),
                                 "parameters": f.parameters} for f in findings]},
                  sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    if findings:
        print("\n".join(_table(findings)))
        print()
    print(f"{len(findings)} findings from {fed} records of site {args.site} "
          f"(parameters {params.version}, {elapsed:.1f} s)")
    for (rule, severity), count in sorted(counts.items()):
        print(f"  {rule} ({severity}): {count}")
    return 0


def add_parser(sub):
    parser = sub.add_parser("backtest", help="replay a site's history through the detectors",
                            description=__doc__.split("\n\n")[0])
    cli_store.add_db_option(parser)
    parser.add_argument("--site", required=True, help="the site's id")
    parser.add_argument("--from", dest="start", required=True,
                        help="ISO 8601 date or time (UTC unless it names a zone), included")
    parser.add_argument("--to", dest="end", required=True, help="ISO 8601, excluded")
    parser.add_argument("--params", help="a parameters file overriding the packaged defaults")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(run=run)
