"""QA spot-checks: which decisions are sampled, the QA queue, reviews, and agreement figures.

Sampling probability of a decision:

    p = base rate × band factor × disagreement factor, capped at 1

- base rate: the ladder's `qa_rate` of the policy for automatic and LLM-verified decisions,
  `QA_HUMAN_SAMPLE_RATE` for human ones;
- band factor (stratified by confidence): the detection score's band is split in two halves;
  the lower half, nearer the threshold where mistakes are likelier, gets 1.5, the upper 0.5;
- disagreement factor: `QA_DISAGREEMENT_FACTOR` (3) when the LLM and the detection score
  disagree (the LLM did not say violation, or its confidence is 0.2 or more off the score).

The draw is deterministic per decision (a hash of its id), so sampling is reproducible, and
each sample keeps its weight 1/p for estimates over all decisions.
"""

import hashlib
import math
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from reviews.models import Case, Decision, Enforcement, QaReview, QaSample

LEASE = timedelta(minutes=10)


def _draw(decision_id: int) -> float:
    return int(hashlib.sha256(f"qa-sample:{decision_id}".encode()).hexdigest()[:12], 16) / float(1 << 48)


def _band(case: Case, source: str) -> tuple[str, float]:
    t = case.ladder_version.thresholds[case.policy_id]
    if source == Decision.Source.AUTOMATIC:
        low, high = t["remove"] if case.ladder_action == "remove" else t["warn"], 1.0
    elif source == Decision.Source.LLM_VERIFIED:
        low, high = t["llm_verify"], min(t["warn"], t["remove"])
    else:
        low, high = t["review"], 1.0
    mid = (low + high) / 2
    if case.score < mid:
        return f"{low:.2f}-{mid:.2f}", 1.5
    return f"{mid:.2f}-{high:.2f}", 0.5


def _disagreement(case: Case) -> bool:
    verdict = case.llm_verdict
    if verdict is None or verdict.status != "ok":
        return False
    return verdict.decision != "violation" or verdict.confidence is None or abs(verdict.confidence - case.score) >= 0.2


def sample_decision(*, decision: Decision, case: Case) -> QaSample | None:
    if decision.source == Decision.Source.AUTOMATIC:
        reason, base = QaSample.Reason.AUTOMATIC, case.ladder_version.thresholds[case.policy_id]["qa_rate"]
    elif decision.source == Decision.Source.LLM_VERIFIED:
        reason, base = QaSample.Reason.LLM_VERIFIED, case.ladder_version.thresholds[case.policy_id]["qa_rate"]
    elif decision.source == Decision.Source.HUMAN:
        reason, base = QaSample.Reason.HUMAN, settings.QA_HUMAN_SAMPLE_RATE
    else:
        return None
    band, band_factor = _band(case, decision.source)
    disagree = _disagreement(case)
    p = min(1.0, base * band_factor * (settings.QA_DISAGREEMENT_FACTOR if disagree else 1.0))
    if p <= 0 or _draw(decision.id) >= p:
        return None
    sample, _ = QaSample.objects.get_or_create(
        decision=decision,
        defaults={"case": case, "policy": case.policy_id, "reason": reason, "band": band, "disagreement": disagree,
                  "weight": 1.0 / p},
    )
    return sample


def qa_claim_next(*, user) -> QaSample | None:
    now = timezone.now()
    held = QaSample.objects.filter(state=QaSample.State.CLAIMED, claimed_by=user, lease_expires_at__gt=now).first()
    if held:
        return held
    QaSample.objects.filter(state=QaSample.State.CLAIMED, lease_expires_at__lt=now).update(
        state=QaSample.State.PENDING, claimed_by=None, lease_expires_at=None)
    for _ in range(10):
        candidate = (QaSample.objects.filter(state=QaSample.State.PENDING)
                     .exclude(decision__decided_by=user)  # nobody checks their own decisions
                     .order_by("-disagreement", "created_at").values_list("id", flat=True).first())
        if candidate is None:
            return None
        if QaSample.objects.filter(id=candidate, state=QaSample.State.PENDING).update(
                state=QaSample.State.CLAIMED, claimed_by=user, lease_expires_at=now + LEASE):
            return QaSample.objects.get(id=candidate)
    return None


class QaNotHeld(Exception):
    pass


def qa_review_record(*, sample: QaSample, user, outcome: str, verdict: str, policy: str | None, action: str,
                     notes: str = "") -> QaReview:
    """Agree, or correct: a correction is a new decision (source qa_correction) that supersedes
    the original and reverses its enforcement, through the same outbox."""
    from reviews.services import _after_decision, _notify_case, audit_record

    original = sample.decision
    now = timezone.now()
    with transaction.atomic():
        if not QaSample.objects.filter(id=sample.id, state=QaSample.State.CLAIMED, claimed_by=user).update(
                state=QaSample.State.REVIEWED, lease_expires_at=None):
            raise QaNotHeld("you do not hold this QA sample")
        correction = None
        if outcome == QaReview.Outcome.AGREE:
            verdict, policy, action = original.verdict, original.policy_id, original.action
        else:
            from reviews.services import ladder_active

            correction = Decision.objects.create(
                case=sample.case, verdict=verdict, policy_id=policy, action=action,
                notes=f"QA correction of decision {original.id}: {notes}"[:5000], source=Decision.Source.QA_CORRECTION,
                decided_by=user, ladder_version=ladder_active(), supersedes=original, trace_id=sample.case.trace_id,
                created_at=now,
            )
            previous = Enforcement.objects.filter(decision=original).first()
            if action != original.action:
                Enforcement.objects.create(
                    decision=correction, listing_id=sample.case.listing_id,
                    action=action if action != Decision.Action.NONE else f"reverse_{original.action}",
                    reverses=previous, created_at=now,
                )
            transaction.on_commit(lambda: _after_decision(correction))
        review = QaReview.objects.create(sample=sample, reviewer=user, outcome=outcome, verdict=verdict,
                                         policy=policy or "", action=action, notes=notes, correction=correction,
                                         created_at=now)
        audit_record(action="qa_reviewed", obj=sample.case, actor=user, trace_id=sample.case.trace_id,
                     data={"sample_id": sample.id, "decision_id": original.id, "outcome": outcome,
                           "correction_id": correction.id if correction else None})
        transaction.on_commit(_notify_case(sample.case_id, "decided"))
    return review


# --- figures ---------------------------------------------------------------------------------


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
        sum(matrix.get((label, other), 0) for other in labels) * sum(matrix.get((other, label), 0) for other in labels)
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
        same = r.verdict == original.verdict and (r.verdict != "violation" or r.policy == (original.policy_id or ""))
        agree += same
        key = (original.verdict, r.verdict)
        matrix[key] = matrix.get(key, 0) + 1
    n = len(reviews)
    low, high = wilson(agree, n)
    return {
        "n": n, "agree": agree, "rate": agree / n if n else None, "ci_low": low, "ci_high": high,
        "kappa": cohen_kappa(matrix),
        "matrix": [[matrix.get((a, b), 0) for b in ("violation", "no_violation")] for a in ("violation", "no_violation")],
    }


def qa_figures(*, days: int) -> dict:
    since = timezone.now() - timedelta(days=days)
    reviews = list(
        QaReview.objects.filter(created_at__gte=since)
        .select_related("sample__decision__llm_verdict", "sample__decision__decided_by", "sample__case__detection_event")
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
    llm_verified = Decision.objects.filter(created_at__gte=since, source=Decision.Source.LLM_VERIFIED).count()
    needing_people = routed["llm_band"] + routed["human_band"]
    return {
        "days": days,
        "overall": _group_figures(reviews),
        "groups": {name: {key: _group_figures(items) for key, items in sorted(g.items())} for name, g in groups.items()},
        "llm_band_cases": routed["llm_band"],
        "llm_verdicts": routed["verdicts"],
        "llm_verified": llm_verified,
        "auto_verification_rate": llm_verified / routed["llm_band"] if routed["llm_band"] else None,
        "human_reviews_without_llm": needing_people,
        "human_review_reduction": llm_verified / needing_people if needing_people else None,
        "pending_samples": QaSample.objects.filter(state=QaSample.State.PENDING).count(),
    }

