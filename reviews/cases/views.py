import time

from django.contrib import messages
from django.contrib.auth import logout
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from detection.models import Heatmap, ListingImage, ReferenceItem, Seller
from detection.policies import POLICY_CODES
from moderation_portal.core.access import APPEALS, MODERATOR, has_role, role_required
from reviews.appeals.models import SuspensionProposal
from reviews.appeals.strikes import seller_strikes
from reviews.cases import claims, selectors
from reviews.cases.evidence import case_evidence
from reviews.cases.metrics import claim_queue_get
from reviews.cases.models import Case
from reviews.cases.preferences import preference_for, preference_set
from reviews.cases.selectors import CASE_READERS
from reviews.cases.serializers import DecisionInput
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionRefused, DecisionSpec
from reviews.policies.challengers import case_score_table


@require_GET
@role_required(*CASE_READERS)
def home(request):
    return redirect("reviews:queues")


def _queue_context(request) -> dict:
    summaries = selectors.queue_summaries(queues=selectors.queues_for_user(user=request.user))
    return {"summaries": summaries, "is_moderator": has_role(request.user, MODERATOR)}


def _queue_detail_context(request, slug: str) -> dict:
    queue = selectors.queue_get_for_user(slug=slug, user=request.user)
    cases = selectors.queue_pending_cases(queue=queue)
    now = timezone.now()
    for case in cases:
        case.age_seconds = int((now - case.created_at).total_seconds())
        case.sla_left_seconds = int((case.sla_due_at - now).total_seconds())
    return {
        "queue": queue,
        "cases": cases,
        "is_moderator": has_role(request.user, MODERATOR),
        "summary": selectors.queue_summaries(queues=[queue])[0],
    }


@require_GET
@role_required(*CASE_READERS)
def queue_detail(request, slug: str):
    return render(request, "reviews/queue.html", _queue_detail_context(request, slug))


@require_GET
@role_required(*CASE_READERS)
def queue_detail_fragment(request, slug: str):
    return render(request, "reviews/_queue_cases.html", _queue_detail_context(request, slug))


@require_GET
@role_required(*CASE_READERS)
def queues(request):
    return render(request, "reviews/queues.html", _queue_context(request))


@require_GET
@role_required(*CASE_READERS)
def queues_fragment(request):
    return render(request, "reviews/_queue_table.html", _queue_context(request))


def _claim_and_redirect(request, queue_slug: str):
    queue = claim_queue_get(slug=queue_slug, user=request.user)
    case = claims.case_claim_next(user=request.user, queue=queue)
    if case is None:
        messages.info(request, f"No cases are waiting in “{queue.name}”.")
        return redirect("reviews:queues")
    return HttpResponseRedirect(reverse("reviews:case", args=[case.id]) + f"?queue={queue.slug}")


@require_POST
@role_required(MODERATOR)
def claim_next(request, slug: str):
    return _claim_and_redirect(request, slug)


def _holds_claim(case: Case, user) -> bool:
    return (
        case.state == Case.State.CLAIMED
        and case.claimed_by_id == user.id
        and has_role(user, MODERATOR)
    )


def _status_context(case: Case) -> dict:
    case.sla_breached = (
        case.state in (Case.State.QUEUED, Case.State.CLAIMED) and case.sla_due_at < timezone.now()
    )
    return {"case": case}


@require_GET
@role_required(*CASE_READERS)
def case_page(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.GET.get("queue", "all")
    holds_claim = _holds_claim(case, request.user)
    event = case.detection_event
    modality = [
        (m, scores.get(case.policy_id))
        for m, scores in sorted(event.modality_scores.items())
        if scores.get(case.policy_id) is not None
    ]
    context = {
        **_status_context(case),
        **case_evidence(case),
        "listing": case.listing,
        "seller": case.listing.seller,
        "event": event,
        **case_score_table(event),  # the challengers' scores beside the champion's
        "modality": modality,
        "decisions": list(case.decisions.all()),
        "history": selectors.seller_history(seller_id=case.listing.seller_id),
        "strikes": seller_strikes(seller_id=case.listing.seller_id),
        "proposal": SuspensionProposal.objects.filter(case=case).first(),
        "sees_sellers": has_role(request.user, MODERATOR, APPEALS),
        "earlier": selectors.listing_earlier_cases(case=case),
        "seller_pending": len(
            selectors.seller_pending_cases(seller_id=case.listing.seller_id, user=request.user)
        )
        if holds_claim
        else 0,
        "holds_claim": holds_claim,
        "queue_slug": queue_slug,
        "policy_codes": POLICY_CODES,
        "verdicts": Decision.Verdict.choices,
        "actions": Decision.Action.choices,
        "opened_at_ms": int(time.time() * 1000),
        "pref": preference_for(user=request.user),
    }
    return render(request, "reviews/case.html", context)


@require_GET
@role_required(*CASE_READERS)
def case_evidence_fragment(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    return render(request, "reviews/_case_evidence.html", {"case": case, **case_evidence(case)})


@require_GET
@role_required(*CASE_READERS)
def case_status_fragment(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    response = render(request, "reviews/_case_status.html", _status_context(case))
    response["X-Holds-Claim"] = "1" if _holds_claim(case, request.user) else "0"
    return response


@require_POST
@role_required(MODERATOR)
def case_decide(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.POST.get("queue", "all")
    form = DecisionInput(data=request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            for error in errors:
                messages.error(request, f"{field}: {error}")
        return HttpResponseRedirect(
            reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}"
        )
    data = dict(form.validated_data)
    try:
        opened = int(request.POST.get("opened_at_ms", "0"))
        data["time_on_case_ms"] = (
            max(0, min(int(time.time() * 1000) - opened, 86_400_000)) if opened else None
        )
    except ValueError:
        data["time_on_case_ms"] = None
    try:
        claims.case_decide(case=case, user=request.user, spec=DecisionSpec(**data))
    except claims.LeaseNotHeld:
        messages.error(
            request,
            "Your claim on this case has ended (expired or released); nothing was recorded.",
        )
        return redirect("reviews:queues")
    except DecisionRefused as exc:
        messages.error(request, f"Not recorded: {exc}")
        return HttpResponseRedirect(
            reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}"
        )
    messages.success(request, f"Case {case.id} decided.")
    return _claim_and_redirect(request, queue_slug)


@require_POST
@role_required(MODERATOR)
def case_release(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    claims.case_release(case=case, user=request.user, reason="released from the page")
    return redirect("reviews:queues")


def _reason(request) -> str | None:
    reason = request.POST.get("reason", "").strip()
    return reason[:500] if len(reason) >= 3 else None


def _pass_on(request, case_id: int, *, verb: str, service, done: str):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.POST.get("queue", "all")
    reason = _reason(request)
    if reason is None:
        messages.error(request, f"Say why you {verb} (at least 3 characters).")
        return HttpResponseRedirect(
            reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}"
        )
    if not service(case=case, user=request.user, reason=reason):
        messages.error(request, "Your claim on this case had already ended.")
        return redirect("reviews:queues")
    messages.info(request, done.format(id=case.id))
    return _claim_and_redirect(request, queue_slug)


@require_POST
@role_required(MODERATOR)
def case_skip(request, case_id: int):
    return _pass_on(
        request, case_id, verb="skip", service=claims.case_skip, done="Skipped case {id}."
    )


@require_POST
@role_required(MODERATOR)
def case_escalate(request, case_id: int):
    return _pass_on(
        request,
        case_id,
        verb="escalate",
        service=claims.case_escalate,
        done="Escalated case {id} to the senior queue.",
    )


@require_GET
@role_required(*CASE_READERS)
def listing_image(request, image_id: int):
    try:
        image = ListingImage.objects.get(id=image_id, state=ListingImage.State.STORED)
    except ListingImage.DoesNotExist as exc:
        raise Http404("no such image") from exc
    response = FileResponse(
        image.content.open("rb"), content_type=image.content_type or "application/octet-stream"
    )
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@role_required(*CASE_READERS)
def heatmap_overlay(request, heatmap_id: int):
    heatmap = Heatmap.objects.filter(id=heatmap_id).first()
    if heatmap is None:
        raise Http404("no such heatmap")
    response = FileResponse(heatmap.overlay.open("rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@role_required(*CASE_READERS)
def reference_image(request, reference_id: int):
    ref = ReferenceItem.objects.filter(id=reference_id).exclude(image_file="").first()
    if ref is None:
        raise Http404("no such reference image")
    response = FileResponse(ref.image_file.open("rb"), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_POST
def logout_view(request):
    if request.user.is_authenticated:
        claims.cases_release_all_for_user(user=request.user)
    logout(request)
    return redirect("login")


@require_http_methods(["GET", "POST"])
@role_required(*CASE_READERS)
def preferences(request):
    if request.method == "POST":
        preference_set(
            user=request.user,
            blur_images=request.POST.get("blur_images") == "on",
            greyscale_images=request.POST.get("greyscale_images") == "on",
        )
        messages.success(request, "Preferences saved.")
        return redirect("reviews:preferences")
    return render(request, "reviews/preferences.html", {"pref": preference_for(user=request.user)})


@require_http_methods(["GET", "POST"])
@role_required(MODERATOR)
def seller_bulk(request, seller_id: int):
    seller = Seller.objects.filter(id=seller_id).first()
    if seller is None:
        raise Http404("no such seller")
    cases = selectors.seller_pending_cases(seller_id=seller.id, user=request.user)
    if request.method == "GET":
        return render(
            request,
            "reviews/seller_bulk.html",
            {
                "seller": seller,
                "cases": cases,
                "policy_codes": POLICY_CODES,
                "actions": Decision.Action.choices,
            },
        )
    form = DecisionInput(data=request.POST)
    chosen = [int(x) for x in request.POST.getlist("case") if x.isdigit()]
    if request.POST.get("confirm") != "yes" or not chosen:
        messages.error(request, "Tick the listings and confirm that you reviewed them.")
        return redirect("reviews:seller_bulk", seller_id=seller.id)
    if not form.is_valid():
        for field, errors in form.errors.items():
            for error in errors:
                messages.error(request, f"{field}: {error}")
        return redirect("reviews:seller_bulk", seller_id=seller.id)
    allowed = {c.id for c in cases}
    decided = claims.cases_bulk_decide(
        user=request.user,
        case_ids=[c for c in chosen if c in allowed],
        seller_id=seller.id,
        spec=DecisionSpec(**form.validated_data),
    )
    messages.success(
        request,
        f"Decided {len(decided)} case{'s' if len(decided) != 1 else ''} of seller "
        f"{seller.external_id}.",
    )
    return redirect("reviews:queues")
