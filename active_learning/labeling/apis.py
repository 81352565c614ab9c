"""The labeling queue's API: a moderator claims the next item and answers it (label only)."""

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from active_learning.labeling import selectors, services
from active_learning.labeling.models import LabelingItem
from detection.models import ListingImage
from moderation_portal.core.access import MODERATOR, role_permission
from moderation_portal.core.api import error_response


def item_payload(item: LabelingItem) -> dict:
    """The item as a labeler sees it: the listing and the policy asked about. Neither the
    strategy that drew it nor its score is shown, so neither can steer the answer."""
    listing = item.case.listing
    images = ListingImage.objects.filter(listing=listing, state=ListingImage.State.STORED)
    return {
        "id": item.pk,
        "policy": item.policy,
        "state": item.state,
        "lease_expires_at": item.lease_expires_at.isoformat() if item.lease_expires_at else None,
        "answer": item.answer or None,
        "listing": {
            "id": listing.external_id,
            "title": listing.title,
            "description": listing.description,
            "images": [reverse("reviews:listing_image", args=[image.pk]) for image in images],
        },
    }


class LabelingClaimNextApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    @extend_schema(
        request=None,
        responses={200: OpenApiResponse(description="the item, under your lease"), 204: None},
    )
    def post(self, request):
        item = services.labeling_claim_next(user=request.user)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(item_payload(selectors.labeling_item_get(item_id=item.pk)))


class LabelingAnswerApi(APIView):
    permission_classes = [role_permission(MODERATOR)]

    class InputSerializer(serializers.Serializer):
        answer = serializers.ChoiceField(LabelingItem.Answer.values)

    @extend_schema(
        request=inline_serializer(
            "LabelingAnswerInput", {"answer": serializers.ChoiceField(LabelingItem.Answer.values)}
        ),
        responses={
            200: OpenApiResponse(description="the answered item"),
            400: OpenApiResponse(description="invalid"),
            404: OpenApiResponse(description="not_found"),
            409: OpenApiResponse(description="lease_not_held"),
        },
    )
    def post(self, request, item_id: int):
        item = selectors.labeling_item_get(item_id=item_id)
        data = self.InputSerializer(data=request.data if isinstance(request.data, dict) else {})
        if not data.is_valid():
            return error_response(
                "invalid",
                "answer is violation, no_violation or unsure.",
                status_code=400,
                details=data.errors,
            )
        try:
            answered = services.labeling_answer(
                item=item, user=request.user, answer=data.validated_data["answer"]
            )
        except services.LabelingNotHeld:
            return error_response(
                "lease_not_held",
                "Claim the item first: you do not hold a live lease on it.",
                status_code=409,
            )
        return Response(item_payload(selectors.labeling_item_get(item_id=answered.pk)))
