"""Websockets that tell open pages something changed; pages re-fetch their fragments."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from moderation_portal.roles import PERSON_ROLES, roles_of
from reviews import live


class _PortalConsumer(AsyncJsonWebsocketConsumer):
    async def _admitted(self) -> bool:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return False
        roles = await database_sync_to_async(roles_of)(user)
        if not roles & set(PERSON_ROLES):
            await self.close(code=4403)
            return False
        return True


class QueuesConsumer(_PortalConsumer):
    async def connect(self):
        if not await self._admitted():
            return
        await self.channel_layer.group_add(live.QUEUES_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(live.QUEUES_GROUP, self.channel_name)

    async def queues_changed(self, event):
        await self.send_json({"changed": "queues"})


class CaseConsumer(_PortalConsumer):
    async def connect(self):
        if not await self._admitted():
            return
        self.group = live.case_group(int(self.scope["url_route"]["kwargs"]["case_id"]))
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def case_changed(self, event):
        await self.send_json({"changed": event.get("what", "state")})
