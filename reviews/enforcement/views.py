"""The operators' page (policy admins): enforcement delivery to the marketplace and statement
filing with the Transparency Database: what is pending, delivered, retrying or failed, each
message's attempts and last error, the receiver's state; redeliver, enable, resubmit."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from moderation_portal.core.access import POLICY_ADMIN, role_required
from reviews.enforcement import operations, selectors

MAX_IDS = 1000


def _ids(post) -> list[int] | None:
    """Checked ids from the form; None when one is not a positive whole number."""
    raw = post.getlist("ids")[: MAX_IDS + 1]
    if len(raw) > MAX_IDS:
        return None
    try:
        ids = [int(x) for x in raw]
    except ValueError:
        return None
    return ids if all(i > 0 for i in ids) else None


@require_GET
@role_required(POLICY_ADMIN)
def enforcement_page(request):
    state = request.GET.get("state") or ""
    if state and state not in selectors.MESSAGE_STATES:
        state = ""
    statement_state = request.GET.get("statements") or ""
    if statement_state and statement_state not in selectors.STATEMENT_STATES:
        statement_state = ""
    return render(
        request,
        "reviews/enforcement.html",
        {
            "status": selectors.delivery_status(),
            "state": state,
            "states": selectors.MESSAGE_STATES,
            "rows": selectors.messages_list(state=state or None),
            "statement_state": statement_state,
            "statement_states": selectors.STATEMENT_STATES,
            "statements": selectors.statements_list(state=statement_state or None),
        },
    )


@require_POST
@role_required(POLICY_ADMIN)
def enforcement_redeliver(request):
    ids = _ids(request.POST)
    failed = request.POST.get("failed") == "1"
    if ids is None:
        messages.error(request, "Those message ids are not valid.")
    elif not ids and not failed:
        messages.error(request, "Choose the messages to send again.")
    else:
        count = operations.redeliver(user=request.user, ids=ids, failed=failed)
        messages.success(request, f"{count} messages queued to be sent again (same webhook ids).")
    return redirect("reviews:enforcement")


@require_POST
@role_required(POLICY_ADMIN)
def enforcement_endpoint_enable(request):
    if operations.endpoint_enable(user=request.user):
        messages.success(request, "The receiver is enabled again; waiting messages will be sent.")
    else:
        messages.error(request, "The receiver was not disabled.")
    return redirect("reviews:enforcement")


@require_POST
@role_required(POLICY_ADMIN)
def statements_resubmit(request):
    ids = _ids(request.POST)
    rejected = request.POST.get("rejected") == "1"
    if ids is None:
        messages.error(request, "Those statement ids are not valid.")
    elif not ids and not rejected:
        messages.error(request, "Choose the statements to submit again.")
    else:
        count = operations.statements_resubmit(user=request.user, ids=ids, rejected=rejected)
        messages.success(request, f"{count} statements queued to be submitted again.")
    return redirect("reviews:enforcement")
