"""A loopback uplink host for tests: CPython asyncio on 127.0.0.1 only, scripted misbehaviour.

It speaks protocol.uplink as the real ingest server will, but stores records in a dict and
records what it saw for the test to assert on afterwards. It verifies AUTH with `cryptography`
against the public key it was given (the registry's role), independently of the gateway code.

Records are matched by seq, read from the COSE payload's header key 4 (records.HEADER_FIELDS).
When every expected record is stored it sends the scripted COMMANDs, and when their results are
in, a final COMMAND "test.stop" that the gateway script's fake recorder takes as its cue to end.
"""

import asyncio
import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meterseal.protocol import cbor, cose
from meterseal.protocol import uplink as wire
from meterseal.protocol.errors import UplinkError

STOP_COMMAND = "test.stop"
_SEQ_KEY = 4
_FIRST_HOST_TIME_MS = 1767225600000  # 2026-01-01T00:00:00Z
_READ_CHUNK_BYTES = 4096


def verify_auth(public_key, signature, message):
    """True when r||s `signature` is a valid ES256 signature of `message` by `public_key`."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def envelope_seq(envelope):
    return cbor.loads(cose.parse_sign1(envelope).payload)[_SEQ_KEY]


class _Link:
    """One connection's frame reader and writer."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.decoder = wire.FrameDecoder()
        self.unread = memoryview(b"")

    async def receive(self):
        """(type, fields), or None when the gateway closed the connection."""
        while True:
            if self.unread:
                used, message = self.decoder.feed(self.unread)
                self.unread = self.unread[used:]
                if message is not None:
                    return message
            chunk = await self.reader.read(_READ_CHUNK_BYTES)
            if not chunk:
                return None
            self.unread = memoryview(chunk)

    async def send(self, msg_type, fields):
        self.writer.write(wire.encode(msg_type, fields))
        await self.writer.drain()


class LoopbackHost:
    """Scripted behaviour, by session number (1 = the first connection):

    - ``nack_sessions``: {session: (code, reason)} answers that session's AUTH with a NACK;
    - ``drop_batches``: {(session, batch): "unstored" | "unacked"} closes the connection on
      receiving that RECORDS batch (1 = the session's first): before storing it, or after
      storing it but before the ACK (the ACK lost with the connection);
    - ``silent_sessions``: sessions where, after the handshake, nothing is answered at all;
    - ``commands``: (name, args) pairs sent once every expected record is stored;
    - ``clock_ms``: a function giving the host time to put in each ACK (for example the real
      UTC time, so the gateway's clock is never stepped); by default the host time starts at
      2026-01-01 and moves one second per ACK;
    - ``tls``: an ssl.SSLContext to serve TLS with instead of plain TCP.
    """

    def __init__(
        self,
        public_key,
        expected_records,
        nack_sessions=None,
        drop_batches=None,
        silent_sessions=(),
        commands=(),
        clock_ms=None,
        tls=None,
    ):
        self.public_key = public_key
        self.tls = tls
        self.kid = hashlib.sha256(public_key).digest()
        self.expected_records = expected_records
        self.nack_sessions = nack_sessions or {}
        self.drop_batches = drop_batches or {}
        self.silent_sessions = set(silent_sessions)
        self.commands = list(commands)
        self.port = None
        self.sessions = []  # per connection: a dict of what happened
        self.stored = {}  # seq -> envelope
        self.received_seqs = []  # every seq received, duplicates included, in arrival order
        self.dropped_seqs = []  # the seqs of batches the connection was dropped on
        self.forks = []  # seqs received again with different bytes
        self.host_times_sent = []
        self.command_results = {}  # command id -> COMMAND_RESULT fields
        self.errors = []
        self._commands_sent = False
        self._stop_sent = False
        self._next_command_id = 1
        self._clock_ms = _FIRST_HOST_TIME_MS
        self._clock = clock_ms
        self._server = None

    async def start(self, port=0):
        """Listen on 127.0.0.1:``port`` (0: any free port); ``self.port`` is the one bound."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self):
        self._server.close()
        await self._server.wait_closed()

    def _host_time_ms(self):
        self._clock_ms = self._clock() if self._clock is not None else self._clock_ms + 1000
        self.host_times_sent.append(self._clock_ms)
        return self._clock_ms

    async def _serve(self, reader, writer):
        session = {"number": len(self.sessions) + 1, "auth_ok": None, "batches": 0, "pings": 0}
        self.sessions.append(session)
        link = _Link(reader, writer)
        try:
            await self._session(link, session)
        except (UplinkError, ConnectionError) as exc:
            session["error"] = str(exc)
        finally:
            writer.close()

    async def _session(self, link, session):
        number = session["number"]
        message = await link.receive()
        if message is None or message[0] != wire.HELLO:
            raise UplinkError("expected HELLO, got %r" % (message,))
        hello = session["hello"] = message[1]
        nonce = os.urandom(32)
        await link.send(wire.CHALLENGE, {"nonce": nonce, "host_time_ms": self._clock_ms})
        message = await link.receive()
        if message is None or message[0] != wire.AUTH:
            raise UplinkError("expected AUTH, got %r" % (message,))
        session["auth_ok"] = hello["kid"] == self.kid and verify_auth(
            self.public_key, message[1]["signature"], wire.auth_message(nonce, hello)
        )
        if not session["auth_ok"]:
            await link.send(wire.NACK, {"code": wire.NACK_AUTH_FAILED, "reason": "bad AUTH"})
            return
        if number in self.nack_sessions:
            code, reason = self.nack_sessions[number]
            await link.send(wire.NACK, {"code": code, "reason": reason})
            return
        await self._ack(link, max(self.stored) if self.stored else None)
        silent = number in self.silent_sessions
        while True:
            message = await link.receive()
            if message is None:
                return
            msg_type, fields = message
            if msg_type == wire.PING:
                session["pings"] += 1
            if silent:
                continue
            if msg_type == wire.RECORDS:
                session["batches"] += 1
                envelopes = fields["envelopes"]
                seqs = [envelope_seq(envelope) for envelope in envelopes]
                self.received_seqs.extend(seqs)
                drop = self.drop_batches.get((number, session["batches"]))
                if drop is not None:
                    self.dropped_seqs.extend(seqs)
                    if drop == "unacked":
                        self._store(seqs, envelopes)
                    return
                self._store(seqs, envelopes)
                await self._ack(link, max(seqs))
                await self._after_store(link)
            elif msg_type == wire.COMMAND_RESULT:
                self.command_results[fields["id"]] = fields
                if len(self.command_results) == len(self.commands):
                    await self._send_stop(link)
            elif msg_type == wire.PING:
                await link.send(wire.PONG, {})
            elif msg_type != wire.PONG:
                raise UplinkError("unexpected %s" % wire.type_name(msg_type))

    def _store(self, seqs, envelopes):
        for seq, envelope in zip(seqs, envelopes):
            if seq in self.stored and self.stored[seq] != envelope:
                self.forks.append(seq)
            self.stored.setdefault(seq, envelope)

    async def _after_store(self, link):
        if len(self.stored) >= self.expected_records and not self._commands_sent:
            self._commands_sent = True
            for name, args in self.commands:
                await self._command(link, name, args)
            if not self.commands:
                await self._send_stop(link)

    async def _ack(self, link, seq):
        await link.send(wire.ACK, {"seq": seq, "host_time_ms": self._host_time_ms()})

    async def _command(self, link, name, args):
        command_id = self._next_command_id
        self._next_command_id += 1
        await link.send(wire.COMMAND, {"id": command_id, "name": name, "args": args})
        return command_id

    async def _send_stop(self, link):
        if not self._stop_sent:
            self._stop_sent = True
            await self._command(link, STOP_COMMAND, {})
