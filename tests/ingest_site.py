"""Shared pieces of the ingest tests (test_ingest.py): real records signed with a real gateway
key, a hand-driven uplink gateway speaking protocol.uplink on a raw socket, a registered SQLite
store, and the ingest server on its own event-loop thread for tests that run a real gateway
process beside it."""

import asyncio
import threading
import time
from hashlib import sha256

from meterseal.firmware import signer
from meterseal.host.ingest import IngestConfig, IngestServer
from meterseal.host.storage import open_store
from meterseal.protocol import cose, records
from meterseal.protocol import uplink as wire

from uplink_test_server import _Link

SITE = "SITE-1"
START_WALL_MS = 1767225600000  # 2026-01-01T00:00:00Z
SOFTWARE = {"software_name": "meterseal-gw", "software_version": "0.1.0",
            "software_digest": b"\x5a" * 32}
IO_TIMEOUT_S = 10


def new_signer():
    return signer.SoftwareSigner(signer.generate_secret())


def provision(store, gateway_id, public_key, valid_from_ms=0):
    """Register a site (once), the gateway and its key, as an installer would."""
    if not any(site.site_id == SITE for site in store.registry.sites()):
        store.registry.add_site(SITE, "test site")
    store.registry.add_gateway(gateway_id, "SN-" + gateway_id, SITE)
    store.registry.add_key(gateway_id, public_key, valid_from_ms)


class RecordMaker:
    """Chained, signed records of one gateway: seq from 0, prev the SHA-256 of the last
    envelope, wall time one second and opsec one second further per record, time_status S."""

    def __init__(self, gateway_id, key, boot_epoch=1):
        self.gateway_id = gateway_id
        self.key = key
        self.seq = 0
        self.prev = bytes(32)
        self.boot_epoch = boot_epoch
        self.opsec = 100
        self.wall_time_ms = START_WALL_MS
        self.clock_set_count = 0
        self.time_status = "S"

    def make(self, body=None, key=None, **header):
        """The next record's envelope, signed by ``key`` (the gateway's by default); ``header``
        overrides any header field, and the chain moves on from what the record says."""
        values = {
            "version": records.SCHEMA_VERSION, "gateway_id": self.gateway_id,
            "boot_epoch": self.boot_epoch, "seq": self.seq, "prev": self.prev,
            "opsec": self.opsec, "wall_time_ms": self.wall_time_ms,
            "time_status": self.time_status, "clock_set_count": self.clock_set_count,
            "event_count": 0, **SOFTWARE, "kind": "event",
            "body": body or {"event_type": "tamper", "sensor": "lid"},
        }
        values.update(header)
        key = key or self.key
        envelope = bytes(cose.sign1(records.encode(values), key,
                                    cose.kid_for(key.public_key())))
        self.seq = values["seq"] + 1
        self.prev = sha256(envelope).digest()
        self.boot_epoch = values["boot_epoch"]
        self.opsec = values["opsec"] + 1
        self.wall_time_ms = values["wall_time_ms"] + 1000
        return envelope

    def batch(self, count):
        return [self.make() for _ in range(count)]


class RawGateway:
    """A gateway driven by hand over a raw TCP connection: frames built with protocol.uplink."""

    def __init__(self, gateway_id, key):
        self.gateway_id = gateway_id
        self.key = key
        self.link = None

    @property
    def writer(self):
        return self.link.writer

    async def connect(self, port):
        self.link = _Link(*await asyncio.open_connection("127.0.0.1", port))

    async def send_bytes(self, data):
        self.link.writer.write(data)
        await self.link.writer.drain()

    async def send(self, msg_type, fields):
        await self.link.send(msg_type, fields)

    async def receive(self):
        """(type, fields), or None once the host closed the connection."""
        return await asyncio.wait_for(self.link.receive(), IO_TIMEOUT_S)

    def hello(self, highest_seq=None, kid_of=None):
        return {"gateway_id": self.gateway_id, **SOFTWARE, "boot": 1,
                "highest_seq": highest_seq,
                "kid": cose.kid_for((kid_of or self.key).public_key())}

    async def handshake(self, port, highest_seq=None, key_announcement=None):
        """Connect and authenticate; returns the host's answer to AUTH (ACK or NACK)."""
        await self.connect(port)
        hello = self.hello(highest_seq)
        if key_announcement is not None:
            hello["key_announcement"] = key_announcement
        await self.send(wire.HELLO, hello)
        answer = await self.receive()
        if answer is None or answer[0] != wire.CHALLENGE:
            return answer
        await self.send(wire.AUTH, {"signature": self.key.sign(
            wire.auth_message(answer[1]["nonce"], hello))})
        return await self.receive()

    async def upload(self, envelopes):
        """Send one RECORDS batch; returns the host's answer (an ACK, or what ended it)."""
        await self.send(wire.RECORDS, {"envelopes": envelopes})
        return await self.receive()

    async def close(self):
        if self.link is not None:
            self.link.writer.close()
            try:
                await self.link.writer.wait_closed()
            except OSError:
                pass


async def running_server(db_path, **config):
    """An IngestServer on 127.0.0.1, any free port, over the store at ``db_path``."""
    server = IngestServer(open_store(db_path), IngestConfig(port=0, **config))
    await server.start()
    return server


async def stop_server(server):
    await server.close()
    server.store.close()


class ServerThread:
    """The ingest server on its own event loop, for tests whose main thread drives processes."""

    def __init__(self, db_path, **config):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(running_server(db_path, **config))
        self.port = self.server.port

    def call(self, coroutine, timeout_s=60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self):
        self.call(stop_server(self.server))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_until(predicate, timeout_s, what, poll_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
