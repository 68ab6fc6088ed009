"""``pupsourcing-async eventmap-check`` against real event stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.cli import main
from pupsourcing_async.testing import unique_store_config

from .conftest import drop_tables
from .eventmap_fixtures.shop_events.customers import CustomerRegistered
from .eventmap_fixtures.shop_events.v1.orders import OrderCreated as OrderCreatedV1
from .eventmap_fixtures.shop_events.v1.orders import OrderPaid
from .eventmap_fixtures.shop_events.v3.orders import OrderCreated as OrderCreatedV3
from .eventmap_fixtures.shop_events.values import Address, Currency, LineItem
from .eventmap_fixtures.shop_generated import event_mapping

REGISTRY_MODULE = "tests.eventmap_fixtures.shop_generated.event_mapping"
AT = datetime(2024, 1, 1, tzinfo=UTC)
LINES = [LineItem("mug", 1, Decimal("7.50"))]


def good_events(aggregate_id: str) -> list[es.Event]:
    return [
        event_mapping.to_customer_registered_v1(
            "Shop",
            "Customer",
            aggregate_id,
            CustomerRegistered(UUID(int=1), "ann@example.com", Address("Main St 1", "Utrecht")),
        ),
        event_mapping.to_order_created_v3(
            "Shop", "Customer", aggregate_id, OrderCreatedV3("o-1", "c-1", LINES, Currency.EUR, AT)
        ),
        event_mapping.to_order_paid_v1(
            "Shop", "Customer", aggregate_id, OrderPaid("o-1", Decimal("7.50"), AT)
        ),
    ]


def bad_events(aggregate_id: str) -> list[es.Event]:
    old = event_mapping.to_order_created_v1(
        "Shop", "Customer", aggregate_id, OrderCreatedV1("o-2", "c-1", LINES)
    )
    body = json.dumps({"order_id": "o-3"}).encode()
    return [
        old,
        es.Event("Shop", "Customer", aggregate_id, "Refunded", body),
        es.Event("Shop", "Customer", aggregate_id, "OrderCreated", body, event_version=9),
    ]


async def seed(url: str, config: StoreConfig, batches: list[list[es.Event]]) -> None:
    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        for events in batches:
            async with db.transaction() as tx:
                await db.store.append(tx, es.Any(), events)


async def drop(url: str, config: StoreConfig) -> None:
    async with pupsourcing_async.connect(url, store_config=config) as db:
        if db.dialect != "sqlite":
            await drop_tables(db, [config.events_table])


@pytest.fixture
def tables(url: str) -> Iterator[StoreConfig]:
    """Table names of this test's own on the backend's database, dropped afterwards."""
    config = unique_store_config()
    yield config
    asyncio.run(drop(url, config))


def check(url: str, config: StoreConfig, *options: str) -> int:
    table = ["--events-table", config.events_table]
    return main(["eventmap-check", "--url", url, "--registry", REGISTRY_MODULE, *table, *options])


def test_a_store_the_registry_can_read_passes(
    url: str, tables: StoreConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed(url, tables, [good_events("c-1")]))
    assert check(url, tables) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [
        "ok    CustomerRegistered v1",
        "ok    OrderCreated v3",
        "ok    OrderPaid v1",
        captured.out.splitlines()[-1],
    ]
    assert captured.out.splitlines()[-1].startswith("all 3 stored event versions in ")


def test_stored_versions_without_a_path_fail_with_one_line(
    url: str, tables: StoreConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed(url, tables, [good_events("c-1"), bad_events("c-2")]))
    assert check(url, tables) == 1
    captured = capsys.readouterr()
    assert "FAIL  OrderCreated v1: no upcaster path to v3 (missing v2 -> v3)" in captured.out
    assert "FAIL  OrderCreated v9: unknown version (newest registered is v3)" in captured.out
    assert "FAIL  Refunded v1: unknown event type" in captured.out
    assert "ok    OrderCreated v3" in captured.out
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: 3 of 6 stored event versions in ")
    assert "OrderCreated v1: no upcaster path to v3" in captured.err

    # --exact only asks for a class per stored version: v1 has one.
    assert check(url, tables, "--exact") == 1
    captured = capsys.readouterr()
    assert "ok    OrderCreated v1" in captured.out
    assert captured.err.startswith("error: 2 of 6 stored event versions")


def test_the_url_comes_from_pupsourcing_url(
    url: str, tables: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(seed(url, tables, [good_events("c-1")]))
    monkeypatch.setenv("PUPSOURCING_URL", url)
    table = ["--events-table", tables.events_table]
    assert main(["eventmap-check", "--registry", REGISTRY_MODULE, *table]) == 0


def test_usage_and_runtime_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUPSOURCING_URL", raising=False)
    assert main(["eventmap-check", "--registry", REGISTRY_MODULE]) == 2
    assert capsys.readouterr().err == "error: no database URL: pass --url or set PUPSOURCING_URL\n"

    with pytest.raises(SystemExit) as exited:
        main(["eventmap-check", "--url", "sqlite://", "--registry", "not a module"])
    assert exited.value.code == 2
    assert "expected MODULE or MODULE:ATTRIBUTE" in capsys.readouterr().err

    assert main(["eventmap-check", "--url", "sqlite://", "--registry", "no_such_module_x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot import registry module no_such_module_x")
    assert err.count("\n") == 1

    assert main(["eventmap-check", "--url", "sqlite://", "--registry", "json:dumps"]) == 1
    assert capsys.readouterr().err == "error: json:dumps is a function, not an EventRegistry\n"


def test_a_password_in_the_url_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://app:s3cr3t-pw@127.0.0.1:1/app"
    assert main(["eventmap-check", "--url", url, "--registry", REGISTRY_MODULE]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert "s3cr3t-pw" not in captured.err + captured.out
