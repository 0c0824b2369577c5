"""`meterseal bench`, the backtest part: how long `meterseal backtest` takes over a month of one
busy forecourt (docs/operations.md, "Backtest"; the target is seconds).

Set-up, outside the clock: the record-level fleet (hil_tests/record_fleet.py) simulates one
honest forecourt, Plan.dispensers pumps of two nozzles (two grades), two tanks with a gauge and
a pulse input, over Plan.days days. Its records are signed with a gateway key and chained as a
gateway would, uploaded to the real ingest host (detectors off) over loopback into a temporary
SQLite store, and the site's facts (prices, grade -> tank, maximum flows) entered as an officer
would.

Measured, in this process:
- the whole backtest as the command runs it (backtest.backtest): wall and CPU time;
- its split: reading and decoding the site's records from the store (replay_records alone,
  streamed), and the engine fed those records already decoded;
- each enabled detector fed any of those records alone (an engine of its own), over the
  same records.

``measure`` also runs over the ingest part's store, so the ingest's detection cost comes with
the detectors' share of it.
"""

import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path

from meterseal.fraud_rules import Engine, load_params, native
from meterseal.fraud_rules.finding import utc_text
from meterseal.hil.record_fleet import DAY_MS, Fleet
from meterseal.host import backtest, bench_ingest
from meterseal.host.bench_ingest import BenchError
from meterseal.host.detection import StoreFacts, replay_records
from meterseal.host.simulated_gateway import RecordMaker
from meterseal.host.storage import open_store

_ENTERED_BY = "bench"


@dataclass(frozen=True)
class Plan:
    """The simulated site and its history."""

    days: int = 30
    dispensers: int = 10
    arrivals_per_hour: float = 6  # customers per pump and opening hour: ~960 sales a day
    seed: int = 20260301
    start: str = "2026-03-02T00:00:00+08:00"

    def __post_init__(self):
        for name in ("days", "dispensers", "arrivals_per_hour"):
            if not getattr(self, name) > 0:
                raise BenchError(f"backtest {name.replace('_', ' ')} must be above 0, "
                                 f"got {getattr(self, name)}")

    def scenario(self):
        """The record_fleet scenario: one honest forecourt, no cheat."""
        return {
            "seed": self.seed, "start": self.start, "days": self.days,
            "cheat_start_day": self.days, "utc_offset_hours": 8,
            "validate_every": 0,  # the ingest parses every record against the schema anyway
            "forecourt": {
                "honest_sites": 1, "dispensers": self.dispensers, "opening_hours": [6, 22],
                "arrivals_per_hour": self.arrivals_per_hour, "preset_share": 0.25,
                "preset_amounts_minor": [10000, 20000, 30000], "changeover_s": 45,
                "draw_ml": {"median": 28000, "spread": 0.55, "min": 2000, "max": 80000},
                "status_interval_s": 900, "pulse_input_share": 1.0,
                "honest_drift_percent": 0.3,
                "nozzles": [
                    {"grade": 1, "max_flow_lpm": 40, "unit_price_minor_per_kl": 789000,
                     "tank": 1},
                    {"grade": 2, "max_flow_lpm": 40, "unit_price_minor_per_kl": 832000,
                     "tank": 2}],
                "tanks": [
                    {"number": 1, "capacity_ml": 50000000, "diameter_mm": 2800,
                     "volume_ml": 35000000},
                    {"number": 2, "capacity_ml": 40000000, "diameter_mm": 2600,
                     "volume_ml": 28000000}],
            },
        }


def _signed(plain_records, key):
    """The envelopes a gateway holding ``key`` signs for these plain records, each chained to
    the one before (RecordMaker keeps the chain; every other field is the record's own)."""
    maker = RecordMaker(plain_records[0]["gateway_id"], key)
    return [maker.make(**{field: value for field, value in record.items() if field != "prev"})
            for record in plain_records]


def _register(store, fleet, site_id, gateway_id, key):
    """The site, its gateway and key, and its facts, as an installer and an officer enter
    them."""
    store.registry.add_site(site_id, "bench forecourt")
    store.registry.add_gateway(gateway_id, "SN-" + gateway_id, site_id)
    store.registry.add_key(gateway_id, key.public_key(), 0)
    facts = fleet.facts
    for price_site, grade, price, valid_from_ms in facts.prices:
        if price_site == site_id:
            store.detection.set_price(site_id, grade, price, valid_from_ms,
                                      entered_by=_ENTERED_BY)
    store.detection.set_grade_tanks(site_id, {grade: tank for (tank_site, grade), tank
                                              in facts.tanks.items() if tank_site == site_id},
                                    entered_by=_ENTERED_BY)
    for (flow_site, device_ref), max_flow_lpm in sorted(facts.max_flows.items()):
        if flow_site == site_id:
            store.detection.set_max_flow(site_id, device_ref, max_flow_lpm,
                                         entered_by=_ENTERED_BY)


async def _upload_all(host, gateway):
    session = await bench_ingest.open_session(gateway.gateway_id, gateway.key, host.port)
    try:
        return await bench_ingest.upload(session, gateway.frames)
    finally:
        await session.close()


def build_site(plan, workdir, say):
    """Simulate, sign and store the plan's site in ``workdir``/backtest.db; returns
    (db, site_id, from_ms, to_ms, record counts by kind)."""
    workdir = Path(workdir)
    say(f"simulating {plan.days} days of a forecourt of {plan.dispensers} dispensers ...")
    fleet = Fleet(plan.scenario())
    (site,) = fleet.sites
    plain = [record for _, record, _ in fleet.records()]
    kinds = {}
    for record in plain:
        kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
    gateway_id = plain[0]["gateway_id"]
    say(f"signing its {len(plain)} records ...")
    (key,) = bench_ingest.new_keys(1)
    gateway = bench_ingest.LoadGateway(gateway_id, key)
    gateway.add_records(_signed(plain, key))
    db = workdir / "backtest.db"
    with open_store(db) as store:
        _register(store, fleet, site.site_id, gateway_id, key)
    say("uploading them to the ingest host (detectors off) ...")
    host_core, _ = bench_ingest.cores()
    host = bench_ingest.HostProcess(db, host_core, workdir / "backtest-host.log",
                                    detection=False)
    host.start()
    try:
        acked = asyncio.run(_upload_all(host, gateway))
    finally:
        host.stop()
    with open_store(db) as store:
        counts = store.outcome_counts(gateway_id)
    if acked != len(plain) or counts["VERIFIED"] != len(plain):
        raise BenchError(f"{len(plain)} records of the backtest site sent, {acked} ACKed, the "
                         f"store holds {counts}")
    return db, site.site_id, fleet.start_ms, fleet.start_ms + plan.days * DAY_MS, kinds


def _feed_cpu_s(engine, plain):
    started = time.process_time()
    for record_id, record in plain:
        engine.feed(record_id, record)
    return time.process_time() - started


def measure(db, site_id, from_ms, to_ms, params=None):
    """The backtest of ``site_id`` over [from_ms, to_ms) in the store at ``db``, whole and
    split (see the module's docstring)."""
    params = params or load_params()
    with open_store(db) as store:
        wall, cpu = time.perf_counter(), time.process_time()
        findings, fed = backtest.backtest(store, site_id, from_ms, to_ms, params)
        figures = {"site_id": site_id, "records": fed, "findings": len(findings),
                   "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        gateways = {gateway.gateway_id: None for gateway in store.registry.gateways(site_id)}
        cpu = time.process_time()
        for _ in replay_records(store, gateways, from_ms, to_ms):  # streamed, as the backtest
            pass
        figures["read_cpu_s"] = time.process_time() - cpu
        plain = list(replay_records(store, gateways, from_ms, to_ms))
        # Held for the passes below, but kept out of the garbage collector's rounds, which
        # would otherwise walk them at every collection the detectors' allocations trigger.
        gc.freeze()
        try:
            facts = StoreFacts(store)
            facts.refresh()
            engine = Engine(params, facts)
            figures["engine_cpu_s"] = _feed_cpu_s(engine, plain)
            kinds = {record["kind"] for _, record in plain}
            figures["detectors_cpu_s"] = {
                detector.name: _feed_cpu_s(Engine(params, facts, detectors=[type(detector)]),
                                           plain)
                for detector in engine.detectors if kinds.intersection(detector.kinds)}
        finally:
            gc.unfreeze()
    if len(plain) != fed:
        raise BenchError(f"the backtest fed {fed} records, reading them again gave {len(plain)}")
    return figures


def run(plan, workdir, say):
    """Build the plan's site and measure its backtest; the figures for report()."""
    started = time.perf_counter()
    db, site_id, from_ms, to_ms, kinds = build_site(plan, workdir, say)
    setup_s = time.perf_counter() - started
    say(f"backtesting {sum(kinds.values())} records ...")
    figures = measure(db, site_id, from_ms, to_ms)
    figures.update(plan=plan, kinds=kinds, setup_s=setup_s, from_ms=from_ms, to_ms=to_ms)
    return figures


def _us(seconds, count):
    return 1e6 * seconds / max(count, 1)


def detector_lines(figures):
    """The split of ``measure``'s figures: reading, the engine, each detector."""
    count = figures["records"]
    costs = ", ".join(f"{name} {_us(seconds, count):.1f}" for name, seconds in sorted(
        figures["detectors_cpu_s"].items(), key=lambda item: -item[1]))
    return [f"  reading and decoding from the store   {figures['read_cpu_s']:6.2f} s CPU"
            f"   {_us(figures['read_cpu_s'], count):5.0f} us/record",
            f"  the engine, records already decoded   {figures['engine_cpu_s']:6.2f} s CPU"
            f"   {_us(figures['engine_cpu_s'], count):5.0f} us/record",
            f"  each detector alone, us of CPU per record: {costs}"]


def report(figures):
    plan = figures["plan"]
    kinds = figures["kinds"]
    lines = [
        f"backtest of one site over {plan.days} days from {utc_text(figures['from_ms'])} "
        f"(`meterseal backtest`, SQLite): {plan.dispensers} dispensers x 2 nozzles, 2 tanks "
        f"with a gauge, pulse input; {sum(kinds.values())} records "
        f"({kinds.get('fuel.sale', 0)} sales), set up in {figures['setup_s']:.0f} s",
        f"  whole backtest {figures['wall_s']:6.2f} s ({figures['cpu_s']:.2f} s CPU), "
        f"{figures['records'] / figures['wall_s']:7.0f} records/s, {figures['findings']} "
        f"findings, detectors {native.describe()}   target: seconds",
    ]
    return lines + detector_lines(figures)
