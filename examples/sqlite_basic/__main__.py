"""``python -m examples.sqlite_basic [--url sqlite:///FILE]``: an event store in a file.

SQLite needs no server: the events, the checkpoints and the read models live in one
file that any SQLite tool can open. It also allows one writer at a time, and every
transaction of the store begins with ``BEGIN IMMEDIATE``: a writer takes the write lock
*before* it reads, so a read-then-append can never be overtaken by another writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence

import aiosqlite

from pupsourcing_async import Database, es
from pupsourcing_async.adapters import sqlite
from pupsourcing_async.projection import ProcessorConfig, RunMode

from ..common.bank import (
    ACCOUNT,
    CONTEXT,
    Balances,
    account_opened,
    money,
    money_deposited,
    run_id,
)
from ..common.cli import Setup, parser, setup


async def two_writers(db: Database, account: str) -> None:
    """Two transactions that both read the account, then append at ``Exact(version)``."""
    timeline: list[str] = []
    a_holds_lock = asyncio.Event()
    b_is_trying = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def writer_a() -> None:
        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account)
            timeline.append(f"A began and read version {stream.version}")
            a_holds_lock.set()
            await b_is_trying.wait()
            # Only so that B's BEGIN IMMEDIATE is surely queued on the lock when A commits.
            await asyncio.sleep(0.2)
            result = await db.store.append(
                tx, es.Exact(stream.version), [money_deposited(account, 1_000)]
            )
            timeline.append(f"A appended version {result.to_version} and commits")

    async def writer_b() -> None:
        await a_holds_lock.wait()
        b_is_trying.set()
        started = loop.time()
        async with db.transaction() as tx:
            waited = loop.time() - started
            stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account)
            timeline.append(
                f"B began after waiting {waited * 1000:.0f} ms for the write lock "
                f"and read version {stream.version}"
            )
            result = await db.store.append(
                tx, es.Exact(stream.version), [money_deposited(account, 2_000)]
            )
            timeline.append(f"B appended version {result.to_version} and commits")

    async with asyncio.TaskGroup() as group:
        group.create_task(writer_a())
        group.create_task(writer_b())
    for line in timeline:
        print(f"  {line}")


async def own_connection(where: Setup, path: str, account: str) -> None:
    """Append through an aiosqlite connection you opened yourself."""
    store = sqlite.Store(where.store_config(), location=path)
    # isolation_level=None: we say BEGIN and COMMIT ourselves, as the store's protocol needs.
    async with aiosqlite.connect(path, isolation_level=None) as connection:
        await connection.execute("BEGIN IMMEDIATE")
        result = await store.append(connection, es.Any(), [money_deposited(account, 500)])
        await connection.execute("COMMIT")
    print(f"  appended version {result.to_version} through its own aiosqlite connection")


async def story(where: Setup) -> None:
    """Write to a SQLite file, show its locking, read it back with plain sqlite3."""
    config = where.store_config()
    account = f"acc-carol-{run_id()}"
    balances = Balances("file_balances", where.table("file_balances"))
    async with where.connect(config) as db:
        await db.migrate()
        await balances.create_table(db)
        path = db.location
        print(f"Event store in the file {path}")
        async with db.transaction() as tx:
            await db.store.append(
                tx,
                es.NoStream(),
                [account_opened(account, "Carol"), money_deposited(account, 10_000)],
            )
        print(f"Opened {account} with a deposit of $100.00")

        print("Two writers read the account and append at Exact(version) at the same time:")
        await two_writers(db, account)
        print("  no conflict: BEGIN IMMEDIATE made B wait, so B read what A wrote")

    print("Closed the database. Outside it, someone brings their own connection:")
    await own_connection(where, path, account)

    async with where.connect(config) as db:
        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account)
        print(f"Reopened the file: {account} has {len(stream)} events")
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(balances)

    def read_with_sqlite3() -> tuple[str, int]:
        with sqlite3.connect(path) as plain:
            row = plain.execute(
                f"SELECT owner, balance FROM {balances.table.name} WHERE account_id = ?", (account,)
            ).fetchone()
        return str(row[0]), int(row[1])

    owner, balance = await asyncio.to_thread(read_with_sqlite3)
    print(
        f"Plain sqlite3 reads the projection's table {balances.table}: {owner} has {money(balance)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story on a temporary SQLite file unless ``--url sqlite:///FILE`` names one."""
    cli = parser("sqlite_basic", "An embedded event store in one SQLite file.")
    args = cli.parse_args(argv)
    if args.url and not args.url.startswith("sqlite"):
        cli.error("this example is about SQLite: give a sqlite:/// URL (try examples.basic)")
    with setup(args, "bank.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
