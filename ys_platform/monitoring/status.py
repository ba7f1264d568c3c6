"""Consumer status per partition by Burrow's evaluation rules, over a sliding window.

Burrow (LinkedIn's lag checker) needs no thresholds: it looks at the last few commits of a
partition and asks whether the consumer is keeping up. Its rules, worst first:

- OK if the lag is 0 now (an idle, fully consumed partition is OK, never STOP);
- REWIND if the committed offset went back within the window (an offsets reset, a replay);
- OK if the lag was 0 anywhere in the window (a consumer that caught up in the window keeps up);
- STOP if no commit was seen for longer than the window's span, and the partition has no live
  owner;
- STALL if the committed offset did not move over the window while a live member owns the
  partition;
- WARN if the offset moves but the lag never decreased over the window (a slow consumer);
- else OK.

One departure from Burrow's order: it checks "lag 0 anywhere in the window" first, which hides
the reset of a caught-up group (the entry before the reset had lag 0) — exactly the replay an
operator needs to see; here REWIND comes before it, and only the lag now can make it OK.

Burrow reads every commit from ``__consumer_offsets``; this monitor polls the committed offsets
instead, so a window entry is one poll's observation and "a commit" is a change of the committed
offset. A consumer that re-commits the same offset is invisible to a poll, so what tells STALL
(a consumer is there but does not advance) from STOP (nobody commits) is whether a group member
owns the partition. Until the window is full only REWIND can be told (it needs two entries).

Pure logic, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise

# Burrow's default window (`intervals`): 10 entries. At the default 5 s poll a window spans
# 45 s, so a stopped consumer reads STOP within a minute.
DEFAULT_WINDOW = 10


class Status(IntEnum):
    """Burrow's status values (its numbers), ordered by severity: the group takes the worst."""

    NOTFOUND = 0
    """A catalog group with no committed offset on the cluster (never ran here)."""
    OK = 1
    WARN = 2
    STOP = 4
    STALL = 5
    REWIND = 6


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll's view of a partition: committed offset, lag against it, when (Unix seconds)."""

    offset: int
    lag: int
    at: float


class CommitWindow:
    """The last ``size`` observations of one partition, and when its offset last moved."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 2:
            raise ValueError(f"a commit window needs at least 2 entries, not {size}")
        self.size = size
        self._entries: deque[Observation] = deque(maxlen=size)
        self.moved_at: float | None = None
        """When the committed offset took its current value, as first seen by a poll."""

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Observation]:
        return iter(self._entries)

    @property
    def full(self) -> bool:
        return len(self._entries) == self.size

    def add(self, observation: Observation) -> None:
        entries = self._entries
        if not entries or entries[-1].offset != observation.offset:
            self.moved_at = observation.at
        entries.append(observation)

    def status(self, *, owned: bool) -> Status:
        """This partition's status now; ``owned``: a live group member has it assigned."""
        return evaluate(list(self._entries), moved_at=self.moved_at, owned=owned, size=self.size)


def evaluate(
    entries: Sequence[Observation], *, moved_at: float | None, owned: bool, size: int
) -> Status:
    """Burrow's rules over ``entries`` (oldest first, the last is now); see the module doc."""
    if not entries:
        return Status.OK
    last = entries[-1]
    if last.lag == 0:
        return Status.OK
    pairs = list(pairwise(entries))
    if any(b.offset < a.offset for a, b in pairs):
        return Status.REWIND
    if any(entry.lag == 0 for entry in entries):
        return Status.OK
    if len(entries) < size:
        return Status.OK
    span = last.at - entries[0].at
    unmoved = all(b.offset == a.offset for a, b in pairs)
    if unmoved and not owned and moved_at is not None and last.at - moved_at > span:
        return Status.STOP
    if unmoved and owned:
        return Status.STALL
    if not unmoved and all(b.lag >= a.lag for a, b in pairs):
        return Status.WARN
    return Status.OK


def worst(statuses: Iterable[Status]) -> Status:
    """A group's status: its worst partition's (OK for a group without partitions)."""
    return max(statuses, default=Status.OK)
