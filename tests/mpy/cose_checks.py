# COSE_Sign1 on the gateway side, on both interpreters and in a 192 KB heap: the Sig_structure
# matches the COSE WG example, envelopes made with the software signer have the profile's
# layout and parse back, and malformed envelopes raise COSEError. The envelope is printed so
# test_cose.py can check it with cryptography and pycose on the host.
# heapsize: 192K
from binascii import hexlify, unhexlify
from hashlib import sha256

from known_vectors import (
    COSE_EXAMPLE_PAYLOAD,
    COSE_EXAMPLE_PROTECTED,
    COSE_EXAMPLE_TO_BE_SIGNED,
    RFC_KEY,
)
from meterseal.firmware import signer
from meterseal.protocol import cbor, cose
from meterseal.protocol.errors import COSEError

PAYLOAD = b"\xa1\x01\x02"

assert cose.sig_structure(unhexlify(COSE_EXAMPLE_PROTECTED), COSE_EXAMPLE_PAYLOAD) == unhexlify(
    COSE_EXAMPLE_TO_BE_SIGNED
)

key = signer.SoftwareSigner(RFC_KEY)
public_key = key.public_key()
kid = cose.kid_for(public_key)
assert kid == sha256(public_key).digest()

envelope = cose.sign1(PAYLOAD, key, kid)
# Tag 18, array of 4, protected = bstr(a2 01 26 04 58 20 kid), then {} and the payload.
assert envelope[:10] == b"\xd2\x84\x58\x26\xa2\x01\x26\x04\x58\x20"
assert envelope[10:42] == kid and envelope[42:44] == b"\xa0\x43"
parsed = cose.parse_sign1(envelope)
assert parsed.alg == cose.ALG_ES256 and parsed.kid == kid and parsed.payload == PAYLOAD
assert len(parsed.signature) == 64
assert parsed.to_be_signed() == cose.sig_structure(parsed.protected, PAYLOAD)
# RFC 6979: the same key and payload always give the same envelope.
assert cose.sign1(PAYLOAD, key, kid) == envelope

protected = cbor.dumps({1: -7, 4: kid})
for bad in (
    envelope[:-1],
    cbor.dumps([protected, {}, PAYLOAD, bytes(64)]),
    cbor.dumps(cbor.Tag(18, [protected, {4: kid}, PAYLOAD, bytes(64)])),
    cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -7}), {}, PAYLOAD, bytes(64)])),
    cbor.dumps(cbor.Tag(18, [protected, {}, PAYLOAD])),
):
    try:
        cose.parse_sign1(bad)
    except COSEError:
        pass
    else:
        raise AssertionError("accepted a malformed envelope: %s" % hexlify(bad))

try:
    cose.kid_for(public_key[1:])
except COSEError:
    pass
else:
    raise AssertionError("kid_for accepted a 64-byte key")

print("ENVELOPE", hexlify(envelope).decode())
print("PASS cose_checks")
