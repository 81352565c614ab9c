"""QA figures: agreement with Wilson intervals, Cohen's kappa and the confusion matrix per
policy, decision source, model and prompt version and reviewer; the auto-verification rate and
the reduction in human reviews; appeal and overturn rates of restricting decisions."""

import math
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from reviews.appeals.models import Appeal
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.qa.models import QaReview, QaSample


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cohen_kappa(matrix: dict) -> float | None:
    """Agreement beyond chance on violation / no violation. matrix[(original, qa)] = count."""
    labels = ("violation", "no_violation")
    n = sum(matrix.values())
    if n == 0:
        return None
    po = sum(matrix.get((label, label), 0) for label in labels) / n
    pe = sum(
        sum(matrix.get((label, other), 0) for other in labels)
        * sum(matrix.get((other, label), 0) for other in labels)
        for label in labels
    ) / (n * n)
    if pe >= 1:
        return None
    return (po - pe) / (1 - pe)


def _group_figures(reviews: list[QaReview]) -> dict:
    matrix: dict = {}
    agree = 0
    for r in reviews:
        original = r.sample.decision
        same = r.verdict == original.verdict and (
            r.verdict != "violation" or r.policy == (original.policy_id or "")
        )
        agree += same
        key = (original.verdict, r.verdict)
        matrix[key] = matrix.get(key, 0) + 1
    n = len(reviews)
    low, high = wilson(agree, n)
    return {
        "n": n,
        "agree": agree,
        "rate": agree / n if n else None,
        "ci_low": low,
        "ci_high": high,
        "kappa": cohen_kappa(matrix),
        "matrix": [
            [matrix.get((a, b), 0) for b in ("violation", "no_violation")]
            for a in ("violation", "no_violation")
        ],
    }


def qa_figures(*, days: int) -> dict:
    since = timezone.now() - timedelta(days=days)
    reviews = list(
        QaReview.objects.filter(created_at__gte=since).select_related(
            "sample__decision__llm_verdict",
            "sample__decision__decided_by",
            "sample__case__detection_event",
        )
    )
    groups: dict[str, dict[str, list]] = {"policy": {}, "source": {}, "model": {}, "reviewer": {}}
    for r in reviews:
        d = r.sample.decision
        groups["policy"].setdefault(r.sample.policy, []).append(r)
        groups["source"].setdefault(d.get_source_display(), []).append(r)
        if d.source == Decision.Source.LLM_VERIFIED and d.llm_verdict_id:
            model = f"LLM {d.llm_verdict.model} · prompt {d.llm_verdict.prompt_version}"
        elif d.source == Decision.Source.AUTOMATIC:
            ev = r.sample.case.detection_event
            model = f"detection {ev.model_name} {ev.model_version}"
        else:
            model = "people"
        groups["model"].setdefault(model, []).append(r)
        if d.decided_by_id:
            groups["reviewer"].setdefault(d.decided_by.get_username(), []).append(r)
    cases = Case.objects.filter(created_at__gte=since)
    routed = cases.aggregate(
        llm_band=Count("id", filter=Q(route=Case.Route.LLM_VERIFY)),
        human_band=Count("id", filter=Q(route=Case.Route.HUMAN_REVIEW)),
        verdicts=Count("id", filter=Q(llm_verdict__isnull=False)),
    )
    llm_verified = Decision.objects.filter(
        created_at__gte=since, source=Decision.Source.LLM_VERIFIED
    ).count()
    needing_people = routed["llm_band"] + routed["human_band"]
    return {
        "days": days,
        "overall": _group_figures(reviews),
        "groups": {
            name: {key: _group_figures(items) for key, items in sorted(g.items())}
            for name, g in groups.items()
        },
        "llm_band_cases": routed["llm_band"],
        "llm_verdicts": routed["verdicts"],
        "llm_verified": llm_verified,
        "auto_verification_rate": llm_verified / routed["llm_band"] if routed["llm_band"] else None,
        "human_reviews_without_llm": needing_people,
        "human_review_reduction": llm_verified / needing_people if needing_people else None,
        "pending_samples": QaSample.objects.filter(state=QaSample.State.PENDING).count(),
    }


RESTRICTING_ACTIONS = (Decision.Action.REMOVE, Decision.Action.WARN, Decision.Action.SUSPEND)
NO_LLM_VERDICT = "no LLM verdict"


def _appeal_row(counts: dict) -> dict:
    decisions, appealed = counts["decisions"], counts["appealed"]
    decided, overturned = counts["decided"], counts["overturned"]
    appeal_low, appeal_high = wilson(appealed, decisions)
    overturn_low, overturn_high = wilson(overturned, decided)
    return {
        "decisions": decisions,
        "appealed": appealed,
        "appeal_rate": appealed / decisions if decisions else None,
        "appeal_ci_low": appeal_low,
        "appeal_ci_high": appeal_high,
        "decided": decided,
        "overturned": overturned,
        "overturn_rate": overturned / decided if decided else None,
        "overturn_ci_low": overturn_low,
        "overturn_ci_high": overturn_high,
    }


def appeal_figures(*, days: int, since: datetime | None = None) -> dict:
    """Appeal and overturn rates of the restricting decisions (a violation with remove, warn or
    suspend) made in the last `days` days (or since `since`, for a page whose period starts
    on the clock), overall and per grouping. A decision counts as appealed if any appeal of it
    has arrived so far; the overturn rate is over its appeals decided so far. One aggregate
    query per grouping: the join to appeals repeats a decision per appeal, so decisions are
    counted distinct."""
    if since is None:
        since = timezone.now() - timedelta(days=days)
    restricting = Decision.objects.filter(
        created_at__gte=since,
        verdict=Decision.Verdict.VIOLATION,
        action__in=RESTRICTING_ACTIONS,
    )
    decided = Q(appeals__state=Appeal.State.DECIDED)
    counts = {
        "decisions": Count("id", distinct=True),
        "appealed": Count("id", distinct=True, filter=Q(appeals__isnull=False)),
        "decided": Count("appeals", distinct=True, filter=decided),
        "overturned": Count(
            "appeals", distinct=True, filter=decided & Q(appeals__outcome=Appeal.Outcome.OVERTURN)
        ),
    }
    source_labels = dict(Decision.Source.choices)
    groupings = {
        "policy": (restricting, ("policy_id",), lambda r: r["policy_id"] or "no policy"),
        "source": (restricting, ("source",), lambda r: source_labels.get(r["source"], r["source"])),
        "detection_model": (
            restricting,
            ("case__detection_event__model_name", "case__detection_event__model_version"),
            lambda r: (
                f"{r['case__detection_event__model_name']} "
                f"{r['case__detection_event__model_version']}"
            ),
        ),
        "llm": (
            restricting,
            ("llm_verdict__model", "llm_verdict__prompt_version"),
            lambda r: (
                f"{r['llm_verdict__model']} · prompt {r['llm_verdict__prompt_version']}"
                if r["llm_verdict__model"] is not None
                else NO_LLM_VERDICT
            ),
        ),
        "moderator": (
            restricting.filter(source=Decision.Source.HUMAN),
            ("decided_by__username",),
            lambda r: r["decided_by__username"],
        ),
    }
    groups = {}
    for name, (decisions, fields, key) in groupings.items():
        rows: dict[str, dict] = {}
        for r in decisions.order_by().values(*fields).annotate(**counts):
            # different values may read the same; each decision is in one row, so they add up
            total = rows.setdefault(key(r), dict.fromkeys(counts, 0))
            for field in counts:
                total[field] += r[field]
        groups[name] = {k: _appeal_row(rows[k]) for k in sorted(rows)}
    return {
        "days": days,
        "overall": _appeal_row(restricting.aggregate(**counts)),
        "groups": groups,
    }
