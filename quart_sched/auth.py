"""Authentication schemes for the REST API, as in Flask-APScheduler, plus bearer tokens.

Give one to ``SCHEDULER_AUTH`` (or ``scheduler.auth``) and check what it yields in a
callback, which may be ``async``::

    app.config["SCHEDULER_AUTH"] = HTTPBasicAuth()

    @scheduler.authenticate
    def authenticate(auth):
        return compare_digest(auth["username"], "admin") and compare_digest(
            auth["password"], os.environ["SCHEDULER_PASSWORD"]
        )

Or let the scheme check fixed credentials itself, in constant time:
``HTTPBasicAuth(users={"admin": "..."})``, ``HTTPBearerAuth(tokens=["..."])``.

Malformed headers (bad base64, no colon, non-ASCII, another scheme, oversized) yield
``None``: the API answers 401, never 500.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from quart import request

__all__ = [
    "Authorization",
    "HTTPAuth",
    "HTTPBasicAuth",
    "HTTPBearerAuth",
    "compare_digest",
]

#: Longer Authorization headers are refused before any decoding.
MAX_HEADER_LENGTH = 4096


def compare_digest(given: str | bytes, expected: str | bytes) -> bool:
    """Compare two secrets in constant time, as UTF-8 bytes."""
    a = given.encode("utf-8") if isinstance(given, str) else given
    b = expected.encode("utf-8") if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


class Authorization(dict[str, Any]):
    """What a scheme read from the request: a dict, with ``auth_type`` also an attribute."""

    def __init__(self, auth_type: str, **values: Any) -> None:
        super().__init__(auth_type=auth_type, **values)
        self.auth_type = auth_type

    def __repr__(self) -> str:  # never show secrets, e.g. in a traceback or a log
        return f"Authorization(auth_type={self.auth_type!r})"


def _authorization_header() -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header or len(header) > MAX_HEADER_LENGTH or not header.isascii():
        return None
    scheme, _, value = header.strip().partition(" ")
    if not value:
        return None
    return scheme.lower(), value.strip()


class HTTPAuth:
    """Base class of the schemes: read credentials from the request, name the challenge."""

    scheme = ""
    www_authenticate_realm = "Authentication Required"

    def get_authorization(self) -> Authorization | None:
        """The request's credentials, or None when absent or malformed."""
        raise NotImplementedError

    def get_authenticate_header(self) -> str:
        """The ``WWW-Authenticate`` value of a 401 response."""
        return f'{self.scheme} realm="{self.www_authenticate_realm}"'

    def verify(self, auth: Authorization) -> bool:
        """Check credentials without a callback; False unless the scheme holds some."""
        return False


class HTTPBasicAuth(HTTPAuth):
    """HTTP Basic: yields ``{"auth_type": "basic", "username": ..., "password": ...}``."""

    scheme = "Basic"

    def __init__(self, users: Mapping[str, str] | None = None) -> None:
        self._users = dict(users or {})

    def get_authorization(self) -> Authorization | None:
        header = _authorization_header()
        if header is None or header[0] != "basic":
            return None
        try:
            decoded = base64.b64decode(header[1], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        username, colon, password = decoded.partition(":")
        if not colon:
            return None
        return Authorization("basic", username=username, password=password)

    def verify(self, auth: Authorization) -> bool:
        # Compare against every user so timing does not tell which names exist.
        ok = False
        for username, password in self._users.items():
            ok |= compare_digest(auth.get("username", ""), username) & compare_digest(
                auth.get("password", ""), password
            )
        return ok


class HTTPBearerAuth(HTTPAuth):
    """``Authorization: Bearer <token>``: yields ``{"auth_type": "bearer", "token": ...}``."""

    scheme = "Bearer"

    def __init__(self, tokens: Iterable[str] | None = None) -> None:
        self._tokens = list(tokens or [])

    def get_authorization(self) -> Authorization | None:
        header = _authorization_header()
        if header is None or header[0] != "bearer" or " " in header[1]:
            return None
        return Authorization("bearer", token=header[1])

    def verify(self, auth: Authorization) -> bool:
        ok = False
        for token in self._tokens:
            ok |= compare_digest(auth.get("token", ""), token)
        return ok
