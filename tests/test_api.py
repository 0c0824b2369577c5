"""The REST API (host/api.py, docs/api.md) through FastAPI's TestClient, over a real store on
each backend (a SQLite file, a PostgreSQL database) holding real signed records ingested as the
ingest server stores them."""

import json
import os
import stat

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from meterseal.host import api_tokens, cli
from meterseal.host.api import create_app
from meterseal.host.api_tokens import TokenBook, TokenFileError, token_digest
from meterseal.host.simulated_gateway import START_WALL_MS, RecordMaker, provision
from meterseal.host.storage import USER_ROLES, NewFinding, open_store
from meterseal.host.verify import Keyring
from meterseal.protocol import cose

from ingest_site import new_signer, sqlite_only

GW = "GW-1"
RECORDS = 7


class Site:
    """A store with one provisioned gateway, its signed records (one quarantined impostor), a gap
    finding and two alerts, served by the API with one token per role."""

    def __init__(self, store_url):
        self.store = open_store(store_url)
        self.key = new_signer()
        self.public_key = self.key.public_key()
        provision(self.store, GW, self.public_key)
        keyring = Keyring()
        keyring.add(cose.kid_for(self.public_key), self.public_key)
        envelopes = RecordMaker(GW, self.key).batch(RECORDS)
        envelopes.append(RecordMaker(GW, new_signer()).make())  # a key nobody registered
        received_at_ms = START_WALL_MS + 60_000
        results = self.store.ingest_batch(
            GW, [(envelope, keyring.verify(envelope, received_at_ms)) for envelope in envelopes],
            findings=[NewFinding("gap", 40, 41, {"expected": "seq 40", "observed": "seq 42"})],
            received_at_ms=received_at_ms)
        self.record_ids = [result.record_id for result in results]
        self.alert_id = self._raise("chain_gap", "high")
        self.other_alert_id = self._raise("clock_anomaly", "low")
        self.tokens = TokenBook()
        self.token = {role: self.tokens.issue(f"user.{role}", role) for role in USER_ROLES}
        self.client = TestClient(create_app(self.store, self.tokens))

    def _raise(self, rule, severity):
        return self.store.alerts.raise_alert(
            GW, None, rule, severity, 1.0, f"{rule} explained", f"{rule} 说明",
            self.record_ids[:2], {"grace_s": 60}).alert_id

    def call(self, role, method, path, body=None, **params):
        headers = {"Authorization": f"Bearer {self.token[role]}"} if role else {}
        return self.client.request(method, path, json=body, params=params, headers=headers)


@pytest.fixture
def site(store_url):
    site = Site(store_url)
    yield site
    site.client.close()
    site.store.close()


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"]
    return body["error"]


# --- authentication and roles -------------------------------------------------------------------

NEW_KEY = "04" + "11" * 64  # not on the curve: refused (422), once the role check has passed
# The permission table of docs/api.md.
EVERYONE = ("officer", "supervisor", "manufacturer", "admin")
DECIDERS = ("officer", "supervisor", "admin")
SUPERVISORS = ("supervisor", "admin")
ADMIN = ("admin",)
# Every route: (method, path, body, the roles that may call it). Paths use the Site's ids.
ROUTES = [
    ("GET", "/sites", None, EVERYONE),
    ("POST", "/sites", {"site_id": "S2", "name": "second"}, ADMIN),
    ("GET", "/gateways", None, EVERYONE),
    ("POST", "/gateways", {"gateway_id": "GW-2", "serial": "SN-2", "site_id": "SITE-1"},
     ADMIN),
    ("GET", f"/gateways/{GW}", None, EVERYONE),
    ("PUT", f"/gateways/{GW}/status", {"status": "suspended"}, SUPERVISORS),
    ("GET", f"/gateways/{GW}/keys", None, EVERYONE),
    ("POST", f"/gateways/{GW}/keys", {"public_key": NEW_KEY, "valid_from_ms": 0},
     ADMIN),
    ("POST", f"/gateways/{GW}/keys/{'00' * 32}/revoke", {"revoked_at_ms": 1}, ADMIN),
    ("GET", f"/gateways/{GW}/devices", None, EVERYONE),
    ("POST", f"/gateways/{GW}/devices",
     {"device_ref": "80", "device_type": "dispenser", "model": "M", "serial": "D1",
      "type_approval_cert": "TA-1", "expected_software_id": "sw"}, ADMIN),
    ("GET", f"/gateways/{GW}/records", None, EVERYONE),
    ("GET", "/records/1", None, EVERYONE),
    ("GET", "/quarantine", None, EVERYONE),
    ("GET", f"/gateways/{GW}/findings", None, EVERYONE),
    ("GET", f"/gateways/{GW}/ingest-state", None, EVERYONE),
    ("GET", "/alerts", None, DECIDERS),
    ("GET", "/alerts/1", None, DECIDERS),
    ("POST", "/alerts/1/acknowledge", None, DECIDERS),
    ("POST", "/alerts/1/escalate", None, DECIDERS),
    ("POST", "/alerts/1/close", {"reason": "data_fault"}, DECIDERS),
    ("POST", "/alerts/1/reopen", None, DECIDERS),
    ("POST", "/alerts/1/assign", {"assignee": "zhang.min"}, DECIDERS),
    ("POST", "/alerts/1/notes", {"text": "seen"}, DECIDERS),
    ("POST", "/sites/SITE-1/work-orders", {"work_order_id": "WO-1", "work": ["calibration"],
                                           "valid_from_ms": 0, "valid_to_ms": 1}, DECIDERS),
    ("GET", "/sites/SITE-1/work-orders", None, DECIDERS),
    ("POST", "/sites/SITE-1/prices", {"grade": 92, "price_minor_per_kl": 1, "valid_from_ms": 0},
     DECIDERS),
    ("GET", "/sites/SITE-1/prices", None, DECIDERS),
    ("PUT", "/sites/SITE-1/grade-tanks", {"tanks": {"92": 1}}, ADMIN),
    ("GET", "/sites/SITE-1/grade-tanks", None, DECIDERS),
    ("PUT", "/sites/SITE-1/max-flows", {"device_ref": "80/1", "max_flow_lpm": 50}, ADMIN),
    ("GET", "/sites/SITE-1/max-flows", None, DECIDERS),
    ("GET", "/audit", None, SUPERVISORS),
    ("GET", "/audit/verify", None, SUPERVISORS),
]


@sqlite_only  # the app's routes, not the store
def test_the_route_table_covers_every_route(site):
    served = {(method, route.path) for route in site.client.app.routes
              if isinstance(route, APIRoute) for method in route.methods}
    listed = {(method, path.replace(GW, "{gateway_id}").replace("SITE-1", "{site_id}")
               .replace("/1", "/{id}")
               .replace("00" * 32, "{kid}")) for method, path, _, _ in ROUTES}
    served = {(method, path.replace("{record_id}", "{id}").replace("{alert_id}", "{id}"))
              for method, path in served}
    assert served == listed


@pytest.mark.parametrize("method,path,body,roles", ROUTES,
                         ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
@sqlite_only  # roles are checked before the store; the tests below run every route on both
def test_each_role_may_call_exactly_what_the_permission_table_allows(site, method, path, body,
                                                                     roles):
    for role in USER_ROLES:
        response = site.call(role, method, path, body)
        if role in roles:  # served: neither refused for the role nor failing
            assert response.status_code not in (401, 403), (role, response.text)
            assert response.status_code < 500, (role, response.text)
        else:
            assert f"role {role} may not" in _error(response, 403)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"}],
                         ids=["none", "unknown", "not-bearer"])
@sqlite_only  # refused before the store
def test_a_missing_or_unknown_token_is_401(site, headers):
    for method, path, body, _ in ROUTES:
        response = site.client.request(method, path, json=body, headers=headers)
        _error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert site.store.registry.gateway(GW).status == "active"


# --- registry -----------------------------------------------------------------------------------

def test_registry_crud(site):
    admin = "admin"
    assert site.call(admin, "POST", "/sites", {"site_id": "S2", "name": "Market row",
                                               "address": "1 Main St"}).status_code == 201
    assert [s["site_id"] for s in site.call("officer", "GET", "/sites").json()] == ["S2", "SITE-1"]
    _error(site.call(admin, "POST", "/sites", {"site_id": "S2", "name": "again"}), 409)
    # The detectors' shared state is saved under site id "*": no site may take it.
    assert "reserved" in _error(site.call(admin, "POST", "/sites",
                                          {"site_id": "*", "name": "Star"}), 409)
    assert "*" not in [s["site_id"] for s in site.call("officer", "GET", "/sites").json()]

    software = "meterseal-gw 0.1.0 sha256:" + "ab" * 32
    created = site.call(admin, "POST", "/gateways", {"gateway_id": "GW-2", "serial": "SN-9",
                                                      "site_id": "S2", "registered_at_ms": 5,
                                                      "software_id": software})
    assert created.status_code == 201 and created.json()["status"] == "active"
    assert created.json()["software_id"] == software
    assert "SN-9" in _error(site.call(admin, "POST", "/gateways", {
        "gateway_id": "GW-3", "serial": "SN-9", "site_id": "S2"}), 409)
    assert "site NOPE" in _error(site.call(admin, "POST", "/gateways", {
        "gateway_id": "GW-3", "serial": "SN-3", "site_id": "NOPE"}), 409)
    assert [g["gateway_id"] for g in site.call("manufacturer", "GET", "/gateways",
                                               site_id="S2").json()] == ["GW-2"]
    assert site.call("officer", "GET", "/gateways/GW-2").json()["registered_at_ms"] == 5
    _error(site.call("officer", "GET", "/gateways/GW-404"), 404)

    changed = site.call("supervisor", "PUT", "/gateways/GW-2/status", {"status": "suspended"})
    assert changed.json()["status"] == "suspended"
    assert "status" in _error(site.call("supervisor", "PUT", "/gateways/GW-2/status",
                                        {"status": "gone"}), 422)

    public_key = new_signer().public_key()
    key = site.call(admin, "POST", "/gateways/GW-2/keys",
                    {"public_key": public_key.hex(), "valid_from_ms": 10}).json()
    assert key["kid"] == cose.kid_for(public_key).hex() and key["public_key"] == public_key.hex()
    _error(site.call(admin, "POST", "/gateways/GW-2/keys",
                     {"public_key": "zz", "valid_from_ms": 10}), 422)
    # A key the ingest could not load would lock the gateway out of its handshake.
    assert "not a P-256 point" in _error(site.call(
        admin, "POST", "/gateways/GW-2/keys", {"public_key": NEW_KEY, "valid_from_ms": 10}), 422)
    successor = new_signer().public_key()
    rotated = site.call(admin, "POST", "/gateways/GW-2/keys", {
        "public_key": successor.hex(), "valid_from_ms": 20, "replaces_kid": key["kid"]})
    assert rotated.status_code == 201, rotated.text
    assert "replaces_kid" in _error(site.call(admin, "POST", "/gateways/GW-2/keys", {
        "public_key": new_signer().public_key().hex(), "valid_from_ms": 20,
        "replaces_kid": "ab"}), 422)
    revoked = site.call(admin, "POST", f"/gateways/GW-2/keys/{key['kid']}/revoke",
                        {"revoked_at_ms": 99})
    assert revoked.json()["revoked_at_ms"] == 99
    assert "already revoked" in _error(site.call(
        admin, "POST", f"/gateways/GW-2/keys/{key['kid']}/revoke", {"revoked_at_ms": 100}), 409)
    _error(site.call(admin, "POST", f"/gateways/{GW}/keys/{key['kid']}/revoke",
                     {"revoked_at_ms": 100}), 404)
    assert [(k["revoked_at_ms"], k["replaced_by_kid"]) for k in site.call(
        "officer", "GET", "/gateways/GW-2/keys").json()] == [
        (99, cose.kid_for(successor).hex()), (None, None)]

    device = {"device_ref": "80", "device_type": "dispenser", "model": "Tokheim Quantium",
              "serial": "D-1", "type_approval_cert": "CPA-2024-F-001",
              "expected_software_id": "sw-1.2"}
    assert site.call(admin, "POST", "/gateways/GW-2/devices", device).status_code == 201
    _error(site.call(admin, "POST", "/gateways/GW-2/devices", device), 409)
    _error(site.call(admin, "POST", "/gateways/GW-2/devices", dict(device, extra=1)), 422)
    _error(site.call(admin, "POST", "/gateways/GW-404/devices", device), 404)
    assert site.call("manufacturer", "GET", "/gateways/GW-2/devices").json() == [
        dict(device, gateway_id="GW-2")]


# --- records ------------------------------------------------------------------------------------

def _reverifies(envelope, public_key):
    """Check a COSE_Sign1 envelope with cbor2 and cryptography alone, as an outsider would."""
    message = cbor2.loads(envelope)
    assert message.tag == 18
    protected, _, payload, signature = message.value
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    key.verify(encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                    int.from_bytes(signature[32:], "big")),
               to_be_signed, ec.ECDSA(hashes.SHA256()))


def test_records_page_filter_and_reverify(site):
    seqs, after = [], None
    while True:
        page = site.call("manufacturer", "GET", f"/gateways/{GW}/records", limit=3,
                         **({"after": after} if after is not None else {})).json()
        seqs += [record["seq"] for record in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seqs == list(range(RECORDS))

    def listed(**filters):
        page = site.call("officer", "GET", f"/gateways/{GW}/records", **filters).json()
        return [record["seq"] for record in page["items"]]
    assert listed(seq_from=2, seq_to=4) == [2, 3, 4]
    assert listed(wall_time_from_ms=START_WALL_MS + 1000,
                  wall_time_before_ms=START_WALL_MS + 3000) == [1, 2]
    assert listed(event_type="tamper", kind="event") == list(range(RECORDS))
    assert listed(event_type="boot") == []
    assert "limit" in _error(site.call("officer", "GET", f"/gateways/{GW}/records",
                                       limit=1001), 422)
    assert "seq_from" in _error(site.call("officer", "GET", f"/gateways/{GW}/records",
                                          seq_from=2**63), 422)

    record = site.call("manufacturer", "GET", f"/records/{site.record_ids[3]}").json()
    assert (record["seq"], record["outcome"], record["quarantined"]) == (3, "VERIFIED", False)
    assert record["kid"] == cose.kid_for(site.public_key).hex()
    _reverifies(bytes.fromhex(record["envelope"]), site.public_key)
    _error(site.call("officer", "GET", "/records/999"), 404)

    quarantined = site.call("officer", "GET", "/quarantine", outcome="UNKNOWN_KEY").json()
    assert [r["record_id"] for r in quarantined["items"]] == [site.record_ids[-1]]
    assert quarantined["items"][0]["quarantined"] and quarantined["next_after"] is None
    assert site.call("officer", "GET", "/quarantine", outcome="VERIFIED").json()["items"] == []

    (gap,) = site.call("officer", "GET", f"/gateways/{GW}/findings", kind="gap").json()
    assert (gap["first_seq"], gap["last_seq"], gap["detail"]["observed"]) == (40, 41, "seq 42")
    state = site.call("officer", "GET", f"/gateways/{GW}/ingest-state").json()
    assert (state["contiguous_seq"], state["highest_seq"]) == (RECORDS - 1, RECORDS - 1)
    _error(site.call("officer", "GET", "/gateways/GW-404/ingest-state"), 404)


# --- alerts and the audit log -------------------------------------------------------------------

def test_alert_workflow_with_a_forbidden_transition(site):
    alert = f"/alerts/{site.alert_id}"
    ranked = site.call("officer", "GET", "/alerts").json()
    assert [a["alert_id"] for a in ranked] == [site.alert_id, site.other_alert_id]

    assert "from new it can only be acknowledged" in _error(
        site.call("officer", "POST", f"{alert}/escalate"), 409)
    assert site.call("officer", "POST", f"{alert}/acknowledge").json()["state"] == "acknowledged"
    assert site.call("officer", "POST", f"{alert}/assign",
                     {"assignee": "user.officer"}).json()["assignee"] == "user.officer"
    assert site.call("officer", "POST", f"{alert}/notes",
                     {"text": "Pump 3 checked."}).status_code == 201
    assert site.call("officer", "POST", f"{alert}/escalate").json()["state"] == "escalated"
    assert "only supervisor or admin" in _error(
        site.call("officer", "POST", f"{alert}/close", {"reason": "confirmed_cheat"}), 409)
    _error(site.call("supervisor", "POST", f"{alert}/close", {"reason": "because"}), 422)
    closed = site.call("supervisor", "POST", f"{alert}/close", {"reason": "confirmed_cheat"})
    assert closed.json()["close_reason"] == "confirmed_cheat"
    assert [a["alert_id"] for a in site.call("officer", "GET", "/alerts").json()] == [
        site.other_alert_id]
    _error(site.call("officer", "POST", f"{alert}/reopen"), 409)
    assert site.call("admin", "POST", f"{alert}/reopen").json()["state"] == "acknowledged"
    _error(site.call("officer", "POST", "/alerts/999/acknowledge"), 404)

    detail = site.call("officer", "GET", alert).json()
    assert [step["action"] for step in detail["transitions"]] == [
        "acknowledge", "escalate", "close", "reopen"]
    assert [(note["author"], note["text"]) for note in detail["notes"]] == [
        ("user.officer", "Pump 3 checked.")]
    assert detail["evidence_record_ids"] == site.record_ids[:2]

    entries = site.call("supervisor", "GET", "/audit", limit=1000).json()["items"]
    assert [(e["action"], e["actor"]) for e in entries][-6:] == [
        ("alert.acknowledge", "user.officer"), ("alert.assign", "user.officer"),
        ("alert.note", "user.officer"), ("alert.escalate", "user.officer"),
        ("alert.close", "user.supervisor"), ("alert.reopen", "user.admin")]
    first_page = site.call("supervisor", "GET", "/audit", limit=2).json()
    second_page = site.call("supervisor", "GET", "/audit", limit=2,
                            after=first_page["next_after"]).json()
    assert [e["seq"] for e in first_page["items"] + second_page["items"]] == [1, 2, 3, 4]
    check = site.call("admin", "GET", "/audit/verify").json()
    assert check["intact"] and check["entries_checked"] == len(entries) == 8
    assert check["head_hash"] == entries[-1]["entry_hash"]


# --- the OpenAPI spec and errors ----------------------------------------------------------------

# Text enters as a path segment, a query parameter or a body field. PostgreSQL's text cannot
# hold NUL (SQLite's can), so the API refuses it up front and both backends answer alike.
NUL_INPUTS = [
    ("GET", "/gateways/GW%001/records", None, {}, "path.gateway_id"),
    ("GET", f"/gateways/{GW}/records", None, {"kind": "a\x00"}, "query.kind"),
    ("GET", "/alerts", None, {"assignee": "\x00"}, "query.assignee"),
    ("POST", "/sites", {"site_id": "S\x00", "name": "x"}, {}, "body.site_id"),
    ("POST", "/alerts/1/notes", {"text": "a\x00"}, {}, "body.text"),
]


def test_text_holding_nul_is_refused_naming_the_field_and_changes_nothing(site):
    for method, path, body, params, field in NUL_INPUTS:
        assert f"{field}: Value error, must not contain NUL" in _error(
            site.call("admin", method, path, body, **params), 422)
    assert [s.site_id for s in site.store.registry.sites()] == ["SITE-1"]
    assert site.store.alerts.notes(1) == []


@sqlite_only  # the spec, not the store
def test_every_route_is_documented_with_its_response_model(site, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    spec = site.client.get("/openapi.json").json()
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    for route in site.client.app.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods:
            operation = spec["paths"][route.path][method.lower()]
            success = operation["responses"][str(route.status_code or 200)]
            assert success["content"]["application/json"]["schema"], (method, route.path)
            for status in ("401", "403", "422"):
                assert operation["responses"][status]["content"]["application/json"][
                    "schema"] == {"$ref": "#/components/schemas/ErrorOut"}
            assert operation["security"], (method, route.path)
    assert os.listdir(workdir) == []


def test_a_storage_failure_is_a_one_line_503(site):
    site.store.close()
    message = _error(site.call("officer", "GET", "/sites"), 503)
    assert "Traceback" not in message and "closed" in message


@sqlite_only  # a failure of the handler, not of the store
def test_an_unexpected_failure_is_a_one_line_500_without_a_traceback(site, monkeypatch):
    def broken():
        raise RuntimeError("secret internals\n  File \"x.py\", line 1")
    monkeypatch.setattr(site.store.registry, "sites", broken)
    client = TestClient(site.client.app, raise_server_exceptions=False)
    response = client.get("/sites", headers={"Authorization": f"Bearer {site.token['admin']}"})
    assert "internals" not in _error(response, 500) and "File" not in response.text


# --- tokens -------------------------------------------------------------------------------------

def test_a_tokens_file_keeps_only_hashes_and_reloads(tmp_path, capsys):
    path = tmp_path / "tokens.json"
    assert cli.main(["token", "issue", "--tokens", str(path), "--name", "li.wei",
                     "--role", "supervisor"]) == 0
    token = capsys.readouterr().out.strip()
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    book = TokenBook.load(path)
    assert book.principal(token) == api_tokens.Principal("li.wei", "supervisor")
    assert book.principal(token + "x") is None
    assert json.loads(path.read_text())["tokens"][0]["sha256"] == token_digest(token)

    assert cli.main(["token", "issue", "--tokens", str(path), "--name", "li.wei",
                     "--role", "admin"]) == 1
    assert "used twice" in capsys.readouterr().err
    path.write_text('{"tokens": [{"name": "x", "role": "janitor", "sha256": "00"}]}')
    with pytest.raises(TokenFileError, match="janitor"):
        TokenBook.load(path)
    path.write_text('{"tokens": [{"name": "x\\u0000", "role": "admin", "sha256": "00"}]}')
    with pytest.raises(TokenFileError, match="without NUL"):
        TokenBook.load(path)
