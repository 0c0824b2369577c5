"""The recorder's records, made on the real MicroPython unix port, checked by the host side:
every signature verifies with cryptography and the chain tracker finds nothing wrong."""

from pathlib import Path

from meterseal.hil import micropython
from meterseal.host import chain, verify
from meterseal.protocol import cose

SCRIPT = Path(__file__).parent / "mpy" / "recorder_checks.py"


def test_records_made_on_micropython_verify_and_chain_on_the_host(device_image):
    result = micropython.run(SCRIPT, device_image, heapsize="192K")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    public = bytes.fromhex(next(l.split()[1] for l in lines if l.startswith("PUBLIC ")))
    envelopes = [bytes.fromhex(l.split()[1]) for l in lines if l.startswith("ENVELOPE ")]
    assert len(envelopes) == 8
    keyring = {cose.kid_for(public): verify.load_public_key(public)}
    tracker = chain.ChainTracker()
    for envelope in envelopes:
        verdict = verify.verify_record(envelope, keyring)
        assert verdict.outcome == verify.VERIFIED, verdict
        record = verdict.record
        assert tracker.feed(envelope, record["seq"], record["boot_epoch"], record["prev"]) == []


def test_a_rotated_key_is_announced_under_the_old_key_and_used_after(device_image):
    result = micropython.run(Path(__file__).parent / "mpy" / "key_rotation_checks.py",
                             device_image, heapsize="192K", cwd=Path(__file__).parent / "mpy")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    publics = [bytes.fromhex(l.split()[1]) for l in lines if l.startswith("PUBLIC ")]
    envelopes = [bytes.fromhex(l.split()[1]) for l in lines if l.startswith("ENVELOPE ")]
    keyring = {cose.kid_for(p): verify.load_public_key(p) for p in publics}
    tracker = chain.ChainTracker()
    current = publics[0]
    for envelope in envelopes:
        verdict = verify.verify_record(envelope, keyring)
        assert verdict.outcome == verify.VERIFIED, verdict
        assert cose.parse_sign1(envelope).kid == cose.kid_for(current)
        record = verdict.record
        assert tracker.feed(envelope, record["seq"], record["boot_epoch"], record["prev"]) == []
        if record["kind"] == "event" and record["body"]["event_type"] == "key_rotated":
            current = record["body"]["new_public_key"]  # signed by the old key, used from now on
    assert current == publics[-1]
