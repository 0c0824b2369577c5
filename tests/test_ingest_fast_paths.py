"""The host's fast paths decide exactly as the general code does (host/verify.py):

- an envelope read by slicing (_parse_gateway_envelope) is the one cose.parse_sign1 reads, with
  the same Sig_structure, and any other bytes go to parse_sign1;
- a batch verified signatures-first (verify_records, Keyring.verify_batch) gets the verdicts
  verify_record gives each of its envelopes alone;
- the store's chain state after a batch that carries the chain on without a hole, which it
  takes without reading the chain, is what reading the chain gives (store._contiguous_seq).
(The record parser's own equivalence is tests/test_record_parser.py.)
"""

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from meterseal.firmware import signer
from meterseal.host import verify
from meterseal.host.simulated_gateway import RecordMaker
from meterseal.protocol import cbor, cose, records
from meterseal.protocol.errors import COSEError

from test_storage import GATEWAY, ingest, make_chain

KEY = signer.SoftwareSigner(signer.generate_secret())
KID = cose.kid_for(KEY.public_key())
KEYS = {KID: verify.load_public_key(KEY.public_key())}
MAKER = RecordMaker("GW-FAST", KEY)
# Payloads on both sides of the one- and two-byte length heads.
ENVELOPES = [MAKER.make(), MAKER.make(body={"event_type": "self_test", "passed": True}),
             MAKER.make(body={"event_type": "parameter_change", "parameter_id": "p" * 32,
                              "old_value": "o" * 64, "new_value": "n" * 64})]


def reference(data):
    """What cose.parse_sign1 reads: (protected, alg, kid, payload, signature, Sig_structure)."""
    try:
        envelope = cose.parse_sign1(data)
    except COSEError:
        return None
    return (envelope.protected, envelope.alg, envelope.kid, envelope.payload,
            envelope.signature, envelope.to_be_signed())


def fast(data):
    parsed = verify._parse_gateway_envelope(data)
    if parsed is None:
        return None
    envelope, to_be_signed = parsed
    return (envelope.protected, envelope.alg, envelope.kid, envelope.payload,
            envelope.signature, to_be_signed)


def verdicts(items):
    return [(v.outcome, v.kid, v.record, v.detail) for v in items]


def test_gateway_envelopes_take_the_fast_path_and_read_the_same():
    assert {len(cose.parse_sign1(e).payload) > 255 for e in ENVELOPES} == {False, True}
    for envelope in ENVELOPES:
        assert fast(envelope) is not None
        assert fast(envelope) == reference(envelope)


@settings(max_examples=600)
@given(st.sampled_from(ENVELOPES), st.integers(0, 400), st.integers(0, 255),
       st.integers(-3, 3))
def test_a_damaged_envelope_is_read_as_parse_sign1_reads_it_or_left_to_it(envelope, at, value,
                                                                          resize):
    damaged = bytearray(envelope)
    damaged[at % len(damaged)] = value
    if resize > 0:
        damaged += bytes(resize)
    elif resize < 0:
        del damaged[resize:]
    damaged = bytes(damaged)
    assert fast(damaged) in (None, reference(damaged))


def test_other_layouts_are_left_to_parse_sign1():
    parsed = cose.parse_sign1(ENVELOPES[0])
    # The same envelope with a non-shortest payload head (0x59 for a short payload).
    head = cbor.dumps(parsed.payload)[:2]
    long_head = b"\x59\x00" + bytes([head[1]])
    data = ENVELOPES[0].replace(head + parsed.payload, long_head + parsed.payload)
    assert fast(data) is None and reference(data) is None
    assert fast(bytearray(ENVELOPES[0])) is None  # only bytes take the fast path
    assert fast(ENVELOPES[0][:40]) is None


def test_a_batch_gets_the_verdicts_each_envelope_gets_alone():
    forged = bytearray(ENVELOPES[0])
    forged[-1] ^= 1
    stranger = RecordMaker("GW-FAST", signer.SoftwareSigner(signer.generate_secret())).make()
    bad_schema = cose.sign1(cbor.dumps({1: 1}), KEY, KID)
    batch = [*ENVELOPES, bytes(forged), stranger, bad_schema, b"\x00garbage", ENVELOPES[0]]
    alone = [verify.verify_record(envelope, KEYS) for envelope in batch]
    assert verdicts(verify.verify_records(batch, KEYS)) == verdicts(alone)
    assert [v.outcome for v in alone] == ["VERIFIED"] * 3 + [
        "BAD_SIGNATURE", "UNKNOWN_KEY", "MALFORMED", "MALFORMED", "VERIFIED"]
    keyring = verify.Keyring()
    keyring.add(KID, KEY.public_key())
    assert verdicts(keyring.verify_batch(batch, 0)) == verdicts(
        [keyring.verify(envelope, 0) for envelope in batch])
    assert records.parse(cose.parse_sign1(ENVELOPES[1]).payload) == alone[1].record


_, LONG_CHAIN = make_chain(12)


@pytest.mark.parametrize("batches", [
    [[0, 1, 2], [3, 4], [5, 6, 7]],  # in order: the shortcut every time
    [[2, 1, 0], [4, 3], [5]],  # in order, each batch shuffled
    [[1, 2], [0], [3, 4]],  # no seq 0 at first
    [[0, 1], [3, 4], [2], [5]],  # a hole, filled later
    [[0, 1], [3, 4], [2, 5], [6]],  # a batch that fills the hole and carries on
    [[0, 1, 2], [1, 2, 3], [3, 4]],  # replays beside new records
    [[0], [5], [1, 2, 3, 4], [6]],  # a long hole from one record
    [[0, 1], [2, 4], [3]],  # a hole inside one batch
])
def test_the_chain_state_is_what_reading_the_chain_gives(store, batches):
    held = set()
    for batch in batches:
        ingest(store, [LONG_CHAIN[seq] for seq in batch])
        held.update(batch)
        state = store.ingest_state(GATEWAY)
        run_end = -1
        while run_end + 1 in held:
            run_end += 1
        assert state.contiguous_seq == (None if run_end == -1 else run_end)
        assert state.highest_seq == max(held)
