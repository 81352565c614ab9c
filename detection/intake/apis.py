from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from detection.intake.schema import event_schema
from moderation_portal.core.access import ALL_ROLES, role_permission


class DetectionEventSchemaApi(APIView):
    """The JSON Schema of one event (schema version 1), built from the configured limits."""

    permission_classes = [role_permission(*ALL_ROLES)]

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request):
        return Response(event_schema())
