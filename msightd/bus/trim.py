"""Trim what every consumer group of a stream has acknowledged, so the broker holds only entries in flight.

``MAXLEN`` alone keeps the last ``maxlen`` entries whether or not anyone still needs them: a segment
topic then holds ~100 segments of ~1.65 MB that every group acknowledged long ago, in RAM and again in
the append-only file. After acknowledging, a subscriber therefore trims its streams (at most once per
``interval_s``, not per message) with ``XTRIM <topic> MINID <floor>``, where the floor is the oldest
entry some group still needs: for each group, its oldest pending entry (delivered, not acknowledged), or
if none, the entry after the last one it was delivered; the floor is the lowest over all groups.
``MAXLEN`` stays the hard cap on every ``XADD``.

Why this is safe with several groups and several consumers of each: between reading the groups and
trimming, a group can only move forward (deliver more, acknowledge more), which raises what it needs,
never lowers it; so the floor computed is at or below the true one, and no entry a group has not
acknowledged is ever trimmed. A stream without groups is never trimmed (nobody has said what it needs).
A group created *after* a trim (a consumer node added later, or recreated after the broker lost its
data) starts from what is still there: the entries the existing groups had not acknowledged yet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis
import structlog

Log = structlog.typing.FilteringBoundLogger
EntryId = tuple[int, int]

#: How often a subscriber that acknowledged something trims its streams.
DEFAULT_TRIM_INTERVAL_S = 1.0


def parse_entry_id(value: Any) -> EntryId:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def oldest_needed(client: redis.Redis, topic: str) -> EntryId | None:
    """The oldest entry of ``topic`` that some consumer group has not acknowledged yet (pending, or not yet
    delivered to it); None when the stream has no groups. Entries below it can be trimmed."""
    floor: EntryId | None = None
    for group in client.xinfo_groups(topic):
        needed = _successor(parse_entry_id(group["last-delivered-id"]))
        if int(group["pending"]) > 0:
            oldest_pending = client.xpending(topic, group["name"]).get("min")
            if oldest_pending is not None:  # else acknowledged since: what follows last-delivered is needed
                needed = parse_entry_id(oldest_pending)
        floor = needed if floor is None else min(floor, needed)
    return floor


def _successor(entry_id: EntryId) -> EntryId:
    return entry_id[0], entry_id[1] + 1


class StreamTrimmer:
    """Trims the streams a subscription reads, from the receiving thread (one caller at a time).

    Broker connection errors propagate (the subscription's outage handling owns them). A trim the broker
    refuses (an ACL without XTRIM, a managed Redis) is logged once and trimming is switched off for this
    subscription: ``MAXLEN`` still bounds the streams.
    """

    def __init__(self, client: redis.Redis, log: Log, interval_s: float = DEFAULT_TRIM_INTERVAL_S) -> None:
        self._client = client
        self._log = log
        self._interval_s = interval_s
        self._next_at = 0.0
        self._refused = False
        self._waiting: set[str] = set()

    def trim(self, acked_topics: Iterable[str]) -> None:
        """Note the topics acknowledged in since the last call; trim every noted topic once ``interval_s``
        has passed since the last trim."""
        self._waiting.update(acked_topics)
        now = time.monotonic()
        if self._refused or not self._waiting or now < self._next_at:
            return
        self._next_at = now + self._interval_s
        for topic in sorted(self._waiting):  # a connection error leaves the rest noted for the next time
            try:
                floor = oldest_needed(self._client, topic)
                if floor is not None:
                    self._client.xtrim(topic, minid=f"{floor[0]}-{floor[1]}", approximate=False)
            except redis.ResponseError as exc:
                # the broker lost the stream or a group meanwhile: nothing to trim this time
                if not str(exc).startswith(("ERR no such key", "NOGROUP")):
                    self._refuse(topic, exc)
                    return
            self._waiting.discard(topic)

    def _refuse(self, topic: str, exc: redis.ResponseError) -> None:
        self._refused = True
        self._waiting.clear()
        self._log.warning(
            "bus_trim_refused",
            topic=topic,
            error=str(exc),
            hint="acknowledged entries stay in the broker until maxlen trims them",
        )
