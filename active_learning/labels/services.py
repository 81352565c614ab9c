"""Training labels derived from judgements, with where each came from.

One label per (listing, policy) judgement. Every judgement a person makes becomes a training
label (`for_training`): a moderator's decision, a QA lead's correction or confirmation, an
appeal outcome, an answer in the labeling queue. A later judgement of the same (listing,
policy) supersedes the earlier one, which stays as history (`supersedes`, `is_current`).
Automatic and LLM-verified decisions nobody confirmed are kept as labels too, but never for
training: a model trained on its own outputs only learns its own mistakes back. They are
exported apart, for analysis.

Kinds: `positive` (a violation), `hard_negative` (a person found a flagged listing not
violating the flagged policy), `easy_negative` (not violating, and the item came from the
detection tier's random sample events or the monitor pool: it was not picked for looking bad).

Everything here runs inside the transaction of the judgement it derives from (the decision
path's `decisions_recorded` signal, a QA review, a labeling answer), so a label never exists
without its judgement nor a judgement without its label. `labels_rebuild` derives, once, the
labels of judgements recorded before this code existed.

Label ids are stable, so deriving twice writes nothing twice: `lbl-d<decision>-<policy>` for a
decision, `lbl-q<QA review>-<policy>` for a QA lead's confirmation of a machine decision,
`lbl-l<labeling item>` for a labeling answer.
"""

import hashlib
import hmac
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from active_learning.labeling.models import LabelingItem
from active_learning.labels.models import Label
from detection.models import DetectionEvent, Listing, ListingImage
from llm_verify.models import LlmVerdict
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.qa.models import QaReview

MACHINE = {
    Decision.Source.AUTOMATIC: Label.Source.AUTOMATIC,
    Decision.Source.LLM_VERIFIED: Label.Source.LLM_VERIFIED,
}
PERSON = {
    Decision.Source.HUMAN: Label.Source.HUMAN,
    Decision.Source.QA_CORRECTION: Label.Source.QA_CORRECTION,
    Decision.Source.APPEAL: Label.Source.APPEAL,
}


def pseudonym(user_id: int) -> str:
    """A stable pseudonymous id for a person: the export can tell one labeler from another
    (agreement, per-labeler noise) without naming anyone. Keyed, so ids cannot be reversed by
    hashing every user id; rotating LABEL_PSEUDONYM_KEY unlinks every exported id."""
    digest = hmac.new(
        settings.LABEL_PSEUDONYM_KEY.encode(), f"user:{user_id}".encode(), hashlib.sha256
    ).hexdigest()
    return f"rev-{digest[:12]}"


def content_hash(*, title: str, description: str, image_sha256s: list[str]) -> str:
    """sha256 of what was judged: the listing's text and its images' hashes in display order. A
    listing edited after its label has another hash, so training can drop stale labels."""
    canonical = json.dumps(
        {"title": title, "description": description, "images": image_sha256s},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def listing_content_hashes(listing_ids: set[int]) -> dict[int, str]:
    images: dict[int, list[str]] = defaultdict(list)
    for listing_id, sha in (
        ListingImage.objects.filter(listing_id__in=listing_ids)
        .order_by("listing_id", "position", "id")
        .values_list("listing_id", "sha256")
    ):
        images[listing_id].append(sha)
    return {
        row["id"]: content_hash(
            title=row["title"], description=row["description"], image_sha256s=images[row["id"]]
        )
        for row in Listing.objects.filter(id__in=listing_ids).values("id", "title", "description")
    }


def _negative_kind(*, event: DetectionEvent, case: Case, source: str) -> str:
    # An appeal is about an enforcement: whatever was overturned had been flagged and acted on.
    if source != Label.Source.APPEAL and (event.is_sample or case.route == Case.Route.MONITOR):
        return Label.Kind.EASY_NEGATIVE
    return Label.Kind.HARD_NEGATIVE


def _llm_shown(verdict: LlmVerdict | None) -> tuple[str, str]:
    """(model, prompt version) of a verdict the person saw; a failed call showed nothing."""
    if verdict is None or verdict.status != LlmVerdict.Status.OK:
        return "", ""
    return verdict.model, verdict.prompt_version


def _judgements(decision: Decision, case: Case, superseded: list[Label]) -> list[tuple[str, int]]:
    """(policy, label) pairs a decision judges. A violation judges its policy; no violation
    judges the case's flagged policy (an overturn names no policy). A person replacing a
    violation of another policy (a QA correction from firearms to drugs) also judges that
    policy not violated."""
    if decision.verdict == Decision.Verdict.VIOLATION:
        pairs = [(decision.policy_id or case.policy_id, 1)]
    else:
        pairs = [(case.policy_id, 0)]
    if decision.source in PERSON:
        judged = {policy for policy, _ in pairs}
        for old in superseded:
            if old.label == 1 and old.policy not in judged:
                pairs.append((old.policy, 0))
                judged.add(old.policy)
    return pairs


def labels_for_decisions(*, decisions: list[Decision]) -> list[Label]:
    """The labels of freshly recorded decisions (see the module), in their transaction. A
    decision that has labels already is skipped, so this is safe to call twice."""
    ids = [d.pk for d in decisions]
    done = set(
        Label.objects.filter(decision_id__in=ids).values_list("decision_id", flat=True).distinct()
    )
    todo = [d for d in decisions if d.pk not in done]
    if not todo:
        return []
    cases = {
        c.pk: c
        for c in Case.objects.filter(id__in={d.case_id for d in todo}).select_related(
            "detection_event", "llm_verdict"
        )
    }
    verdicts = LlmVerdict.objects.in_bulk({d.llm_verdict_id for d in todo if d.llm_verdict_id})
    hashes = listing_content_hashes({c.listing_id for c in cases.values()})
    superseded: dict[int, list[Label]] = defaultdict(list)
    for old in Label.objects.filter(decision_id__in={d.supersedes_id for d in todo} - {None}):
        superseded[old.decision_id].append(old)

    machine_rows: list[Label] = []
    written: list[Label] = []
    for decision in todo:
        case = cases[decision.case_id]
        event = case.detection_event
        verdict = verdicts.get(decision.llm_verdict_id) or case.llm_verdict
        llm_model, prompt_version = _llm_shown(verdict)
        source = MACHINE.get(decision.source) or PERSON[decision.source]
        old_labels = superseded.get(decision.supersedes_id, [])
        for policy, value in _judgements(decision, case, old_labels):
            label = Label(
                label_id=f"lbl-d{decision.pk}-{policy}",
                listing_id=case.listing_id,
                event=event,
                content_hash=hashes[case.listing_id],
                policy=policy,
                label=value,
                kind=Label.Kind.POSITIVE
                if value
                else _negative_kind(event=event, case=case, source=source),
                source=source,
                for_training=decision.source in PERSON,
                decided_by=pseudonym(decision.decided_by_id) if decision.decided_by_id else "",
                decided_at=decision.created_at,
                decision=decision,
                model_name=event.model_name,
                model_version=event.model_version,
                score=_score(event, policy),
                ladder_version=decision.ladder_version.version,
                llm_model=llm_model,
                prompt_version=prompt_version,
                trace_id=decision.trace_id,
            )
            if label.for_training:
                written.append(_training_label_add(label))
            else:
                machine_rows.append(label)
        if decision.source == Decision.Source.QA_CORRECTION and decision.supersedes_id:
            # QA disagreed with the decision it corrects: its labels say so, as history.
            Label.objects.filter(decision_id=decision.supersedes_id).update(qa_agreement=False)
    return Label.objects.bulk_create(machine_rows) + written


def _score(event: DetectionEvent, policy: str) -> float | None:
    value = (event.scores or {}).get(policy)
    return float(value) if isinstance(value, int | float) else None


def _training_label_add(label: Label) -> Label:
    """Save a training label as the current one of its (listing, policy), superseding the
    current one, or, for a judgement older than the current one (a backfill after newer labels
    exist), slot it into the history where its time puts it. A person's judgement also retires
    the machine labels of the pair from the analysis set."""
    _pair_lock(label.listing_id)
    chain = list(
        Label.objects.select_for_update()
        .filter(listing_id=label.listing_id, policy=label.policy, for_training=True)
        .order_by("-decided_at", "-id")
    )
    newer = [old for old in chain if old.decided_at > label.decided_at]
    if not newer:
        current = next((old for old in chain if old.is_current), None)
        if current is not None:
            current.is_current = False
            current.save(update_fields=["is_current"])
        label.supersedes = current
        label.is_current = True
        label.save()
        Label.objects.filter(
            listing_id=label.listing_id,
            policy=label.policy,
            for_training=False,
            is_current=True,
            decided_at__lte=label.decided_at,
        ).update(is_current=False)
        return label
    after = newer[-1]  # the earliest judgement later than this one
    before = after.supersedes
    after.supersedes = None
    after.save(update_fields=["supersedes"])
    label.supersedes = before
    label.is_current = False
    label.save()
    after.supersedes = label
    after.save(update_fields=["supersedes"])
    return label


LABEL_LOCK_CLASS = 7303  # advisory-lock namespace of label writes (7301: outbox, 7302: bank)


def _pair_lock(listing_id: int) -> None:
    """Hold, until the transaction ends, the lock on a listing's labels. Without it two
    judgements of one listing committing at once (two flags of it decided by two moderators)
    would both find no current label and the second would fail on the one-current-label
    constraint, taking the moderator's decision with it. SQLite serialises writers anyway."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [LABEL_LOCK_CLASS, listing_id % 2_147_483_647]
        )


def label_qa_review(*, review: QaReview) -> list[Label]:
    """A QA lead's review of a sampled decision, in its transaction. Agreeing marks the
    decision's labels `qa_agreement`; agreeing with a machine decision is a person confirming
    it, so it also becomes a training label (source qa_confirmed, decided by the QA lead, at the
    time of the review). A correction is a decision of its own (labels_for_decisions)."""
    if review.outcome != QaReview.Outcome.AGREE:
        return []
    decision = review.sample.decision
    labels = list(Label.objects.filter(decision_id=decision.pk))
    Label.objects.filter(decision_id=decision.pk).update(qa_agreement=True)
    written = []
    for machine in labels:
        if machine.for_training:
            continue
        label_id = f"lbl-q{review.pk}-{machine.policy}"
        if Label.objects.filter(label_id=label_id).exists():
            continue
        confirmed = Label(
            label_id=label_id,
            listing_id=machine.listing_id,
            event_id=machine.event_id,
            content_hash=machine.content_hash,
            policy=machine.policy,
            label=machine.label,
            kind=machine.kind,
            source=Label.Source.QA_CONFIRMED,
            for_training=True,
            decided_by=pseudonym(review.reviewer_id),
            decided_at=review.created_at,
            decision_id=decision.pk,
            model_name=machine.model_name,
            model_version=machine.model_version,
            score=machine.score,
            ladder_version=machine.ladder_version,
            llm_model=machine.llm_model,
            prompt_version=machine.prompt_version,
            qa_agreement=True,
            trace_id=machine.trace_id,
        )
        written.append(_training_label_add(confirmed))
    return written


def label_from_labeling_item(item: LabelingItem) -> Label | None:
    """The label of an answered labeling-queue item, in the answer's transaction: violation is
    a positive; no violation an easy negative when the item came from the monitor pool or a
    random sample event, else a hard negative; unsure is no label. The item's sampling strategy
    and inclusion probability travel with it, so training can weight by 1/p. Idempotent."""
    if item.state != LabelingItem.State.ANSWERED or item.answer not in (
        LabelingItem.Answer.VIOLATION,
        LabelingItem.Answer.NO_VIOLATION,
    ):
        return None
    label_id = f"lbl-l{item.pk}"
    existing = Label.objects.filter(label_id=label_id).first()
    if existing is not None:
        return existing
    case = Case.objects.select_related("detection_event", "llm_verdict", "ladder_version").get(
        pk=item.case_id
    )
    event = case.detection_event
    value = 1 if item.answer == LabelingItem.Answer.VIOLATION else 0
    llm_model, prompt_version = _llm_shown(case.llm_verdict)
    label = Label(
        label_id=label_id,
        listing_id=case.listing_id,
        event=event,
        content_hash=listing_content_hashes({case.listing_id})[case.listing_id],
        policy=item.policy,
        label=value,
        kind=Label.Kind.POSITIVE
        if value
        else _negative_kind(event=event, case=case, source=Label.Source.LABELING),
        source=Label.Source.LABELING,
        for_training=True,
        decided_by=pseudonym(item.answered_by_id) if item.answered_by_id else "",
        decided_at=item.answered_at,
        labeling_item=item,
        model_name=event.model_name,
        model_version=event.model_version,
        score=item.score,
        ladder_version=case.ladder_version.version,
        llm_model=llm_model,
        prompt_version=prompt_version,
        sampling_strategy=item.strategy,
        inclusion_probability=item.inclusion_probability,
        trace_id=case.trace_id,
    )
    with transaction.atomic():
        return _training_label_add(label)


@dataclass
class RebuildResult:
    decisions: int = 0
    qa_reviews: int = 0
    labeling_items: int = 0
    labels_written: int = 0


def labels_rebuild() -> RebuildResult:
    """Derive the labels of judgements recorded before labels existed, oldest first, so each
    supersedes what came before it. Only what has no label yet is derived: running it again
    writes nothing. One transaction per judgement, as when it was first recorded."""
    labelled = set(
        Label.objects.exclude(source=Label.Source.QA_CONFIRMED)
        .filter(decision__isnull=False)
        .values_list("decision_id", flat=True)
        .distinct()
    )
    agreed = set(
        Label.objects.filter(qa_agreement=True, decision__isnull=False)
        .values_list("decision_id", flat=True)
        .distinct()
    )
    answered = set(
        Label.objects.filter(labeling_item__isnull=False).values_list("labeling_item_id", flat=True)
    )
    stream: list[tuple[datetime, int, int, str]] = []
    for pk, at in Decision.objects.values_list("id", "created_at"):
        if pk not in labelled:
            stream.append((at, 0, pk, "decision"))
    for pk, at, decision_id in QaReview.objects.filter(outcome=QaReview.Outcome.AGREE).values_list(
        "id", "created_at", "sample__decision_id"
    ):
        if decision_id not in agreed:
            stream.append((at, 1, pk, "qa"))
    for pk, at in LabelingItem.objects.filter(state=LabelingItem.State.ANSWERED).values_list(
        "id", "answered_at"
    ):
        if pk not in answered:
            stream.append((at, 2, pk, "labeling"))
    stream.sort()
    result = RebuildResult()
    for _at, _rank, pk, what in stream:
        with transaction.atomic():
            if what == "decision":
                written = labels_for_decisions(decisions=[Decision.objects.get(pk=pk)])
                result.decisions += 1
            elif what == "qa":
                review = QaReview.objects.select_related("sample__decision").get(pk=pk)
                written = label_qa_review(review=review)
                result.qa_reviews += 1
            else:
                label = label_from_labeling_item(LabelingItem.objects.get(pk=pk))
                written = [label] if label else []
                result.labeling_items += 1
        result.labels_written += len(written)
    return result
