"""COSE_Sign1 envelopes signed with ES256 (RFC 9052 section 4.2; alg -7).

Every record travels in this envelope::

    18([ protected:   bstr .cbor {1: -7, 4: kid},   ; alg ES256, kid = SHA-256(public key)
         unprotected: {},
         payload:     bstr,                          ; the deterministic-CBOR record
         signature:   bstr .size 64 ])               ; r || s, big-endian

    Sig_structure = ["Signature1", protected, h'', payload]

The signature is over the Sig_structure built from the protected and payload byte strings
exactly as received, so a verifier never re-encodes what it checks. The profile is strict: the
tag is required, the unprotected map must be empty, the protected map holds alg and kid only.
"""

from hashlib import sha256

from . import cbor
from .errors import CBORError, COSEError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


TAG_SIGN1 = const(18)
ALG_ES256 = const(-7)
_HEADER_ALG = const(1)
_HEADER_KID = const(4)
KID_SIZE = const(32)
SIGNATURE_SIZE = const(64)
PUBLIC_KEY_SIZE = const(65)


def kid_for(public_key):
    """The key id: SHA-256 of the 65-byte uncompressed SEC1 public key (the TSE convention)."""
    if len(public_key) != PUBLIC_KEY_SIZE or public_key[0] != 4:
        raise COSEError("public key must be 65-byte uncompressed SEC1 (0x04 || x || y)")
    return sha256(public_key).digest()


def sig_structure(protected, payload):
    return cbor.dumps(["Signature1", protected, b"", payload])


def sign1(payload, signer, kid):
    """Wrap ``payload`` (bytes) in a COSE_Sign1 signed by ``signer`` (``sign(bytes) -> r||s``)."""
    protected = cbor.dumps({_HEADER_ALG: ALG_ES256, _HEADER_KID: kid})
    signature = signer.sign(sig_structure(protected, payload))
    if len(signature) != SIGNATURE_SIZE:
        raise COSEError("signer returned %d bytes, expected r||s of 64" % len(signature))
    return cbor.dumps(cbor.Tag(TAG_SIGN1, [protected, {}, payload, signature]))


class Sign1:
    """A parsed envelope. ``alg`` is reported as found; deciding whether it is acceptable is the
    verifier's job, so an unsupported algorithm is a distinct outcome rather than a parse error."""

    def __init__(self, protected, alg, kid, payload, signature):
        self.protected = protected
        self.alg = alg
        self.kid = kid
        self.payload = payload
        self.signature = signature

    def to_be_signed(self):
        return sig_structure(self.protected, self.payload)


def parse_sign1(data):
    try:
        envelope = cbor.loads(data)
    except CBORError as exc:
        raise COSEError("envelope is not valid CBOR: %s" % exc)
    if not isinstance(envelope, cbor.Tag) or envelope.tag != TAG_SIGN1:
        raise COSEError("envelope must be a COSE_Sign1 (CBOR tag 18)")
    parts = envelope.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise COSEError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = parts
    if not isinstance(protected, bytes) or not isinstance(payload, bytes):
        raise COSEError("protected header and payload must be byte strings")
    if unprotected != {}:
        raise COSEError("unprotected header must be empty in this profile")
    if not isinstance(signature, bytes):
        raise COSEError("signature must be a byte string")
    try:
        header = cbor.loads(protected)
    except CBORError as exc:
        raise COSEError("protected header is not valid CBOR: %s" % exc)
    if not isinstance(header, dict) or sorted(header) != [_HEADER_ALG, _HEADER_KID]:
        raise COSEError("protected header must hold exactly alg (1) and kid (4)")
    alg = header[_HEADER_ALG]
    kid = header[_HEADER_KID]
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise COSEError("alg must be an integer")
    if not isinstance(kid, bytes) or len(kid) != KID_SIZE:
        raise COSEError("kid must be a 32-byte string")
    return Sign1(protected, alg, kid, payload, signature)
