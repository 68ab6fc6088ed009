"""The publisher: a projection that copies the log into a JetStream stream, exactly once.

Run by the projection processor like any projection, it has what they have: its own
checkpoint and lease, gap-safe reads in position order, scope filters, retries. Each
batch is published in order with the acknowledgements pipelined, and the checkpoint
commits only once JetStream has acknowledged every event of the batch.

Why exactly once: an event is in the stream before the checkpoint passes it, so nothing
is skipped; and the only events that can be published again are those of the batch in
flight when the publisher stopped (crash, outage, retry), which JetStream drops as
duplicates by their ``Nats-Msg-Id`` (the event id) as long as the first attempt is
younger than the stream's duplicate window. Why in order: every message but a batch's
first says which event must be the stream's last (``Nats-Expected-Last-Msg-Id``), so a
message of an interrupted attempt that arrives late is refused instead of stored out of
place, and the batch is tried again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from .. import es
from .._async import shielded
from ..log import Logger, get_logger
from ._envelope import (
    EXPECTED_LAST_MSG_ID,
    MSG_ID,
    check_prefix,
    check_subject,
    default_subject,
    event_headers,
    headers_size,
    subject_matches,
)
from ._errors import (
    PublishError,
    PublishOrderError,
    PublishRejectedError,
    PublishTimeoutError,
    PublishUnavailableError,
)
from ._stream import StreamRequirements, needed_subjects

__all__ = ["Publisher"]

# JetStream's "wrong last msg ID": the message's predecessor is not the stream's last.
_WRONG_LAST_MSG_ID = 10070
# Bytes the Nats-Expected-Last-Msg-Id header adds to a message: name, UUID, separators.
_CHAIN_HEADER_SIZE = len(EXPECTED_LAST_MSG_ID) + 36 + 4

#: Failures that pass: the batch rolls back and is tried again after a pause.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    PublishTimeoutError,
    PublishOrderError,
    PublishUnavailableError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)

Message = tuple[str, dict[str, str], bytes]


class Publisher:
    """Publishes the event log to a JetStream stream; run it as a projection.

    ```python
    client = await pupsourcing_async.nats.connect("nats://127.0.0.1:4222")
    async with Publisher(client, "EVENTS") as publisher:     # makes or checks the stream
        await db.processor(ProcessorConfig(batch_size=500)).run(publisher)
    ```

    Each event goes to ``<subject_prefix>.<bounded_context>.<aggregate_type>.<event_type>``
    (each name escaped into one token, see :func:`subject_token`), its payload as the body
    and its envelope in headers (see :func:`event_headers`), with ``Nats-Msg-Id`` = the
    event id. The stream must be written by this publisher alone.

    Args:
        client: A connected NATS client (see :func:`connect`); the caller closes it.
        stream: The stream's name.
        name: The checkpoint's name (one per stream the log is published to).
        subject_prefix: The first token(s) of every subject.
        subject: Makes an event's subject instead (its tokens are checked, and it must be
            one the stream takes).
        stream_subjects: The subject filters the stream takes; ``<subject_prefix>.>`` by
            default.
        aggregate_types: Publish only these aggregate types (empty: all).
        bounded_contexts: Publish only these bounded contexts (empty: all).
        duplicate_window: Seconds within which JetStream must recognise a republished
            event. Only the batch in flight when the publisher stopped is ever published
            again, when it starts again, so this is the longest stop (crash and restart,
            an outage of NATS or of the database) after which nothing is doubled. A stream
            this publisher makes gets this window; an existing stream with a shorter one
            is refused.
        ack_timeout: Seconds to wait for a batch's acknowledgements after its last
            publish before the batch is tried again.
        create_stream: Make the stream when it does not exist (else refuse to start).
        retention: The stream's retention policy: ``limits`` (keep messages by age and
            size, the fan-out log), ``interest`` or ``workqueue``; an existing stream must
            have this one.
        storage: ``file`` or ``memory``; an existing stream must have this one.
        max_age: How long a stream it makes keeps messages; ``None`` keeps them for ever.
        replicas: Replicas of a stream it makes.
        ordered: Make JetStream keep the events in position order: every message but a
            batch's first names the event before it (``Nats-Expected-Last-Msg-Id``). This
            needs the publisher to be the stream's only writer; turn it off when several
            publishers write into one stream (their messages interleave), which leaves the
            order of one connection's messages, barring a reconnect in mid-batch.
        logger: Where it logs; the ``pupsourcing_async.nats`` logger by default.
    """

    #: Failures a batch is retried after (the processor backs off between attempts).
    retryable_errors: tuple[type[BaseException], ...] = RETRYABLE_ERRORS

    def __init__(
        self,
        client: Client,
        stream: str,
        *,
        name: str = "nats_publisher",
        subject_prefix: str = "events",
        subject: Callable[[es.PersistedEvent], str] | None = None,
        stream_subjects: Sequence[str] | None = None,
        aggregate_types: Sequence[str] = (),
        bounded_contexts: Sequence[str] = (),
        duplicate_window: float = 120.0,
        ack_timeout: float = 10.0,
        create_stream: bool = True,
        retention: str = "limits",
        storage: str = "file",
        max_age: float | None = None,
        replicas: int = 1,
        ordered: bool = True,
        logger: Logger | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isinstance(ack_timeout, bool) or not ack_timeout > 0:
            raise ValueError(
                f"ack_timeout must be a positive number of seconds, got {ack_timeout!r}"
            )
        check_prefix(subject_prefix)
        self._client = client
        self._requirements = StreamRequirements(
            name=stream,
            subjects=needed_subjects(subject_prefix, stream_subjects),
            duplicate_window=duplicate_window,
            retention=retention,
            storage=storage,
            max_age=max_age,
            replicas=replicas,
        )
        self._name = name
        self._subject = subject or default_subject(subject_prefix)
        # A subject the caller makes is checked against the stream before it is sent; the
        # default one is inside <prefix>.> by construction.
        self._check_subjects = subject is not None
        self._aggregate_types = tuple(aggregate_types)
        self._bounded_contexts = tuple(bounded_contexts)
        self._ack_timeout = float(ack_timeout)
        self._create = create_stream
        self._ordered = ordered
        self._log = get_logger(logger, "pupsourcing_async.nats")
        self._ready = False
        self._replies: Subscription | None = None
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._sent = 0
        self.published = 0
        """Events JetStream stored from this publisher (since it was made)."""
        self.duplicates = 0
        """Events published again that JetStream recognised and dropped."""

    @property
    def name(self) -> str:
        """The checkpoint's name."""
        return self._name

    @property
    def stream(self) -> str:
        """The stream's name."""
        return self._requirements.name

    @property
    def aggregate_types(self) -> tuple[str, ...]:
        """The aggregate types published (empty: all)."""
        return self._aggregate_types

    @property
    def bounded_contexts(self) -> tuple[str, ...]:
        """The bounded contexts published (empty: all)."""
        return self._bounded_contexts

    @property
    def duplicate_window(self) -> float:
        """The duplicate window the stream must have, in seconds."""
        return self._requirements.duplicate_window

    async def ensure_stream(self) -> api.StreamInfo:
        """Make the stream if it is missing, check it, and get ready to publish.

        Called on entering ``async with``, else before the first batch.

        Raises:
            StreamSettingsError: the stream is missing and may not be made, or has a
                setting the publisher cannot work with (the error names it, with what
                the publisher needs and what the stream has).
        """
        info, made = await self._requirements.ensure(self._client.jetstream(), create=self._create)
        if self._replies is None:
            self._inbox = self._client.new_inbox()
            self._replies = await self._client.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        self._ready = True
        self._log.info(
            "stream made" if made else "stream checked",
            stream=self.stream,
            subjects=",".join(info.config.subjects or []),
            duplicate_window=info.config.duplicate_window,
            messages=info.state.messages,
        )
        return info

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        """Publish one event and wait for its acknowledgement."""
        await self.handle_batch(tx, [event])

    async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
        """Publish ``events`` in order, acknowledgements pipelined, and return once
        JetStream has stored every one (or recognised it as already stored).

        Raises:
            PublishTimeoutError: not every acknowledgement came within ``ack_timeout``.
            PublishOrderError: JetStream refused an event whose predecessor is not the
                stream's last message.
            PublishUnavailableError: no stream answered, or JetStream is starting.
            PublishRejectedError: an event cannot be published (too large, a subject the
                stream does not take, the stream refused it).
        """
        del tx
        if not events:
            return
        if not self._ready:
            await self.ensure_stream()
        messages = [self._message(event) for event in events]
        self._log.debug(
            "publishing",
            stream=self.stream,
            events=len(events),
            first=events[0].global_position,
            last=events[-1].global_position,
        )
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            previous: str | None = None
            for subject, headers, payload in messages:
                if previous is not None:
                    headers[EXPECTED_LAST_MSG_ID] = previous
                if self._ordered:
                    previous = headers[MSG_ID]
                self._sent += 1
                token = str(self._sent)
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[token] = future
                tokens.append(token)
                futures.append(future)
                await self._client.publish(
                    subject, payload, reply=f"{self._inbox}.{token}", headers=headers
                )
            pending = [future for future in futures if not future.done()]
            if pending:
                await asyncio.wait(pending, timeout=self._ack_timeout)
            self._settle(events, messages, futures)
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
            for future in futures:
                future.cancel()

    def _message(self, event: es.PersistedEvent) -> Message:
        subject = self._subject(event)
        if self._check_subjects:
            try:
                check_subject(subject)
            except ValueError as err:
                raise self._rejected(event, subject, f"its subject is not valid: {err}") from None
            if not any(subject_matches(f, subject) for f in self._requirements.subjects):
                raise self._rejected(
                    event,
                    subject,
                    f"stream {self.stream} does not take the subject (it takes "
                    f"{', '.join(self._requirements.subjects)})",
                )
        headers = event_headers(event)
        size = headers_size(headers) + _CHAIN_HEADER_SIZE + len(event.payload)
        limit = self._client.max_payload
        if size > limit:
            raise self._rejected(
                event,
                subject,
                f"it takes {size} bytes with its headers and the NATS server takes at "
                f"most {limit} per message (max_payload)",
            )
        return subject, headers, event.payload

    def _rejected(
        self, event: es.PersistedEvent, subject: str, why: str, code: int | None = None
    ) -> PublishRejectedError:
        return PublishRejectedError(
            f"event {event.global_position} ({event.event_type}) cannot be published: {why}",
            global_position=event.global_position,
            subject=subject,
            code=code,
        )

    def _settle(
        self,
        events: Sequence[es.PersistedEvent],
        messages: Sequence[Message],
        futures: Sequence[asyncio.Future[Msg]],
    ) -> None:
        """Read the acknowledgements in order; raise for the first event not stored."""
        stored = duplicates = 0
        for index, (event, (subject, _, _), future) in enumerate(
            zip(events, messages, futures, strict=True)
        ):
            if not future.done():
                raise PublishTimeoutError(
                    f"JetStream acknowledged {index} of {len(events)} event(s) within "
                    f"{self._ack_timeout:g}s; event {event.global_position} and those after "
                    "it are published again",
                    global_position=event.global_position,
                    subject=subject,
                )
            failure, duplicate = self._reply_outcome(event, subject, future.result())
            if failure is not None:
                self.published += stored
                self.duplicates += duplicates
                raise failure
            if duplicate:
                duplicates += 1
            else:
                stored += 1
        self.published += stored
        self.duplicates += duplicates

    def _reply_outcome(
        self, event: es.PersistedEvent, subject: str, reply: Msg
    ) -> tuple[PublishError | None, bool]:
        """What one acknowledgement says: the failure it reports, or whether the event
        was a duplicate."""
        position = event.global_position
        if reply.headers and reply.headers.get("Status") == "503":
            return PublishUnavailableError(
                f"no stream took event {position} on {subject} (JetStream is starting, "
                f"or stream {self.stream} is gone)",
                global_position=position,
                subject=subject,
            ), False
        try:
            answer = json.loads(reply.data)
        except ValueError:
            return self._rejected(event, subject, f"JetStream answered {reply.data[:200]!r}"), False
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is not None:
            code = error.get("err_code")
            description = error.get("description", "")
            if code == _WRONG_LAST_MSG_ID:
                return PublishOrderError(
                    f"JetStream refused event {position}: the event before it is not the "
                    f"stream's last message ({description}); the batch is published again",
                    global_position=position,
                    subject=subject,
                ), False
            if error.get("code") == 503:
                return PublishUnavailableError(
                    f"JetStream did not take event {position}: {description}",
                    global_position=position,
                    subject=subject,
                ), False
            return self._rejected(
                event, subject, f"JetStream refused it: {description}", code
            ), False
        if answer.get("stream") != self.stream:
            return self._rejected(
                event, subject, f"stream {answer.get('stream')!r} took it, not {self.stream}"
            ), False
        return None, bool(answer.get("duplicate"))

    async def _on_reply(self, reply: Msg) -> None:
        token = reply.subject[len(self._inbox) + 1 :]
        future = self._waiting.pop(token, None)
        # A reply to an abandoned attempt finds no one waiting.
        if future is not None and not future.done():
            future.set_result(reply)

    async def aclose(self) -> None:
        """Stop listening for acknowledgements. The client stays open."""
        replies, self._replies = self._replies, None
        self._ready = False
        if replies is not None and not self._client.is_closed:
            await shielded(replies.unsubscribe())

    async def __aenter__(self) -> Publisher:
        await self.ensure_stream()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Publisher {self._name} -> stream {self.stream}>"
