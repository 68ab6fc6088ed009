"""How a processor runs: batch size, partition, polling, retries, handler failures."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..log import Logger
from .partitioning import HashPartitionStrategy, PartitionStrategy

__all__ = ["OnFailure", "ProcessorConfig", "RunMode"]


class RunMode(enum.Enum):
    """When a processor returns."""

    #: Run until cancelled: back off when idle, wake early on new events.
    CONTINUOUS = "continuous"
    #: Return once caught up: nothing more to read and no hole pending (tests, backfills).
    ONE_OFF = "one_off"


class OnFailure(enum.Enum):
    """What a processor does with an event its handler keeps failing on."""

    #: Stop: raise ``ProjectionError``, the batch rolled back. A bug or bad data needs a
    #: person; the projection resumes at that event once it runs again.
    STOP = "stop"
    #: Park the event (``<events_table>_parked``), move the checkpoint past it in the same
    #: transaction, and go on with the events after it.
    PARK = "park"


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Settings of one projection processor. Durations are in seconds.

    Attributes:
        batch_size: Events read and handled per transaction.
        partition_key: This worker's partition, from 0 to ``total_partitions - 1``.
        total_partitions: How many workers split the projection.
        partition_strategy: Which partition handles which aggregate.
        poll_interval: The first wait when idle, and the wait while a hole is pending.
        max_poll_interval: The longest wait when idle; a lost wake-up costs at most this.
        poll_backoff_factor: How much the idle wait grows each time nothing is found.
        run_mode: Run until cancelled, or return once caught up.
        logger: Where the processor logs; the ``pupsourcing_async.projection`` logger
            by default.
        retry_transient: Retry a batch that failed on a lost connection, a deadlock or
            another passing database trouble, instead of stopping.
        retry_initial_delay: The first wait before such a retry.
        retry_max_delay: The longest wait between retries. The backoff doubles up to it,
            and each wait is jittered to between half and all of that, so workers that
            failed together do not retry in lock-step.
        max_retries: Consecutive failed attempts after which the processor gives up with
            ``ProjectionStoppedError``; ``None`` retries forever.
        lease_poll_interval: How often a worker waiting for another's lease tries again.
        on_failure: What to do once the handler has failed ``handler_attempts`` times on
            one event: ``OnFailure.STOP`` (raise ``ProjectionError``) or
            ``OnFailure.PARK`` (record the event as parked and go on). Passing database
            troubles and the projection's ``retryable_errors`` are retried instead, never
            parked.
        handler_attempts: Tries of a failing event, each a replay of its batch (rolled
            back every time, replayed at once), before ``on_failure`` applies.
    """

    batch_size: int = 100
    partition_key: int = 0
    total_partitions: int = 1
    partition_strategy: PartitionStrategy = field(default_factory=HashPartitionStrategy)
    poll_interval: float = 0.1
    max_poll_interval: float = 5.0
    poll_backoff_factor: float = 2.0
    run_mode: RunMode = RunMode.CONTINUOUS
    logger: Logger | None = None
    retry_transient: bool = field(default=True, kw_only=True)
    retry_initial_delay: float = field(default=0.1, kw_only=True)
    retry_max_delay: float = field(default=30.0, kw_only=True)
    max_retries: int | None = field(default=None, kw_only=True)
    lease_poll_interval: float = field(default=0.5, kw_only=True)
    on_failure: OnFailure = field(default=OnFailure.STOP, kw_only=True)
    handler_attempts: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        def whole(name: str, value: object, low: int) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int of at least {low}, got {value!r}")

        def seconds(name: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

        whole("batch_size", self.batch_size, 1)
        whole("total_partitions", self.total_partitions, 1)
        whole("partition_key", self.partition_key, 0)
        if self.partition_key >= self.total_partitions:
            raise ValueError(
                f"partition_key must be below total_partitions ({self.total_partitions}), "
                f"got {self.partition_key}"
            )
        for name in (
            "poll_interval",
            "max_poll_interval",
            "retry_initial_delay",
            "retry_max_delay",
            "lease_poll_interval",
        ):
            seconds(name, getattr(self, name))
        if self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"max_poll_interval ({self.max_poll_interval}) must not be below "
                f"poll_interval ({self.poll_interval})"
            )
        if isinstance(self.poll_backoff_factor, bool) or not self.poll_backoff_factor >= 1:
            raise ValueError(
                f"poll_backoff_factor must be at least 1, got {self.poll_backoff_factor!r}"
            )
        if not isinstance(self.run_mode, RunMode):
            raise ValueError(f"run_mode must be a RunMode, got {self.run_mode!r}")
        if self.max_retries is not None:
            whole("max_retries", self.max_retries, 0)
        if not isinstance(self.on_failure, OnFailure):
            raise ValueError(f"on_failure must be an OnFailure, got {self.on_failure!r}")
        whole("handler_attempts", self.handler_attempts, 1)
        if not callable(getattr(self.partition_strategy, "should_process", None)):
            raise ValueError(
                f"partition_strategy must have should_process(), got {self.partition_strategy!r}"
            )

    def checkpoint_name(self, projection_name: str) -> str:
        """The checkpoint row this worker writes: the name, or ``"<name>_p<key>"``."""
        if self.total_partitions <= 1:
            return projection_name
        return f"{projection_name}_p{self.partition_key}"
