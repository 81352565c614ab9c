"""Websockets that tell open pages something changed; pages re-fetch their fragments."""

from moderation_portal.core import live
from moderation_portal.core.consumers import PortalConsumer


class QueuesConsumer(PortalConsumer):
    async def connect(self):
        if not await self.admitted():
            return
        await self.channel_layer.group_add(live.QUEUES_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(live.QUEUES_GROUP, self.channel_name)

    async def queues_changed(self, event):
        await self.send_json({"changed": "queues"})


class CaseConsumer(PortalConsumer):
    async def connect(self):
        if not await self.admitted():
            return
        self.group = live.case_group(int(self.scope["url_route"]["kwargs"]["case_id"]))
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def case_changed(self, event):
        await self.send_json({"changed": event.get("what", "state")})
