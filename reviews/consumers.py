from channels.generic.websocket import AsyncJsonWebsocketConsumer

from moderation_portal.roles import ALL_ROLES
from reviews import live


class QueuesConsumer(AsyncJsonWebsocketConsumer):
    """Tells an open queue page that counts changed; the page re-fetches its fragment."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        from channels.db import database_sync_to_async

        from moderation_portal.roles import roles_of

        roles = await database_sync_to_async(roles_of)(user)
        if not roles & set(ALL_ROLES) - {"detection_tier"}:
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(live.QUEUES_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(live.QUEUES_GROUP, self.channel_name)

    async def queues_changed(self, event):
        await self.send_json({"changed": "queues"})
