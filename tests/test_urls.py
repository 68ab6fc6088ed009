"""Database URLs: parsed however people paste them, refused with one clear line, and never
printed with their password."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import pupsourcing_async
from pupsourcing_async import StoreUnavailableError, UnsupportedURLError
from pupsourcing_async._url import parse_url, redact_url

from .conftest import backend_url

SECRET = "s3c#r?e/t@x"


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_an_unencoded_password_is_parsed_and_never_shown(scheme: str) -> None:
    url = parse_url(f"{scheme}://app:{SECRET}@db.internal:5433/events?x=1")
    assert url.password == SECRET
    assert url.user == "app"
    assert url.host == "db.internal"
    assert url.port == 5433
    assert url.database == "events"
    assert url.location == "db.internal:5433/events"
    for shown in (str(url), redact_url(f"{scheme}://app:{SECRET}@db.internal:5433/events")):
        assert "s3c" not in shown
        assert "***" in shown


def test_a_percent_encoded_password_is_decoded_and_reencoded_for_the_driver() -> None:
    url = parse_url("postgresql://app:p%40ss%2Fw@h/db")
    assert url.password == "p@ss/w"
    assert url.url == "postgresql://app:p%40ss%2Fw@h/db"
    assert "p%40ss" not in str(url)


def test_a_multi_host_postgres_url_is_accepted() -> None:
    url = parse_url("postgresql://app:pw@h1:5432,h2:5433,[::1]:5434/db?target_session_attrs=any")
    assert [str(host) for host in url.hosts] == ["h1:5432", "h2:5433", "[::1]:5434"]
    assert url.location == "h1:5432,h2:5433,[::1]:5434/db"
    assert url.url.startswith("postgresql://app:pw@h1:5432,h2:5433,[::1]:5434/db?")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@h:99999/db",
        f"postgresql://app:{SECRET}@h:port/db",
        f"mysql://app:{SECRET}@h:-1/db",
        f"mysql://app:{SECRET}@h1,h2/db",
        f"mysql://app:{SECRET}@h/db?charset=latin1",
        f"mysql://app:{SECRET}@h/db?local_infile=1",
        f"mysql://app:{SECRET}@h/db?ssl_verify_cert=maybe",
        "sqlite://host/x.db",
        f"oracle://app:{SECRET}@h/db",
    ],
)
async def test_a_url_that_cannot_work_is_refused_in_one_line_without_the_password(
    url: str,
) -> None:
    with pytest.raises(UnsupportedURLError) as caught:
        await pupsourcing_async.connect(url)
    message = str(caught.value)
    assert "s3c" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@h:99999/db",
        f"mysql://app:{SECRET}@h/db?bogus=1",
    ],
)
def test_the_cli_exits_2_on_a_bad_url_and_never_prints_the_password(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", "projections", "status", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "s3c" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_wrong_password_with_special_characters_is_never_shown(
    backend: str, containers: object, tmp_path: object
) -> None:
    base = parse_url(backend_url(backend, containers, tmp_path))  # type: ignore[arg-type]
    host = base.hosts[0]
    scheme = "postgresql" if backend == "postgres" else "mysql"
    url = f"{scheme}://nobody_here:{SECRET}@{host}/{base.database}"
    with pytest.raises((StoreUnavailableError, UnsupportedURLError)) as caught:
        await asyncio.wait_for(pupsourcing_async.connect(url, connect_timeout=5), 20)
    assert "s3c" not in str(caught.value)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_postgres_option_the_server_refuses_is_a_url_error(
    backend: str, containers: object, tmp_path: object
) -> None:
    base = backend_url(backend, containers, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedURLError, match="no_such_setting"):
        await pupsourcing_async.connect(f"{base}?no_such_setting=1")
    # An option asyncpg takes is passed through.
    async with (
        pupsourcing_async.connect(f"{base}?application_name=pups_test") as db,
        db.transaction() as tx,
    ):
        name = await tx.fetchval("SHOW application_name")
    assert name == "pups_test"


@pytest.mark.parametrize("backend", ["mysql"])
async def test_mysql_url_options_are_passed_to_the_driver(
    backend: str, containers: object, tmp_path: object
) -> None:
    base = backend_url(backend, containers, tmp_path)  # type: ignore[arg-type]
    url = f"{base}?charset=utf8mb4&program_name=pups_test&connect_timeout=5"
    async with pupsourcing_async.connect(url) as db, db.transaction() as tx, tx.cursor() as cursor:
        await cursor.execute("SELECT 1")
        assert (await cursor.fetchall())[0][0] == 1
