"""The appeals staff's pages: the queue, and the appeal page with the original case, its
evidence, the appealed decision and its statement of reasons, the seller's statement (escaped:
adversarial text) and history; keyboard first like the review page."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from detection.models import Seller
from moderation_portal.core.access import APPEALS, MODERATOR, role_required
from reviews.appeals import services
from reviews.appeals.models import Appeal
from reviews.appeals.strikes import seller_strikes
from reviews.cases.evidence import case_evidence
from reviews.cases.preferences import preference_for
from reviews.cases.selectors import seller_history
from reviews.enforcement.models import StatementOfReasons


def _appeal(appeal_id: int) -> Appeal:
    appeal = (
        Appeal.objects.select_related(
            "enforcement",
            "decision__decided_by",
            "decision__llm_verdict",
            "case__listing__seller",
            "case__detection_event",
            "seller",
            "claimed_by",
        )
        .filter(pk=appeal_id)
        .first()
    )
    if appeal is None:
        raise Http404("no such appeal")
    return appeal


@require_GET
@role_required(APPEALS)
def appeals_page(request):
    now = timezone.now()
    waiting = Appeal.objects.filter(state=Appeal.State.PENDING)
    return render(
        request,
        "reviews/appeals.html",
        {
            "waiting": waiting.count(),
            "breached": waiting.filter(sla_due_at__lt=now).count(),
            "mine": Appeal.objects.filter(
                state=Appeal.State.CLAIMED, claimed_by=request.user, lease_expires_at__gt=now
            ).select_related("enforcement", "seller"),
            "recent": Appeal.objects.filter(state=Appeal.State.DECIDED)
            .select_related("enforcement", "seller", "decided_by")
            .order_by("-decided_at")[:20],
            "queue": services.appeals_queue(request.user).select_related("enforcement", "seller")[
                :50
            ],
            "now": now,
        },
    )


@require_POST
@role_required(APPEALS)
def appeal_claim(request):
    appeal = services.appeal_claim_next(user=request.user)
    if appeal is None:
        messages.info(request, "No appeal is waiting for you.")
        return redirect("reviews:appeals")
    return redirect("reviews:appeal", appeal_id=appeal.pk)


@require_GET
@role_required(APPEALS)
def appeal_page(request, appeal_id: int):
    appeal = _appeal(appeal_id)
    case = appeal.case
    now = timezone.now()
    return render(
        request,
        "reviews/appeal.html",
        {
            "appeal": appeal,
            "case": case,
            **case_evidence(case),
            "listing": case.listing,
            "decision": appeal.decision,
            "decisions": list(case.decisions.select_related("decided_by")),
            "sor": StatementOfReasons.objects.filter(decision=appeal.decision).first(),
            "earlier_appeals": Appeal.objects.filter(seller=appeal.seller)
            .exclude(pk=appeal.pk)
            .select_related("enforcement")
            .order_by("-received_at")[:20],
            "history": seller_history(seller_id=appeal.seller_id),
            "strikes": seller_strikes(seller_id=appeal.seller_id),
            "holds": appeal.state == Appeal.State.CLAIMED
            and appeal.claimed_by_id == request.user.pk
            and appeal.lease_expires_at is not None
            and appeal.lease_expires_at > now,
            "same_reviewer": appeal.decision.decided_by_id == request.user.pk,
            "sla_breached": appeal.state != Appeal.State.DECIDED and appeal.sla_due_at < now,
            "pref": preference_for(user=request.user),
        },
    )


@require_POST
@role_required(APPEALS)
def appeal_decide(request, appeal_id: int):
    appeal = _appeal(appeal_id)
    try:
        services.appeal_decide(
            appeal=appeal,
            user=request.user,
            outcome=request.POST.get("outcome", ""),
            notes=request.POST.get("notes", "")[: services.MAX_NOTES + 1],
        )
    except services.AppealNotHeld:
        messages.error(request, "You no longer hold this appeal; claim it again.")
        return redirect("reviews:appeal", appeal_id=appeal.pk)
    except services.AppealRefused as exc:
        messages.error(request, str(exc))
        return redirect("reviews:appeal", appeal_id=appeal.pk)
    messages.success(request, f"Appeal {appeal.appeal_id} decided; the seller will be told.")
    return redirect("reviews:appeals")


@require_POST
@role_required(APPEALS)
def appeal_release(request, appeal_id: int):
    services.appeal_release(appeal=_appeal(appeal_id), user=request.user)
    return redirect("reviews:appeals")


@require_GET
@role_required(MODERATOR, APPEALS)
def seller_page(request, seller_id: int):
    """A seller's standing: the strike ledger (derived server-side), warnings, suspension
    proposals, appeals and cases."""
    seller = Seller.objects.filter(pk=seller_id).first()
    if seller is None:
        raise Http404("no such seller")
    return render(
        request,
        "reviews/seller.html",
        {
            "seller": seller,
            "strikes": seller_strikes(seller_id=seller.pk),
            "history": seller_history(seller_id=seller.pk),
            "appeals": Appeal.objects.filter(seller=seller)
            .select_related("enforcement")
            .order_by("-received_at")[:50],
            "listings": seller.listings.count(),
        },
    )
