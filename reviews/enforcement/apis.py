"""The API of enforcement: a decision's statement of reasons; delivery status and redelivery for
operators (policy admins)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation_portal.core.access import PERSON_ROLES, POLICY_ADMIN, role_permission
from moderation_portal.core.api import error_response
from reviews.decisions.models import Decision
from reviews.enforcement import operations, selectors
from reviews.enforcement.models import StatementOfReasons
from reviews.enforcement.transparency import submission_configured

SUBMISSION_FIELDS = ("state", "attempts", "submitted_at", "already_filed", "tdb_uuid", "errors")


def statement_payload(row: StatementOfReasons) -> dict:
    """The statement in the Transparency Database's field names, and where its filing stands."""
    configured = submission_configured()
    return {
        **row.statement,
        "decision_id": row.decision_id,
        "ladder_version": row.ladder_version.version,
        "submission": {
            "configured": configured,
            "status": "configured" if configured else selectors.TDB_NOT_CONFIGURED,
            "state": row.state,
            "attempts": row.attempts,
            "submitted_at": row.submitted_at.isoformat() if row.submitted_at else None,
            "already_filed": row.already_filed,
            "tdb_uuid": row.tdb_uuid or None,
            "errors": row.errors or {},
            "last_error": row.last_error or None,
        },
    }


class StatementOfReasonsApi(APIView):
    permission_classes = [role_permission(*PERSON_ROLES)]

    @extend_schema(
        responses={
            200: OpenApiResponse(description="the statement (Transparency Database fields)"),
            404: OpenApiResponse(description="no such decision, or it restricts nothing"),
        }
    )
    def get(self, request, decision_id: int):
        decision = Decision.objects.filter(pk=decision_id).first()
        if decision is None:
            return error_response("not_found", "No such decision.", status_code=404)
        row = (
            StatementOfReasons.objects.select_related("ladder_version")
            .filter(decision=decision)
            .first()
        )
        if row is None:
            return error_response(
                "no_statement",
                f"Decision {decision_id} ({decision.verdict}, action {decision.action}) "
                "restricts nothing, so it has no statement of reasons.",
                status_code=404,
            )
        return Response(statement_payload(row))


class EnforcementStatusApi(APIView):
    permission_classes = [role_permission(POLICY_ADMIN)]

    @extend_schema(responses={200: OpenApiResponse(description="delivery and filing status")})
    def get(self, request):
        state = request.query_params.get("state") or None
        if state is not None and state not in selectors.MESSAGE_STATES:
            return error_response(
                "invalid",
                f"state is one of {', '.join(selectors.MESSAGE_STATES)}.",
                status_code=400,
            )
        status = selectors.delivery_status()
        status["messages"] = [
            selectors.message_summary(m) for m in selectors.messages_list(state=state, limit=50)
        ]
        return Response(status)


class RedeliverInput(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=1000
    )
    failed = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        if not attrs.get("ids") and not attrs.get("failed"):
            raise serializers.ValidationError("Give ids, or failed: true.")
        return attrs


class EnforcementRedeliverApi(APIView):
    permission_classes = [role_permission(POLICY_ADMIN)]

    @extend_schema(
        request=RedeliverInput,
        responses={200: inline_serializer("Redelivered", {"queued": serializers.IntegerField()})},
    )
    def post(self, request):
        data = RedeliverInput(data=request.data)
        data.is_valid(raise_exception=True)
        count = operations.redeliver(
            user=request.user,
            ids=data.validated_data.get("ids") or [],
            failed=data.validated_data["failed"],
        )
        return Response({"queued": count})
