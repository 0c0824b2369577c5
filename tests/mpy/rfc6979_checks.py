"""RFC 6979 Appendix A.2.5 (P-256, SHA-256) with the fixed-base table, on MicroPython and CPython.

The nonce k, r and s for "sample" and "test", and the public key U, must match the RFC exactly.
A third vector from C2SP CCTV (rfc6979/README.md, same key) rejects the first nonce candidate.
"""

import hashlib

from known_vectors import RFC_KEY as PRIVATE_KEY
from known_vectors import RFC_UX as UX
from known_vectors import RFC_UY as UY
from known_vectors import RFC_VECTORS
from meterseal.firmware import ecdsa, p256, signer


table = p256.Table()
key = signer.SoftwareSigner(PRIVATE_KEY, table)
assert key.public_key() == b"\x04" + UX.to_bytes(32, "big") + UY.to_bytes(32, "big")
assert p256.base_mul(PRIVATE_KEY, table) == (UX, UY)

for message, k, r, s in RFC_VECTORS:
    digest = hashlib.sha256(message).digest()
    assert next(ecdsa.nonces(PRIVATE_KEY, digest)) == k, message
    assert p256.base_mul(k, table)[0] % p256.N == r, message
    expected = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert ecdsa.sign(PRIVATE_KEY, message, table) == expected, message
    assert key.sign(message) == expected, message

print("PASS rfc6979_checks")
