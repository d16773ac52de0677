"""What keeps the dashboard safe to expose: basic auth, the cross-site checks of every POST, and
the headers of every response.

- Basic auth (when credentials are given) guards every route, static files included; the
  user name and password are compared in constant time (``hmac.compare_digest``), both always,
  so the time taken does not tell which one was wrong.
- A POST is refused (403) unless the browser says it comes from this site: ``Sec-Fetch-Site``
  absent, ``same-origin`` or ``none``; ``Origin``, when sent, naming the request's own host
  and port; and the form's ``csrf`` field equal to the ``pgs_csrf`` cookie (double submit: a
  random token per browser session, in an HttpOnly, SameSite=Lax cookie that another site can
  neither read nor make the browser send with its POST; Lax, not Strict, so that following a
  link from another site keeps the token every open tab's forms carry). Basic auth alone is
  no defence: browsers resend it to cross-site requests.
- With an allowlist of host names (``allowed_hosts``; ``pg-scheduler dashboard`` without
  credentials allows the loopback names only), a request whose ``Host`` names another host is
  refused (400 "invalid host"), ports ignored: a page of another site whose name an attacker
  re-points to 127.0.0.1 (DNS rebinding) can neither read the pages nor post, since its
  requests carry its own name.
- Every response carries a strict Content-Security-Policy (scripts from this origin only: the
  pages have no inline script, htmx is a static file), refuses framing, and is not cached.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from .reads import db_time

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "pgs_csrf"
CSRF_FIELD = "csrf"
USER_KEY = "pg_scheduler.dashboard.user"
"""Where the basic-auth middleware leaves the authenticated user name in the ASGI scope."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth credentials every request must present."""

    username: str
    password: str

    def check(self, header: str | None) -> str | None:
        """The user name if ``header`` (an ``Authorization`` value) carries these credentials."""
        user, password = _parse_basic(header)
        # Both compared, always, in constant time: the answer's timing tells nothing.
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return self.username if user_ok and password_ok else None


def _parse_basic(header: str | None) -> tuple[str, str]:
    if not header:
        return "", ""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def host_name(host: str) -> str:
    """The name of a ``Host`` header or an allowlist entry: lower case, without its port, an
    IPv6 address without its brackets (``[::1]:8080`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # an IPv6 address given bare, in an allowlist
        return host
    # A fully qualified name's trailing dot names the same host ("localhost." is "localhost").
    return host.partition(":")[0].rstrip(".")


class HostAllowlist:
    """Host names a request may name in its ``Host`` header: exact names, or ``*.example.com``
    for its subdomains, or ``*`` for any."""

    def __init__(self, hosts: Iterable[str]) -> None:
        names = {host_name(h) for h in hosts if h.strip()}
        self.any = "*" in names
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))
        self.names = frozenset(n for n in names if not n.startswith("*"))

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        name = host_name(host)
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))


class Guard:
    """The outer ASGI middleware: the Host allowlist, basic auth, security headers,
    Server-Timing."""

    def __init__(
        self, app: ASGIApp, auth: BasicAuth | None, allowed_hosts: HostAllowlist | None = None
    ) -> None:
        self.app = app
        self.auth = auth
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        if self.allowed_hosts is not None:
            raw_host = headers.get(b"host")
            if not self.allowed_hosts.allows(raw_host.decode("latin-1") if raw_host is not None else None):
                await _plain(send, 400, b"invalid host\n")
                return
        if self.auth is not None:
            raw = headers.get(b"authorization")
            user = self.auth.check(raw.decode("latin-1") if raw is not None else None)
            if user is None:
                await _unauthorized(send)
                return
            scope[USER_KEY] = user
        cell = [0.0]
        token = db_time.set(cell)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = (time.perf_counter() - started) * 1000
                timing = f"db;dur={cell[0] * 1000:.1f}, total;dur={total:.1f}".encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message["headers"] = [*headers, *SECURITY_HEADERS, (b"server-timing", timing)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            db_time.reset(token)


async def _unauthorized(send: Send) -> None:
    challenge = (b"www-authenticate", b'Basic realm="pg-scheduler", charset="UTF-8"')
    await _plain(send, 401, b"authentication required\n", [challenge])


async def _plain(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(extra or []),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser session's token, and whether it is new (the response must set the cookie)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing, False
    cached = getattr(request.state, "new_csrf", None)
    if cached:
        return str(cached), True
    token = secrets.token_urlsafe(32)
    request.state.new_csrf = token
    return token, True


def cross_site_refusal(request: Request, form: dict[str, str]) -> str | None:
    """Why this POST must be refused as a possible cross-site request, or None if it may go on."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = request.headers.get("origin")
    if origin is not None:
        # The host and port, not the scheme: behind a proxy that ends TLS the browser's Origin
        # is https while this server is reached over http, and another site differs by host.
        own = request.headers.get("host", request.url.netloc)
        if urlsplit(origin).netloc.lower() != own.lower():
            return "cross-site request refused (Origin does not match this site)"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return "missing or wrong CSRF token: reload the page and try again"
    return None


def who(request: Request) -> str:
    """Who acts, for the action log: the basic-auth user, else the mounting application's
    authenticated ``request.user``, else the client's address."""
    user = request.scope.get(USER_KEY)
    if user:
        return f"user {user}"
    host_user = request.scope.get("user")
    if host_user is not None and getattr(host_user, "is_authenticated", False):
        name = str(
            getattr(host_user, "display_name", None) or getattr(host_user, "username", None) or host_user
        )
        return f"user {name}" if name.isprintable() else f"user {name!r}"  # no forged log line
    client = request.client
    return f"client {client.host}:{client.port}" if client is not None else "unknown client"
