"""The rule engine's own behaviour: routing, seq order, gaps, checkpoints, parameters and facts.
The detectors have their own test files."""

import json

import pytest

from meterseal.fraud_rules import (Engine, Entry, ParamsError, StaticFacts, WorkOrder, device_ref,
                                   load_params)
from meterseal.fraud_rules.engine import Detector
from meterseal.hil.plain_records import Chain, event_body, nozzle, status_body
from meterseal.host import detection as host_detection


class CountingDetector(Detector):
    """Fires on every third status record of a site; remembers what it saw."""

    name = "test.counting"
    kinds = ("status",)

    def __init__(self, params, facts):
        self.params = {"every": 3}
        self.params_version = params.version
        self.facts = facts

    def feed(self, entry, state):
        state["seen"] = state.get("seen", 0) + 1
        state.setdefault("gaps", []).append(entry.gap_before)
        if state["seen"] % self.params["every"]:
            return []
        return [self.finding(entry, severity="low", score=0.2, en="third", zh="第三",
                             observed={"seen": state["seen"]}, evidence=[entry.record_id])]


def _engine(checkpoint=None, facts=None):
    return Engine(load_params(), facts or StaticFacts({"GW-1": "SITE-A", "GW-2": "SITE-A"}),
                  checkpoint=checkpoint, detectors=[CountingDetector])


def test_routes_by_kind_and_keeps_state_per_site():
    engine = _engine()
    chain = Chain("GW-1")
    findings = []
    for _ in range(3):
        findings += engine.feed(*chain.add("event", event_body("self_test", passed=True)))
    assert findings == []  # events are not this detector's kind
    for _ in range(3):
        record_id, record = chain.add("status", status_body())
        findings += engine.feed(record_id, record)
    (finding,) = findings
    assert (finding.rule, finding.site_id, finding.gateway_id, finding.device_ref) == (
        "test.counting", "SITE-A", "GW-1", None)
    assert finding.evidence_record_ids == (record_id,)
    assert finding.parameters["params_version"] == load_params().version
    assert engine.sites["SITE-A"]["test.counting"]["seen"] == 3


def test_skips_what_it_already_passed_and_flags_gaps():
    engine = _engine()
    chain = Chain("GW-1")
    first = chain.add("status", status_body())
    engine.feed(*first)
    assert engine.feed(*first) == []  # a replay
    engine.feed(*chain.add("status", status_body(), skip=2))  # seq 1 and 2 lost
    assert engine.sites["SITE-A"]["test.counting"]["gaps"] == [False, True]
    assert engine.fed == {"GW-1": 3}


def test_checkpoint_round_trip_resumes_exactly():
    chain_a, chain_b = Chain("GW-1"), Chain("GW-2")
    stream = [chain.add("status", status_body()) for _ in range(4) for chain in (chain_a, chain_b)]
    whole = _engine()
    expected = [f for item in stream for f in whole.feed(*item)]
    first = _engine()
    got = [f for item in stream[:5] for f in first.feed(*item)]
    resumed = _engine(json.loads(json.dumps(first.checkpoint())))
    got += [f for item in stream for f in resumed.feed(*item)]  # old ones are skipped
    assert got == expected and len(expected) == 2
    assert resumed.checkpoint() == json.loads(json.dumps(whole.checkpoint()))


def test_site_checkpoints_hold_each_sites_state_and_its_gateways_seqs_only():
    facts = StaticFacts({"GW-1": "SITE-A", "GW-2": "SITE-A", "GW-3": "SITE-B"})
    engine = _engine(facts=facts)
    chains = [Chain(gateway_id) for gateway_id in ("GW-1", "GW-2", "GW-3")]
    for chain in chains * 2:
        engine.feed(*chain.add("status", status_body()))
    whole = engine.checkpoint()
    by_site = engine.site_checkpoints({"SITE-B", "SITE-C"})
    of_sites = {key: value for key, value in whole.items() if key != "fleet"}
    assert by_site["SITE-B"] == {**of_sites, "fed": {"GW-3": 1},
                                 "sites": {"SITE-B": whole["sites"]["SITE-B"]}}
    assert by_site["SITE-C"]["fed"] == {} and by_site["SITE-C"]["sites"] == {"SITE-C": {}}
    # One per site and the sites' shared state, joined again as the host does on start: the
    # whole checkpoint back.
    saved = json.loads(json.dumps({**engine.site_checkpoints({"SITE-A", "SITE-B"}),
                                   host_detection.FLEET_ROW: engine.fleet_checkpoint()}))
    joined = host_detection.join_checkpoints(saved)
    assert _engine(joined, facts).checkpoint() == json.loads(json.dumps(whole))


def test_refuses_a_checkpoint_of_another_format():
    with pytest.raises(ValueError, match="format"):
        _engine({"format": 99})


def test_unknown_gateway_gets_a_site_of_its_own():
    engine = _engine(facts=StaticFacts())
    chain = Chain("GW-9")
    for _ in range(3):
        findings = engine.feed(*chain.add("status", status_body()))
    assert findings[0].site_id == "gateway:GW-9"


def test_device_refs():
    assert device_ref(nozzle(80, 2)) == "80/2"
    assert device_ref({"dispenser_address": 81}) == "81"
    assert device_ref({"scale_id": "SC-7"}) == "SC-7"
    assert device_ref({"tank_number": 3}) == "tank/3"
    assert device_ref(None) is None
    entry = Entry(5, "S", {"kind": "event", "body": {"event_type": "seal_open"},
                           "device": nozzle(80, 1)})
    assert (entry.event_type, entry.device_ref) == ("seal_open", "80/1")


def test_work_order_covers_its_site_devices_work_and_window():
    order = WorkOrder("WO-1", "SITE-A", "GW-1", "80", ("calibration",), 1000, 2000)
    assert order.covers("SITE-A", "GW-1", "80/1", "calibration", 1500)
    assert order.covers("SITE-A", "GW-1", "80", "calibration", 2000)
    assert not order.covers("SITE-A", "GW-1", "801/1", "calibration", 1500)  # not a prefix match
    assert not order.covers("SITE-A", "GW-1", "81/1", "calibration", 1500)
    assert not order.covers("SITE-A", "GW-1", "80/1", "seal_open", 1500)
    assert not order.covers("SITE-A", "GW-1", "80/1", "calibration", 2001)
    assert not order.covers("SITE-B", "GW-1", "80/1", "calibration", 1500)
    assert not order.covers("SITE-A", "GW-2", "80/1", "calibration", 1500)
    anywhere = WorkOrder("WO-2", "SITE-A", None, None, ("seal_open",), 0, 10)
    assert StaticFacts(work_orders=[order, anywhere]).work_order(
        "SITE-A", "GW-7", None, "seal_open", 5) is anywhere


def test_announced_price_is_the_latest_in_force():
    facts = StaticFacts(prices=[("S", 92, 789000, 0), ("S", 92, 799000, 5000),
                                ("S", 95, 832000, 0)])
    assert facts.announced_price("S", 92, 4999) == 789000
    assert facts.announced_price("S", 92, 5000) == 799000
    assert facts.announced_price("S", 98, 5000) is None


def test_params_file_overrides_and_its_errors(tmp_path):
    defaults = load_params()
    section = next(iter(defaults.sections()), None)
    if section is None:
        pytest.skip("no detector sections yet")  # only while the catalogue is empty
    key, value = next(iter(defaults.section(section).items()))
    good = tmp_path / "site.toml"
    new_value = (not value) if isinstance(value, bool) else value
    good.write_text(f'schema = 1\nversion = "site-7"\n["{section}"]\n{key} = '
                    f'{json.dumps(new_value)}\n')
    params = load_params(good)
    assert params.version == "site-7" and params.section(section)[key] == new_value
    assert params.sources[-1] == str(good)
    cases = {
        'schema = 1\n["nope"]\nx = 1\n': "'version' must be",
        'schema = 2\nversion = "v"\n': "'schema' must be 1",
        'schema = 1\nversion = "v"\n["nope"]\nx = 1\n': "unknown detector",
        f'schema = 1\nversion = "v"\n["{section}"]\nnot_a_key = 1\n': "has no parameter",
        f'schema = 1\nversion = "v"\n["{section}"]\n{key} = "text"\n': "must be a",
        'schema = 1\nversion = \n': "not valid TOML",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ParamsError, match=message):
            load_params(bad)
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "missing.toml")


def test_every_detector_section_documents_enabled_and_matches_a_detector():
    from meterseal.fraud_rules.detectors import DETECTORS

    params = load_params()
    names = {cls.name for cls in DETECTORS}
    assert len(names) == len(DETECTORS)
    assert set(params.sections()) == names
    for name in names:
        assert params.section(name).get("enabled") is True, name
