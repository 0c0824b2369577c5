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
