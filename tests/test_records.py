"""The record schema (meterseal.protocol.records) against its specification, docs/record-format.md.

Most cases are generated from the schema tables themselves, so a field added to a table is
covered (required, boundaries, wrong types, round trip, documentation) without new test code.
"""

import copy
import hashlib
import re
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterseal.protocol import cbor, records
from meterseal.protocol.errors import CBORError, RecordError

DOC = Path(__file__).resolve().parents[1] / "docs" / "record-format.md"

NOZZLE = {"dispenser_address": 0x50, "nozzle": 1}
SCALE = {"scale_id": "SN-2231-0007"}
TANK = {"tank_number": 2}

HEADER = {
    "version": 1,
    "gateway_id": "GW-3301-0042",
    "boot_epoch": 7,
    "seq": 1234,
    "prev": hashlib.sha256(b"record 1233").digest(),
    "opsec": 86400,
    "wall_time_ms": 1767225600000,
    "time_status": "S",
    "clock_set_count": 2,
    "event_count": 5,
    "software_name": "meterseal-gw",
    "software_version": "0.1.0",
    "software_digest": hashlib.sha256(b"legally relevant modules").digest(),
}

# kind, or kind:variant -> (device reference or None, body). "fuel.sale" is the DART example sale
# of docs/record-format.md.
KIND_EXAMPLES = {
    "fuel.sale": (NOZZLE, {
        "grade": 92,
        "volume_ml": 310,
        "unit_price_minor_per_kl": 164500,
        "amount_minor": 51,
        "start_wall_time_ms": 1767225590000,
        "end_wall_time_ms": 1767225599500,
        "duration_ms": 9500,
        "totalizer_start_ml": 123456780,
        "totalizer_end_ml": 123457090,
        "flow_interval_ms": 1000,
        "flow_profile_ml": [0, 20, 40, 40, 40, 40, 40, 40, 40, 10],
        "end_status": "completed",
    }),
    "fuel.sale:preset": (NOZZLE, {
        "grade": 95,
        "volume_ml": 30395,
        "unit_price_minor_per_kl": 822000,
        "amount_minor": 24985,
        "preset_volume_ml": 40000,
        "preset_amount_minor": 25000,
        "start_wall_time_ms": 1767225590000,
        "end_wall_time_ms": 1767225650000,
        "duration_ms": 60000,
        "totalizer_start_ml": 123457090,
        "totalizer_end_ml": 123487485,
        "amount_totalizer_start_minor": 99000000,
        "amount_totalizer_end_minor": 99024985,
        "flow_interval_ms": 2000,
        "flow_profile_ml": [500] * 30,
        "end_status": "preset_reached",
        "dispenser_param_checksum": bytes.fromhex("9e9a"),
        "dispenser_software_id": "DFS-CPU 4.12 CRC 3A7F",
        "dispenser_identity": "TQC-2019-44871",
        "pulses_counted": 3047099,
        "pulse_volume_ml": 30395,
    }),
    "scale.weighing": (SCALE, {
        "gross_mg": 1254000,
        "tare_mg": 4000,
        "net_mg": 1250000,
        "tare_mode": "weighed",
        "e_mg": 2000,
        "d_mg": 2000,
        "max_mg": 15000000,
        "stable": True,
        "centre_of_zero": True,
        "start_reading_mg": 0,
        "unit_price_minor_per_kg": 1280,
        "amount_minor": 1600,
        "plu": 1024,
        "load_to_stable_ms": 640,
        "sale_number": 4211,
    }),
    "tank.inventory": (TANK, {
        "volume_ml": 18234567,
        "tc_volume_ml": 18190221,
        "product_height_um": 1234560,
        "water_height_um": 4200,
        "water_volume_ml": 12000,
        "temperature_centi_c": 1834,
        "ullage_ml": 11765433,
        "console_time_ms": 1767225540000,
    }),
    "tank.delivery": (TANK, {
        "start_wall_time_ms": 1767225000000,
        "end_wall_time_ms": 1767226800000,
        "start_volume_ml": 8000000,
        "end_volume_ml": 20012000,
        "start_tc_volume_ml": 7980000,
        "end_tc_volume_ml": 19950000,
        "start_product_height_um": 640000,
        "end_product_height_um": 1310000,
        "start_water_height_um": 4000,
        "end_water_height_um": 4100,
        "start_temperature_centi_c": 1650,
        "end_temperature_centi_c": -120,
    }),
    "status": (None, {
        "totalizers": [
            {"dispenser_address": 0x50, "nozzle": 1, "totalizer_ml": 123457090,
             "amount_totalizer_minor": 987654321},
            {"dispenser_address": 0x50, "nozzle": 2, "totalizer_ml": 5000},
        ],
        "links": [
            {"link": "dispenser", "up": True, "error_count": 3},
            {"link": "uplink", "up": False, "error_count": 0},
        ],
        "journal_used_bytes": 65536,
        "journal_capacity_bytes": 4194304,
        "journal_unacked_records": 12,
        "records_dropped_total": 0,
        "acked_seq": 1222,
        "heap_used_bytes": 131072,
        "heap_free_bytes": 65536,
    }),
}

NEW_KEY = b"\x04" + bytes(range(1, 65))

# event type -> (device reference or None, body without event_type)
EVENT_EXAMPLES = {
    "boot": (None, {"reset_cause": "power_on"}),
    "shutdown": (None, {"reason": "operator request"}),
    "power_fail": (None, {"supply_mv": 9800}),
    "seal_open": (None, {"seal": "enclosure"}),
    "seal_close": (NOZZLE, {"seal": "dispenser_cpu"}),
    "parameter_change": ({"dispenser_address": 0x51}, {
        "parameter_id": "price_decimals", "old_value": "2", "new_value": "3"}),
    "calibration": (NOZZLE, {
        "old_k_factor_pulses_per_kl": 100250, "new_k_factor_pulses_per_kl": 100000,
        "calibration_count": 4}),
    "device_identity_changed": (SCALE, {"old_identity": "SN-2231-0007",
                                        "new_identity": "SN-2231-0099"}),
    "link_lost": (None, {"link": "tank_gauge"}),
    "link_restored": ({"dispenser_address": 0x50}, {"link": "dispenser", "outage_ms": 42000}),
    "link_errors": (None, {"link": "dispenser", "crc_errors": 7, "timeouts": 2,
                           "framing_errors": 0}),
    "time_set": (None, {"old_wall_time_ms": 946684800000, "new_wall_time_ms": 1767225600000,
                        "source": "ntp"}),
    "pulse_mismatch": (NOZZLE, {
        "pulses_counted": 31078, "pulse_volume_ml": 310, "reported_volume_ml": 341,
        "difference_ml": 31, "k_factor_pulses_per_kl": 100250, "sale_seq": 1233}),
    "journal_recovered": (None, {"bytes_truncated": 117, "last_good_seq": 1199}),
    "journal_full": (None, {"journal_used_bytes": 4194304, "journal_capacity_bytes": 4194304,
                            "journal_unacked_records": 30001}),
    "records_dropped": (None, {"dropped_count": 3, "first_dropped_seq": 1300,
                               "last_dropped_seq": 1302}),
    "key_rotated": (None, {"new_public_key": NEW_KEY}),
    "software_update": (None, {
        "old_software_version": "0.1.0", "old_software_digest": b"\x01" * 32,
        "new_software_version": "0.2.0", "new_software_digest": b"\x02" * 32}),
    "self_test": (TANK, {"passed": False, "detail": "probe 2 no response"}),
    "tamper": (None, {"sensor": "pulse_cable"}),
}


def example(name):
    """A fresh valid plain record: `name` is a kind or an event type."""
    if name in KIND_EXAMPLES:
        kind, (device, body) = name.split(":")[0], KIND_EXAMPLES[name]
    else:
        kind, (device, body) = "event", EVENT_EXAMPLES[name]
        body = dict(body, event_type=name)
    record = copy.deepcopy(HEADER)
    if device is not None:
        record["device"] = dict(device)
    record.update(kind=kind, body=copy.deepcopy(body))
    return record


EXAMPLE_NAMES = sorted(KIND_EXAMPLES) + sorted(EVENT_EXAMPLES)


def parse_wire(wire):
    return records.parse(cbor.dumps(wire))


def raises_on(field, call, *args):
    with pytest.raises(RecordError) as caught:
        call(*args)
    assert caught.value.field == field, str(caught.value)
    return caught.value


# --- walking a record along the schema tables ----------------------------------------------------

def body_fields(record):
    if record["kind"] == "event":
        return records.EVENT_FIELDS[record["body"]["event_type"]]
    return records.BODY_FIELDS[record["kind"]]


def places(record, with_header=True):
    """(plain path, wire path, field) for every schema field at every place in `record` where one
    could stand: present fields and absent ones alike. List entries are walked at index 0."""
    if with_header:
        header = [f for f in records.HEADER_FIELDS if f[1] not in ("device", "body")]
        yield from _places(record, header, (), ())
    if "device" in record:
        device = [f for f in records.DEVICE_FIELDS if f[1] in record["device"]]
        yield from _places(record["device"], device, ("device",), (14,))
    yield from _places(record["body"], body_fields(record), ("body",), (16,))


def _places(plain, fields, plain_at, wire_at):
    for field in fields:
        yield plain_at + (field[1],), wire_at + (field[0],), field
        if field[2] == records._MAP_LIST and plain.get(field[1]):
            yield from _places(plain[field[1]][0], field[5], plain_at + (field[1], 0),
                               wire_at + (field[0], 0))


def dotted(path):
    text = ""
    for part in path:
        text += "[%d]" % part if isinstance(part, int) else ("." if text else "") + part
    return text


def get_at(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def set_at(tree, path, value):
    get_at(tree, path[:-1])[path[-1]] = value


def delete_at(tree, path):
    del get_at(tree, path[:-1])[path[-1]]


def cases(select):
    # The header is one table for every kind: it is walked in one example only.
    return [
        pytest.param(name, plain, wire, field, id="%s:%s" % (name, dotted(plain)))
        for name in EXAMPLE_NAMES
        for plain, wire, field in places(example(name), with_header=name == "fuel.sale")
        if select(example(name), plain, field)
    ]


def present(record, path, field):
    try:
        get_at(record, path)
    except (KeyError, IndexError):
        return False
    return True


# --- every kind and event type round-trips ------------------------------------------------------

def test_examples_cover_every_kind_and_event_type():
    assert {name.split(":")[0] for name in KIND_EXAMPLES} | {"event"} == set(records.KINDS)
    assert set(EVENT_EXAMPLES) == set(records.EVENT_TYPES) == set(records.EVENT_FIELDS)
    assert set(records.BODY_FIELDS) == set(records.KINDS) - {"event"}


def test_examples_use_every_field():
    # The wrong-value and limit cases walk the fields the examples hold.
    def where(name, plain):
        return name.split(":")[0], dotted(plain)

    used = {where(name, plain) for name in EXAMPLE_NAMES
            for plain, _, field in places(example(name)) if present(example(name), plain, field)}
    for name in EXAMPLE_NAMES:
        for plain, _, _ in places(example(name)):
            assert where(name, plain) in used, where(name, plain)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_round_trips(name):
    record = example(name)
    payload = records.encode(record)
    assert records.parse(payload) == record
    # Independent checks of the encoding: cbor2 reads the same map, and cbor2's own canonical
    # encoder (integer keys sort the same under RFC 7049 and RFC 8949 rules) writes our bytes.
    wire = records.build(record)
    assert cbor2.loads(payload) == wire
    assert cbor2.dumps(wire, canonical=True) == payload
    assert records.from_wire(wire) == record


def test_build_uses_the_documented_keys():
    wire = records.build(example("fuel.sale"))
    assert wire[1] == records.SCHEMA_VERSION == 1
    assert wire[14] == {1: 0x50, 2: 1}
    assert wire[15] == "fuel.sale"
    assert (wire[16][2], wire[16][3], wire[16][4]) == (310, 164500, 51)
    event = records.build(example("time_set"))
    assert event[16][1] == "time_set" and 14 not in event


def test_build_accepts_bytearray_and_tuples_and_returns_bytes_and_lists():
    record = example("fuel.sale")
    record["prev"] = bytearray(record["prev"])
    record["body"]["flow_profile_ml"] = tuple(record["body"]["flow_profile_ml"])
    parsed = records.parse(records.encode(record))
    assert type(parsed["prev"]) is bytes
    assert parsed["body"]["flow_profile_ml"] == list(record["body"]["flow_profile_ml"])


def test_parse_takes_any_bytes_like_payload():
    payload = records.encode(example("status"))
    assert records.parse(bytearray(payload)) == records.parse(memoryview(payload))


def test_validation_is_structural_only():
    # Inconsistent values are evidence for the detectors, never a reason to refuse the record.
    record = example("fuel.sale")
    record["body"].update(amount_minor=1, totalizer_end_ml=0, end_wall_time_ms=0)
    record["body"]["flow_profile_ml"] = []
    assert records.parse(records.encode(record)) == record


# --- required fields ----------------------------------------------------------------------------

# An event's device reference is optional as a whole; test_device_reference_follows_the_kind
# covers what its fields require.
REQUIRED = cases(lambda record, path, field: field[3] and present(record, path, field) and not (
    record["kind"] == "event" and path[0] == "device"))


@pytest.mark.parametrize("name,plain,wire,field", REQUIRED)
def test_omitting_a_required_field_names_it(name, plain, wire, field):
    record = example(name)
    wire_map = records.build(record)
    delete_at(record, plain)
    delete_at(wire_map, wire)
    raises_on(dotted(plain), records.build, record)
    raises_on(dotted(plain), parse_wire, wire_map)


@pytest.mark.parametrize("name,device,field", [
    ("fuel.sale", {"dispenser_address": 0x50}, "device.nozzle"),
    ("fuel.sale", {"nozzle": 1}, "device.dispenser_address"),
    ("fuel.sale", {"scale_id": "S1"}, "device.dispenser_address"),
    ("fuel.sale", None, "device"),
    ("scale.weighing", None, "device"),
    ("scale.weighing", NOZZLE, "device.scale_id"),
    ("tank.inventory", SCALE, "device.tank_number"),
    ("tank.delivery", None, "device"),
    ("status", NOZZLE, "device"),
    ("status", {}, "device"),
    ("pulse_mismatch", None, "device"),
    ("pulse_mismatch", {"dispenser_address": 0x50}, "device.nozzle"),
    ("boot", {"nozzle": 1}, "device.dispenser_address"),
    ("boot", {}, "device"),
    ("boot", {"dispenser_address": 0x50, "tank_number": 1}, "device.tank_number"),
    ("boot", [], "device"),
])
def test_device_reference_follows_the_kind(name, device, field):
    record = example(name)
    record.pop("device", None)
    if device is not None:
        record["device"] = device
    raises_on(field, records.build, record)


@pytest.mark.parametrize("device", [None, {"dispenser_address": 0x6F}, NOZZLE, SCALE, TANK])
def test_an_event_may_name_any_device_or_none(device):
    record = example("seal_open")
    record.pop("device", None)
    if device is not None:
        record["device"] = device
    assert records.parse(records.encode(record)) == record


# --- wrong values -------------------------------------------------------------------------------

def bad_values(field):
    """(value, where the error points relative to the field) for a field's type and limits."""
    code, a, b = field[2], field[4], field[5]
    common = [(None, ()), (1.5, ()), ({}, ())]
    if code == records._INT:
        values = [(a - 1, ()), (b + 1, ()), (float(a), ()), (str(a), ()), (b"\x01", ())]
        if a <= 1 <= b:
            values.append((True, ()))
        if a <= 0 <= b:
            values.append((False, ()))
        return values + common
    if code == records._BOOL:
        return [(1, ()), (0, ()), ("true", ())] + common
    if code == records._BYTES:
        values = [(bytes(b + 1), ()), ("x" * a, ()), ([0] * a, ())]
        return values + ([(bytes(a - 1), ())] if a else []) + common
    if code == records._TEXT:
        values = [
            ("a" * (b + 1), ()),
            ("\u00e9" * (b // 2 + 1), ()),  # few enough characters, too many UTF-8 bytes
            ("ok\x01", ()),
            ("del\x7f", ()),
            ("line\nbreak", ()),
            (b"bytes", ()),
            (7, ()),
        ]
        return values + ([("", ())] if a else []) + common
    if code == records._ID:
        return [("a" * (b + 1), ()), ("", ()), ("with space", ()), ("\u00e9t\u00e9", ()),
                ("a/b", ()), (7, ())] + common
    if code == records._ENUM:
        return [("no-such-value", ()), (a[0].upper() + "x", ()), (0, ()), (b"U", ())] + common
    if code == records._INT_LIST:
        return [([0] * (a + 1), ()), ([1, -1], (1,)), ([0, b + 1], (1,)), ([True], (0,)),
                ([0.0], (0,)), ("abc", ())] + common
    if code == records._MAP_LIST:
        return [([7], (0,)), ([{}] * (a + 1), ()), ({}, ()), (None, ())]
    raise AssertionError(field)


WRONG = [
    pytest.param(name, plain, wire, value, suffix,
                 id="%s:%s=%s" % (name, dotted(plain), ascii(value)[:24]))
    for name, plain, wire, field in (p.values for p in cases(present))
    for value, suffix in bad_values(field)
]


@pytest.mark.parametrize("name,plain,wire,value,suffix", WRONG)
def test_a_wrong_value_names_its_field(name, plain, wire, value, suffix):
    record = example(name)
    wire_map = records.build(record)
    set_at(record, plain, value)
    error = raises_on(dotted(plain + suffix), records.build, record)
    assert str(error).startswith(dotted(plain + suffix) + ": ")
    set_at(wire_map, wire, value)
    try:
        payload = cbor.dumps(wire_map)
    except CBORError:
        return  # floats have no form in our CBOR subset; the decoder test covers them
    raises_on(dotted(plain + suffix), records.parse, payload)


@pytest.mark.parametrize("name,plain,wire,field", cases(
    lambda record, path, field: field[2] == records._INT and present(record, path, field)))
def test_integer_limits_are_inclusive(name, plain, wire, field):
    for value in (field[4], field[5]):
        record = example(name)
        set_at(record, plain, value)
        assert get_at(records.parse(records.encode(record)), plain) == value


def test_text_limits_count_utf8_bytes():
    record = example("shutdown")
    record["body"]["reason"] = "\u4eba" * 21 + "a"  # 64 bytes: the limit exactly
    assert records.parse(records.encode(record)) == record
    record["body"]["reason"] += "a"
    raises_on("body.reason", records.build, record)


def test_error_messages_name_the_limit():
    record = example("fuel.sale")
    record["body"]["volume_ml"] = -1
    error = raises_on("body.volume_ml", records.build, record)
    assert "0..999999999" in str(error) and "-1" in str(error)
    record = example("fuel.sale")
    record["time_status"] = "X"
    assert "'U', 'S', 'I'" in str(raises_on("time_status", records.build, record))


@pytest.mark.parametrize("kind", ["fuel", "FUEL.SALE", "event.boot", 1, None])
def test_unknown_kind_is_rejected(kind):
    record = example("fuel.sale")
    record["kind"] = kind
    raises_on("kind", records.build, record)


@pytest.mark.parametrize("event_type", ["reboot", "Boot", 1])
def test_unknown_event_type_is_rejected(event_type):
    record = example("boot")
    record["body"]["event_type"] = event_type
    raises_on("body.event_type", records.build, record)
    wire = records.build(example("boot"))
    wire[16][1] = event_type
    raises_on("body.event_type", parse_wire, wire)


def test_event_fields_belong_to_their_event_type():
    record = example("boot")
    record["body"]["supply_mv"] = 12000  # a power_fail field
    raises_on("body.supply_mv", records.build, record)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_unknown_fields_are_rejected(name):
    record = example(name)
    record["body"]["colour"] = "red"
    raises_on("body.colour", records.build, record)
    record = example(name)
    record["extra"] = 1
    raises_on("extra", records.build, record)
    wire = records.build(example(name))
    wire[16][99] = 1
    raises_on("body.99", parse_wire, wire)
    wire = records.build(example(name))
    wire[17] = 1
    raises_on("17", parse_wire, wire)
    wire = records.build(example(name))
    wire[16]["volume_ml"] = 1  # a name where a key belongs
    raises_on("body.volume_ml", parse_wire, wire)


def test_unknown_fields_in_list_entries_are_rejected():
    record = example("status")
    record["body"]["links"][1]["speed"] = 9600
    raises_on("body.links[1].speed", records.build, record)


@pytest.mark.parametrize("alias", [True, 1.0])
def test_keys_that_only_compare_equal_to_an_integer_are_rejected(alias):
    # Another decoder (cbor2) may hand over true or 1.0 as a map key; a dict lookup would take
    # either for key 1.
    wire = records.build(example("fuel.sale"))
    wire[alias] = wire.pop(1)
    with pytest.raises(RecordError):
        records.from_wire(wire)


def test_wrong_schema_version_is_rejected():
    wire = records.build(example("fuel.sale"))
    wire[1] = 2
    error = raises_on("version", parse_wire, wire)
    assert "1..1" in str(error)


def test_plain_form_has_no_null_for_absent():
    record = example("fuel.sale")
    record["body"]["preset_volume_ml"] = None
    raises_on("body.preset_volume_ml", records.build, record)


@pytest.mark.parametrize("record", [[], 7, "record", None, b"\xa0"])
def test_a_record_must_be_a_map(record):
    raises_on(None, records.build, record)
    if record is not None:
        raises_on(None, parse_wire, record)


@pytest.mark.parametrize("body", [[], 7, None])
def test_a_body_must_be_a_map(body):
    for name in ("fuel.sale", "boot"):
        record = example(name)
        record["body"] = body
        raises_on("body", records.build, record)


# --- size limit ---------------------------------------------------------------------------------

def largest_value(field):
    code, a, b = field[2], field[4], field[5]
    if code == records._INT:
        return a if len(cbor.dumps(a)) > len(cbor.dumps(b)) else b
    if code == records._BOOL:
        return False
    if code in (records._BYTES, records._TEXT, records._ID):
        return b"\xff" * b if code == records._BYTES else "x" * b
    if code == records._ENUM:
        return max(a, key=len)
    if code == records._INT_LIST:
        return [b] * a
    return [largest_map(field[5])] * a


def largest_map(fields):
    return {f[1]: largest_value(f) for f in fields}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_largest_valid_record_fits_the_payload_limit(name):
    record = example(name)
    header = [f for f in records.HEADER_FIELDS if f[1] not in ("device", "body", "kind")]
    record.update(largest_map(header))
    record["body"] = dict(largest_map(body_fields(record)), **(
        {"event_type": name} if record["kind"] == "event" else {}))
    if "scale_id" in record.get("device", ()):
        record["device"] = {"scale_id": "x" * 32}
    elif "dispenser_address" in record.get("device", ()):
        record["device"] = {"dispenser_address": 0x6F, "nozzle": 15}
    payload = records.encode(record)
    assert len(payload) <= records.MAX_PAYLOAD_BYTES
    assert records.parse(payload) == record


def test_oversized_payload_is_refused_before_decoding():
    raises_on(None, records.parse, b"\xa1" + b"\x00" * records.MAX_PAYLOAD_BYTES)


# --- hostile input: only RecordError comes out ---------------------------------------------------

def parse_or_record_error(payload):
    try:
        return records.parse(payload)
    except RecordError:
        return None


@settings(max_examples=600)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_record_error(payload):
    parse_or_record_error(payload)


def test_invalid_cbor_is_reported_at_the_record_boundary():
    error = raises_on(None, records.parse, b"\xa1\x01\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00")
    assert str(error).startswith("payload is not valid CBOR")
    raises_on(None, records.parse, records.encode(example("boot"))[:-1])


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64 - 1) | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.integers(-2, 20) | st.text(max_size=3), children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=400)
@given(cbor_values)
def test_valid_cbor_of_the_wrong_shape_raises_only_record_error(value):
    parse_or_record_error(cbor.dumps(value))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLE_NAMES), st.data())
def test_a_damaged_record_raises_only_record_error(name, data):
    wire = records.build(example(name))
    # Replace one value somewhere in the tree with an arbitrary CBOR value.
    node = wire
    while True:
        key = data.draw(st.sampled_from(sorted(node, key=repr) if isinstance(node, dict)
                                        else range(len(node))))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(cbor_values)
        break
    parsed = parse_or_record_error(cbor.dumps(wire))
    if parsed is not None:
        assert records.build(parsed) == wire


@settings(max_examples=300)
@given(st.sampled_from(EXAMPLE_NAMES), st.integers(0, 10**6), st.integers(1, 255))
def test_a_flipped_byte_raises_only_record_error(name, where, mask):
    payload = bytearray(records.encode(example(name)))
    payload[where % len(payload)] ^= mask
    parsed = parse_or_record_error(bytes(payload))
    if parsed is not None:
        assert records.encode(parsed) == bytes(payload)


# --- generated valid records round-trip ---------------------------------------------------------

def value_strategy(field):
    code, a, b = field[2], field[4], field[5]
    if code == records._INT:
        return st.integers(a, b)
    if code == records._BOOL:
        return st.booleans()
    if code == records._BYTES:
        return st.binary(min_size=a, max_size=b)
    if code == records._TEXT:
        chars = st.characters(min_codepoint=0x20, blacklist_categories=("Cs",),
                              blacklist_characters="\x7f")
        return st.text(chars, max_size=b).filter(lambda s: a <= len(s.encode()) <= b)
    if code == records._ID:
        return st.text(records._ID_CHARS, min_size=a, max_size=b)
    if code == records._ENUM:
        return st.sampled_from(a)
    if code == records._INT_LIST:
        return st.lists(st.integers(0, b), max_size=a)
    return st.lists(map_strategy(b), max_size=min(a, 4))


def map_strategy(fields):
    return st.fixed_dictionaries(
        {f[1]: value_strategy(f) for f in fields if f[3]},
        optional={f[1]: value_strategy(f) for f in fields if not f[3]},
    )


DISPENSER_REF = st.fixed_dictionaries(
    {"dispenser_address": st.integers(0x50, 0x6F)}, optional={"nozzle": st.integers(1, 15)})
NOZZLE_REF = st.fixed_dictionaries(
    {"dispenser_address": st.integers(0x50, 0x6F), "nozzle": st.integers(1, 15)})
SCALE_REF = st.fixed_dictionaries({"scale_id": value_strategy(records.DEVICE_FIELDS[2])})
TANK_REF = st.fixed_dictionaries({"tank_number": st.integers(1, 99)})
DEVICE_BY_KIND = {
    "fuel.sale": NOZZLE_REF,
    "scale.weighing": SCALE_REF,
    "tank.inventory": TANK_REF,
    "tank.delivery": TANK_REF,
    "status": st.none(),
    "pulse_mismatch": NOZZLE_REF,
}
ANY_DEVICE = st.none() | DISPENSER_REF | SCALE_REF | TANK_REF


@st.composite
def valid_records(draw):
    name = draw(st.sampled_from(sorted(records.BODY_FIELDS) + list(records.EVENT_TYPES)))
    header = [f for f in records.HEADER_FIELDS if f[1] not in ("device", "kind", "body")]
    record = draw(map_strategy(header))
    if name in records.BODY_FIELDS:
        record["kind"] = name
        record["body"] = draw(map_strategy(records.BODY_FIELDS[name]))
    else:
        record["kind"] = "event"
        record["body"] = draw(map_strategy(records.EVENT_FIELDS[name]))
        record["body"]["event_type"] = name
    device = draw(DEVICE_BY_KIND.get(name, ANY_DEVICE))
    if device is not None:
        record["device"] = device
    return record


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(valid_records())
def test_generated_valid_records_round_trip(record):
    payload = records.encode(record)
    assert records.parse(payload) == record
    assert cbor2.loads(payload) == records.build(record)


# --- the specification covers the schema --------------------------------------------------------

TYPE_NAMES = {
    records._BOOL: "bool",
    records._BYTES: "bstr",
    records._TEXT: "tstr",
    records._ID: "tstr",
    records._ENUM: "tstr",
    records._INT_LIST: "array of uint",
    records._MAP_LIST: "array of map",
    records._DEVICE: "map",
    records._BODY: "map",
}


def power_text(n):
    """2^64-1, 10^9-1, 10^10 for the limits that are powers; plain digits otherwise."""
    if n < 0:
        magnitude = power_text(-n)
        return "-(%s)" % magnitude if "-" in magnitude else "-" + magnitude
    for base, exponent_from in ((2, 16), (10, 5)):
        for exponent in range(exponent_from, 70):
            if n == base**exponent:
                return "%d^%d" % (base, exponent)
            if n == base**exponent - 1:
                return "%d^%d-1" % (base, exponent)
    return str(n)


def spec_row(field):
    """(key, name, type, range, required) as docs/record-format.md writes them."""
    key, name, code, required, a, b = field
    if code == records._INT:
        type_name = "int" if a < 0 else "uint"
        limits = power_text(a) if a == b else "%s..%s" % (power_text(a), power_text(b))
    elif code in (records._BYTES, records._TEXT):
        count = str(a) if a == b else "%d..%d" % (a, b)
        limits = count + (" bytes" if code == records._BYTES else " bytes UTF-8")
        type_name = TYPE_NAMES[code]
    elif code == records._ID:
        type_name, limits = "tstr", "%d..%d chars [A-Za-z0-9._-]" % (a, b)
    elif code == records._ENUM:
        type_name = "tstr"
        if a is records.EVENT_TYPES:
            limits = "an event type (§6.6)"
        else:
            limits = ", ".join("`%s`" % choice for choice in a)
    elif code == records._INT_LIST:
        type_name, limits = TYPE_NAMES[code], "0..%d items, each 0..%s" % (a, power_text(b))
    elif code == records._MAP_LIST:
        type_name, limits = TYPE_NAMES[code], "0..%d items" % a
    else:
        type_name = TYPE_NAMES[code]
        limits = {records._BOOL: "-", records._DEVICE: "§5", records._BODY: "§6"}[code]
    return (str(key), "`%s`" % name, type_name, limits, "yes" if required else "no")


def schema_tables():
    """Table id (as marked in the document) -> rows, for every table of the schema."""
    tables = {"header": records.HEADER_FIELDS, "device": records.DEVICE_FIELDS}
    tables.update(records.BODY_FIELDS)
    tables["status.totalizers"] = records.TOTALIZER_ENTRY_FIELDS
    tables["status.links"] = records.LINK_ENTRY_FIELDS
    for event_type, fields in records.EVENT_FIELDS.items():
        tables["event." + event_type] = fields
    return {name: [spec_row(f) for f in fields] for name, fields in tables.items()}


def document_tables():
    """Table id -> rows of the table under each `<!-- fields: id -->` marker, without the
    free-text columns (unit and meaning)."""
    text = DOC.read_text(encoding="utf-8")
    tables = {}
    for match in re.finditer(r"<!-- fields: (\S+) -->\n((?:\|.*\n)+)", text):
        lines = match.group(2).strip().splitlines()[2:]  # past the heading and the rule
        rows = []
        for line in lines:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows.append(tuple(cells[:3] + cells[4:6]))
        assert match.group(1) not in tables, "table %s appears twice" % match.group(1)
        tables[match.group(1)] = rows
    return tables


def test_the_document_has_a_table_for_every_schema_table_and_no_other():
    assert set(document_tables()) == set(schema_tables())


@pytest.mark.parametrize("table", sorted(schema_tables()))
def test_the_document_table_matches_the_schema(table):
    assert document_tables()[table] == schema_tables()[table]


def test_the_document_lists_every_enumeration():
    text = DOC.read_text(encoding="utf-8")
    for values in (records.EVENT_TYPES, records.END_STATUSES, records.TARE_MODES, records.LINKS,
                   records.TIME_SOURCES, records.RESET_CAUSES, records.TIME_STATUSES):
        for value in values:
            assert "`%s`" % value in text, value


def test_the_documented_example_is_what_the_code_encodes():
    text = DOC.read_text(encoding="utf-8")
    hex_block = re.search(r"<!-- example-hex -->\n```\n([0-9a-f\n]+)```", text).group(1)
    assert bytes.fromhex(hex_block.replace("\n", "")) == records.encode(example("fuel.sale"))


@pytest.mark.parametrize("value, accepted", [("GW-0001", True), ("a" * 32, True), ("", False),
                                             ("a" * 33, False), ("GW\x00A", False),
                                             ("GW A", False), ("网关", False), (7, False)])
def test_a_header_value_met_outside_a_record_gets_the_schemas_own_check(value, accepted):
    if accepted:
        assert records.check_header_value("gateway_id", value) == value
    else:
        with pytest.raises(RecordError, match="gateway_id: must be 1..32 characters"):
            records.check_header_value("gateway_id", value)
