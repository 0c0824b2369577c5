"""ES256 signing: ECDSA over P-256 with SHA-256 and RFC 6979 deterministic nonces.

Signatures are 64 bytes, r‖s big-endian, as COSE wants them. Signing needs no random source for
correctness; randomness only blinds the computation (see `sign_digest`).
"""

import hashlib
import os

from meterseal.firmware import p256

_BLOCK_SIZE = 64  # SHA-256 block size, the HMAC key width
_IPAD = int.from_bytes(b"\x36" * _BLOCK_SIZE, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK_SIZE, "big")


def hmac_sha256(key, message):
    """RFC 2104 HMAC with SHA-256 (MicroPython has no hmac module)."""
    if len(key) > _BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    # XOR the pads as one integer each: a per-byte loop is slow on MicroPython.
    key_int = int.from_bytes(key + bytes(_BLOCK_SIZE - len(key)), "big")
    inner = hashlib.sha256((key_int ^ _IPAD).to_bytes(_BLOCK_SIZE, "big"))
    inner.update(message)
    outer = hashlib.sha256((key_int ^ _OPAD).to_bytes(_BLOCK_SIZE, "big"))
    outer.update(inner.digest())
    return outer.digest()


def nonces(secret, digest):
    """RFC 6979 §3.2 candidates k for `secret` and a SHA-256 `digest`, in order.

    qlen = hlen = 256, so bits2int is a plain conversion and one HMAC block makes one candidate.
    """
    if len(digest) != 32:
        raise ValueError("ES256 digest must be 32 bytes, got %d" % len(digest))
    x = secret.to_bytes(32, "big")
    h1 = (int.from_bytes(digest, "big") % p256.N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = hmac_sha256(b"\x00" * 32, v + b"\x00" + x + h1)
    v = hmac_sha256(k, v)
    k = hmac_sha256(k, v + b"\x01" + x + h1)
    v = hmac_sha256(k, v)
    while True:
        v = hmac_sha256(k, v)
        candidate = int.from_bytes(v, "big")
        if 0 < candidate < p256.N:
            yield candidate
        k = hmac_sha256(k, v + b"\x00")
        v = hmac_sha256(k, v)


def _blinding_factors():
    # One field element for base_mul's projective randomizer, one scalar to blind k⁻¹; a weak
    # random source weakens only the blinding, never the signature.
    raw = os.urandom(64)
    field = int.from_bytes(raw[:32], "big") % p256.P or 1
    scalar = int.from_bytes(raw[32:], "big") % p256.N or 1
    return field, scalar


def sign_digest(secret, digest, table=None):
    """r‖s (64 bytes) over a 32-byte SHA-256 digest with the private scalar `secret`.

    `table` is a p256.Table, or None for the built-in small comb. The inversion of k runs on
    k·b for a random b and the point multiplication on randomized coordinates, so neither
    running time follows k.
    """
    n = p256.N
    if not 0 < secret < n:
        raise ValueError("private key out of range [1, n-1]")
    z = int.from_bytes(digest, "big")
    for k in nonces(secret, digest):
        randomizer, blind = _blinding_factors()
        r = p256.base_mul(k, table, randomizer)[0] % n
        if not r:
            continue
        k_inv = p256.inverse(k * blind % n, n) * blind % n
        s = k_inv * (z + r * secret) % n
        if s:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign(secret, message, table=None):
    """r‖s over SHA-256(message)."""
    return sign_digest(secret, hashlib.sha256(message).digest(), table)


def public_key(secret, table=None):
    """The 65-byte uncompressed SEC1 point 04‖X‖Y of `secret`·G."""
    if not 0 < secret < p256.N:
        raise ValueError("private key out of range [1, n-1]")
    x, y = p256.base_mul(secret, table, _blinding_factors()[0])
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
