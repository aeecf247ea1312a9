"""Where passthrough segments start and end: whole GOPs, because copied video can only be cut at keyframes.

The rule (also in the README and ``--help``):

* A segment starts on a keyframe and closes at the first keyframe at or after ``buffer_size`` frames;
  that keyframe starts the next one. A GOP of 24 with ``buffer_size`` 100 gives 120-frame segments; a
  GOP longer than ``buffer_size`` gives one-GOP segments.
* ``overlap_size`` is rounded up to whole GOPs: the next segment begins with the last GOPs of the
  previous one, as few as hold at least ``overlap_size`` frames, but never all of them (a segment whose
  only keyframe is its first has no overlap).
* A change of stream (codec, parameter sets, picture size, time base) closes the segment before the
  first frame of the new stream; a break in the packets (camera outage or reconnect, packets lost on the
  way) or the end of input closes it after the last good frame. No overlap is carried across a change
  or a break, and frames up to the next keyframe are skipped (they cannot be decoded without it).

Every segment is therefore a valid, complete file. Pure logic, generic over the packet type; one owner.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

Item = TypeVar("Item")
CloseReason = Literal["size", "stream_changed", "discontinuity", "end"]


@dataclass(frozen=True)
class ClosedSegment(Generic[Item]):
    """A finished segment: its packets in order, and how many of the first ones were already in the
    previous segment (the overlap)."""

    items: list[Item]
    overlap: int
    reason: CloseReason


@dataclass
class Added(Generic[Item]):
    """What adding one packet did: segments it closed, and whether the packet went into a segment (False:
    skipped while waiting for a keyframe; the caller counts and acknowledges it)."""

    closed: list[ClosedSegment[Item]]
    kept: bool


@dataclass
class GopSegmenter(Generic[Item]):
    """Applies the module's rule to one stream of packets. ``is_keyframe`` and ``stream_key`` read a
    packet (the key is equal for packets that can share one MP4 stream)."""

    buffer_size: int
    overlap_size: int
    is_keyframe: Callable[[Item], bool]
    stream_key: Callable[[Item], Hashable]
    items: list[Item] = field(default_factory=list)
    keyframe_positions: list[int] = field(default_factory=list)
    overlap: int = 0
    key: Hashable = None

    def add(self, item: Item, continuous: bool = True) -> Added[Item]:
        """Add the next packet; ``continuous=False`` says packets are missing just before it."""
        closed: list[ClosedSegment[Item]] = []
        if self.items and not continuous:
            closed += self.close("discontinuity")
        elif self.items and self.stream_key(item) != self.key:
            closed += self.close("stream_changed")
        keyframe = self.is_keyframe(item)
        if not self.items:
            if not keyframe:
                return Added(closed, kept=False)
            self.key = self.stream_key(item)
        elif keyframe and len(self.items) >= self.buffer_size:
            closed.append(self._roll_over())
        if keyframe:
            self.keyframe_positions.append(len(self.items))
        self.items.append(item)
        return Added(closed, kept=True)

    def close(self, reason: CloseReason) -> list[ClosedSegment[Item]]:
        """End the segment now (outage, stream change, stop): returned unless it holds only overlap."""
        items, overlap = self.items, self.overlap
        self.items, self.keyframe_positions, self.overlap = [], [], 0
        if len(items) <= overlap:
            return []
        return [ClosedSegment(items, overlap, reason)]

    def _roll_over(self) -> ClosedSegment[Item]:
        segment = ClosedSegment(self.items, self.overlap, "size")
        start = self._overlap_start()
        self.items = self.items[start:]
        self.keyframe_positions = [p - start for p in self.keyframe_positions if p >= start]
        self.overlap = len(self.items)
        return segment

    def _overlap_start(self) -> int:
        """Position of the keyframe the next segment starts from (len(items): no overlap)."""
        count = len(self.items)
        later = [p for p in self.keyframe_positions if p > 0]
        if self.overlap_size <= 0 or not later:
            return count
        enough = [p for p in later if count - p >= self.overlap_size]
        return enough[-1] if enough else later[0]
