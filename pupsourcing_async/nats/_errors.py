"""What can go wrong between the event store and JetStream."""

from __future__ import annotations

from ..errors import PupsourcingError

__all__ = [
    "MessageFormatError",
    "NatsUnavailableError",
    "PublishError",
    "PublishOrderError",
    "PublishRejectedError",
    "PublishTimeoutError",
    "PublishUnavailableError",
    "StreamSettingsError",
]


class NatsUnavailableError(PupsourcingError, ConnectionError):
    """NATS did not answer in time; the message names the servers, never a password.

    Attributes:
        servers: The servers tried, without credentials.
    """

    def __init__(self, message: str, *, servers: list[str]) -> None:
        self.servers = servers
        super().__init__(message)


class StreamSettingsError(PupsourcingError, ValueError):
    """The stream exists with a setting the publisher cannot work with, or is missing.

    Nothing was published. Change the stream (``nats stream edit``) or the publisher.

    Attributes:
        stream: The stream's name.
        setting: The setting at fault (``duplicate_window``, ``subjects``, ...).
        expected: What the publisher needs.
        actual: What the stream has.
    """

    def __init__(
        self, message: str, *, stream: str, setting: str, expected: object, actual: object
    ) -> None:
        self.stream = stream
        self.setting = setting
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class PublishError(PupsourcingError):
    """An event could not be published; its batch rolled back and the checkpoint stayed.

    Attributes:
        global_position: The event's position in the log.
        subject: The subject it was published to.
    """

    def __init__(self, message: str, *, global_position: int, subject: str) -> None:
        self.global_position = global_position
        self.subject = subject
        super().__init__(message)


class PublishTimeoutError(PublishError, TimeoutError):
    """JetStream did not acknowledge an event in time (NATS down, restarting or slow).

    The publisher retries the batch: whatever JetStream did store is dropped as a
    duplicate when it is published again.
    """


class PublishUnavailableError(PublishError, ConnectionError):
    """No stream took an event: JetStream is starting, or the stream is gone. Retried."""


class PublishOrderError(PublishError):
    """JetStream refused an event because the event before it is not the stream's last
    message: a message of an interrupted attempt arrived late, or something else writes
    into the stream. The publisher retries the batch from its first event."""


class PublishRejectedError(PublishError):
    """JetStream refused an event for good (too large, the stream sealed, ...).

    Attributes:
        code: The JetStream error code (``err_code``), when it gave one.
    """

    def __init__(
        self, message: str, *, global_position: int, subject: str, code: int | None
    ) -> None:
        self.code = code
        super().__init__(message, global_position=global_position, subject=subject)


class MessageFormatError(PupsourcingError, ValueError):
    """A JetStream message is not an event this library published: a header is missing
    or malformed. The message is left unacknowledged.

    Attributes:
        subject: The message's subject.
        sequence: Its stream sequence, when known.
        header: The header at fault.
    """

    def __init__(self, message: str, *, subject: str, sequence: int | None, header: str) -> None:
        self.subject = subject
        self.sequence = sequence
        self.header = header
        super().__init__(message)
