"""The gateway's uplink client: sends the journal to the host over framed TCP (protocol.uplink).

One session::

    gateway                                   host
    HELLO (id, software, boot, highest seq, kid) ->
                                           <- CHALLENGE (nonce, host time)
    AUTH (signature over nonce + HELLO)    ->
                                           <- ACK (highest seq it holds, host time) | NACK
    RECORDS (one batch from the cursor)    ->
                                           <- ACK (seq now stored, host time)
    ...                                    <- COMMAND  ->  COMMAND_RESULT
    PING when idle                         <- PONG; the host may PING too

Stop-and-wait: at most one RECORDS batch is unacknowledged, and it is not kept once sent (a
resend reads the journal again from its cursor), so RAM holds one batch and its frame at most.
Any fault (socket error, bad frame, NACK, timeout) ends the session; run() then waits an
exponentially growing, jittered delay and reconnects. Unacknowledged records are resent and
the host stores them idempotently.
"""

import random
from binascii import a2b_base64

import asyncio

from meterseal.firmware.timing import ticks_diff, ticks_ms
from meterseal.protocol import cose
from meterseal.protocol import uplink as wire
from meterseal.protocol.errors import UplinkError

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


# Reconnect delay: BACKOFF_MIN_MS doubled per failed session up to BACKOFF_MAX_MS, then a random
# part of up to half of it taken off, so a fleet cut off by a host restart does not reconnect
# in step. An accepted handshake resets the doubling.
BACKOFF_MIN_MS = const(1000)
BACKOFF_MAX_MS = const(300000)
CONNECT_TIMEOUT_MS = const(10000)
HANDSHAKE_TIMEOUT_MS = const(10000)
# With nothing received for PING_IDLE_MS the client sends a PING; with nothing received for
# LINK_TIMEOUT_MS (a lost PONG included) the link is dead. A half-open TCP connection (host
# rebooted, NAT entry expired) otherwise looks healthy until the kernel gives up, hours later.
PING_IDLE_MS = const(30000)
LINK_TIMEOUT_MS = const(90000)
# A batch not acknowledged in this time is taken as lost with the session.
ACK_TIMEOUT_MS = const(60000)
POLL_MS = const(200)  # how often the journal is asked for new records when idle

# Host-to-gateway messages are small (the largest is a COMMAND); a lower frame limit than the
# protocol's keeps a forged length from costing the device more than this.
_MAX_INBOUND_PAYLOAD_BYTES = const(2048)
_READ_CHUNK_BYTES = const(512)
_MAX_BACKOFF_DOUBLINGS = const(16)


class HostRefused(UplinkError):
    """The host answered NACK; the session is over."""

    def __init__(self, code, reason):
        super().__init__("host refused (NACK %d): %s" % (code, reason))
        self.code = code
        self.reason = reason


def tls_context(ca_certificate):
    """A TLS client context that accepts only a host certificate issued by ``ca_certificate``
    (the host's CA, DER or PEM bytes) and names the host (see UplinkClient's ``tls``)."""
    import ssl

    if ca_certificate.startswith(b"-----BEGIN"):
        # MicroPython's mbedTLS binding takes DER; PEM is base64 of it between the marker lines.
        lines = ca_certificate.split(b"\n")
        body = b"".join(line.strip() for line in lines if line and not line.startswith(b"-----"))
        ca_certificate = a2b_base64(body)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_certificate)
    return context


class UplinkClient:
    """Run with ``await client.run()`` (forever; cancel the task to stop it).

    ``software`` is ``{"name", "version", "digest"}`` (protocol.records software identification);
    ``journal``, ``recorder`` and ``supervisor`` are the interfaces of docs/gateway.md. ``log``
    takes one line of text. ``tls`` is None (plain TCP) or ``(context, server_name)``: a
    tls_context() and the name the host's certificate must carry. The timing keyword arguments
    default to the named limits above.
    """

    def __init__(
        self,
        host,
        port,
        gateway_id,
        software,
        boot,
        signer,
        journal,
        recorder,
        supervisor=None,
        log=print,
        tls=None,
        batch_records=wire.MAX_BATCH_RECORDS,
        backoff_min_ms=BACKOFF_MIN_MS,
        backoff_max_ms=BACKOFF_MAX_MS,
        ping_idle_ms=PING_IDLE_MS,
        link_timeout_ms=LINK_TIMEOUT_MS,
        ack_timeout_ms=ACK_TIMEOUT_MS,
        poll_ms=POLL_MS,
    ):
        self._address = (host, port)
        self._tls = tls
        self._gateway_id = gateway_id
        self._software = software
        self._boot = boot
        self._signer = signer  # the recorder's: a key rotation shows in the next HELLO
        self._journal = journal
        self._recorder = recorder
        self._supervisor = supervisor
        self._log = log
        self._batch_records = min(batch_records, wire.MAX_BATCH_RECORDS)
        self._backoff_min_ms = backoff_min_ms
        self._backoff_max_ms = backoff_max_ms
        self._ping_idle_ms = ping_idle_ms
        self._link_timeout_ms = link_timeout_ms
        self._ack_timeout_ms = ack_timeout_ms
        self._poll_ms = poll_ms
        # Count limit for journal.pending(): the journal hands over whole envelopes, so asking
        # for no more than the byte budget holds at the previous batch's largest envelope keeps
        # RAM near one batch. The first batch assumes the largest envelope possible.
        self._pending_limit = 1
        self._write_lock = asyncio.Lock()
        self._acked_seq = None  # the journal's cursor as far as this client moved it
        self._reset_session()

    def _reset_session(self):
        self._decoder = wire.FrameDecoder(_MAX_INBOUND_PAYLOAD_BYTES)
        self._unread = b""
        self._failure = None
        self._accepted = False
        self._ack_ceiling = None  # the highest seq an ACK may name: announced or sent
        self._in_flight_seq = None  # last seq of the unacknowledged batch
        self._in_flight_since_ms = 0
        self._last_rx_ms = ticks_ms()
        self._last_ping_ms = self._last_rx_ms

    async def run(self):
        failures = 0
        while True:
            try:
                await self._session()
            except Exception as exc:  # every fault ends the session; none ends the client
                self._log("uplink: session ended: %s" % (exc,))
            failures = 1 if self._accepted else failures + 1
            await self._idle(self.backoff_ms(failures))

    def backoff_ms(self, failures):
        doublings = min(failures - 1, _MAX_BACKOFF_DOUBLINGS)
        ceiling_ms = min(self._backoff_max_ms, self._backoff_min_ms << doublings)
        return ceiling_ms - random.randint(0, ceiling_ms // 2)

    async def _idle(self, duration_ms):
        # Sliced so the watchdog keeps being fed while the link is down.
        start = ticks_ms()
        while ticks_diff(ticks_ms(), start) < duration_ms:
            self._check_in()
            await asyncio.sleep(min(self._poll_ms, duration_ms) / 1000)

    def _check_in(self):
        if self._supervisor is not None:
            self._supervisor.check_in("uplink")

    async def _session(self):
        self._reset_session()
        host, port = self._address
        if self._tls is None:
            connecting = asyncio.open_connection(host, port)
        else:
            context, server_name = self._tls
            connecting = asyncio.open_connection(host, port, ssl=context,
                                                 server_hostname=server_name)
        reader, writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_MS / 1000)
        receiver = None
        try:
            await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT_MS / 1000)
            self._accepted = True
            receiver = asyncio.create_task(self._receive_loop(reader, writer))
            await self._send_loop(writer)
        finally:
            if receiver is not None:
                receiver.cancel()
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:  # a reset connection: closing it cannot fail more usefully
                pass

    async def _handshake(self, reader, writer):
        highest_seq = self._journal.highest_seq()
        hello = {
            "gateway_id": self._gateway_id,
            "software_name": self._software["name"],
            "software_version": self._software["version"],
            "software_digest": self._software["digest"],
            "boot": self._boot,
            "highest_seq": highest_seq,
            "kid": cose.kid_for(self._signer.public_key()),
        }
        announcement = self._recorder.key_announcement()
        if announcement is not None:
            hello["key_announcement"] = announcement
        await self._send(writer, wire.HELLO, hello)
        challenge = await self._expect(reader, wire.CHALLENGE)
        signature = self._signer.sign(wire.auth_message(challenge["nonce"], hello))
        await self._send(writer, wire.AUTH, {"signature": signature})
        # The host's ACK accepts the session and says what it already holds, so records whose
        # ACK was lost with the last connection are not sent again.
        self._ack_ceiling = highest_seq
        self._on_ack(await self._expect(reader, wire.ACK))

    async def _expect(self, reader, msg_type):
        got_type, fields = await self._receive(reader)
        if got_type == wire.NACK:
            raise HostRefused(fields["code"], fields["reason"])
        if got_type != msg_type:
            raise UplinkError(
                "expected %s, host sent %s" % (wire.type_name(msg_type), wire.type_name(got_type))
            )
        return fields

    async def _receive(self, reader):
        while True:
            if self._unread:
                used, message = self._decoder.feed(self._unread)
                self._unread = self._unread[used:]
                if message is not None:
                    self._last_rx_ms = ticks_ms()
                    return message
            chunk = await reader.read(_READ_CHUNK_BYTES)
            if not chunk:
                raise OSError("host closed the connection")
            self._unread = memoryview(chunk)

    async def _send(self, writer, msg_type, fields):
        frame = wire.encode(msg_type, fields)
        # The receive task answers PINGs and COMMANDs while the send loop writes batches.
        async with self._write_lock:
            writer.write(frame)
            # A host that stops reading fills the socket buffer; that is a dead link too.
            await asyncio.wait_for(writer.drain(), self._link_timeout_ms / 1000)

    async def _receive_loop(self, reader, writer):
        try:
            while True:
                msg_type, fields = await self._receive(reader)
                if msg_type == wire.ACK:
                    self._on_ack(fields)
                elif msg_type == wire.COMMAND:
                    await self._send(writer, wire.COMMAND_RESULT, self._run_command(fields))
                elif msg_type == wire.PING:
                    await self._send(writer, wire.PONG, {})
                elif msg_type == wire.NACK:
                    raise HostRefused(fields["code"], fields["reason"])
                elif msg_type != wire.PONG:
                    raise UplinkError("unexpected %s from the host" % wire.type_name(msg_type))
        except Exception as exc:  # handed to the send loop, which ends the session
            self._failure = exc

    async def _send_loop(self, writer):
        while True:
            self._check_in()
            if self._failure is not None:
                raise self._failure
            now_ms = ticks_ms()
            silent_ms = ticks_diff(now_ms, self._last_rx_ms)
            if silent_ms > self._link_timeout_ms:
                raise UplinkError("link dead: nothing received for %d ms" % silent_ms)
            if self._in_flight_seq is None:
                if await self._send_batch(writer):
                    continue
            elif ticks_diff(now_ms, self._in_flight_since_ms) > self._ack_timeout_ms:
                raise UplinkError("no ACK for the batch up to seq %d" % self._in_flight_seq)
            if (
                silent_ms >= self._ping_idle_ms
                and ticks_diff(now_ms, self._last_ping_ms) >= self._ping_idle_ms
            ):
                self._last_ping_ms = now_ms
                await self._send(writer, wire.PING, {})
            await asyncio.sleep(self._poll_ms / 1000)

    async def _send_batch(self, writer):
        """Send the next batch from the journal cursor; False when there is none."""
        envelopes = []
        batch_bytes = 0
        last_seq = None
        largest_bytes = 1
        for seq, envelope in self._journal.pending(self._pending_limit):
            size = len(envelope)
            largest_bytes = max(largest_bytes, size)
            if envelopes and batch_bytes + size > wire.MAX_BATCH_BYTES:
                break
            envelopes.append(envelope)
            batch_bytes += size
            last_seq = seq
        if not envelopes:
            return False
        fitting = wire.MAX_BATCH_BYTES // largest_bytes
        self._pending_limit = max(1, min(self._batch_records, fitting))
        # Set before sending: the ACK can arrive, on the receive task, before the write returns.
        self._in_flight_seq = last_seq
        self._in_flight_since_ms = ticks_ms()
        if self._ack_ceiling is None or last_seq > self._ack_ceiling:
            self._ack_ceiling = last_seq
        await self._send(writer, wire.RECORDS, {"envelopes": envelopes})
        return True

    def _on_ack(self, fields):
        seq = fields.get("seq")
        if seq is not None:
            # An ACK past anything announced or sent would move the cursor over records not
            # yet written, which would then never be uploaded.
            if self._ack_ceiling is None or seq > self._ack_ceiling:
                raise UplinkError(
                    "ACK for seq %d, beyond the highest seq sent (%s)" % (seq, self._ack_ceiling)
                )
            if self._acked_seq is None or seq > self._acked_seq:
                self._journal.acknowledge(seq)
                self._acked_seq = seq
        # Each batch gets one ACK; whatever it did not cover is read again from the cursor.
        self._in_flight_seq = None
        try:
            self._recorder.host_time(fields["host_time_ms"])
        except Exception as exc:  # the clock is the recorder's business; the link goes on
            self._log("uplink: recorder.host_time failed: %s" % (exc,))

    def _run_command(self, fields):
        command_id = fields["id"]
        try:
            result = self._recorder.command(fields["name"], fields["args"])
            if not isinstance(result, dict):
                raise TypeError("recorder returned %s, not a dict" % type(result).__name__)
            if "error" in result:
                return {"id": command_id, "ok": False, "error": _short_text(result["error"])}
            answer = {"id": command_id, "ok": True, "result": result}
            # Checked here so a result outside the CBOR subset becomes an error result.
            wire.encode_payload(wire.COMMAND_RESULT, answer)
            return answer
        except Exception as exc:  # a failing command must not take the link down
            error = "%s: %s" % (type(exc).__name__, exc)
            return {"id": command_id, "ok": False, "error": _short_text(error)}


def _short_text(value):
    text = str(value) or "error"
    return text[: wire.MAX_TEXT_CHARS]
