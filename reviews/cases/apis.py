from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation_portal.core.access import MODERATOR, role_permission
from moderation_portal.core.api import error_response
from reviews.cases import claims, selectors
from reviews.cases.evidence import cases_evidence
from reviews.cases.metrics import claim_queue_get
from reviews.cases.selectors import CASE_READERS
from reviews.cases.serializers import CaseOutput, ClaimInput, DecisionInput, DecisionOutput
from reviews.decisions.services import DecisionRefused, DecisionSpec


class CaseListApi(APIView):
    permission_classes = [role_permission(*CASE_READERS)]

    @extend_schema(
        parameters=[
            OpenApiParameter("listing", str, required=True, description="the listing's id")
        ],
        responses={200: CaseOutput(many=True)},
    )
    def get(self, request):
        listing = request.query_params.get("listing", "").strip()
        if not listing or len(listing) > 128:
            return error_response("invalid", "Give ?listing=<listing id>.", status_code=400)
        cases = list(selectors.cases_for_listing(listing_external_id=listing)[:100])
        return Response(
            CaseOutput(cases, many=True, context={"evidence": cases_evidence(cases)}).data
        )


class CaseDetailApi(APIView):
    permission_classes = [role_permission(*CASE_READERS)]

    @extend_schema(responses={200: CaseOutput})
    def get(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        return Response(CaseOutput(case).data)


class CaseClaimNextApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=ClaimInput,
        responses={
            200: CaseOutput,
            204: OpenApiResponse(description="no case to claim"),
            404: OpenApiResponse(description="no such queue, or not one you may claim from"),
        },
    )
    def post(self, request):
        data = ClaimInput(data=request.data)
        data.is_valid(raise_exception=True)
        queue = None
        if data.validated_data.get("queue"):
            queue = claim_queue_get(slug=data.validated_data["queue"], user=request.user)
        case = claims.case_claim_next(user=request.user, queue=queue)
        if case is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        case = selectors.case_get_for_user(case_id=case.id, user=request.user)
        return Response(CaseOutput(case).data)


class CaseDecisionApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=DecisionInput,
        responses={
            201: DecisionOutput,
            409: OpenApiResponse(description="lease not held"),
            422: OpenApiResponse(description="refused by the rules (e.g. no_prior_warning)"),
        },
    )
    def post(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        data = DecisionInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            decision = claims.case_decide(
                case=case, user=request.user, spec=DecisionSpec(**data.validated_data)
            )
        except claims.LeaseNotHeld as exc:
            return error_response("lease_not_held", str(exc), status_code=409)
        except DecisionRefused as exc:
            return error_response(exc.code, str(exc), status_code=422)
        return Response(DecisionOutput(decision).data, status=status.HTTP_201_CREATED)


class CaseReleaseApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(description="released"),
            409: OpenApiResponse(description="not held"),
        },
    )
    def post(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        if not claims.case_release(case=case, user=request.user, reason="released"):
            return error_response(
                "lease_not_held", "You do not hold a claim on this case.", status_code=409
            )
        return Response({"released": True})


class ReasonInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500, min_length=3)


class HeartbeatOutput(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField()


class CaseHeartbeatApi(APIView):
    """The open review page calls this to keep its claim; without it the lease expires."""

    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=None,
        responses={200: HeartbeatOutput, 409: OpenApiResponse(description="claim ended")},
    )
    def post(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        held = claims.case_heartbeat(case=case, user=request.user)
        if held is None:
            return error_response(
                "lease_not_held", "Your claim on this case has ended.", status_code=409
            )
        return Response({"lease_expires_at": held.lease_expires_at})


class CaseSkipApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=ReasonInput,
        responses={
            200: OpenApiResponse(description="skipped"),
            409: OpenApiResponse(description="not held"),
        },
    )
    def post(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        data = ReasonInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not claims.case_skip(case=case, user=request.user, reason=data.validated_data["reason"]):
            return error_response(
                "lease_not_held", "You do not hold a claim on this case.", status_code=409
            )
        return Response({"skipped": True})


class CaseEscalateApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=ReasonInput,
        responses={
            200: OpenApiResponse(description="escalated"),
            409: OpenApiResponse(description="not held"),
        },
    )
    def post(self, request, case_id: int):
        case = selectors.case_get_for_user(case_id=case_id, user=request.user)
        data = ReasonInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not claims.case_escalate(
            case=case, user=request.user, reason=data.validated_data["reason"]
        ):
            return error_response(
                "lease_not_held", "You do not hold a claim on this case.", status_code=409
            )
        return Response({"escalated": True})
