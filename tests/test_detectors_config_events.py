"""Configuration events without work orders, silent changes, and heartbeat gaps."""

import json

from meterseal.fraud_rules import Engine, StaticFacts, WorkOrder, load_params
from meterseal.fraud_rules.config_events import HeartbeatGap, UnauthorisedChange
from meterseal.hil.plain_records import (Chain, event_body, nozzle, sale_body, scale,
                                         status_body)

T0 = 1767225600000
MIN = 60000


def _engine(detector, facts=None, checkpoint=None):
    return Engine(load_params(), facts or StaticFacts({"GW-1": "SITE-A"}),
                  checkpoint=checkpoint, detectors=[detector])


def _sale(chain, at_ms, volume_ml=20000, noz=1, **kw):
    return chain.add("fuel.sale", sale_body(grade=92, volume_ml=volume_ml,
                                            unit_price_minor_per_kl=789000,
                                            start_wall_time_ms=at_ms, duration_ms=60000, **kw),
                     device=nozzle(80, noz), wall_time_ms=at_ms + 60000)


def _run(engine, items):
    return [f for item in items for f in engine.feed(*item)]


def _calibration(chain, at_ms, new_k=101000):
    return chain.add("event", event_body("calibration", old_k_factor_pulses_per_kl=100000,
                                         new_k_factor_pulses_per_kl=new_k),
                     device=nozzle(80, 1), wall_time_ms=at_ms)


# --- unauthorised change ---------------------------------------------------------------------

def test_calibration_without_work_order_is_high_with_k_factor():
    chain = Chain("GW-1")
    rid, rec = _calibration(chain, T0)
    (finding,) = _engine(UnauthorisedChange).feed(rid, rec)
    assert (finding.rule, finding.severity, finding.device_ref) == (
        "config.unauthorised_change", "high", "80/1")
    assert finding.evidence_record_ids == (rid,)
    assert "100000 -> 101000" in finding.explanation_en and "+1.00 %" in finding.explanation_en
    assert "100000 -> 101000" in finding.explanation_zh and "标定" in finding.explanation_zh
    assert "dispenser" in finding.explanation_en and "加油机" in finding.explanation_zh


def test_work_order_covers_and_boundary_of_its_window():
    order = WorkOrder("WO-1", "SITE-A", "GW-1", "80", ("calibration",), T0 - MIN, T0)
    facts = StaticFacts({"GW-1": "SITE-A"}, work_orders=[order])
    chain = Chain("GW-1")
    assert _engine(UnauthorisedChange, facts).feed(*_calibration(chain, T0, 100200)) == []
    (late,) = _engine(UnauthorisedChange, facts).feed(*_calibration(chain, T0 + 1, 100200))
    assert late.severity == "high"


def _authorised_calibration(new_k):
    order = WorkOrder("WO-7", "SITE-A", "GW-1", "80", ("calibration",), T0 - MIN, T0 + MIN)
    engine = _engine(UnauthorisedChange, StaticFacts({"GW-1": "SITE-A"}, work_orders=[order]))
    return engine.feed(*_calibration(Chain("GW-1"), T0, new_k))


def test_an_authorised_calibration_beyond_the_accuracy_class_is_reported():
    # K 100000 -> 103000: the nozzle shows 2.91 % less than before, under a valid work order.
    (finding,) = _authorised_calibration(103000)
    assert (finding.rule, finding.severity, finding.device_ref) == (
        "config.large_calibration", "medium", "80/1")
    for text in (finding.explanation_en, finding.explanation_zh):
        assert "WO-7" in text and "100000 -> 103000" in text and "-2.91 %" in text
        assert "±0.50 %" in text
    assert "nozzle 80/1" in finding.explanation_en and "油枪 80/1" in finding.explanation_zh


def test_an_authorised_calibration_within_the_accuracy_class_is_quiet_and_boundary():
    # Boundary at 0.5 %: 100000 / 99503 - 1 = +0.4995 %, 100000 / 99502 - 1 = +0.5005 %;
    # likewise below (100502: -0.4995 %, 100503: -0.5005 %).
    assert _authorised_calibration(100300) == []
    assert _authorised_calibration(99503) == []
    assert [f.rule for f in _authorised_calibration(99502)] == ["config.large_calibration"]
    assert _authorised_calibration(100502) == []
    assert [f.rule for f in _authorised_calibration(100503)] == ["config.large_calibration"]


def test_scale_unlock_and_first_identity_sighting():
    chain = Chain("GW-1")
    engine = _engine(UnauthorisedChange)
    (seal,) = engine.feed(*chain.add("event", event_body("seal_open"), device=scale("SC-7")))
    assert seal.severity == "medium" and "scale SC-7" in seal.explanation_en
    assert "秤 SC-7" in seal.explanation_zh
    first = event_body("device_identity_changed", new_identity="SN-1")
    assert engine.feed(*chain.add("event", first, device={"dispenser_address": 80})) == []
    swap = event_body("device_identity_changed", old_identity="SN-1", new_identity="SN-2")
    (swapped,) = engine.feed(*chain.add("event", swap, device={"dispenser_address": 80}))
    assert swapped.severity == "high" and "SN-1 -> SN-2" in swapped.explanation_en
    assert engine.feed(*chain.add("event", event_body("seal_close"))) == []


def test_silent_checksum_change_between_sales():
    chain = Chain("GW-1")
    engine = _engine(UnauthorisedChange)
    a = _sale(chain, T0, dispenser_param_checksum=b"\x01\x02")
    assert engine.feed(*a) == []
    assert engine.feed(*_sale(chain, T0 + MIN, noz=2, dispenser_param_checksum=b"\x01\x02")) == []
    b = _sale(chain, T0 + 2 * MIN, dispenser_param_checksum=b"\x01\x03")
    (finding,) = engine.feed(*b)
    assert (finding.rule, finding.severity, finding.device_ref) == (
        "config.silent_change", "high", "80")
    assert finding.evidence_record_ids[-1] == b[0]
    assert "0102" in finding.explanation_en and "0103" in finding.explanation_zh
    assert "seq 1" in finding.explanation_en and "seq 2" in finding.explanation_en


def test_announced_change_is_not_silent():
    chain = Chain("GW-1")
    engine = _engine(UnauthorisedChange)
    engine.feed(*_sale(chain, T0, dispenser_identity="SN-1"))
    swap = event_body("device_identity_changed", old_identity="SN-1", new_identity="SN-2")
    order = WorkOrder("WO-1", "SITE-A", None, "80", ("device_identity_changed",), 0, 2 * T0)
    engine = _engine(UnauthorisedChange, StaticFacts({"GW-1": "SITE-A"}, work_orders=[order]))
    chain = Chain("GW-1")
    items = [_sale(chain, T0, dispenser_identity="SN-1"),
             chain.add("event", swap, device={"dispenser_address": 80}),
             _sale(chain, T0 + MIN, dispenser_identity="SN-2")]
    assert _run(engine, items) == []


# --- heartbeat -------------------------------------------------------------------------------

def _heartbeats(chain, start_ms, count, total, every_ms=300000):
    return [chain.add("status", status_body([(80, 1, total)]), wall_time_ms=start_ms + i * every_ms)
            for i in range(count)]


def test_unplugged_while_totalizers_moved():
    chain = Chain("GW-1")
    items = _heartbeats(chain, T0, 3, 1000000)
    after = T0 + 600000 + 3600000  # an hour's silence
    items.append(chain.add("event", event_body("boot", reset_cause="power_on"),
                           wall_time_ms=after))
    items.append(_sale(chain, after + MIN, totalizer_start_ml=1045000))
    findings = _run(_engine(HeartbeatGap), items)
    (finding,) = findings
    assert (finding.rule, finding.severity, finding.device_ref) == (
        "gateway.heartbeat", "high", "80/1")
    assert "45.00 L" in finding.explanation_en and "45.00 L" in finding.explanation_zh
    assert "60 min" in finding.explanation_en
    assert finding.evidence_record_ids == (items[2][0], items[4][0])


def test_short_silence_or_no_movement_is_quiet_and_boundary():
    chain = Chain("GW-1")
    # 900 s exactly is not a silence: the totalizer moved 45 L, but the gap is normal.
    items = _heartbeats(chain, T0, 2, 1000000, every_ms=900000)
    items.append(_sale(chain, T0 + 1800000 - MIN, totalizer_start_ml=1045000))
    assert _run(_engine(HeartbeatGap), items) == []
    # 1 ms more is a silence; a 10 mL move across it is within tolerance, 11 mL is not.
    for moved, fired in ((10, 0), (11, 1)):
        chain = Chain("GW-1")
        items = _heartbeats(chain, T0, 2, 1000000, every_ms=900000)
        items.append(_sale(chain, T0 + 1800001 - MIN, totalizer_start_ml=1000000 + moved))
        items.append(_sale(chain, T0 + 1900000, totalizer_start_ml=1020000 + moved))
        assert len(_run(_engine(HeartbeatGap), items)) == fired


def test_long_silence_is_low_unless_after_power_fail():
    chain = Chain("GW-1")
    items = _heartbeats(chain, T0, 1, 0) + _heartbeats(chain, T0 + 7 * 3600000, 1, 0)
    (finding,) = _run(_engine(HeartbeatGap), items)
    assert (finding.rule, finding.severity) == ("gateway.heartbeat.long_silence", "low")
    assert "7.0 h" in finding.explanation_en and "7.0 小时" in finding.explanation_zh
    chain = Chain("GW-1")
    items = [chain.add("event", event_body("power_fail"), wall_time_ms=T0),
             chain.add("event", event_body("boot", reset_cause="power_on"),
                       wall_time_ms=T0 + 7 * 3600000)]
    assert _run(_engine(HeartbeatGap), items) == []


def test_checkpoint_round_trip():
    chain = Chain("GW-1")
    stream = _heartbeats(chain, T0, 3, 1000000)
    stream.append(_calibration(chain, T0 + 4 * 3600000))
    stream.append(_sale(chain, T0 + 11 * 3600000, totalizer_start_ml=1045000,
                        dispenser_param_checksum=b"\x01"))
    stream.append(_sale(chain, T0 + 12 * 3600000, totalizer_start_ml=1065000,
                        dispenser_param_checksum=b"\x02"))
    detectors = [UnauthorisedChange, HeartbeatGap]
    facts = StaticFacts({"GW-1": "SITE-A"})
    whole = Engine(load_params(), facts, detectors=detectors)
    expected = _run(whole, stream)
    first = Engine(load_params(), facts, detectors=detectors)
    got = _run(first, stream[:4])
    resumed = Engine(load_params(), facts, checkpoint=json.loads(json.dumps(first.checkpoint())),
                     detectors=detectors)
    got += _run(resumed, stream[4:])
    assert got == expected
    assert {f.rule for f in expected} == {"config.unauthorised_change", "config.silent_change",
                                          "gateway.heartbeat", "gateway.heartbeat.long_silence"}


def test_no_silence_is_measured_from_an_unsynchronised_wall_time():
    def run(time_status):
        engine = Engine(load_params(), StaticFacts(), detectors=[HeartbeatGap])
        chain = Chain("GW-U")
        rid, boot = chain.add("event", event_body("boot", reset_cause="power_on"))
        boot["time_status"] = time_status  # the gateway's RTC before the host set it
        engine.feed(rid, boot)
        later = chain.start_wall_ms + 7 * 3600 * 1000
        return engine.feed(*chain.add("status", status_body(), wall_time_ms=later))

    assert run("U") == []
    assert [f.rule for f in run("S")] == ["gateway.heartbeat.long_silence"]
