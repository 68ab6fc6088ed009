"""``python -m examples.single_worker [--url URL] [--events N]``: one projection worker.

A producer deposits money into three accounts while one worker keeps their balances
in a read model. Ctrl-C (SIGINT) or SIGTERM stops both: the worker is cancelled, the
batch it was in the middle of rolls back, and the checkpoint and the read model stay in
step. Run it again and the worker resumes from its checkpoint. With ``--events N`` it
stops by itself once the worker has handled N deposits.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

from pupsourcing_async import Database, es
from pupsourcing_async.projection import ProcessorConfig

from ..common.bank import (
    ACCOUNT,
    CONTEXT,
    Balances,
    account_opened,
    amount_of,
    append,
    money,
    money_deposited,
    run_id,
)
from ..common.cli import Setup, parser, setup

NAME = "single_worker_balances"


class SlowBalances(Balances):
    """Balances with a pause per event, so that a stop often lands mid-batch."""

    def __init__(self, table: str, delay: float) -> None:
        super().__init__(NAME, table)
        self.delay = delay
        self.accounts: set[str] = set()
        self.handled = 0

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        await super().handle(tx, event)
        if event.aggregate_id not in self.accounts:
            return  # another run's account, on a shared database
        self.handled += 1
        # Printing is a side effect outside the transaction: a rolled-back event is
        # printed again when it is handled again.
        amount = money(amount_of(event)) if event.event_type != "AccountOpened" else ""
        print(
            f"  worker: {event.event_type:<15} {event.aggregate_id:<18} {amount:>8}"
            f" (position {event.global_position})",
            flush=True,
        )
        await asyncio.sleep(self.delay)


async def produce(db: Database, accounts: list[str], events: int | None, interval: float) -> int:
    """Deposit into the accounts in turn; the position of the last deposit."""
    position = 0
    count = 0
    while events is None or count < events:
        account = accounts[count % len(accounts)]
        result = await append(db, [money_deposited(account, 1_000 * (count % 5 + 1))])
        position = result.global_positions[-1]
        count += 1
        await asyncio.sleep(interval)
    return position


async def check(db: Database, balances: SlowBalances, accounts: list[str]) -> None:
    """Show that the read model holds exactly the events up to the checkpoint."""
    status = {s.name: s for s in await db.projection_status()}
    checkpoint = status[NAME].position
    expected: dict[str, tuple[int, int]] = {}
    async with db.transaction() as tx:
        for account in accounts:
            stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account)
            done = [event for event in stream if event.global_position <= checkpoint]
            expected[account] = (sum(amount_of(event) for event in done), len(done))
    rows = await balances.rows(db, accounts)
    found = {
        account: (balance, n) for account, (_, balance, n) in zip(accounts, rows, strict=False)
    }
    committed = sum(n for _, n in found.values())
    print(f"Checkpoint at position {checkpoint}; the read model holds {committed} events")
    rolled_back = balances.handled - committed
    if rolled_back > 0:
        undone = f"{rolled_back} handled event" + ("s" if rolled_back != 1 else "")
        print(f"The batch in flight rolled back, undoing {undone}")
    print(
        "Read model and checkpoint agree"
        if all(found.get(a, (0, 0)) == expected[a] for a in accounts if expected[a][1])
        else f"MISMATCH: read model {found}, events {expected}"
    )


async def run(where: Setup, events: int | None, interval: float, delay: float) -> None:
    """Produce and project until a signal (or ``events`` deposits), then stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with where.connect() as db:
        await db.migrate()
        balances = SlowBalances(where.table("single_worker_balances"), delay)
        await balances.create_table(db)
        suffix = run_id()
        accounts = [f"acc-{owner.lower()}-{suffix}" for owner in ("Alice", "Bob", "Carol")]
        balances.accounts.update(accounts)
        for account, owner in zip(accounts, ("Alice", "Bob", "Carol"), strict=True):
            await append(db, [account_opened(account, owner)], es.NoStream())
        config = ProcessorConfig(batch_size=10, max_poll_interval=1.0)

        async def produce_then_stop() -> None:
            last = await produce(db, accounts, events, interval)
            await db.wait_for(last, projections=[NAME], timeout=60)
            print(f"Caught up with all {events} deposits", flush=True)
            stop.set()

        async with asyncio.TaskGroup() as group:
            worker = group.create_task(db.processor(config).run(balances))
            producer = group.create_task(produce_then_stop())
            print(f"Worker running on {db.dialect}; press Ctrl-C to stop", flush=True)
            await stop.wait()
            print("Stopping: cancelling the worker", flush=True)
            producer.cancel()
            worker.cancel()
        # TaskGroup waits for the cancelled worker: its batch has committed or rolled back.
        print("Worker stopped cleanly", flush=True)
        await check(db, balances, accounts)
        for owner, balance, _ in await balances.rows(db, accounts):
            print(f"  {owner:<6} {money(balance):>9}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM, or until ``--events`` deposits are projected."""
    cli = parser("single_worker", "One projection worker, stopped gracefully by a signal.")
    cli.add_argument("--events", type=int, help="stop after this many deposits (default: never)")
    cli.add_argument("--interval", type=float, default=0.3, help="seconds between deposits")
    cli.add_argument("--handler-delay", type=float, default=0.05, help="seconds per event handled")
    args = cli.parse_args(argv)
    with setup(args, "bank.db") as where:
        asyncio.run(run(where, args.events, args.interval, args.handler_delay))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
