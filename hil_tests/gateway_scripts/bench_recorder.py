"""Gateway throughput for `meterseal bench`; runs on the MicroPython unix port (and CPython).

Usage: bench_recorder.py WORKDIR COUNT table|no_table

Turns COUNT fuel-sale observations into records through the real recorder, state, journal and
software signer (the read side is the driver's, measured by the tests), and prints one JSON
line: records per second and the heap in use after a collection before and after the run (flat
means the record path keeps nothing), with the total heap.
"""

import gc
import json
import sys

import ticks
from meterseal.firmware import p256
from meterseal.firmware.journal import Journal
from meterseal.firmware.recorder import Recorder
from meterseal.firmware.signer import SoftwareSigner
from meterseal.firmware.state import State

_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
_IDENTITY = {"gateway_id": "MS-GW-BENCH", "software_name": "meterseal-gw",
             "software_version": "0.1.0", "software_digest": bytes(32)}


class _Clock:
    def ticks_ms(self):
        return ticks.now_us() // 1000

    measure_ms = ticks_ms  # durations on the same clock, as on a board

    def ticks_diff(self, a, b):
        return a - b

    def wall_ms(self):
        return 1767225600000 + self.ticks_ms()

    def set_wall_ms(self, ms):
        pass


def _heap_used():
    gc.collect()
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


def main(argv):
    workdir, count, mode = argv[1], int(argv[2]), argv[3]
    table = p256.Table() if mode == "table" else None
    state = State.load(workdir + "/state")
    journal = Journal(workdir + "/journal", segment_bytes=262144, max_segments=64)
    recorder = Recorder(state, journal, SoftwareSigner(_KEY, table), _Clock(), _IDENTITY)
    recorder.start("power_on")
    device = {"dispenser_address": 0x50, "nozzle": 1}
    used_before = _heap_used()
    start = ticks.now_us()
    for i in range(count):
        volume_ml = 20000 + i
        recorder.sale(device, {
            "grade": 1, "volume_ml": volume_ml, "unit_price_minor_per_kl": 789000,
            "amount_minor": (volume_ml * 789000 + 500000) // 1000000,
            "start_wall_time_ms": 1767225600000, "end_wall_time_ms": 1767225630000,
            "duration_ms": 30000, "totalizer_start_ml": i * 20000, "totalizer_end_ml": i * 20000 + volume_ml,
            "flow_interval_ms": 1000, "flow_profile_ml": [volume_ml // 30] * 30,
            "end_status": "completed", "pulses_counted": volume_ml // 10, "pulse_volume_ml": volume_ml,
        })
    journal.flush()
    elapsed_us = ticks.elapsed_us(ticks.now_us(), start)
    used_after = _heap_used()
    print(json.dumps({
        "records": count,
        "records_per_s": count * 1000000 / elapsed_us,
        "heap_used_before": used_before,
        "heap_used_after": used_after,
        "heap_total": used_after + gc.mem_free() if used_after is not None else None,
        "journal_bytes": journal.stats()["used_bytes"],
    }))
    return 0


sys.exit(main(sys.argv))
