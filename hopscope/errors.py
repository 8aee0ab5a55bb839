"""The exceptions hopscope raises on purpose.

    HopscopeError
     ├── ConfigError      hopscope.toml or HOPSCOPE_* has a bad key or value
     ├── SpecError        an SLO file (hopscope/v1, OpenSLO, Sloth) is invalid or unsupported
     ├── CollectorError   a source could not be read (the runner records it, it never stops others)
     ├── StoreError       the store refused a write or a query
     └── NotFoundError    an incident id, SLO name or other key that does not exist

Messages name the file, the path inside it and the bad value, so the CLI can
print them as one line and exit 2.
"""

from __future__ import annotations


class HopscopeError(Exception):
    """Base of every error hopscope raises on purpose."""


class ConfigError(HopscopeError):
    """Bad configuration: names the key and the bad value."""


class SpecError(HopscopeError):
    """Bad SLO spec: names the file, the path inside it and the bad value."""


class CollectorError(HopscopeError):
    """A source could not be read."""


class StoreError(HopscopeError):
    """The store refused a write or a query.

    ``cause`` names a condition an operator can act on, where one was recognised:
    "disk full", "read-only", "locked" (another writer holds the catalog); None otherwise."""

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        # True where the database refused (a failed commit or statement), False for the caller's own
        # mistakes (an unknown column, a bad type): only the first means the store is refusing writes.
        self.refused = False


class NotFoundError(HopscopeError):
    """Something asked for by name or id does not exist."""
