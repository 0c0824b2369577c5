"""ES256 without the fixed-base table inside a 192 KB heap, as on an ESP32/RP2040 gateway.

The RFC 6979 A.2.5 vectors must come out exactly with the built-in small comb, a few dozen
signatures in a row must not exhaust the heap, and first boot must create, reload and guard the
key file with this port's filesystem calls.
"""
# heapsize: 192K

import gc
import hashlib
import os

from known_vectors import RFC_KEY as PRIVATE_KEY
from known_vectors import RFC_UX as UX
from known_vectors import RFC_UY as UY
from known_vectors import RFC_VECTORS
from meterseal.firmware import ecdsa, p256, signer

SIGNATURES_IN_A_ROW = 40

key = signer.SoftwareSigner(PRIVATE_KEY)
assert key.public_key() == b"\x04" + UX.to_bytes(32, "big") + UY.to_bytes(32, "big")

for message, k, r, s in RFC_VECTORS:
    digest = hashlib.sha256(message).digest()
    assert next(ecdsa.nonces(PRIVATE_KEY, digest)) == k, message
    assert p256.base_mul(k)[0] % p256.N == r, message
    assert key.sign(message) == r.to_bytes(32, "big") + s.to_bytes(32, "big"), message

gc.collect()
previous = None
for i in range(SIGNATURES_IN_A_ROW):
    signature = key.sign(b"record %d" % i)
    assert len(signature) == 64 and signature != previous
    previous = signature
# Signing keeps nothing: the heap after a collection is back where it was (within a few
# blocks of interpreter bookkeeping).
if hasattr(gc, "mem_free"):
    gc.collect()
    before = gc.mem_free()
    for i in range(SIGNATURES_IN_A_ROW):
        key.sign(b"record %d" % i)
    gc.collect()
    assert before - gc.mem_free() < 1024, (before, gc.mem_free())

# First boot: create the key file, reload the same key, refuse a damaged file.
key_path = (os.getenv("TMPDIR") or "/tmp") + "/meterseal-%s.key" % os.urandom(6).hex()
try:
    created = signer.load_or_create(key_path)
    assert signer.load_or_create(key_path).public_key() == created.public_key()
    with open(key_path, "wb") as f:
        f.write(b"MSK1")
    try:
        signer.load_or_create(key_path)
        raise AssertionError("a 4-byte key file was accepted")
    except signer.KeyStoreError as e:
        assert str(e) == "key file %s: 4 bytes, expected 40" % key_path, str(e)
finally:
    os.remove(key_path)

print("PASS ecdsa_small_heap_checks")
