"""The ingest server: gateways upload signed records over the framed uplink (docs/ingest.md,
docs/uplink-protocol.md); each batch is verified, chain-checked, stored in one transaction and
only then acknowledged.

One connection::

    gateway                                   host
    HELLO (id, software, boot, seq, kid)   ->    registry: gateway active, key registered and
                                                 not revoked or replaced, else NACK + close
                                           <- CHALLENGE (32-byte nonce, host time)
    AUTH (ES256 over auth_message)         ->    verified against the registered key
                                           <- ACK (highest seq held, host time) | NACK + close
    RECORDS                                ->    verify, chain, store (one transaction)
                                           <- ACK (highest seq of the batch, host time)
                                           <- COMMAND (send_command)  -> COMMAND_RESULT
    PING                                   <- PONG

Handlers are thin: ingest_check.GatewayChecker decides, the store keeps. Every store call runs
on one worker thread (a Store holds one connection), so the event loop never waits on a
commit's fsync. Signatures are checked on a verifier thread of their own, before a batch goes to
the store's: while one batch's commit waits on the disk, the next is being verified. A bad
frame, a refusal, a lost link or a failing store ends that connection only, with one log line.

Run it with ``python -m meterseal.host.ingest --db DIR_OR_URL [--port 7455] ...``.
"""

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial

from meterseal.host import ingest_alerts, verify
from meterseal.host.detection import LiveDetection
from meterseal.host.ingest_check import GatewayChecker, Rotation, rotated_key_problem
from meterseal.host.storage import StorageError, open_store
from meterseal.protocol import cose, records
from meterseal.protocol import uplink as wire
from meterseal.protocol.errors import RecordError, UplinkError

log = logging.getLogger("meterseal.ingest")

DEFAULT_PORT = 7455
_NONCE_BYTES = 32
_READ_CHUNK_BYTES = 16384
_MAX_COMMAND_ID = 0xFFFFFFFF


@dataclass(frozen=True)
class IngestConfig:
    """Every limit of the ingest, named; docs/ingest.md gives the reasons for the defaults."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # A frame claiming more is refused from its 8-byte header, before anything is allocated.
    max_frame_payload_bytes: int = wire.MAX_PAYLOAD_BYTES
    # Records per RECORDS message; more is refused (the protocol's own bound is the ceiling).
    max_batch_records: int = wire.MAX_BATCH_RECORDS
    # Per connection: records verified and stored per second; a faster gateway is slowed down
    # (its ACKs come later), so one gateway cannot take the verifier from the others.
    max_records_per_s: float = 500.0
    # Nothing received for this long ends the connection (the gateway PINGs every 30 s idle).
    idle_timeout_s: float = 120.0
    # HELLO to the accepting ACK.
    handshake_timeout_s: float = 10.0
    # A gap is reported once still open this long, or after this many further records.
    gap_grace_s: float = 60.0
    gap_grace_records: int = 64
    # How often gaps whose grace ran out with no record arriving are looked for.
    gap_check_interval_s: float = 5.0
    # Wall time may disagree with the previous record plus the opsec advance by this much.
    clock_tolerance_ms: int = 5000
    # send_command waits this long for the COMMAND_RESULT by default.
    command_timeout_s: float = 30.0
    # Run the cheating detectors on each committed batch (docs/host.md, "Detection"); off, the
    # records are still stored and the detectors catch up when it is next on.
    detection: bool = True
    # A detector parameters file overriding the packaged defaults (docs/detectors.md); empty:
    # the defaults.
    detector_params: str = ""

    def __post_init__(self):
        if not 1 <= self.max_frame_payload_bytes <= wire.MAX_PAYLOAD_BYTES:
            raise ValueError(f"max_frame_payload_bytes must be in 1..{wire.MAX_PAYLOAD_BYTES},"
                             f" got {self.max_frame_payload_bytes}")
        if not 1 <= self.max_batch_records <= wire.MAX_BATCH_RECORDS:
            raise ValueError(f"max_batch_records must be in 1..{wire.MAX_BATCH_RECORDS}, "
                             f"got {self.max_batch_records}")
        for name in ("max_records_per_s", "idle_timeout_s", "handshake_timeout_s",
                     "gap_grace_s", "gap_grace_records", "gap_check_interval_s",
                     "clock_tolerance_ms", "command_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)}")


class GatewayNotConnected(LookupError):
    """send_command: the gateway has no authenticated session now."""


class _Refused(Exception):
    """End the session with a NACK: ``code`` and ``reason`` go to the gateway and the log."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _wall_clock_ms():
    return int(time.time() * 1000)


def _check_gateway_id(gateway_id):
    """Refuse a HELLO whose gateway_id the record schema does not allow (1..32 of
    ``A-Z a-z 0-9 . _ -``), before any lookup: such a gateway cannot sign a valid record,
    PostgreSQL fails a query holding a NUL, and the id goes into every log line."""
    try:
        records.check_header_value("gateway_id", gateway_id)
    except RecordError as exc:
        raise _Refused(wire.NACK_UNKNOWN_GATEWAY, str(exc)) from None


class IngestServer:
    """``server = IngestServer(store, IngestConfig(...), ssl_context=None)``; ``await
    server.start()`` binds (``server.port`` is the port bound); ``await server.close()``.
    The server owns the store's use from then on: every call to it runs on the server's one
    worker thread. ``clock_ms`` is the host's time (wall time; a simulated site's clock under
    hardware-in-the-loop runs), which ACKs hand to the gateways."""

    def __init__(self, store, config=IngestConfig(), ssl_context=None, clock_ms=None):
        self.store = store
        self.now_ms = clock_ms or _wall_clock_ms
        self.config = config
        self.ssl_context = ssl_context
        self.port = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterseal-ingest")
        self._verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterseal-verify")
        # gateway id -> GatewayChecker: set and dropped on the worker thread only, read from the
        # event loop too (a lookup is atomic).
        self._checkers = {}
        self._sessions = {}  # gateway id -> the _Connection authenticated as it
        self._locks = {}  # gateway id -> asyncio.Lock: one batch of a gateway at a time
        self._tasks = set()
        self._next_command_id = 0
        self._server = None
        self._sweeper = None
        self._detection = (LiveDetection(store, params_file=config.detector_params or None)
                           if config.detection else None)
        # DB jobs handed to the worker thread (counted on the event loop) and those it began
        # (counted on the worker): equal after a job, the worker has nothing waiting.
        self._jobs_submitted = 0
        self._jobs_started = 0

    async def start(self):
        if self._detection is not None:
            # First on the worker thread: every batch is fed after the catch-up.
            self._executor.submit(self._start_detection)
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.config.port, ssl=self.ssl_context,
            ssl_handshake_timeout=self.config.handshake_timeout_s if self.ssl_context else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep_gaps())
        log.info("listening on %s:%d%s", self.config.host, self.port,
                 " (TLS)" if self.ssl_context else "")

    async def close(self):
        """Stop listening and end every connection; a batch being stored finishes first."""
        self._server.close()
        self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._sweeper, *self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._verifier.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        if self._detection is not None:
            self._detection.close()

    def connected(self):
        """The ids of the gateways with an authenticated session."""
        return sorted(self._sessions)

    async def send_command(self, gateway_id, name, args=None, timeout_s=None):
        """Send a COMMAND to a connected gateway; returns its COMMAND_RESULT fields (``id``,
        ``ok``, ``result`` or ``error``). Raises GatewayNotConnected, TimeoutError, or
        ConnectionError when the session ends first."""
        connection = self._sessions.get(gateway_id)
        if connection is None:
            raise GatewayNotConnected(f"gateway {gateway_id} is not connected")
        self._next_command_id = (self._next_command_id + 1) & _MAX_COMMAND_ID
        command_id = self._next_command_id
        answer = asyncio.get_running_loop().create_future()
        connection.pending[command_id] = answer
        try:
            await connection.send(wire.COMMAND, {"id": command_id, "name": name,
                                                 "args": args or {}})
            return await asyncio.wait_for(answer, timeout_s or self.config.command_timeout_s)
        finally:
            connection.pending.pop(command_id, None)

    # --- the worker thread ----------------------------------------------------------------------

    def _start_detection(self):
        try:
            self._detection.start()
        except Exception as exc:  # the records are still stored; a restart catches up
            log.error("detection is off until the ingest restarts: %s: %s",
                      type(exc).__name__, exc)
            self._detection = None

    async def _db(self, function, *args):
        self._jobs_submitted += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._job,
                                                                function, *args)

    def _job(self, function, *args):
        self._jobs_started += 1
        try:
            return function(*args)
        finally:
            # The detectors take the records stored meanwhile once no batch waits for the worker
            # (or when enough have piled up): under load they run on several batches at a time
            # (about 50 records on the ingest bench), which made their own thread about 15 %
            # cheaper there; a lone batch is still evaluated before its ACK.
            if self._detection is not None and self._jobs_started == self._jobs_submitted:
                self._detection.flush()

    def _admit(self, gateway_id, kid):
        """The registered public key for a HELLO, or _Refused naming why not."""
        registry = self.store.registry
        gateway = registry.gateway(gateway_id)
        if gateway is None:
            raise _Refused(wire.NACK_UNKNOWN_GATEWAY, f"gateway {gateway_id} is not registered")
        if gateway.status != "active":
            raise _Refused(wire.NACK_UNKNOWN_GATEWAY, f"gateway {gateway_id} is {gateway.status}")
        # An update registered while the host runs counts from this session on.
        self._checker(gateway_id).expected_software = gateway.software_id
        key = registry.key(kid)
        if key is None or key.gateway_id != gateway_id:
            raise _Refused(wire.NACK_UNKNOWN_GATEWAY,
                           f"key {kid.hex()[:16]}... is not registered for gateway {gateway_id}")
        if key.revoked_at_ms is not None and key.revoked_at_ms <= self.now_ms():
            raise _Refused(wire.NACK_UNKNOWN_GATEWAY,
                           f"key {kid.hex()[:16]}... is revoked from {key.revoked_at_ms} ms")
        if key.replaced_by_kid is not None:
            raise _Refused(wire.NACK_UNKNOWN_GATEWAY,
                           f"key {kid.hex()[:16]}... was replaced by "
                           f"{key.replaced_by_kid.hex()[:16]}...")
        return key.public_key

    def _learn_announced_key(self, gateway_id, kid, announcement):
        """A HELLO naming a key the registry lacks may carry the key_rotated record announcing
        it: the session that was to upload that record may have ended first. The key is
        registered only from an announcement that verifies under a key the gateway holds now,
        names this gateway and announces exactly this kid; otherwise _admit refuses the kid."""
        if self.store.registry.key(kid) is not None:
            return
        verdict = self._checker(gateway_id).keyring.verify(announcement, self.now_ms())
        record = verdict.record
        announces = (verdict.outcome in verify.ACCEPTED and record["gateway_id"] == gateway_id
                     and record["kind"] == "event"
                     and record["body"]["event_type"] == "key_rotated")
        problem = rotated_key_problem(record) if announces else None
        if (not announces or problem is not None
                or cose.kid_for(bytes(record["body"]["new_public_key"])) != kid):
            log.warning("gateway %s: HELLO's key announcement for %s... refused (%s)", gateway_id,
                        kid.hex()[:16], problem or verdict.outcome)
            return
        self._register_rotation(gateway_id, Rotation(bytes(record["body"]["new_public_key"]),
                                                     verdict.kid, record["wall_time_ms"],
                                                     record["seq"]))
        self._checkers.pop(gateway_id, None)  # reloaded with the new key

    def _checker(self, gateway_id):
        checker = self._checkers.get(gateway_id)
        if checker is None:
            config = self.config
            checker = self._checkers[gateway_id] = GatewayChecker.load(
                self.store, gateway_id, gap_grace_s=config.gap_grace_s,
                gap_grace_records=config.gap_grace_records,
                clock_tolerance_ms=config.clock_tolerance_ms, now_s=time.monotonic())
        return checker

    def _handshake_ack_seq(self, gateway_id, announced_seq):
        """What the handshake's ACK names: every seq up to the chain's contiguous end is held,
        but never beyond what the gateway announced (a gateway whose journal is behind the
        host would otherwise have to refuse the ACK)."""
        self._checker(gateway_id)
        state = self.store.ingest_state(gateway_id)
        if state is None or state.contiguous_seq is None or announced_seq is None:
            return None
        return min(state.contiguous_seq, announced_seq)

    async def _ingest(self, gateway_id, envelopes):
        """Verify one batch on the verifier thread, then chain-check and store it on the worker
        thread; returns the seq its ACK names. The caller holds the gateway's lock, so no other
        batch of this gateway is verified or checked meanwhile."""
        received_at_ms = self.now_ms()
        checker = self._checkers.get(gateway_id) or await self._db(self._checker, gateway_id)
        verified = await asyncio.get_running_loop().run_in_executor(
            self._verifier, checker.verify, envelopes, received_at_ms)
        return await self._db(self._check_and_store, gateway_id, checker, verified,
                              received_at_ms)

    def _check_and_store(self, gateway_id, verified_by, verified, received_at_ms):
        """Chain-check and store one batch ``verified`` by checker ``verified_by``."""
        try:
            checker = self._checker(gateway_id)
            if checker is not verified_by:
                # Reloaded meanwhile (a HELLO's key announcement, say): verify with what it knows.
                verified = checker.verify([envelope for envelope, _ in verified], received_at_ms)
            checked = checker.check(verified, received_at_ms, time.monotonic(),
                                    lambda seq: self._stored_digest(gateway_id, seq))
            for rotation in checked.rotations:
                self._register_rotation(gateway_id, rotation)
            new_findings = self._unrecorded(gateway_id, checked.findings)
            results = self.store.ingest_batch(gateway_id, checked.items, checked.findings,
                                              received_at_ms)
        except BaseException:
            # The checker already counted this batch; reload it from what was committed.
            self._checkers.pop(gateway_id, None)
            raise
        for refused in checked.refused_rotations:
            log.warning("gateway %s: key_rotated seq %d stored, but its key is not registered: %s",
                        gateway_id, refused.seq, refused.problem)
        record_id_at = partial(self._chain_record_id, gateway_id)
        self._raise_alerts(gateway_id, [
            *ingest_alerts.finding_sightings(new_findings, record_id_at, self.config),
            *ingest_alerts.batch_sightings(gateway_id, checked.items, results, checker.keyring,
                                           record_id_at),
            *ingest_alerts.refused_rotation_sightings(gateway_id, checked.refused_rotations,
                                                      record_id_at),
            *ingest_alerts.software_sightings(gateway_id, checker.expected_software,
                                              checked.unexpected_software, record_id_at)])
        if self._detection is not None:
            self._detection.after_batch(checked.items, results)
        outcomes = {}
        for (_, verdict), result in zip(checked.items, results):
            name = result.outcome if verdict.outcome in verify.ACCEPTED else verdict.outcome
            outcomes[name] = outcomes.get(name, 0) + 1
        findings = sorted({finding.kind for finding in checked.findings})
        log.info("gateway %s: batch of %d stored (%s)%s", gateway_id, len(verified),
                 ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())),
                 f"; findings: {', '.join(findings)}" if findings else "")
        return checked.highest_claimed_seq

    def _chain_record(self, gateway_id, seq):
        held = self.store.records(gateway_id, seq_from=seq, seq_to=seq, limit=1).items
        return held[0] if held else None

    def _stored_digest(self, gateway_id, seq):
        held = self._chain_record(gateway_id, seq)
        return held.envelope_sha256 if held else None

    def _chain_record_id(self, gateway_id, seq):
        held = self._chain_record(gateway_id, seq)
        return held.record_id if held else None

    def _unrecorded(self, gateway_id, findings):
        """The findings the store does not hold yet: one reported again (a gap held again after
        a restart, say) raises no second alert."""
        if not findings:
            return []
        held = {(f.kind, f.first_seq, f.last_seq) for f in self.store.findings(gateway_id)}
        return [f for f in findings if (f.kind, f.first_seq, f.last_seq) not in held]

    def _raise_alerts(self, gateway_id, sightings):
        """Raise (or fold into the open alert) what a committed batch showed. The batch is
        durable already, so a store failure here is logged and the batch still acknowledged:
        a resend would only be a replay, which raises nothing."""
        for sighting in sightings:
            try:
                alert = self.store.alerts.raise_alert(
                    gateway_id, None, sighting.rule, sighting.severity, sighting.score,
                    sighting.explanation_en, sighting.explanation_zh,
                    sighting.evidence_record_ids, sighting.parameters)
            except StorageError as exc:
                log.error("gateway %s: alert %s not raised: %s", gateway_id, sighting.rule, exc)
                continue
            log.warning("gateway %s: alert %d %s (%s, %d sighting(s)): %s", gateway_id,
                        alert.alert_id, sighting.rule, alert.severity, alert.occurrences,
                        sighting.explanation_en)

    def _register_rotation(self, gateway_id, rotation):
        """Register the key a verified key_rotated record announced, once: the same
        announcement again (a resend, a rotation finished after a reboot) changes nothing."""
        kid = cose.kid_for(rotation.public_key)
        if self.store.registry.key(kid) is not None:
            return
        try:
            self.store.registry.add_key(gateway_id, rotation.public_key, rotation.valid_from_ms,
                                        replaces_kid=rotation.replaces_kid)
        except StorageError as exc:
            # The old key already named another successor: two rotations from one key. The
            # record is kept; the registry is left for an officer to judge.
            log.warning("gateway %s: key_rotated seq %d not registered: %s", gateway_id,
                        rotation.seq, exc)
            return
        log.info("gateway %s: key %s... registered, replacing %s... (key_rotated seq %d)",
                 gateway_id, kid.hex()[:16], rotation.replaces_kid.hex()[:16], rotation.seq)

    def _store_due_gaps(self, now_s):
        for gateway_id, checker in list(self._checkers.items()):
            if len(checker.gap_grace):
                due = checker.due_gaps(now_s)
                if due:
                    new_findings = self._unrecorded(gateway_id, due)
                    self.store.ingest_batch(gateway_id, [], due)
                    log.warning("gateway %s: %s", gateway_id,
                                "; ".join(f.detail["explanation"] for f in due))
                    self._raise_alerts(gateway_id, ingest_alerts.finding_sightings(
                        new_findings, partial(self._chain_record_id, gateway_id), self.config))

    async def _sweep_gaps(self):
        while True:
            await asyncio.sleep(self.config.gap_check_interval_s)
            try:
                await self._db(self._store_due_gaps, time.monotonic())
            except StorageError as exc:
                log.error("gap check failed, will retry: %s", exc)

    # --- connections ----------------------------------------------------------------------------

    def _lock(self, gateway_id):
        return self._locks.setdefault(gateway_id, asyncio.Lock())

    async def _serve(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        connection = _Connection(self, reader, writer)
        try:
            await connection.run()
        except _Refused as refusal:
            log.warning("%s: NACK %d, closed: %s", connection.label, refusal.code, refusal.reason)
            await connection.try_send(wire.NACK, {"code": refusal.code,
                                                  "reason": refusal.reason[:wire.MAX_TEXT_CHARS]})
        except UplinkError as exc:
            log.warning("%s: closed: malformed input: %s", connection.label, exc)
            await connection.try_send(wire.NACK, {"code": wire.NACK_MALFORMED,
                                                  "reason": str(exc)[:wire.MAX_TEXT_CHARS]})
        except TimeoutError as exc:
            log.warning("%s: closed: %s", connection.label, exc or "timed out")
        except StorageError as exc:  # an OSError too: before the lost link's branch
            log.error("%s: closed unacknowledged, the store failed: %s", connection.label, exc)
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection lost: %s", connection.label, exc or type(exc).__name__)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the boundary: one line, and only this connection ends
            log.error("%s: closed on an internal error: %s: %s", connection.label,
                      type(exc).__name__, exc)
        finally:
            connection.end()
            self._tasks.discard(task)


class _Connection:
    def __init__(self, server, reader, writer):
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        self.decoder = wire.FrameDecoder(self.config.max_frame_payload_bytes)
        self.unread = memoryview(b"")
        self.frame_bytes = 0  # bytes of a frame not yet complete
        self.gateway_id = None
        self.pending = {}  # command id -> future of its COMMAND_RESULT
        self.write_lock = asyncio.Lock()
        self.tokens = float(max(self.config.max_batch_records, self.config.max_records_per_s))
        self.tokens_at = time.monotonic()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "unknown peer"
        self.label = f"peer {self.peer}"

    async def receive(self, timeout_s, waiting_for):
        """The next (type, fields); TimeoutError when nothing arrives in ``timeout_s``."""
        while True:
            if self.unread:
                used, message = self.decoder.feed(self.unread)
                self.unread = self.unread[used:]
                self.frame_bytes += used
                if message is not None:
                    self.frame_bytes = 0
                    return message
            try:
                chunk = await asyncio.wait_for(self.reader.read(_READ_CHUNK_BYTES), timeout_s)
            except TimeoutError:
                raise TimeoutError(f"nothing received for {timeout_s:g} s ({waiting_for})")
            if not chunk:
                if self.frame_bytes:
                    raise UplinkError(f"truncated frame: the connection closed {self.frame_bytes}"
                                      " bytes into it")
                raise ConnectionError("the gateway closed the connection")
            self.unread = memoryview(chunk)

    async def send(self, msg_type, fields_):
        frame = wire.encode(msg_type, fields_)
        async with self.write_lock:
            self.writer.write(frame)
            await asyncio.wait_for(self.writer.drain(), self.config.idle_timeout_s)

    async def try_send(self, msg_type, fields_):
        try:
            await self.send(msg_type, fields_)
        except (OSError, TimeoutError):
            pass  # the connection is going anyway

    async def expect(self, msg_type, timeout_s):
        got_type, fields_ = await self.receive(timeout_s, f"waiting for {wire.type_name(msg_type)}")
        if got_type != msg_type:
            raise _Refused(wire.NACK_UNEXPECTED, f"expected {wire.type_name(msg_type)}, got "
                                                 f"{wire.type_name(got_type)}")
        return fields_

    async def run(self):
        deadline_s = self.config.handshake_timeout_s
        async with asyncio.timeout(deadline_s):
            await self._handshake()
        while True:
            msg_type, fields_ = await self.receive(self.config.idle_timeout_s, "idle")
            if msg_type == wire.RECORDS:
                await self._records(fields_["envelopes"])
            elif msg_type == wire.COMMAND_RESULT:
                answer = self.pending.get(fields_["id"])
                if answer is not None and not answer.done():
                    answer.set_result(fields_)
                else:
                    log.warning("%s: COMMAND_RESULT for unknown command id %d ignored",
                                self.label, fields_["id"])
            elif msg_type == wire.PING:
                await self.send(wire.PONG, {})
            elif msg_type != wire.PONG:
                raise _Refused(wire.NACK_UNEXPECTED,
                               f"{wire.type_name(msg_type)} is not expected after the handshake")

    async def _handshake(self):
        hello = await self.expect(wire.HELLO, self.config.handshake_timeout_s)
        gateway_id = hello["gateway_id"]
        _check_gateway_id(gateway_id)
        self.label = f"gateway {gateway_id} ({self.peer})"
        if "key_announcement" in hello:
            await self.server._db(self.server._learn_announced_key, gateway_id, hello["kid"],
                                  bytes(hello["key_announcement"]))
        public_key = await self.server._db(self.server._admit, gateway_id, hello["kid"])
        nonce = os.urandom(_NONCE_BYTES)
        await self.send(wire.CHALLENGE, {"nonce": nonce, "host_time_ms": self.server.now_ms()})
        auth = await self.expect(wire.AUTH, self.config.handshake_timeout_s)
        if not verify.verify_es256(verify.load_public_key(public_key),
                                   wire.auth_message(nonce, hello), auth["signature"]):
            raise _Refused(wire.NACK_AUTH_FAILED, "AUTH signature does not verify against the "
                                                  "registered key")
        async with self.server._lock(gateway_id):
            ack_seq = await self.server._db(self.server._handshake_ack_seq, gateway_id,
                                            hello.get("highest_seq"))
        older = self.server._sessions.get(gateway_id)
        if older is not None:
            log.info("%s: replaces the session from %s", self.label, older.peer)
            older.writer.close()
        self.server._sessions[gateway_id] = self
        self.gateway_id = gateway_id
        await self.send(wire.ACK, {"seq": ack_seq, "host_time_ms": self.server.now_ms()})
        log.info("%s: authenticated (boot %d, journal up to %s, host holds up to %s)", self.label,
                 hello["boot"], hello.get("highest_seq"), ack_seq)

    async def _records(self, envelopes):
        if len(envelopes) > self.config.max_batch_records:
            limit = self.config.max_batch_records
            raise _Refused(wire.NACK_MALFORMED,
                           f"batch of {len(envelopes)} records is over max_batch_records={limit}")
        await self._throttle(len(envelopes))
        async with self.server._lock(self.gateway_id):
            ack_seq = await self.server._ingest(self.gateway_id, envelopes)
        # Only now, after the commit: the gateway frees what this ACK covers.
        await self.send(wire.ACK, {"seq": ack_seq, "host_time_ms": self.server.now_ms()})

    async def _throttle(self, count):
        """A token bucket of max_records_per_s: a gateway over its rate waits for its ACK."""
        rate = self.config.max_records_per_s
        now = time.monotonic()
        capacity = max(self.config.max_batch_records, rate)
        self.tokens = min(capacity, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < count:
            await asyncio.sleep((count - self.tokens) / rate)
            self.tokens = float(count)
            self.tokens_at = time.monotonic()
        self.tokens -= count

    def end(self):
        if self.gateway_id is not None and self.server._sessions.get(self.gateway_id) is self:
            del self.server._sessions[self.gateway_id]
        for answer in self.pending.values():
            if not answer.done():
                answer.set_exception(ConnectionError(f"{self.label}: the session ended"))
        self.writer.close()


# --- the entry point ----------------------------------------------------------------------------


def server_ssl_context(certificate_file, key_file):
    """A TLS server context from a PEM certificate chain and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate_file, key_file)
    return context


def _one_line_exceptions(loop, context):
    # asyncio's default handler prints a traceback (a failed TLS handshake, for one).
    exc = context.get("exception")
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    log.warning("%s%s", context.get("message", "event loop error"), detail)


async def serve(store, config, ssl_context=None, ready=None):
    """Run the ingest until SIGTERM or SIGINT; ``ready(server)`` is called once it listens.
    The CLI's `meterseal serve` runs the same."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_one_line_exceptions)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = IngestServer(store, config, ssl_context)
    await server.start()
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        await server.close()


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m meterseal.host.ingest",
                                     description="Run the meterseal ingest server.")
    parser.add_argument("--db", required=True,
                        help="data directory, SQLite file, sqlite:///PATH or postgresql://...")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", help="PEM key of --tls-cert")
    for option in fields(IngestConfig):
        kind = {"action": argparse.BooleanOptionalAction} if type(option.default) is bool else {
            "type": type(option.default)}
        parser.add_argument("--" + option.name.replace("_", "-"), **kind,
                            default=option.default, help=f"default {option.default}")
    return parser.parse_args(argv)


def main(argv=None):
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = IngestConfig(**{option.name: getattr(args, option.name)
                                 for option in fields(IngestConfig)})
        ssl_context = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        store = open_store(args.db)
    except (ValueError, OSError) as exc:  # StorageError and ssl.SSLError are OSErrors
        print(f"meterseal ingest: {exc}", file=sys.stderr)
        return 2

    def ready(server):
        print(f"meterseal ingest: listening on {config.host}:{server.port} ({store.label})",
              flush=True)

    try:
        asyncio.run(serve(store, config, ssl_context, ready))
    except OSError as exc:  # the address is taken, for one
        print(f"meterseal ingest: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
