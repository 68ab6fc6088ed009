"""Parsing database URLs, and printing them without their password.

URLs follow SQLAlchemy's forms. A password should be percent-encoded, but people paste
them as they are: a ``#``, ``?``, ``/`` or ``@`` in an unencoded password must neither
break the parse nor end up in an error message. So the user information is taken up to
the last ``@`` before the host, and every message shows the URL with its password as
``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from .errors import UnsupportedURLError

__all__ = ["DatabaseURL", "Host", "parse_url", "redact_url"]

# SQLAlchemy-style "+driver" suffixes are accepted so users can reuse their URLs.
_DIALECTS = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "postgresql+asyncpg": "postgres",
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "mysql": "mysql",
    "mysql+aiomysql": "mysql",
    "mariadb": "mysql",
    "mariadb+aiomysql": "mysql",
}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(?::([^:]*))?\Z")


@dataclass(frozen=True, slots=True)
class Host:
    """One host of a URL.

    Attributes:
        name: The host name or address (IPv6 without brackets); empty when none is given.
        port: The port, when the URL gives one.
    """

    name: str
    port: int | None

    def __str__(self) -> str:
        name = f"[{self.name}]" if ":" in self.name else self.name
        return name if self.port is None else f"{name}:{self.port}"


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL.

    Attributes:
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
        scheme: The scheme as written, in lower case.
        user: The user name, decoded; ``None`` when the URL names none.
        password: The password, decoded; ``None`` when the URL has none.
        hosts: The hosts, in order (several for a PostgreSQL fail-over URL).
        database: The database name (or, for SQLite, the path as written).
        options: The query string's options, in order.
    """

    dialect: str
    scheme: str
    user: str | None
    password: str | None = field(repr=False)
    hosts: tuple[Host, ...]
    database: str
    options: tuple[tuple[str, str], ...]
    _raw_password: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """The first host's name, or ``localhost`` when the URL names none."""
        for host in self.hosts:
            if host.name:
                return host.name
        return dict(self.options).get("host", "localhost")

    @property
    def port(self) -> int | None:
        """The first host's port, when given."""
        return self.hosts[0].port if self.hosts else None

    @property
    def sqlite_path(self) -> str:
        """The file path of a SQLite URL, or ``:memory:``."""
        # sqlite:///relative.db has path "/relative.db"; sqlite:////abs.db has "//abs.db".
        path = self.database
        path = path[1:] if path.startswith("/") else path
        return path or ":memory:"

    @property
    def location(self) -> str:
        """Where the database is, for messages: never includes a password."""
        if self.dialect == "sqlite":
            return self.sqlite_path
        shown = [str(host) for host in self.hosts if host.name or host.port]
        where = ",".join(shown) or self.host
        name = self.database.lstrip("/")
        return f"{where}/{name}" if name else where

    @property
    def url(self) -> str:
        """The URL with its scheme normalised for the driver and its parts encoded."""
        base = {"postgres": "postgresql", "sqlite": "sqlite", "mysql": "mysql"}[self.dialect]
        if self.dialect == "sqlite":
            return f"{base}://{self.database}"
        return base + "://" + self._authority(self.password) + self._tail()

    def _authority(self, password: str | None) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = quote(self.user, safe="")
            if password is not None:
                userinfo += ":" + (password if password == "***" else quote(password, safe=""))
            userinfo += "@"
        return userinfo + ",".join(str(host) for host in self.hosts)

    def _tail(self) -> str:
        tail = "/" + quote(self.database.lstrip("/"), safe="") if self.database else ""
        if self.options:
            tail += "?" + "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.options
            )
        return tail

    def scrub(self, text: str) -> str:
        """``text`` (a driver's error message, say) with this URL's password as ``***``."""
        for secret in (self.password, self._raw_password):
            if secret:
                text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text

    def __str__(self) -> str:
        if self.dialect == "sqlite":
            return f"{self.scheme}://{self.database}"
        shown = None if self.password is None else "***"
        return self.scheme + "://" + self._authority(shown) + self._tail()


def parse_url(url: str) -> DatabaseURL:
    """Parse ``url`` and tell which database it names.

    Raises:
        UnsupportedURLError: the scheme is not one of postgresql://, postgres://,
            sqlite://, mysql:// or mariadb://, or the URL is malformed (a bad port, a
            SQLite URL with a host). The message never holds the password.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    dialect = _DIALECTS.get(scheme)
    if dialect is None or not url[len(scheme) + 1 :].startswith("//"):
        shown = scheme or "(none)"
        raise UnsupportedURLError(
            f"unsupported database URL scheme {shown!r} in {redact_url(url)!r}: "
            "use postgresql://, sqlite:/// or mysql://",
            scheme=scheme,
        )
    rest = url[len(scheme) + 3 :]
    if dialect == "sqlite":
        path, _, _ = rest.partition("?")
        if path and not path.startswith("/"):
            raise UnsupportedURLError(
                "a SQLite URL names a file, not a host: use sqlite:///relative.db or "
                f"sqlite:////absolute/path.db, got {redact_url(url)!r}",
                scheme=scheme,
            )
        return DatabaseURL("sqlite", scheme, None, None, (), path, ())
    user, password, raw, rest = _userinfo(rest)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    rest = rest[len(authority) :]
    path, _, query = rest.partition("?")
    query = query.partition("#")[0]
    path = path.partition("#")[0]
    hosts = tuple(_host(part, scheme, url) for part in authority.split(",")) if authority else ()
    if dialect == "mysql" and len(hosts) > 1:
        raise UnsupportedURLError(
            f"a MySQL URL names one host, got {len(hosts)} in {redact_url(url)!r}", scheme=scheme
        )
    try:
        options = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UnsupportedURLError(
            f"malformed query string in {redact_url(url)!r}", scheme=scheme
        ) from None
    return DatabaseURL(
        dialect, scheme, user, password, hosts, unquote(path.lstrip("/")), options, raw
    )


def _userinfo(rest: str) -> tuple[str | None, str | None, str | None, str]:
    """Split off ``user:password@``: up to the last ``@`` of the authority, or, when the
    password holds an unencoded ``/``, ``?`` or ``#``, up to the last ``@`` at all."""
    end = re.search(r"[/?#]", rest)
    authority_end = end.start() if end else len(rest)
    at = rest.rfind("@", 0, authority_end)
    if at < 0:
        at = rest.rfind("@")
    if at < 0:
        return None, None, None, rest
    info, rest = rest[:at], rest[at + 1 :]
    user, colon, raw = info.partition(":")
    password = unquote(raw) if colon else None
    return unquote(user), password, raw if colon else None, rest


def _host(text: str, scheme: str, url: str) -> Host:
    match = _HOST.match(text)
    if match is None:
        raise UnsupportedURLError(f"malformed host {text!r} in {redact_url(url)!r}", scheme=scheme)
    name, port = match.group(1), match.group(2)
    name = name[1:-1] if name.startswith("[") else unquote(name)
    if port is None or port == "":
        return Host(name, None)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UnsupportedURLError(
            f"the port must be a number from 1 to 65535, got {port!r} in {redact_url(url)!r}",
            scheme=scheme,
        )
    return Host(name, int(port))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    match = _SCHEME.match(url) if isinstance(url, str) else None
    if match is None or not url[match.end() :].startswith("//"):
        return url if isinstance(url, str) and "@" not in url else "<unparsable URL>"
    scheme_end = match.end() + 2
    user, password, _raw, rest = _userinfo(url[scheme_end:])
    if password is None:
        return url
    return f"{url[:scheme_end]}{quote(user or '', safe='')}:***@{rest}"
