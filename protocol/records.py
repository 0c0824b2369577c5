"""Record schema: the legally relevant content of every signed record (DESIGN.md section 4).

A record is the payload of a COSE_Sign1 envelope: one deterministic CBOR map with small integer
keys. Callers never handle integer keys; they pass and receive the *plain form*, the same tree
with descriptive names whose suffix carries the unit (``volume_ml``, ``amount_minor``)::

    wire  {1: 1, 2: "GW-0042", ..., 14: {1: 80, 2: 1}, 15: "fuel.sale", 16: {1: 92, 2: 310, ...}}
    plain {"version": 1, "gateway_id": "GW-0042", ..., "device": {"dispenser_address": 80,
           "nozzle": 1}, "kind": "fuel.sale", "body": {"grade": 92, "volume_ml": 310, ...}}

Header keys 1..16 are the same for every record; body keys restart at 1 per kind, and per event
type for kind "event" (body key 1 is then the event type). docs/record-format.md is the
specification; the tables below are its machine-readable form, and a test keeps the two equal.

Validation is structural only: types, ranges, lengths, required and unknown fields. Values that
disagree with each other (an amount that is not volume x price, a totalizer that runs backwards)
are accepted, because they are exactly the evidence the host's detectors exist to see.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from . import cbor
from .errors import CBORError, RecordError

SCHEMA_VERSION = 1

# A valid record never comes near this (the largest, a full status record, is 2126 bytes; a test
# checks every kind): the limit stops a hostile peer making the host decode megabytes.
MAX_PAYLOAD_BYTES = 4096

# Field types. A field is (key, name, type, required, a, b); a and b depend on the type:
#   _INT       a..b inclusive (a < 0 allows negative values)
#   _BOOL      -
#   _BYTES     length a..b bytes
#   _TEXT      UTF-8 length a..b bytes, no control characters
#   _ID        a..b characters from _ID_CHARS
#   _ENUM      a = tuple of allowed texts
#   _INT_LIST  at most a items, each an integer in 0..b
#   _MAP_LIST  at most a items, each a map described by the fields in b
#   _DEVICE    the device reference: shapes come from the kind (see _device)
#   _BODY      the body: fields come from the kind and event type (see _record)
_INT = const(0)
_BOOL = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ID = const(4)
_ENUM = const(5)
_INT_LIST = const(6)
_MAP_LIST = const(7)
_DEVICE = const(8)
_BODY = const(9)

# Identifiers end up in file names, URLs and log lines, so they get a conservative alphabet.
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
# Wall time in ms since 1970-01-01T00:00:00Z; 2^48 ms is past the year 10000.
_MAX_WALL_TIME_MS = 0xFFFFFFFFFFFF
# Nine digits: above any 8-digit dispenser or scale display, whatever its decimal position.
MAX_SALE_VOLUME_ML = 999999999
MAX_AMOUNT_MINOR = 999999999
MAX_UNIT_PRICE_MINOR = 99999999
# Fuel prices often carry three decimals of the major unit (1.645 EUR/L), so fuel unit prices are
# counted per kilolitre: 1.645/L is 164500 minor units per kL, exact for any such price.
MAX_UNIT_PRICE_MINOR_PER_KL = 99999999999
# Lifetime totalizers; kept below 2^53 so every consumer (JSON, float) holds them exactly.
MAX_TOTALIZER = 999999999999999
# Bounds the sale record: a long sale doubles its sampling interval instead of growing.
MAX_FLOW_POINTS = 120
MAX_MASS_MG = 10000000000
MAX_TANK_VOLUME_ML = 10000000000
_MAX_HEIGHT_UM = 100000000
_MIN_TEMPERATURE_CENTI_C = -5000
_MAX_TEMPERATURE_CENTI_C = 10000
_MAX_K_FACTOR_PULSES_PER_KL = 1000000000
_MAX_JOURNAL_BYTES = 0xFFFFFFFFFF
MAX_TOTALIZER_ENTRIES = 64
MAX_LINK_ENTRIES = 8

TIME_STATUSES = ("U", "S", "I")
KINDS = ("fuel.sale", "scale.weighing", "tank.inventory", "tank.delivery", "status", "event")
EVENT_TYPES = (
    "boot",
    "shutdown",
    "power_fail",
    "seal_open",
    "seal_close",
    "parameter_change",
    "calibration",
    "device_identity_changed",
    "link_lost",
    "link_restored",
    "link_errors",
    "time_set",
    "pulse_mismatch",
    "journal_recovered",
    "journal_full",
    "records_dropped",
    "key_rotated",
    "software_update",
    "self_test",
    "tamper",
)
# A legally relevant change: each of these increments the header's event_count (the audit-trail
# counter), and its own record carries the new value. Clock settings have clock_set_count instead.
AUDIT_EVENT_TYPES = ("seal_open", "parameter_change", "calibration", "device_identity_changed",
                     "key_rotated", "software_update")
END_STATUSES = ("completed", "preset_reached", "stopped", "dispenser_error", "power_fail",
                "link_lost")
TARE_MODES = ("none", "weighed", "preset")
LINKS = ("dispenser", "tank_gauge", "scale", "pulse_input", "uplink")
TIME_SOURCES = ("ntp", "gnss", "host", "rtc", "operator")
RESET_CAUSES = ("power_on", "hard", "watchdog", "soft", "deep_sleep", "unknown")

# --- device reference (header key 14) -------------------------------------------------------
# One shape per kind of device; the first field of a shape identifies it. DEVICE_FIELDS is the
# union, for the specification.
_DISPENSER_ADDRESS = (1, "dispenser_address", _INT, True, 0x50, 0x6F)  # DART pump addresses
_NOZZLE = (2, "nozzle", _INT, True, 1, 15)
_AT_NOZZLE = (_DISPENSER_ADDRESS, _NOZZLE)
_AT_DISPENSER = (_DISPENSER_ADDRESS, (2, "nozzle", _INT, False, 1, 15))
_AT_SCALE = ((3, "scale_id", _TEXT, True, 1, 32),)
_AT_TANK = ((4, "tank_number", _INT, True, 1, 99),)
DEVICE_FIELDS = _AT_DISPENSER + _AT_SCALE + _AT_TANK
# None in a tuple of shapes means the record may omit the device (it concerns the gateway).
_ANY_DEVICE = (None, _AT_DISPENSER, _AT_SCALE, _AT_TANK)

_DEVICE_FIELD = (14, "device", _DEVICE, False, None, None)
_KIND_FIELD = (15, "kind", _ENUM, True, KINDS, None)
_BODY_FIELD = (16, "body", _BODY, True, None, None)

HEADER_FIELDS = (
    (1, "version", _INT, True, SCHEMA_VERSION, SCHEMA_VERSION),
    (2, "gateway_id", _ID, True, 1, 32),
    (3, "boot_epoch", _INT, True, 1, _U32),
    (4, "seq", _INT, True, 0, _U64),
    (5, "prev", _BYTES, True, 32, 32),
    (6, "opsec", _INT, True, 0, _U32),
    (7, "wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
    (8, "time_status", _ENUM, True, TIME_STATUSES, None),
    (9, "clock_set_count", _INT, True, 0, _U32),
    (10, "event_count", _INT, True, 0, _U32),
    (11, "software_name", _TEXT, True, 1, 32),
    (12, "software_version", _TEXT, True, 1, 32),
    (13, "software_digest", _BYTES, True, 32, 32),
    _DEVICE_FIELD,
    _KIND_FIELD,
    _BODY_FIELD,
)

# --- kinds --------------------------------------------------------------------------------------
FUEL_SALE_FIELDS = (
    (1, "grade", _INT, True, 1, 99),
    (2, "volume_ml", _INT, True, 0, MAX_SALE_VOLUME_ML),
    (3, "unit_price_minor_per_kl", _INT, True, 0, MAX_UNIT_PRICE_MINOR_PER_KL),
    (4, "amount_minor", _INT, True, 0, MAX_AMOUNT_MINOR),
    (5, "preset_volume_ml", _INT, False, 0, MAX_SALE_VOLUME_ML),
    (6, "preset_amount_minor", _INT, False, 0, MAX_AMOUNT_MINOR),
    (7, "start_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
    (8, "end_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
    (9, "duration_ms", _INT, True, 0, _U32),
    (10, "totalizer_start_ml", _INT, False, 0, MAX_TOTALIZER),
    (11, "totalizer_end_ml", _INT, False, 0, MAX_TOTALIZER),
    (12, "amount_totalizer_start_minor", _INT, False, 0, MAX_TOTALIZER),
    (13, "amount_totalizer_end_minor", _INT, False, 0, MAX_TOTALIZER),
    (14, "flow_interval_ms", _INT, True, 100, 3600000),
    (15, "flow_profile_ml", _INT_LIST, True, MAX_FLOW_POINTS, MAX_SALE_VOLUME_ML),
    (16, "end_status", _ENUM, True, END_STATUSES, None),
    (17, "dispenser_param_checksum", _BYTES, False, 1, 32),
    (18, "dispenser_software_id", _TEXT, False, 1, 64),
    (19, "dispenser_identity", _TEXT, False, 1, 64),
    (20, "pulses_counted", _INT, False, 0, _U32),
    (21, "pulse_volume_ml", _INT, False, 0, MAX_SALE_VOLUME_ML),
)

SCALE_WEIGHING_FIELDS = (
    (1, "gross_mg", _INT, True, -MAX_MASS_MG, MAX_MASS_MG),
    (2, "tare_mg", _INT, True, 0, MAX_MASS_MG),
    (3, "net_mg", _INT, True, -MAX_MASS_MG, MAX_MASS_MG),
    (4, "tare_mode", _ENUM, False, TARE_MODES, None),
    (5, "e_mg", _INT, True, 1, MAX_MASS_MG),
    (6, "d_mg", _INT, True, 1, MAX_MASS_MG),
    (7, "max_mg", _INT, True, 1, MAX_MASS_MG),
    (8, "stable", _BOOL, True, None, None),
    (9, "centre_of_zero", _BOOL, True, None, None),
    (10, "start_reading_mg", _INT, False, -MAX_MASS_MG, MAX_MASS_MG),
    (11, "unit_price_minor_per_kg", _INT, True, 0, MAX_UNIT_PRICE_MINOR),
    (12, "amount_minor", _INT, True, 0, MAX_AMOUNT_MINOR),
    (13, "plu", _INT, False, 1, 999999),
    (14, "load_to_stable_ms", _INT, False, 0, _U32),
    (15, "sale_number", _INT, False, 0, _U32),
)

TANK_INVENTORY_FIELDS = (
    (1, "volume_ml", _INT, True, 0, MAX_TANK_VOLUME_ML),
    (2, "tc_volume_ml", _INT, False, 0, MAX_TANK_VOLUME_ML),
    (3, "product_height_um", _INT, True, 0, _MAX_HEIGHT_UM),
    (4, "water_height_um", _INT, False, 0, _MAX_HEIGHT_UM),
    (5, "water_volume_ml", _INT, False, 0, MAX_TANK_VOLUME_ML),
    (6, "temperature_centi_c", _INT, True, _MIN_TEMPERATURE_CENTI_C, _MAX_TEMPERATURE_CENTI_C),
    (7, "ullage_ml", _INT, False, 0, MAX_TANK_VOLUME_ML),
    # The console's own clock at the report (its minute): deliveries carry the console's times,
    # so the host can put a reading and a delivery on one clock (tank.wetstock).
    (8, "console_time_ms", _INT, False, 0, _MAX_WALL_TIME_MS),
)

TANK_DELIVERY_FIELDS = (
    (1, "start_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
    (2, "end_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
    (3, "start_volume_ml", _INT, True, 0, MAX_TANK_VOLUME_ML),
    (4, "end_volume_ml", _INT, True, 0, MAX_TANK_VOLUME_ML),
    (5, "start_tc_volume_ml", _INT, False, 0, MAX_TANK_VOLUME_ML),
    (6, "end_tc_volume_ml", _INT, False, 0, MAX_TANK_VOLUME_ML),
    (7, "start_product_height_um", _INT, False, 0, _MAX_HEIGHT_UM),
    (8, "end_product_height_um", _INT, False, 0, _MAX_HEIGHT_UM),
    (9, "start_water_height_um", _INT, False, 0, _MAX_HEIGHT_UM),
    (10, "end_water_height_um", _INT, False, 0, _MAX_HEIGHT_UM),
    (11, "start_temperature_centi_c", _INT, True, _MIN_TEMPERATURE_CENTI_C,
     _MAX_TEMPERATURE_CENTI_C),
    (12, "end_temperature_centi_c", _INT, True, _MIN_TEMPERATURE_CENTI_C,
     _MAX_TEMPERATURE_CENTI_C),
)

TOTALIZER_ENTRY_FIELDS = (
    _DISPENSER_ADDRESS,
    _NOZZLE,
    (3, "totalizer_ml", _INT, True, 0, MAX_TOTALIZER),
    (4, "amount_totalizer_minor", _INT, False, 0, MAX_TOTALIZER),
)

LINK_ENTRY_FIELDS = (
    (1, "link", _ENUM, True, LINKS, None),
    (2, "up", _BOOL, True, None, None),
    (3, "error_count", _INT, True, 0, _U32),
)

STATUS_FIELDS = (
    (1, "totalizers", _MAP_LIST, True, MAX_TOTALIZER_ENTRIES, TOTALIZER_ENTRY_FIELDS),
    (2, "links", _MAP_LIST, True, MAX_LINK_ENTRIES, LINK_ENTRY_FIELDS),
    (3, "journal_used_bytes", _INT, True, 0, _MAX_JOURNAL_BYTES),
    (4, "journal_capacity_bytes", _INT, True, 0, _MAX_JOURNAL_BYTES),
    (5, "journal_unacked_records", _INT, True, 0, _U32),
    (6, "records_dropped_total", _INT, True, 0, _U64),
    (7, "acked_seq", _INT, False, 0, _U64),
    (8, "heap_used_bytes", _INT, False, 0, _U32),
    (9, "heap_free_bytes", _INT, False, 0, _U32),
)

# kind -> (body fields, allowed device shapes). The event kind's body comes from EVENT_FIELDS.
_KIND_SPEC = {
    "fuel.sale": (FUEL_SALE_FIELDS, (_AT_NOZZLE,)),
    "scale.weighing": (SCALE_WEIGHING_FIELDS, (_AT_SCALE,)),
    "tank.inventory": (TANK_INVENTORY_FIELDS, (_AT_TANK,)),
    "tank.delivery": (TANK_DELIVERY_FIELDS, (_AT_TANK,)),
    "status": (STATUS_FIELDS, (None,)),
}
BODY_FIELDS = {kind: spec[0] for kind, spec in _KIND_SPEC.items()}

# --- events -------------------------------------------------------------------------------------
_EVENT_TYPE = (1, "event_type", _ENUM, True, EVENT_TYPES, None)
_LINK = (2, "link", _ENUM, True, LINKS, None)

# event type -> fields specific to it (keys from 2 up; key 1 is always the event type).
_EVENT_SPECIFIC = {
    "boot": ((2, "reset_cause", _ENUM, True, RESET_CAUSES, None),),
    "shutdown": ((2, "reason", _TEXT, False, 1, 64),),
    "power_fail": ((2, "supply_mv", _INT, False, 0, 100000),),
    "seal_open": ((2, "seal", _ID, False, 1, 32),),
    "seal_close": ((2, "seal", _ID, False, 1, 32),),
    "parameter_change": (
        (2, "parameter_id", _TEXT, True, 1, 32),
        (3, "old_value", _TEXT, False, 0, 64),
        (4, "new_value", _TEXT, True, 0, 64),
    ),
    "calibration": (
        (2, "old_k_factor_pulses_per_kl", _INT, False, 1, _MAX_K_FACTOR_PULSES_PER_KL),
        (3, "new_k_factor_pulses_per_kl", _INT, False, 1, _MAX_K_FACTOR_PULSES_PER_KL),
        (4, "calibration_count", _INT, False, 0, _U32),
    ),
    "device_identity_changed": (
        (2, "old_identity", _TEXT, False, 1, 64),
        (3, "new_identity", _TEXT, True, 1, 64),
    ),
    "link_lost": (_LINK,),
    "link_restored": (_LINK, (3, "outage_ms", _INT, False, 0, _U32)),
    "link_errors": (
        _LINK,
        (3, "crc_errors", _INT, True, 0, _U32),
        (4, "timeouts", _INT, True, 0, _U32),
        (5, "framing_errors", _INT, True, 0, _U32),
    ),
    "time_set": (
        (2, "old_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
        (3, "new_wall_time_ms", _INT, True, 0, _MAX_WALL_TIME_MS),
        (4, "source", _ENUM, True, TIME_SOURCES, None),
    ),
    "pulse_mismatch": (
        (2, "pulses_counted", _INT, True, 0, _U32),
        (3, "pulse_volume_ml", _INT, True, 0, MAX_SALE_VOLUME_ML),
        (4, "reported_volume_ml", _INT, True, 0, MAX_SALE_VOLUME_ML),
        (5, "difference_ml", _INT, True, -MAX_SALE_VOLUME_ML, MAX_SALE_VOLUME_ML),
        (6, "k_factor_pulses_per_kl", _INT, True, 1, _MAX_K_FACTOR_PULSES_PER_KL),
        (7, "sale_seq", _INT, False, 0, _U64),
    ),
    "journal_recovered": (
        (2, "bytes_truncated", _INT, True, 0, _MAX_JOURNAL_BYTES),
        (3, "last_good_seq", _INT, False, 0, _U64),
    ),
    "journal_full": (
        (2, "journal_used_bytes", _INT, True, 0, _MAX_JOURNAL_BYTES),
        (3, "journal_capacity_bytes", _INT, True, 0, _MAX_JOURNAL_BYTES),
        (4, "journal_unacked_records", _INT, True, 0, _U32),
    ),
    "records_dropped": (
        (2, "dropped_count", _INT, True, 1, _U32),
        (3, "first_dropped_seq", _INT, False, 0, _U64),
        (4, "last_dropped_seq", _INT, False, 0, _U64),
    ),
    # The kid is derived (SHA-256 of this key), so it is not carried twice.
    "key_rotated": ((2, "new_public_key", _BYTES, True, 65, 65),),
    "software_update": (
        (2, "old_software_version", _TEXT, True, 1, 32),
        (3, "old_software_digest", _BYTES, True, 32, 32),
        (4, "new_software_version", _TEXT, True, 1, 32),
        (5, "new_software_digest", _BYTES, True, 32, 32),
    ),
    "self_test": (
        (2, "passed", _BOOL, True, None, None),
        (3, "detail", _TEXT, False, 1, 64),
    ),
    "tamper": ((2, "sensor", _ID, True, 1, 32),),
}
# A pulse mismatch is about one nozzle's sale; every other event may name any device or none.
_EVENT_DEVICES = {"pulse_mismatch": (_AT_NOZZLE,)}

EVENT_FIELDS = {t: (_EVENT_TYPE,) + _EVENT_SPECIFIC[t] for t in EVENT_TYPES}

_ABSENT = object()


# --- validation and conversion -------------------------------------------------------------------
# One walk serves both directions: to_wire looks fields up by name and emits integer keys (build);
# otherwise it looks them up by key and emits names (parse). `path` is the dotted prefix ("body.")
# used only when naming a field in an error.


def _expected(field):
    code, a, b = field[2], field[4], field[5]
    if code == _INT:
        return "an integer in %d..%d" % (a, b)
    if code == _BOOL:
        return "true or false"
    if code == _BYTES:
        return ("a byte string of %d bytes" % a) if a == b else (
            "a byte string of %d..%d bytes" % (a, b))
    if code == _TEXT:
        return "text of %d..%d UTF-8 bytes without control characters" % (a, b)
    if code == _ID:
        return "%d..%d characters from A-Z a-z 0-9 . _ -" % (a, b)
    if code == _ENUM:
        return "one of " + ", ".join(repr(choice) for choice in a)
    if code == _INT_LIST:
        return "an array of at most %d integers in 0..%d" % (a, b)
    if code == _MAP_LIST:
        return "an array of at most %d maps" % a
    return "a map"


def _describe(value):
    if type(value) is int:
        return str(value)
    if type(value) is str and len(value) <= 40:
        return repr(value)
    return type(value).__name__


def _reject(field, path, value):
    raise RecordError(path + field[1], "must be %s, got %s" % (_expected(field), _describe(value)))


def check_header_value(name, value):
    """``value`` if the header field ``name`` may hold it, else RecordError: the schema's own
    check, for a value met outside a record (a HELLO's gateway_id)."""
    for field in HEADER_FIELDS:
        if field[1] == name:
            return _value(field, value, "", False)
    raise KeyError(name)


def _value(field, value, path, to_wire):
    code = field[2]
    if code == _INT:
        if type(value) is int and field[4] <= value <= field[5]:
            return value
    elif code == _ENUM:
        if type(value) is str and value in field[4]:
            return value
    elif code == _TEXT:
        if type(value) is str and field[4] <= len(value.encode()) <= field[5] and (
                not value or (min(value) >= " " and "\x7f" not in value)):
            return value
    elif code == _BYTES:
        # The device may hand over a bytearray; the wire and the plain form hold bytes.
        if (type(value) is bytes or (to_wire and type(value) is bytearray)) and (
                field[4] <= len(value) <= field[5]):
            return bytes(value) if to_wire else value
    elif code == _BOOL:
        if type(value) is bool:
            return value
    elif code == _ID:
        if type(value) is str and field[4] <= len(value) <= field[5] and not value.strip(
                _ID_CHARS):
            return value
    elif code == _INT_LIST:
        if (type(value) is list or (to_wire and type(value) is tuple)) and len(value) <= field[4]:
            high = field[5]
            for i, item in enumerate(value):
                if type(item) is not int or not 0 <= item <= high:
                    raise RecordError("%s%s[%d]" % (path, field[1], i),
                                      "must be an integer in 0..%d, got %s" % (high, _describe(item)))
            # build copies, so the caller's list can change without touching the wire map.
            return list(value) if to_wire else value
    elif code == _MAP_LIST:
        if (type(value) is list or (to_wire and type(value) is tuple)) and len(value) <= field[4]:
            prefix = path + field[1]
            return [_convert(item, field[5], "%s[%d]." % (prefix, i), to_wire)
                    for i, item in enumerate(value)]
    else:
        # _DEVICE and _BODY depend on the kind; _record converts them once the kind is known.
        return value
    _reject(field, path, value)


def _convert(src, fields, path, to_wire):
    if not isinstance(src, dict):
        raise RecordError(path[:-1] or None, "must be a map, got " + _describe(src))
    read, write = (1, 0) if to_wire else (0, 1)
    get = src.get
    out = {}
    for field in fields:
        value = get(field[read], _ABSENT)
        if value is _ABSENT:
            if field[3]:
                raise RecordError(path + field[1], "is required")
        elif field[2] == _INT and type(value) is int and field[4] <= value <= field[5]:
            # Inlined: most fields are in-range integers, and parse speed bounds host ingest.
            out[field[write]] = value
        else:
            out[field[write]] = _value(field, value, path, to_wire)
    if len(out) != len(src):
        known = [field[read] for field in fields]
        for key in src:
            if key not in known:
                _reject_unknown(path, key)
    if not to_wire:
        # true and 1.0 hash like the integer 1, so a lookup alone would take them for key 1.
        for key in src:
            if type(key) is not int:
                _reject_unknown(path, key)
    return out


def _reject_unknown(path, key):
    raise RecordError(path + str(key), "is not a field here (schema version %d)" % SCHEMA_VERSION)


def _device(src, shapes, to_wire, what):
    if src is _ABSENT:
        if None in shapes:
            return _ABSENT
        raise RecordError("device", "is required for " + what)
    if shapes == (None,):
        raise RecordError("device", "must be omitted for %s: it concerns the whole gateway" % what)
    if not isinstance(src, dict):
        raise RecordError("device", "must be a map, got " + _describe(src))
    for shape in shapes:
        if shape and src.get(shape[0][1] if to_wire else shape[0][0], _ABSENT) is not _ABSENT:
            return _convert(src, shape, "device.", to_wire)
    if not src and None in shapes:
        raise RecordError("device", "is empty: omit it when the record concerns the gateway")
    # No identifying field: name the one of the first device shape this kind allows.
    first = shapes[1] if shapes[0] is None else shapes[0]
    raise RecordError("device." + first[0][1], "is required for " + what)


def _record(src, to_wire):
    out = _convert(src, HEADER_FIELDS, "", to_wire)
    # Index 1 of a field is its name, index 0 its key: read the source, write the other form.
    read, write = (1, 0) if to_wire else (0, 1)
    kind = out[_KIND_FIELD[write]]
    body = src[_BODY_FIELD[read]]
    if kind == "event":
        if not isinstance(body, dict):
            raise RecordError("body", "must be a map, got " + _describe(body))
        event_type = body.get(_EVENT_TYPE[read], _ABSENT)
        if event_type is _ABSENT:
            raise RecordError("body.event_type", "is required")
        if event_type not in EVENT_TYPES:
            _reject(_EVENT_TYPE, "body.", event_type)
        fields = EVENT_FIELDS[event_type]
        shapes = _EVENT_DEVICES.get(event_type, _ANY_DEVICE)
        what = "event " + event_type
    else:
        fields, shapes = _KIND_SPEC[kind]
        what = kind
    device = _device(src.get(_DEVICE_FIELD[read], _ABSENT), shapes, to_wire, what)
    if device is not _ABSENT:
        out[_DEVICE_FIELD[write]] = device
    out[_BODY_FIELD[write]] = _convert(body, fields, "body.", to_wire)
    return out


# --- public API ----------------------------------------------------------------------------------


def build(values):
    """Validate a record in plain form and return its wire map (integer keys).

    Raises RecordError naming the first missing, unknown or out-of-range field.
    """
    return _record(values, True)


def encode(values):
    """Validate a record in plain form and return the CBOR payload to sign."""
    payload = cbor.dumps(build(values))
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RecordError(None, "record is %d bytes; the limit is %d"
                          % (len(payload), MAX_PAYLOAD_BYTES))
    return payload


def from_wire(wire):
    """Validate a decoded wire map and return the record in plain form."""
    return _record(wire, False)


def parse(payload):
    """Decode and validate a received CBOR payload; return the record in plain form.

    Raises RecordError for anything that is not a valid record of this schema version.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RecordError(None, "payload is %d bytes; the limit is %d"
                          % (len(payload), MAX_PAYLOAD_BYTES))
    try:
        wire = cbor.loads(payload)
    except CBORError as exc:
        raise RecordError(None, "payload is not valid CBOR: " + str(exc))
    return _record(wire, False)
