"""The SQLite backend: one database file, the embedded default.

Durability. The host ACKs a batch only after ``ingest_batch`` returns, and the gateway then frees
those records from its journal, so a returned commit must survive a power cut. The database runs
in WAL mode with ``synchronous=FULL``: every COMMIT appends the batch to the write-ahead log and
fsyncs it before returning. (With ``synchronous=NORMAL`` a WAL commit is atomic but is fsynced
only at the next checkpoint, so a power cut could roll back batches already acknowledged.) The
cost is one fsync per batch, not per record, because a batch is one transaction.

WAL also lets readers (the CLI, the API) run while the ingest writes: a reader keeps its snapshot
and never blocks the writer, and the writer never blocks it.
"""

import sqlite3
from contextlib import contextmanager

from .backend import Backend
from .errors import StorageError

# How long a writer waits for another process's write transaction before giving up.
_BUSY_TIMEOUT_S = 10.0


def _dict_row(cursor, row):
    return {column[0]: value for column, value in zip(cursor.description, row)}


class SQLiteBackend(Backend):
    ddl_types = {"blob": "BLOB", "id": "INTEGER PRIMARY KEY"}
    # A deferred transaction: its first read fixes the snapshot, which WAL keeps until the end.
    begin_snapshot = "BEGIN"

    def __init__(self, path):
        self.path = path
        self.label = f"SQLite database {path}"
        if not path.parent.is_dir():
            raise StorageError(f"{self.label}: directory {path.parent} does not exist")
        try:
            # Transactions are explicit (BEGIN IMMEDIATE in transaction()), never implicit.
            # A Store may be handed between threads, one at a time (an executor).
            self._connection = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"{self.label}: cannot open ({exc})") from exc
        self._connection.row_factory = _dict_row
        try:
            self.execute("PRAGMA foreign_keys = ON")
            (mode,) = self.query("PRAGMA journal_mode = WAL")
            if mode["journal_mode"] != "wal":
                raise StorageError(f"{self.label}: cannot switch to WAL mode "
                                   f"(journal mode is {mode['journal_mode']})")
            self.execute("PRAGMA synchronous = FULL")
        except StorageError:
            self._connection.close()
            raise

    def _fail(self, exc):
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return StorageError(f"{self.path} is not a SQLite database (it is damaged or "
                                "another kind of file)")
        return StorageError(f"{self.label}: {exc}")

    def _run(self, sql, params, fetch):
        try:
            cursor = self._connection.execute(sql, params)
            return cursor.fetchall() if fetch else None
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def insert_each(self, sql, param_rows, id_column):
        # An {id} column is the rowid, which the cursor reports after each INSERT: cheaper than
        # RETURNING, whose rows SQLite sets aside and the driver then fetches one by one.
        execute = self._connection.execute
        try:
            return [execute(sql, params).lastrowid for params in param_rows]
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    @contextmanager
    def transaction(self):
        # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking
        # when both try to upgrade a read lock.
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self.execute("ROLLBACK")
            raise

    def lock_schema(self):
        """Nothing to do: BEGIN IMMEDIATE already holds the only write lock."""

    def lock_audit_log(self):
        """Nothing to do: BEGIN IMMEDIATE already holds the only write lock."""

    def settings(self):
        (journal,) = self.query("PRAGMA journal_mode")
        (synchronous,) = self.query("PRAGMA synchronous")
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"journal_mode": journal["journal_mode"],
                "synchronous": names[synchronous["synchronous"]]}

    def close(self):
        self._connection.close()
