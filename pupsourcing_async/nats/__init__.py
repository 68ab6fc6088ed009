"""The event log in NATS JetStream: a publisher that runs as a projection, and a reader.

Install with ``pip install 'pupsourcing-async[nats]'`` (nats-py). Importing
``pupsourcing_async`` alone never imports this package or nats-py.

```python
from pupsourcing_async import nats as pnats

client = await pnats.connect("nats://127.0.0.1:4222")
async with pnats.Publisher(client, "EVENTS") as publisher:
    await db.processor(ProcessorConfig(batch_size=500)).run(publisher)

# In another service:
async with pnats.subscribe(client, "EVENTS", "search-index") as events:
    async for event in events:             # es.PersistedEvent, byte for byte
        ...
```

Errors (all :class:`~pupsourcing_async.PupsourcingError`)::

    NatsUnavailableError(ConnectionError)   connect() got no answer in time
    StreamSettingsError(ValueError)         the stream is missing or set up wrongly
    PublishError                            an event was not published; batch rolled back
    ├── PublishTimeoutError(TimeoutError)   no acknowledgement in time (retried)
    ├── PublishUnavailableError             no stream answered (retried)
    ├── PublishOrderError                   a late message of an interrupted attempt (retried)
    └── PublishRejectedError                refused for good (too large, wrong subject)
    MessageFormatError(ValueError)          a message that is not a published event
"""

from __future__ import annotations

try:
    import nats as _nats_py  # noqa: F401
except ModuleNotFoundError as err:  # pragma: no cover - depends on the installation
    if err.name != "nats":
        raise
    raise ModuleNotFoundError(
        "pupsourcing_async.nats needs nats-py: pip install 'pupsourcing-async[nats]'",
        name="nats",
    ) from err

from ._connect import connect
from ._envelope import (
    HEADERS,
    event_from_message,
    event_headers,
    subject_token,
)
from ._errors import (
    MessageFormatError,
    NatsUnavailableError,
    PublishError,
    PublishOrderError,
    PublishRejectedError,
    PublishTimeoutError,
    PublishUnavailableError,
    StreamSettingsError,
)
from ._publisher import Publisher
from ._subscribe import Subscription, subscribe

__all__ = [
    "HEADERS",
    "MessageFormatError",
    "NatsUnavailableError",
    "PublishError",
    "PublishOrderError",
    "PublishRejectedError",
    "PublishTimeoutError",
    "PublishUnavailableError",
    "Publisher",
    "StreamSettingsError",
    "Subscription",
    "connect",
    "event_from_message",
    "event_headers",
    "subject_token",
    "subscribe",
]
