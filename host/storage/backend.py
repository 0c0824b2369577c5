"""What a backend is: a connection to one database that runs the store's SQL.

The store writes its SQL once, with ``?`` placeholders, for both backends. A backend subclasses
Backend and provides:

- ``label``: the database named for messages (never with a password);
- ``ddl_types``: the SQL for ``{blob}`` and ``{id}`` in migrations;
- ``begin_snapshot``: the statement that opens a consistent, read-only view;
- ``_run(sql, params, fetch)``: run one statement, returning its rows as dicts when ``fetch``,
  and turning the driver's errors into StorageError;
- ``transaction()``: a write transaction, committed on success and rolled back on any
  exception;
- ``lock_schema()``: inside a transaction, keep other processes from migrating at once;
- ``lock_audit_log()``: inside a transaction, keep other writers from appending to the audit log
  (or changing alerts) until it ends;
- ``settings()``: the durability settings in force;
- ``close()``.
"""

from contextlib import contextmanager


class Backend:
    def execute(self, sql, params=()):
        self._run(sql, params, False)

    def query(self, sql, params=()):
        return self._run(sql, params, True)

    @contextmanager
    def snapshot(self):
        """Several reads against one consistent view."""
        self.execute(self.begin_snapshot)
        try:
            yield
        finally:
            self.execute("COMMIT")
