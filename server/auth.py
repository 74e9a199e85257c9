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
