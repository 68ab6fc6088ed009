"""The documented public surface imports, and has the documented shape."""

from __future__ import annotations

import importlib
import inspect

import pytest

import pupsourcing_async
from pupsourcing_async import es, store
from pupsourcing_async.projection import ProcessorConfig

PUBLIC_MODULES = [
    "pupsourcing_async",
    "pupsourcing_async.es",
    "pupsourcing_async.errors",
    "pupsourcing_async.store",
    "pupsourcing_async.database",
    "pupsourcing_async.migrations",
    "pupsourcing_async.snapshots",
    "pupsourcing_async.log",
    "pupsourcing_async.observe",
    "pupsourcing_async.projection",
    "pupsourcing_async.eventmap",
    "pupsourcing_async.testing",
    "pupsourcing_async.cli",
    "pupsourcing_async.adapters.postgres",
    "pupsourcing_async.adapters.sqlite",
    "pupsourcing_async.adapters.mysql",
    "pupsourcing_async.prometheus",
    "pupsourcing_async.otel",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, f"{name} has an empty __all__"
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public} is in __all__ but missing"


def test_the_documented_top_level_names() -> None:
    for name in (
        "connect",
        "Database",
        "StoreConfig",
        "default_store_config",
        "EventStore",
        "Logger",
        "es",
        "PupsourcingError",
        "InvalidEventError",
        "NoEventsError",
        "OptimisticConcurrencyError",
        "DuplicateEventError",
        "EventMappingError",
        "StoreUnavailableError",
        "SchemaError",
        "UnsupportedURLError",
        "ProjectionError",
        "ProjectionStoppedError",
    ):
        assert name in pupsourcing_async.__all__
    for name in ("Event", "PersistedEvent", "Stream", "AppendResult", "Any", "NoStream", "Exact"):
        assert name in es.__all__


def test_the_error_tree() -> None:
    errors = pupsourcing_async
    assert issubclass(errors.InvalidEventError, (errors.PupsourcingError, ValueError))
    assert issubclass(errors.NoEventsError, (errors.PupsourcingError, ValueError))
    assert issubclass(errors.DuplicateEventError, errors.OptimisticConcurrencyError)
    assert issubclass(errors.EventMappingError, LookupError)
    assert issubclass(errors.StoreUnavailableError, ConnectionError)
    assert issubclass(errors.UnsupportedURLError, ValueError)
    assert issubclass(errors.ProjectionStoppedError, errors.ProjectionError)
    for name in ("SchemaError", "OptimisticConcurrencyError", "ProjectionError"):
        assert issubclass(getattr(errors, name), errors.PupsourcingError)


def test_the_store_protocol_has_the_six_methods() -> None:
    methods = {
        "append": ["tx", "expected", "events"],
        "read_events": ["tx", "from_position", "limit"],
        "latest_global_position": ["tx"],
        "read_aggregate_stream": [
            "tx",
            "bounded_context",
            "aggregate_type",
            "aggregate_id",
            "from_version",
            "to_version",
        ],
        "get_checkpoint": ["tx", "projection_name"],
        "update_checkpoint": ["tx", "projection_name", "position"],
    }
    for name, parameters in methods.items():
        signature = inspect.signature(getattr(store.EventStore, name))
        assert list(signature.parameters)[1:] == parameters, name
    assert inspect.signature(store.EventStore.read_events).parameters["limit"].default == 100


def test_options_are_keyword_only() -> None:
    connect = inspect.signature(pupsourcing_async.connect)
    assert [p.name for p in connect.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD] == [
        "url"
    ]
    for parameter in ("store_config", "min_size", "max_size", "connect_timeout", "pool_options"):
        assert connect.parameters[parameter].kind is inspect.Parameter.KEYWORD_ONLY
    event = inspect.signature(es.Event)
    assert event.parameters["event_id"].kind is inspect.Parameter.KEYWORD_ONLY


def test_config_values_are_frozen() -> None:
    import dataclasses

    values = (
        (pupsourcing_async.StoreConfig(), "events_table"),
        (ProcessorConfig(), "batch_size"),
        (es.Exact(1), "version"),
    )
    for value, field in values:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, 2)
