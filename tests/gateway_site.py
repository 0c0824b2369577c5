"""Shared pieces of the whole-gateway tests: the loopback host on its own thread, the gateway
process on the MicroPython unix port, and reading back what the host holds.

Used by the whole-gateway tests (test_gateway_end_to_end.py, test_gateway_faults.py, ...).
"""

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from meterseal.firmware import signer
from meterseal.host import chain, gateway_cli, verify
from meterseal.protocol import cose

from uplink_test_server import LoopbackHost

WAIT_S = 90


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, for a host started later. It lies
    below the kernel's ephemeral range, so while it waits no other socket is given it, and the
    gateway's own connection attempts (from ephemeral ports) can never connect to themselves."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(1024 + (ephemeral_low - 1024) // 2, ephemeral_low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below %d on 127.0.0.1" % ephemeral_low)


class HostThread:
    """The loopback host on its own event loop, so the test thread can play customers.

    ``port`` 0 binds any free port; ``start=False`` leaves the host down until ``start()``
    (a gateway configured with that port then finds nobody listening). Other keyword
    arguments go to LoopbackHost."""

    def __init__(self, public_key, port=0, start=True, **options):
        self.host = LoopbackHost(public_key, expected_records=10**9, **options)
        self.host.port = port
        self._started = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        if start:
            self.start()

    def start(self):
        asyncio.run_coroutine_threadsafe(self.host.start(self.host.port), self._loop).result(10)
        self._started = True

    def close(self):
        async def shutdown():
            if self._started:
                await self.host.close()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def gateway_key(root):
    """Make the gateway's key in its storage root beforehand (the registry's role); returns
    the public key for the host."""
    secret = signer.generate_secret()
    signer.write_key_file(str(root / "gateway.key"), secret)
    return signer.SoftwareSigner(secret).public_key()


def write_config(path, config):
    path.write_text(json.dumps(config))
    return path


def start_gateway(config_path, image=None, heapsize=None):
    """`meterseal gateway run` (builds the image), or the image's command directly; with
    ``heapsize`` the MicroPython heap is limited as on a board (e.g. "192wK")."""
    if image is None:
        command = [sys.executable, "-m", "meterseal.host.cli", "gateway", "run",
                   "--config", str(config_path)]
        if heapsize:
            command += ["--heapsize", heapsize]
        env = None
    else:
        command, env = gateway_cli.run_command(image, config_path, heapsize)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def kill_gateway(gateway):
    if gateway.poll() is None:
        gateway.send_signal(signal.SIGKILL)
    gateway.wait(10)


def records(host):
    """(envelope, record) of everything the host holds, by seq; every one must verify."""
    public = host.public_key
    keyring = {cose.kid_for(public): verify.load_public_key(public)}
    out = []
    for seq in sorted(host.stored):
        verdict = verify.verify_record(host.stored[seq], keyring)
        assert verdict.outcome == verify.VERIFIED, (seq, verdict)
        out.append((host.stored[seq], verdict.record))
    return out


def label(record):
    """A record's kind, or its event type for an event."""
    return record["body"]["event_type"] if record["kind"] == "event" else record["kind"]


def wait_for(host, gateway, predicate, timeout_s=WAIT_S):
    """The host's records once ``predicate(records)`` holds; fails if the gateway exits or the
    time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            pytest.fail("the gateway exited:\n" + gateway.stdout.read())
        held = records(host)
        if predicate(held):
            return held
        time.sleep(0.2)
    held = [label(r) for _, r in records(host)]
    pytest.fail(f"timed out; the host holds {len(host.stored)} records: {held}")


def kind(held, wanted):
    return [r for _, r in held if r["kind"] == wanted]


def events(held, event_type):
    return [r for _, r in held if r["kind"] == "event" and r["body"]["event_type"] == event_type]


def chain_findings(held):
    """Every finding the host's chain tracker raises over ``held``, fed in seq order."""
    tracker = chain.ChainTracker()
    return [f for envelope, r in held
            for f in tracker.feed(envelope, r["seq"], r["boot_epoch"], r["prev"])]
