"""What the detectors know beyond the records, as officers enter it: authorised work orders,
the prices a site announced, which tank feeds each grade and each nozzle's registered maximum
flow; and the detectors' saved state (docs/host.md, "Detection").

Every change to the facts is one transaction that also appends to the audit log (who entered
what) and raises the facts revision, by which the ingest's own connection notices it.
"""

import json
import time
from dataclasses import dataclass

from meterseal.fraud_rules.facts import AUTHORISED_WORK

from . import audit
from .errors import StorageError
from .rows import columns

# The detector_checkpoints row of the state every site shares (Engine.fleet_checkpoint). No site
# may take this id: the registry refuses it (Registry.add_site).
FLEET_ROW = "*"


@dataclass(frozen=True)
class WorkOrderEntry:
    work_order_id: str
    site_id: str
    gateway_id: str | None         # None: every gateway of the site
    device_ref: str | None         # None: every device of the gateway(s)
    work: tuple                    # kinds of AUTHORISED_WORK
    valid_from_ms: int
    valid_to_ms: int
    technician: str
    reference: str
    entered_by: str
    entered_at_ms: int


@dataclass(frozen=True)
class AnnouncedPrice:
    site_id: str
    grade: int
    valid_from_ms: int
    price_minor_per_kl: int
    entered_by: str
    entered_at_ms: int


@dataclass(frozen=True)
class GradeTank:
    site_id: str
    grade: int
    tank_number: int


@dataclass(frozen=True)
class NozzleMaxFlow:
    site_id: str
    device_ref: str
    max_flow_lpm: float


def _now_ms():
    return int(time.time() * 1000)


def _work_order(row):
    return WorkOrderEntry(**dict(row, work=tuple(row["work"].split(","))))


class Detection:
    def __init__(self, backend):
        self._backend = backend

    # --- the facts ------------------------------------------------------------------------------

    def _change(self, actor, action, subject, details, write):
        """Run ``write()`` in one transaction with its audit entry and a new facts revision."""
        now = _now_ms()
        with self._backend.transaction():
            self._backend.lock_audit_log()
            result = write(now)
            self._backend.execute(
                "UPDATE detection_facts_revision SET revision = revision + 1 WHERE one = 1")
            audit.append(self._backend, actor, action, subject, details, now)
        return result

    def _require_site(self, site_id):
        if not self._backend.query("SELECT 1 AS present FROM sites WHERE site_id = ?",
                                   (site_id,)):
            raise StorageError(f"site {site_id} is not registered")

    def add_work_order(self, work_order_id, site_id, work, valid_from_ms, valid_to_ms, *,
                       entered_by, gateway_id=None, device_ref=None, technician="",
                       reference=""):
        """Record authorised work: ``work`` lists kinds of AUTHORISED_WORK, done on ``site_id``
        (one gateway's devices, or one device, when given) within the window, both ends
        included."""
        work = tuple(dict.fromkeys(work))
        unknown = [kind for kind in work if kind not in AUTHORISED_WORK]
        if not work or unknown:
            raise StorageError(f"work must list some of {', '.join(AUTHORISED_WORK)}; got "
                               f"{', '.join(map(str, work)) or 'none'}")
        if valid_to_ms < valid_from_ms:
            raise StorageError(f"work order {work_order_id}: valid_to_ms {valid_to_ms} is before "
                               f"valid_from_ms {valid_from_ms}")

        def write(now):
            self._require_site(site_id)
            if gateway_id is not None and not self._backend.query(
                    "SELECT 1 AS present FROM gateways WHERE gateway_id = ? AND site_id = ?",
                    (gateway_id, site_id)):
                raise StorageError(f"gateway {gateway_id} is not registered at site {site_id}")
            if self._backend.query("SELECT 1 AS present FROM work_orders WHERE work_order_id = ?",
                                   (work_order_id,)):
                raise StorageError(f"work order {work_order_id} is already recorded")
            entry = WorkOrderEntry(work_order_id, site_id, gateway_id, device_ref, work,
                                   valid_from_ms, valid_to_ms, technician, reference, entered_by,
                                   now)
            values = dict(entry.__dict__, work=",".join(work))
            self._backend.execute(
                f"INSERT INTO work_orders ({columns(WorkOrderEntry)})"
                f" VALUES ({', '.join('?' * len(values))})", tuple(values.values()))
            return entry

        return self._change(entered_by, "work_order.add", f"site/{site_id}", {
            "work_order_id": work_order_id, "gateway_id": gateway_id, "device_ref": device_ref,
            "work": list(work), "valid_from_ms": valid_from_ms, "valid_to_ms": valid_to_ms,
            "technician": technician, "reference": reference}, write)

    def work_orders(self, site_id, *, at_ms=None):
        """A site's work orders by start time; ``at_ms``: only those valid then."""
        sql = f"SELECT {columns(WorkOrderEntry)} FROM work_orders WHERE site_id = ?"
        params = [site_id]
        if at_ms is not None:
            sql += " AND valid_from_ms <= ? AND valid_to_ms >= ?"
            params += [at_ms, at_ms]
        rows = self._backend.query(sql + " ORDER BY valid_from_ms, work_order_id", params)
        return [_work_order(row) for row in rows]

    def set_price(self, site_id, grade, price_minor_per_kl, valid_from_ms, *, entered_by):
        """Announce ``grade``'s unit price (minor units per kL) at the site from
        ``valid_from_ms`` on; the same start again corrects that announcement."""
        if price_minor_per_kl < 0:
            raise StorageError(f"price {price_minor_per_kl} must not be negative")

        def write(now):
            self._require_site(site_id)
            self._backend.execute(
                f"INSERT INTO announced_prices ({columns(AnnouncedPrice)})"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, grade, valid_from_ms) DO UPDATE"
                " SET price_minor_per_kl = excluded.price_minor_per_kl,"
                " entered_by = excluded.entered_by, entered_at_ms = excluded.entered_at_ms",
                (site_id, grade, valid_from_ms, price_minor_per_kl, entered_by, now))
            return AnnouncedPrice(site_id, grade, valid_from_ms, price_minor_per_kl, entered_by,
                                  now)

        return self._change(entered_by, "price.set", f"site/{site_id}", {
            "grade": grade, "price_minor_per_kl": price_minor_per_kl,
            "valid_from_ms": valid_from_ms}, write)

    def prices(self, site_id, grade=None):
        """A site's announced prices, by grade and start time."""
        sql = f"SELECT {columns(AnnouncedPrice)} FROM announced_prices WHERE site_id = ?"
        params = [site_id]
        if grade is not None:
            sql += " AND grade = ?"
            params.append(grade)
        return [AnnouncedPrice(**row) for row in
                self._backend.query(sql + " ORDER BY grade, valid_from_ms", params)]

    def set_grade_tanks(self, site_id, tanks, *, entered_by):
        """Replace the site's grade -> tank map with ``tanks`` {grade: tank_number}."""
        def write(now):
            self._require_site(site_id)
            self._backend.execute("DELETE FROM grade_tanks WHERE site_id = ?", (site_id,))
            for grade, tank_number in sorted(tanks.items()):
                self._backend.execute("INSERT INTO grade_tanks (site_id, grade, tank_number)"
                                      " VALUES (?, ?, ?)", (site_id, grade, tank_number))
            return self.grade_tanks(site_id)

        return self._change(entered_by, "grade_tanks.set", f"site/{site_id}",
                            {"tanks": {str(g): t for g, t in sorted(tanks.items())}}, write)

    def grade_tanks(self, site_id):
        return [GradeTank(**row) for row in self._backend.query(
            f"SELECT {columns(GradeTank)} FROM grade_tanks WHERE site_id = ? ORDER BY grade",
            (site_id,))]

    def set_max_flow(self, site_id, device_ref, max_flow_lpm, *, entered_by):
        """Register a nozzle's maximum flow rate (Qmax of its type approval), L/min."""
        if not max_flow_lpm > 0:
            raise StorageError(f"max_flow_lpm must be above 0, got {max_flow_lpm}")

        def write(now):
            self._require_site(site_id)
            self._backend.execute(
                "INSERT INTO nozzle_max_flows (site_id, device_ref, max_flow_lpm) VALUES (?, ?, ?)"
                " ON CONFLICT (site_id, device_ref) DO UPDATE"
                " SET max_flow_lpm = excluded.max_flow_lpm", (site_id, device_ref, max_flow_lpm))
            return NozzleMaxFlow(site_id, device_ref, float(max_flow_lpm))

        return self._change(entered_by, "max_flow.set", f"site/{site_id}",
                            {"device_ref": device_ref, "max_flow_lpm": max_flow_lpm}, write)

    def max_flows(self, site_id):
        return [NozzleMaxFlow(**row) for row in self._backend.query(
            f"SELECT {columns(NozzleMaxFlow)} FROM nozzle_max_flows WHERE site_id = ?"
            " ORDER BY device_ref", (site_id,))]

    def facts_revision(self):
        """Raised by every change to the facts above: a reader's cache is stale when it moved."""
        (row,) = self._backend.query("SELECT revision FROM detection_facts_revision")
        return row["revision"]

    # --- detector checkpoints -------------------------------------------------------------------

    def save_checkpoints(self, by_site):
        """Save each site's detector checkpoint (a JSON-able dict), all in one transaction."""
        now = _now_ms()
        rows = [(site_id, json.dumps(checkpoint, separators=(",", ":")), now)
                for site_id, checkpoint in sorted(by_site.items())]
        with self._backend.transaction():
            for row in rows:
                self._backend.execute(
                    "INSERT INTO detector_checkpoints (site_id, checkpoint_json, saved_at_ms)"
                    " VALUES (?, ?, ?) ON CONFLICT (site_id) DO UPDATE"
                    " SET checkpoint_json = excluded.checkpoint_json,"
                    " saved_at_ms = excluded.saved_at_ms", row)

    def checkpoints(self):
        """{site_id: checkpoint} of every site saved."""
        return {row["site_id"]: json.loads(row["checkpoint_json"]) for row in
                self._backend.query("SELECT site_id, checkpoint_json FROM detector_checkpoints")}

    def checkpoint(self, site_id):
        """The checkpoint saved for ``site_id``, or None."""
        rows = self._backend.query(
            "SELECT checkpoint_json FROM detector_checkpoints WHERE site_id = ?", (site_id,))
        return json.loads(rows[0]["checkpoint_json"]) if rows else None
