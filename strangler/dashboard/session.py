"""The dashboard's sign-in: the admin token kept in an HttpOnly, SameSite=Strict cookie, and the per-session
token every form carries against cross-site request forgery.

The form token is an HMAC of the presented admin token under a key derived from all configured tokens, so
every admin instance with the same configuration accepts it (a dashboard behind a load balancer keeps
working) and nobody without the admin token can compute it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from strangler.gateway.admin import DASHBOARD_PREFIX, SESSION_COOKIE, session_cookie

COOKIE_MAX_AGE = 12 * 3600


class DashboardSession:
    def __init__(self, tokens: Mapping[str, SecretStr]) -> None:
        self._tokens = [(name, secret.get_secret_value().encode()) for name, secret in tokens.items()]
        material = b"\x00".join(sorted(token for _, token in self._tokens))
        self._key = hashlib.sha256(b"strangler-dashboard-form\x00" + material).digest()

    def token_name(self, presented: str) -> str | None:
        """The name of the admin token `presented` is (constant time over every token), else None."""
        found = None
        data = presented.encode()
        for name, token in self._tokens:
            if hmac.compare_digest(data, token):
                found = name
        return found

    def form_token(self, request: Request) -> str:
        """The token this session's forms carry (empty when the request presents no credential)."""
        credential = presented_credential(request)
        if not credential:
            return ""
        return hmac.new(self._key, credential, hashlib.sha256).hexdigest()

    def form_is_genuine(self, request: Request, submitted: str) -> bool:
        """The form came from a page of this dashboard: its token matches and the browser's Origin (when it
        sends one) is this host."""
        expected = self.form_token(request)
        if not expected or not hmac.compare_digest(expected.encode(), submitted.encode()):
            return False
        origin = request.headers.get("origin")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                return False
        return True

    @staticmethod
    def sign_in(response: Response, token: str, *, secure: bool) -> None:
        response.set_cookie(SESSION_COOKIE, quote(token, safe=""), max_age=COOKIE_MAX_AGE, path=DASHBOARD_PREFIX,
                            httponly=True, samesite="strict", secure=secure)

    @staticmethod
    def sign_out(response: Response, *, secure: bool) -> None:
        response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PREFIX, httponly=True, samesite="strict",
                               secure=secure)


def presented_credential(request: Request) -> bytes:
    """The admin token the request authenticated with: the bearer header, else the session cookie."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip().encode()
    return session_cookie(request.scope)
