"""Small "changed" events for open pages, sent after commit; pages re-fetch their fragment.

Callers only enqueue: a per-process sender thread with its own event loop delivers to the
channel layer, coalescing identical events within a short window. A decision or claim never
waits for Redis, and a lost notification never fails one (the events are hints to re-fetch).
"""

import asyncio
import logging
import os
import threading
import time

from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import transaction

logger = logging.getLogger(__name__)

QUEUES_GROUP = "queues"
COALESCE_SECONDS = 0.02


def case_group(case_id: int) -> str:
    return f"case-{case_id}"


class _Sender:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.pending: dict[tuple, dict] = {}
        self.lock = threading.Lock()
        self.scheduled = False
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="live-updates", daemon=True
        )
        self.thread.start()

    def send(self, group: str, message: dict) -> None:
        key = (group, tuple(sorted(message.items())))
        with self.lock:
            self.pending[key] = (group, message)
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._flush()))

    async def _flush(self) -> None:
        await asyncio.sleep(COALESCE_SECONDS)
        with self.lock:
            batch, self.pending, self.scheduled = list(self.pending.values()), {}, False
        layer = get_channel_layer()
        if layer is None:
            return
        for group, message in await _listened(layer, batch):
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.warning("live update to %s failed", group, exc_info=True)


async def _listened(layer, batch: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The events of `batch` whose group has a member (a page listening), asked of Redis in one
    round trip per shard: an event nobody listens to (a claim of a case whose page nobody has
    open) costs no group_send. A member counts as group_send counts it (not older than the
    layer's group expiry). Any other layer, or a failed check, keeps every event."""
    if not isinstance(layer, RedisChannelLayer):
        return batch
    try:
        horizon = f"({int(time.time()) - layer.group_expiry}"
        shards: dict[int, list[int]] = {}
        for i, (group, _) in enumerate(batch):
            shards.setdefault(layer.consistent_hash(group), []).append(i)
        members = [0] * len(batch)
        for index, positions in shards.items():
            pipe = layer.connection(index).pipeline(transaction=False)
            for i in positions:
                pipe.zcount(layer._group_key(batch[i][0]), horizon, "+inf")
            for i, n in zip(positions, await pipe.execute(), strict=True):
                members[i] = n
    except Exception:
        logger.warning("could not check which live-update groups have members", exc_info=True)
        return batch
    return [event for event, n in zip(batch, members, strict=True) if n]


_sender: _Sender | None = None
_sender_lock = threading.Lock()


def _get_sender() -> _Sender:
    global _sender
    with _sender_lock:
        if _sender is None or _sender.pid != os.getpid():  # a forked worker needs its own thread
            _sender = _Sender()
        return _sender


def _send(group: str, message: dict) -> None:
    try:
        _get_sender().send(group, message)
    except Exception:
        logger.warning("could not enqueue a live update for %s", group, exc_info=True)


def notify_queues_changed() -> None:
    _send(QUEUES_GROUP, {"type": "queues.changed"})


def notify_case_changed(case_id: int, what: str) -> None:
    _send(case_group(case_id), {"type": "case.changed", "what": what})


def changed_on_commit(*, case_id: int | None = None, what: str = "state") -> None:
    """After the current transaction commits (at once in autocommit): queue pages refresh, and
    the case's page too when `case_id` is given."""

    def send() -> None:
        notify_queues_changed()
        if case_id is not None:
            notify_case_changed(case_id, what)

    transaction.on_commit(send)
