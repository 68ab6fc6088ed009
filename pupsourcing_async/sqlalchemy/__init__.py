"""SQLAlchemy Core for read models that run unchanged on every database.

A projection's ``tx`` is the driver's own connection, and raw SQL on it is tied to one
driver (``$1``, ``?`` or ``%s``; ``fetch`` or ``execute_fetchall``). Open the database
on an SQLAlchemy ``AsyncEngine`` instead, and a handler gets an ``AsyncConnection`` bound
to the batch's own transaction, on the very connection that writes the checkpoint::

    import sqlalchemy as sa
    from pupsourcing_async import sqlalchemy as pupsa

    engine = pupsa.create_engine("postgresql://app@db/app")   # or your own AsyncEngine
    db = await pupsourcing_async.connect(engine)               # the store shares its pool

    class Balances:
        name = "balances"

        async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
            conn = pupsa.connection(tx)
            await conn.execute(balances.update().where(...).values(...))

The read model and the checkpoint commit together or not at all; ``conn`` must not
commit or roll back itself (its ``commit()``/``rollback()`` do nothing: the batch ends
the transaction), and a part that may fail on its own goes in ``conn.begin_nested()``.
The raw driver connection stays the fastest path: ``tx`` itself.

Needs the ``sqlalchemy`` extra: ``pip install 'pupsourcing-async[sqlalchemy]'``.
Importing ``pupsourcing_async`` itself never imports SQLAlchemy.
"""

from __future__ import annotations

from typing import Any, cast

try:
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
    from sqlalchemy.pool import PoolProxiedConnection
except ModuleNotFoundError as err:
    if err.name is None or not err.name.startswith(("sqlalchemy", "greenlet")):
        raise
    raise ModuleNotFoundError(
        "pupsourcing_async.sqlalchemy needs SQLAlchemy's asyncio support: "
        "pip install 'pupsourcing-async[sqlalchemy]'",
        name=err.name.partition(".")[0],
    ) from err

from .._url import parse_url
from ..connections import DriverConnection
from ._pools import checked_out

__all__ = ["connection", "create_engine"]

_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+aiomysql",
}


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """An ``AsyncEngine`` on the driver the store uses, for a URL ``connect()`` takes.

    ``postgresql://`` gets asyncpg, ``sqlite:///`` aiosqlite and ``mysql://`` aiomysql;
    ``options`` go to ``sqlalchemy.ext.asyncio.create_async_engine`` as they are
    (``pool_size``, ``max_overflow``, ``echo``...). Dispose of it yourself (``await
    engine.dispose()``) once every database opened on it is closed.

    Raises:
        UnsupportedURLError: the scheme is not one ``connect()`` knows.
    """
    parsed = parse_url(url)
    scheme = _SCHEMES[parsed.dialect]
    return create_async_engine(scheme + parsed.url[parsed.url.index(":") :], **options)


class _Joined:
    """SQLAlchemy's handle on a connection a batch holds: statements run on it, but the
    transaction is the batch's to end, so committing, rolling back and closing do nothing."""

    __slots__ = ("_fairy",)

    def __init__(self, fairy: Any) -> None:
        self._fairy = fairy

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _close_special(self, transaction_reset: bool = False) -> None:
        pass

    def detach(self) -> None:
        raise TypeError("a connection bound to a batch's transaction cannot be detached")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fairy, name)


def connection(tx: DriverConnection) -> AsyncConnection:
    """An SQLAlchemy ``AsyncConnection`` on ``tx``, inside ``tx``'s transaction.

    ``tx`` is what ``db.transaction()`` yields or a projection's ``handle`` receives, on
    a database opened with ``pupsourcing_async.connect(engine)``. Statements run on the
    same driver connection, so they commit or roll back with the rest of the transaction
    (a batch's checkpoint included). Cheap: call it once per ``handle``.

    Raises:
        TypeError: ``tx`` is not a connection lent by a database opened on an engine
            (one opened by URL has no engine; open it with ``connect(engine)``).
    """
    checkout = checked_out(tx)
    if checkout is None:
        raise TypeError(
            "pupsourcing_async.sqlalchemy.connection() needs the tx of a database opened on "
            "a SQLAlchemy engine (pupsourcing_async.connect(engine)) while its transaction "
            f"runs; got {type(tx).__name__}"
        )
    joined = cast(PoolProxiedConnection, _Joined(checkout.fairy))
    return AsyncConnection(checkout.engine, Connection(checkout.engine.sync_engine, joined))
