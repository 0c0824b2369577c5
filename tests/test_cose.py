"""COSE_Sign1/ES256: our envelopes against pycose, the COSE WG example, and Wycheproof."""

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from meterseal.firmware.signer import SoftwareSigner
from meterseal.hil import micropython
from meterseal.host import verify
from meterseal.protocol import cbor, cose
from meterseal.protocol.errors import COSEError

from known_vectors import (
    COSE_EXAMPLE_PAYLOAD,
    COSE_EXAMPLE_PROTECTED,
    COSE_EXAMPLE_SIGNATURE,
    COSE_EXAMPLE_TO_BE_SIGNED,
    COSE_EXAMPLE_X,
    COSE_EXAMPLE_Y,
    RFC_KEY,
)

EXAMPLE_X = bytes.fromhex(COSE_EXAMPLE_X)
EXAMPLE_Y = bytes.fromhex(COSE_EXAMPLE_Y)
EXAMPLE_PROTECTED = bytes.fromhex(COSE_EXAMPLE_PROTECTED)
EXAMPLE_PAYLOAD = COSE_EXAMPLE_PAYLOAD
EXAMPLE_TO_BE_SIGNED = bytes.fromhex(COSE_EXAMPLE_TO_BE_SIGNED)
EXAMPLE_SIGNATURE = bytes.fromhex(COSE_EXAMPLE_SIGNATURE)


class CryptographySigner:
    """An independent ES256 signer, so envelope tests do not depend on our own ECDSA code."""

    def __init__(self):
        self._key = ec.generate_private_key(ec.SECP256R1())

    def public_key(self):
        return self._key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def sign(self, message):
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def private_bytes(self):
        return self._key.private_numbers().private_value.to_bytes(32, "big")


@pytest.fixture
def signer():
    return CryptographySigner()


def _keyring(signer):
    public = signer.public_key()
    return {cose.kid_for(public): verify.load_public_key(public)}


def test_sig_structure_matches_cose_wg_example():
    assert cose.sig_structure(EXAMPLE_PROTECTED, EXAMPLE_PAYLOAD) == EXAMPLE_TO_BE_SIGNED


def test_host_verifier_accepts_cose_wg_example_signature():
    key = verify.load_public_key(b"\x04" + EXAMPLE_X + EXAMPLE_Y)
    assert verify.verify_es256(key, EXAMPLE_TO_BE_SIGNED, EXAMPLE_SIGNATURE)
    tampered = bytearray(EXAMPLE_TO_BE_SIGNED)
    tampered[-1] ^= 1
    assert not verify.verify_es256(key, bytes(tampered), EXAMPLE_SIGNATURE)


def test_kid_is_sha256_of_uncompressed_key(signer):
    public = signer.public_key()
    assert cose.kid_for(public) == hashlib.sha256(public).digest()
    with pytest.raises(COSEError):
        cose.kid_for(public[1:])


def test_envelope_layout_and_round_trip(signer):
    public = signer.public_key()
    kid = cose.kid_for(public)
    envelope = cose.sign1(b"\xa1\x01\x02", signer, kid)
    # Tag 18, array of 4, protected = bstr(a2 01 26 04 58 20 kid), empty unprotected map.
    assert envelope[:2] == b"\xd2\x84"
    assert envelope[2:9] == b"\x58\x26\xa2\x01\x26\x04\x58"
    parsed = cose.parse_sign1(envelope)
    assert (parsed.alg, parsed.kid, parsed.payload) == (-7, kid, b"\xa1\x01\x02")
    assert verify.verify_es256(verify.load_public_key(public), parsed.to_be_signed(), parsed.signature)


def test_pycose_verifies_our_envelope(signer):
    public = signer.public_key()
    envelope = cose.sign1(b"meterseal record", signer, cose.kid_for(public))
    message = Sign1Message.decode(envelope)
    message.key = EC2Key(crv=P256, x=public[1:33], y=public[33:])
    assert message.verify_signature()
    assert message.phdr[Algorithm] is Es256 and message.phdr[KID] == cose.kid_for(public)
    assert message.payload == b"meterseal record"


def test_we_verify_a_pycose_envelope(signer):
    public = signer.public_key()
    kid = cose.kid_for(public)
    message = Sign1Message(phdr={Algorithm: Es256, KID: kid}, payload=b"made by pycose")
    message.key = EC2Key(crv=P256, x=public[1:33], y=public[33:], d=signer.private_bytes())
    envelope = message.encode()
    parsed = cose.parse_sign1(envelope)
    assert parsed.payload == b"made by pycose" and parsed.kid == kid
    assert verify.verify_es256(verify.load_public_key(public), parsed.to_be_signed(), parsed.signature)


def test_signature_covers_protected_header_and_payload(signer):
    public = signer.public_key()
    envelope = cose.sign1(b"payload", signer, cose.kid_for(public))
    key = verify.load_public_key(public)
    parsed = cose.parse_sign1(envelope)
    forged_payload = cose.Sign1(parsed.protected, parsed.alg, parsed.kid, b"payloaD", parsed.signature)
    assert not verify.verify_es256(key, forged_payload.to_be_signed(), parsed.signature)
    other_header = cbor.dumps({1: -7, 4: b"\x00" * 32})
    forged_header = cose.Sign1(other_header, parsed.alg, parsed.kid, parsed.payload, parsed.signature)
    assert not verify.verify_es256(key, forged_header.to_be_signed(), parsed.signature)


def _envelope(protected=None, unprotected=None, payload=b"p", signature=b"\x00" * 64, tag=18):
    if protected is None:
        protected = cbor.dumps({1: -7, 4: b"\x11" * 32})
    parts = [protected, {} if unprotected is None else unprotected, payload, signature]
    return cbor.dumps(cbor.Tag(tag, parts) if tag is not None else parts)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"\xd2\x84", "not valid CBOR"),
        (_envelope(tag=None), "tag 18"),
        (cbor.dumps(cbor.Tag(18, [b"", {}, b""])), "array of 4"),
        (_envelope(unprotected={4: b"kid"}), "unprotected header must be empty"),
        (_envelope(protected=b"\xa1\x01"), "protected header is not valid CBOR"),
        (_envelope(protected=cbor.dumps({1: -7})), "exactly alg (1) and kid (4)"),
        (_envelope(protected=cbor.dumps({1: -7, 4: b"short"})), "kid must be a 32-byte"),
        (_envelope(protected=cbor.dumps({1: "ES256", 4: b"\x11" * 32})), "alg must be an integer"),
        (_envelope(payload="text"), "must be byte strings"),
        (_envelope(signature=None), "signature must be a byte string"),
    ],
)
def test_malformed_envelopes_are_rejected_clearly(data, fragment):
    with pytest.raises(COSEError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cose.parse_sign1(data)


def test_unsupported_algorithm_is_its_own_outcome(signer):
    protected = cbor.dumps({1: -35, 4: cose.kid_for(signer.public_key())})
    verdict = verify.verify_record(_envelope(protected=protected), _keyring(signer))
    assert verdict.outcome == verify.UNSUPPORTED_ALG


def test_unknown_key_and_bad_signature_outcomes(signer):
    kid = cose.kid_for(signer.public_key())
    envelope = cose.sign1(b"\xa0", signer, kid)
    assert verify.verify_record(envelope, {}).outcome == verify.UNKNOWN_KEY
    other = CryptographySigner()
    wrong_key = {kid: verify.load_public_key(other.public_key())}
    assert verify.verify_record(envelope, wrong_key).outcome == verify.BAD_SIGNATURE
    assert verify.verify_record(b"\xff", _keyring(signer)).outcome == verify.MALFORMED


def _wycheproof_cases(path):
    groups = json.loads(path.read_text())["testGroups"]
    for group in groups:
        key = bytes.fromhex(group["publicKey"]["uncompressed"])
        for case in group["tests"]:
            yield key, case


def test_wycheproof_p256_sha256_p1363_every_case(shared_testdata):
    path = shared_testdata / "wycheproof" / "ecdsa_secp256r1_sha256_p1363_test.json"
    cases = list(_wycheproof_cases(path))
    assert len(cases) == 252
    wrong = []
    for key, case in cases:
        accepted = verify.verify_es256(
            verify.load_public_key(key), bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
        )
        if accepted != (case["result"] == "valid"):
            wrong.append((case["tcId"], case["comment"], case["result"]))
    assert not wrong, f"verdicts differ from Wycheproof: {wrong}"


def test_envelope_made_on_micropython_verifies_with_cryptography_and_pycose(device_image):
    script = Path(__file__).parent / "mpy" / "cose_checks.py"
    result = micropython.run(script, device_image, heapsize="192K")
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [l for l in result.stdout.splitlines() if l.startswith("ENVELOPE ")]
    envelope = bytes.fromhex(line.split()[1])
    gateway = SoftwareSigner(RFC_KEY)
    public = gateway.public_key()
    # Deterministic nonces: CPython running the same code produces the very same bytes.
    assert envelope == cose.sign1(b"\xa1\x01\x02", gateway, cose.kid_for(public))
    message = Sign1Message.decode(envelope)
    message.key = EC2Key(crv=P256, x=public[1:33], y=public[33:])
    assert message.verify_signature()
    parsed = cose.parse_sign1(envelope)
    assert verify.verify_es256(verify.load_public_key(public), parsed.to_be_signed(), parsed.signature)


def test_keyring_adds_revocation_and_time_quality_to_the_outcome():
    from meterseal.protocol import records

    signer = SoftwareSigner(RFC_KEY)
    kid = cose.kid_for(signer.public_key())

    def record(wall_time_ms, time_status):
        values = {"version": 1, "gateway_id": "GW-1", "boot_epoch": 1, "seq": 0,
                  "prev": bytes(32), "opsec": 0, "wall_time_ms": wall_time_ms,
                  "time_status": time_status, "clock_set_count": 0, "event_count": 0,
                  "software_name": "gw", "software_version": "1", "software_digest": bytes(32),
                  "kind": "event", "body": {"event_type": "tamper", "sensor": "lid"}}
        return cose.sign1(records.encode(values), signer, kid)

    keyring = verify.Keyring()
    keyring.add(kid, signer.public_key())
    assert keyring.verify(record(1000, "S"), 2000).outcome == verify.VERIFIED
    assert keyring.verify(record(1000, "U"), 2000).outcome == verify.VERIFIED_WITH_WARNINGS
    assert keyring.verify(record(1000, "I"), 2000).outcome == verify.VERIFIED_WITH_WARNINGS
    revoked = verify.Keyring()
    revoked.add(kid, signer.public_key(), revoked_at_ms=5000)
    assert revoked.verify(record(1000, "S"), 4000).outcome == verify.VERIFIED
    assert revoked.verify(record(1000, "S"), 5000).outcome == verify.REVOKED_KEY  # arrived late
    assert revoked.verify(record(6000, "S"), 4000).outcome == verify.REVOKED_KEY  # dated after
    assert verify.Keyring().verify(record(1000, "S"), 0).outcome == verify.UNKNOWN_KEY
