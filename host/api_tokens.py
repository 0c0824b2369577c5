"""The REST API's tokens: who may call it, and in which role (docs/api.md).

A token is a random secret handed to one user once. The host keeps only its SHA-256, in a JSON
file, so a leaked file lets nobody in:

    {"tokens": [{"name": "zhang.min", "role": "officer", "sha256": "9f86d0..."}]}

Each entry names a user (who the audit log says acted) and one role of USER_ROLES. A lookup
hashes the presented token and looks the digest up: an attacker who times it learns about a
SHA-256 of their guess, never about a stored secret, so no constant-time compare is needed.

`meterseal token issue` (token_cli.py) issues tokens; `meterseal serve` reads the file.
"""

import json
import os
import secrets
from dataclasses import dataclass
from hashlib import sha256

from .storage import USER_ROLES

# 32 random bytes: far beyond guessing, over any number of requests.
_TOKEN_BYTES = 32
_TOKEN_PREFIX = "mst_"


class TokenFileError(OSError):
    """A tokens file that cannot be read or written, or whose content is not a token list. One
    line naming the file."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's user name and role."""

    name: str
    role: str


def token_digest(token):
    return sha256(token.encode()).hexdigest()


class TokenBook:
    """The known tokens, by the SHA-256 of each."""

    def __init__(self):
        self._by_digest = {}

    def __len__(self):
        return len(self._by_digest)

    def add(self, name, role, digest):
        """Admit the token whose SHA-256 (hex) is ``digest`` as user ``name`` in ``role``."""
        # The name goes into the audit log, whose PostgreSQL text cannot hold NUL.
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            raise ValueError(f"token name must be non-empty text without NUL, got {name!r}")
        if role not in USER_ROLES:
            raise ValueError(f"token {name}: role {role!r} is not one of " + ", ".join(USER_ROLES))
        if any(principal.name == name for principal in self._by_digest.values()):
            raise ValueError(f"token name {name} is used twice")
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):
            raise ValueError(f"token {name}: sha256 must be 64 lowercase hex digits")
        self._by_digest[digest] = Principal(name, role)

    def issue(self, name, role):
        """A new random token for ``name`` in ``role``; only its digest is kept."""
        token = _TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
        self.add(name, role, token_digest(token))
        return token

    def principals(self):
        """Everyone who holds a token."""
        return list(self._by_digest.values())

    def principal(self, token):
        """Who ``token`` belongs to, or None for an unknown token."""
        return self._by_digest.get(token_digest(token))

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as file:
                content = json.load(file)
            book = cls()
            for entry in content["tokens"]:
                book.add(entry["name"], entry["role"], entry["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenFileError(f"tokens file {path}: {exc}") from exc
        return book

    def save(self, path):
        """Write the book to ``path`` (readable by its owner only), replacing it whole."""
        entries = [{"name": principal.name, "role": principal.role, "sha256": digest}
                   for digest, principal in sorted(self._by_digest.items(),
                                                   key=lambda item: item[1].name)]
        partial = f"{path}.partial"
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w", encoding="utf-8") as file:
                json.dump({"tokens": entries}, file, indent=2)
                file.write("\n")
            os.replace(partial, path)
        except OSError as exc:
            raise TokenFileError(f"tokens file {path}: {exc}") from exc
