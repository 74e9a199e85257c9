"""Bearer-token checks: every write needs the token; reads need it when the server says so."""
from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenPolicy:
    """``token`` empty means: no token configured, so only loopback clients may write."""

    token: str = ""
    read_token_required: bool = False

    def _presented(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    def _check_token(self, request: Request) -> None:
        presented = self._presented(request)
        if presented is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                "missing bearer token: send 'Authorization: Bearer <IWORKFLOW_TOKEN>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                "bearer token does not match the server's IWORKFLOW_TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})

    def require_write(self, request: Request) -> None:
        if self.token:
            self._check_token(request)
            return
        host = request.client.host if request.client else ""
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host in ("localhost", "testclient")
        if not local:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "this server has no IWORKFLOW_TOKEN configured, so it accepts writes only from "
                                "localhost; set IWORKFLOW_TOKEN on the server and on its clients")

    def require_read(self, request: Request) -> None:
        if self.read_token_required:
            self._check_token(request)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(host_header: str) -> str:
    """``example.org:8765`` -> ``example.org``; ``[::1]:8765`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class OriginPolicy:
    """Which Host headers the server answers (against DNS rebinding) and which origins may write (against
    cross-site requests).  ``hosts`` None: any Host (a server on every interface with no --allowed-host)."""

    hosts: frozenset[str] | None = None

    @classmethod
    def for_bind(cls, bind: str, allowed: tuple[str, ...] = ()) -> OriginPolicy:
        """Loopback-only names for a loopback server; that address and this machine's names for one address;
        anything for every interface, unless ``allowed`` lists the names to accept."""
        extra = {h.strip().lower() for h in allowed if h.strip()}
        if _is_loopback(bind):
            return cls(frozenset(LOOPBACK_NAMES | extra))
        if bind in ("0.0.0.0", "::", "") and not extra:
            return cls(None)
        import socket

        names = {bind.lower(), socket.gethostname().lower(), socket.getfqdn().lower()} if bind not in ("0.0.0.0", "::") \
            else set()
        return cls(frozenset(LOOPBACK_NAMES | names | extra))

    def host_allowed(self, host_header: str) -> bool:
        if self.hosts is None:
            return True
        name = _host_name(host_header)
        return name in self.hosts or (_is_loopback(name) and bool(self.hosts & LOOPBACK_NAMES))

    def cross_site(self, method: str, host_header: str, origin: str | None, fetch_site: str | None) -> bool:
        """A write sent by a page of another origin (its browser says so in Origin or Sec-Fetch-Site)."""
        if method not in UNSAFE_METHODS:
            return False
        if fetch_site and fetch_site.lower() == "cross-site":
            return True
        if not origin:
            return False
        if origin == "null":
            return True
        _scheme, _, rest = origin.partition("://")
        return rest.lower().rstrip("/") != host_header.strip().lower()


class OriginGuard:
    """ASGI middleware: 421 for an unexpected Host header (DNS rebinding), 403 for a cross-site write."""

    def __init__(self, app, policy: OriginPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        problem = None
        if not self.policy.host_allowed(host):
            problem = (421, (f"this server does not answer for host {_host_name(host)!r}; add it with "
                             "`iworkflow server --allowed-host NAME` if that is how clients reach it"))
        elif self.policy.cross_site(scope["method"], host, headers.get("origin"), headers.get("sec-fetch-site")):
            problem = (403, (f"cross-site request refused: a page of {headers.get('origin') or 'another site'} "
                             "may not change this server"))
        if problem is None:
            await self.app(scope, receive, send)
            return
        from fastapi.responses import JSONResponse

        logger.warning("refused %s %s: %s", scope["method"], scope.get("path"), problem[1])
        await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
