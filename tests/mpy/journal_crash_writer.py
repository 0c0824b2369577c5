# Run by tests/test_journal.py under MicroPython, then killed with SIGKILL at a random point.
#
#   journal_crash_writer.py ROOT write   recover, then append chained records for ever, printing
#                                        "F <seq>" after each flush returns and "a <seq>" /
#                                        "A <seq>" before / after each acknowledge
#   journal_crash_writer.py ROOT check   recover and print the report and every pending record
#
# Each envelope names its seq and the CRC-32 of the previous envelope, like a record's prev, so
# the check can tell that the chain continues from the last good record across kills.
import sys

from meterseal.firmware.journal import Journal
from meterseal.protocol.crc import crc32

root, mode = sys.argv[1], sys.argv[2]


def say(line):
    # One write with its newline: this MicroPython build's print() sends the text at once but
    # its end "\n" only with the next output, so a kill would leave a done step's line cut short.
    sys.stdout.write(line + "\n")


journal = Journal(root, segment_bytes=2048, max_segments=6, group_records=3, group_ms=20,
                  buffer_bytes=1024, reserve_bytes=128)
report = journal.recovery
say("R %d %s" % (report["bytes_truncated"], report["last_good_seq"]))


def envelope(seq, prev_crc):
    return b"%d:%08x:" % (seq, prev_crc) + b"z" * (seq % 97)


if mode == "check":
    records = journal.pending(100000)
    say("P " + ",".join(str(seq) for seq, _ in records))
    for (seq, env), (next_seq, next_env) in zip(records, records[1:]):
        assert next_env == envelope(next_seq, crc32(env)), (seq, next_seq)
    last = journal.last()
    if records:
        assert last == records[-1]
    say("OK")
else:
    last = journal.last()
    seq = last[0] + 1 if last else 1
    prev_crc = crc32(last[1]) if last else 0
    while True:
        env = envelope(seq, prev_crc)
        journal.append(seq, env)
        prev_crc = crc32(env)
        if seq % 5 == 0:
            journal.flush()
            say("F %d" % seq)
        if seq % 20 == 0:
            say("a %d" % (seq - 12))
            journal.acknowledge(seq - 12)
            say("A %d" % (seq - 12))
        seq += 1
