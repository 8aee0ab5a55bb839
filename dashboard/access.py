"""Who may load the dashboard and who may frame it: an ASGI middleware in front of Streamlit's own app.

Streamlit has no option for response headers, and its access control is its OIDC login (`st.login`).
`hopscope dashboard` serves `dashboard/serve.py`, an `st.App` with this middleware, which

- sends `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'` (or the
  `[dashboard] frame_ancestors` allowed to embed it), `X-Content-Type-Options: nosniff` and
  `Referrer-Policy: no-referrer` on every HTTP response;
- with `[dashboard] user_header` set (the header an authenticating proxy such as oauth2-proxy sets,
  e.g. `X-Forwarded-User`), refuses with 403 every request and WebSocket that lacks it, except the
  health check. The proxy must strip that header from what clients send, and be the only way in.

Streamlit's own OIDC sign-in (`st.login`) applies where `.streamlit/secrets.toml` has an `[auth]` table:
`require_sign_in()`, called by app.py, shows only a sign-in button until someone has signed in.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_HEADER_ENV = "HOPSCOPE_DASHBOARD_USER_HEADER"  # how `hopscope dashboard` passes [dashboard] user_header
FRAME_ANCESTORS_ENV = "HOPSCOPE_DASHBOARD_FRAME_ANCESTORS"  # ... and frame_ancestors, space-separated

_OPEN_PATHS = ("/_stcore/health",)  # what a load balancer's health check asks; it shows nothing


def security_headers(frame_ancestors: Iterable[str] = ()) -> list[tuple[bytes, bytes]]:
    """The headers every response carries; no ancestors: no page may frame the dashboard."""
    allowed = " ".join(frame_ancestors)
    headers = [
        (b"content-security-policy", b"frame-ancestors " + (allowed or "'none'").encode()),
        (b"x-content-type-options", b"nosniff"),
        # A telemetry-made link or image must not learn the dashboard's URL (issue 15).
        (b"referrer-policy", b"no-referrer"),
    ]
    if not allowed:  # X-Frame-Options cannot name origins: only sent when nothing may frame the page
        headers.append((b"x-frame-options", b"DENY"))
    return headers


class AccessGuard:
    """The ASGI middleware: security headers on every response; the trusted user header required."""

    def __init__(
        self, app: Asgi, *, user_header: str | None = None, frame_ancestors: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.user_header = user_header.lower().encode() if user_header else None
        self.shown_header = user_header
        self.headers = security_headers(frame_ancestors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.user_header is not None and not self._signed_in(scope):
            await self._refuse(scope, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _signed_in(self, scope: Scope) -> bool:
        if scope["type"] == "http" and str(scope.get("path", "")).endswith(_OPEN_PATHS):
            return True
        return any(name == self.user_header and value.strip() for name, value in scope.get("headers", ()))

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":  # closed before it is accepted: the server answers 403
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (
            f"403 Forbidden: this dashboard is served only through its sign-in proxy (no {self.shown_header} "
            "header on the request).\n"
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """AccessGuard's settings as `hopscope dashboard` passed them to the Streamlit process."""
    env = os.environ if environ is None else environ
    return {
        "user_header": env.get(USER_HEADER_ENV) or None,
        "frame_ancestors": env.get(FRAME_ANCESTORS_ENV, "").split(),
    }


def require_sign_in() -> None:
    """Where Streamlit's OIDC login is configured (`[auth]` in secrets.toml), stop the page at a sign-in
    button until the person has signed in; elsewhere do nothing."""
    import streamlit as st  # noqa: PLC0415  (this module is also imported by the CLI, without Streamlit)
    from streamlit.errors import StreamlitSecretNotFoundError  # noqa: PLC0415

    try:
        configured = "auth" in st.secrets
    except StreamlitSecretNotFoundError:  # no secrets.toml at all
        configured = False
    if not configured or st.user.get("is_logged_in"):
        return
    st.title("hopscope")
    st.write("Sign in to see the dashboard.")
    st.button("Sign in", on_click=st.login)
    st.stop()
