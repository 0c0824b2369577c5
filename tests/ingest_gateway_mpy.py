# The gateway side of test_ingest.py's host-crash test, run on the MicroPython unix port (not
# collected by pytest): the real UplinkClient, a journal of real records that the test signed
# beforehand with the gateway's key, and that key for AUTH. Prints JSON lines: every
# acknowledge, every log line, and a final "done" with the journal cursor.
#
# Usage: ingest_gateway_mpy.py CONFIG_FILE (JSON): host, port, gateway_id, secret (hex),
# journal (a file of 2-byte big-endian lengths and envelopes, seq 0 upwards), batch_records,
# backoff_min_ms, backoff_max_ms, poll_ms, deadline_ms.
import asyncio
import json
import sys
import time

from meterseal.firmware import signer
from meterseal.firmware.uplink import UplinkClient

SOFTWARE = {"name": "meterseal-gw", "version": "0.1.0", "digest": b"\x5a" * 32}


def emit(**fields):
    print(json.dumps(fields))


class Journal:
    def __init__(self, envelopes):
        self.envelopes = envelopes  # seq = index
        self.cursor = None  # highest acknowledged seq

    def pending(self, limit):
        start = 0 if self.cursor is None else self.cursor + 1
        return [(seq, self.envelopes[seq])
                for seq in range(start, min(start + limit, len(self.envelopes)))]

    def acknowledge(self, seq):
        emit(acknowledge=seq)
        self.cursor = seq

    def highest_seq(self):
        return len(self.envelopes) - 1


class Recorder:
    def host_time(self, host_ms):
        pass

    def key_announcement(self):
        return None  # the first key: nothing to announce

    def command(self, name, args):
        return {"error": "no commands here"}


def read_journal(path):
    with open(path, "rb") as f:
        data = f.read()
    envelopes, at = [], 0
    while at < len(data):
        length = (data[at] << 8) | data[at + 1]
        envelopes.append(data[at + 2:at + 2 + length])
        at += 2 + length
    return envelopes


async def main(config):
    journal = Journal(read_journal(config["journal"]))
    key = signer.SoftwareSigner(int(config["secret"], 16))
    client = UplinkClient(config["host"], config["port"], config["gateway_id"], SOFTWARE, 1, key,
                          journal, Recorder(), log=lambda line: emit(log=line),
                          batch_records=config["batch_records"],
                          backoff_min_ms=config["backoff_min_ms"],
                          backoff_max_ms=config["backoff_max_ms"], poll_ms=config["poll_ms"])
    task = asyncio.create_task(client.run())
    start_ms = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start_ms) < config["deadline_ms"]:
        if journal.cursor == journal.highest_seq():
            break
        await asyncio.sleep_ms(20)
    task.cancel()
    await asyncio.sleep_ms(0)
    emit(done=True, cursor=journal.cursor)


with open(sys.argv[1]) as f:
    asyncio.run(main(json.load(f)))
