"""Scapy layers for the two wire formats meterseal carries: Wayne DART frames on the dispenser's
RS-485 line and the gateway's uplink frames over TCP. Host only (scapy never goes on the device):
they dissect captures and feed fuzzers. The codecs that run on the gateway are
meterseal.protocol.dart and (a later issue) meterseal.protocol.uplink; tests hold the layers to
the same bytes.

DART (docs/protocols/dart.md)::

    data frame     [adr][kind 3 | block][transactions: (trans, lng, data)...][crc LE][etx 03][sf FA]
    control frame  [adr][kind | block][sf FA]

    DARTFrame(adr=0x50, kind=3, block=2, transactions=[DARTTransaction(trans=1, data=b"\\x05")])

kind and block are the high and low nibble of CTRL (kind 3 is DATA, see DART_KINDS). The layer
works on de-stuffed bytes: dissection removes each DLE that precedes 0xFA first, and build adds
them back after computing the CRC (CRC-16/ARC, low byte first, over adr .. last data byte) when
crc is None. So bytes(DARTFrame(...)) and DARTFrame(wire) both speak wire bytes; dissect_dart is
DARTFrame(raw) that returns Raw for a truncated frame instead of raising. A crc or etx given
explicitly is kept, even when wrong, so fuzzers can send bad frames; crc_ok() tells whether a
dissected frame's CRC holds.

Uplink (DESIGN.md section 6)::

    [magic "MS"][version u8][type u8][length u32 BE][cbor_payload: length bytes][crc u32 BE]

The CRC-32 (ISO-HDLC) covers magic through cbor_payload and is computed on build when crc is
None. The message type numbers are defined here, in UPLINK_MESSAGE_TYPES, for the first time:
protocol/uplink.py (a later issue) must use the same numbers.
"""

import struct

from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    PacketListField,
    StrFixedLenField,
    StrLenField,
    XByteField,
    XIntField,
    XLEShortField,
)
from scapy.config import conf
from scapy.packet import Packet

from . import cbor, dart
from .crc import crc16_arc, crc32

# CTRL high nibble -> frame kind.
DART_KINDS = {
    dart.POLL >> 4: "POLL",
    dart.DATA >> 4: "DATA",
    dart.NAK >> 4: "NAK",
    dart.EOT >> 4: "EOT",
    dart.ACK >> 4: "ACK",
    dart.ACKPOLL >> 4: "ACKPOLL",
}
_DATA_KIND = dart.DATA >> 4
# CRC lo, CRC hi, ETX, SF after the transactions of a de-stuffed data frame.
_DATA_TRAILER = 4
_ADR_CTRL = 2

UPLINK_MESSAGE_TYPES = {
    1: "HELLO",
    2: "CHALLENGE",
    3: "AUTH",
    4: "RECORDS",
    5: "ACK",
    6: "NACK",
    7: "COMMAND",
    8: "COMMAND_RESULT",
    9: "PING",
    10: "PONG",
}
UPLINK_MAGIC = b"MS"
UPLINK_VERSION = 1


def dart_stuff(body):
    """Put a DLE before every 0xFA of ADR .. CRC hi."""
    return bytes(body).replace(b"\xfa", b"\x10\xfa")


def dart_destuff(raw):
    """Remove the DLE before every 0xFA."""
    return bytes(raw).replace(b"\x10\xfa", b"\xfa")


class DARTTransaction(Packet):
    """One TRANS LNG DATA unit of a DART data frame."""

    name = "DART transaction"
    fields_desc = [
        XByteField("trans", 0x01),
        FieldLenField("lng", None, length_of="data", fmt="B"),
        StrLenField("data", b"", length_from=lambda pkt: pkt.lng),
    ]

    def extract_padding(self, s):
        return b"", s

    def typed(self, direction):
        """This transaction as meterseal.protocol.dart decodes it (dart.TO_PUMP or FROM_PUMP)."""
        (transaction,) = dart.decode_transactions(bytes(self), direction)
        return transaction


class DARTFrame(Packet):
    """A Wayne DART frame; wire bytes in and out, DLE stuffing handled by the layer."""

    name = "Wayne DART frame"
    fields_desc = [
        XByteField("adr", dart.ADDRESS_MIN),
        BitEnumField("kind", _DATA_KIND, 4, DART_KINDS),
        BitField("block", 0, 4),
        ConditionalField(
            PacketListField(
                "transactions",
                [],
                DARTTransaction,
                length_from=lambda pkt: max(0, pkt._destuffed_length - _ADR_CTRL - _DATA_TRAILER),
            ),
            lambda pkt: pkt.kind == _DATA_KIND,
        ),
        ConditionalField(XLEShortField("crc", None), lambda pkt: pkt.kind == _DATA_KIND),
        ConditionalField(XByteField("etx", dart.ETX), lambda pkt: pkt.kind == _DATA_KIND),
        XByteField("sf", dart.SF),
    ]

    def pre_dissect(self, s):
        destuffed = dart_destuff(s)
        self._destuffed_length = len(destuffed)
        return destuffed

    def post_dissect(self, s):
        # The cache holds de-stuffed bytes; without it, bytes() rebuilds and stuffs the wire form.
        self.raw_packet_cache = None
        return s

    def post_build(self, pkt, pay):
        if self.kind != _DATA_KIND:
            return dart_stuff(pkt[:-1]) + pkt[-1:] + pay
        body = pkt[:-_DATA_TRAILER]
        if self.crc is None:
            crc = crc16_arc(body)
        else:
            crc = self.crc
        return dart_stuff(body + struct.pack("<H", crc)) + pkt[-2:] + pay

    def crc_ok(self):
        """Whether a data frame's CRC matches ADR .. last data byte (control frames have none)."""
        if self.kind != _DATA_KIND:
            return True
        body = bytes((self.adr, self.kind << 4 | self.block))
        body += b"".join(bytes(transaction) for transaction in self.transactions)
        return self.crc == crc16_arc(body)

    def to_frame(self):
        """The same frame as meterseal.protocol.dart decodes it (raises DARTError if invalid)."""
        return dart.decode_frame(bytes(self))


def dissect_dart(raw_bytes):
    """Dissect one DART frame given as wire bytes (stuffed, through SF). Bytes too short for
    the frame kind in CTRL come back as a Raw layer instead of raising."""
    try:
        return DARTFrame(raw_bytes)
    except struct.error:
        return conf.raw_layer(raw_bytes)


class UplinkFrame(Packet):
    """A meterseal uplink frame (DESIGN.md section 6)."""

    name = "meterseal uplink frame"
    fields_desc = [
        StrFixedLenField("magic", UPLINK_MAGIC, 2),
        ByteField("version", UPLINK_VERSION),
        ByteEnumField("type", 9, UPLINK_MESSAGE_TYPES),
        FieldLenField("length", None, length_of="cbor_payload", fmt="!I"),
        StrLenField("cbor_payload", b"", length_from=lambda pkt: pkt.length),
        XIntField("crc", None),
    ]

    def post_build(self, pkt, pay):
        if self.crc is None:
            pkt = pkt[:-4] + struct.pack("!I", crc32(pkt[:-4]))
        return pkt + pay

    def crc_ok(self):
        """Whether the CRC-32 matches magic .. cbor_payload as dissected."""
        header = struct.pack("!2sBBI", self.magic, self.version, self.type, self.length)
        return self.crc == crc32(header + self.cbor_payload)

    def payload_value(self):
        """The payload decoded as deterministic CBOR (raises CBORError if it is not)."""
        return cbor.loads(self.cbor_payload)
