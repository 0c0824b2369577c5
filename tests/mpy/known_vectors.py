"""Known-answer vectors shared by the pytest tests and the plain scripts beside this file, so
both interpreters check exactly the same published values. Plain data, MicroPython-compatible."""

# RFC 6979 Appendix A.2.5: P-256 key pair and its SHA-256 signatures.
RFC_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC_VECTORS = (
    (
        b"sample",
        0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    ),
    (
        b"test",
        0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
        0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
        0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083,
    ),
    # C2SP CCTV rfc6979/README.md, same key: the first HMAC-DRBG candidate is >= n and must be
    # rejected (a 2^-32 event on P-256 that the RFC's own vectors never hit).
    (
        b"wv[vnX",
        0x2AE40DF9D9DAB61D688DE3DCB9867A98ECC70DD4D6C0F6C228B6E4E0B18B29BC,
        0xEFD9073B652E76DA1B5A019C0E4A2E3FA529B035A6ABB91EF67F0ED7A1F21234,
        0x3DB4706C9D9F4A4FE13BB5E08EF0FAB53A57DBAB2061C83A35FA411C68D2BA33,
    ),
)


# RFC 8949 Appendix A, every example inside the subset.
APPENDIX_A_IN_SUBSET = (
    (0, "00"),
    (1, "01"),
    (10, "0a"),
    (23, "17"),
    (24, "1818"),
    (25, "1819"),
    (100, "1864"),
    (1000, "1903e8"),
    (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-(2**64), "3bffffffffffffffff"),
    (-1, "20"),
    (-10, "29"),
    (-100, "3863"),
    (-1000, "3903e7"),
    (False, "f4"),
    (True, "f5"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"),
    ("a", "6161"),
    ("IETF", "6449455446"),
    ('"\\', "62225c"),
    ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"),
    ("\U00010151", "64f0908591"),
    ([], "80"),
    ([1, 2, 3], "83010203"),
    ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"),
    ({1: 2, 3: 4}, "a201020304"),
    ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    (
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
        "a56161614161626142616361436164614461656145",
    ),
)


# COSE WG Examples, ecdsa-examples/ecdsa-sig-01.json (RFC 9052 C.2.1 style Sign1): key "11",
# protected {1: -7, 3: 0}, payload "This is the content.", its ToBeSigned and r || s.
COSE_EXAMPLE_X = "bac5b11cad8f99f9c72b05cf4b9e26d244dc189f745228255a219a86d6a09eff"
COSE_EXAMPLE_Y = "20138bf82dc1b6d562be0fa54ab7804a3a64b6d72ccfed6b6fb6ed28bbfc117e"
COSE_EXAMPLE_PROTECTED = "a201260300"
COSE_EXAMPLE_PAYLOAD = b"This is the content."
COSE_EXAMPLE_TO_BE_SIGNED = (
    "846a5369676e61747572653145a2012603004054546869732069732074686520636f6e74656e742e"
)
COSE_EXAMPLE_SIGNATURE = (
    "eae868ecc176883766c5dc5ba5b8dca25dab3c2e56a551ce5705b793914348e1"
    "72727f48461fabbba2e343492ddecac3983686250bc68e9f1a7a07d41225b59f"
)


# Wayne DART frames captured from real pumps (pump -> controller), wire bytes in hex, with the
# address, block number and typed transactions (class name in meterseal.protocol.dart and its
# constructor arguments) each must decode to and re-encode from byte for byte.
DART_CAPTURED_FRAMES = (
    # DC1: status 8, suspended.
    ("5030010108" "9E9A" "03FA", 0x50, 0, (("DC1PumpStatus", (8,)),)),
    # End of sale: DC2 0.31 L for 0.51, DC3 unit price 1.645 on nozzle 0 (in), DC1 status 5,
    # filling completed.
    (
        "503202080000003100000051030400164500010105" "B385" "03FA",
        0x50,
        2,
        (
            ("DC2FilledVolumeAmount", (31, 51)),
            ("DC3NozzleStatusPrice", (1645, 0, False)),
            ("DC1PumpStatus", (5,)),
        ),
    ),
    # DC101 volume counters of logical nozzle 1: total 2812.49 L, meter 1 the same, meter 2 none.
    (
        "5031651001000028124900002812490000000000" "6089" "03FA",
        0x50,
        1,
        (("DC101TotalCounters", (1, 281249, 281249, 0)),),
    ),
)

# DART frames built here to exercise DLE stuffing (DLE 0x10 before every 0xFA in data and CRC),
# with their direction (0 to pump, 1 from pump) and content as above.
DART_STUFFED_FRAMES = (
    # CRC 0xFA9C: the high CRC byte is stuffed.
    ("50380101089C" "10FA" "03FA", 1, 0x50, 8, (("DC1PumpStatus", (8,)),)),
    # CRC 0x9EFA: the low CRC byte is stuffed (a reset command to pump 0x5B).
    ("5B30010105" "10FA" "9E03FA", 0, 0x5B, 0, (("CD1Command", (5,)),)),
    # Data 10 FA FA in an untyped transaction: a literal DLE is not doubled, each FA is stuffed.
    (
        "5031100310" "10FA" "10FA" "5685" "03FA",
        1,
        0x50,
        1,
        (("RawTransaction", (0x10, b"\x10\xfa\xfa")),),
    ),
)

# DART control frames: wire bytes, address, kind (CTRL high nibble), block number.
DART_CONTROL_FRAMES = (
    ("5020FA", 0x50, 0x20, 0),  # POLL
    ("51C3FA", 0x51, 0xC0, 3),  # ACK block 3
    ("6F5FFA", 0x6F, 0x50, 15),  # NAK block 15
    ("5A71FA", 0x5A, 0x70, 1),  # EOT block 1
    ("50E2FA", 0x50, 0xE0, 2),  # ACKPOLL block 2
)


# Veeder-Root TLS checksums: the serial manual's refusal <SOH>9999 -> FF1B, and an i10100 reply
# captured from a TLS-350 (published in eredden/Veeder-Root-TLS-Socket-Library), each as the bytes
# from SOH through the last character before CCCC and the checksum the console sent.
TLS_CHECKSUM_VECTORS = (
    (b"\x019999", 0xFF1B),
    (b"\x01i101002312301342020402&&", 0xFB3B),
)
TLS_CAPTURED_REPLY = b"\x01i101002312301342020402&&FB3B\x03"

# IEEE 754 singles as TLS sends them, with the record units they decode to in metric consoles:
# (hex, quantity: 0 volume in mL, 1 height in um, 2 temperature in centi-degC, units).
TLS_FLOAT_VECTORS = (
    ("3F800000", 0, 1000),  # 1.0 L
    ("461C4000", 0, 10000000),  # 10000.0 L
    ("47435000", 0, 50000000),  # 50000.0 L
    ("3A83126F", 0, 1),  # 0.001 L (the nearest single)
    ("C2C7FAE1", 2, -9999),  # -99.99 degC
    ("B8D1B717", 2, 0),  # -0.0001 degC rounds to 0
    ("00000000", 1, 0),
    ("449C4000", 1, 1250000),  # 1250.0 mm
)

# MT-SICS reply lines (without CR LF): Mettler Toledo's documented "S S 100.00 g" with its
# 10-character value field, and a meterseal MST sale, with what they must decode to.
MTSICS_WEIGHT_VECTORS = (
    # (line, reply id, status, mg, unit, decimals)
    (b"S S     100.00 g", "S", "S", 100000, "g", 2),
    (b"S D     -0.005 kg", "S", "D", -5000, "kg", 3),
    (b"TA A      0.250 kg", "TA", "A", 250000, "kg", 3),
)
MTSICS_SALE_VECTOR = (
    b"MST A 42 S      1.245 kg      0.010 kg      1.235 kg 1280 1581 123 W      0.000 kg Z 1300",
    # txn, stable, gross, tare, net (mg), unit price, amount, plu, tare mode, start mg, zero, ms
    (42, True, 1245000, 10000, 1235000, 1280, 1581, 123, "weighed", 0, True, 1300),
)
