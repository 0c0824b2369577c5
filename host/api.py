"""The host's REST API (docs/api.md): the registry, records with their verification, chain
findings, alerts and the audit log, over HTTP with JSON, for the console and for scripts.

    app = create_app(store, TokenBook.load("/var/lib/meterseal/tokens.json"))
    python -m meterseal.host.api --db /var/lib/meterseal --tokens tokens.json --port 8080

Handlers are thin: they check the caller's role (PERMISSIONS), call the store and translate its
values to the models in api_models.py. The store enforces everything else (alert transitions,
registry consistency), and its refusals become one-line JSON errors.

Threads. Endpoints are plain functions, so FastAPI runs them in its threadpool and the event
loop never waits on the database. A Store holds one connection that must not be used by two
threads at once, so the app serialises its requests to the store with a lock (_StoreGate). One
request at a time is plenty for a console and scripts, and SQLite's WAL keeps the ingest's
writes (through its own Store) from blocking on API reads. The lock is taken inside the
endpoint's worker thread, never in a dependency: requests that wait for it each hold a worker,
but the one holding it is already running in its own, so the pool can never starve it.
"""

import argparse
import logging
import sys
import threading
from contextlib import contextmanager
from typing import Annotated, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_models import (MAX_INT64, AlertDetailOut, AlertOut, AssignIn, AuditCheckOut,
                         AuditEntryOut, AuditPageOut, CloseIn, DeviceIn, DeviceOut, ErrorOut,
                         FindingOut, GatewayIn, GatewayOut, GatewayStatusIn, Grade,
                         GradeTankOut, GradeTanksIn, IngestStateOut, KeyIn, KeyOut, MaxFlowIn,
                         MaxFlowOut, NoteIn, NoteOut, PriceIn, PriceOut, RecordDetailOut,
                         RecordOut, RecordPageOut, RevokeIn, SiteIn, SiteOut, Text,
                         TransitionOut, WorkOrderIn, WorkOrderOut, to_model)
from .api_tokens import TokenBook
from .storage import (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, OUTCOMES, AlertError, StorageError,
                      open_store)
from .storage.migrations import FINDING_KINDS

log = logging.getLogger("meterseal.api")

# Who may do what. The store's alert state machine then decides which transition each role may
# take (docs/alerts.md); a refusal there is a 409. A manufacturer reads the registry and records
# (its devices' evidence) but not alerts or the audit log: those are the regulator's work.
_EVERYONE = ("officer", "supervisor", "manufacturer", "admin")
PERMISSIONS = {
    "registry.read": _EVERYONE,
    "registry.write": ("admin",),
    "gateway.status": ("supervisor", "admin"),
    "records.read": _EVERYONE,
    "alerts": ("officer", "supervisor", "admin"),
    "audit.read": ("supervisor", "admin"),
    # What the detectors check against: officers enter work orders and announced prices; the
    # grade -> tank map and nozzle flows are registration data, like devices.
    "site_facts.read": ("officer", "supervisor", "admin"),
    "site_facts.write": ("officer", "supervisor", "admin"),
}

_ERRORS = {status: {"model": ErrorOut} for status in (401, 403, 404, 409, 422, 503)}
_bearer = HTTPBearer(auto_error=False, description="an API token (docs/api.md)")

Id = Annotated[int, Path(ge=1, le=MAX_INT64)]
Kid = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{64}$", description="key id, hex")]
After = Annotated[int | None, Query(ge=0, le=MAX_INT64, description="the previous page's "
                                                                    "next_after")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Seq = Annotated[int | None, Query(ge=0, le=MAX_INT64)]


def _one_line(exc):
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _error(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _StoreGate:
    """The app's one Store, to one request at a time (see the module doc)."""

    def __init__(self, store):
        self._store = store
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self):
        with self._lock:
            yield self._store


@contextmanager
def _refusal_is_conflict():
    """A registry change the store refuses (a duplicate, an unregistered reference) is a 409."""
    try:
        yield
    except StorageError as exc:
        raise HTTPException(409, _one_line(exc)) from exc


def _found(value, what):
    if value is None:
        raise HTTPException(404, f"{what} does not exist")
    return value


def _registered(db, gateway_id):
    return _found(db.registry.gateway(gateway_id), f"gateway {gateway_id}")


def _install_error_handlers(app):
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, _one_line(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request, exc):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return _error(422, _one_line(f"{where}: {first['msg']}"))

    @app.exception_handler(AlertError)
    async def alert_refused(request, exc):
        return _error(409, _one_line(exc))

    @app.exception_handler(StorageError)
    async def storage_failed(request, exc):
        log.error("%s %s: %s", request.method, request.url.path, _one_line(exc))
        return _error(503, _one_line(exc))

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error; the host's log has the details")


def create_app(store, tokens):
    """The API over ``store`` (a host.storage Store), admitting the callers in ``tokens`` (a
    TokenBook)."""
    app = FastAPI(title="meterseal host API", version="1", responses=_ERRORS,
                  description="Registry, verified records, alerts and audit log (docs/api.md).")
    _install_error_handlers(app)
    gate = _StoreGate(store)

    def caller(permission):
        roles = PERMISSIONS[permission]

        async def authorised(
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]):
            challenge = {"WWW-Authenticate": "Bearer"}
            if credentials is None:
                raise HTTPException(401, "missing bearer token (Authorization: Bearer TOKEN)",
                                    challenge)
            principal = tokens.principal(credentials.credentials)
            if principal is None:
                raise HTTPException(401, "unknown API token", challenge)
            if principal.role not in roles:
                raise HTTPException(403, f"role {principal.role} may not use {permission} "
                                         "(only " + ", ".join(roles) + " may)")
            return principal
        return Depends(authorised)

    # --- registry -------------------------------------------------------------------------------

    @app.get("/sites", response_model=list[SiteOut], dependencies=[caller("registry.read")])
    def list_sites():
        with gate() as db:
            return [to_model(SiteOut, site) for site in db.registry.sites()]

    @app.post("/sites", response_model=SiteOut, status_code=201,
              dependencies=[caller("registry.write")])
    def create_site(site: SiteIn):
        with gate() as db, _refusal_is_conflict():
            return to_model(SiteOut, db.registry.add_site(site.site_id, site.name, site.address))

    @app.get("/gateways", response_model=list[GatewayOut],
             dependencies=[caller("registry.read")])
    def list_gateways(site_id: Text | None = None):
        with gate() as db:
            return [to_model(GatewayOut, gateway) for gateway in db.registry.gateways(site_id)]

    @app.post("/gateways", response_model=GatewayOut, status_code=201,
              dependencies=[caller("registry.write")])
    def create_gateway(gateway: GatewayIn):
        with gate() as db, _refusal_is_conflict():
            return to_model(GatewayOut, db.registry.add_gateway(
                gateway.gateway_id, gateway.serial, gateway.site_id, gateway.status,
                gateway.registered_at_ms, gateway.software_id))

    @app.get("/gateways/{gateway_id}", response_model=GatewayOut,
             dependencies=[caller("registry.read")])
    def get_gateway(gateway_id: Text):
        with gate() as db:
            return to_model(GatewayOut, _registered(db, gateway_id))

    @app.put("/gateways/{gateway_id}/status", response_model=GatewayOut,
             dependencies=[caller("gateway.status")])
    def set_gateway_status(gateway_id: Text, change: GatewayStatusIn):
        with gate() as db:
            _registered(db, gateway_id)
            db.registry.set_gateway_status(gateway_id, change.status)
            return to_model(GatewayOut, db.registry.gateway(gateway_id))

    @app.get("/gateways/{gateway_id}/keys", response_model=list[KeyOut],
             dependencies=[caller("registry.read")])
    def list_keys(gateway_id: Text):
        with gate() as db:
            _registered(db, gateway_id)
            return [to_model(KeyOut, key) for key in db.registry.keys(gateway_id)]

    @app.post("/gateways/{gateway_id}/keys", response_model=KeyOut, status_code=201,
              dependencies=[caller("registry.write")])
    def add_key(gateway_id: Text, key: KeyIn):
        replaces = bytes.fromhex(key.replaces_kid) if key.replaces_kid else None
        with gate() as db:
            _registered(db, gateway_id)
            with _refusal_is_conflict():
                added = db.registry.add_key(gateway_id, bytes.fromhex(key.public_key),
                                            key.valid_from_ms, replaces)
            return to_model(KeyOut, added)

    @app.post("/gateways/{gateway_id}/keys/{kid}/revoke", response_model=KeyOut,
              dependencies=[caller("registry.write")])
    def revoke_key(gateway_id: Text, kid: Kid, revocation: RevokeIn):
        kid = bytes.fromhex(kid)
        with gate() as db:
            key = db.registry.key(kid)
            if key is None or key.gateway_id != gateway_id:
                raise HTTPException(404, f"key {kid.hex()} of gateway {gateway_id} does not "
                                         "exist")
            with _refusal_is_conflict():
                db.registry.revoke_key(kid, revocation.revoked_at_ms)
            return to_model(KeyOut, db.registry.key(kid))

    @app.get("/gateways/{gateway_id}/devices", response_model=list[DeviceOut],
             dependencies=[caller("registry.read")])
    def list_devices(gateway_id: Text):
        with gate() as db:
            _registered(db, gateway_id)
            return [to_model(DeviceOut, device) for device in db.registry.devices(gateway_id)]

    @app.post("/gateways/{gateway_id}/devices", response_model=DeviceOut, status_code=201,
              dependencies=[caller("registry.write")])
    def add_device(gateway_id: Text, device: DeviceIn):
        with gate() as db:
            _registered(db, gateway_id)
            with _refusal_is_conflict():
                added = db.registry.add_device(
                    gateway_id, device.device_ref, device.device_type, model=device.model,
                    serial=device.serial, type_approval_cert=device.type_approval_cert,
                    expected_software_id=device.expected_software_id)
            return to_model(DeviceOut, added)

    # --- records, findings, ingest state --------------------------------------------------------

    def record_page(page):
        return RecordPageOut(items=[to_model(RecordOut, record) for record in page.items],
                             next_after=page.next_after)

    @app.get("/gateways/{gateway_id}/records", response_model=RecordPageOut,
             dependencies=[caller("records.read")])
    def list_records(gateway_id: Text, seq_from: Seq = None, seq_to: Seq = None,
                     kind: Text | None = None, event_type: Text | None = None,
                     wall_time_from_ms: Seq = None, wall_time_before_ms: Seq = None,
                     dispenser_address: Seq = None, nozzle: Seq = None,
                     scale_id: Text | None = None, tank_number: Seq = None,
                     after: After = None, limit: Limit = DEFAULT_PAGE_SIZE):
        """The gateway's accepted records in seq order (seq_from..seq_to inclusive, the wall
        time window [from, before))."""
        with gate() as db:
            return record_page(db.records(
                gateway_id, seq_from=seq_from, seq_to=seq_to, kind=kind, event_type=event_type,
                wall_time_from_ms=wall_time_from_ms, wall_time_before_ms=wall_time_before_ms,
                dispenser_address=dispenser_address, nozzle=nozzle, scale_id=scale_id,
                tank_number=tank_number, after_seq=after, limit=limit))

    @app.get("/records/{record_id}", response_model=RecordDetailOut,
             dependencies=[caller("records.read")])
    def get_record(record_id: Id):
        with gate() as db:
            return to_model(RecordDetailOut, _found(db.record(record_id), f"record {record_id}"))

    @app.get("/quarantine", response_model=RecordPageOut, dependencies=[caller("records.read")])
    def list_quarantine(sender_gateway_id: Text | None = None,
                        outcome: Literal[OUTCOMES] | None = None, after: After = None,
                        limit: Limit = DEFAULT_PAGE_SIZE):
        """Quarantined envelopes (fork twins included) in arrival order, paged by record_id."""
        with gate() as db:
            return record_page(db.quarantine(sender_gateway_id, outcome=outcome,
                                             after_record_id=after, limit=limit))

    @app.get("/gateways/{gateway_id}/findings", response_model=list[FindingOut],
             dependencies=[caller("records.read")])
    def list_findings(gateway_id: Text, kind: Literal[FINDING_KINDS] | None = None,
                      open_only: bool = False):
        with gate() as db:
            return [to_model(FindingOut, finding)
                    for finding in db.findings(gateway_id, kind=kind, open_only=open_only)]

    @app.get("/gateways/{gateway_id}/ingest-state", response_model=IngestStateOut,
             dependencies=[caller("records.read")])
    def get_ingest_state(gateway_id: Text):
        with gate() as db:
            return to_model(IngestStateOut, _found(db.ingest_state(gateway_id),
                                                   f"ingest state of gateway {gateway_id}"))

    # --- alerts ---------------------------------------------------------------------------------

    @app.get("/alerts", response_model=list[AlertOut], dependencies=[caller("alerts")])
    def list_alerts(gateway_id: Text | None = None, assignee: Text | None = None,
                    limit: Limit = DEFAULT_PAGE_SIZE):
        """The open alerts, most urgent first (severity, score, latest sighting, newest)."""
        with gate() as db:
            return [to_model(AlertOut, alert)
                    for alert in db.alerts.ranked(gateway_id, assignee=assignee, limit=limit)]

    @app.get("/alerts/{alert_id}", response_model=AlertDetailOut, dependencies=[caller("alerts")])
    def get_alert(alert_id: Id):
        with gate() as db:
            alert = _found(db.alerts.alert(alert_id), f"alert {alert_id}")
            return to_model(
                AlertDetailOut, alert,
                notes=[to_model(NoteOut, note) for note in db.alerts.notes(alert_id)],
                transitions=[to_model(TransitionOut, step)
                             for step in db.alerts.transitions(alert_id)])

    def act(alert_id, change):
        """Apply ``change(alerts)`` to an existing alert; the store refuses (409) what its state
        machine does not allow."""
        with gate() as db:
            _found(db.alerts.alert(alert_id), f"alert {alert_id}")
            return change(db.alerts)

    Caller = Annotated[object, caller("alerts")]

    @app.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut)
    def acknowledge_alert(alert_id: Id, who: Caller):
        return to_model(AlertOut, act(alert_id, lambda alerts: alerts.acknowledge(
            alert_id, who.name, who.role)))

    @app.post("/alerts/{alert_id}/escalate", response_model=AlertOut)
    def escalate_alert(alert_id: Id, who: Caller):
        return to_model(AlertOut, act(alert_id, lambda alerts: alerts.escalate(
            alert_id, who.name, who.role)))

    @app.post("/alerts/{alert_id}/close", response_model=AlertOut)
    def close_alert(alert_id: Id, closing: CloseIn, who: Caller):
        return to_model(AlertOut, act(alert_id, lambda alerts: alerts.close(
            alert_id, closing.reason, who.name, who.role)))

    @app.post("/alerts/{alert_id}/reopen", response_model=AlertOut)
    def reopen_alert(alert_id: Id, who: Caller):
        return to_model(AlertOut, act(alert_id, lambda alerts: alerts.reopen(
            alert_id, who.name, who.role)))

    @app.post("/alerts/{alert_id}/assign", response_model=AlertOut)
    def assign_alert(alert_id: Id, assignment: AssignIn, who: Caller):
        return to_model(AlertOut, act(alert_id, lambda alerts: alerts.assign(
            alert_id, assignment.assignee, who.name, who.role)))

    @app.post("/alerts/{alert_id}/notes", response_model=NoteOut, status_code=201)
    def add_note(alert_id: Id, note: NoteIn, who: Caller):
        return to_model(NoteOut, act(alert_id, lambda alerts: alerts.add_note(
            alert_id, note.text, who.name, who.role)))

    # --- what the detectors know ----------------------------------------------------------------

    def site_of(db, site_id):
        return _found(next((s for s in db.registry.sites() if s.site_id == site_id), None),
                      f"site {site_id}")

    @app.post("/sites/{site_id}/work-orders", response_model=WorkOrderOut, status_code=201)
    def add_work_order(site_id: Text, order: WorkOrderIn,
                       who: Annotated[object, caller("site_facts.write")]):
        """Authorised work: a configuration event it covers raises no alert."""
        with gate() as db:
            site_of(db, site_id)
            with _refusal_is_conflict():
                added = db.detection.add_work_order(
                    order.work_order_id, site_id, order.work, order.valid_from_ms,
                    order.valid_to_ms, entered_by=who.name, gateway_id=order.gateway_id,
                    device_ref=order.device_ref, technician=order.technician,
                    reference=order.reference)
            return to_model(WorkOrderOut, added)

    @app.get("/sites/{site_id}/work-orders", response_model=list[WorkOrderOut],
             dependencies=[caller("site_facts.read")])
    def list_work_orders(site_id: Text, at_ms: Seq = None):
        with gate() as db:
            site_of(db, site_id)
            return [to_model(WorkOrderOut, order)
                    for order in db.detection.work_orders(site_id, at_ms=at_ms)]

    @app.post("/sites/{site_id}/prices", response_model=PriceOut, status_code=201)
    def set_price(site_id: Text, price: PriceIn,
                  who: Annotated[object, caller("site_facts.write")]):
        """The unit price the site announced for a grade from a time on."""
        with gate() as db:
            site_of(db, site_id)
            return to_model(PriceOut, db.detection.set_price(
                site_id, price.grade, price.price_minor_per_kl, price.valid_from_ms,
                entered_by=who.name))

    @app.get("/sites/{site_id}/prices", response_model=list[PriceOut],
             dependencies=[caller("site_facts.read")])
    def list_prices(site_id: Text, grade: Annotated[Grade | None, Query()] = None):
        with gate() as db:
            site_of(db, site_id)
            return [to_model(PriceOut, price) for price in db.detection.prices(site_id, grade)]

    @app.put("/sites/{site_id}/grade-tanks", response_model=list[GradeTankOut])
    def set_grade_tanks(site_id: Text, tanks: GradeTanksIn,
                        who: Annotated[object, caller("registry.write")]):
        with gate() as db:
            site_of(db, site_id)
            return [to_model(GradeTankOut, row) for row in db.detection.set_grade_tanks(
                site_id, {int(grade): tank for grade, tank in tanks.tanks.items()},
                entered_by=who.name)]

    @app.get("/sites/{site_id}/grade-tanks", response_model=list[GradeTankOut],
             dependencies=[caller("site_facts.read")])
    def list_grade_tanks(site_id: Text):
        with gate() as db:
            site_of(db, site_id)
            return [to_model(GradeTankOut, row) for row in db.detection.grade_tanks(site_id)]

    @app.put("/sites/{site_id}/max-flows", response_model=MaxFlowOut)
    def set_max_flow(site_id: Text, flow: MaxFlowIn,
                     who: Annotated[object, caller("registry.write")]):
        """A nozzle's registered maximum flow rate (Qmax), L/min."""
        with gate() as db:
            site_of(db, site_id)
            return to_model(MaxFlowOut, db.detection.set_max_flow(
                site_id, flow.device_ref, flow.max_flow_lpm, entered_by=who.name))

    @app.get("/sites/{site_id}/max-flows", response_model=list[MaxFlowOut],
             dependencies=[caller("site_facts.read")])
    def list_max_flows(site_id: Text):
        with gate() as db:
            site_of(db, site_id)
            return [to_model(MaxFlowOut, row) for row in db.detection.max_flows(site_id)]

    # --- audit log ------------------------------------------------------------------------------

    @app.get("/audit", response_model=AuditPageOut, dependencies=[caller("audit.read")])
    def list_audit(after: After = None, limit: Limit = DEFAULT_PAGE_SIZE):
        with gate() as db:
            page = db.audit_log(after_seq=after, limit=limit)
        return AuditPageOut(items=[to_model(AuditEntryOut, entry) for entry in page.items],
                            next_after=page.next_after)

    @app.get("/audit/verify", response_model=AuditCheckOut, dependencies=[caller("audit.read")])
    def verify_audit():
        """Recompute the audit log's hash chain from its first entry."""
        with gate() as db:
            check = db.verify_audit_log()
        return to_model(AuditCheckOut, check, intact=check.intact)

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m meterseal.host.api",
                                     description="Serve the host's REST API.")
    parser.add_argument("--db", required=True,
                        help="data directory, SQLite file, sqlite:///PATH or postgresql://...")
    parser.add_argument("--tokens", required=True, help="the tokens file (api_tokens.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        tokens = TokenBook.load(args.tokens)
        store = open_store(args.db)
    except OSError as exc:
        print(f"meterseal api: {exc}", file=sys.stderr)
        return 1
    with store:
        uvicorn.run(create_app(store, tokens), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
