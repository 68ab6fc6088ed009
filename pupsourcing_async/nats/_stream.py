"""Creating the publisher's stream, or checking one that exists."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext, api

from ._envelope import check_filter, subject_matches
from ._errors import StreamSettingsError

__all__ = ["StreamRequirements", "check_stream_name", "needed_subjects"]

# JetStream refuses names with whitespace, ".", "*", ">" and path separators; the rest
# of printable ASCII is fine, and nothing else is.
_STREAM_NAME = re.compile(r"[!-)+-\-0-=?-\[\]-~]{1,255}")
_RETENTIONS = tuple(policy.value for policy in api.RetentionPolicy)
_STORAGES = tuple(storage.value for storage in api.StorageType)
# JetStream's "stream name already in use with a different configuration".
_NAME_IN_USE = 10058


def check_stream_name(name: str) -> str:
    """``name`` if JetStream takes it as a stream name.

    Raises:
        ValueError: it does not; the message says why.
    """
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise ValueError(
            f"stream name must be 1 to 255 printable ASCII characters without spaces, "
            f"'.', '*', '>', '/' or '\\', got {name!r}"
        )
    return name


@dataclass(frozen=True, slots=True)
class StreamRequirements:
    """What the publisher needs of its stream, and how it makes one.

    Attributes:
        name: The stream's name.
        subjects: The subject filters the stream must take.
        duplicate_window: The shortest duplicate window that keeps republishing safe.
        retention: ``limits``, ``interest`` or ``workqueue``.
        storage: ``file`` or ``memory``.
        max_age: How long a stream it creates keeps messages (``None``: for ever).
        replicas: Replicas of a stream it creates.
    """

    name: str
    subjects: tuple[str, ...]
    duplicate_window: float
    retention: str = "limits"
    storage: str = "file"
    max_age: float | None = None
    replicas: int = 1

    def __post_init__(self) -> None:
        check_stream_name(self.name)
        if not self.subjects:
            raise ValueError("the stream needs at least one subject")
        for subject in self.subjects:
            check_filter(subject)
        if isinstance(self.duplicate_window, bool) or not self.duplicate_window > 0:
            raise ValueError(
                f"duplicate_window must be a positive number of seconds, got "
                f"{self.duplicate_window!r}"
            )
        if self.retention not in _RETENTIONS:
            raise ValueError(f"retention must be one of {_RETENTIONS}, got {self.retention!r}")
        if self.storage not in _STORAGES:
            raise ValueError(f"storage must be one of {_STORAGES}, got {self.storage!r}")
        if self.max_age is not None and not self.max_age >= self.duplicate_window:
            raise ValueError(
                f"max_age ({self.max_age}s) must not be below duplicate_window "
                f"({self.duplicate_window}s): JetStream forgets ids with the messages"
            )
        if not isinstance(self.replicas, int) or isinstance(self.replicas, bool):
            raise ValueError(f"replicas must be an int, got {self.replicas!r}")
        if not 1 <= self.replicas <= 5:
            raise ValueError(f"replicas must be between 1 and 5, got {self.replicas}")

    def config(self) -> api.StreamConfig:
        """The configuration of a stream made to these requirements."""
        return api.StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy(self.retention),
            storage=api.StorageType(self.storage),
            duplicate_window=self.duplicate_window,
            max_age=self.max_age or 0,
            num_replicas=self.replicas,
        )

    async def ensure(self, js: JetStreamContext, *, create: bool) -> tuple[api.StreamInfo, bool]:
        """Make the stream if it is missing (and ``create``), then check it; the stream's
        information, and whether it was made now.

        Raises:
            StreamSettingsError: the stream is missing and may not be made, or has a
                setting the publisher cannot work with.
        """
        made = False
        try:
            info = await js.stream_info(self.name)
        except nats.js.errors.NotFoundError:
            if not create:
                raise StreamSettingsError(
                    f"stream {self.name} does not exist (and making it is turned off)",
                    stream=self.name,
                    setting="name",
                    expected=self.name,
                    actual=None,
                ) from None
            try:
                info = await js.add_stream(self.config())
                made = True
            except nats.js.errors.BadRequestError as err:
                if err.err_code != _NAME_IN_USE:
                    raise StreamSettingsError(
                        f"JetStream would not make stream {self.name} with subjects "
                        f"{list(self.subjects)}: {err.description}",
                        stream=self.name,
                        setting="subjects",
                        expected=list(self.subjects),
                        actual=None,
                    ) from err
                # Another publisher made it meanwhile, otherwise: check what it made.
                info = await js.stream_info(self.name)
        self.check(info.config)
        return info, made

    def check(self, config: api.StreamConfig) -> None:
        """Refuse a stream that would lose, double or misplace events.

        Raises:
            StreamSettingsError: naming the setting, what the publisher needs and what
                the stream has.
        """
        name = self.name

        def refuse(setting: str, expected: object, actual: object, why: str) -> None:
            raise StreamSettingsError(
                f"stream {name} has {setting} {actual!r}, but the publisher needs "
                f"{expected!r}: {why}",
                stream=name,
                setting=setting,
                expected=expected,
                actual=actual,
            )

        subjects = list(config.subjects or [])
        missing = [s for s in self.subjects if not any(subject_matches(f, s) for f in subjects)]
        if missing:
            refuse(
                "subjects",
                list(self.subjects),
                subjects,
                f"it does not take {', '.join(missing)}",
            )
        window = float(config.duplicate_window or 0)
        if window < self.duplicate_window:
            refuse(
                "duplicate_window",
                self.duplicate_window,
                window,
                "a batch published again after a crash, an outage or a retry would be "
                "stored twice once its first attempt is older than the window; raise the "
                f"stream's window (nats stream edit {name} --dupe-window "
                f"{_duration(self.duplicate_window)}) or lower the publisher's",
            )
        retention = _value(config.retention, "limits")
        if retention != self.retention:
            refuse("retention", self.retention, retention, "consumers would see other messages")
        storage = _value(config.storage, "file")
        if storage != self.storage:
            refuse("storage", self.storage, storage, "published events could be lost")
        if config.sealed:
            refuse("sealed", False, True, "a sealed stream takes no messages")
        if config.no_ack:
            refuse("no_ack", False, True, "the publisher needs JetStream's acknowledgements")
        if config.mirror is not None:
            refuse("mirror", None, config.mirror.name, "a mirror takes no published messages")


def _value(value: object, default: str) -> str:
    if value is None:
        return default
    return str(getattr(value, "value", value))


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def needed_subjects(prefix: str, subjects: Sequence[str] | None) -> tuple[str, ...]:
    """The subject filters a publisher's stream must take: ``subjects`` or ``<prefix>.>``."""
    return tuple(subjects) if subjects is not None else (f"{prefix}.>",)
