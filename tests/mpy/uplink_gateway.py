# The gateway side of tests/test_uplink_client.py, run on the MicroPython unix port:
# the real UplinkClient with test doubles for the journal and the recorder, which print what
# they are given as JSON lines for the test to check.
#
# Usage: uplink_gateway.py CONFIG_FILE (JSON), with keys host, port, records, batch_records,
# backoff_min_ms, backoff_max_ms, ping_idle_ms, link_timeout_ms, ack_timeout_ms, poll_ms,
# stop_after_sessions_ended (0: only the host's "test.stop" command ends the run) and
# deadline_ms, a bound on the whole run; optionally ca_file and server_name for TLS.
import asyncio
import json
import sys
import time

from known_vectors import RFC_KEY
from meterseal.firmware import signer
from meterseal.firmware.uplink import UplinkClient, tls_context
from meterseal.protocol import cbor, cose

GATEWAY_ID = "MS-GW-0001"
SOFTWARE = {"name": "meterseal-gw", "version": "0.1.0", "digest": b"\x5a" * 32}
BOOT = 7
_SEQ_KEY = 4  # records.HEADER_FIELDS


def emit(**fields):
    print(json.dumps(fields))


class FakeJournal:
    def __init__(self, entries):
        self.entries = entries  # (seq, envelope), ascending
        self.cursor = 0  # highest acknowledged seq; seqs start at 1

    def pending(self, limit):
        return [entry for entry in self.entries if entry[0] > self.cursor][:limit]

    def acknowledge(self, seq):
        emit(acknowledge=seq)
        self.cursor = seq

    def highest_seq(self):
        return self.entries[-1][0] if self.entries else None


class FakeRecorder:
    def __init__(self):
        self.stopped = False

    def host_time(self, host_ms):
        emit(host_time=host_ms)

    def key_announcement(self):
        return None  # the first key: nothing to announce

    def command(self, name, args):
        emit(command=name, args=args)
        if name == "read_totalizers":
            return {"totalizers_ml": [1234567, 7654321]}
        if name == "explode":
            raise ValueError("boom")
        if name == "test.stop":
            self.stopped = True
            return {}
        return {"error": "unknown command " + name}


class Log:
    def __init__(self):
        self.sessions_ended = 0

    def __call__(self, line):
        if "session ended" in line:
            self.sessions_ended += 1
        emit(log=line)


async def main(config):
    key = signer.SoftwareSigner(RFC_KEY)
    kid = cose.kid_for(key.public_key())
    entries = []
    for seq in range(1, config["records"] + 1):
        entries.append((seq, cose.sign1(cbor.dumps({_SEQ_KEY: seq}), key, kid)))
    journal = FakeJournal(entries)
    recorder = FakeRecorder()
    log = Log()
    tls = None
    if "ca_file" in config:
        with open(config["ca_file"], "rb") as f:
            tls = (tls_context(f.read()), config["server_name"])
    client = UplinkClient(
        config["host"],
        config["port"],
        GATEWAY_ID,
        SOFTWARE,
        BOOT,
        key,
        journal,
        recorder,
        log=log,
        tls=tls,
        batch_records=config["batch_records"],
        backoff_min_ms=config["backoff_min_ms"],
        backoff_max_ms=config["backoff_max_ms"],
        ping_idle_ms=config["ping_idle_ms"],
        link_timeout_ms=config["link_timeout_ms"],
        ack_timeout_ms=config["ack_timeout_ms"],
        poll_ms=config["poll_ms"],
    )
    task = asyncio.create_task(client.run())
    stop_after = config["stop_after_sessions_ended"]
    start_ms = time.ticks_ms()
    timed_out = True
    while time.ticks_diff(time.ticks_ms(), start_ms) < config["deadline_ms"]:
        if recorder.stopped or (stop_after and log.sessions_ended >= stop_after):
            timed_out = False
            break
        await asyncio.sleep_ms(10)
    await asyncio.sleep_ms(50)  # lets the answer to the last command go out
    task.cancel()
    await asyncio.sleep_ms(0)
    emit(done=True, cursor=journal.cursor, timed_out=timed_out)


# The configuration comes in a file: this MicroPython build crashes on an argument of 253 bytes
# or more (docs/development.md).
with open(sys.argv[1]) as f:
    asyncio.run(main(json.load(f)))
