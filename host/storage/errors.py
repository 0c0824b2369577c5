"""The one exception the storage layer raises.

It subclasses OSError, like the gateway's JournalError and KeyStoreError: a store that cannot be
opened, read or written is an environment fault, and the CLI already prints an OSError as one
line without a traceback.
"""


class StorageError(OSError):
    """A database that cannot be opened, migrated, read or written, or a request it refuses. The
    message is one line that names the database (never its password) and what went wrong."""
