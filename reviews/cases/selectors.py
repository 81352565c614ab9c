"""Reads about cases and queues, including the one permission-checked fetch of a case."""

from django.db.models import Count, Min, Q
from django.http import Http404
from django.utils import timezone

from moderation_portal.core.access import (
    APPEALS,
    MODERATOR,
    POLICY_ADMIN,
    QA_LEAD,
    has_role,
    roles_of,
)
from reviews.cases.models import Case, Queue
from reviews.decisions.models import Decision

CASE_READERS = (MODERATOR, APPEALS, QA_LEAD, POLICY_ADMIN)


def cases_in_queue(qs, queue: Queue | None):
    """`qs` narrowed to the cases a queue holds (its kind and filters); no queue means review."""
    return (queue or Queue.default_review()).narrow(qs)


def case_get_for_user(*, case_id: int, user) -> Case:
    """The case with what a page or the API shows about it, if `user` may read it (else 404)."""
    if not has_role(user, *CASE_READERS):
        raise Http404("no such case")
    try:
        return (
            Case.objects.select_related(
                "policy",
                "listing",
                "listing__seller",
                "detection_event",
                "ladder_version",
                "claimed_by",
            )
            .prefetch_related("decisions__decided_by", "decisions__ladder_version")
            .get(id=case_id)
        )
    except Case.DoesNotExist as exc:
        raise Http404("no such case") from exc


def cases_for_listing(*, listing_external_id: str):
    return (
        Case.objects.select_related(
            "policy",
            "listing",
            "listing__seller",
            "detection_event",
            "ladder_version",
            "claimed_by",
        )
        .prefetch_related("decisions__decided_by", "decisions__ladder_version")
        .filter(listing__external_id=listing_external_id)
        .order_by("-created_at", "-id")
    )


def queues_for_user(*, user) -> list[Queue]:
    mine = roles_of(user)
    if not mine:
        return []
    groups = set(user.groups.values_list("name", flat=True))
    return [
        q
        for q in Queue.objects.all()
        if mine & set(q.roles) and (not q.groups or groups & set(q.groups))
    ]


def queue_get_for_user(*, slug: str, user) -> Queue:
    for queue in queues_for_user(user=user):
        if queue.slug == slug:
            return queue
    raise Http404("no such queue")


def queue_summaries(*, queues: list[Queue]) -> list[dict]:
    """Pending counts per policy, oldest case and SLA breaches, for each queue."""
    now = timezone.now()
    rows = list(
        Case.objects.filter(state__in=[Case.State.QUEUED, Case.State.CLAIMED])
        .values("queue_kind", "policy_id", "region", "language", "state")
        .annotate(
            n=Count("id"),
            oldest=Min("created_at"),
            breached=Count("id", filter=Q(sla_due_at__lt=now)),
        )
    )
    out = []
    for queue in queues:
        matching = [r for r in rows if queue.holds(r)]
        per_policy: dict[str, int] = {}
        for r in matching:
            if r["state"] == Case.State.QUEUED:
                per_policy[r["policy_id"]] = per_policy.get(r["policy_id"], 0) + r["n"]
        oldest = min(
            (r["oldest"] for r in matching if r["state"] == Case.State.QUEUED), default=None
        )
        out.append(
            {
                "queue": queue,
                "pending": sum(per_policy.values()),
                "claimed": sum(r["n"] for r in matching if r["state"] == Case.State.CLAIMED),
                "per_policy": sorted(per_policy.items(), key=lambda kv: (-kv[1], kv[0])),
                "oldest_age_seconds": int((now - oldest).total_seconds()) if oldest else None,
                "sla_breached": sum(r["breached"] for r in matching),
            }
        )
    return out


def seller_history(*, seller_id: int) -> dict:
    decided = (
        Decision.objects.filter(case__listing__seller_id=seller_id)
        .values("verdict")
        .annotate(n=Count("id"))
    )
    counts = {row["verdict"]: row["n"] for row in decided}
    return {
        "violations_confirmed": counts.get(Decision.Verdict.VIOLATION, 0),
        "cleared": counts.get(Decision.Verdict.NO_VIOLATION, 0),
        "open_cases": Case.objects.filter(
            listing__seller_id=seller_id, state__in=[Case.State.QUEUED, Case.State.CLAIMED]
        ).count(),
    }


def queue_pending_cases(*, queue: Queue, limit: int = 25) -> list[Case]:
    return list(
        cases_in_queue(
            Case.objects.filter(state__in=[Case.State.QUEUED, Case.State.CLAIMED]), queue
        )
        .select_related("policy", "listing", "claimed_by")
        .order_by("priority_key", "id")[:limit]
    )


def listing_earlier_cases(*, case: Case, limit: int = 10) -> list[Case]:
    return list(
        Case.objects.filter(listing_id=case.listing_id)
        .exclude(id=case.id)
        .select_related("policy")
        .prefetch_related("decisions")
        .order_by("-created_at")[:limit]
    )


def seller_pending_cases(*, seller_id: int, user) -> list[Case]:
    """Cases of a seller a moderator could decide in bulk: queued, or claimed by this moderator."""
    return list(
        Case.objects.filter(listing__seller_id=seller_id, queue_kind=Queue.Kind.REVIEW)
        .filter(Q(state=Case.State.QUEUED) | Q(state=Case.State.CLAIMED, claimed_by=user))
        .select_related("policy", "listing")
        .order_by("priority_key")[:200]
    )
