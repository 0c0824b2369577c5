# The record schema on both interpreters: one record per kind round-trips through the CBOR
# payload, and bad fields are rejected with the field named, under the device's heap.
# heapsize: 192K
from meterseal.protocol import records
from meterseal.protocol.errors import RecordError


def header(kind, body, device=None):
    record = {
        "version": 1,
        "gateway_id": "GW-3301-0042",
        "boot_epoch": 7,
        "seq": 0xFFFFFFFFFFFFFFFF,  # a big integer on MicroPython: must survive the round trip
        "prev": bytes(32),
        "opsec": 86400,
        "wall_time_ms": 1767225600000,
        "time_status": "S",
        "clock_set_count": 2,
        "event_count": 5,
        "software_name": "meterseal-gw",
        "software_version": "0.1.0",
        "software_digest": bytearray(b"\xab" * 32),  # hashlib hands the device bytes or this
        "kind": kind,
        "body": body,
    }
    if device is not None:
        record["device"] = device
    return record


NOZZLE = {"dispenser_address": 0x50, "nozzle": 1}
EXAMPLES = (
    header("fuel.sale", {
        "grade": 92, "volume_ml": 310, "unit_price_minor_per_kl": 164500, "amount_minor": 51,
        "start_wall_time_ms": 1767225590000, "end_wall_time_ms": 1767225599500,
        "duration_ms": 9500, "flow_interval_ms": 1000,
        "flow_profile_ml": [0, 20, 40, 40, 40, 40, 40, 40, 40, 10], "end_status": "completed",
        "pulses_counted": 31078, "pulse_volume_ml": 310,
    }, NOZZLE),
    header("scale.weighing", {
        "gross_mg": -2000, "tare_mg": 0, "net_mg": -2000, "e_mg": 500, "d_mg": 500,
        "max_mg": 15000000, "stable": False, "centre_of_zero": False,
        "unit_price_minor_per_kg": 1280, "amount_minor": 0,
    }, {"scale_id": "SN-2231-0007"}),
    header("tank.inventory", {
        "volume_ml": 18234567, "product_height_um": 1234560, "temperature_centi_c": -1834,
    }, {"tank_number": 2}),
    header("tank.delivery", {
        "start_wall_time_ms": 1767225000000, "end_wall_time_ms": 1767226800000,
        "start_volume_ml": 8000000, "end_volume_ml": 20012000,
        "start_product_height_um": 640000, "end_product_height_um": 1310000,
        "start_temperature_centi_c": 1650, "end_temperature_centi_c": 1590,
    }, {"tank_number": 2}),
    header("status", {
        "totalizers": [{"dispenser_address": 0x50, "nozzle": 1, "totalizer_ml": 999999999999999}],
        "links": [{"link": "dispenser", "up": True, "error_count": 3}],
        "journal_used_bytes": 65536, "journal_capacity_bytes": 4194304,
        "journal_unacked_records": 12, "records_dropped_total": 0,
    }),
    header("event", {
        "event_type": "pulse_mismatch", "pulses_counted": 31078, "pulse_volume_ml": 310,
        "reported_volume_ml": 341, "difference_ml": 31, "k_factor_pulses_per_kl": 100250,
    }, NOZZLE),
    header("event", {"event_type": "key_rotated", "new_public_key": b"\x04" + bytes(64)}),
)

for record in EXAMPLES:
    payload = records.encode(record)
    parsed = records.parse(payload)
    record["software_digest"] = bytes(record["software_digest"])
    assert parsed == record, record["kind"]
    assert records.encode(parsed) == payload
    assert records.from_wire(records.build(record)) == record

# The DART example sale as docs/record-format.md encodes it: 310 mL, 0.51, 16.45 per litre.
wire = records.build(EXAMPLES[0])
assert wire[15] == "fuel.sale" and wire[14] == {1: 0x50, 2: 1}
assert wire[16][2] == 310 and wire[16][3] == 164500 and wire[16][4] == 51


def rejected(record, field):
    try:
        records.encode(record)
    except RecordError as error:
        assert error.field == field, (field, error.field, str(error))
        return
    raise AssertionError("accepted a bad " + field)


def changed(index, path, value):
    record = header(EXAMPLES[index]["kind"], dict(EXAMPLES[index]["body"]),
                    EXAMPLES[index].get("device"))
    if len(path) == 1:
        record[path[0]] = value
    else:
        record[path[0]] = dict(record[path[0]])
        record[path[0]][path[1]] = value
    return record


rejected(changed(0, ("body", "volume_ml"), -1), "body.volume_ml")
rejected(changed(0, ("body", "volume_ml"), 0.31), "body.volume_ml")
rejected(changed(0, ("body", "grade"), True), "body.grade")
rejected(changed(0, ("body", "flow_profile_ml"), [1, 2, -3]), "body.flow_profile_ml[2]")
rejected(changed(0, ("body", "colour"), "red"), "body.colour")
rejected(changed(0, ("device", "nozzle"), 16), "device.nozzle")
rejected(changed(0, ("time_status",), "X"), "time_status")
rejected(changed(0, ("prev",), bytes(31)), "prev")
rejected(changed(0, ("software_name",), "x" * 33), "software_name")
rejected(changed(0, ("gateway_id",), "GW 42"), "gateway_id")
rejected(changed(0, ("software_version",), "0.1\n"), "software_version")
rejected(changed(0, ("software_version",), "\u00e9" * 17), "software_version")  # 34 UTF-8 bytes
rejected(changed(1, ("body", "stable"), 1), "body.stable")
rejected(changed(4, ("device",), NOZZLE), "device")
rejected(changed(5, ("body", "event_type"), "reboot"), "body.event_type")
rejected(changed(5, ("device",), {"scale_id": "S1"}), "device.dispenser_address")

missing = changed(0, ("kind",), "fuel.sale")
del missing["body"]["amount_minor"]
rejected(missing, "body.amount_minor")
missing = changed(0, ("kind",), "fuel.sale")
del missing["seq"]
rejected(missing, "seq")

# A payload that is not CBOR, and CBOR that is not a record, both come out as RecordError.
for payload in (b"\xff", b"\xa1\x01", b"\x80", b"\xa1\x01\x02", b""):
    try:
        records.parse(payload)
    except RecordError as error:
        assert error.field in (None, "version"), error.field
    else:
        raise AssertionError(payload)

# A header value met outside a record (a HELLO's gateway_id) gets the same check.
assert records.check_header_value("gateway_id", "GW-0001") == "GW-0001"
for bad in ("", "GW\x00A", "GW A", "a" * 33, 7):
    try:
        records.check_header_value("gateway_id", bad)
    except RecordError as error:
        assert error.field == "gateway_id", error.field
    else:
        raise AssertionError(bad)

print("PASS records_checks")
