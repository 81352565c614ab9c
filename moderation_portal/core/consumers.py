"""The base of the portal's websockets: only signed-in people with a portal role get in."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from moderation_portal.core.access import PERSON_ROLES, roles_of

CLOSE_NOT_SIGNED_IN = 4401
CLOSE_NO_ROLE = 4403


class PortalConsumer(AsyncJsonWebsocketConsumer):
    async def admitted(self) -> bool:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_SIGNED_IN)
            return False
        roles = await database_sync_to_async(roles_of)(user)
        if not roles & set(PERSON_ROLES):
            await self.close(code=CLOSE_NO_ROLE)
            return False
        return True
