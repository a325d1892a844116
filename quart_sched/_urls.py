"""Database and server URLs as the coordination backends and the history use them."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_DRIVER = re.compile(r"^(postgres(?:ql)?)\+[^:/]*://", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
POSTGRESQL_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_scheme(value: str) -> str:
    """The scheme of a URL, lower-cased, SQLAlchemy's ``+driver`` dropped; "" for a path."""
    match = _SCHEME.match(value)
    return match.group(1).split("+", 1)[0].lower() if match else ""


def is_postgresql_url(value: str) -> bool:
    return url_scheme(value) in POSTGRESQL_SCHEMES


def plain_postgres_url(url: str) -> str:
    """``url`` as libpq reads it: ``postgresql+psycopg://`` (SQLAlchemy's form) loses the
    ``+driver``."""
    return _DRIVER.sub(r"\1://", url, count=1)


def without_password(url: str) -> str:
    """``url`` with no password, in the user part or the query, for logs, messages and
    the API; a path is returned as it is."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))
