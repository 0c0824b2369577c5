"""RFC 6979 Appendix A.2.5 (P-256, SHA-256) with the fixed-base table, on MicroPython and CPython.

The nonce k, r and s for "sample" and "test", and the public key U, must match the RFC exactly.
A third vector from C2SP CCTV (rfc6979/README.md, same key) rejects the first nonce candidate.
"""

import hashlib

from meterseal.firmware import ecdsa, p256, signer

PRIVATE_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
VECTORS = (
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
    (
        b"wv[vnX",
        0x2AE40DF9D9DAB61D688DE3DCB9867A98ECC70DD4D6C0F6C228B6E4E0B18B29BC,
        0xEFD9073B652E76DA1B5A019C0E4A2E3FA529B035A6ABB91EF67F0ED7A1F21234,
        0x3DB4706C9D9F4A4FE13BB5E08EF0FAB53A57DBAB2061C83A35FA411C68D2BA33,
    ),
)

table = p256.Table()
key = signer.SoftwareSigner(PRIVATE_KEY, table)
assert key.public_key() == b"\x04" + UX.to_bytes(32, "big") + UY.to_bytes(32, "big")
assert p256.base_mul(PRIVATE_KEY, table) == (UX, UY)

for message, k, r, s in VECTORS:
    digest = hashlib.sha256(message).digest()
    assert next(ecdsa.nonces(PRIVATE_KEY, digest)) == k, message
    assert p256.base_mul(k, table)[0] % p256.N == r, message
    expected = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert ecdsa.sign(PRIVATE_KEY, message, table) == expected, message
    assert key.sign(message) == expected, message

print("PASS rfc6979_vectors")
