"""The ``--db`` option every host subcommand shares (docs/provisioning.md, "The database").

    --db meterseal-data             a data directory (the default): DIR/meterseal.db
    --db /srv/meterseal/ms.db       a SQLite file: a path ending in .db or .sqlite
    --db sqlite:///ABSOLUTE/PATH    the same, as a URL
    --db postgresql://USER@HOST/DB  PostgreSQL

A data directory is created when a command that writes needs it. A command that only reads
refuses a missing one, instead of creating an empty database and reporting nothing.
"""

import os
from pathlib import Path

from meterseal.host.storage import DATABASE_FILE, StorageError, open_store

DEFAULT_DB = "meterseal-data"
_SQLITE_SUFFIXES = (".db", ".sqlite")


def add_db_option(parser):
    parser.add_argument("--db", default=DEFAULT_DB,
                        help=f"data directory (default ./{DEFAULT_DB}), SQLite file (*.db), "
                             "sqlite:///PATH or postgresql://...")


def is_url(target):
    """Whether ``--db`` names a database by URL rather than a path."""
    return ":" in target and not os.path.exists(target)


def open_cli_store(target, *, create):
    """The store ``--db`` names; ``create``: make a missing data directory (commands that
    write), else refuse it with one line (commands that only read)."""
    if is_url(target):
        return open_store(target)  # open_store knows the schemes
    path = Path(target)
    if path.suffix in _SQLITE_SUFFIXES:
        if not create and not path.exists():
            raise StorageError(f"no meterseal database at {path}")
        return open_store(path)
    if not (path / DATABASE_FILE).exists():
        if not create:
            raise StorageError(f"no meterseal database in {path} (expected {path / DATABASE_FILE};"
                               " give --db, or register a site first)")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the data directory {path}: {exc.strerror}")
    return open_store(path)
