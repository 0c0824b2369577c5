# The recorder on both interpreters, in a 192 KB heap, with the real State, Journal and software
# signer: boot record first, every record chained (seq + 1, prev = SHA-256 of the previous
# envelope), audit events move event_count, a host time far off steps the clock and signs
# time_set, device fact changes become signed events, and a full journal drops records, signs
# journal_full once and records_dropped when room returns. Envelopes are printed for
# test_recorder.py to verify with cryptography on the host.
# heapsize: 192K
import gc
import os
from binascii import hexlify
from hashlib import sha256

from meterseal.firmware.journal import Journal
from meterseal.firmware.recorder import Recorder
from meterseal.firmware.signer import SoftwareSigner
from meterseal.firmware.state import State

from recorder_fixtures import IDENTITY, NOZZLE, Clock, all_records, check_chain, remove_tree, sale_body

# Any fixed key will do; known_vectors is not imported, to leave the 192 KB heap to the gateway.
RFC_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
ROOT = "/tmp/recorder-checks-" + hexlify(os.urandom(4)).decode()

remove_tree(ROOT)
os.mkdir(ROOT)
try:
    clock = Clock()
    # main.build's order: the journal's 8 KB buffer is taken before the key's arithmetic
    # scatters small objects over the heap, so it still finds one free run of that size.
    state = State.load(ROOT + "/state")
    journal = Journal(ROOT + "/journal")
    signer = SoftwareSigner(RFC_KEY)
    recorder = Recorder(state, journal, signer, clock, IDENTITY)
    recorder.start("power_on")
    recorder.device_facts({"dispenser_address": 0x50}, identity="PUMP-1", param_checksum=b"\x12\x34",
                          k_factors=[100000, 100000])
    clock.ticks += 5000
    assert recorder.sale(NOZZLE, sale_body(25000)) == 1
    recorder.totalizer(NOZZLE, 125000, 98600)
    recorder.link_state("dispenser", True, 0)
    recorder.device_facts({"dispenser_address": 0x50}, identity="PUMP-2", param_checksum=b"\x12\x35",
                          k_factors=[100000, 103000])
    # The same facts again (drivers report them with every sale) sign nothing.
    recorder.device_facts({"dispenser_address": 0x50}, identity="PUMP-2", param_checksum=b"\x12\x35",
                          k_factors=[100000, 103000])
    recorder.event("seal_open", {"dispenser_address": 0x50})
    recorder.host_time(clock.wall_ms() + 600000)
    recorder.host_time(clock.wall_ms() + 500)  # within the threshold: no step
    assert recorder.command("set_heartbeat_interval", {"seconds": 5}) == {"error": "seconds must be an integer in 10..86400"}
    assert "error" in recorder.command("format_disk", {})
    assert recorder.command("read_totalizers", {})["seq"] > 0
    entries = all_records(journal)
    check_chain(entries, bytes(32))
    kinds = [r["kind"] if r["kind"] != "event" else r["body"]["event_type"] for _, _, r in entries]
    assert kinds == ["boot", "fuel.sale", "device_identity_changed", "parameter_change",
                     "calibration", "seal_open", "time_set", "status"], kinds
    by_kind = dict(zip(kinds, [r for _, _, r in entries]))
    assert by_kind["boot"]["boot_epoch"] == 1 and by_kind["boot"]["time_status"] == "U"
    assert by_kind["fuel.sale"]["opsec"] == 5 and by_kind["fuel.sale"]["device"] == NOZZLE
    assert [r["event_count"] for _, _, r in entries] == [0, 0, 1, 2, 3, 4, 4, 4]
    assert by_kind["calibration"]["device"] == {"dispenser_address": 0x50, "nozzle": 2}
    assert by_kind["calibration"]["body"]["new_k_factor_pulses_per_kl"] == 103000
    assert by_kind["parameter_change"]["body"]["old_value"] == "1234"
    assert by_kind["time_set"]["clock_set_count"] == 1 and by_kind["status"]["time_status"] == "S"
    status = by_kind["status"]["body"]
    assert status["totalizers"] == [{"dispenser_address": 0x50, "nozzle": 1, "totalizer_ml": 125000,
                                     "amount_totalizer_minor": 98600}]
    assert status["links"] == [{"link": "dispenser", "up": True, "error_count": 0}]
    journal.close()

    # Reboot: the chain continues from the journal, the boot epoch and counters persist.
    last_seq, last_envelope = entries[-1][0], entries[-1][1]
    journal.acknowledge(last_seq)
    # The group buffer is one contiguous block: free the old journal before opening a new one,
    # as a rebooted board would, or a 192 KB heap may be too fragmented for it.
    journal = recorder = state = None
    gc.collect()
    state = State.load(ROOT + "/state")
    journal = Journal(ROOT + "/journal")
    recorder = Recorder(state, journal, signer, Clock(), IDENTITY)
    recorder.start("watchdog")
    (seq, envelope, boot), = all_records(journal)
    assert seq == last_seq + 1, (seq, last_seq)
    assert boot["prev"] == sha256(last_envelope).digest()
    assert boot["boot_epoch"] == 2 and boot["event_count"] == 4 and boot["clock_set_count"] == 1
    assert boot["body"] == {"event_type": "boot", "reset_cause": "watchdog"}
    for _, envelope, _ in entries:
        print("ENVELOPE", hexlify(envelope).decode())
    print("PUBLIC", hexlify(signer.public_key()).decode())
    journal.close()

    # A journal too small for the traffic: drops are counted, journal_full is signed once and
    # records_dropped is signed, first, as soon as the host's ACK makes room.
    remove_tree(ROOT)
    os.mkdir(ROOT)
    journal = recorder = state = entries = by_kind = status = kinds = None
    gc.collect()
    state = State.load(ROOT + "/state")
    journal = Journal(ROOT + "/journal", segment_bytes=4096, max_segments=2, buffer_bytes=2048,
                      reserve_bytes=1024)
    clock = Clock()
    recorder = Recorder(state, journal, signer, clock, IDENTITY)
    recorder.start("power_on")
    results = [recorder.sale(NOZZLE, sale_body(1000 + i)) for i in range(40)]
    dropped = results.count(None)
    assert dropped > 0 and results[-1] is None
    entries = all_records(journal)
    events = [r["body"]["event_type"] for _, _, r in entries if r["kind"] == "event"]
    assert events == ["boot", "journal_full"], events
    journal.acknowledge(entries[-1][0])
    entries = events = results = None  # parsed records are large for a 192 KB heap
    gc.collect()
    # The ACK's host time (the uplink passes it on with every ACK) signs the loss at once,
    # without waiting for the next observation.
    recorder.host_time(clock.wall_ms())
    assert [r["body"]["event_type"] for _, _, r in all_records(journal)] == ["records_dropped"]
    assert recorder.sale(NOZZLE, sale_body(5000)) is not None
    after = all_records(journal)
    report = after[0][2]["body"]
    assert report["event_type"] == "records_dropped" and report["dropped_count"] == dropped
    assert report["last_dropped_seq"] - report["first_dropped_seq"] + 1 >= dropped
    assert after[1][2]["kind"] == "fuel.sale" and after[1][2]["seq"] == after[0][2]["seq"] + 1
    journal.close()
finally:
    remove_tree(ROOT)

print("PASS recorder_checks")
