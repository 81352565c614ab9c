"""The labeling queue's pages: the queue (waiting count, today's draw, whether each strategy
beats random per policy) and the label-only item page: the listing (escaped: adversarial text),
its images concealed until revealed as on the review page, the policy asked about, keyboard
first. No enforcement and no decision: only a label."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from active_learning.labeling import selectors, services
from active_learning.labeling.models import LabelingDraw, LabelingItem
from detection.models import ListingImage
from moderation_portal.core.access import MODERATOR, role_required
from reviews.cases.preferences import preference_for
from reviews.policies.models import Policy


def _claim_and_redirect(request):
    item = services.labeling_claim_next(user=request.user)
    if item is None:
        messages.info(request, "No item is waiting to be labeled.")
        return redirect("active_learning:labeling")
    return redirect("active_learning:labeling_item", item_id=item.pk)


@require_GET
@role_required(MODERATOR)
def labeling_page(request):
    now = timezone.now()
    return render(
        request,
        "active_learning/labeling.html",
        {
            "waiting": selectors.labeling_waiting().count(),
            "draw": LabelingDraw.objects.filter(day=timezone.localdate()).first(),
            "mine": LabelingItem.objects.filter(
                **services.lease_spec().held_by(request.user, now)
            ).first(),
            "figures": selectors.labeling_figures(),
        },
    )


@require_POST
@role_required(MODERATOR)
def labeling_claim(request):
    return _claim_and_redirect(request)


@require_GET
@role_required(MODERATOR)
def labeling_item(request, item_id: int):
    item = selectors.labeling_item_get(item_id=item_id)
    listing = item.case.listing
    now = timezone.now()
    return render(
        request,
        "active_learning/labeling_item.html",
        {
            "item": item,
            "listing": listing,
            "images": ListingImage.objects.filter(listing=listing),
            "policy": Policy.objects.filter(code=item.policy).first(),
            "holds": item.state == LabelingItem.State.CLAIMED
            and item.claimed_by_id == request.user.pk
            and item.lease_expires_at is not None
            and item.lease_expires_at > now,
            "answers": LabelingItem.Answer.choices,
            "pref": preference_for(user=request.user),
        },
    )


@require_POST
@role_required(MODERATOR)
def labeling_answer(request, item_id: int):
    item = selectors.labeling_item_get(item_id=item_id)
    answer = request.POST.get("answer", "")
    if answer not in LabelingItem.Answer.values:
        messages.error(request, "Choose violation (v), no violation (n) or unsure (u).")
        return redirect("active_learning:labeling_item", item_id=item.pk)
    try:
        services.labeling_answer(item=item, user=request.user, answer=answer)
    except services.LabelingNotHeld:
        messages.error(request, "You no longer hold this item; claim the next one.")
        return redirect("active_learning:labeling")
    messages.success(request, f"Labeled item {item.pk}: {LabelingItem.Answer(answer).label}.")
    return _claim_and_redirect(request)


@require_POST
@role_required(MODERATOR)
def labeling_skip(request, item_id: int):
    item = selectors.labeling_item_get(item_id=item_id)
    services.labeling_give_back(item=item, user=request.user)
    return redirect("active_learning:labeling")
