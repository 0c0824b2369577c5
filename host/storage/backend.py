"""What a backend is: a connection to one database that runs the store's SQL.

The store writes its SQL once, with ``?`` placeholders, for both backends. A backend subclasses
Backend and provides:

- ``label``: the database named for messages (never with a password);
- ``ddl_types``: the SQL for ``{blob}`` and ``{id}`` in migrations;
- ``begin_snapshot``: the statement that opens a consistent, read-only view;
- ``_run(sql, params, fetch)``: run one statement, returning its rows as dicts when ``fetch``,
  and turning the driver's errors into StorageError; ``query_each`` and ``insert_each`` may be
  overridden too;
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

    def query_each(self, sql, param_rows):
        """Run ``sql`` once per parameter row; every row it returned, in that order. A backend
        with a cheaper way to send many (PostgreSQL's pipeline) overrides this."""
        return [row for params in param_rows for row in self._run(sql, params, True)]

    def insert_each(self, sql, param_rows, id_column):
        """Run the INSERT ``sql`` once per parameter row; the ``id_column`` value (an ``{id}``
        column) the database gave each row, in that order. SQLite overrides this."""
        return [row[id_column] for row in
                self.query_each(f"{sql} RETURNING {id_column}", param_rows)]

    @contextmanager
    def snapshot(self):
        """Several reads against one consistent view."""
        self.execute(self.begin_snapshot)
        try:
            yield
        finally:
            self.execute("COMMIT")
