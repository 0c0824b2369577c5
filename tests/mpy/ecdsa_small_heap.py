"""ES256 without the fixed-base table inside a 192 KB heap, as on an ESP32/RP2040 gateway.

The RFC 6979 A.2.5 vectors must come out exactly with the built-in small comb, a few dozen
signatures in a row must not exhaust the heap, and first boot must create, reload and guard the
key file with this port's filesystem calls.
"""
# heapsize: 192K

import gc
import hashlib
import os

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
)
SIGNATURES_IN_A_ROW = 40

key = signer.SoftwareSigner(PRIVATE_KEY)
assert key.public_key() == b"\x04" + UX.to_bytes(32, "big") + UY.to_bytes(32, "big")

for message, k, r, s in VECTORS:
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

print("PASS ecdsa_small_heap")
