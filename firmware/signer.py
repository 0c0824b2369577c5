"""The gateway's signing key behind one small interface, and its software implementation.

Secure-element backends (ATECC608, SE050, OPTIGA) subclass `Signer` the same way the software
key does. No backend ever exports its private key.

Software key file (40 bytes, written once, atomically)::

    [ "MSK1" magic+version ][ private scalar, 32 bytes big-endian ][ check: SHA-256(first 36)[:4] ]

A file that is short, long, foreign, corrupt or out of range is refused, never replaced: a
silently new key would break the gateway's signed history and hide whatever destroyed the old.

Rotation (a host command) replaces the key in three steps, each safe to cut power after:
stage_next_key() stores the new key beside the current one (``<path>.next``); the recorder signs
a ``key_rotated`` event announcing it with the *current* key, makes it durable and keeps a copy
(``<path>.announced``, sent in every HELLO so the host can learn the key even if the record
has not reached it); then commit_next_key() renames the new file over the old and switches the
signer. A staged key found
at boot means the last step may not have happened: the recorder announces it again (the same key
twice is harmless) and commits. The old private key is gone once the rename is done.
"""

import errno
import hashlib
import os

from meterseal.firmware import ecdsa, p256

_MAGIC = b"MSK1"
_SCALAR_LEN = 32
_CHECK_LEN = 4
KEY_FILE_LEN = len(_MAGIC) + _SCALAR_LEN + _CHECK_LEN


class KeyStoreError(OSError):
    """The key file cannot be read, written or trusted; the message names the file."""

    def __init__(self, path, problem):
        super().__init__("key file %s: %s" % (path, problem))
        self.path = path


class Signer:
    """An ES256 key. A backend provides `public_key()`, the 65-byte uncompressed SEC1 point
    04‖X‖Y, and `_sign_digest(digest)`, r‖s over a 32-byte SHA-256 digest; hashing is shared."""

    def sign(self, message):
        """r‖s (64 bytes, big-endian halves) over SHA-256(message)."""
        return self._sign_digest(hashlib.sha256(message).digest())


class SoftwareSigner(Signer):
    """A private scalar held in RAM and signed with in pure Python.

    `table` is a p256.Table for fast signing where memory allows, or None for the built-in small
    comb that fits a 192 KB heap.
    """

    def __init__(self, secret, table=None):
        self._secret = secret
        self._table = table
        self._public_key = ecdsa.public_key(secret, table)

    def public_key(self):
        return self._public_key

    def _replace(self, secret):
        """Sign with ``secret`` from now on (the table, being of the base point, still fits)."""
        self._secret = secret
        self._public_key = ecdsa.public_key(secret, self._table)

    def _sign_digest(self, digest):
        return ecdsa.sign_digest(self._secret, digest, self._table)


def generate_secret(random_bytes=os.urandom):
    """A private scalar drawn uniformly from [1, n-1] by rejection sampling."""
    while True:
        raw = random_bytes(_SCALAR_LEN)
        if len(raw) != _SCALAR_LEN:
            raise ValueError("random source returned %d bytes, not %d" % (len(raw), _SCALAR_LEN))
        secret = int.from_bytes(raw, "big")
        if 0 < secret < p256.N:
            return secret


def _check(body):
    return hashlib.sha256(body).digest()[:_CHECK_LEN]


def encode_key_file(secret):
    body = _MAGIC + secret.to_bytes(_SCALAR_LEN, "big")
    return body + _check(body)


def decode_key_file(path, data):
    """The private scalar in `data`, read from `path` (named in errors)."""
    if len(data) != KEY_FILE_LEN:
        raise KeyStoreError(path, "%d bytes, expected %d" % (len(data), KEY_FILE_LEN))
    if data[: len(_MAGIC)] != _MAGIC:
        raise KeyStoreError(path, "not a meterseal key file (bad magic)")
    body = data[: len(_MAGIC) + _SCALAR_LEN]
    if data[len(body) :] != _check(body):
        raise KeyStoreError(path, "check bytes do not match: the file is corrupt")
    secret = int.from_bytes(body[len(_MAGIC) :], "big")
    if not 0 < secret < p256.N:
        raise KeyStoreError(path, "private key out of range [1, n-1]")
    return secret


def read_key_file(path):
    with open(path, "rb") as f:
        # One byte more than a key file holds, so an over-long file is caught too.
        data = f.read(KEY_FILE_LEN + 1)
    return decode_key_file(path, data)


# Platform capabilities as data: CPython can restrict permissions and force the bytes to disk;
# MicroPython's filesystems have neither call and commit a file when it is closed.
_chmod = getattr(os, "chmod", None)
_fsync = getattr(os, "fsync", None)


def _write_atomically(path, data):
    # A power cut leaves either the old file or the whole new one, never a torn one.
    temp = path + ".tmp"
    try:
        with open(temp, "wb") as f:
            if _chmod:
                _chmod(temp, 0o600)  # before the contents are in it
            f.write(data)
            f.flush()
            if _fsync:
                _fsync(f.fileno())
        os.rename(temp, path)
    except OSError as e:
        raise KeyStoreError(path, "cannot write (%s)" % e)


def write_key_file(path, secret):
    _write_atomically(path, encode_key_file(secret))


def load_or_create(path, table=None, random_bytes=os.urandom):
    """The SoftwareSigner whose key is stored at `path`, generating and storing one at first
    boot (when the file does not exist)."""
    try:
        secret = read_key_file(path)
    except KeyStoreError:
        raise
    except OSError as e:
        if e.args[0] != errno.ENOENT:
            raise KeyStoreError(path, "cannot read (%s)" % e)
        secret = generate_secret(random_bytes)
        write_key_file(path, secret)
        # Read back before any record is signed: a key that will not survive a reboot would
        # orphan everything signed with it.
        if read_key_file(path) != secret:
            raise KeyStoreError(path, "reads back different from what was written")
    return SoftwareSigner(secret, table)


NEXT_SUFFIX = ".next"


def staged_public_key(path):
    """The public key of the key staged to replace the one at ``path``, or None."""
    try:
        secret = read_key_file(path + NEXT_SUFFIX)
    except KeyStoreError:
        raise
    except OSError as e:
        if e.args[0] != errno.ENOENT:
            raise KeyStoreError(path + NEXT_SUFFIX, "cannot read (%s)" % e)
        return None
    return ecdsa.public_key(secret)


def stage_next_key(path, random_bytes=os.urandom):
    """Store a new key beside the one at ``path``, unless one is staged already; return its
    public key. Nothing signs with it until commit_next_key()."""
    staged = staged_public_key(path)
    if staged is None:
        write_key_file(path + NEXT_SUFFIX, generate_secret(random_bytes))
        staged = staged_public_key(path)
    return staged


ANNOUNCEMENT_SUFFIX = ".announced"


def write_announcement(path, envelope):
    """Keep the key_rotated record that announces the key about to be stored at ``path``."""
    _write_atomically(path + ANNOUNCEMENT_SUFFIX, envelope)


def read_announcement(path):
    """The key_rotated record announcing the key at ``path``, or None if it was never rotated."""
    try:
        with open(path + ANNOUNCEMENT_SUFFIX, "rb") as f:
            return f.read()
    except OSError as e:
        if e.args[0] != errno.ENOENT:
            raise KeyStoreError(path + ANNOUNCEMENT_SUFFIX, "cannot read (%s)" % e)
        return None


def commit_next_key(path, signer):
    """Make the staged key the stored one (one atomic rename) and switch ``signer`` to it."""
    secret = read_key_file(path + NEXT_SUFFIX)
    try:
        os.rename(path + NEXT_SUFFIX, path)
    except OSError as e:
        raise KeyStoreError(path, "cannot replace with the staged key (%s)" % e)
    signer._replace(secret)
