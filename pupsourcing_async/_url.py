"""Parsing database URLs, and printing them without their password."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit, urlunsplit

from .errors import UnsupportedURLError

__all__ = ["DatabaseURL", "parse_url", "redact_url"]

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


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL.

    Attributes:
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
        url: The URL with its scheme normalised for the driver.
        parts: The URL split into its components.
    """

    dialect: str
    url: str
    parts: SplitResult

    @property
    def host(self) -> str:
        """The host, or ``localhost`` when the URL names none."""
        host = self.parts.hostname
        if not host:
            query = parse_qs(self.parts.query)
            host = query.get("host", ["localhost"])[0]
        return host

    @property
    def database(self) -> str:
        """The database name, for the server dialects."""
        return self.parts.path.lstrip("/")

    @property
    def sqlite_path(self) -> str:
        """The file path of a SQLite URL, or ``:memory:``."""
        path = self.parts.path
        # sqlite:///relative.db has path "/relative.db"; sqlite:////abs.db has "//abs.db".
        path = path[1:] if path.startswith("/") else path
        return path or ":memory:"

    @property
    def location(self) -> str:
        """Where the database is, for messages: never includes a password."""
        if self.dialect == "sqlite":
            return self.sqlite_path
        port = self.parts.port
        where = f"{self.host}:{port}" if port else self.host
        return f"{where}/{self.database}" if self.database else where

    def scrub(self, text: str) -> str:
        """``text`` (a driver's error message, say) with this URL's password as ``***``."""
        password = self.parts.password
        if not password:
            return text
        return text.replace(unquote(password), "***").replace(password, "***")

    def __str__(self) -> str:
        return redact_url(self.url)


def parse_url(url: str) -> DatabaseURL:
    """Parse ``url`` and tell which database it names.

    Raises:
        UnsupportedURLError: the scheme is not one of postgresql://, postgres://,
            sqlite://, mysql:// or mariadb://.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    dialect = _DIALECTS.get(scheme)
    if dialect is None:
        shown = scheme or "(none)"
        raise UnsupportedURLError(
            f"unsupported database URL scheme {shown!r} in {redact_url(url)!r}: "
            "use postgresql://, sqlite:/// or mysql://",
            scheme=scheme,
        )
    base = {"postgres": "postgresql", "sqlite": "sqlite", "mysql": "mysql"}[dialect]
    # Replace the scheme textually: urlunsplit() would turn sqlite:////abs into sqlite://abs.
    normalised = base + url[len(parts.scheme) :]
    if dialect == "sqlite" and parts.netloc:
        raise UnsupportedURLError(
            f"a SQLite URL names a file, not a host: use sqlite:///relative.db or "
            f"sqlite:////absolute/path.db, got {redact_url(url)!r}",
            scheme=scheme,
        )
    return DatabaseURL(dialect, normalised, urlsplit(normalised))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))
