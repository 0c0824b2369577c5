"""A private, throwaway PostgreSQL server for the storage tests and the ingest benchmark, started
from Debian's binaries (/usr/lib/postgresql/VERSION/bin) in a temporary directory and removed
when stopped.

It listens on 127.0.0.1 only, on a free port of its own, with its unix socket in its directory,
so it never touches a PostgreSQL service the machine may run. initdb refuses to run as root, so
under root the server runs as the unprivileged ``postgres`` system user, which owns the
directory. Password authentication (SCRAM) is on, with a password made for the run.

    with ScratchPostgres() as server:        # StorageError if it cannot start
        url = server.url(server.create_database())

``unavailable_reason()`` says, before trying, why no server can be started here (no binaries,
no psycopg, no ``postgres`` user under root), or None.
"""

import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import StorageError
from .postgres import psycopg

BIN_DIRS = "/usr/lib/postgresql/*/bin"
SUPERUSER = "meterseal_scratch"
# Bounded waits: a server that is not up by then has failed (its log says why).
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 30
# A port taken between choosing it and the server binding it makes the server exit at once.
_PORT_ATTEMPTS = 3


def find_bin_dir():
    """The newest installed PostgreSQL's bin directory holding initdb and postgres, or None."""
    found = [Path(d) for d in glob.glob(BIN_DIRS)
             if (Path(d) / "initdb").is_file() and (Path(d) / "postgres").is_file()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
               default=None)


def _server_user():
    """The account the server runs as: ``postgres`` under root (initdb refuses root), else
    None (the current user)."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def unavailable_reason():
    """Why no scratch server can be started on this machine, or None if one can."""
    if find_bin_dir() is None:
        return f"no PostgreSQL server binaries in {BIN_DIRS} (install Debian's postgresql package)"
    if psycopg is None:
        return "psycopg 3 is not installed (pip install 'meterseal[postgres]')"
    try:
        _server_user()
    except KeyError:
        return "running as root, and there is no 'postgres' user to run the server as"
    return None


def _unused_port():
    # Port 0 asks the kernel for a port nothing uses now; the server binds it right after.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ScratchPostgres:
    def __init__(self, bin_dir=None):
        self._bin_dir = Path(bin_dir or find_bin_dir() or BIN_DIRS)
        self._password = secrets.token_hex(16)
        self._names = itertools.count()
        self._process = None
        self.port = None
        self.version = self._bin_dir.parent.name
        # Under root the server runs as `postgres`: the directory must be its own, and outside
        # any temporary root that only root may enter (pytest's, for one).
        self._user = _server_user()
        self.directory = Path(tempfile.mkdtemp(prefix="meterseal-pg-"))
        if self._user:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run_as_server_user(self):
        if not self._user:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self):
        if psycopg is None:
            raise StorageError(unavailable_reason())
        password_file = self.directory / "password"
        password_file.write_text(self._password + "\n")
        if self._user:
            os.chown(password_file, self._user.pw_uid, self._user.pw_gid)
        # --no-sync: a throwaway cluster need not be flushed at creation.
        try:
            initdb = subprocess.run(
                [self._bin_dir / "initdb", "-D", self.directory / "data", "-U", SUPERUSER,
                 f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8",
                 "--no-locale", "--no-sync"],
                capture_output=True, text=True, **self._run_as_server_user(),
            )
        finally:
            password_file.unlink()
        if initdb.returncode != 0:
            last = (initdb.stderr.strip().splitlines() or ["no message"])[-1]
            raise StorageError(f"initdb failed: {last}")
        for _ in range(_PORT_ATTEMPTS):
            if self._start_on(_unused_port()):
                return
        raise StorageError(f"PostgreSQL did not start; see {self.directory / 'server.log'}")

    def _start_on(self, port):
        """Start the server on ``port``; False if it exits at once (the port was taken)."""
        with open(self.directory / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [self._bin_dir / "postgres", "-D", self.directory / "data",
                 "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
                 "-c", f"unix_socket_directories={self.directory}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                **self._run_as_server_user(),
            )
        self.port = port
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise StorageError(f"PostgreSQL did not accept connections within {_START_TIMEOUT_S} s; "
                           f"see {self.directory / 'server.log'}")

    def url(self, dbname):
        return f"postgresql://{SUPERUSER}:{self._password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql):
        """Run one statement outside a transaction (CREATE / DROP / ALTER DATABASE)."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql)

    def create_database(self, prefix="scratch"):
        """A new, empty database; returns its name."""
        name = f"{prefix}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name):
        self.admin(f"DROP DATABASE {name} WITH (FORCE)")

    def stop(self):
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
