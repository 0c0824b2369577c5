"""The one exception the storage layer raises.

It subclasses OSError, like the gateway's JournalError and KeyStoreError: a store that cannot be
opened, read or written is an environment fault, and the CLI already prints an OSError as one
line without a traceback.
"""


class StorageError(OSError):
    """A database that cannot be opened, migrated, read or written, or a request it refuses. The
    message is one line that names the database (never its password) and what went wrong."""


class AlertError(StorageError):
    """A change to an alert that is refused: a transition its state does not allow, a role that
    may not make it, an unknown alert, a value out of range. One line; nothing was changed."""
