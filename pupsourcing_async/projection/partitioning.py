"""Splitting a projection's events among workers, the same way the Go library does."""

from __future__ import annotations

from typing import Protocol

__all__ = ["HashPartitionStrategy", "PartitionStrategy", "fnv1a_32"]

_FNV_OFFSET_BASIS = 2166136261
_FNV_PRIME = 16777619


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``."""
    value = _FNV_OFFSET_BASIS
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


class PartitionStrategy(Protocol):
    """Decides which partition of a projection handles an aggregate's events."""

    def should_process(self, aggregate_id: str, partition_key: int, total_partitions: int) -> bool:
        """Whether the worker of ``partition_key`` handles events of ``aggregate_id``."""
        ...


class HashPartitionStrategy:
    """32-bit FNV-1a of the UTF-8 aggregate id, modulo the number of partitions.

    The same hash as pupsourcing's, so Go and Python workers can split one projection.
    All events of an aggregate land in one partition, which keeps them in order.
    """

    def should_process(self, aggregate_id: str, partition_key: int, total_partitions: int) -> bool:
        """Whether the worker of ``partition_key`` handles events of ``aggregate_id``."""
        if total_partitions <= 1:
            return True
        return fnv1a_32(aggregate_id.encode("utf-8")) % total_partitions == partition_key

    def __eq__(self, other: object) -> bool:
        return type(other) is HashPartitionStrategy

    def __hash__(self) -> int:
        return hash(HashPartitionStrategy)

    def __repr__(self) -> str:
        return "HashPartitionStrategy()"
