"""`meterseal bench`, the ingest part: the host budgets of DESIGN.md section 10, measured through
the real path (docs/ingest.md, "Performance").

The host is the real ingest server, ``python -m meterseal.host.ingest``, listening on 127.0.0.1
and pinned to one core. This process is the load: simulated gateways (simulated_gateway.py),
each with its own key and registry entry, speaking the framed uplink over loopback from the
other core(s). Every count is fixed and every wait bounded.

- Throughput: several gateways upload fuel-sale records, pre-signed and chained, in RECORDS
  batches as full as a gateway makes them, each waiting for its ACK (which the host sends only
  after the commit) before the next. Records ACKed per second, of wall time and of the host's
  CPU time, as ratios of the bare `cryptography` P-256 verify rate measured on the host's core
  in the same run. Afterwards the store must hold every record sent exactly once, verified.
- Connections: gateways that complete the handshake and stay connected, each answering a PING
  once all are in, and the host's resident memory per connection.
- Alert latency: a record with a forged signature, from the moment it is written to the socket
  until the alert it raises is listed by ``store.alerts.ranked`` (polled from this process, on
  its own connection to the database).
"""

import asyncio
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meterseal.firmware import p256, signer
from meterseal.fraud_rules import native
from meterseal.host import verify
from meterseal.host.simulated_gateway import RecordMaker, UplinkSession, provision
from meterseal.host.storage import open_store, scratch_postgres
from meterseal.protocol import cose
from meterseal.protocol import uplink as wire

# Bounded waits: a host that has not answered by then has failed (its log says why).
_HOST_START_TIMEOUT_S = 30
_HOST_STOP_TIMEOUT_S = 30
_ANSWER_TIMEOUT_S = 30
# Handshakes in flight at once: a thousand at the same instant could outlast the host's
# handshake_timeout_s while it works through them; this many never does.
_HANDSHAKE_WAVE = 100
# How often the alert poller asks the store: the latency's resolution.
_ALERT_POLL_S = 0.001
# The host's per-connection rate limit (max_records_per_s) is lifted: the throughput figure is
# what the host can do, not what it lets one gateway do.
_UNLIMITED_RECORDS_PER_S = 1e9
# File descriptors the bench process needs beside one per held connection.
_SPARE_FDS = 64
_BAD_SIGNATURE_RULE = "verify.bad_signature"
# Each load gateway's four dispensers (DART addresses 0x50-0x53), all of one model.
_DISPENSER_ADDRESSES = (0x50, 0x51, 0x52, 0x53)
_DISPENSER_MODEL = "BENCH-D4"


class BenchError(OSError):
    """A step of the ingest benchmark failed; the message is the one line the user sees (the
    CLI prints an OSError that way)."""


@dataclass(frozen=True)
class Plan:
    """The fixed counts of one run."""

    gateways: int = 16
    records_per_gateway: int = 640
    batch_records: int = wire.MAX_BATCH_RECORDS
    connections: int = 5000  # DESIGN.md section 10: 5,000 gateways per host process
    alert_trials: int = 20
    rounds: int = 3  # passes over the sample for the bare verify rate
    # Uploads with the detectors off and on, alternating: the median of each is compared, as one
    # pair on a shared machine can differ by a third.
    detection_rounds: int = 3
    # The sales' flow profile interval. A gateway records one every second (the firmware's
    # default), which makes a record about 540 bytes and costs the record parse and the flow
    # detectors more; 5 s (about 370 bytes) is what the bench has always used, so its figures
    # compare with the earlier ones.
    flow_interval_ms: int = 5000
    postgres: bool = True

    def __post_init__(self):
        for name in ("gateways", "records_per_gateway", "batch_records", "connections",
                     "alert_trials", "rounds", "detection_rounds"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name.replace('_', ' ')} must be at least 1, "
                                 f"got {getattr(self, name)}")
        # At 1 s the longest sale (60 L at 36 L/min) is 101 points, inside the schema's 120;
        # the schema's interval is at most an hour.
        if not 1000 <= self.flow_interval_ms <= 3600000:
            raise BenchError(f"flow interval must be 1000 to 3600000 ms, got "
                             f"{self.flow_interval_ms}")


@dataclass
class LoadGateway:
    """One simulated gateway of the throughput load: its key, and its RECORDS frames encoded in
    advance with the seq each ACK must name."""

    gateway_id: str
    key: signer.SoftwareSigner
    frames: list = field(default_factory=list)  # (frame, last seq, records in it)

    def add_batch(self, envelopes, last_seq):
        frame = bytes(wire.encode(wire.RECORDS, {"envelopes": envelopes}))
        self.frames.append((frame, last_seq, len(envelopes)))

    def add_records(self, envelopes, batch_records=wire.MAX_BATCH_RECORDS):
        """Frame ``envelopes`` (seq 0 on, chained) as a gateway batches them: up to
        ``batch_records`` records and wire.MAX_BATCH_BYTES bytes of envelopes per RECORDS."""
        batch, batch_bytes = [], 0
        for seq, envelope in enumerate(envelopes):
            if len(batch) == batch_records or batch_bytes + len(envelope) > \
                    wire.MAX_BATCH_BYTES:
                self.add_batch(batch, seq - 1)
                batch, batch_bytes = [], 0
            batch.append(envelope)
            batch_bytes += len(envelope)
        if batch:
            self.add_batch(batch, len(envelopes) - 1)

    @property
    def records(self):
        return sum(count for _, _, count in self.frames)


# --- the load, signed in advance ----------------------------------------------------------------


def _sale(maker, index, totalizers, interval_ms):
    """The next fuel sale of ``maker``'s gateway: a realistic size and an honest one (price
    computed, totalizers continuous, a steady 36 L/min), so the detectors the ingest runs do
    their usual work on it and raise nothing. Its flow profile is shaped as a gateway records
    it: a ramp-up over the first two intervals, the steady flow in 10 mL display steps, and a
    partial last interval."""
    volume_ml = 20000 + (index * 7919) % 40000
    steady_ml = 36 * interval_ms // 60  # mL an interval at 36 L/min
    profile, left = [], volume_ml
    while left > 0:
        at = len(profile)
        step = (steady_ml // 3, steady_ml * 4 // 5)[at] if at < 2 else \
            steady_ml + 10 * ((index + at) % 3 - 1)
        profile.append(min(step, left))
        left -= profile[-1]
    duration_ms = (len(profile) - 1) * interval_ms + profile[-1] * interval_ms // steady_ml
    end_ms = maker.wall_time_ms
    device = {"dispenser_address": _DISPENSER_ADDRESSES[index % 4],
              "nozzle": 1 + index // 4 % 2}
    nozzle = (device["dispenser_address"], device["nozzle"])
    totalizer_ml = totalizers.get(nozzle, 100000000)
    totalizers[nozzle] = totalizer_ml + volume_ml
    return maker.make(kind="fuel.sale", device=device, body={
        "grade": 95, "volume_ml": volume_ml, "unit_price_minor_per_kl": 164500,
        "amount_minor": (volume_ml * 164500 + 500000) // 1000000,
        "start_wall_time_ms": end_ms - duration_ms, "end_wall_time_ms": end_ms,
        "duration_ms": duration_ms, "totalizer_start_ml": totalizer_ml,
        "totalizer_end_ml": totalizer_ml + volume_ml, "flow_interval_ms": interval_ms,
        "flow_profile_ml": profile, "end_status": "completed",
    })


def new_keys(count):
    """``count`` gateway keys, as a gateway makes them (firmware signer, fixed-base table)."""
    table = p256.Table()
    return [signer.SoftwareSigner(signer.generate_secret(), table) for _ in range(count)]


def gateway_keys(prefix, count):
    """``count`` (gateway id, key) pairs named PREFIX-0000 on."""
    return [(f"{prefix}-{number:04d}", key) for number, key in enumerate(new_keys(count))]


def make_load(plan, prefix="BENCH-GW"):
    """The throughput load: plan.gateways gateways with plan.records_per_gateway chained sales
    each, signed and framed as a gateway batches them (LoadGateway.add_records)."""
    load = []
    for gateway_id, key in gateway_keys(prefix, plan.gateways):
        gateway = LoadGateway(gateway_id, key)
        maker = RecordMaker(gateway_id, key)
        totalizers = {}
        gateway.add_records([_sale(maker, seq, totalizers, plan.flow_interval_ms)
                             for seq in range(plan.records_per_gateway)], plan.batch_records)
        load.append(gateway)
    return load


def envelopes_of(load, limit):
    """Up to ``limit`` envelopes of the load, read back from its frames."""
    envelopes = []
    for gateway in load:
        for frame, _, _ in gateway.frames:
            envelopes.extend(wire.decode_frame(frame)[1]["envelopes"])
            if len(envelopes) >= limit:
                return envelopes[:limit]
    return envelopes


# --- rates --------------------------------------------------------------------------------------


def rate(operation, items, rounds, clock=time.perf_counter):
    """Operations per second of ``clock`` (wall time by default; time.process_time for CPU
    time) over ``rounds`` passes through ``items``."""
    start = clock()
    for _ in range(rounds):
        for item in items:
            operation(item)
    return rounds * len(items) / (clock() - start)


def bare_verify_rate(envelopes, public_keys, rounds, clock=time.perf_counter):
    """The bare `cryptography` P-256 verify rate: the signature check alone, on messages and DER
    signatures built beforehand. ``public_keys`` maps kid -> loaded key."""
    prepared = []
    for envelope in envelopes:
        parsed = cose.parse_sign1(envelope)
        r, s = parsed.signature[:32], parsed.signature[32:]
        der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
        prepared.append((public_keys[parsed.kid], parsed.to_be_signed(), der))
    algorithm = ec.ECDSA(hashes.SHA256())
    return rate(lambda item: item[0].verify(item[2], item[1], algorithm), prepared, rounds,
                clock)


# --- the host process ---------------------------------------------------------------------------


def _raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"{needed} file descriptors are needed and the limit is {hard} "
                         "(ulimit -Hn): run with fewer --connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class HostProcess:
    """``python -m meterseal.host.ingest --db DB`` on 127.0.0.1, any free port, pinned to
    ``core``; its log goes to ``log_path``. ``wrapper``: the command it runs under (valgrind),
    which may make it slow to start."""

    def __init__(self, db, core, log_path, fds=1024, detection=True, wrapper=(),
                 start_timeout_s=_HOST_START_TIMEOUT_S, pure_python=False):
        self.db = db
        self.detection = detection
        self.pure_python = pure_python
        self.core = core
        self.log_path = log_path
        self.fds = fds
        self.wrapper = list(wrapper)
        self.start_timeout_s = start_timeout_s
        self.port = None
        self._process = None

    def _in_child(self):
        os.sched_setaffinity(0, {self.core})
        _raise_fd_limit(self.fds)

    def start(self):
        command = self.wrapper + [
            sys.executable, "-m", "meterseal.host.ingest", "--db", str(self.db), "--port", "0",
            "--max-records-per-s", str(_UNLIMITED_RECORDS_PER_S),
            "--detection" if self.detection else "--no-detection"]
        env = dict(os.environ, **({native.PURE_PYTHON_ENV: "1"} if self.pure_python else {}))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                                             stdin=subprocess.DEVNULL, text=True, env=env,
                                             preexec_fn=self._in_child)
        # The one line it prints once it listens: "meterseal ingest: listening on HOST:PORT (DB)"
        ready, _, _ = select.select([self._process.stdout], [], [], self.start_timeout_s)
        line = self._process.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.stop()
            raise BenchError(f"the ingest host did not start: {self._last_log_line()}")
        self.port = int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])

    def _last_log_line(self):
        lines = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    @property
    def pid(self):
        return self._process.pid

    def _proc(self, name):
        return Path(f"/proc/{self.pid}/{name}").read_text()

    def rss_bytes(self):
        for line in self._proc("status").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError("the host's resident memory is not in /proc")

    def cpu_s(self):
        """User and system CPU time the host has used so far."""
        # Fields 14 and 15 of /proc/PID/stat, counted after the command name's closing bracket.
        fields = self._proc("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_s=_HOST_STOP_TIMEOUT_S):
        """SIGTERM, and a clean exit within ``timeout_s``; BenchError otherwise."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise BenchError(f"the ingest host did not stop within {timeout_s} s")
        finally:
            self._process.stdout.close()
        if code != 0:
            raise BenchError(f"the ingest host exited with {code}: {self._last_log_line()}")


# --- the measurements ---------------------------------------------------------------------------


async def open_session(gateway_id, key, port, timeout_s=_ANSWER_TIMEOUT_S):
    session = UplinkSession(gateway_id, key)
    answer = await session.handshake(port, timeout_s=timeout_s)
    if answer is None or answer[0] != wire.ACK:
        await session.close()
        raise BenchError(f"gateway {gateway_id}: the host answered AUTH with {answer!r}")
    return session


async def upload(session, frames, timeout_s=_ANSWER_TIMEOUT_S):
    """Send ``frames`` stop-and-wait, each after the ACK of the one before; the records ACKed."""
    acked = 0
    for frame, last_seq, count in frames:
        session.write(frame)
        answer = await session.receive(timeout_s)
        if answer is None or answer[0] != wire.ACK or answer[1].get("seq") != last_seq:
            raise BenchError(f"gateway {session.gateway_id}: the batch up to seq {last_seq} was "
                             f"answered with {answer!r}")
        acked += count
    return acked


async def upload_load(host, load, measured, timeout_s=_ANSWER_TIMEOUT_S):
    """Upload ``load`` to ``host``, a session per gateway: each gateway's first batch, which
    loads its checker on the host, before the context manager ``measured`` is entered, and the
    rest inside it. Returns the records ACKed before and inside."""
    sessions = [await open_session(g.gateway_id, g.key, host.port, timeout_s) for g in load]
    try:
        warmed = await asyncio.gather(*(upload(s, g.frames[:1], timeout_s)
                                        for s, g in zip(sessions, load)))
        with measured:
            timed = await asyncio.gather(*(upload(s, g.frames[1:], timeout_s)
                                           for s, g in zip(sessions, load)))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return sum(warmed), sum(timed)


class _HostClock:
    """Wall time and the host's CPU time while entered."""

    def __init__(self, host):
        self.host = host

    def __enter__(self):
        self._cpu_start_s, self._start = self.host.cpu_s(), time.perf_counter()

    def __exit__(self, *_):
        self.elapsed_s = time.perf_counter() - self._start
        # /proc counts CPU in clock ticks: a tiny load can take less than one.
        self.cpu_s = max(self.host.cpu_s() - self._cpu_start_s, 1 / os.sysconf("SC_CLK_TCK"))


async def _throughput(host, load):
    clock = _HostClock(host)
    warmed, timed = await upload_load(host, load, clock)
    return {"acked": warmed + timed, "timed_records": timed, "elapsed_s": clock.elapsed_s,
            "records_per_s": timed / clock.elapsed_s, "records_per_cpu_s": timed / clock.cpu_s,
            "host_cpu_share": clock.cpu_s / clock.elapsed_s}


async def _alert_latencies(host, trials, reader):
    """One forged record per trial, each from a gateway of its own (an open alert absorbs a
    second sighting of its gateway and rule); seconds until ``reader`` lists the alert."""
    latencies = []
    for gateway_id, key in trials:
        envelope = bytearray(RecordMaker(gateway_id, key).make())
        envelope[-1] ^= 0x01  # the signature's last byte: BAD_SIGNATURE
        frame = wire.encode(wire.RECORDS, {"envelopes": [bytes(envelope)]})
        session = await open_session(gateway_id, key, host.port)
        try:
            start = time.perf_counter()
            session.write(frame)  # written to the socket at once: its buffer is empty
            deadline = start + _ANSWER_TIMEOUT_S
            while not any(alert.rule == _BAD_SIGNATURE_RULE
                          for alert in reader.alerts.ranked(gateway_id)):
                if time.perf_counter() > deadline:
                    raise BenchError(f"gateway {gateway_id}: no alert within "
                                     f"{_ANSWER_TIMEOUT_S} s of a forged record")
                time.sleep(_ALERT_POLL_S)
            latencies.append(time.perf_counter() - start)
            answer = await session.receive(_ANSWER_TIMEOUT_S)
            if answer is None or answer[0] != wire.ACK:
                raise BenchError(f"gateway {gateway_id}: the forged record was answered with "
                                 f"{answer!r}")
        finally:
            await session.close()
    return latencies


async def _hold_connections(host, gateways):
    """Connect every gateway (in waves), then PING each over its session; the host's RSS before
    and with all of them held."""
    rss_before = host.rss_bytes()
    sessions = []
    try:
        for start in range(0, len(gateways), _HANDSHAKE_WAVE):
            wave = gateways[start:start + _HANDSHAKE_WAVE]
            sessions.extend(await asyncio.gather(*(open_session(gateway_id, key, host.port)
                                                   for gateway_id, key in wave)))
        ping = bytes(wire.encode(wire.PING, {}))
        for session in sessions:
            session.write(ping)
        answers = await asyncio.gather(*(s.receive(_ANSWER_TIMEOUT_S) for s in sessions))
        if any(answer is None or answer[0] != wire.PONG for answer in answers):
            raise BenchError("a held connection did not answer its PING with a PONG")
        rss_after = host.rss_bytes()
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return {"connections": len(sessions), "rss_before": rss_before, "rss_after": rss_after,
            "rss_per_connection": (rss_after - rss_before) / len(sessions)}


def _check_stored(db, load, trials):
    """Every record sent stored exactly once: the load verified and chained without a hole, each
    forged record quarantined. Returns the records stored."""
    with open_store(db) as store:
        for gateway in load:
            counts = store.outcome_counts(gateway.gateway_id)
            state = store.ingest_state(gateway.gateway_id)
            if (counts["VERIFIED"] != gateway.records or sum(counts.values()) != gateway.records
                    or state is None or state.contiguous_seq != gateway.records - 1):
                held_up_to = state and state.contiguous_seq
                raise BenchError(f"gateway {gateway.gateway_id}: {gateway.records} records sent,"
                                 f" the store holds {counts} up to seq {held_up_to}")
        for gateway_id, _ in trials:
            counts = store.outcome_counts(gateway_id)
            if counts["BAD_SIGNATURE"] != 1 or sum(counts.values()) != 1:
                raise BenchError(f"gateway {gateway_id}: one forged record sent, the store holds "
                                 f"{counts}")
        return sum(store.outcome_counts().values())


def provision_load(db, load, trials=()):
    """Register the load's gateways (and the alert trials') in the store at ``db``, with their
    dispensers."""
    with open_store(db) as store:
        for gateway_id, key in [(g.gateway_id, g.key) for g in load] + list(trials):
            provision(store, gateway_id, key.public_key())
        # The load's dispensers registered with their model, as an installer would: the
        # detectors then also compare the site with the same model elsewhere.
        for gateway in load:
            for address in _DISPENSER_ADDRESSES:
                store.registry.add_device(
                    gateway.gateway_id, str(address), "dispenser", model=_DISPENSER_MODEL,
                    serial=f"{gateway.gateway_id}-{address}", type_approval_cert="BENCH",
                    expected_software_id="BENCH-DISPENSER")


def measure_backend(db, load, trials, host_core, log_path, detection=True, pure_python=False):
    """Throughput and alert latency against the store at ``db`` (empty): provisions the load's
    and the trials' gateways, runs the host (its detectors on or off; compiled when a fresh
    build exists, unless ``pure_python``), then checks what the store holds."""
    provision_load(db, load, trials)
    host = HostProcess(db, host_core, log_path, detection=detection, pure_python=pure_python)
    host.start()
    try:
        figures = asyncio.run(_throughput(host, load))
        with open_store(db) as reader:
            figures["alert_latencies_s"] = asyncio.run(_alert_latencies(host, trials, reader))
    finally:
        host.stop()
    figures["stored"] = _check_stored(db, load, trials)
    figures["sent"] = sum(g.records for g in load) + len(trials)
    return figures


def measure_connections(db, gateways, host_core, log_path):
    """Hold ``gateways`` ((id, key) pairs) connected to one host over the store at ``db``."""
    _raise_fd_limit(len(gateways) + _SPARE_FDS)
    with open_store(db) as store:
        for gateway_id, key in gateways:
            provision(store, gateway_id, key.public_key())
    host = HostProcess(db, host_core, log_path, fds=len(gateways) + _SPARE_FDS)
    host.start()
    try:
        return asyncio.run(_hold_connections(host, gateways))
    finally:
        host.stop()


# --- the whole ingest part ----------------------------------------------------------------------


def cores():
    """The host's core, and the load's: the others, or the same one on a one-core machine."""
    available = sorted(os.sched_getaffinity(0))
    return available[0], set(available[1:]) or {available[0]}


# Each detection arm's store and log file names, per round.
_ARM_FILES = {"off": "ingest-bare", "on": "ingest", "on, pure Python": "ingest-pure"}


def run(plan, workdir, say):
    """Every ingest figure of ``plan``, with ``say(line)`` before each long step; returns the
    figures for report()."""
    workdir = Path(workdir)
    host_core, load_cores = cores()
    figures = {"plan": plan, "host_core": host_core, "load_cores": sorted(load_cores),
               "backends": {}, "postgres_skipped": None}
    own_cores = os.sched_getaffinity(0)
    try:
        say(f"signing {plan.gateways * plan.records_per_gateway} fuel sales of {plan.gateways} "
            "gateways for the ingest ...")
        load = make_load(plan)
        trials = gateway_keys("BENCH-ALERT", plan.alert_trials)
        sample = envelopes_of(load, plan.records_per_gateway)
        keys = {cose.kid_for(g.key.public_key()): verify.load_public_key(g.key.public_key())
                for g in load}
        figures["record_bytes"] = sum(len(e) for e in sample) / len(sample)
        figures["batch_records"] = (sum(g.records for g in load)
                                    / sum(len(g.frames) for g in load))
        say(f"measuring the bare P-256 verify rate on core {host_core} ...")
        os.sched_setaffinity(0, {host_core})
        figures["bare_verify_per_s"] = bare_verify_rate(sample, keys, plan.rounds)
        figures["bare_verify_per_cpu_s"] = bare_verify_rate(sample, keys, plan.rounds,
                                                            time.process_time)
        os.sched_setaffinity(0, load_cores)
        figures["detection_rounds"] = []
        # With a fresh compiled build, each round also runs the detectors as pure Python.
        arms = ["off", "on"] + (["on, pure Python"] if native.build_state()[0] == "fresh" else [])
        for round_ in range(1, plan.detection_rounds + 1):
            say(f"uploading to the ingest host over SQLite, detectors {' / '.join(arms)} (round "
                f"{round_} of {plan.detection_rounds}) ...")
            measured = {}
            for arm in arms:
                name = _ARM_FILES[arm]
                log_path = workdir / f"{name}-{round_}.log"
                measured[arm] = measure_backend(workdir / f"{name}-{round_}.db", load, trials,
                                                host_core, log_path, detection=arm != "off",
                                                pure_python=arm == "on, pure Python")
                if arm != "off":
                    measured[arm]["detection_us"], measured[arm]["detectors"] = (
                        logged_detection(log_path))
            figures["detection_rounds"].append(measured)
        figures["backends"]["SQLite"] = figures["detection_rounds"][0]["on"]
        figures["detection_store"] = workdir / "ingest-1.db"
        if plan.postgres:
            figures["postgres_skipped"] = scratch_postgres.unavailable_reason()
        if plan.postgres and figures["postgres_skipped"] is None:
            say("starting a private PostgreSQL server ...")
            with scratch_postgres.ScratchPostgres() as server:
                say(f"uploading to the ingest host over PostgreSQL {server.version} ...")
                figures["backends"][f"PostgreSQL {server.version}"] = measure_backend(
                    server.url(server.create_database("bench")), load, trials, host_core,
                    workdir / "ingest-postgres.log")
        say(f"holding {plan.connections} gateway connections on one ingest host ...")
        figures["connections"] = measure_connections(
            workdir / "connections.db", gateway_keys("BENCH-CONN", plan.connections),
            host_core, workdir / "connections.log")
    finally:
        os.sched_setaffinity(0, own_cores)
    return figures


def logged_detection(log_path):
    """(the detectors' own CPU per record, which detectors ran: "compiled (...)" or "pure Python
    (...)"), as the host logged them on close (LiveDetection)."""
    for line in reversed(Path(log_path).read_text(errors="replace").splitlines()):
        if "detection: evaluated" in line:
            cost, detectors = line.split(" us a record, detectors ", 1)
            return float(cost.rsplit(", ", 1)[1]), detectors.strip()
    raise BenchError(f"the ingest host did not log its detectors' cost ({log_path})")


def _percentile_ms(values, share):
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _detection_cost_lines(rounds, arm):
    """What the detectors (``arm``: "on" or "on, pure Python") add to the host's CPU per record,
    against the uploads without them in the same rounds."""
    bare_us = [1e6 / measured["off"]["records_per_cpu_s"] for measured in rounds]
    with_us = [1e6 / measured[arm]["records_per_cpu_s"] for measured in rounds]
    inside_us = statistics.median(measured[arm]["detection_us"] for measured in rounds)
    bare_median, with_median = statistics.median(bare_us), statistics.median(with_us)
    added_us = with_median - bare_median
    ran = sorted({measured[arm]["detectors"] for measured in rounds})
    return [
        f"  detectors' cost in the ingest (SQLite), detectors {' / '.join(ran)}; median of "
        f"{len(rounds)} uploads each, alternating: {bare_median:.0f} us of host CPU per record "
        f"without them, {with_median:.0f} us with them: {added_us:+.0f} us, "
        f"{added_us / bare_median:+.0%}   budget <= +20 %",
        "    per upload, without / with: " + ", ".join(
            f"{bare:.0f} / {detecting:.0f}" for bare, detecting in zip(bare_us, with_us)) + " us",
        f"    the detectors timed inside the host (their thread's CPU): {inside_us:.0f} us per "
        f"record, {inside_us / bare_median:+.0%} of the median without them",
    ]


def report(figures, detection_lines=()):
    """The figures as the lines `meterseal bench` prints; ``detection_lines`` go under the
    detectors' cost."""
    plan = figures["plan"]
    bare = figures["bare_verify_per_s"]
    load = ", ".join(str(core) for core in figures["load_cores"])
    lines = [
        f"host ingest, host on core {figures['host_core']}, load on core {load}: "
        f"{plan.gateways} gateways x {plan.records_per_gateway} fuel sales of "
        f"{figures['record_bytes']:.0f} bytes, {figures['batch_records']:.1f} per RECORDS "
        f"(at most {plan.batch_records} and {wire.MAX_BATCH_BYTES} bytes), counted when ACKed",
        f"  cryptography P-256 verify (bare)         {bare:9.0f} /s",
    ]
    bare_cpu = figures["bare_verify_per_cpu_s"]
    for name, backend in figures["backends"].items():
        per_cpu_s = backend["records_per_cpu_s"]
        lines.append(f"  {name + ': verified and stored':<40} {backend['records_per_s']:9.0f} /s"
                     f"   ratio {backend['records_per_s'] / bare:.2f}   budget >= 0.6")
        lines.append(f"    host CPU busy {100 * backend['host_cpu_share']:.0f} %; per CPU second "
                     f"{per_cpu_s:.0f} /s, ratio {per_cpu_s / bare_cpu:.2f} of the bare rate per "
                     f"CPU second ({bare_cpu:.0f}); {backend['stored']} of {backend['sent']} "
                     "records sent stored, each once")
    if figures["postgres_skipped"]:
        lines.append(f"  PostgreSQL: skipped, {figures['postgres_skipped']}")
    rounds = figures["detection_rounds"]
    lines += _detection_cost_lines(rounds, "on")
    lines.extend(detection_lines)
    if "on, pure Python" in rounds[0]:
        lines += _detection_cost_lines(rounds, "on, pure Python")
    lines.append("")
    lines.append(f"alert latency, forged signature written -> alert listed by store.alerts.ranked, "
                 f"{plan.alert_trials} trials")
    for name, backend in figures["backends"].items():
        latencies = backend["alert_latencies_s"]
        lines.append(f"  {name:<40} p50 {_percentile_ms(latencies, 0.5):6.1f} ms   "
                     f"p90 {_percentile_ms(latencies, 0.9):6.1f} ms   budget <= 2 s")
    held = figures["connections"]
    lines.append("")
    lines.append("gateways connected at once to one ingest host (SQLite), each authenticated and "
                 "answering a PING")
    lines.append(f"  {held['connections']} connections; host RSS {held['rss_before'] / 2**20:.1f} "
                 f"-> {held['rss_after'] / 2**20:.1f} MiB, {held['rss_per_connection'] / 1024:.1f} "
                 "KiB per connection   budget 5,000 with bounded memory")
    return lines
