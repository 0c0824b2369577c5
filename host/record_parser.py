"""The host's record parser: for any payload, exactly what ``protocol.records.parse`` returns or
raises, in about half the time. Verifying a record costs its signature check plus this parse,
so the parse bounds the ingest's rate (DESIGN.md section 10).

records.parse is the reference and stays as it is, because it runs on MicroPython too: a CBOR
decoder and a schema walk in plain Python. Here a payload is decoded by cbor2's C extension,
then walked by tables compiled from records' own field tables::

    payload --cbor2--> wire map --walk--> plain record --cbor2 re-encode == payload?--> record
        \\______ anything refused or unusual on the way: records.parse(payload) decides ______/

cbor2 takes more than the deterministic subset does (non-shortest heads, indefinite lengths,
tags, repeated or unsorted keys, trailing bytes). So the record is kept only when the walk finds
every map's keys ascending and re-encoding the wire map gives back the payload byte for byte:
then the payload is the deterministic encoding of that map, which protocol.cbor decodes to the
same map. Everything else goes to records.parse, which returns the same record or raises the
same RecordError: hostile payloads take the reference path, never a second opinion.
tests/test_record_parser.py holds the two equal on valid and on damaged payloads.
"""

import io
import threading

import cbor2

from meterseal.protocol import records as reference

# records' field type codes and device shapes are private to it: MicroPython folds the codes
# into constants. The walk below follows records._value and records._device code for code.
_INT, _BOOL, _BYTES, _TEXT = reference._INT, reference._BOOL, reference._BYTES, reference._TEXT
_ID, _ENUM, _INT_LIST, _MAP_LIST = (reference._ID, reference._ENUM, reference._INT_LIST,
                                    reference._MAP_LIST)
_ID_CHARS = reference._ID_CHARS

_ABSENT = object()
_per_thread = threading.local()


def _encoder():
    """This thread's cbor2 encoder: one made per call would take a third of the parse."""
    encoder = getattr(_per_thread, "encoder", None)
    if encoder is None:
        encoder = _per_thread.encoder = cbor2.CBOREncoder(io.BytesIO())
    return encoder


def _table(fields):
    """A field table as the walk reads it: ({key: (name, code, a, b, required)}, how many fields
    are required); a map list's item fields are compiled too."""
    compiled = {}
    for key, name, code, required, a, b in fields:
        compiled[key] = (name, code, a, _table(b) if code == _MAP_LIST else b, required)
    return compiled, sum(1 for field in fields if field[3])


def _shapes(shapes):
    """Device shapes as (first field's key, table), None standing for "may be omitted"."""
    return tuple(None if shape is None else (shape[0][0], _table(shape)) for shape in shapes)


_HEADER = _table(reference.HEADER_FIELDS)
# kind (event type for kind "event") -> (body table, device shapes)
_KINDS = {kind: (_table(fields), _shapes(shapes))
          for kind, (fields, shapes) in reference._KIND_SPEC.items()}
_EVENTS = {event_type: (_table(fields),
                        _shapes(reference._EVENT_DEVICES.get(event_type, reference._ANY_DEVICE)))
           for event_type, fields in reference.EVENT_FIELDS.items()}
_EVENT_TYPE_KEY = reference._EVENT_TYPE[0]


def _walk(src, table):
    """The plain form of wire map ``src`` by a compiled field table; None unless its keys
    ascend, each names a field of the table holding a valid value, and every required field is
    there. Device and body values pass through unchanged, as in records._convert."""
    fields, required = table
    out = {}
    previous = -1
    for key, value in src.items():
        # Integer keys only: 1.0 and True would find field 1 in a lookup.
        if type(key) is not int or key <= previous:
            return None
        previous = key
        field = fields.get(key)
        if field is None:
            return None
        name, code, a, b, is_required = field
        if code == _INT:
            if type(value) is not int or not a <= value <= b:
                return None
        elif code == _ENUM:
            if type(value) is not str or value not in a:
                return None
        elif code == _TEXT:
            if type(value) is not str:
                return None
            if value.isascii():  # then isprintable() means no control character, as below
                if not a <= len(value) <= b or not value.isprintable():
                    return None
            elif not a <= len(value.encode()) <= b or min(value) < " " or "\x7f" in value:
                return None
        elif code == _BYTES:
            if type(value) is not bytes or not a <= len(value) <= b:
                return None
        elif code == _BOOL:
            if type(value) is not bool:
                return None
        elif code == _ID:
            if type(value) is not str or not a <= len(value) <= b or value.strip(_ID_CHARS):
                return None
        elif code == _INT_LIST:
            if type(value) is not list or len(value) > a:
                return None
            for item in value:
                if type(item) is not int or not 0 <= item <= b:
                    return None
        elif code == _MAP_LIST:
            if type(value) is not list or len(value) > a:
                return None
            value = [_walk(item, b) if type(item) is dict else None for item in value]
            if None in value:
                return None
        # else the device or the body, converted once the kind is known
        out[name] = value
        required -= is_required
    return out if required == 0 else None


def _device(src, shapes):
    """records._device: the first shape whose identifying field ``src`` holds converts it."""
    if src is _ABSENT:
        return _ABSENT if None in shapes else None
    if type(src) is not dict:
        return None
    for shape in shapes:
        if shape is not None and shape[0] in src:
            return _walk(src, shape[1])
    return None


def _record(wire):
    """The plain record of a decoded payload, or None where the walk does not vouch for it."""
    record = _walk(wire, _HEADER)
    if record is None:
        return None
    body = record["body"]
    if record["kind"] == "event":
        if type(body) is not dict:
            return None
        event_type = body.get(_EVENT_TYPE_KEY)
        spec = _EVENTS.get(event_type) if type(event_type) is str else None
    else:
        spec = _KINDS[record["kind"]]
    if spec is None:
        return None
    table, shapes = spec
    device = _device(record.get("device", _ABSENT), shapes)
    if device is None:
        return None
    if device is not _ABSENT:
        record["device"] = device
    record["body"] = _walk(body, table) if type(body) is dict else None
    return record if record["body"] is not None else None


def _decoded(payload):
    """The record if cbor2 and the walk vouch for it, else None."""
    if type(payload) is not bytes or len(payload) > reference.MAX_PAYLOAD_BYTES:
        return None
    try:
        wire = cbor2.loads(payload, read_size=reference.MAX_PAYLOAD_BYTES)
    except Exception:  # whatever cbor2 makes of hostile bytes, records.parse has the say
        return None
    record = _record(wire) if type(wire) is dict else None
    # After the walk, every value is an int in 64 bits, bool, str, bytes, list or map with
    # ascending small keys, each of which cbor2 encodes as the deterministic encoding does.
    if record is None or _encoder().encode_to_bytes(wire) != payload:
        return None
    return record


def parse(payload):
    """records.parse(payload): the record in plain form, or RecordError."""
    record = _decoded(payload)
    return reference.parse(payload) if record is None else record
