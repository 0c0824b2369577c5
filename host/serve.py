"""`meterseal serve`: the ingest server and the REST API in one process, on one event loop, over
one database (docs/host.md).

    meterseal serve                                   # SQLite in ./meterseal-data
    meterseal serve --db /srv/meterseal --ingest-port 7455 --api-port 8080
    meterseal serve --db postgresql://meterseal@db.internal/meterseal --tokens /etc/ms/tokens.json

The ingest and the API each open their own connection to the database: the ingest's commits
then never wait behind an API read, and SQLite's WAL lets both work at once.

``HostService`` is the same pair for a program that runs the host itself (the demo does): it
installs no signal handlers, so it can run on any thread's event loop.
"""

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

import uvicorn

from meterseal.host import cli_store
from meterseal.host.api import create_app
from meterseal.host.api_tokens import TokenBook
from meterseal.host.ingest import DEFAULT_PORT, IngestConfig, IngestServer, server_ssl_context

DEFAULT_API_PORT = 8080
TOKENS_FILE = "api-tokens.json"  # in a data directory, unless --tokens names another
_API_START_TIMEOUT_S = 30

log = logging.getLogger("meterseal.serve")


class ServeError(RuntimeError):
    pass


class _ApiServer(uvicorn.Server):
    # Whoever owns the process owns its signals: uvicorn's own capture would take SIGINT and
    # SIGTERM from the ingest, and raise them again once it has stopped.
    def capture_signals(self):
        return nullcontext()


class HostService:
    """``service = HostService(db, ...)``; ``await service.start()`` (``ingest_port`` and
    ``api_port`` are then the ports bound); ``await service.close()``."""

    def __init__(self, db, tokens, *, ingest_config=IngestConfig(), api_host="127.0.0.1",
                 api_port=DEFAULT_API_PORT, ssl_context=None, clock_ms=None):
        self.db = db
        self.tokens = tokens
        self.ingest_config = ingest_config
        self.api_host = api_host
        self.api_port = api_port
        self.ssl_context = ssl_context
        self.clock_ms = clock_ms
        self.ingest_port = None
        self.label = None
        self._stores = []
        self._ingest = self._api = self._api_task = None

    async def start(self):
        try:
            ingest_store = self._open()
            api_store = self._open()
            self.label = ingest_store.label
            self._ingest = IngestServer(ingest_store, self.ingest_config, self.ssl_context,
                                        self.clock_ms)
            await self._ingest.start()
            self.ingest_port = self._ingest.port
            listener = socket.create_server((self.api_host, self.api_port))
            self.api_port = listener.getsockname()[1]
            config = uvicorn.Config(create_app(api_store, self.tokens), log_config=None,
                                    access_log=False, lifespan="off")
            self._api = _ApiServer(config)
            self._api_task = asyncio.create_task(self._api.serve(sockets=[listener]))
            await self._api_started()
        except BaseException:
            await self.close()
            raise

    def _open(self):
        store = cli_store.open_cli_store(self.db, create=True)
        self._stores.append(store)
        return store

    async def _api_started(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _API_START_TIMEOUT_S
        while not self._api.started:
            if self._api_task.done():
                self._api_task.result()  # its exception, if it has one
                raise ServeError("the API server stopped while starting")
            if loop.time() > deadline:
                raise ServeError(f"the API server did not start in {_API_START_TIMEOUT_S} s")
            await asyncio.sleep(0.02)

    async def close(self):
        if self._api is not None:
            self._api.should_exit = True
            await self._api_task
        if self._ingest is not None:
            await self._ingest.close()
        for store in self._stores:
            store.close()
        self._stores = []


def tokens_file(db, given):
    """The tokens file: --tokens, else api-tokens.json in the data directory."""
    if given:
        return Path(given)
    if cli_store.is_url(db):
        raise ServeError("give --tokens FILE: the API's tokens live beside a data directory, "
                         "and --db names a database server")
    return Path(db) / TOKENS_FILE


def load_tokens(path):
    """The token book at ``path``; a missing file is an empty book, and the API then admits
    nobody until `meterseal token issue` adds someone."""
    if not path.exists():
        log.warning("no API tokens in %s yet: the API refuses every request until "
                    "`meterseal token issue --name NAME --role admin` adds one", path)
        return TokenBook()
    return TokenBook.load(path)


async def _serve_until_signalled(service):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await service.start()
    scheme = "TLS" if service.ssl_context else "plain TCP"
    print(f"meterseal serve: {service.label}", flush=True)
    print(f"  ingest  {service.ingest_config.host}:{service.ingest_port} ({scheme})", flush=True)
    print(f"  API     http://{service.api_host}:{service.api_port}/  "
          f"(OpenAPI at /openapi.json; API users: {len(service.tokens)})", flush=True)
    try:
        await stop.wait()
    finally:
        await service.close()


def run(args):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = {option.name: getattr(args, option.name) for option in fields(IngestConfig)
              if option.name not in ("host", "port")}
    try:
        ingest_config = IngestConfig(host=args.host, port=args.ingest_port, **limits)
    except ValueError as exc:
        raise ServeError(str(exc))
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ServeError("--tls-cert and --tls-key go together")
    try:
        ssl_context = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load the TLS certificate: {exc}")
    tokens = load_tokens(tokens_file(args.db, args.tokens))
    service = HostService(args.db, tokens, ingest_config=ingest_config, api_host=args.host,
                          api_port=args.api_port, ssl_context=ssl_context)
    asyncio.run(_serve_until_signalled(service))  # an OSError (a port taken) is one line
    return 0


def add_parser(sub):
    parser = sub.add_parser("serve", help="run the host: ingest server and REST API",
                            description=__doc__.split("\n\n")[0])
    cli_store.add_db_option(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address both servers listen on (default 127.0.0.1)")
    parser.add_argument("--ingest-port", type=int, default=DEFAULT_PORT,
                        help=f"gateways' uplink port (default {DEFAULT_PORT})")
    parser.add_argument("--api-port", type=int, default=DEFAULT_API_PORT,
                        help=f"REST API port (default {DEFAULT_API_PORT})")
    parser.add_argument("--tokens", help=f"the API tokens file (default DB_DIR/{TOKENS_FILE})")
    parser.add_argument("--tls-cert", help="PEM certificate chain: the ingest serves TLS")
    parser.add_argument("--tls-key", help="PEM key of --tls-cert")
    limits = parser.add_argument_group("ingest limits (docs/ingest.md)")
    for option in fields(IngestConfig):
        if option.name not in ("host", "port"):
            # A switch is --name / --no-name: type=bool would read "False" as true.
            kind = ({"action": argparse.BooleanOptionalAction} if type(option.default) is bool
                    else {"type": type(option.default)})
            limits.add_argument("--" + option.name.replace("_", "-"), **kind,
                                default=option.default, help=f"default {option.default}")
    parser.set_defaults(run=run)
