"""What detectors may know beyond the records: which site a gateway is at, the prices the site
announced, which tank feeds a grade, a nozzle's registered maximum flow, and the authorised work
orders. The host answers from its store (meterseal.host.detector_facts); tests and the evaluation
harness use StaticFacts.
"""

from dataclasses import dataclass

# Event types that change what a device measures or who it is: each needs an authorised work
# order (docs/detectors.md, "Configuration events").
AUTHORISED_WORK = ("seal_open", "parameter_change", "calibration", "device_identity_changed",
                   "software_update")


@dataclass(frozen=True)
class WorkOrder:
    """Authorised work at a site: on one gateway's devices (or every gateway's, when None), on
    one device (or all of the gateway's, when None), of the listed kinds, within a time window."""

    work_order_id: str
    site_id: str
    gateway_id: str | None
    device_ref: str | None
    work: tuple                    # a subset of AUTHORISED_WORK
    valid_from_ms: int
    valid_to_ms: int
    technician: str = ""
    reference: str = ""            # the authority's own number for it

    def covers(self, site_id, gateway_id, device_ref, work, at_ms):
        return (self.site_id == site_id
                and self.gateway_id in (None, gateway_id)
                and _device_covers(self.device_ref, device_ref)
                and work in self.work
                and self.valid_from_ms <= at_ms <= self.valid_to_ms)


def _device_covers(ordered, seen):
    """An order for dispenser "80" covers its nozzles "80/1", "80/2"; None covers everything."""
    if ordered is None:
        return True
    if seen is None:
        return False
    return seen == ordered or seen.startswith(ordered + "/")


class Facts:
    """The interface; every answer may be None (unknown), and detectors then say so or use the
    default their parameters give."""

    def site_of(self, gateway_id):
        return None

    def announced_price(self, site_id, grade, at_ms):
        """Minor units per kL the site announced for ``grade`` at ``at_ms``."""
        return None

    def tank_of(self, site_id, grade):
        """The tank number that feeds ``grade`` at the site."""
        return None

    def max_flow_lpm(self, site_id, device_ref):
        """A nozzle's registered maximum flow rate (Qmax), L/min."""
        return None

    def work_order(self, site_id, gateway_id, device_ref, work, at_ms):
        """The authorised WorkOrder that covers this work, else None."""
        return None

    def device_model(self, gateway_id, device_ref):
        """The registered model of a gateway's device (a dispenser "80"): devices of one model at
        other sites are its peers across sites."""
        return None


class StaticFacts(Facts):
    def __init__(self, sites=None, prices=(), tanks=None, max_flows=None, work_orders=(),
                 models=None):
        """``sites`` {gateway_id: site_id}; ``prices`` [(site_id, grade, price, from_ms)];
        ``tanks`` {(site_id, grade): tank}; ``max_flows`` {(site_id, device_ref): lpm};
        ``models`` {(gateway_id, device_ref): model}."""
        self.sites = dict(sites or {})
        self.prices = sorted(prices, key=lambda p: p[3])
        self.tanks = dict(tanks or {})
        self.max_flows = dict(max_flows or {})
        self.work_orders = list(work_orders)
        self.models = dict(models or {})

    def site_of(self, gateway_id):
        return self.sites.get(gateway_id)

    def announced_price(self, site_id, grade, at_ms):
        price = None
        for site, g, value, from_ms in self.prices:
            if site == site_id and g == grade and from_ms <= at_ms:
                price = value
        return price

    def tank_of(self, site_id, grade):
        return self.tanks.get((site_id, grade))

    def max_flow_lpm(self, site_id, device_ref):
        return self.max_flows.get((site_id, device_ref))

    def work_order(self, site_id, gateway_id, device_ref, work, at_ms):
        for order in self.work_orders:
            if order.covers(site_id, gateway_id, device_ref, work, at_ms):
                return order
        return None

    def device_model(self, gateway_id, device_ref):
        return self.models.get((gateway_id, device_ref))
