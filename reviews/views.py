import time

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from detection.models import ListingImage
from detection.policies import POLICY_CODES
from moderation_portal.roles import MODERATOR, has_role
from reviews import selectors, services
from reviews.models import Case, Decision
from reviews.selectors import CASE_READERS
from reviews.serializers import DecisionInput


def role_required(*roles):
    def decorator(view):
        @login_required
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        wrapped.__name__ = view.__name__
        wrapped.__doc__ = view.__doc__
        return wrapped

    return decorator


@require_GET
@login_required
def home(request):
    if has_role(request.user, *CASE_READERS):
        return redirect("reviews:queues")
    raise PermissionDenied("Your account has no role in the portal.")


def _queue_context(request) -> dict:
    summaries = selectors.queue_summaries(queues=selectors.queues_for_user(user=request.user))
    return {"summaries": summaries, "is_moderator": has_role(request.user, MODERATOR)}


@require_GET
@role_required(*CASE_READERS)
def queues(request):
    return render(request, "reviews/queues.html", _queue_context(request))


@require_GET
@role_required(*CASE_READERS)
def queues_fragment(request):
    return render(request, "reviews/_queue_table.html", _queue_context(request))


def _claim_and_redirect(request, queue_slug: str):
    queue = selectors.queue_get_for_user(slug=queue_slug, user=request.user)
    case = services.case_claim_next(user=request.user, queue=queue)
    if case is None:
        messages.info(request, f"No cases are waiting in “{queue.name}”.")
        return redirect("reviews:queues")
    return HttpResponseRedirect(reverse("reviews:case", args=[case.id]) + f"?queue={queue.slug}")


@require_POST
@role_required(MODERATOR)
def claim_next(request, slug: str):
    return _claim_and_redirect(request, slug)


@require_GET
@role_required(*CASE_READERS)
def case_page(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.GET.get("queue", "all")
    holds_claim = (
        case.state == Case.State.CLAIMED and case.claimed_by_id == request.user.id and has_role(request.user, MODERATOR)
    )
    context = {
        "case": case,
        "listing": case.listing,
        "seller": case.listing.seller,
        "event": case.detection_event,
        "images": list(case.listing.images.all()),
        "scores": sorted(case.detection_event.scores.items(), key=lambda kv: -kv[1]),
        "decisions": list(case.decisions.all()),
        "history": selectors.seller_history(seller_id=case.listing.seller_id),
        "holds_claim": holds_claim,
        "queue_slug": queue_slug,
        "policy_codes": POLICY_CODES,
        "verdicts": Decision.Verdict.choices,
        "actions": Decision.Action.choices,
        "opened_at_ms": int(time.time() * 1000),
    }
    return render(request, "reviews/case.html", context)


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
        return HttpResponseRedirect(reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}")
    data = dict(form.validated_data)
    try:
        opened = int(request.POST.get("opened_at_ms", "0"))
        data["time_on_case_ms"] = max(0, min(int(time.time() * 1000) - opened, 86_400_000)) if opened else None
    except ValueError:
        data["time_on_case_ms"] = None
    try:
        services.decision_record(case=case, user=request.user, data=services.DecisionInput(**data))
    except services.LeaseNotHeld:
        messages.error(request, "Your claim on this case has ended (expired or released); nothing was recorded.")
        return redirect("reviews:queues")
    messages.success(request, f"Case {case.id} decided.")
    return _claim_and_redirect(request, queue_slug)


@require_POST
@role_required(MODERATOR)
def case_release(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    services.case_release(case=case, user=request.user, reason="released from the page")
    return redirect("reviews:queues")


def _reason(request) -> str | None:
    reason = request.POST.get("reason", "").strip()
    return reason[:500] if len(reason) >= 3 else None


@require_POST
@role_required(MODERATOR)
def case_skip(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.POST.get("queue", "all")
    reason = _reason(request)
    if reason is None:
        messages.error(request, "Say why you skip (at least 3 characters).")
        return HttpResponseRedirect(reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}")
    if not services.case_skip(case=case, user=request.user, reason=reason):
        messages.error(request, "Your claim on this case had already ended.")
        return redirect("reviews:queues")
    messages.info(request, f"Skipped case {case.id}.")
    return _claim_and_redirect(request, queue_slug)


@require_POST
@role_required(MODERATOR)
def case_escalate(request, case_id: int):
    case = selectors.case_get_for_user(case_id=case_id, user=request.user)
    queue_slug = request.POST.get("queue", "all")
    reason = _reason(request)
    if reason is None:
        messages.error(request, "Say why you escalate (at least 3 characters).")
        return HttpResponseRedirect(reverse("reviews:case", args=[case.id]) + f"?queue={queue_slug}")
    if not services.case_escalate(case=case, user=request.user, reason=reason):
        messages.error(request, "Your claim on this case had already ended.")
        return redirect("reviews:queues")
    messages.info(request, f"Escalated case {case.id} to the senior queue.")
    return _claim_and_redirect(request, queue_slug)


@require_GET
@role_required(*CASE_READERS)
def listing_image(request, image_id: int):
    try:
        image = ListingImage.objects.get(id=image_id, state=ListingImage.State.STORED)
    except ListingImage.DoesNotExist as exc:
        raise Http404("no such image") from exc
    response = FileResponse(image.content.open("rb"), content_type=image.content_type or "application/octet-stream")
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_POST
def logout_view(request):
    if request.user.is_authenticated:
        services.cases_release_all_for_user(user=request.user)
    logout(request)
    return redirect("login")
