"""The cheating detectors (meterseal.fraud_rules) in the host: fed live by the ingest with the
records of committed batches, in chunks once its worker has no batch waiting, and raising what
they find as alerts (docs/host.md, "Detection").

- StoreFacts answers the detectors' questions (a gateway's site, announced prices, work
  orders...) from the store, cached until an officer changes the facts; device models from the
  registry, read again after a minute.
- LiveDetection runs one Engine over every site. Its state is saved per site in the store
  (detector_checkpoints): a site's once it was fed so many records or seconds since its last
  save, whenever a chunk of it raised alerts, and every site's on close; the state the sites
  share (Engine.fleet) in a row of its own, once a minute. On start it loads that state and
  replays the records stored after the seqs it names, so a restart, or a spell with detection
  switched off, misses nothing and repeats no finding.
- replay_records gives stored records, merged across gateways by wall time; `meterseal
  backtest` (backtest.py) uses it too.
"""

import heapq
import logging
import time
from bisect import bisect_right

from meterseal.fraud_rules import Engine, Facts, WorkOrder, load_params, native
from meterseal.fraud_rules.engine import CHECKPOINT_FORMAT
from meterseal.host import record_parser, verify
from meterseal.host.storage import MAX_PAGE_SIZE, STORED, StorageError
from meterseal.host.storage.detection import FLEET_ROW

log = logging.getLogger("meterseal.detection")

# Save a site's detector state once it was fed this many records, or this long after the first
# record since its last save. A crash loses at most that much of each site's state, which the
# restart rebuilds by replaying those records (their findings were saved with the batch that
# raised them, so none is raised twice). A save serialises the site's whole state, ~6 KB of JSON
# and ~0.15 ms of CPU per nozzle, so it must cover many records: saved every 60 s, a forecourt
# of 8 nozzles sending 3 records a minute paid ~0.4 ms a record, twice the ingest's own cost. An
# hour of such a site is ~200 records (~6 us each); 20,000 records of the bench's 128-nozzle site
# ~1 us each. A restart replays at most an hour of each site (~120 us a record: about 20 s for a
# host taking 50 records a second) before its first batch.
CHECKPOINT_EVERY_RECORDS = 20000
CHECKPOINT_EVERY_S = 3600.0
# How long the registry's device models (peers across sites) are taken as read.
DEVICES_REREAD_S = 60.0
# Records taken from committed batches are fed to the detectors when the ingest's worker has
# no batch waiting (LiveDetection.flush), or once this many wait.
CHUNK_RECORDS = 500


class StoreFacts(Facts):
    """fraud_rules.facts.Facts from the store. Answers are cached per site; ``refresh()`` drops
    the cache when the facts revision moved (an officer's change, through any connection)."""

    def __init__(self, store, clock_s=time.monotonic):
        self._store = store
        self._clock_s = clock_s
        self._revision = None
        self._gateway_sites = {}
        self._by_site = {}
        self._models = {}  # gateway id -> ({device_ref: model}, clock_s when read)

    def refresh(self):
        revision = self._store.detection.facts_revision()
        if revision != self._revision:
            self._revision = revision
            self._by_site = {}

    def _site(self, site_id):
        facts = self._by_site.get(site_id)
        if facts is None:
            detection = self._store.detection
            prices = {}
            for price in detection.prices(site_id):  # by grade, then start: already sorted
                starts, values = prices.setdefault(price.grade, ([], []))
                starts.append(price.valid_from_ms)
                values.append(price.price_minor_per_kl)
            facts = self._by_site[site_id] = {
                "prices": prices,
                "tanks": {row.grade: row.tank_number for row in detection.grade_tanks(site_id)},
                "flows": {row.device_ref: row.max_flow_lpm
                          for row in detection.max_flows(site_id)},
                "orders": [WorkOrder(order.work_order_id, order.site_id, order.gateway_id,
                                     order.device_ref, order.work, order.valid_from_ms,
                                     order.valid_to_ms, order.technician, order.reference)
                           for order in detection.work_orders(site_id)],
            }
        return facts

    def site_of(self, gateway_id):
        site_id = self._gateway_sites.get(gateway_id)
        if site_id is None:
            gateway = self._store.registry.gateway(gateway_id)
            if gateway is not None:  # an unregistered one may be registered later
                site_id = self._gateway_sites[gateway_id] = gateway.site_id
        return site_id

    def announced_price(self, site_id, grade, at_ms):
        starts, values = self._site(site_id)["prices"].get(grade, ((), ()))
        index = bisect_right(starts, at_ms) - 1
        return values[index] if index >= 0 else None

    def tank_of(self, site_id, grade):
        return self._site(site_id)["tanks"].get(grade)

    def max_flow_lpm(self, site_id, device_ref):
        return self._site(site_id)["flows"].get(device_ref)

    def work_order(self, site_id, gateway_id, device_ref, work, at_ms):
        for order in self._site(site_id)["orders"]:
            if order.covers(site_id, gateway_id, device_ref, work, at_ms):
                return order
        return None

    def device_model(self, gateway_id, device_ref):
        # From the registry, which does not move the facts revision: a gateway's devices are
        # read again after DEVICES_REREAD_S, so a device registered meanwhile counts from then.
        models, read_s = self._models.get(gateway_id, (None, None))
        now = self._clock_s()
        if models is None or now - read_s >= DEVICES_REREAD_S:
            models = {device.device_ref: device.model
                      for device in self._store.registry.devices(gateway_id)}
            self._models[gateway_id] = (models, now)
        return models.get(device_ref)


def plain_record(stored):
    """The plain form of a stored, accepted record (its signature was checked at ingest)."""
    return record_parser.parse(verify.parse_envelope(stored.envelope).payload)


def _gateway_records(store, gateway_id, after_seq, wall_from_ms, wall_before_ms):
    """(wall_time_ms, gateway_id, seq, record_id, plain record) of one gateway, in seq order,
    a page at a time."""
    while True:
        page = store.records(gateway_id, after_seq=after_seq, wall_time_from_ms=wall_from_ms,
                             wall_time_before_ms=wall_before_ms, limit=MAX_PAGE_SIZE)
        for stored in page.items:
            yield stored.wall_time_ms, gateway_id, stored.seq, stored.record_id, \
                plain_record(stored)
        if page.next_after is None:
            return
        after_seq = page.next_after


def replay_records(store, after_seqs, wall_from_ms=None, wall_before_ms=None):
    """(record_id, plain record) of the gateways in ``after_seqs`` {gateway_id: seq or None},
    those after each seq (all, for None) and within the wall-time window: each gateway's in seq
    order, merged across gateways by wall time (a gateway whose clock jumps back stays in seq
    order, and the merge takes the others around it)."""
    streams = [_gateway_records(store, gateway_id, after_seq, wall_from_ms, wall_before_ms)
               for gateway_id, after_seq in sorted(after_seqs.items())]
    for *_, record_id, record in heapq.merge(*streams, key=lambda item: item[:3]):
        yield record_id, record


def join_checkpoints(by_site):
    """One engine checkpoint from per-site ones. A site saved in another format keeps the seqs
    its gateways were fed up to but loses its detectors' state: they learn afresh from the next
    record rather than raise old findings again."""
    joined = {"format": CHECKPOINT_FORMAT, "fed": {}, "records_fed": 0, "sites": {},
              "fleet": {}}
    for site_id, saved in by_site.items():
        joined["fed"].update(saved.get("fed", {}))
        joined["records_fed"] = max(joined["records_fed"], saved.get("records_fed", 0))
        if saved.get("format") == CHECKPOINT_FORMAT:
            joined["sites"].update(saved.get("sites", {}))
            if site_id == FLEET_ROW:
                joined["fleet"] = saved.get("fleet", {})
        else:
            log.warning("site %s: detector state saved in format %r, not %d: its detectors "
                        "start afresh", site_id, saved.get("format"), CHECKPOINT_FORMAT)
    return joined


class LiveDetection:
    """The ingest's detectors. Every call runs on the ingest's worker thread, which owns
    ``store``; ``start()`` before the first batch, ``close()`` after the last."""

    def __init__(self, store, params=None, detectors=None, *, params_file=None,
                 checkpoint_every_records=CHECKPOINT_EVERY_RECORDS,
                 checkpoint_every_s=CHECKPOINT_EVERY_S, clock_s=time.monotonic):
        self.store = store
        self.params = params or load_params(params_file)
        self.facts = StoreFacts(store)
        self._detectors = detectors
        self._every_records = checkpoint_every_records
        self._every_s = checkpoint_every_s
        self._clock_s = clock_s
        self.engine = None
        self._unsaved = {}  # site id -> [records fed since its last save, clock_s of the first]
        # Sites gone quiet are looked for this often, not at every batch: a host serves
        # thousands of sites, and a batch concerns one.
        self._sweep_every_s = checkpoint_every_s / 60
        self._next_sweep_s = None
        self._pending = []  # (seq, record id, record) taken, not yet fed: each batch in seq order
        # What the live batches cost: the ingest reports it on close, the bench reads it.
        self.records_evaluated = 0
        self.cpu_s = 0.0

    def start(self):
        """Resume from the saved state and catch up on the records stored since."""
        saved = join_checkpoints(self.store.detection.checkpoints())
        self.facts.refresh()
        self.engine = Engine(self.params, self.facts, saved, self._detectors)
        after = {gateway.gateway_id: self.engine.fed.get(gateway.gateway_id)
                 for gateway in self.store.registry.gateways()}
        started = time.monotonic()
        caught_up, findings = 0, []
        for record_id, record in replay_records(self.store, after):
            caught_up += 1
            findings.extend(self._feed(record_id, record))
        self._raise(findings)
        self.checkpoint()
        log.info("detection: %d detectors, %s, parameters %s; caught up on %d records in "
                 "%.1f s, %d findings", len(self.engine.detectors), native.describe(),
                 self.params.version, caught_up, time.monotonic() - started, len(findings))

    def after_batch(self, items, results):
        """Take what a committed batch stored and chained (``items`` as the ingest passed them to
        store.ingest_batch, ``results`` what it returned); it is evaluated at the next flush(),
        or now when CHUNK_RECORDS wait."""
        started_cpu_s = time.thread_time()
        self._pending.extend(sorted(
            (verdict.record["seq"], result.record_id, verdict.record)
            for (_, verdict), result in zip(items, results)
            if result.outcome == STORED and verdict.outcome in verify.ACCEPTED))
        self.cpu_s += time.thread_time() - started_cpu_s
        if len(self._pending) >= CHUNK_RECORDS:
            self.flush()

    def flush(self):
        """Feed the records taken since the last flush, raise their findings as alerts, and save
        the state of the sites that raised them or are due."""
        if not self._pending:
            return
        started_cpu_s = time.thread_time()
        fresh, self._pending = self._pending, []
        self.facts.refresh()
        findings = [finding for _, record_id, record in fresh
                    for finding in self._feed(record_id, record)]
        self._raise(findings)
        now = self._clock_s()
        due = {finding.site_id for finding in findings}
        if self._next_sweep_s is None or now >= self._next_sweep_s:
            self._next_sweep_s = now + self._sweep_every_s
            candidates = self._unsaved
            # The sites' shared state (peers across sites) goes with each sweep: after a crash
            # it is at most that old, and the comparisons refresh it as they come.
            due.update(self._shared_rows())
        else:
            candidates = {self.engine.site_of(gateway_id)
                          for gateway_id in {record["gateway_id"] for _, _, record in fresh}}
        due.update(site_id for site_id in candidates if self._due(site_id, now))
        if due:
            self._save(due)
        self.records_evaluated += len(fresh)
        self.cpu_s += time.thread_time() - started_cpu_s

    def _due(self, site_id, now):
        count, since_s = self._unsaved.get(site_id, (0, now))
        return count >= self._every_records or now - since_s >= self._every_s

    def _feed(self, record_id, record):
        try:
            findings = self.engine.feed(record_id, record)
        except Exception as exc:  # a detector's fault must not stop the ingest: log, go on
            log.error("detection: gateway %s seq %d not evaluated: %s: %s",
                      record["gateway_id"], record["seq"], type(exc).__name__, exc)
            findings = []
        site_id = self.engine.site_of(record["gateway_id"])
        if site_id in self._unsaved:
            self._unsaved[site_id][0] += 1
        else:
            self._unsaved[site_id] = [1, self._clock_s()]
        return findings

    def _raise(self, findings):
        for finding in findings:
            try:
                alert = self.store.alerts.raise_alert(
                    finding.gateway_id, finding.device_ref, finding.rule, finding.severity,
                    finding.score, finding.explanation_en, finding.explanation_zh,
                    finding.evidence_record_ids, finding.parameters)
            except StorageError as exc:
                log.error("gateway %s: alert %s not raised: %s", finding.gateway_id,
                          finding.rule, exc)
                continue
            log.warning("gateway %s: alert %d %s on %s (%s): %s", finding.gateway_id,
                        alert.alert_id, finding.rule, finding.device_ref, alert.severity,
                        finding.explanation_en)

    def checkpoint(self):
        """Save the state of every site fed since its last save, and the state they share."""
        self._save(set(self._unsaved) | self._shared_rows())

    def _shared_rows(self):
        """{FLEET_ROW} once a detector keeps state shared by every site, else nothing."""
        return {FLEET_ROW} if any(self.engine.fleet.values()) else set()

    def _save(self, site_ids):
        """Save ``site_ids``' state (FLEET_ROW: the state every site shares)."""
        sites = site_ids - {FLEET_ROW}
        saved = self.engine.site_checkpoints(sites)
        if FLEET_ROW in site_ids:
            saved[FLEET_ROW] = self.engine.fleet_checkpoint()
        if saved:
            self.store.detection.save_checkpoints(saved)
        for site_id in sites:
            self._unsaved.pop(site_id, None)

    def close(self):
        if self.engine is not None:
            self.flush()
            self.checkpoint()
        if self.records_evaluated:
            log.info("detection: evaluated %d records live with %.3f s of CPU, %.1f us a record, "
                     "detectors %s", self.records_evaluated, self.cpu_s,
                     1e6 * self.cpu_s / self.records_evaluated, native.describe())
