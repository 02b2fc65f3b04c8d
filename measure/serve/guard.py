"""Who may talk to ``measure serve``: the Host, the launch token and the Origin, as Jupyter Server
checks them.

Every HTTP request passes three checks, in this order, before any route sees it:

1. **Host** (DNS rebinding): the ``Host`` header names one of the allowed hosts (the loopback
   names, the bound address, and those named with ``--allow-host``); else 400.
2. **The launch token**: ``measure serve`` makes a random token at start and prints the page's
   address with it (``/?token=...``). A request carries it as a ``?token=`` query parameter, an
   ``Authorization: token ...`` header, or the cookie the page receives: opening ``/?token=...``
   sets it (HttpOnly, SameSite=Strict, named after the port) and redirects to ``/``, so the
   token leaves the address bar. Without it: 403. ``--no-token`` turns this check off.
3. **Origin**, for every request that is not GET or HEAD and every API request: a browser names
   the page that sent it; it must be this server's own origin, else 403. (Scripts send no
   Origin; they need the token.) Together with the SameSite cookie, no other site can make the
   browser act here, nor open a stream here even with ``--no-token``.

Refusals are one line of JSON (``{"error": ..., "field": ...}``) for the API, one line of text
for the page.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie

from starlette.datastructures import URL, Headers, QueryParams
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD")
TOKEN_PARAMETER = "token"


def cookie_name(port: int | None) -> str:
    """One cookie per port: cookies ignore ports, and two servers on one machine must not mix."""
    return f"measure-serve-{port or 'default'}"


def host_name(header: str) -> str | None:
    """The host of a Host header without its port, lower-cased; None when it is not one."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8765
        end = header.find("]")
        if end < 0 or (header[end + 1:] and not header[end + 1:].startswith(":")):
            return None
        return header[1:end]
    name, _, port = header.partition(":")
    if not name or (port and not port.isascii()) or (port and not port.isdigit()):
        return None
    return name


def allowed_hosts(bind: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host names accepted for a server bound to ``bind``: always the loopback names, the
    bound address itself unless it is a wildcard (0.0.0.0, ::), and ``extra`` (``--allow-host``)."""
    names = [*LOOPBACK_HOSTS]
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        names.append(bind.strip("[]").lower())
    names += [host_name(name) or name.lower() for name in extra]
    return tuple(dict.fromkeys(names))


class LaunchGuard:
    """ASGI middleware: the Host, token and Origin checks of the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: tuple[str, ...]):
        self.app = app
        self.token = token
        self.hosts = frozenset(host.lower() for host in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope):
        headers = Headers(scope=scope)
        host = host_name(headers.get("host", ""))
        if host is None or host not in self.hosts:
            shown = headers.get("host", "")[:60]
            return self._refuse(scope, 400, f"Host {shown!r} is not served here (allowed: {', '.join(sorted(self.hosts))}; "
                                            "start measure serve with --allow-host NAME to add one)", "host")
        if self.token is not None:
            given = self._given_token(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                what = "a wrong token" if given else "no token"
                return self._refuse(scope, 403, f"{what}: open the address measure serve printed at start "
                                                "(it ends in ?token=...), or send Authorization: token ...", "token")
            if scope["path"] == "/" and TOKEN_PARAMETER in QueryParams(scope.get("query_string", b"")):
                return self._remember_token(scope)
        # Browsers name the page behind every request that changes anything, and behind every
        # cross-origin fetch or EventSource: a foreign one is refused on the API even for GET.
        if scope["method"] not in SAFE_METHODS or scope["path"].startswith("/api/"):
            origin = headers.get("origin")
            if origin is not None and origin != self._own_origin(scope, headers):
                return self._refuse(scope, 403, f"Origin {origin[:60]!r} is not this server: requests that "
                                                "change anything must come from its own page", "origin")
        return None

    def _given_token(self, scope: Scope, headers: Headers) -> str | None:
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        query = QueryParams(scope.get("query_string", b""))
        if query.get(TOKEN_PARAMETER):
            return query[TOKEN_PARAMETER]
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # http.cookies raises CookieError and others on odd input: no cookie then
            return None
        morsel = cookies.get(cookie_name(_port(scope, headers)))
        return morsel.value if morsel is not None and morsel.value else None

    @staticmethod
    def _own_origin(scope: Scope, headers: Headers) -> str:
        return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"

    def _remember_token(self, scope: Scope):
        """The page opened with ?token=: keep the token in a cookie and show the address without it."""
        headers = Headers(scope=scope)
        url = URL(scope=scope).remove_query_params(TOKEN_PARAMETER)
        response = RedirectResponse(url.path + (f"?{url.query}" if url.query else ""), status_code=303)
        response.set_cookie(cookie_name(_port(scope, headers)), self.token, httponly=True, samesite="strict", path="/")
        return response

    @staticmethod
    def _refuse(scope: Scope, status: int, message: str, field: str):
        if scope["path"].startswith("/api/"):
            return JSONResponse({"error": message, "field": field}, status_code=status)
        return PlainTextResponse(f"measure serve: {message}\n", status_code=status)


def _port(scope: Scope, headers: Headers) -> int | None:
    server = scope.get("server")
    if server and server[1]:
        return server[1]
    _, _, port = headers.get("host", "").rpartition(":")
    return int(port) if port.isascii() and port.isdigit() else None
