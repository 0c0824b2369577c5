"""The PostgreSQL backend (psycopg 3), for production.

Durability: the session sets ``synchronous_commit = on`` whatever the server's default, so a
COMMIT returns only once the batch is flushed to the server's write-ahead log (and, where the
server has synchronous standbys, to them). Reads run in autocommit, each statement on its own
snapshot; ``snapshot()`` gives several reads one consistent, read-only view.

A session the server drops (a restart, a failover, ``pg_terminate_backend``) fails the statement
that meets it, so nothing is acknowledged on it; the next statement opens a new session, set up
again. Never within a transaction or a snapshot: what ran before in it died with the session.
"""

import re
from contextlib import contextmanager

from .backend import Backend
from .errors import StorageError

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row
except ImportError:  # the postgres extra is optional; open_store explains what to install
    psycopg = None

# An unreachable host fails within this many seconds instead of libpq's default of forever.
_CONNECT_TIMEOUT_S = 10
# Serialises migrations between processes opening the same database (an arbitrary constant).
_SCHEMA_LOCK_ID = 0x6D657465
# Serialises audit log appends, and with them every change to alerts (another constant).
_AUDIT_LOCK_ID = 0x61756474


def _one_line(text, url, password):
    """A libpq message on one line, with the URL's password replaced."""
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = text.replace(url, re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url))
    return text.replace(password, "***") if password else text


class PostgresBackend(Backend):
    ddl_types = {"blob": "BYTEA", "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def __init__(self, url):
        if psycopg is None:
            raise StorageError("PostgreSQL support needs psycopg 3: "
                               "pip install 'meterseal[postgres]'")
        password = None
        try:
            params = conninfo_to_dict(url)
            password = params.get("password")
        except psycopg.Error as exc:
            raise StorageError(f"invalid PostgreSQL URL {_one_line(url, url, password)}: "
                               f"{_one_line(str(exc), url, password)}") from None
        host = params.get("host") or "the local socket"
        port = params.get("port") or "5432"
        self.label = f"PostgreSQL database {params.get('dbname', '(default)')} at {host}:{port}"
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        self._conninfo = make_conninfo(**params)
        self._url, self._password = url, password  # for _one_line to mask in messages
        self._in_session = False  # within a transaction or snapshot: bound to its session
        self._connection = self._connect()

    def _connect(self):
        """A new session, set up as every session must be."""
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.label}: "
                               f"{_one_line(str(exc), self._url, self._password)}") from None
        try:
            connection.execute("SET synchronous_commit = on")
        except psycopg.Error as exc:
            connection.close()
            raise self._fail(exc) from exc
        return connection

    def _reconnect_if_broken(self):
        """A new session in place of one the server dropped (the statement that found out has
        failed already), unless a transaction or snapshot is under way on the old one."""
        if self._connection.broken and not self._in_session:
            broken, self._connection = self._connection, self._connect()
            broken.close()

    @contextmanager
    def _one_session(self):
        """Run the block on one session: a broken one is replaced before it, never within it."""
        self._reconnect_if_broken()
        outer, self._in_session = self._in_session, True
        try:
            yield
        finally:
            self._in_session = outer

    def _fail(self, exc):
        return StorageError(f"{self.label}: {(str(exc).splitlines() or [repr(exc)])[0]}")

    def _run(self, sql, params, fetch):
        self._reconnect_if_broken()
        try:
            cursor = self._connection.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if fetch else None
        except psycopg.Error as exc:
            raise self._fail(exc) from exc

    def query_each(self, sql, param_rows):
        # executemany pipelines the statements: one round trip for them all. A short statement
        # run many times is also prepared once, where one long multi-row statement would be
        # parsed again by psycopg each time (it caches only statements of at most 50
        # parameters).
        self._reconnect_if_broken()
        rows = []
        try:
            with self._connection.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), param_rows, returning=True)
                while True:
                    rows.extend(cursor.fetchall())
                    if not cursor.nextset():
                        return rows
        except psycopg.Error as exc:
            raise self._fail(exc) from exc

    @contextmanager
    def transaction(self):
        with self._one_session():
            try:
                with self._connection.transaction():
                    yield
            except psycopg.Error as exc:  # raised by COMMIT or ROLLBACK themselves
                raise self._fail(exc) from exc

    @contextmanager
    def snapshot(self):
        with self._one_session(), super().snapshot():
            yield

    def lock_schema(self):
        self.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_ID,))

    def lock_audit_log(self):
        # Held to the end of the transaction. Under READ COMMITTED every later statement sees what
        # the previous holder committed, so the head of the chain read next is the real head.
        self.execute("SELECT pg_advisory_xact_lock(?)", (_AUDIT_LOCK_ID,))

    def settings(self):
        (row,) = self.query("SHOW synchronous_commit")
        return {"synchronous_commit": row["synchronous_commit"]}

    def close(self):
        self._connection.close()
