"""The rule engine: routes each verified record, in seq order per gateway, to the detectors that
want its kind, and keeps every detector's state per site so that sibling nozzles, the products
of one site and its scales can be compared (peer groups).

State is plain JSON (``checkpoint()``): the host stores it and a restarted engine resumes from it,
then replays the records stored after the seqs it names (meterseal.host.detection).
"""

from abc import ABC, abstractmethod
from typing import ClassVar

from mypy_extensions import mypyc_attr

from .finding import Finding

CHECKPOINT_FORMAT = 1
ENTRY_DEVICE = object()  # Detector.finding's default: the device the entry names
# Work after which a dispenser may rightly report differently: detectors that learn what is
# normal for it (its flow, its volume against the gateway's pulses) learn it afresh, when the
# work was authorised.
REBASELINE_WORK = ("calibration", "parameter_change", "device_identity_changed")


def device_ref(device):
    """How alerts and work orders name a device: "80/1" (dispenser 80, nozzle 1), "80" (the
    dispenser), the scale's id, "tank/3"; None when the record names no device."""
    if not device:
        return None
    if "dispenser_address" in device:
        nozzle = device.get("nozzle")
        return str(device["dispenser_address"]) + ("" if nozzle is None else f"/{nozzle}")
    if "scale_id" in device:
        return device["scale_id"]
    return f"tank/{device['tank_number']}"


def dispenser_key(entry):
    """The dispenser an entry concerns, as detectors key it ("GW-1|80"), or None."""
    device = entry.device
    if not device or "dispenser_address" not in device:
        return None
    return f"{entry.gateway_id}|{device['dispenser_address']}"


class Entry:
    """One verified record as the engine feeds it: its store id, its site and its plain form.
    ``gap_before``: the gateway's previous seq was not fed just before it (records missing).

    The fields every detector reads are plain attributes, set once: nine detectors read a fuel
    sale, and a property call for each of their reads was a good part of the engine's cost.
    ``shared`` holds what a detector works out from the record for the others to reuse (a sale's
    steady flow)."""

    __slots__ = ("record_id", "site_id", "record", "gap_before", "gateway_id", "seq", "kind",
                 "wall_time_ms", "body", "device", "device_ref", "device_key", "event_type",
                 "shared")

    def __init__(self, record_id, site_id, record, gap_before=False):
        self.record_id = record_id
        self.site_id = site_id
        self.record = record
        self.gap_before = gap_before
        self.gateway_id = record.get("gateway_id")
        self.seq = record.get("seq")
        self.kind = kind = record.get("kind")
        self.wall_time_ms = record.get("wall_time_ms")
        self.body = body = record.get("body")
        self.device = device = record.get("device")
        self.device_ref = ref = device_ref(device)
        # How detectors key a device's state: refs are per gateway line, and a site may have
        # several gateways, each with its own nozzle 80/1.
        self.device_key = f"{self.gateway_id}|{ref}"
        self.event_type = body["event_type"] if kind == "event" else None
        self.shared = {}


# Compiled with the other detectors (fraud_rules/native.py); detectors outside the package (a
# site's own, the tests') subclass it in plain Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class Detector(ABC):
    """Subclasses set ``name`` (their parameter section, and the rule id of their findings unless
    they name another) and ``kinds`` (the record kinds they are fed), and implement ``feed``.

    ``feed(entry, state)`` gets this detector's state for the entry's site, a dict it updates in
    place and that must stay JSON-able (string keys, numbers, strings, lists, dicts), and returns
    a list of Findings. ``self.fleet`` is a JSON-able dict of its own shared by every site (peers
    across sites), which the engine checkpoints beside the sites' state."""

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params, facts):
        self.params = params.section(self.name)
        self.params_version = params.version
        self.fleet = {}
        self.facts = facts

    @property
    def enabled(self) -> bool:
        return self.params.get("enabled", True)

    @abstractmethod
    def feed(self, entry, state):
        """This detector's Findings for ``entry``; ``state`` is updated in place."""

    def reworked_dispenser(self, entry, works=REBASELINE_WORK):
        """The dispenser ("GW-1|80") that an event reports authorised work of ``works`` on (a
        work order covers it), else None. Unauthorised work is config.unauthorised_change's
        finding, and what the detectors learnt stays, so a cheat done that way is seen by them
        too."""
        if entry.event_type not in works:
            return None
        dispenser = dispenser_key(entry)
        if dispenser is None or not self.facts.work_order(
                entry.site_id, entry.gateway_id, entry.device_ref, entry.event_type,
                entry.wall_time_ms):
            return None
        return dispenser

    def finding(self, entry, *, severity, score, en, zh, observed, evidence, rule=None,
                device=ENTRY_DEVICE, gateway_id=None, extra=None):
        """A Finding about ``entry``'s device (or ``device``; None: the gateway itself), carrying
        the parameters in force and what was ``observed``."""
        return Finding(
            rule=rule or self.name, site_id=entry.site_id,
            gateway_id=gateway_id or entry.gateway_id,
            device_ref=entry.device_ref if device is ENTRY_DEVICE else device,
            severity=severity, score=round(min(1.0, max(0.0, score)), 3),
            explanation_en=en, explanation_zh=zh,
            parameters={"detector": self.name, "params_version": self.params_version,
                        "parameters": dict(self.params), "observed": observed},
            evidence_record_ids=tuple(sorted({rid for rid in evidence if rid is not None})),
            at_ms=entry.wall_time_ms, extra=extra or {})


class Engine:
    def __init__(self, params, facts, checkpoint=None, detectors=None):
        from .detectors import DETECTORS  # the catalogue imports every detector module

        self.params = params
        self.facts = facts
        self.detectors = [cls(params, facts) for cls in (detectors or DETECTORS)]
        self.detectors = [d for d in self.detectors if d.enabled]
        self._by_kind = {}  # record kind -> [the detectors fed it]
        for detector in self.detectors:
            for kind in detector.kinds:
                self._by_kind.setdefault(kind, []).append(detector)
        self._sites = {}
        # (gateway id, record kind) -> (site id, [(a detector's feed, its state there)]):
        # resolved once, so a record does not look up each detector's state by name.
        self._routes = {}
        state = checkpoint or {}
        if state and state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"detector checkpoint format {state.get('format')!r} is not "
                             f"{CHECKPOINT_FORMAT}; replay the history instead (meterseal "
                             "backtest)")
        self.fed = dict(state.get("fed", {}))
        self.sites = state.get("sites", {})
        self.records_fed = state.get("records_fed", 0)
        self.fleet = state.get("fleet", {})
        for detector in self.detectors:
            detector.fleet = self.fleet.setdefault(detector.name, {})

    def site_of(self, gateway_id):
        site = self._sites.get(gateway_id)
        if site is None:
            site = self.facts.site_of(gateway_id) or f"gateway:{gateway_id}"
            self._sites[gateway_id] = site
        return site

    def _route(self, gateway_id, kind):
        route = (None, [])
        detectors = self._by_kind.get(kind)
        if detectors:
            site_id = self.site_of(gateway_id)
            site_state = self.sites.setdefault(site_id, {})
            route = (site_id, [(detector.feed, site_state.setdefault(detector.name, {}))
                               for detector in detectors])
        self._routes[gateway_id, kind] = route
        return route

    def feed(self, record_id, record):
        """Feed one verified record in plain form; returns the Findings it produced. A record at
        or below the seq already fed for its gateway (a late gap fill, a replay) is skipped: the
        detectors have moved past it."""
        gateway_id, seq = record["gateway_id"], record["seq"]
        last = self.fed.get(gateway_id)
        if last is not None and seq <= last:
            return []
        self.fed[gateway_id] = seq
        self.records_fed += 1
        kind = record["kind"]
        route = self._routes.get((gateway_id, kind)) or self._route(gateway_id, kind)
        site_id, detectors = route
        if not detectors:
            return []
        entry = Entry(record_id, site_id, record, last is not None and seq != last + 1)
        findings = []
        for feed, state in detectors:
            found = feed(entry, state)
            if found:
                findings += found
        return findings

    def checkpoint(self):
        """Everything needed to resume, as JSON-able data."""
        return self._checkpoint(dict(self.fed), self.sites, self.fleet)

    def fleet_checkpoint(self):
        """The state shared by every site, as a checkpoint of no site (the live dict, like
        site_checkpoints'), so a host can save it on its own schedule."""
        return self._checkpoint({}, {}, self.fleet)

    def site_checkpoints(self, site_ids):
        """{site_id: checkpoint} for ``site_ids`` only: each as checkpoint() is, holding that
        site's state and the seqs of its gateways, so a host can save the sites that moved
        without serialising the rest. The states are the live ones, not copies: serialise them
        before feeding on."""
        fed = {site_id: {} for site_id in site_ids}
        for gateway_id, seq in self.fed.items():
            seqs = fed.get(self.site_of(gateway_id))
            if seqs is not None:
                seqs[gateway_id] = seq
        return {site_id: self._checkpoint(seqs, {site_id: self.sites.get(site_id, {})})
                for site_id, seqs in fed.items()}

    def _checkpoint(self, fed, sites, fleet=None):
        checkpoint = {"format": CHECKPOINT_FORMAT, "params_version": self.params.version,
                      "fed": fed, "records_fed": self.records_fed, "sites": sites}
        if fleet is not None:
            checkpoint["fleet"] = fleet
        return checkpoint
