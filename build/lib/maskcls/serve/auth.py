"""Optional API key (header ``X-API-Key``): off on 127.0.0.1, required beyond it.

``maskcls serve --host 0.0.0.0`` refuses to start without ``MASKCLS_API_KEY``
(``require_key_for``). Workers started by uvicorn/gunicorn through the factory
do not know their bind address, so the middleware also refuses, with 403, any
request that reached a non-loopback address of a service that has no key.
The web page and the API docs stay open (they hold no data); every other path,
the predictions and /health included, needs the key when one is set.
"""
from __future__ import annotations

import hmac
import ipaddress
import json

HEADER = "X-API-Key"
ENV = "MASKCLS_API_KEY"
PUBLIC = ("/", "/docs", "/openapi.json", "/redoc")  # and anything under /static/ or /docs/


def is_loopback(host: str | None) -> bool:
    """127.x.x.x, ::1 and localhost; other names and addresses are not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_key_for(host: str, key: str | None) -> None:
    """A one-line ValueError when a non-loopback bind has no key."""
    if not key and not is_loopback(host):
        raise ValueError(f"--host {host} reaches beyond this machine: set {ENV} (clients send it as header "
                         f"{HEADER}), or bind 127.0.0.1")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class ApiKeyAuth:
    """ASGI middleware: 401 without the right key; 403 off loopback when no key is set."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, (key or None)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC or path.startswith(("/static/", "/docs/")):
            return await self.app(scope, receive, send)
        if self.key:
            given = dict(scope.get("headers") or []).get(HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self.key.encode()):
                return await _deny(send, 401, f"missing or wrong API key (send header {HEADER})")
        else:
            server = (scope.get("server") or (None,))[0]
            # a real server gives the address of the accepting socket; test clients give a name
            if server and _is_ip(server) and not is_loopback(server):
                return await _deny(send, 403, f"this service has no API key and was reached on {server}: "
                                              f"set {ENV} to serve beyond 127.0.0.1")
        await self.app(scope, receive, send)


async def _deny(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", HEADER.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
