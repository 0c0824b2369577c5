"""The host's storage: records kept verbatim, the key registry, chain findings and ingest state,
alerts and the audit log, in SQLite (the default, a file) or PostgreSQL, behind one interface
(docs/storage.md, docs/alerts.md).

    store = open_store("/var/lib/meterseal")          # SQLite: DIR/meterseal.db
    store = open_store("sqlite:///var/lib/meterseal/meterseal.db")
    store = open_store("postgresql://meterseal:secret@db.example/meterseal")
    results = store.ingest_batch("GW-0042", zip(envelopes, verdicts), findings)
"""

import re
from pathlib import Path

from .alerts import ACTIONS, TRANSITIONS
from .errors import AlertError, StorageError
from .ingest import FORK, QUARANTINED, REPLAY, STORED
from .migrations import (ALERT_SEVERITIES, ALERT_STATES, CLOSE_REASONS, LATEST_VERSION, OUTCOMES,
                         USER_ROLES)
from .postgres import PostgresBackend
from .rows import (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Alert, AlertNote, AlertTransition,
                   AuditCheck, AuditEntry, ChainFinding, Device, Fork, Gateway, GatewayKey,
                   IngestResult, IngestState, NewFinding, Page, Site, StoredRecord)
from .sqlite import SQLiteBackend
from .store import Store

# The file a data directory holds.
DATABASE_FILE = "meterseal.db"

__all__ = [
    "ACTIONS", "ALERT_SEVERITIES", "ALERT_STATES", "CLOSE_REASONS", "DATABASE_FILE",
    "DEFAULT_PAGE_SIZE", "FORK", "LATEST_VERSION", "MAX_PAGE_SIZE", "OUTCOMES", "QUARANTINED",
    "REPLAY", "STORED", "TRANSITIONS", "USER_ROLES", "Alert", "AlertError", "AlertNote",
    "AlertTransition", "AuditCheck", "AuditEntry", "ChainFinding", "Device", "Fork", "Gateway",
    "GatewayKey", "IngestResult", "IngestState", "NewFinding", "Page", "Site", "Store",
    "StorageError", "StoredRecord", "open_backend", "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def open_backend(target):
    """The backend for ``target``, connected but not migrated (open_store does both)."""
    target = str(target)
    scheme = _SCHEME.match(target)
    if scheme is None:
        path = Path(target)
    elif scheme.group(1) in ("postgresql", "postgres"):
        return PostgresBackend(target)
    elif scheme.group(1) == "sqlite":
        path = target[len("sqlite://"):]
        if not target.startswith("sqlite://") or not path.startswith("/"):
            raise StorageError(f"SQLite URL {target!r} must be sqlite:///ABSOLUTE/PATH "
                               "(give a relative path without sqlite:)")
        path = Path(path)
    else:
        raise StorageError(f"unsupported database URL scheme {scheme.group(1)!r}: give a file "
                           "or directory path, sqlite:///PATH or postgresql://...")
    return SQLiteBackend(path / DATABASE_FILE if path.is_dir() else path)


def open_store(target):
    """Open (creating and migrating as needed) the store at ``target``: a directory (its
    meterseal.db), a file path, ``sqlite:///ABSOLUTE/PATH`` or ``postgresql://...``."""
    backend = open_backend(target)
    try:
        return Store(backend)
    except BaseException:
        backend.close()
        raise
