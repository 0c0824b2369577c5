# The recorder's clock over a long uptime, on both interpreters. A 32-bit board's ticks wrap
# every 2**30 ms (12.4 days) and ticks_diff is right only over half that: operating seconds must
# still count every second of a month's uptime. And a clock step threshold set in the
# configuration leaves a host time within it alone (no time_set).
# heapsize: 192K
import os
from binascii import hexlify

from meterseal.firmware.journal import Journal
from meterseal.firmware.recorder import Recorder
from meterseal.firmware.signer import SoftwareSigner
from meterseal.firmware.state import State

from recorder_fixtures import IDENTITY, Clock, all_records, remove_tree

ROOT = "/tmp/opsec-checks-" + hexlify(os.urandom(4)).decode()
_PERIOD = 2 ** 30  # MicroPython's ticks period on a 32-bit port


class WrappingClock(Clock):
    def ticks_ms(self):
        return self.ticks & (_PERIOD - 1)

    measure_ms = ticks_ms

    def ticks_diff(self, a, b):
        return ((a - b + _PERIOD // 2) & (_PERIOD - 1)) - _PERIOD // 2


remove_tree(ROOT)
os.mkdir(ROOT)
try:
    clock = WrappingClock()
    journal = Journal(ROOT + "/journal")
    recorder = Recorder(State.load(ROOT + "/state"), journal, SoftwareSigner(12345), clock,
                        IDENTITY, time_step_threshold_ms=3600000)
    recorder.start("power_on")
    step_ms = _PERIOD // 2 - 1000  # as far as ticks_diff reaches, five times: 31 days
    for _ in range(5):
        clock.ticks += step_ms
        recorder.heartbeat()
    recorder.host_time(clock.wall_ms() + 600000)  # ten minutes off, under the hour allowed
    held = all_records(journal)
    assert [r["kind"] for _, _, r in held] == ["event"] + ["status"] * 5, held
    opsecs = [r["opsec"] for _, _, r in held]
    assert opsecs == [i * step_ms // 1000 for i in range(6)], opsecs
    journal.close()
finally:
    remove_tree(ROOT)

print("PASS opsec_checks")
