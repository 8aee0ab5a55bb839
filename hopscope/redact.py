"""Secrets out of anything shown, logged or stored: URL user-info, secret query values, known secrets.

One function for every collector that has a URL (probes, Prometheus) and for config errors, so
a target is spelled the same way on start-up, in `/metrics`, in the log and in the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

MASK = "***"

# Query keys whose values are credentials (matched whole and case-insensitively): the names API keys,
# OAuth tokens and signed URLs (AWS SigV4, Azure SAS, GCS) use.
SECRET_QUERY_KEYS: tuple[str, ...] = (
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
)

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]+@")


@lru_cache(maxsize=32)
def _query_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    if not keys:
        return None
    names = "|".join(re.escape(k) for k in sorted(set(keys), key=len, reverse=True))
    return re.compile(rf"(?i)([?&;](?:{names})=)[^&;#\s'\"]*")


def redact(text: str, *, secrets: Iterable[str] = (), query_keys: Iterable[str] = SECRET_QUERY_KEYS) -> str:
    """`text` with user-info of URLs, values of secret query keys and each of `secrets` replaced by ***.

    Works on free text (an error message that quotes a URL) as well as on one URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    pattern = _query_pattern(tuple(k.lower() for k in query_keys))
    if pattern is not None:
        text = pattern.sub(rf"\1{MASK}", text)
    return text
