"""Reading events back from JetStream: a durable consumer with explicit acks."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from .. import es
from .._async import shielded
from ..log import Logger, get_logger
from ._envelope import check_filter, event_from_message
from ._stream import check_stream_name

__all__ = ["Subscription", "subscribe"]

# Troubles a fetch outlives: NATS restarting, a connection being re-established.
_PASSING = (
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
)


def subscribe(
    client: Client,
    stream: str,
    durable: str,
    *,
    subject: str | None = None,
    batch_size: int = 100,
    ack_wait: float = 30.0,
    idle_wait: float = 5.0,
    logger: Logger | None = None,
) -> Subscription:
    """Read the events of ``stream`` through the durable consumer ``durable``.

    ```python
    async with pupsourcing_async.nats.subscribe(client, "EVENTS", "search-index") as events:
        async for event in events:          # es.PersistedEvent, as the database has it
            ...
    ```

    The consumer is made on first use (delivering from the stream's first message) and
    remembers what was acknowledged, so a restarted reader goes on where it stopped. An
    event is acknowledged once the loop body that got it is done: when the loop asks for
    the next one, or when the block exits without an error. On an error (or a
    cancellation) the event in hand and those fetched but not yet handed out are given
    back for redelivery. Delivery is at least once: keep the events' ``global_position``
    in the read model, in the same transaction, and skip what is not beyond it.

    Args:
        client: A connected NATS client; the caller closes it.
        stream: The stream the publisher writes.
        durable: The consumer's name: one per reader (read model) of the stream.
        subject: Deliver only the subjects this filter takes (for example
            ``"events.Billing.>"``); all of the stream's when ``None``.
        batch_size: Messages fetched per request.
        ack_wait: Seconds JetStream waits for an acknowledgement before redelivering.
        idle_wait: Seconds a fetch waits when nothing is there, before asking again.
        logger: Where it logs; the ``pupsourcing_async.nats`` logger by default.
    """
    return Subscription(
        client,
        stream,
        durable,
        subject=subject,
        batch_size=batch_size,
        ack_wait=ack_wait,
        idle_wait=idle_wait,
        logger=logger,
    )


class Subscription:
    """The events of one durable consumer; made by :func:`subscribe`.

    An async iterator of :class:`es.PersistedEvent`, and an async context manager that
    settles the last event and unsubscribes on exit. Used without ``async with``, call
    :meth:`aclose` when done.
    """

    def __init__(
        self,
        client: Client,
        stream: str,
        durable: str,
        *,
        subject: str | None,
        batch_size: int,
        ack_wait: float,
        idle_wait: float,
        logger: Logger | None,
    ) -> None:
        check_stream_name(stream)
        check_stream_name(durable)
        if subject is not None:
            check_filter(subject)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int of at least 1, got {batch_size!r}")
        for what, value in (("ack_wait", ack_wait), ("idle_wait", idle_wait)):
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
        self._client = client
        self._stream = stream
        self._durable = durable
        self._subject = subject
        self._batch_size = batch_size
        self._ack_wait = float(ack_wait)
        self._idle_wait = float(idle_wait)
        self._log = get_logger(logger, "pupsourcing_async.nats")
        self._pull: JetStreamContext.PullSubscription | None = None
        self._fetched: deque[Msg] = deque()
        self._current: Msg | None = None
        self._closed = False

    @property
    def message(self) -> Msg | None:
        """The NATS message of the event last handed out, not yet acknowledged (to
        ``term()`` one that cannot be read, for example)."""
        return self._current

    async def _open(self) -> JetStreamContext.PullSubscription:
        if self._closed:
            raise RuntimeError("this subscription is closed")
        if self._pull is not None:
            return self._pull
        js = self._client.jetstream()
        try:
            info = await js.consumer_info(self._stream, self._durable)
        except nats.js.errors.NotFoundError:
            config = api.ConsumerConfig(
                name=self._durable,
                durable_name=self._durable,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                filter_subject=self._subject,
            )
            info = await js.add_consumer(self._stream, config)
            self._log.info("consumer made", stream=self._stream, consumer=self._durable)
        found = info.config.filter_subject or None
        if found != self._subject:
            raise ValueError(
                f"consumer {self._durable} of stream {self._stream} filters "
                f"{found or 'nothing'}, not {self._subject or 'nothing'}: delete it "
                "or use another durable name"
            )
        self._pull = await js.pull_subscribe_bind(durable=self._durable, stream=self._stream)
        return self._pull

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> es.PersistedEvent:
        pull = await self._open()
        current, self._current = self._current, None
        if current is not None:
            await current.ack()
        while not self._fetched:
            try:
                self._fetched.extend(await pull.fetch(self._batch_size, timeout=self._idle_wait))
            except nats.errors.TimeoutError:
                continue
            except _PASSING as err:
                self._log.error(
                    "fetching from JetStream failed; trying again",
                    stream=self._stream,
                    consumer=self._durable,
                    error=f"{type(err).__name__}: {err}",
                )
                await asyncio.sleep(min(self._idle_wait, 1.0))
        message = self._fetched.popleft()
        self._current = message
        return event_from_message(
            message.headers,
            message.data,
            subject=message.subject,
            sequence=message.metadata.sequence.stream,
        )

    async def aclose(self, *, ack_current: bool = False) -> None:
        """Give back what was fetched but not handed out, settle the event in hand
        (acknowledged when ``ack_current``, else given back), and unsubscribe."""
        if self._closed:
            return
        self._closed = True
        current, self._current = self._current, None
        given_back = list(self._fetched)
        self._fetched.clear()
        pull, self._pull = self._pull, None
        await shielded(self._settle(current, given_back, ack_current, pull))

    async def _settle(
        self,
        current: Msg | None,
        given_back: list[Msg],
        ack_current: bool,
        pull: JetStreamContext.PullSubscription | None,
    ) -> None:
        if self._client.is_closed:
            return
        try:
            if current is not None:
                await (current.ack() if ack_current else current.nak())
            for message in given_back:
                await message.nak()
            if pull is not None:
                await pull.unsubscribe()
        except nats.errors.Error as err:
            # What is not settled is redelivered after ack_wait all the same.
            self._log.error(
                "settling messages on close failed",
                stream=self._stream,
                consumer=self._durable,
                error=f"{type(err).__name__}: {err}",
            )

    async def __aenter__(self) -> Subscription:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose(ack_current=exc_type is None)
