"""LLM verification of medium-confidence cases: the context a verdict may rest on, and what a
verdict may change. The verdict never changes the rules: only a case in the ladder's
LLM-verifiable band, still waiting for a human, whose verdict agrees with the detection tier
(violation, same policy, confidence at or above the ladder's `llm_min_confidence`) is actioned,
and then only with the action the ladder gives that band, whatever the model recommended."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from llm_verify.models import LlmVerdict
from llm_verify.services import configured, verdict_obtain
from moderation_portal.core import live, metrics
from moderation_portal.core.audit import AuditAction, audit_record
from moderation_portal.core.tracing import log_context
from reviews.cases import selectors
from reviews.cases.evidence import case_evidence
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, decision_record

logger = logging.getLogger(__name__)
# Longer than a verification may run: past the task's hard time limit its worker is gone.
STALE_VERIFICATION = timedelta(minutes=10)
CONTEXT_ITEMS = 6  # similar cases and hash matches the prompt carries at most


def verification_stale_after() -> timedelta:
    """How long after it started a verification still running belongs to a dead worker: the
    client gives up at LLM_DEADLINE_SECONDS, twice that leaves room for building the context and
    recording the verdict (with the defaults, the task's hard time limit), and never more than
    STALE_VERIFICATION. Taking one over early costs a second question, never a second decision:
    only the latest claim's verdict is applied."""
    return min(STALE_VERIFICATION, timedelta(seconds=2 * settings.LLM_DEADLINE_SECONDS))


def verification_stale_in(*, case_id: int) -> float | None:
    """Seconds until the case's running verification may be taken over (0 when it may now);
    None when none is running."""
    started = (
        Case.objects.filter(id=case_id, llm_state=Case.LlmState.RUNNING, llm_verdict__isnull=True)
        .values_list("llm_started_at", flat=True)
        .first()
    )
    if started is None:
        return None
    left = started + verification_stale_after() - timezone.now()
    return max(0.0, left.total_seconds())


def context_for_case(case: Case) -> dict:
    """The verdict's context (llm_verify.context.VerdictContext), from the same evidence the
    moderator's page shows."""
    listing, event, seller = case.listing, case.detection_event, case.listing.seller
    evidence = case_evidence(case)
    images = []
    for img in evidence["images"]:
        note = f"{img.width}x{img.height}" if img.width else img.get_state_display()
        for hm in img.heatmaps_for_case[:1]:
            note += f"; image model p({hm.policy})={hm.probability:.2f}"
        images.append({"id": img.external_id, "note": note})
    # a violation a person took back since (an overturn, a QA correction) is a cleared case now
    similar = [
        {
            "case_id": str(n["case_id"]) if n["case_id"] else f"bank-{n['reference_id']}",
            "similarity": round(float(n["similarity"]), 3),
            "policy": None if n["overturned"] else n["policy"],
            "decision": "no_violation" if n["overturned"] else "violation",
            "action": "none" if n["overturned"] else n["action"],
            "title": (n["title"] or "")[:200],
        }
        for n in evidence["neighbours"][:CONTEXT_ITEMS]
    ]
    matches = [
        {
            "match_id": f"hash-{m['id']}",
            "image_id": m["image_external_id"],
            "distance": m["distance"],
            "policy": m["policy"],
            "decision": (
                "formerly known-bad image: the decision that banned it was overturned"
                if m["withdrawn"]
                else "known-bad image"
            ),
        }
        for m in evidence["hash_matches"][:CONTEXT_ITEMS]
    ]
    history = selectors.seller_history(seller_id=seller.id)
    return {
        "listing": {
            "id": listing.external_id,
            "title": listing.title,
            "description": listing.description,
            "price": f"{listing.price_amount} {listing.price_currency}",
            "category": listing.category,
            "region": listing.region,
            "language": listing.language,
            "images": images,
        },
        "detection": {
            "model": event.model_name,
            "model_version": event.model_version,
            "scores": event.scores,
            "modality_scores": event.modality_scores,
            "reason_codes": event.reason_codes,
        },
        "similar_cases": similar,
        "hash_matches": matches,
        "seller": {
            "id": seller.external_id,
            "facts": {
                "account_age_days": max(0, (timezone.now() - seller.account_created_at).days),
                "prior_violations": seller.prior_violations,
                "country": seller.country,
                "confirmed_violations_here": history["violations_confirmed"],
                "cleared_here": history["cleared"],
            },
        },
        "policy": {"code": case.policy_id, "guideline": case.policy.guideline},
    }


def verdict_agrees(case: Case, verdict: LlmVerdict) -> tuple[bool, str]:
    threshold = case.ladder_version.thresholds[case.policy_id]["llm_min_confidence"]
    if verdict.status != LlmVerdict.Status.OK:
        return False, f"no usable verdict ({verdict.get_status_display()})"
    if verdict.decision != "violation":
        return False, f"the LLM says {verdict.decision.replace('_', ' ')}"
    if verdict.policy != case.policy_id:
        return (
            False,
            f"the LLM names {verdict.policy or 'no policy'}, the detection tier {case.policy_id}",
        )
    if verdict.confidence is None or verdict.confidence < threshold:
        return False, f"LLM confidence {verdict.confidence} is below {threshold}"
    return (
        True,
        f"the LLM agrees ({verdict.policy}, confidence {verdict.confidence:.2f} ≥ {threshold})",
    )


def case_apply_verdict(*, case: Case, verdict: LlmVerdict, claimed_at=None) -> Decision | None:
    """Record the verdict on the case; action it only when the ladder allows (see the module).
    With `claimed_at` (when this verification claimed the case), only while that claim still
    holds: a verification another worker took over since records nothing on the case."""
    agrees, why = verdict_agrees(case, verdict)
    llm_state = {
        LlmVerdict.Status.OK: Case.LlmState.DONE,
        LlmVerdict.Status.UNAVAILABLE: Case.LlmState.UNAVAILABLE,
    }.get(verdict.status, Case.LlmState.FAILED)
    now = timezone.now()
    with transaction.atomic():
        rows = Case.objects.filter(id=case.id)
        if claimed_at is not None:
            rows = rows.filter(llm_state=Case.LlmState.RUNNING, llm_started_at=claimed_at)
        if not rows.update(llm_state=llm_state, llm_verdict=verdict):
            logger.warning(
                "LLM verdict %s for case %s not applied: the verification was taken over",
                verdict.id,
                case.id,
            )
            return None
        case.llm_state, case.llm_verdict = llm_state, verdict
        decision = None
        in_band = case.route == Case.Route.LLM_VERIFY and case.ladder_action in (
            Decision.Action.REMOVE,
            Decision.Action.WARN,
        )
        # only while no human holds it: a moderator who claimed it decides it
        if (
            agrees
            and in_band
            and Case.objects.filter(id=case.id, state=Case.State.QUEUED).update(
                state=Case.State.CLOSED, decided_at=now
            )
        ):
            decision = decision_record(
                case=case,
                source=Decision.Source.LLM_VERIFIED,
                ladder=case.ladder_version,
                llm_verdict=verdict,
                label=f"llm:{verdict.model}",
                now=now,
                spec=DecisionSpec(
                    verdict=Decision.Verdict.VIOLATION,
                    policy=case.policy_id,
                    action=case.ladder_action,
                    notes=f"LLM-verified: {why}",
                ),
                audit_data={"llm_verdict_id": verdict.id},
            )
        reason = f"LLM verdict {verdict.id}: {why}" + (
            "; actioned" if decision else "; a human decides"
        )
        audit_record(
            action=AuditAction.LLM_VERDICT_RECORDED,
            obj=case,
            label=f"llm:{verdict.model}",
            trace_id=case.trace_id,
            data={
                "verdict_id": verdict.id,
                "status": verdict.status,
                "decision": verdict.decision,
                "confidence": verdict.confidence,
                "prompt_version": verdict.prompt_version,
                "actioned": decision is not None,
                "reason": reason,
                "decision_id": decision.id if decision else None,
            },
        )
        live.changed_on_commit(case_id=case.id, what="verdict")
    return decision


def llm_run_for_case(*, case_id: int) -> LlmVerdict | None:
    """Claim the case's pending verification, ask, and apply. Safe to run twice."""
    if not configured():
        unverified = Case.objects.filter(id=case_id, llm_state=Case.LlmState.PENDING).update(
            llm_state=Case.LlmState.NOT_CONFIGURED
        )
        if metrics.ENABLED and unverified:
            metrics.LLM_VERDICTS.labels("not_configured").inc(unverified)
        return None
    now = timezone.now()
    claimed = Case.objects.filter(id=case_id, llm_state=Case.LlmState.PENDING).update(
        llm_state=Case.LlmState.RUNNING, llm_started_at=now
    )
    if not claimed:
        # a verification that died mid-way (killed worker) is taken again once it is clearly stale
        claimed = Case.objects.filter(
            id=case_id,
            llm_state=Case.LlmState.RUNNING,
            llm_verdict__isnull=True,
            llm_started_at__lt=now - verification_stale_after(),
        ).update(llm_started_at=now)
        if not claimed:
            return None
    case = Case.objects.select_related(
        "listing__seller", "detection_event", "policy", "ladder_version"
    ).get(id=case_id)
    with log_context(
        trace_id=case.trace_id,
        case_id=case.pk,
        listing_id=case.listing.external_id,
        seller_id=case.listing.seller.external_id,
        model_version=case.detection_event.model_version,
    ):
        try:
            verdict = verdict_obtain(
                event_id=case.detection_event_id, context=context_for_case(case)
            )
        except Exception:
            Case.objects.filter(
                id=case_id, llm_state=Case.LlmState.RUNNING, llm_started_at=now
            ).update(llm_state=Case.LlmState.FAILED)
            logger.exception("LLM verification of case %s failed", case_id)
            raise
        case_apply_verdict(case=case, verdict=verdict, claimed_at=now)
    return verdict
