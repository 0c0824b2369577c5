"""CRCs used on the wire, table-driven so they run unchanged on MicroPython and CPython.

- ``crc16_arc``: CRC-16/ARC (poly 0x8005 reflected as 0xA001, init 0, no final XOR), which Wayne
  DART appends low byte first over ADR .. last data byte. Catalogue check value 0xBB3D.
- ``crc32``: CRC-32 (ISO-HDLC: poly 0x04C11DB7 reflected as 0xEDB88320, init and final XOR
  0xFFFFFFFF), used by the journal frames and the uplink frames. Check value 0xCBF43926.

Both accept a running value so a frame can be checked in pieces, like ``zlib.crc32``.
"""

from array import array


def _reflected_table(poly, typecode):
    table = array(typecode, range(256))
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_CRC16_TABLE = _reflected_table(0xA001, "H")
_CRC32_TABLE = _reflected_table(0xEDB88320, "L")


def crc16_arc(data, crc=0):
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc32_table_driven(data, crc=0):
    table = _CRC32_TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


# Prefer the port's native CRC-32 (same polynomial, far faster, and it avoids boxing 32-bit ints
# on 32-bit boards); the table-driven version is the fallback where binascii lacks it.
try:
    from binascii import crc32
except ImportError:
    crc32 = crc32_table_driven
