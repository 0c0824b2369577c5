"""Shared pieces of the ingest tests (test_ingest.py), beside the package's simulated gateway
(meterseal.host.simulated_gateway: provision, RecordMaker): a real gateway key, a hand-driven
uplink gateway speaking protocol.uplink on a raw socket, and the ingest server, on the event loop
or on its own event-loop thread for tests that run a real gateway process beside it."""

import asyncio
import threading
import time

import pytest

from meterseal.firmware import signer
from meterseal.host.ingest import IngestConfig, IngestServer
from meterseal.host.simulated_gateway import UplinkSession
from meterseal.host.storage import open_store
from meterseal.protocol import uplink as wire

IO_TIMEOUT_S = 10

# For a test whose subject never reaches the store (a timeout, a limit checked before storing,
# the routing of the API): conftest's store_url then gives it SQLite only, which is faster than
# a fresh PostgreSQL database and proves as much.
sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def new_signer():
    return signer.SoftwareSigner(signer.generate_secret())


class RawGateway(UplinkSession):
    """The package's hand-driven gateway, with every wait bounded by IO_TIMEOUT_S."""

    async def receive(self, timeout_s=IO_TIMEOUT_S):
        """(type, fields), or None once the host closed the connection."""
        return await super().receive(timeout_s)

    async def send_bytes(self, data):
        self.write(data)
        await self.writer.drain()

    async def upload(self, envelopes):
        """Send one RECORDS batch; returns the host's answer (an ACK, or what ended it)."""
        await self.send(wire.RECORDS, {"envelopes": envelopes})
        return await self.receive()


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
