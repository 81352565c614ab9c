"""Writes of the reviews app: opening cases, claims (leases), decisions, enforcement, audit."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from detection.models import DetectionEvent, Listing
from moderation_portal.tracing import trace
from reviews import ladder as ladder_rules
from reviews import selectors
from reviews.models import (
    AuditEvent,
    Case,
    CaseSkip,
    Decision,
    Enforcement,
    LadderVersion,
    Policy,
    Queue,
)
from reviews.routing import priority_key

logger = logging.getLogger(__name__)

SYSTEM = "system"


def _actor_label(user) -> str:
    return user.get_username() if user is not None else SYSTEM


def audit_record(*, action: str, obj, actor=None, trace_id: str = "", data: dict | None = None) -> AuditEvent:
    event = AuditEvent.objects.create(
        actor=actor,
        actor_label=_actor_label(actor),
        action=action,
        object_type=type(obj).__name__.lower(),
        object_id=str(obj.pk),
        trace_id=trace_id,
        data=data or {},
    )
    with trace(trace_id or None):
        logger.info("audit %s %s %s by %s", action, event.object_type, event.object_id, event.actor_label)
    return event


def ladder_active() -> LadderVersion:
    ladder = LadderVersion.objects.filter(is_active=True, state=LadderVersion.State.PUBLISHED).first()
    if ladder is None:
        raise LadderVersion.DoesNotExist("no active ladder version; run the migrations")
    return ladder


def llm_configured() -> bool:
    return bool(settings.LLM_BASE_URL and settings.LLM_MODEL)


def cases_open_for_events(*, events: list[DetectionEvent]) -> list[Case]:
    """Open one case per newly accepted detection event and route it by the active ladder.

    Runs inside the ingest transaction (detection's `events_accepted` signal).
    """
    ladder = ladder_active()
    policies = {p.code: p for p in Policy.objects.all()}
    now = timezone.now()
    listings = {
        row["id"]: row
        for row in Listing.objects.filter(id__in={e.listing_id for e in events}).values(
            "id", "region", "language", "seller_id"
        )
    }
    reach = dict(
        Listing.objects.filter(seller_id__in={row["seller_id"] for row in listings.values()})
        .values("seller_id")
        .annotate(n=Count("id"))
        .values_list("seller_id", "n")
    )
    llm_ready = llm_configured()
    cases: list[Case] = []
    for event in events:
        policy = policies[event.top_policy]
        thresholds = ladder.thresholds[policy.code]
        routed = ladder_rules.route(event.top_score, thresholds)
        route, reason = routed.route, routed.reason
        listing = listings[event.listing_id]
        sla_due = event.emitted_at + timedelta(hours=thresholds["sla_hours"])
        state, llm_state, queue_kind = Case.State.QUEUED, Case.LlmState.NOT_APPLICABLE, Queue.Kind.REVIEW
        if route == Case.Route.LLM_VERIFY:
            if llm_ready:
                llm_state = Case.LlmState.PENDING
            else:
                llm_state = Case.LlmState.NOT_CONFIGURED
                reason += "; LLM verifier not configured, so a human reviews it"
        elif route == Case.Route.AUTO_ACTION and routed.suspension_review:
            queue_kind = Queue.Kind.ESCALATION  # the removal is automatic; the suspension is a person's call
        elif route in (Case.Route.AUTO_ACTION, Case.Route.MONITOR, Case.Route.ALLOW):
            state = Case.State.CLOSED
        cases.append(
            Case(
                detection_event=event,
                listing_id=event.listing_id,
                trace_id=event.trace_id,
                policy=policy,
                score=event.top_score,
                region=listing["region"],
                language=listing["language"],
                route=route,
                route_reason=reason[:200],
                ladder_version=ladder,
                ladder_action=routed.action,
                suspension_review=routed.suspension_review,
                state=state,
                queue_kind=queue_kind,
                priority_key=priority_key(
                    sla_due_at=sla_due,
                    severity=thresholds["severity"],
                    score=event.top_score,
                    seller_listings=reach.get(listing["seller_id"], 0),
                ),
                sla_due_at=sla_due,
                llm_state=llm_state,
                created_at=now,
                decided_at=now if state == Case.State.CLOSED and route == Case.Route.AUTO_ACTION else None,
            )
        )
    Case.objects.bulk_create(cases)

    decisions = [
        Decision(
            case=case,
            verdict=Decision.Verdict.VIOLATION,
            policy=case.policy,
            action=case.ladder_action,
            notes=case.route_reason,
            source=Decision.Source.AUTOMATIC,
            ladder_version=ladder,
            trace_id=case.trace_id,
            created_at=now,
        )
        for case in cases
        if case.route == Case.Route.AUTO_ACTION
    ]
    Decision.objects.bulk_create(decisions)
    from reviews.qa import sample_decision

    for decision in decisions:
        sample_decision(decision=decision, case=decision.case)
    Enforcement.objects.bulk_create(
        [Enforcement(decision=d, listing_id=d.case.listing_id, action=d.action, created_at=now) for d in decisions]
    )
    audits = [
        AuditEvent(
            actor_label="detection-tier",
            action="case_opened",
            object_type="case",
            object_id=str(case.pk),
            trace_id=case.trace_id,
            data={
                "event_id": case.detection_event.event_id,
                "route": case.route,
                "reason": case.route_reason,
                "ladder_version": ladder.version,
                "policy": case.policy_id,
                "score": case.score,
            },
            created_at=now,
        )
        for case in cases
    ] + [
        AuditEvent(
            actor_label=SYSTEM,
            action="decision_recorded",
            object_type="case",
            object_id=str(d.case_id),
            trace_id=d.trace_id,
            data={"decision_id": d.pk, "source": d.source, "verdict": d.verdict, "action": d.action},
            created_at=now,
        )
        for d in decisions
    ]
    AuditEvent.objects.bulk_create(audits)
    for case in cases:
        with trace(case.trace_id):
            logger.info("case %s opened: %s", case.pk, case.route_reason)
    to_enrich = [c.detection_event_id for c in cases if c.route != Case.Route.ALLOW]
    to_verify = [c.pk for c in cases if c.llm_state == Case.LlmState.PENDING]
    transaction.on_commit(lambda: _after_cases_opened(to_enrich, to_verify))
    return cases


def _after_cases_opened(event_ids: list[int], verify_case_ids: list[int]) -> None:
    from detection.tasks import enrich_event_task
    from reviews import live
    from reviews.tasks import llm_verify_case_task

    live.notify_queues_changed()
    for event_id in event_ids:
        try:
            enrich_event_task.apply_async(args=[event_id])
        except Exception:  # noqa: BLE001 - the case exists and is reviewable; enrichment shows as pending
            logger.warning("could not enqueue enrichment of event %s", event_id, exc_info=True)
    # The verification normally starts when enrichment finishes (reviews.receivers); this is the
    # fallback for enrichment that is slow or stuck: then the LLM verifies with what there is.
    for case_id in verify_case_ids:
        try:
            llm_verify_case_task.apply_async(args=[case_id], countdown=settings.LLM_WAIT_FOR_ENRICHMENT_SECONDS)
        except Exception:  # noqa: BLE001
            logger.warning("could not enqueue the LLM verification of case %s", case_id, exc_info=True)


HUMAN_CONFIRMATIONS = {Decision.Source.HUMAN, Decision.Source.QA_CORRECTION, Decision.Source.APPEAL}


def _after_decision(decision: Decision) -> None:
    """A violation confirmed by a person becomes a reference for similar flags."""
    if decision.verdict != Decision.Verdict.VIOLATION or decision.source not in HUMAN_CONFIRMATIONS:
        return
    from detection.tasks import reference_add_task

    try:
        reference_add_task.apply_async(args=[decision.pk, decision.case_id, decision.case.detection_event_id,
                                             decision.policy_id, decision.action, decision.created_at.isoformat()])
    except Exception:  # noqa: BLE001
        logger.warning("could not enqueue the reference embedding of decision %s", decision.pk, exc_info=True)


# --- claims -----------------------------------------------------------------------------------


# A moderator who skipped or escalated a case is not offered it again for this long.
SKIP_MEMORY = timedelta(hours=12)


def leases_release_expired() -> int:
    """Give expired claims back to their queue. Called by beat and, cheaply, before claims."""
    now = timezone.now()
    expired = list(
        Case.objects.filter(state=Case.State.CLAIMED, lease_expires_at__lt=now).values_list("id", "trace_id", "claimed_by_id")
    )
    released = 0
    for case_id, trace_id, user_id in expired:
        if Case.objects.filter(id=case_id, state=Case.State.CLAIMED, lease_expires_at__lt=now).update(
            state=Case.State.QUEUED, claimed_by=None, claimed_at=None, lease_expires_at=None
        ):
            released += 1
            AuditEvent.objects.create(
                actor_label=SYSTEM, action="lease_expired", object_type="case", object_id=str(case_id),
                trace_id=trace_id, data={"claimed_by": user_id},
            )
    if released:
        transaction.on_commit(_notify)
    return released


def _notify(case_id: int | None = None, what: str = "state") -> None:
    from reviews import live

    live.notify_queues_changed()
    if case_id is not None:
        live.notify_case_changed(case_id, what)


def _notify_case(case_id: int, what: str = "state"):
    return lambda: _notify(case_id, what)


def _claim_statement(queue: Queue | None, vendor_skip_locked: bool) -> tuple[str, list]:
    """The claim as one statement, for a queue's filters (hot path: no ORM compilation).

    Returns SQL with placeholders, and the queue's own parameters in the order they appear;
    the caller supplies the claim's values around them (see case_claim_next).
    """
    table = Case._meta.db_table
    skips = CaseSkip._meta.db_table
    kind = queue.kind if queue else Queue.Kind.REVIEW
    filters, filter_params = ["queue_kind = %s"], [kind]
    if queue is not None:
        for column, values in (("policy_id", queue.policies), ("region", queue.regions), ("language", queue.languages)):
            if values:
                filters.append(f"{column} IN ({', '.join(['%s'] * len(values))})")
                filter_params.extend(values)
    where = " AND ".join(filters)
    lock = " FOR UPDATE SKIP LOCKED" if vendor_skip_locked else ""
    sql = (
        f"UPDATE {table} SET state = %s, claimed_by_id = %s, claimed_at = %s, lease_expires_at = %s "
        f"WHERE id = (SELECT id FROM {table} WHERE state = %s AND {where} "
        f"AND id NOT IN (SELECT case_id FROM {skips} WHERE user_id = %s AND created_at >= %s) "
        f"ORDER BY priority_key, id LIMIT 1{lock}) "
        f"AND state = %s "
        f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE state = %s AND claimed_by_id = %s AND lease_expires_at > %s AND {where}) "
        f"RETURNING *"
    )
    return sql, filter_params


def case_claim_next(*, user, queue: Queue | None = None) -> Case | None:
    """Give `user` the highest-priority unclaimed case of the queue, under a lease.

    A user who already holds a live claim in the queue gets that case again. Two claimers never
    get the same case: one statement takes the first unlocked queued row
    (`UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING *`), so concurrent
    claimers pass over each other's rows instead of waiting. On PostgreSQL the claim's audit
    event is written by the same statement (a data-modifying CTE), which is atomic on its own:
    one round trip a claim. On SQLite, which has no row locks, the statement and the audit event
    run in one transaction and write transactions are serialised.
    """
    from django.db import connection

    now = timezone.now()
    lease_until = now + timedelta(seconds=settings.CLAIM_LEASE_SECONDS)
    sql, queue_params = _claim_statement(queue, connection.features.has_select_for_update_skip_locked)
    Q_, C_ = Case.State.QUEUED, Case.State.CLAIMED
    params = [C_, user.pk, now, lease_until, Q_, *queue_params, user.pk, now - SKIP_MEMORY, Q_, C_, user.pk, now,
              *queue_params]
    audit_data = {"queue": queue.slug if queue else None, "lease_expires_at": lease_until.isoformat()}
    if connection.vendor == "postgresql":
        audit_table = AuditEvent._meta.db_table
        sql = (
            f"WITH taken AS ({sql}), audit AS ("
            f"INSERT INTO {audit_table} (created_at, actor_id, actor_label, action, object_type, object_id, trace_id, data) "
            f"SELECT %s, %s, %s, 'case_claimed', 'case', taken.id::text, taken.trace_id, %s::jsonb FROM taken) "
            f"SELECT * FROM taken"
        )
        import json

        params += [now, user.pk, user.get_username(), json.dumps(audit_data)]
        taken = list(Case.objects.raw(sql, params))
        case = taken[0] if taken else None
    else:
        with transaction.atomic():
            taken = list(Case.objects.raw(sql, params))
            case = taken[0] if taken else None
            if case is not None:
                AuditEvent.objects.create(
                    actor=user, actor_label=user.get_username(), action="case_claimed", object_type="case",
                    object_id=str(case.pk), trace_id=case.trace_id, data=audit_data,
                )
    if case is None:
        return (
            selectors.cases_in_queue(Case.objects.filter(state=C_, claimed_by=user, lease_expires_at__gt=now), queue)
            .order_by("claimed_at")
            .first()
        )
    transaction.on_commit(_notify_case(case.pk, "claimed"))  # at once in autocommit; after an outer commit
    return case


def case_release(*, case: Case, user, reason: str = "released") -> bool:
    with transaction.atomic():
        released = Case.objects.filter(id=case.id, state=Case.State.CLAIMED, claimed_by=user).update(
            state=Case.State.QUEUED, claimed_by=None, claimed_at=None, lease_expires_at=None
        )
        if released:
            audit_record(action="case_released", obj=case, actor=user, trace_id=case.trace_id, data={"reason": reason})
            transaction.on_commit(_notify_case(case.id, "released"))
    return bool(released)


def case_heartbeat(*, case: Case, user) -> Case | None:
    """Extend a live claim while its page is open. None when the claim is gone (expired, released)."""
    now = timezone.now()
    expires = now + timedelta(seconds=settings.CLAIM_LEASE_SECONDS)
    if not Case.objects.filter(
        id=case.id, state=Case.State.CLAIMED, claimed_by=user, lease_expires_at__gt=now
    ).update(lease_expires_at=expires):
        return None
    case.lease_expires_at = expires
    return case


def case_skip(*, case: Case, user, reason: str) -> bool:
    """Give the case back to its queue with a reason; this moderator is not offered it again."""
    with transaction.atomic():
        released = Case.objects.filter(id=case.id, state=Case.State.CLAIMED, claimed_by=user).update(
            state=Case.State.QUEUED, claimed_by=None, claimed_at=None, lease_expires_at=None
        )
        if not released:
            return False
        CaseSkip.objects.create(case=case, user=user, reason=reason)
        audit_record(action="case_skipped", obj=case, actor=user, trace_id=case.trace_id, data={"reason": reason})
        transaction.on_commit(_notify_case(case.id, "released"))
    return True


def case_escalate(*, case: Case, user, reason: str) -> bool:
    """Move a claimed case to the senior escalation queue, with a reason."""
    with transaction.atomic():
        moved = Case.objects.filter(id=case.id, state=Case.State.CLAIMED, claimed_by=user).update(
            state=Case.State.QUEUED, queue_kind=Queue.Kind.ESCALATION, claimed_by=None, claimed_at=None,
            lease_expires_at=None,
        )
        if not moved:
            return False
        CaseSkip.objects.create(case=case, user=user, reason=reason, escalated=True)
        audit_record(action="case_escalated", obj=case, actor=user, trace_id=case.trace_id, data={"reason": reason})
        transaction.on_commit(_notify_case(case.id, "escalated"))
    return True


def cases_release_all_for_user(*, user) -> int:
    count = 0
    for case in Case.objects.filter(state=Case.State.CLAIMED, claimed_by=user):
        count += case_release(case=case, user=user, reason="logout")
    return count


# --- decisions --------------------------------------------------------------------------------


class LeaseNotHeld(Exception):
    pass


@dataclass(frozen=True)
class DecisionInput:
    verdict: str
    policy: str | None
    action: str
    notes: str = ""
    time_on_case_ms: int | None = None


def decision_record(*, case: Case, user, data: DecisionInput) -> Decision:
    """Record a moderator's decision. The caller must hold a live lease on the case."""
    now = timezone.now()
    with transaction.atomic():
        closed = Case.objects.filter(
            id=case.id, state=Case.State.CLAIMED, claimed_by=user, lease_expires_at__gt=now
        ).update(state=Case.State.DECIDED, decided_at=now, claimed_by=None, lease_expires_at=None)
        if closed != 1:
            raise LeaseNotHeld("you do not hold a live claim on this case")
        ladder = ladder_active()
        decision = Decision.objects.create(
            case=case,
            verdict=data.verdict,
            policy_id=data.policy,
            action=data.action,
            notes=data.notes,
            source=Decision.Source.HUMAN,
            decided_by=user,
            ladder_version=ladder,
            time_on_case_ms=data.time_on_case_ms,
            trace_id=case.trace_id,
            created_at=now,
        )
        if data.action != Decision.Action.NONE:
            Enforcement.objects.create(decision=decision, listing_id=case.listing_id, action=data.action, created_at=now)
        from reviews.qa import sample_decision

        sample_decision(decision=decision, case=case)
        audit_record(
            action="decision_recorded",
            obj=case,
            actor=user,
            trace_id=case.trace_id,
            data={
                "decision_id": decision.pk,
                "source": decision.source,
                "verdict": decision.verdict,
                "policy": decision.policy_id,
                "action": decision.action,
                "ladder_version": ladder.version,
                "time_on_case_ms": data.time_on_case_ms,
            },
        )
        transaction.on_commit(_notify_case(case.id, "decided"))
        transaction.on_commit(lambda: _after_decision(decision))
    return decision


# --- the policy ladder ------------------------------------------------------------------------


def ladder_draft_save(*, user, thresholds: dict, notes: str = "") -> LadderVersion:
    """Create or update the one shared draft. `thresholds` must be validated already."""
    with transaction.atomic():
        draft = LadderVersion.objects.select_for_update().filter(state=LadderVersion.State.DRAFT).first()
        active = ladder_active()
        if draft is None:
            draft = LadderVersion.objects.create(
                state=LadderVersion.State.DRAFT, thresholds=thresholds, notes=notes, based_on=active, created_by=user
            )
            action = "ladder_draft_created"
        else:
            draft.thresholds, draft.notes, draft.updated_at = thresholds, notes, timezone.now()
            draft.save(update_fields=["thresholds", "notes", "updated_at"])
            action = "ladder_draft_saved"
        audit_record(action=action, obj=draft, actor=user,
                     data={"based_on": active.version, "changes": ladder_rules.diff(active.thresholds, thresholds)})
    return draft


def ladder_draft_discard(*, user) -> bool:
    with transaction.atomic():
        draft = LadderVersion.objects.select_for_update().filter(state=LadderVersion.State.DRAFT).first()
        if draft is None:
            return False
        audit_record(action="ladder_draft_discarded", obj=draft, actor=user)
        draft.delete()
    return True


def _activate(version: LadderVersion) -> None:
    LadderVersion.objects.filter(is_active=True).update(is_active=False)
    LadderVersion.objects.filter(id=version.id).update(is_active=True)
    # The policies' displayed severity and SLA follow the active version.
    for code, row in version.thresholds.items():
        Policy.objects.filter(code=code).update(severity=row["severity"], sla_hours=row["sla_hours"])


def ladder_publish(*, user) -> LadderVersion:
    """Turn the draft into the next immutable version and make it active."""
    from django.db.models import Max

    with transaction.atomic():
        draft = LadderVersion.objects.select_for_update().filter(state=LadderVersion.State.DRAFT).first()
        if draft is None:
            raise LadderVersion.DoesNotExist("there is no draft to publish")
        ladder_rules.validate(draft.thresholds)  # never publish what does not validate
        previous = ladder_active()
        number = (LadderVersion.objects.aggregate(n=Max("version"))["n"] or 0) + 1
        now = timezone.now()
        LadderVersion.objects.filter(id=draft.id).update(
            state=LadderVersion.State.PUBLISHED, version=number, published_by=user, published_at=now
        )
        draft.refresh_from_db()
        _activate(draft)
        audit_record(action="ladder_published", obj=draft, actor=user,
                     data={"version": number, "previous": previous.version,
                           "changes": ladder_rules.diff(previous.thresholds, draft.thresholds)})
        draft.refresh_from_db()
    return draft


def ladder_activate(*, user, version: LadderVersion) -> LadderVersion:
    """Make an earlier published version active again (a rollback), audited."""
    with transaction.atomic():
        previous = ladder_active()
        if version.state != LadderVersion.State.PUBLISHED:
            raise ValueError("only published versions can be activated")
        _activate(version)
        audit_record(action="ladder_activated", obj=version, actor=user,
                     data={"version": version.version, "previous": previous.version})
    version.refresh_from_db()
    return version


# --- bulk decisions and preferences -----------------------------------------------------------


def cases_bulk_decide(*, user, case_ids: list[int], seller_id: int, data: DecisionInput) -> list[int]:
    """Decide several of a seller's pending cases at once (after the moderator confirmed the list).

    Each case is taken by the same conditional claim as claim-next, so a case a colleague holds
    or decided meanwhile is left alone. Returns the ids decided.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.CLAIM_LEASE_SECONDS)
    decided = []
    for case in Case.objects.filter(id__in=case_ids, listing__seller_id=seller_id, queue_kind=Queue.Kind.REVIEW):
        with transaction.atomic():
            taken = Case.objects.filter(id=case.id, state=Case.State.QUEUED).update(
                state=Case.State.CLAIMED, claimed_by=user, claimed_at=now, lease_expires_at=now + lease
            ) or Case.objects.filter(id=case.id, state=Case.State.CLAIMED, claimed_by=user).exists()
            if not taken:
                continue
            decision_record(case=case, user=user, data=data)
            decided.append(case.id)
    if decided:
        AuditEvent.objects.create(
            actor=user, actor_label=user.get_username(), action="bulk_decision", object_type="seller",
            object_id=str(seller_id), data={"cases": decided, "verdict": data.verdict, "action": data.action},
        )
    return decided


def preference_set(*, user, blur_images: bool, greyscale_images: bool):
    from reviews.models import UserPreference

    pref, _ = UserPreference.objects.update_or_create(
        user=user, defaults={"blur_images": blur_images, "greyscale_images": greyscale_images, "updated_at": timezone.now()}
    )
    return pref
