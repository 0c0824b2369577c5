"""The detectors in the host (host/detection.py): the store's facts and checkpoints (migration 5),
alerts raised live by a real ingest server from signed records, work orders entered through the
API, and a restart that resumes from the checkpoint; over each storage backend."""

import argparse
import asyncio
import functools
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from meterseal.fraud_rules.engine import Detector
from meterseal.fraud_rules.params import Params
from meterseal.hil.plain_records import sale_body
from meterseal.host import detection as host_detection
from meterseal.host import record_parser, verify
from meterseal.host import ingest, site_facts_cli
from meterseal.host.api import create_app
from meterseal.host.api_tokens import TokenBook
from meterseal.host.simulated_gateway import SITE, START_WALL_MS, RecordMaker, provision
from meterseal.host.storage import (LATEST_VERSION, STORED, StorageError, migrations,
                                    open_store)
from meterseal.protocol import uplink as wire

from ingest_site import RawGateway, new_signer

GW = "GW-D"
NOZZLE = {"dispenser_address": 80, "nozzle": 1}
PRICE = 7_850_000  # minor units per kL: 7.85 per litre
NEW_TABLES = ("work_orders", "announced_prices", "grade_tanks", "nozzle_max_flows",
              "detection_facts_revision", "detector_checkpoints")


class PriceCheck(Detector):
    """A test's own detector: a sale's unit price against the announced one."""

    name = "test.price"
    kinds = ("fuel.sale",)

    def feed(self, entry, state):
        body = entry.body
        announced = self.facts.announced_price(entry.site_id, body["grade"], entry.wall_time_ms)
        if announced is None or announced == body["unit_price_minor_per_kl"]:
            return []
        state["fired"] = state.get("fired", 0) + 1
        return [self.finding(entry, severity="high", score=0.8,
                             en=f"expected {announced}, observed "
                                f"{body['unit_price_minor_per_kl']} (seq {entry.seq})",
                             zh=f"应为{announced}，实际{body['unit_price_minor_per_kl']}",
                             observed={"announced": announced}, evidence=[entry.record_id])]


class ChangeCheck(Detector):
    """A test's own detector: a parameter change without a work order."""

    name = "test.change"
    kinds = ("event",)

    def feed(self, entry, state):
        if entry.event_type != "parameter_change" or self.facts.work_order(
                entry.site_id, entry.gateway_id, entry.device_ref, "parameter_change",
                entry.wall_time_ms):
            return []
        return [self.finding(entry, severity="high", score=0.9, en="no work order",
                             zh="无工单", observed={}, evidence=[entry.record_id])]


TEST_PARAMS = Params("test-1", {"test.price": {"enabled": True},
                                "test.change": {"enabled": True}}, ["test"])


@pytest.fixture
def key():
    return new_signer()


@pytest.fixture
def registered(store_url, key):
    with open_store(store_url) as store:
        provision(store, GW, key.public_key())
    return store_url


@pytest.fixture
def test_detectors(monkeypatch):
    """The ingest runs the test's own detectors instead of the catalogue."""
    monkeypatch.setattr(ingest, "LiveDetection", functools.partial(
        host_detection.LiveDetection, params=TEST_PARAMS, detectors=[PriceCheck, ChangeCheck]))


def sale(maker, price, volume_ml=20_000):
    return maker.make(kind="fuel.sale", device=NOZZLE, body=sale_body(
        grade=92, volume_ml=volume_ml, unit_price_minor_per_kl=price,
        start_wall_time_ms=maker.wall_time_ms - 40_000, duration_ms=30_000))


def parameter_change(maker):
    return maker.make(device={"dispenser_address": 80}, body={
        "event_type": "parameter_change", "parameter_id": "price_decimals", "old_value": "2",
        "new_value": "3"})


def upload(db, key, batches, **config):
    """Upload each batch over one session to a fresh ingest server, each ACKed."""

    async def scenario():
        server = ingest.IngestServer(open_store(db), ingest.IngestConfig(port=0, **config))
        await server.start()
        gateway = RawGateway(GW, key)
        try:
            assert (await gateway.handshake(server.port))[0] == wire.ACK
            for batch in batches:
                assert (await gateway.upload(batch))[0] == wire.ACK
        finally:
            await gateway.close()
            await server.close()
            server.store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def record_id(store, seq):
    return store.records(GW, seq_from=seq, seq_to=seq).items[0].record_id


def announce(db, price=PRICE):
    with open_store(db) as store:
        store.detection.set_price(SITE, 92, price, 0, entered_by="li.wei")


# --- the store ----------------------------------------------------------------------------------


def test_migration_5_creates_the_detection_tables(store_url):
    with open_store(store_url) as store:
        assert store.schema_version == LATEST_VERSION >= 5
        assert migrations.MIGRATIONS[4].name.startswith("detection:")
        for table in NEW_TABLES:
            store._backend.query(f"SELECT COUNT(*) AS n FROM {table}")
        assert store.detection.facts_revision() == 0


def test_facts_are_validated_audited_and_raise_the_revision(registered):
    with open_store(registered) as store:
        detection = store.detection
        order = detection.add_work_order("WO-1", SITE, ["calibration", "seal_open"], 1000, 2000,
                                         entered_by="li.wei", gateway_id=GW, device_ref="80")
        assert order.work == ("calibration", "seal_open")
        assert detection.work_orders(SITE) == [order]
        assert detection.work_orders(SITE, at_ms=2001) == []
        with pytest.raises(StorageError, match="already recorded"):
            detection.add_work_order("WO-1", SITE, ["calibration"], 0, 1, entered_by="x")
        with pytest.raises(StorageError, match="work must list some of"):
            detection.add_work_order("WO-2", SITE, ["tuning"], 0, 1, entered_by="x")
        with pytest.raises(StorageError, match="is before valid_from_ms"):
            detection.add_work_order("WO-2", SITE, ["calibration"], 5, 1, entered_by="x")
        with pytest.raises(StorageError, match="gateway GW-X is not registered at site"):
            detection.add_work_order("WO-2", SITE, ["calibration"], 0, 1, entered_by="x",
                                     gateway_id="GW-X")
        with pytest.raises(StorageError, match="site NOWHERE is not registered"):
            detection.set_price("NOWHERE", 92, 1, 0, entered_by="x")
        detection.set_price(SITE, 92, 100, 0, entered_by="li.wei")
        detection.set_price(SITE, 92, 120, 0, entered_by="li.wei")  # a correction
        detection.set_price(SITE, 92, 130, 5000, entered_by="li.wei")
        assert [(p.valid_from_ms, p.price_minor_per_kl) for p in detection.prices(SITE)] == [
            (0, 120), (5000, 130)]
        detection.set_grade_tanks(SITE, {92: 1, 95: 2}, entered_by="admin")
        assert [(t.grade, t.tank_number) for t in detection.set_grade_tanks(
            SITE, {95: 3}, entered_by="admin")] == [(95, 3)]
        detection.set_max_flow(SITE, "80/1", 50, entered_by="admin")
        assert detection.facts_revision() == 7
        actions = [entry.action for entry in store.audit_log().items]
        assert actions == ["work_order.add", "price.set", "price.set", "price.set",
                           "grade_tanks.set", "grade_tanks.set", "max_flow.set"]
        assert store.verify_audit_log().intact


def test_store_facts_answer_from_the_store_and_see_another_connections_change(registered):
    with open_store(registered) as store, open_store(registered) as officer:
        facts = host_detection.StoreFacts(store)
        facts.refresh()
        assert facts.site_of(GW) == SITE and facts.site_of("GW-NONE") is None
        assert facts.announced_price(SITE, 92, 10) is None
        officer.detection.set_price(SITE, 92, 100, 0, entered_by="li.wei")
        officer.detection.set_price(SITE, 92, 130, 5000, entered_by="li.wei")
        assert facts.announced_price(SITE, 92, 10) is None  # cached until refreshed
        facts.refresh()
        assert [facts.announced_price(SITE, 92, at) for at in (0, 4999, 5000, 10**12)] == [
            100, 100, 130, 130]
        officer.detection.set_max_flow(SITE, "80/1", 45.5, entered_by="admin")
        officer.detection.set_grade_tanks(SITE, {92: 4}, entered_by="admin")
        officer.detection.add_work_order("WO-1", SITE, ["calibration"], 0, 100,
                                         entered_by="li.wei", device_ref="80")
        facts.refresh()
        assert facts.max_flow_lpm(SITE, "80/1") == 45.5 and facts.tank_of(SITE, 92) == 4
        assert facts.work_order(SITE, GW, "80/2", "calibration", 50).work_order_id == "WO-1"
        assert facts.work_order(SITE, GW, "81/1", "calibration", 50) is None
        assert facts.work_order(SITE, GW, "80/2", "calibration", 101) is None



def test_store_facts_read_device_models_from_the_registry_and_again_after_a_minute(registered):
    now_s = [0.0]
    with open_store(registered) as store, open_store(registered) as officer:
        facts = host_detection.StoreFacts(store, clock_s=lambda: now_s[0])
        assert facts.device_model(GW, "80") is None  # nothing registered yet
        officer.registry.add_device(GW, "80", "dispenser", model="TQ-2", serial="D-80",
                                    type_approval_cert="CPA-1", expected_software_id="DSP-1.0")
        now_s[0] = host_detection.DEVICES_REREAD_S - 1
        assert facts.device_model(GW, "80") is None  # the gateway's devices, as read at 0 s
        now_s[0] = host_detection.DEVICES_REREAD_S
        assert facts.device_model(GW, "80") == "TQ-2"
        assert facts.device_model(GW, "81") is None and facts.device_model("GW-NONE", "80") is None


def test_the_state_sites_share_is_saved_in_its_own_row_and_restored(registered):
    shared = {"models": {"TQ-2": {SITE: 37.5, "SITE-2": 36.9}}}
    with open_store(registered) as store:
        live = host_detection.LiveDetection(store)
        live.start()
        live.engine.fleet["dispenser.pulse_scaling"].update(shared)
        live.close()
        saved = store.detection.checkpoints()
        assert set(saved) == {host_detection.FLEET_ROW}  # no site was fed
        restarted = host_detection.LiveDetection(store)
        restarted.start()
        assert restarted.engine.fleet["dispenser.pulse_scaling"] == shared
        # A detector's fleet state is the engine's, so what it publishes is saved next time.
        pulse = next(d for d in restarted.engine.detectors if d.name == "dispenser.pulse_scaling")
        assert pulse.fleet is restarted.engine.fleet["dispenser.pulse_scaling"]



def test_records_wait_for_a_flush_or_a_full_chunk_and_close_feeds_the_rest(registered, key,
                                                                              monkeypatch):
    monkeypatch.setattr(host_detection, "CHUNK_RECORDS", 3)
    maker = RecordMaker(GW, key)

    def batch(count):
        envelopes = [sale(maker, PRICE + 1) for _ in range(count)]
        plain = [record_parser.parse(verify.parse_envelope(e).payload) for e in envelopes]
        items = [(e, SimpleNamespace(outcome=verify.VERIFIED, record=r))
                 for e, r in zip(envelopes, plain)]
        results = [SimpleNamespace(outcome=STORED, record_id=1000 + r["seq"]) for r in plain]
        return items, results

    announce(registered)
    with open_store(registered) as store:
        live = host_detection.LiveDetection(store, TEST_PARAMS, [PriceCheck])
        live.start()
        live.after_batch(*batch(2))
        assert live.engine.fed == {} and live.records_evaluated == 0  # taken, not yet fed
        live.after_batch(*batch(1))  # three wait: a full chunk, fed at once
        assert live.engine.fed == {GW: 2} and live.records_evaluated == 3
        live.after_batch(*batch(1))
        live.flush()  # what the ingest does once no batch waits for its worker
        assert live.engine.fed == {GW: 3}
        live.after_batch(*batch(1))
        live.close()
        assert live.engine.sites[SITE]["test.price"] == {"fired": 5}
        assert store.detection.checkpoints()[SITE]["fed"] == {GW: 4}


# --- live, through the real ingest --------------------------------------------------------------


def test_a_price_error_raises_an_alert_live_citing_its_record(registered, key, test_detectors):
    announce(registered)
    maker = RecordMaker(GW, key)
    upload(registered, key, [[sale(maker, PRICE), sale(maker, PRICE + 10_000),
                              sale(maker, PRICE)]])
    with open_store(registered) as store:
        (alert,) = store.alerts.ranked(GW)
        assert (alert.rule, alert.device_ref, alert.severity, alert.score) == (
            "test.price", "80/1", "high", 0.8)
        assert alert.explanation_en == f"expected {PRICE}, observed {PRICE + 10_000} (seq 1)"
        assert alert.evidence_record_ids == (record_id(store, 1),)
        assert alert.parameters["params_version"] == "test-1"


def test_an_honest_batch_and_detection_switched_off_raise_nothing(registered, key,
                                                                    test_detectors):
    announce(registered)
    maker = RecordMaker(GW, key)
    upload(registered, key, [[sale(maker, PRICE)]])
    upload(registered, key, [[sale(maker, PRICE + 1)]], detection=False)
    with open_store(registered) as store:
        assert store.alerts.ranked(GW) == []
        assert store.detection.checkpoints()[SITE]["fed"] == {GW: 0}


def test_a_work_order_entered_through_the_api_suppresses_the_change_alert(registered, key,
                                                                          test_detectors):
    tokens = TokenBook()
    officer = {"Authorization": f"Bearer {tokens.issue('li.wei', 'officer')}"}
    maker_of = {"Authorization": f"Bearer {tokens.issue('acme', 'manufacturer')}"}
    with open_store(registered) as api_store:
        client = TestClient(create_app(api_store, tokens))
        order = {"work_order_id": "WO-7", "work": ["parameter_change"], "gateway_id": GW,
                 "device_ref": "80", "valid_from_ms": START_WALL_MS,
                 "valid_to_ms": START_WALL_MS + 60_000, "technician": "wang.fang"}
        assert client.post(f"/sites/{SITE}/work-orders", json=order,
                           headers=maker_of).status_code == 403
        response = client.post(f"/sites/{SITE}/work-orders", json=order, headers=officer)
        assert response.status_code == 201, response.text
        assert response.json()["entered_by"] == "li.wei"
        assert client.post(f"/sites/{SITE}/work-orders", json=order,
                           headers=officer).status_code == 409
        assert [o["work_order_id"] for o in client.get(
            f"/sites/{SITE}/work-orders", headers=officer).json()] == ["WO-7"]
        assert client.get("/sites/NOWHERE/work-orders", headers=officer).status_code == 404
        maker = RecordMaker(GW, key)
        covered = parameter_change(maker)            # within the order's window
        maker.wall_time_ms += 120_000
        maker.opsec += 120  # the clock moved on with it: no clock anomaly
        uncovered = parameter_change(maker)          # after it
        upload(registered, key, [[covered], [uncovered]])
        alerts = client.get("/alerts", headers=officer).json()
    assert [(a["rule"], a["device_ref"]) for a in alerts] == [("test.change", "80")]
    with open_store(registered) as store:
        assert alerts[0]["evidence_record_ids"] == [record_id(store, 1)]


def test_the_api_sets_prices_grade_tanks_and_max_flows_by_role(registered):
    tokens = TokenBook()
    officer = {"Authorization": f"Bearer {tokens.issue('li.wei', 'officer')}"}
    admin = {"Authorization": f"Bearer {tokens.issue('root', 'admin')}"}
    with open_store(registered) as store:
        client = TestClient(create_app(store, tokens))
        price = {"grade": 92, "price_minor_per_kl": PRICE, "valid_from_ms": 0}
        assert client.post(f"/sites/{SITE}/prices", json=price, headers=officer).status_code == 201
        assert client.post(f"/sites/{SITE}/prices", json=dict(price, grade=100),
                           headers=officer).status_code == 422
        assert client.get(f"/sites/{SITE}/prices?grade=92", headers=officer).json()[0][
            "price_minor_per_kl"] == PRICE
        tanks = {"tanks": {"92": 1, "95": 2}}
        assert client.put(f"/sites/{SITE}/grade-tanks", json=tanks,
                          headers=officer).status_code == 403
        assert client.put(f"/sites/{SITE}/grade-tanks", json=tanks, headers=admin).json() == [
            {"site_id": SITE, "grade": 92, "tank_number": 1},
            {"site_id": SITE, "grade": 95, "tank_number": 2}]
        flow = {"device_ref": "80/1", "max_flow_lpm": 50}
        assert client.put(f"/sites/{SITE}/max-flows", json=flow, headers=admin).status_code == 200
        assert client.get(f"/sites/{SITE}/max-flows", headers=officer).json() == [
            {"site_id": SITE, "device_ref": "80/1", "max_flow_lpm": 50.0}]


def test_a_restart_resumes_from_the_checkpoint_and_catches_up_without_repeats(
        registered, key, test_detectors):
    announce(registered)
    maker = RecordMaker(GW, key)
    upload(registered, key, [[sale(maker, PRICE + 1)], [sale(maker, PRICE)]])
    with open_store(registered) as store:
        saved = store.detection.checkpoints()[SITE]
        assert saved["fed"] == {GW: 1}
        assert saved["sites"][SITE]["test.price"] == {"fired": 1}
    # Stored while detection was off: the next start catches up on it.
    upload(registered, key, [[sale(maker, PRICE + 2)]], detection=False)
    upload(registered, key, [[sale(maker, PRICE)]])
    with open_store(registered) as store:
        (alert,) = store.alerts.ranked(GW)
        # Seq 0 once (not replayed), seq 2 by the catch-up: two sightings in all.
        assert alert.occurrences == 2
        assert alert.evidence_record_ids == (record_id(store, 0), record_id(store, 2))
        saved = store.detection.checkpoints()[SITE]
        assert saved["fed"] == {GW: 3}
        assert saved["sites"][SITE]["test.price"] == {"fired": 2}


def test_each_site_is_saved_when_it_raised_an_alert_or_its_own_records_are_due(
        registered, key, monkeypatch):
    """Two sites: an alert saves its own site only, and a site is saved once it was fed
    ``checkpoint_every_records`` records or ``checkpoint_every_s`` after its first unsaved one,
    whatever the other sites do; close saves the rest."""
    now_s = [0.0]
    monkeypatch.setattr(ingest, "LiveDetection", functools.partial(
        host_detection.LiveDetection, params=TEST_PARAMS, detectors=[PriceCheck],
        checkpoint_every_records=3, checkpoint_every_s=60, clock_s=lambda: now_s[0]))
    other_key = new_signer()
    with open_store(registered) as store:
        store.registry.add_site("SITE-2", "second site")
        store.registry.add_gateway("GW-E", "SN-GW-E", "SITE-2")
        store.registry.add_key("GW-E", other_key.public_key(), 0)
        store.detection.set_price(SITE, 92, PRICE, 0, entered_by="li.wei")
        store.detection.set_price("SITE-2", 92, PRICE, 0, entered_by="li.wei")
    maker, other = RecordMaker(GW, key), RecordMaker("GW-E", other_key)

    def saved_fed():
        with open_store(registered) as reader:
            return {site: saved["fed"] for site, saved in reader.detection.checkpoints().items()}

    async def scenario():
        server = ingest.IngestServer(open_store(registered), ingest.IngestConfig(port=0))
        await server.start()
        gateways = [RawGateway(GW, key), RawGateway("GW-E", other_key)]
        try:
            for gateway in gateways:
                assert (await gateway.handshake(server.port))[0] == wire.ACK
            first, second = gateways
            assert (await second.upload([sale(other, PRICE)]))[0] == wire.ACK
            assert (await first.upload([sale(maker, PRICE + 1)]))[0] == wire.ACK
            assert saved_fed() == {SITE: {GW: 0}}  # the alert's site only
            assert (await first.upload([sale(maker, PRICE), sale(maker, PRICE)]))[0] == wire.ACK
            assert saved_fed() == {SITE: {GW: 0}}  # two unsaved records of SITE
            assert (await second.upload([sale(other, PRICE), sale(other, PRICE)]))[0] == \
                wire.ACK
            assert saved_fed() == {SITE: {GW: 0}, "SITE-2": {"GW-E": 2}}  # its third record
            now_s[0] = 60.0  # SITE's first unsaved record is a minute old
            assert (await second.upload([sale(other, PRICE)]))[0] == wire.ACK
            assert saved_fed() == {SITE: {GW: 2}, "SITE-2": {"GW-E": 2}}
        finally:
            for gateway in gateways:
                await gateway.close()
            await server.close()
            server.store.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert saved_fed() == {SITE: {GW: 2}, "SITE-2": {"GW-E": 3}}


def test_the_real_catalogue_raises_price_alerts_live(registered, key):
    """The packaged detectors and parameters, unchanged: a sale whose amount is not volume x
    price, and one whose unit price is not the announced one."""
    announce(registered)
    maker = RecordMaker(GW, key)
    honest = sale(maker, PRICE)
    body = sale_body(grade=92, volume_ml=20_000, unit_price_minor_per_kl=PRICE,
                     start_wall_time_ms=maker.wall_time_ms - 40_000, duration_ms=30_000,
                     amount=200_000)  # 20 L at 7.85 is 157,000
    wrong_amount = maker.make(kind="fuel.sale", device=NOZZLE, body=body)
    wrong_price = sale(maker, PRICE + 50_000)
    upload(registered, key, [[honest, wrong_amount], [wrong_price]])
    with open_store(registered) as store:
        alerts = {a.rule: a for a in store.alerts.ranked(GW) if a.rule.startswith("dispenser.")}
        assert sorted(alerts) == ["dispenser.price.amount", "dispenser.price.announced"]
        amount = alerts["dispenser.price.amount"]
        assert (amount.device_ref, amount.severity) == ("80/1", "high")
        assert amount.evidence_record_ids == (record_id(store, 1),)
        assert "should cost 157000, the dispenser charged 200000" in amount.explanation_en
        announced = alerts["dispenser.price.announced"]
        assert announced.evidence_record_ids == (record_id(store, 2),)
        assert f"the site announced {PRICE} for grade 92" in announced.explanation_en


def test_the_real_catalogue_accepts_a_change_under_a_work_order_only(registered, key):
    with open_store(registered) as store:
        store.detection.add_work_order("WO-1", SITE, ["parameter_change"], START_WALL_MS,
                                       START_WALL_MS + 60_000, entered_by="li.wei",
                                       device_ref="80")
    maker = RecordMaker(GW, key)
    covered = parameter_change(maker)
    maker.wall_time_ms += 120_000
    maker.opsec += 120
    uncovered = parameter_change(maker)
    upload(registered, key, [[covered, uncovered]])
    with open_store(registered) as store:
        (alert,) = [a for a in store.alerts.ranked(GW) if a.rule.startswith("config.")]
        assert (alert.rule, alert.device_ref) == ("config.unauthorised_change", "80")
        assert alert.evidence_record_ids == (record_id(store, 1),)


def test_the_workorder_and_price_commands(registered, capsys):
    parser = argparse.ArgumentParser()
    site_facts_cli.add_parser(parser.add_subparsers())

    def command(*argv):
        args = parser.parse_args([*argv, "--db", registered, "--site", SITE])
        return args.run(args)

    assert command("workorder", "add", "--id", "WO-9", "--work", "calibration,seal_open",
                   "--from", "2026-01-01T08:00+08:00", "--to", "2026-01-01T12:00+08:00",
                   "--device", "80", "--entered-by", "li.wei") == 0
    assert command("price", "set", "--grade", "92", "--price", str(PRICE), "--from",
                   "2026-01-01", "--entered-by", "li.wei") == 0
    capsys.readouterr()
    assert command("workorder", "list") == 0
    assert capsys.readouterr().out == ("WO-9\t*\t80\tcalibration,seal_open\t"
                                       "2026-01-01 00:00:00 UTC\t2026-01-01 04:00:00 UTC\t\t\n")
    assert command("price", "list") == 0
    assert capsys.readouterr().out == f"92\t{PRICE}\t2026-01-01 00:00:00 UTC\tli.wei\n"
    with pytest.raises(StorageError, match="work must list some of"):
        command("workorder", "add", "--id", "WO-10", "--work", "repaint", "--from",
                "2026-01-01", "--to", "2026-01-02")
