"""What the REST API sends and accepts (docs/api.md), as pydantic models, so the OpenAPI spec
describes every field. A response model mirrors a store row type (host/storage/rows.py) field for
field, so the two cannot drift apart; bytes travel as lowercase hex. Times are integer
milliseconds since 1970-01-01 UTC, as in the store."""

import dataclasses
import typing
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator

from meterseal.fraud_rules.facts import AUTHORISED_WORK

from . import verify
from .storage import CLOSE_REASONS, detection, rows
from .storage.migrations import DEVICE_TYPES, GATEWAY_STATUSES

# Integers the databases hold as signed 64-bit (BIGINT): larger ones are refused up front.
MAX_INT64 = 2**63 - 1


def _without_nul(text):
    # PostgreSQL's text cannot hold NUL, SQLite's can: refused here, so both backends answer
    # alike (PostgreSQL would fail the query, a 503 blaming the database).
    if "\x00" in text:
        raise ValueError("must not contain NUL (0x00) characters")
    return text


Hex = Annotated[str, Field(description="bytes as lowercase hex")]
Millis = Annotated[int, Field(ge=0, le=MAX_INT64, description="ms since 1970-01-01 UTC")]
# Any text the API takes in: a body field, a path segment, a query parameter.
Text = Annotated[str, AfterValidator(_without_nul)]
_Text = Annotated[Text, Field(min_length=1, max_length=200)]
_AS_HEX = {bytes: Hex, bytes | None: Hex | None}


def to_model(model, row, **extra):
    """``model`` built from a store row value (its bytes fields as hex) and ``extra`` fields."""
    values = {field.name: getattr(row, field.name) for field in dataclasses.fields(row)}
    return model(**{name: value.hex() if isinstance(value, bytes) else value
                    for name, value in values.items() if name in model.model_fields}, **extra)


def _mirror(row_type, *, leave_out=(), **extra):
    """A response model named after ``row_type`` + "Out", with its fields (bytes as hex) but
    those in ``leave_out``, plus ``extra`` (name=(type, default) as create_model takes them)."""
    hints = typing.get_type_hints(row_type)
    mirrored = {field.name: (_AS_HEX.get(hints[field.name], hints[field.name]), ...)
                for field in dataclasses.fields(row_type) if field.name not in leave_out}
    name = row_type.__name__ + "Out"
    return create_model(name, __doc__=row_type.__doc__, **mirrored, **extra)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str = Field(description="what went wrong, in one line")


def _page(item_model, name):
    return create_model(name, items=(list[item_model], ...), next_after=(
        int | None, Field(description="pass as `after` for the next page; null: the last")))


# --- registry -----------------------------------------------------------------------------------

class SiteIn(_In):
    site_id: _Text
    name: _Text
    address: Annotated[Text, Field(max_length=1000)] | None = None


class GatewayIn(_In):
    gateway_id: _Text
    serial: _Text
    site_id: _Text
    status: Literal[GATEWAY_STATUSES] = "active"
    registered_at_ms: Millis | None = Field(None, description="default: now")
    software_id: _Text | None = Field(None, description="NAME VERSION sha256:DIGEST it runs; "
                                                        "its records are checked against it")


class GatewayStatusIn(_In):
    status: Literal[GATEWAY_STATUSES]


class KeyIn(_In):
    public_key: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{130}$",
                                     description="65-byte uncompressed SEC1 key, hex")]
    valid_from_ms: Millis
    replaces_kid: Annotated[str | None, Field(
        pattern=r"^[0-9a-fA-F]{64}$", description="a rotation: the key this one replaces")] = None

    @field_validator("public_key")
    @classmethod
    def _on_p256(cls, public_key):
        # The ingest loads every key of a gateway before it checks the gateway's HELLO: a key
        # that is not a P-256 point would lock the gateway out, so it never gets in the registry.
        try:
            verify.load_public_key(bytes.fromhex(public_key))
        except ValueError as exc:
            raise ValueError(f"not a P-256 point ({exc})") from None
        return public_key


class RevokeIn(_In):
    revoked_at_ms: Millis


class DeviceIn(_In):
    device_ref: _Text
    device_type: Literal[DEVICE_TYPES]
    model: _Text
    serial: _Text
    type_approval_cert: _Text
    expected_software_id: _Text


SiteOut = _mirror(rows.Site)
GatewayOut = _mirror(rows.Gateway)
KeyOut = _mirror(rows.GatewayKey)
DeviceOut = _mirror(rows.Device)

# --- records, findings, ingest state ------------------------------------------------------------

RecordOut = _mirror(rows.StoredRecord, leave_out=("envelope",))
RecordDetailOut = create_model(
    "RecordDetailOut", __base__=RecordOut,
    envelope=(Hex, Field(description="the COSE_Sign1 bytes exactly as received: re-verify them")))
RecordPageOut = _page(RecordOut, "RecordPageOut")
FindingOut = _mirror(rows.ChainFinding)
IngestStateOut = _mirror(rows.IngestState)

# --- alerts and the audit log -------------------------------------------------------------------


class CloseIn(_In):
    reason: Literal[CLOSE_REASONS]


class AssignIn(_In):
    assignee: _Text | None = Field(description="a user name, or null to unassign")


class NoteIn(_In):
    text: Annotated[Text, Field(min_length=1)]


AlertOut = _mirror(rows.Alert)
NoteOut = _mirror(rows.AlertNote)
TransitionOut = _mirror(rows.AlertTransition)
AlertDetailOut = create_model("AlertDetailOut", __base__=AlertOut,
                              notes=(list[NoteOut], ...), transitions=(list[TransitionOut], ...))
AuditEntryOut = _mirror(rows.AuditEntry)
AuditPageOut = _page(AuditEntryOut, "AuditPageOut")
AuditCheckOut = _mirror(rows.AuditCheck, intact=(bool, ...))

# --- what the detectors know: work orders, prices, tanks, nozzle flows --------------------------

Grade = Annotated[int, Field(ge=1, le=99, description="grade (product) number, as in fuel.sale")]


class WorkOrderIn(_In):
    work_order_id: _Text
    work: Annotated[list[Literal[AUTHORISED_WORK]], Field(min_length=1)]
    valid_from_ms: Millis
    valid_to_ms: Millis
    gateway_id: _Text | None = Field(None, description="default: every gateway of the site")
    device_ref: _Text | None = Field(None, description='e.g. "80/1" or "80"; default: all')
    technician: Annotated[Text, Field(max_length=200)] = ""
    reference: Annotated[Text, Field(max_length=200)] = Field(
        "", description="the authority's own number for the order")


class PriceIn(_In):
    grade: Grade
    price_minor_per_kl: Annotated[int, Field(ge=0, le=MAX_INT64)]
    valid_from_ms: Millis


class GradeTanksIn(_In):
    tanks: dict[Annotated[str, Field(pattern=r"^[1-9][0-9]?$")],
                Annotated[int, Field(ge=0, le=MAX_INT64)]] = Field(
        description='grade -> tank number, e.g. {"92": 1, "95": 2}; replaces the site\'s map')


class MaxFlowIn(_In):
    device_ref: _Text
    max_flow_lpm: Annotated[float, Field(gt=0, le=10000)]


WorkOrderOut = _mirror(detection.WorkOrderEntry)
PriceOut = _mirror(detection.AnnouncedPrice)
GradeTankOut = _mirror(detection.GradeTank)
MaxFlowOut = _mirror(detection.NozzleMaxFlow)
