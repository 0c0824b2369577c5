import zlib

import crcmod.predefined
import pytest
from hypothesis import given, strategies as st

from meterseal.protocol import crc

CATALOGUE_CHECK = b"123456789"

# crcmod's predefined names: 'crc-16' is CRC-16/ARC, 'crc-32' is CRC-32/ISO-HDLC.
crcmod_arc = crcmod.predefined.mkCrcFun("crc-16")
crcmod_crc32 = crcmod.predefined.mkCrcFun("crc-32")

CRC32_IMPLEMENTATIONS = [crc.crc32, crc.crc32_table_driven]


def test_crc16_arc_catalogue_check_value():
    assert crc.crc16_arc(CATALOGUE_CHECK) == 0xBB3D == crcmod_arc(CATALOGUE_CHECK)


@pytest.mark.parametrize("crc32", CRC32_IMPLEMENTATIONS)
def test_crc32_catalogue_check_value(crc32):
    assert crc32(CATALOGUE_CHECK) == 0xCBF43926 == crcmod_crc32(CATALOGUE_CHECK)


# Frames captured from real Wayne DART pumps: the CRC covers ADR .. last data byte and is sent
# low byte first, before ETX SF.
@pytest.mark.parametrize(
    "frame_hex",
    [
        "50 30 01 01 08 9E 9A 03 FA",
        "50 32 02 08 00 00 00 31 00 00 00 51 03 04 00 16 45 00 01 01 05 B3 85 03 FA",
        "50 31 65 10 01 00 00 28 12 49 00 00 28 12 49 00 00 00 00 00 60 89 03 FA",
    ],
)
def test_crc16_arc_matches_captured_dart_frames(frame_hex):
    frame = bytes.fromhex(frame_hex)
    body, crc_lo, crc_hi = frame[:-4], frame[-4], frame[-3]
    assert crc.crc16_arc(body) == crc_lo | (crc_hi << 8)


@given(st.binary(max_size=600))
def test_crc16_arc_agrees_with_crcmod(data):
    assert crc.crc16_arc(data) == crcmod_arc(data)


@pytest.mark.parametrize("crc32", CRC32_IMPLEMENTATIONS)
@given(data=st.binary(max_size=600))
def test_crc32_agrees_with_crcmod_and_zlib(crc32, data):
    assert crc32(data) == crcmod_crc32(data) == zlib.crc32(data)


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_running_values_chain_across_pieces(first, second):
    assert crc.crc16_arc(second, crc.crc16_arc(first)) == crc.crc16_arc(first + second)
    for crc32 in CRC32_IMPLEMENTATIONS:
        assert crc32(second, crc32(first)) == crc32(first + second)


def test_accepts_bytearray_and_memoryview():
    data = bytearray(b"meterseal")
    expected = crcmod_crc32(bytes(data))
    assert crc.crc32_table_driven(memoryview(data)) == expected
    assert crc.crc16_arc(memoryview(data)) == crcmod_arc(bytes(data))
