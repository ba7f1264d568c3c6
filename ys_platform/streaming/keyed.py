"""A base for apps whose state is one object per input partition (windows, order books)."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ys_platform.streaming.app import TopicPartitionId


class PartitionState(Protocol):
    watermark_ms: int | None
    """The latest event time the state has seen (None before any)."""


S = TypeVar("S", bound=PartitionState)


class PartitionKeyedApp(Generic[S]):
    """``assign``, ``revoke`` and ``watermark_ms`` of :class:`~ys_platform.streaming.app.StreamApp`
    for an app keeping one :meth:`new_state` per input partition; ``state`` is the one to use
    in ``process``."""

    def __init__(self) -> None:
        self._states: dict[TopicPartitionId, S] = {}

    def new_state(self) -> S:
        """The empty state of a newly assigned partition."""
        raise NotImplementedError

    def assign(self, partition: TopicPartitionId) -> None:
        self._states[partition] = self.new_state()

    def revoke(self, partition: TopicPartitionId) -> None:
        self._states.pop(partition, None)

    def watermark_ms(self, partition: TopicPartitionId) -> int | None:
        state = self._states.get(partition)
        return None if state is None else state.watermark_ms

    def state(self, partition: TopicPartitionId) -> S:
        """The partition's state, started empty if it was never assigned (unit tests, replays)."""
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = self.new_state()
        return state
