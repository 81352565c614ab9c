"""The appeals API: the marketplace opens appeals; appeals staff claim, read and decide them."""

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from detection.models import Seller
from moderation_portal.core.access import APPEALS, MARKETPLACE, MODERATOR, role_permission
from moderation_portal.core.api import error_response
from reviews.appeals import intake, services
from reviews.appeals.models import Appeal
from reviews.appeals.strikes import seller_strikes
from reviews.enforcement.models import StatementOfReasons


def appeal_payload(appeal: Appeal, *, full: bool) -> dict:
    """The appeal as the API shows it. `full` (appeals staff) adds the case's decision history
    and the statement of reasons; the marketplace sees the appeal and its outcome."""
    decision = appeal.decision
    out = {
        "id": appeal.pk,
        "appeal_id": appeal.appeal_id,
        "enforcement_id": appeal.enforcement_id,
        "action": appeal.enforcement.action,
        "seller_id": appeal.seller.external_id,
        "listing_id": appeal.case.listing.external_id,
        "statement": appeal.statement,
        "submitted_at": appeal.submitted_at.isoformat(),
        "received_at": appeal.received_at.isoformat(),
        "state": appeal.state,
        "sla_due_at": appeal.sla_due_at.isoformat(),
        "outcome": appeal.outcome or None,
        "notes": appeal.notes or None,
        "decided_at": appeal.decided_at.isoformat() if appeal.decided_at else None,
        "overturn_decision_id": appeal.overturn_decision_id,
    }
    if full:
        sor = StatementOfReasons.objects.filter(decision=decision).first()
        out.update(
            {
                "case_id": appeal.case_id,
                "decision": {
                    "id": decision.pk,
                    "source": decision.source,
                    "verdict": decision.verdict,
                    "policy": decision.policy_id,
                    "action": decision.action,
                    "decided_by": decision.decided_by.get_username()
                    if decision.decided_by
                    else None,
                    "llm_verdict_id": decision.llm_verdict_id,
                    "created_at": decision.created_at.isoformat(),
                },
                "statement_of_reasons": sor.statement if sor else None,
                "earlier_appeals": list(
                    Appeal.objects.filter(seller=appeal.seller)
                    .exclude(pk=appeal.pk)
                    .order_by("-received_at")
                    .values("id", "appeal_id", "state", "outcome", "received_at")[:20]
                ),
                "sla_breached": appeal.state != Appeal.State.DECIDED
                and appeal.sla_due_at < timezone.now(),
            }
        )
    return out


def _get(appeal_id: int) -> Appeal:
    appeal = (
        Appeal.objects.select_related(
            "enforcement", "decision__decided_by", "case__listing", "seller"
        )
        .filter(pk=appeal_id)
        .first()
    )
    if appeal is None:
        raise Http404("no such appeal")
    return appeal


class AppealCreateApi(APIView):
    permission_classes = [role_permission(MARKETPLACE)]
    parser_classes = [JSONParser]

    @extend_schema(
        request=inline_serializer(
            "AppealInput",
            {
                "appeal_id": serializers.CharField(),
                "enforcement_id": serializers.IntegerField(),
                "seller_id": serializers.CharField(),
                "statement": serializers.CharField(),
                "submitted_at": serializers.DateTimeField(),
            },
        ),
        responses={
            201: OpenApiResponse(description="the appeal"),
            200: OpenApiResponse(description="the same appeal_id again"),
            404: OpenApiResponse(description="unknown_enforcement"),
            409: OpenApiResponse(description="already_appealed"),
            422: OpenApiResponse(description="appeal_window_closed, seller_mismatch, invalid"),
        },
    )
    def post(self, request):
        answer = intake.appeal_open(payload=request.data, user=request.user)
        if answer.appeal is None:
            return error_response(
                answer.code, answer.message, status_code=answer.status, details=answer.details
            )
        appeal = _get(answer.appeal.pk)
        return Response(appeal_payload(appeal, full=False), status=answer.status)


class AppealClaimNextApi(APIView):
    permission_classes = [role_permission(APPEALS)]

    @extend_schema(
        request=None,
        responses={200: OpenApiResponse(description="the appeal"), 204: None},
    )
    def post(self, request):
        appeal = services.appeal_claim_next(user=request.user)
        if appeal is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(appeal_payload(_get(appeal.pk), full=True))


class AppealDetailApi(APIView):
    permission_classes = [role_permission(APPEALS)]

    @extend_schema(responses={200: OpenApiResponse(description="the appeal")})
    def get(self, request, appeal_id: int):
        return Response(appeal_payload(_get(appeal_id), full=True))


class AppealDecisionApi(APIView):
    permission_classes = [role_permission(APPEALS)]

    @extend_schema(
        request=inline_serializer(
            "AppealDecisionInput",
            {
                "outcome": serializers.ChoiceField(Appeal.Outcome.values),
                "notes": serializers.CharField(),
            },
        ),
        responses={
            200: OpenApiResponse(description="the decided appeal"),
            403: OpenApiResponse(description="same_reviewer"),
            409: OpenApiResponse(description="lease_not_held"),
        },
    )
    def post(self, request, appeal_id: int):
        appeal = _get(appeal_id)
        data = request.data if isinstance(request.data, dict) else {}
        try:
            decided = services.appeal_decide(
                appeal=appeal,
                user=request.user,
                outcome=str(data.get("outcome", "")),
                notes=data.get("notes", ""),
            )
        except services.AppealNotHeld:
            return error_response(
                "lease_not_held",
                "Claim the appeal first: you do not hold a live lease on it.",
                status_code=409,
            )
        except services.AppealRefused as exc:
            code = 403 if exc.code in ("same_reviewer", "forbidden") else 400
            return error_response(exc.code, str(exc), status_code=code)
        return Response(appeal_payload(_get(decided.pk), full=True))


class SellerStrikesApi(APIView):
    permission_classes = [role_permission(MODERATOR, APPEALS)]

    @extend_schema(responses={200: OpenApiResponse(description="the seller's strike ledger")})
    def get(self, request, seller_id: str):
        seller = Seller.objects.filter(external_id=seller_id).first()
        if seller is None:
            return error_response("not_found", "No such seller.", status_code=404)
        return Response({"seller_id": seller.external_id, **seller_strikes(seller_id=seller.pk)})
