"""The uplink client (firmware/uplink.py) on the real MicroPython unix port against the loopback
host of tests/uplink_test_server.py, on 127.0.0.1 and an ephemeral port.

tests/mpy/uplink_gateway.py runs the client with a fake journal of pre-signed envelopes (seq 1..N)
and a fake recorder; both print JSON lines. Every run is bounded: the script stops on the host's
"test.stop" command, after a set number of ended sessions, or at its deadline, and the test waits
for the process with a timeout. Timings are short so runs are quick; nothing asserts on time.
"""

import asyncio
import json
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from known_vectors import RFC_KEY
from host_pki import HOST_NAME, host_pki
from uplink_test_server import STOP_COMMAND, LoopbackHost

from meterseal.hil import micropython
from meterseal.protocol import uplink as wire

SCRIPT = Path(__file__).parent / "mpy" / "uplink_gateway.py"
PROCESS_TIMEOUT_S = 60
BATCH_RECORDS = 4


def _public_key(secret):
    key = ec.derive_private_key(secret, ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


GATEWAY_PUBLIC_KEY = _public_key(RFC_KEY)


class GatewayRun:
    """What the gateway script printed, by kind."""

    def __init__(self, stdout):
        self.lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        self.acknowledged = [line["acknowledge"] for line in self.lines if "acknowledge" in line]
        self.host_times = [line["host_time"] for line in self.lines if "host_time" in line]
        self.commands = [line["command"] for line in self.lines if "command" in line]
        self.logs = [line["log"] for line in self.lines if "log" in line]
        self.done = self.lines[-1] if self.lines and "done" in self.lines[-1] else None


def run_gateway(device_image, host, records, stop_after_sessions_ended=0, **timing):
    config = {
        "host": "127.0.0.1",
        "records": records,
        "batch_records": BATCH_RECORDS,
        "backoff_min_ms": 20,
        "backoff_max_ms": 200,
        "ping_idle_ms": 100,
        "link_timeout_ms": 5000,
        "ack_timeout_ms": 5000,
        "poll_ms": 10,
        "stop_after_sessions_ended": stop_after_sessions_ended,
        "deadline_ms": 30000,
    }
    config.update(timing)

    async def scenario(config_file):
        await host.start()
        config["port"] = host.port
        config_file.write_text(json.dumps(config))
        try:
            process = await asyncio.create_subprocess_exec(
                micropython.micropython_command(),
                str(SCRIPT),
                str(config_file),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(os.environ, MICROPYPATH=f"{device_image}:.frozen"),
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT_S)
        finally:
            await host.close()
        return process.returncode, stdout.decode(), stderr.decode()

    with tempfile.TemporaryDirectory(prefix="meterseal-uplink-") as scratch:
        returncode, stdout, stderr = asyncio.run(scenario(Path(scratch) / "gateway.json"))
    assert returncode == 0, f"gateway script failed:\n{stdout}\n{stderr}"
    run = GatewayRun(stdout)
    assert run.done is not None, stdout
    return run


def assert_everything_stored_in_order(host, run, records):
    assert sorted(host.stored) == list(range(1, records + 1))
    assert host.forks == []
    assert run.done["cursor"] == records
    assert run.acknowledged == sorted(set(run.acknowledged)), "the cursor only moves forward"


def test_handshake_upload_time_sync_and_commands(device_image):
    records = 10
    host = LoopbackHost(
        GATEWAY_PUBLIC_KEY,
        records,
        commands=[("read_totalizers", {"nozzles": [1, 2]}), ("launch_rocket", {}), ("explode", {})],
    )
    run = run_gateway(device_image, host, records)

    assert run.done["timed_out"] is False
    assert len(host.sessions) == 1
    session = host.sessions[0]
    assert session["auth_ok"] is True  # verified with cryptography against the registered key
    assert session["hello"]["gateway_id"] == "MS-GW-0001"
    assert session["hello"]["boot"] == 7 and session["hello"]["highest_seq"] == records
    assert host.received_seqs == list(range(1, records + 1))  # in order, each once
    assert_everything_stored_in_order(host, run, records)
    # Every ACK's host time reached the recorder, in order (the first is the handshake's ACK).
    assert run.host_times == host.host_times_sent

    assert run.commands == ["read_totalizers", "launch_rocket", "explode", STOP_COMMAND]
    assert host.command_results[1] == {
        "id": 1,
        "ok": True,
        "result": {"totalizers_ml": [1234567, 7654321]},
    }
    assert host.command_results[2]["ok"] is False
    assert "unknown command launch_rocket" in host.command_results[2]["error"]
    # A recorder exception becomes an error result, and the session carries on to test.stop.
    assert host.command_results[3] == {"id": 3, "ok": False, "error": "ValueError: boom"}


def test_connection_killed_mid_batch_resends_only_the_unacknowledged(device_image):
    records = 10
    host = LoopbackHost(GATEWAY_PUBLIC_KEY, records, drop_batches={(1, 3): "unstored"})
    run = run_gateway(device_image, host, records)

    assert len(host.sessions) == 2
    assert all(session["auth_ok"] for session in host.sessions)
    assert any("host closed the connection" in line for line in run.logs)
    assert host.dropped_seqs, "the scenario must drop a batch"
    duplicates = sorted({seq for seq in host.received_seqs if host.received_seqs.count(seq) > 1})
    assert duplicates == host.dropped_seqs  # exactly the unacknowledged batch, once more
    assert_everything_stored_in_order(host, run, records)


def test_lost_ack_is_recovered_from_the_handshake_ack_without_resending(device_image):
    records = 10
    host = LoopbackHost(GATEWAY_PUBLIC_KEY, records, drop_batches={(1, 2): "unacked"})
    run = run_gateway(device_image, host, records)

    assert len(host.sessions) == 2
    # The batch was stored but its ACK never sent: the next handshake's ACK covers it.
    assert host.dropped_seqs and max(host.dropped_seqs) in run.acknowledged
    assert host.received_seqs == list(range(1, records + 1))  # nothing sent twice
    assert_everything_stored_in_order(host, run, records)


def test_nack_is_logged_and_the_client_backs_off_and_retries(device_image):
    records = 5
    host = LoopbackHost(
        GATEWAY_PUBLIC_KEY,
        records,
        nack_sessions={
            1: (wire.NACK_BUSY, "maintenance window"),
            2: (wire.NACK_BUSY, "still busy"),
        },
    )
    run = run_gateway(device_image, host, records)

    assert len(host.sessions) == 3
    assert any("NACK 5" in line and "maintenance window" in line for line in run.logs)
    assert any("still busy" in line for line in run.logs)
    assert host.received_seqs == list(range(1, records + 1))
    assert_everything_stored_in_order(host, run, records)


def test_wrong_key_is_refused_at_auth_and_nothing_is_acknowledged(device_image):
    host = LoopbackHost(_public_key(RFC_KEY + 1), 3)
    run = run_gateway(device_image, host, 3, stop_after_sessions_ended=3)

    assert len(host.sessions) >= 3
    assert not any(session["auth_ok"] for session in host.sessions)
    assert all("NACK 3" in line for line in run.logs if "session ended" in line)
    assert host.received_seqs == [] and run.acknowledged == [] and run.done["cursor"] == 0


def test_silent_host_is_pinged_then_declared_dead_and_left(device_image):
    records = 6
    host = LoopbackHost(GATEWAY_PUBLIC_KEY, records, silent_sessions={1})
    run = run_gateway(device_image, host, records, link_timeout_ms=400, ack_timeout_ms=5000)

    assert len(host.sessions) == 2
    assert host.sessions[0]["pings"] >= 1  # idle PINGs went unanswered
    assert any("link dead" in line for line in run.logs)
    assert_everything_stored_in_order(host, run, records)


# --- TLS ----------------------------------------------------------------------------------------


def test_records_go_over_tls_to_a_host_the_configured_ca_vouches_for(device_image, tmp_path):
    ca_path, server_context = host_pki(tmp_path, "meterseal-test-ca")
    records = 10
    host = LoopbackHost(GATEWAY_PUBLIC_KEY, records, tls=server_context)
    run = run_gateway(device_image, host, records, ca_file=str(ca_path), server_name=HOST_NAME)

    assert run.done["timed_out"] is False
    assert [session["auth_ok"] for session in host.sessions] == [True]
    assert host.received_seqs == list(range(1, records + 1))
    assert_everything_stored_in_order(host, run, records)


def test_a_host_another_ca_vouches_for_gets_nothing(device_image, tmp_path):
    ours, _ = host_pki(tmp_path, "meterseal-test-ca")
    _, impostor_context = host_pki(tmp_path, "impostor-ca")
    host = LoopbackHost(GATEWAY_PUBLIC_KEY, 5, tls=impostor_context)
    run = run_gateway(device_image, host, 5, stop_after_sessions_ended=2,
                      ca_file=str(ours), server_name=HOST_NAME)

    assert run.done["timed_out"] is False
    assert host.sessions == [] and host.stored == {}  # no HELLO, not one record
    assert run.acknowledged == []
    assert all("session ended" in line for line in run.logs), run.logs
