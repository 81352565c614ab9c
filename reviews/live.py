"""Small "changed" events for open pages, sent after commit; pages re-fetch their fragment."""

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

QUEUES_GROUP = "queues"


def case_group(case_id: int) -> str:
    return f"case-{case_id}"


def _send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # the usual case: a worker thread or process with no event loop of its own
    else:
        # Called from a thread that runs an event loop: send from a helper thread instead.
        threading.Thread(target=_send, args=(group, message), daemon=True).start()
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # noqa: BLE001 - a lost notification must never fail a decision
        logger.warning("live update to %s failed", group, exc_info=True)


def notify_queues_changed() -> None:
    _send(QUEUES_GROUP, {"type": "queues.changed"})


def notify_case_changed(case_id: int, what: str) -> None:
    _send(case_group(case_id), {"type": "case.changed", "what": what})
