"""Which decisions QA leads spot-check.

Sampling probability of a decision:

    p = base rate × band factor × disagreement factor, capped at 1

- base rate: the ladder's `qa_rate` of the policy for automatic and LLM-verified decisions,
  `QA_HUMAN_SAMPLE_RATE` for human ones; corrections and appeal outcomes are not sampled;
- band factor (stratified by confidence): the detection score's band is split in two halves;
  the lower half, nearer the threshold where mistakes are likelier, gets 1.5, the upper 0.5;
- disagreement factor: `QA_DISAGREEMENT_FACTOR` (3) when the LLM and the detection score
  disagree (the LLM did not say violation, or its confidence is 0.2 or more off the score).

The draw is deterministic per decision (a hash of its id), so sampling is reproducible, and
each sample keeps its weight 1/p for estimates over all decisions.
"""

import hashlib

from django.conf import settings

from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.qa.models import QaSample

BAND_FACTOR_NEAR_THRESHOLD = 1.5
BAND_FACTOR_FAR = 0.5
DISAGREEMENT_DISTANCE = 0.2


def draw(decision_id: int) -> float:
    """A uniform number in [0, 1) fixed by the decision's id."""
    return int(hashlib.sha256(f"qa-sample:{decision_id}".encode()).hexdigest()[:12], 16) / float(
        1 << 48
    )


def confidence_band(case: Case, source: str) -> tuple[str, float]:
    t = case.ladder_version.thresholds[case.policy_id]
    if source == Decision.Source.AUTOMATIC:
        low, high = t["remove"] if case.ladder_action == "remove" else t["warn"], 1.0
    elif source == Decision.Source.LLM_VERIFIED:
        low, high = t["llm_verify"], min(t["warn"], t["remove"])
    else:
        low, high = t["review"], 1.0
    mid = (low + high) / 2
    if case.score < mid:
        return f"{low:.2f}-{mid:.2f}", BAND_FACTOR_NEAR_THRESHOLD
    return f"{mid:.2f}-{high:.2f}", BAND_FACTOR_FAR


def llm_disagrees(case: Case) -> bool:
    verdict = case.llm_verdict
    if verdict is None or verdict.status != "ok":
        return False
    return (
        verdict.decision != "violation"
        or verdict.confidence is None
        or abs(verdict.confidence - case.score) >= DISAGREEMENT_DISTANCE
    )


def sample_probability(
    decision: Decision, case: Case
) -> tuple[QaSample.Reason | None, str, float, bool]:
    """(reason, band, probability, disagreement) for `decision`; reason None when never sampled."""
    if decision.source == Decision.Source.AUTOMATIC:
        reason, base = (
            QaSample.Reason.AUTOMATIC,
            case.ladder_version.thresholds[case.policy_id]["qa_rate"],
        )
    elif decision.source == Decision.Source.LLM_VERIFIED:
        reason, base = (
            QaSample.Reason.LLM_VERIFIED,
            case.ladder_version.thresholds[case.policy_id]["qa_rate"],
        )
    elif decision.source == Decision.Source.HUMAN:
        reason, base = QaSample.Reason.HUMAN, settings.QA_HUMAN_SAMPLE_RATE
    else:
        return None, "", 0.0, False
    band, band_factor = confidence_band(case, decision.source)
    disagree = llm_disagrees(case)
    p = min(1.0, base * band_factor * (settings.QA_DISAGREEMENT_FACTOR if disagree else 1.0))
    return reason, band, p, disagree


def qa_sample_for(*, decision: Decision, case: Case) -> QaSample | None:
    """The QA sample of `decision` if the draw picks it (idempotent)."""
    reason, band, p, disagree = sample_probability(decision, case)
    if reason is None or p <= 0 or draw(decision.id) >= p:
        return None
    sample, _ = QaSample.objects.get_or_create(
        decision=decision,
        defaults={
            "case": case,
            "policy": case.policy_id,
            "reason": reason,
            "band": band,
            "disagreement": disagree,
            "weight": 1.0 / p,
        },
    )
    return sample
