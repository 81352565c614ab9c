"""Statements of reasons (DSA Art. 17) in the EU DSA Transparency Database's format.

Every restricting decision (removal, warning, suspension) gets one, written in the decision's
transaction by `statements_create`, from the decision alone: the policy and its mapping in the
ladder version that decided (reviews/policies/statements.py), the evidence kinds the decision
rested on, who or what decided, and the dates. Nothing the seller wrote and no personal data
goes into it: listing titles, descriptions and seller ids stay out; the decision's id is the
platform's unique identifier (`puid`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from django.conf import settings

from detection.models import DetectionEvent, EnrichmentStep, HashMatch, Listing, ListingImage
from reviews.decisions.models import Decision
from reviews.enforcement.models import StatementOfReasons
from reviews.policies import statements as mapping_rules
from reviews.policies.models import LadderVersion, Policy

RESTRICTING = frozenset({Decision.Action.REMOVE, Decision.Action.WARN, Decision.Action.SUSPEND})
PUID_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")
MAX_FACTS = 5000
MAX_EXPLANATION = 2000

# ISO 639-1 codes the Transparency Database takes for content_language (upper case).
LANGUAGES = frozenset(
    [
        "BG",
        "CS",
        "DA",
        "DE",
        "EL",
        "EN",
        "ES",
        "ET",
        "FI",
        "FR",
        "GA",
        "HR",
        "HU",
        "IT",
        "LT",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SL",
        "SV",
        "AR",
        "BS",
        "CA",
        "EU",
        "GL",
        "HI",
        "HY",
        "IS",
        "JA",
        "KA",
        "KO",
        "LB",
        "MK",
        "NO",
        "RU",
        "SQ",
        "SR",
        "TR",
        "UK",
        "ZH",
        "HE",
        "FA",
        "UR",
    ]
)

AUTOMATED_DECISION = {
    # Nobody looked: the ladder's automatic tier.
    Decision.Source.AUTOMATIC: "AUTOMATED_DECISION_FULLY",
    # A language model confirmed a machine flag inside the ladder's LLM-verified band.
    Decision.Source.LLM_VERIFIED: "AUTOMATED_DECISION_PARTIALLY",
    # A moderator confirmed a machine flag, with the machine's evidence in front of them.
    Decision.Source.HUMAN: "AUTOMATED_DECISION_PARTIALLY",
    # A QA lead or an appeals reviewer decided afresh on an earlier decision.
    Decision.Source.QA_CORRECTION: "AUTOMATED_DECISION_NOT_AUTOMATED",
    Decision.Source.APPEAL: "AUTOMATED_DECISION_NOT_AUTOMATED",
}

WHO_DECIDED = {
    Decision.Source.AUTOMATIC: (
        "The score was at or above the ladder's automatic-{tier} threshold for this policy, "
        "so the action was taken without human review."
    ),
    Decision.Source.LLM_VERIFIED: (
        "The score fell in the ladder's LLM-verified band. A language model reviewed the "
        "listing against the written policy and agreed that it violates it, with a confidence "
        "at or above the ladder's minimum, so the action was taken without human review."
    ),
    Decision.Source.HUMAN: (
        "A trained moderator reviewed the listing and the evidence listed here and decided "
        "that it violates the policy."
    ),
    Decision.Source.QA_CORRECTION: (
        "A quality-assurance lead reviewed an earlier decision on this listing and corrected it."
    ),
    Decision.Source.APPEAL: (
        "On appeal, a reviewer other than the person who made the earlier decision reviewed it "
        "and decided that the listing violates the policy."
    ),
}

ACTION_TEXT = {
    Decision.Action.REMOVE: "The listing was removed from the marketplace.",
    Decision.Action.WARN: "The seller was warned; the listing was not removed by this decision.",
    Decision.Action.SUSPEND: "The seller's account was suspended.",
}

STEP_EVIDENCE = {
    EnrichmentStep.Name.HEATMAPS: "a Grad-CAM heatmap of the image regions that drove the score",
    EnrichmentStep.Name.NEIGHBOURS: "the most similar known violations and their past decisions",
    EnrichmentStep.Name.HASHES: "perceptual-hash comparison with known prohibited images",
}


def puid_for(decision_id: int) -> str:
    prefix = settings.DSA_PUID_PREFIX
    puid = f"{prefix}-decision-{decision_id}"
    if not PUID_PATTERN.fullmatch(puid):
        raise ValueError(f"DSA_PUID_PREFIX {prefix!r} makes an invalid puid {puid!r}")
    return puid


@dataclass(frozen=True)
class Facts:
    """What a statement is written from, gathered for many decisions in a few queries."""

    model_name: str
    model_version: str
    score: float
    listed_on: date
    language: str
    has_images: bool
    steps_done: tuple[str, ...]
    hash_matches: int


def _facts(decisions: list[Decision]) -> dict[int, Facts]:
    """A fixed number of queries however many decisions (ingest records them in bulk)."""
    cases = {d.pk: d.case for d in decisions}
    event_ids = {c.detection_event_id for c in cases.values()}
    listing_ids = {c.listing_id for c in cases.values()}
    events = {e.pk: e for e in DetectionEvent.objects.filter(pk__in=event_ids)}
    listings = {
        pk: (listed_at, language)
        for pk, listed_at, language in Listing.objects.filter(pk__in=listing_ids).values_list(
            "pk", "listed_at", "language"
        )
    }
    with_images = set(
        ListingImage.objects.filter(listing_id__in=listing_ids).values_list("listing_id", flat=True)
    )
    steps: dict[int, set[str]] = {}
    for event_id, name in EnrichmentStep.objects.filter(
        event_id__in=event_ids, state=EnrichmentStep.State.DONE
    ).values_list("event_id", "name"):
        steps.setdefault(event_id, set()).add(name)
    matches: dict[int, int] = {}
    for event_id in HashMatch.objects.filter(event_id__in=event_ids).values_list(
        "event_id", flat=True
    ):
        matches[event_id] = matches.get(event_id, 0) + 1
    out = {}
    for decision_id, case in cases.items():
        event = events[case.detection_event_id]
        listed_at, language = listings[case.listing_id]
        out[decision_id] = Facts(
            model_name=event.model_name,
            model_version=event.model_version,
            score=case.score,
            listed_on=listed_at.date(),
            language=language,
            has_images=case.listing_id in with_images,
            steps_done=tuple(
                s for s in EnrichmentStep.Name.values if s in steps.get(event.pk, set())
            ),
            hash_matches=matches.get(event.pk, 0),
        )
    return out


def _language(tag: str) -> str | None:
    code = re.split(r"[-_]", tag.strip(), maxsplit=1)[0].upper()
    return code if code in LANGUAGES else None


def _tier(decision: Decision) -> str:
    return {"remove": "removal", "warn": "warning"}.get(decision.action, decision.action)


def decision_facts(decision: Decision, facts: Facts, *, policy_name: str) -> str:
    """The facts and circumstances relied on, written from the decision (never from the seller's
    text). Plain sentences a seller can read."""
    evidence = [
        f"the automated detection model's score of {facts.score:.2f} for the policy "
        f"(model {facts.model_name} {facts.model_version})"
    ]
    if decision.source != Decision.Source.AUTOMATIC:
        evidence += [STEP_EVIDENCE[s] for s in facts.steps_done]
        if facts.hash_matches:
            evidence.append(f"{facts.hash_matches} perceptual-hash match(es) with known images")
        if decision.llm_verdict_id is not None:
            evidence.append("a language model's structured verdict on the listing")
    parts = [
        f'The listing was flagged by automated detection for the policy "{policy_name}".',
        WHO_DECIDED[decision.source].format(tier=_tier(decision)),
        "The decision rested on: " + "; ".join(evidence) + ".",
        ACTION_TEXT[decision.action],
        f"Enforcement ladder version {decision.ladder_version.version} applied.",
    ]
    return " ".join(parts)[:MAX_FACTS]


def statement_fields(
    decision: Decision, facts: Facts, *, mapping: dict, policy_name: str
) -> dict[str, object]:
    """The statement in the Transparency Database's field names and values."""
    policy = decision.policy_id
    assert policy is not None, "a restricting decision names its policy"
    row = mapping["policies"][policy]
    suffix = f" (Policy {policy}; enforcement ladder version {decision.ladder_version.version}.)"
    explanation = (row["explanation"] + suffix)[:MAX_EXPLANATION]
    statement: dict[str, object] = {
        "decision_visibility": None,
        "decision_account": None,
        "account_type": None,
        "decision_ground": row["decision_ground"],
        "category": row["category"],
        "category_specification": list(row["category_specification"]),
        "content_type": ["CONTENT_TYPE_PRODUCT", "CONTENT_TYPE_TEXT"]
        + (["CONTENT_TYPE_IMAGE"] if facts.has_images else []),
        "territorial_scope": list(mapping["territorial_scope"]),
        "content_language": _language(facts.language),
        "content_date": max(facts.listed_on, date(2000, 1, 1)).isoformat(),
        "application_date": decision.created_at.date().isoformat(),
        "decision_facts": decision_facts(decision, facts, policy_name=policy_name),
        "source_type": "SOURCE_VOLUNTARY",
        "automated_detection": "Yes",
        "automated_decision": AUTOMATED_DECISION[decision.source],
        "puid": puid_for(decision.pk),
    }
    if decision.action == Decision.Action.REMOVE:
        statement["decision_visibility"] = ["DECISION_VISIBILITY_CONTENT_REMOVED"]
    elif decision.action == Decision.Action.WARN:
        statement["decision_visibility"] = ["DECISION_VISIBILITY_OTHER"]
        statement["decision_visibility_other"] = (
            "Formal warning to the seller under the policy; the listing stays visible."
        )
    else:
        statement["decision_account"] = "DECISION_ACCOUNT_SUSPENDED"
    if row["decision_ground"] == mapping_rules.GROUND_ILLEGAL:
        statement["illegal_content_legal_ground"] = row["ground"]
        statement["illegal_content_explanation"] = explanation
    else:
        statement["incompatible_content_ground"] = row["ground"]
        statement["incompatible_content_explanation"] = explanation
        statement["incompatible_content_illegal"] = row.get("incompatible_content_illegal", "No")
    return statement


def _statements(decisions: list[Decision], mapping_of: dict[int, LadderVersion]) -> list[dict]:
    names = dict(Policy.objects.values_list("code", "name"))
    facts = _facts(decisions)
    out = []
    for decision in decisions:
        mapping = mapping_of[decision.pk].statement_mapping or mapping_rules.DEFAULT_MAPPING
        out.append(
            statement_fields(
                decision,
                facts[decision.pk],
                mapping=mapping,
                policy_name=names.get(decision.policy_id or "", decision.policy_id or ""),
            )
        )
    return out


def statements_create(decisions: list[Decision]) -> list[StatementOfReasons]:
    """Write the statements of the restricting decisions among `decisions` (saved already, in
    the caller's transaction), under the mapping of the ladder version each was decided by."""
    restricting = [d for d in decisions if d.action in RESTRICTING and d.policy_id]
    if not restricting:
        return []
    ladders = {
        ladder.pk: ladder
        for ladder in LadderVersion.objects.filter(
            pk__in={d.ladder_version_id for d in restricting}
        )
    }
    for decision in restricting:
        decision.ladder_version = ladders[decision.ladder_version_id]
    mapping_of = {d.pk: d.ladder_version for d in restricting}
    rows = [
        StatementOfReasons(
            decision=decision,
            puid=puid_for(decision.pk),
            statement=statement,
            ladder_version=decision.ladder_version,
            created_at=decision.created_at,
            next_attempt_at=decision.created_at,
            updated_at=decision.created_at,
        )
        for decision, statement in zip(
            restricting, _statements(restricting, mapping_of), strict=True
        )
    ]
    return StatementOfReasons.objects.bulk_create(rows)


def statements_rewrite(rows: list[StatementOfReasons], *, ladder: LadderVersion) -> int:
    """Write not-yet-filed statements again under `ladder`'s mapping (after a corrected mapping
    was published, for statements the database rejected). Filed ones never change."""
    rows = [r for r in rows if r.state != StatementOfReasons.State.SUBMITTED]
    if not rows:
        return 0
    decisions = list(
        Decision.objects.select_related("case", "ladder_version").filter(
            pk__in=[r.decision_id for r in rows]
        )
    )
    by_id = {d.pk: d for d in decisions}
    ordered = [by_id[r.decision_id] for r in rows]
    for row, statement in zip(
        rows, _statements(ordered, {d.pk: ladder for d in ordered}), strict=True
    ):
        row.statement, row.ladder_version = statement, ladder
    StatementOfReasons.objects.bulk_update(rows, ["statement", "ladder_version"])
    return len(rows)
