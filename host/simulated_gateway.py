"""A gateway played by the host side, for tests and the ingest benchmark: its registration
(provision), chained records signed with a real gateway key (RecordMaker), and one uplink
connection driven by hand over protocol.uplink (UplinkSession). Nothing here runs on a device;
the firmware's own uplink client is meterseal.firmware.uplink.
"""

import asyncio
from hashlib import sha256

from meterseal.protocol import cose, records
from meterseal.protocol import uplink as wire

SITE = "SITE-1"
START_WALL_MS = 1767225600000  # 2026-01-01T00:00:00Z
SOFTWARE = {"software_name": "meterseal-gw", "software_version": "0.1.0",
            "software_digest": b"\x5a" * 32}
_READ_CHUNK_BYTES = 16384


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


class UplinkSession:
    """One connection of gateway ``gateway_id`` whose key is ``key`` (a firmware Signer), driven
    message by message. ``await session.handshake(port)`` returns the host's answer to AUTH;
    then ``write`` frames (or ``send`` messages) and ``receive`` the answers."""

    def __init__(self, gateway_id, key, boot=1):
        self.gateway_id = gateway_id
        self.key = key
        self.boot = boot
        self.reader = None
        self.writer = None
        self._decoder = wire.FrameDecoder()
        self._unread = memoryview(b"")

    async def connect(self, port, host="127.0.0.1"):
        self.reader, self.writer = await asyncio.open_connection(host, port)

    def hello(self, highest_seq=None):
        return {"gateway_id": self.gateway_id, **SOFTWARE, "boot": self.boot,
                "highest_seq": highest_seq, "kid": cose.kid_for(self.key.public_key())}

    async def handshake(self, port, highest_seq=None, timeout_s=10, key_announcement=None):
        """Connect, HELLO (carrying ``key_announcement``, a key_rotated record, if given),
        answer the CHALLENGE; the host's answer to AUTH (ACK or NACK), or None if it closed the
        connection."""
        await self.connect(port)
        hello = self.hello(highest_seq)
        if key_announcement is not None:
            hello["key_announcement"] = key_announcement
        await self.send(wire.HELLO, hello)
        challenge = await self.receive(timeout_s)
        if challenge is None or challenge[0] != wire.CHALLENGE:
            return challenge
        await self.send(wire.AUTH, {"signature": self.key.sign(
            wire.auth_message(challenge[1]["nonce"], hello))})
        return await self.receive(timeout_s)

    def write(self, frame):
        """Queue one whole frame (wire.encode) for sending."""
        self.writer.write(frame)

    async def send(self, msg_type, fields):
        self.writer.write(wire.encode(msg_type, fields))
        await self.writer.drain()

    async def receive(self, timeout_s):
        """The next (type, fields), or None once the host closed the connection; TimeoutError
        after ``timeout_s`` without a whole message."""
        return await asyncio.wait_for(self._next_message(), timeout_s)

    async def _next_message(self):
        while True:
            if self._unread:
                used, message = self._decoder.feed(self._unread)
                self._unread = self._unread[used:]
                if message is not None:
                    return message
            chunk = await self.reader.read(_READ_CHUNK_BYTES)
            if not chunk:
                return None
            self._unread = memoryview(chunk)

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
