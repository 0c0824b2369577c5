# CRC check values and captured DART frames, on both interpreters. The table-driven CRC-32 is
# checked explicitly because the port's native binascii.crc32 would otherwise hide it.
from binascii import unhexlify

from meterseal.protocol import crc

assert crc.crc16_arc(b"123456789") == 0xBB3D
assert crc.crc32(b"123456789") == 0xCBF43926
assert crc.crc32_table_driven(b"123456789") == 0xCBF43926
assert crc.crc32_table_driven(b"") == 0 and crc.crc16_arc(b"") == 0

for frame_hex in (
    "5030010108" "9E9A" "03FA",
    "503202080000003100000051030400164500010105" "B385" "03FA",
    "5031651001000028124900002812490000000000" "6089" "03FA",
):
    frame = unhexlify(frame_hex)
    assert crc.crc16_arc(frame[:-4]) == frame[-4] | (frame[-3] << 8), frame_hex

data = bytes(range(256)) * 3
for split in (0, 1, 100, 767, 768):
    assert crc.crc32_table_driven(data[split:], crc.crc32_table_driven(data[:split])) == crc.crc32(data)
    assert crc.crc16_arc(data[split:], crc.crc16_arc(data[:split])) == crc.crc16_arc(data)
assert crc.crc32_table_driven(memoryview(data)) == crc.crc32(data)

print("PASS crc_checks")
