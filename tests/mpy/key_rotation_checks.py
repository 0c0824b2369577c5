# Key rotation on both interpreters, with the real State, Journal and key file: the host's
# rotate_key command stages a new key, signs key_rotated announcing it with the old key, makes
# that durable and switches; records after it carry the new key's kid. A rotation cut short
# (staged key left at boot) is finished at the next start, announcing the same key again.
# Envelopes and both public keys are printed for test_recorder.py to verify with cryptography.
# heapsize: 192K
import gc
import os
from binascii import hexlify

from meterseal.firmware import signer as keys
from meterseal.firmware.journal import Journal
from meterseal.firmware.recorder import Recorder
from meterseal.firmware.state import State
from meterseal.protocol import cose

from recorder_fixtures import IDENTITY, NOZZLE, Clock, all_records, check_chain, remove_tree, sale_body

ROOT = "/tmp/key-rotation-checks-" + hexlify(os.urandom(4)).decode()
KEY = ROOT + "/gateway.key"


def kid_of(envelope):
    return cose.parse_sign1(envelope).kid


def boot(clock):
    key = keys.load_or_create(KEY)
    gc.collect()
    # A small group buffer: this script holds a full sale history in a 192 KB heap.
    journal = Journal(ROOT + "/journal", buffer_bytes=4096)
    recorder = Recorder(State.load(ROOT + "/state"), journal, key, clock, IDENTITY, key_path=KEY)
    recorder.start("power_on")
    return key, recorder, journal


remove_tree(ROOT)
os.mkdir(ROOT)
try:
    clock = Clock()
    key, recorder, journal = boot(clock)
    first_public = key.public_key()
    assert recorder.key_announcement() is None  # the first key: nothing to announce
    recorder.sale(NOZZLE, sale_body(20000))

    result = recorder.command("rotate_key", {})
    second_public = result["new_public_key"]
    assert second_public != first_public and key.public_key() == second_public
    assert keys.staged_public_key(KEY) is None
    assert keys.load_or_create(KEY).public_key() == second_public  # what a reboot finds
    recorder.sale(NOZZLE, sale_body(30000))

    # A rotation cut after staging: the next boot announces the staged key and switches.
    journal.close()
    # A reboot: nothing of the first run stays in the heap (a 192 KB heap holds one journal).
    key = recorder = journal = None
    gc.collect()
    third_public = keys.stage_next_key(KEY)
    assert keys.stage_next_key(KEY) == third_public  # staging twice keeps the first
    key, recorder, journal = boot(clock)
    assert key.public_key() == third_public and keys.staged_public_key(KEY) is None
    recorder.sale(NOZZLE, sale_body(40000))

    held = all_records(journal)
    check_chain(held, bytes(32))
    kinds = [r["body"]["event_type"] if r["kind"] == "event" else r["kind"] for _, _, r in held]
    assert kinds == ["boot", "fuel.sale", "key_rotated", "fuel.sale",
                     "boot", "key_rotated", "fuel.sale"], kinds
    kids = [kid_of(envelope) for _, envelope, _ in held]
    first, second, third = (cose.kid_for(k) for k in (first_public, second_public, third_public))
    assert kids == [first, first, first, second, second, second, third], kids
    announced = [r["body"]["new_public_key"] for _, _, r in held if r["kind"] == "event"
                 and r["body"]["event_type"] == "key_rotated"]
    assert announced == [second_public, third_public]
    # What the next HELLO carries: the signed record announcing the key now in use.
    assert recorder.key_announcement() == held[5][1]
    assert keys.load_or_create(KEY).public_key() == third_public
    assert recorder.command("rotate_key", {})["seq"] == held[-1][0] + 1

    for public in (first_public, second_public, third_public):
        print("PUBLIC", hexlify(public).decode())
    for _, envelope, _ in held:
        print("ENVELOPE", hexlify(envelope).decode())
finally:
    remove_tree(ROOT)
print("PASS key_rotation_checks")
