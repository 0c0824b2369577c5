"""The gateway's ES256 signer (firmware/p256.py, ecdsa.py, signer.py) against `cryptography`.

The same code runs on MicroPython; tests/mpy/ checks the vectors there.
"""

import hashlib
import hmac
import os
import stat

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from meterseal.firmware import ecdsa, p256, signer
from meterseal.firmware.signer import KeyStoreError

from known_vectors import RFC_KEY, RFC_UX, RFC_UY, RFC_VECTORS

N = p256.N
scalars = st.integers(min_value=1, max_value=N - 1)
messages = st.binary(max_size=300)
EDGE_SCALARS = [1, 2, 3, 4, 5, 2**32, 2**128 + 1, 2**255, N - 2**255, N - 3, N - 2, N - 1]

@pytest.fixture(scope="module")
def table():
    return p256.Table()


def reference_point(k):
    numbers = ec.derive_private_key(k % N, ec.SECP256R1()).public_key().public_numbers()
    return numbers.x, numbers.y


def reference_public_key(secret):
    x, y = reference_point(secret)
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def verify(public_key, message, signature):
    """Raise InvalidSignature unless `signature` (r‖s) verifies under cryptography."""
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    key.verify(der, message, ec.ECDSA(hashes.SHA256()))


# --- signatures ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(secret=scalars, message=messages)
def test_signatures_verify_with_cryptography(secret, message, table):
    public_key = ecdsa.public_key(secret)
    verify(public_key, message, ecdsa.sign(secret, message))
    verify(public_key, message, ecdsa.sign(secret, message, table))


def test_many_random_keys_and_messages_verify(table):
    for _ in range(100):
        secret = signer.generate_secret()
        message = os.urandom(int.from_bytes(os.urandom(1), "big"))
        verify(reference_public_key(secret), message, ecdsa.sign(secret, message, table))


@settings(max_examples=100, deadline=None)
@given(secret=scalars, message=messages)
def test_table_and_builtin_comb_give_identical_signatures(secret, message, table):
    assert ecdsa.sign(secret, message, table) == ecdsa.sign(secret, message)


def test_a_wrong_message_or_key_does_not_verify():
    signature = ecdsa.sign(RFC_KEY, b"sample")
    with pytest.raises(InvalidSignature):
        verify(ecdsa.public_key(RFC_KEY), b"sampl3", signature)
    with pytest.raises(InvalidSignature):
        verify(ecdsa.public_key(RFC_KEY + 1), b"sample", signature)


@pytest.mark.parametrize("message, k, r, s", RFC_VECTORS, ids=[v[0].decode() for v in RFC_VECTORS])
@pytest.mark.parametrize("use_table", [True, False], ids=["table", "builtin"])
def test_rfc6979_vectors(message, k, r, s, use_table, table):
    digest = hashlib.sha256(message).digest()
    assert next(ecdsa.nonces(RFC_KEY, digest)) == k
    assert reference_point(k)[0] % N == r  # the vector is self-consistent
    expected = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    signature = ecdsa.sign(RFC_KEY, message, table if use_table else None)
    assert signature == expected
    verify(reference_public_key(RFC_KEY), message, signature)


def test_rfc6979_public_key():
    expected = b"\x04" + RFC_UX.to_bytes(32, "big") + RFC_UY.to_bytes(32, "big")
    assert ecdsa.public_key(RFC_KEY) == expected == reference_public_key(RFC_KEY)


def test_signing_is_deterministic_despite_blinding(table):
    assert len({ecdsa.sign(RFC_KEY, b"same record", table) for _ in range(5)}) == 1


@settings(max_examples=50, deadline=None)
@given(secret=scalars, digest=st.binary(min_size=32, max_size=32))
def test_nonce_candidates_are_in_range_and_distinct(secret, digest):
    candidates = ecdsa.nonces(secret, digest)
    seen = [next(candidates) for _ in range(4)]
    assert all(0 < k < N for k in seen)
    assert len(set(seen)) == 4


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_digest_must_be_32_bytes(length):
    with pytest.raises(ValueError, match="32 bytes"):
        ecdsa.sign_digest(RFC_KEY, bytes(length))


@pytest.mark.parametrize("secret", [0, N, N + 1, -1])
def test_private_key_out_of_range_is_refused(secret):
    with pytest.raises(ValueError, match="out of range"):
        ecdsa.sign(secret, b"m")
    with pytest.raises(ValueError, match="out of range"):
        ecdsa.public_key(secret)


# --- HMAC ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_hmac_sha256_matches_the_standard_library(key, message):
    assert ecdsa.hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


def test_hmac_sha256_rfc4231_case_2():
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert ecdsa.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == expected


# --- public keys and point arithmetic -----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(secret=scalars)
def test_public_key_matches_cryptography(secret, table):
    expected = reference_public_key(secret)
    assert ecdsa.public_key(secret) == expected
    assert ecdsa.public_key(secret, table) == expected


@pytest.mark.parametrize("k", EDGE_SCALARS)
def test_base_mul_at_edge_scalars(k, table):
    assert p256.base_mul(k) == reference_point(k)
    assert p256.base_mul(k, table) == reference_point(k)


@pytest.mark.parametrize("teeth, blocks", [(1, 1), (2, 4), (4, 1), (4, 2), (8, 1), (8, 2)])
def test_every_comb_geometry_agrees(teeth, blocks):
    geometry = p256.Table(teeth, blocks)
    for k in EDGE_SCALARS[:4] + [int.from_bytes(os.urandom(32), "big") % N for _ in range(4)]:
        assert p256.base_mul(k, geometry) == reference_point(k), k


@pytest.mark.parametrize("teeth, blocks", [(3, 1), (16, 1), (8, 3), (4, 128)])
def test_impossible_comb_geometry_is_refused(teeth, blocks):
    with pytest.raises(ValueError, match="teeth"):
        p256.Table(teeth, blocks)


@settings(max_examples=50, deadline=None)
@given(k=scalars, randomizer=st.integers(min_value=1, max_value=p256.P - 1))
def test_projective_randomizer_does_not_change_the_point(k, randomizer, table):
    assert p256.base_mul(k, table, randomizer) == p256.base_mul(k, table)


@pytest.mark.parametrize("k", [0, N, N + 5, -3])
def test_base_mul_refuses_out_of_range_scalars(k):
    with pytest.raises(ValueError, match="out of range"):
        p256.base_mul(k)


def _scalar_meeting_its_last_entry(teeth, blocks):
    """An odd k whose final comb addition adds a point to itself: k = 2·E for the last entry E
    (column 0 of the last block), found by trying every sign pattern of that column."""
    spacing = 256 // teeth
    shift = (blocks - 1) * (spacing // blocks)
    for pattern in range(1 << teeth):
        entry = sum((1 if pattern >> i & 1 else -1) << (i * spacing) for i in range(teeth))
        k = (2 * entry << shift) % N
        signs_agree = all(
            (k >> (shift + i * spacing + 1) & 1) == (pattern >> i & 1) for i in range(teeth)
        )
        if k & 1 and signs_agree:
            return k
    raise AssertionError("no such scalar for this geometry")


@pytest.mark.parametrize("teeth, blocks", [(4, 2), (8, 4)])
def test_exceptional_addition_falls_back_to_the_complete_formulas(teeth, blocks, monkeypatch):
    k = _scalar_meeting_its_last_entry(teeth, blocks)
    fallbacks = []
    reference_mul = p256.mul
    monkeypatch.setattr(p256, "mul", lambda *args: fallbacks.append(args) or reference_mul(*args))
    assert p256.base_mul(k, p256.Table(teeth, blocks)) == reference_point(k)
    assert fallbacks == [(k, p256.G)]


def test_random_scalars_never_take_the_fallback(monkeypatch, table):
    monkeypatch.setattr(p256, "mul", None)  # calling it would raise TypeError
    for _ in range(50):
        p256.base_mul(signer.generate_secret(), table)


def test_a_corrupted_table_is_detected_not_used():
    damaged = p256.Table(4, 2)
    damaged._points[:] = [value ^ 1 for value in damaged._points]
    with pytest.raises(RuntimeError, match="not on the curve"):
        p256.base_mul(12345, damaged)


def _entry_scalar(table, block, pattern):
    spacing = 256 // table.teeth
    shift = block * (spacing // table.blocks)
    signs = sum((1 if pattern >> i & 1 else -1) << (i * spacing) for i in range(table.teeth))
    return (signs << shift) % N


@pytest.mark.parametrize("use_big", [False, True], ids=["builtin", "big"])
def test_table_entries_are_the_right_multiples_of_g(use_big, table):
    comb = table if use_big else p256.builtin_table()
    patterns = 1 << comb.teeth
    assert len(comb._points) == 2 * comb.entries == 2 * comb.blocks * patterns
    for block in range(comb.blocks):
        for pattern in range(patterns):
            at = 2 * (block * patterns + pattern)
            expected = reference_point(_entry_scalar(comb, block, pattern))
            assert (comb._points[at], comb._points[at + 1]) == expected


@settings(max_examples=200)
@given(bits=st.integers(min_value=0, max_value=2**256 - 1))
def test_column_transposition(bits):
    columns = p256._columns(bits)
    for c in range(32):
        expected = sum(((bits >> (32 * row + c)) & 1) << row for row in range(8))
        assert columns[4 * (c % 8) + c // 8] == expected


@settings(max_examples=50, deadline=None)
@given(a=scalars, b=scalars)
def test_reference_affine_arithmetic(a, b):
    pa, pb = reference_point(a), reference_point(b)
    expected_sum = reference_point(a + b) if (a + b) % N else None
    assert p256.add(pa, pb) == expected_sum
    assert p256.add(pa, pa) == reference_point(2 * a)
    assert p256.add(pa, (pa[0], p256.P - pa[1])) is None
    assert p256.add(None, pa) == pa == p256.add(pa, None)
    assert p256.mul(a, p256.G) == pa


@settings(max_examples=100)
@given(a=st.integers(min_value=1, max_value=p256.P - 1))
def test_inverse(a):
    assert p256.inverse(a, p256.P) == pow(a, -1, p256.P)
    assert p256.inverse(a % N or 1, N) == pow(a % N or 1, -1, N)


def test_inverse_of_zero_is_refused():
    with pytest.raises(ValueError, match="not invertible"):
        p256.inverse(N, N)


def test_on_curve():
    assert p256.on_curve(p256.GX, p256.GY)
    assert not p256.on_curve(p256.GX, p256.GY + 1)
    assert not p256.on_curve(p256.GX + p256.P, p256.GY)


# --- the signer interface and the key file ------------------------------------------------


def test_signer_interface_hashes_then_delegates_to_the_backend():
    class RecordingBackend(signer.Signer):
        def _sign_digest(self, digest):
            self.digest = digest
            return bytes(64)

    backend = RecordingBackend()
    assert backend.sign(b"record") == bytes(64)
    assert backend.digest == hashlib.sha256(b"record").digest()


@pytest.mark.parametrize("use_table", [True, False], ids=["table", "builtin"])
def test_software_signer(use_table, table):
    key = signer.SoftwareSigner(RFC_KEY, table if use_table else None)
    assert key.public_key() == reference_public_key(RFC_KEY)
    assert key.sign(b"sample") == ecdsa.sign(RFC_KEY, b"sample")
    verify(key.public_key(), b"record", key.sign(b"record"))
    # The private key is never exported: the public surface is the interface, nothing more.
    assert [name for name in dir(key) if not name.startswith("_")] == ["public_key", "sign"]


def test_load_or_create_makes_a_key_once_and_reloads_it(tmp_path):
    path = str(tmp_path / "gateway.key")
    first = signer.load_or_create(path)
    assert os.path.getsize(path) == signer.KEY_FILE_LEN
    second = signer.load_or_create(path)
    assert first.public_key() == second.public_key()
    assert second.public_key() == reference_public_key(signer.read_key_file(path))
    verify(first.public_key(), b"record", second.sign(b"record"))
    assert sorted(os.listdir(tmp_path)) == ["gateway.key"]  # no temp file left behind


def test_key_file_round_trip(tmp_path):
    path = str(tmp_path / "k")
    for secret in (1, RFC_KEY, N - 1):
        signer.write_key_file(path, secret)
        assert signer.read_key_file(path) == secret


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_key_file_is_private_to_its_owner(tmp_path):
    path = str(tmp_path / "k")
    signer.write_key_file(path, RFC_KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_interrupted_write_leaves_no_key_file(tmp_path, monkeypatch):
    path = str(tmp_path / "gateway.key")

    def power_cut(src, dst):
        raise OSError(5, "simulated power cut")

    monkeypatch.setattr(os, "rename", power_cut)
    with pytest.raises(KeyStoreError, match="gateway.key: cannot write"):
        signer.load_or_create(path)
    assert not os.path.exists(path)


def test_rewriting_replaces_the_whole_file_in_one_step(tmp_path, monkeypatch):
    path = str(tmp_path / "k")
    signer.write_key_file(path, RFC_KEY)
    renames = []
    real_rename = os.rename

    def checked_rename(src, dst):
        # Until the rename the old key is intact and the new one complete beside it.
        assert signer.read_key_file(dst) == RFC_KEY
        assert signer.read_key_file(src) == 7
        renames.append(dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", checked_rename)
    signer.write_key_file(path, 7)
    assert renames == [path]
    assert signer.read_key_file(path) == 7


def _valid_file(secret=RFC_KEY):
    return signer.encode_key_file(secret)


def _with_valid_check(scalar_bytes):
    body = b"MSK1" + scalar_bytes
    return body + hashlib.sha256(body).digest()[:4]


CORRUPT_FILES = [
    ("empty", b"", "0 bytes, expected 40"),
    ("short", _valid_file()[:-1], "39 bytes, expected 40"),
    ("long", _valid_file() + b"\x00", "41 bytes, expected 40"),
    ("raw scalar", RFC_KEY.to_bytes(32, "big"), "32 bytes, expected 40"),
    ("bad magic", b"PEM!" + _valid_file()[4:], "bad magic"),
    ("bit flip", _valid_file()[:10] + b"\x00" + _valid_file()[11:], "corrupt"),
    ("zero key", _with_valid_check(bytes(32)), "out of range"),
    ("key = n", _with_valid_check(N.to_bytes(32, "big")), "out of range"),
]


@pytest.mark.parametrize(
    "data, problem", [c[1:] for c in CORRUPT_FILES], ids=[c[0] for c in CORRUPT_FILES]
)
def test_untrustworthy_key_file_is_refused_and_kept(tmp_path, data, problem):
    path = tmp_path / "gateway.key"
    path.write_bytes(data)
    with pytest.raises(KeyStoreError) as refused:
        signer.load_or_create(str(path))
    assert str(refused.value).startswith("key file %s: " % path)
    assert problem in str(refused.value)
    assert isinstance(refused.value, OSError)
    assert path.read_bytes() == data  # evidence is never overwritten


def test_unreadable_key_path_is_reported(tmp_path):
    path = tmp_path / "gateway.key"
    path.mkdir()
    with pytest.raises(KeyStoreError, match="gateway.key: cannot read"):
        signer.load_or_create(str(path))


def test_generate_secret_rejects_out_of_range_draws():
    draws = iter([N.to_bytes(32, "big"), bytes(32), (2**256 - 1).to_bytes(32, "big"), b"\x07" * 32])
    assert signer.generate_secret(lambda n: next(draws)) == int.from_bytes(b"\x07" * 32, "big")


def test_generate_secret_refuses_a_short_random_source():
    with pytest.raises(ValueError, match="31 bytes"):
        signer.generate_secret(lambda n: bytes(31))


def test_load_or_create_uses_the_given_random_source(tmp_path):
    key = signer.load_or_create(str(tmp_path / "k"), random_bytes=lambda n: b"\x01" * n)
    assert key.public_key() == reference_public_key(int.from_bytes(b"\x01" * 32, "big"))


def test_a_key_that_does_not_read_back_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "gateway.key")
    real_write = signer.write_key_file
    monkeypatch.setattr(signer, "write_key_file", lambda p, secret: real_write(p, secret ^ 1))
    with pytest.raises(KeyStoreError, match="gateway.key: reads back different"):
        signer.load_or_create(path)
