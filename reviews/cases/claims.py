"""Moderators' claims on cases: claim-next under a lease, heartbeat, release, skip, escalate,
expiry, and the human decision that ends a claim. The lease mechanics are the portal's one
lease implementation (moderation_portal.core.leases)."""

import functools
import json
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from moderation_portal.core import live, metrics
from moderation_portal.core.audit import (
    SYSTEM,
    AuditAction,
    actor_label,
    audit_event,
    audit_record,
)
from moderation_portal.core.leases import (
    LeaseSpec,
    lease_expire,
    lease_finish,
    lease_heartbeat,
    lease_return,
    lease_take,
)
from moderation_portal.core.models import AuditEvent
from reviews.cases.metrics import CLAIMED, EMPTY, claim_record
from reviews.cases.models import Case, CaseSkip, Queue
from reviews.decisions.models import Decision
from reviews.decisions.services import DecisionSpec, decision_latest, decision_record
from reviews.policies.services import ladder_active

# A moderator who skipped or escalated a case is not offered it again for this long.
SKIP_MEMORY = timedelta(hours=12)


def case_lease() -> LeaseSpec:
    return LeaseSpec(
        model=Case,
        waiting=Case.State.QUEUED,
        claimed=Case.State.CLAIMED,
        seconds=settings.CLAIM_LEASE_SECONDS,
    )


class LeaseNotHeld(Exception):
    pass


def leases_release_expired() -> int:
    """Give expired claims back to their queue. Called by beat and, cheaply, before claims."""
    given_back = lease_expire(case_lease())
    if given_back:
        traces = dict(
            Case.objects.filter(id__in=[pk for pk, _ in given_back]).values_list("id", "trace_id")
        )
        AuditEvent.objects.bulk_create(
            [
                audit_event(
                    action=AuditAction.LEASE_EXPIRED,
                    object_type="case",
                    object_id=pk,
                    label=SYSTEM,
                    trace_id=traces.get(pk, ""),
                    data={"claimed_by": holder},
                )
                for pk, holder in given_back
            ]
        )
        live.changed_on_commit()
    return len(given_back)


@functools.cache
def _default_queue() -> Queue:
    """The stand-in for no queue given (every review case): unsaved and unchanging, made once."""
    return Queue.default_review()


def _claim_columns() -> list[str]:
    """The case's columns a claim returns, in the model's field order (Case.from_db's)."""
    return [f.column for f in Case._meta.concrete_fields]


@functools.cache
def _claim_statement(shape: tuple[tuple[str, int], ...], skip_locked: bool, vendor: str) -> str:
    """The claim as one statement, built once per queue shape (the hot path: no ORM).

    `shape` is the queue's rule as (column, number of values). Placeholders, in order: the
    claim's state, holder, claimed-at and lease end; the waiting state and the queue's values;
    the skip list's user and horizon; the held-claim check (claimed state, holder, now, the
    queue's values again); on PostgreSQL then the audit event's created-at, actor, label,
    action and data.
    """
    table, skips = Case._meta.db_table, CaseSkip._meta.db_table
    lease = case_lease()
    where = " AND ".join(f"{column} IN ({', '.join(['%s'] * n)})" for column, n in shape)
    state, holder, expires = lease.state_field, f"{lease.holder_field}_id", lease.expires_field
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    columns = ", ".join(_claim_columns())
    sql = (
        f"UPDATE {table} SET {state} = %s, {holder} = %s, {lease.claimed_at_field} = %s, "
        f"{expires} = %s "
        f"WHERE id = (SELECT id FROM {table} WHERE {state} = %s AND {where} "
        f"AND id NOT IN (SELECT case_id FROM {skips} WHERE user_id = %s AND created_at >= %s) "
        f"ORDER BY priority_key, id LIMIT 1{lock}) "
        f"AND {state} = %s "
        f"AND NOT EXISTS (SELECT 1 FROM {table} WHERE {state} = %s AND {holder} = %s AND "
        f"{expires} > %s AND {where}) "
        f"RETURNING {columns}"
    )
    if vendor != "postgresql":
        return sql
    # The audit event in the same statement (a data-modifying CTE): atomic on its own, and one
    # round trip a claim.
    audit_table = AuditEvent._meta.db_table
    return (
        f"WITH taken AS ({sql}), audit AS ("
        f"INSERT INTO {audit_table} (created_at, actor_id, actor_label, action, object_type, "
        f"object_id, trace_id, data) "
        f"SELECT %s, %s, %s, %s, 'case', taken.id::text, taken.trace_id, %s::jsonb FROM taken) "
        f"SELECT {columns} FROM taken"
    )


def _claim_row(sql: str, params: list) -> Case | None:
    """Run the claim statement; the claimed case (every column, as the ORM loads it) or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return Case.from_db(connection.alias, None, _claim_converted(row))


def _claim_converted(row: tuple) -> tuple:
    converters = _claim_converters(connection.vendor)
    if not converters:
        return row
    values = list(row)
    for i, convert, col in converters:
        values[i] = convert(values[i], col, connection)
    return tuple(values)


@functools.cache
def _claim_converters(vendor: str) -> tuple:
    """The backend's value converters for the returned columns, as the ORM applies them (none
    on PostgreSQL)."""
    found = []
    for i, field in enumerate(Case._meta.concrete_fields):
        col = field.get_col(Case._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
            found.append((i, convert, col))
    return tuple(found)


def case_claim_next(*, user, queue: Queue | None = None) -> Case | None:
    """Give `user` the highest-priority unclaimed case of the queue, under a lease.

    A user who already holds a live claim in the queue gets that case again. Two claimers never
    get the same case: one statement takes the first unlocked queued row
    (`UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) … RETURNING …`), so concurrent
    claimers pass over each other's rows instead of waiting. On PostgreSQL the claim's audit
    event is written by the same statement (a data-modifying CTE), which is atomic on its own:
    one round trip a claim, built once per queue shape, the row read into a Case without the
    ORM's query machinery. On SQLite, which has no row locks, the statement and the audit event
    run in one transaction and write transactions are serialised.
    """
    started = time.perf_counter()
    queue = queue or _default_queue()
    lease = case_lease()
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease.seconds)
    rule = queue.filters()
    vendor = connection.vendor
    sql = _claim_statement(
        tuple((column, len(values)) for column, values in rule),
        connection.features.has_select_for_update_skip_locked,
        vendor,
    )
    queue_params = [value for _, values in rule for value in values]
    waiting, claimed = lease.waiting, lease.claimed
    params = [
        claimed,
        user.pk,
        now,
        lease_until,
        waiting,
        *queue_params,
        user.pk,
        now - SKIP_MEMORY,
        waiting,
        claimed,
        user.pk,
        now,
        *queue_params,
    ]
    audit_data = {
        "queue": queue.slug if queue.pk else None,
        "lease_expires_at": lease_until.isoformat(),
    }
    if vendor == "postgresql":
        params += [
            now,
            user.pk,
            actor_label(user),
            AuditAction.CASE_CLAIMED.value,
            json.dumps(audit_data),
        ]
        case = _claim_row(sql, params)
        if case is None:
            # Under heavy contention for the head of the queue the statement can come back
            # empty while cases wait (seen with 32 claimers in bench/claim.py: no claim held,
            # a million cases queued); one more try before answering that nothing waits.
            case = _claim_row(sql, params)
    else:
        with transaction.atomic():
            case = _claim_row(sql, params)
            if case is not None:
                audit_record(
                    action=AuditAction.CASE_CLAIMED,
                    obj=case,
                    actor=user,
                    trace_id=case.trace_id,
                    data=audit_data,
                )
    if case is None:
        held = queue.narrow(Case.objects.filter(**lease.held_by(user, now)))
        case = held.order_by("claimed_at").first()
    else:
        live.changed_on_commit(
            case_id=case.pk, what="claimed"
        )  # at once in autocommit; after an outer commit
    if metrics.ENABLED:
        claim_record(
            queue=queue,
            outcome=CLAIMED if case is not None else EMPTY,
            seconds=time.perf_counter() - started,
        )
    return case


def _give_back(
    *, case: Case, user, action: AuditAction, reason: str, escalate: bool = False
) -> bool:
    """Release, skip or escalate: the case goes back to a queue, with the reason audited."""
    also = {"queue_kind": Queue.Kind.ESCALATION} if escalate else {}
    with transaction.atomic():
        if not lease_return(case_lease(), pk=case.id, user=user, **also):
            return False
        if action != AuditAction.CASE_RELEASED:
            CaseSkip.objects.create(case=case, user=user, reason=reason, escalated=escalate)
        audit_record(
            action=action, obj=case, actor=user, trace_id=case.trace_id, data={"reason": reason}
        )
        live.changed_on_commit(case_id=case.id, what="escalated" if escalate else "released")
    return True


def case_release(*, case: Case, user, reason: str = "released") -> bool:
    return _give_back(case=case, user=user, action=AuditAction.CASE_RELEASED, reason=reason)


def case_skip(*, case: Case, user, reason: str) -> bool:
    """Give the case back to its queue with a reason; this moderator is not offered it again."""
    return _give_back(case=case, user=user, action=AuditAction.CASE_SKIPPED, reason=reason)


def case_escalate(*, case: Case, user, reason: str) -> bool:
    """Move a claimed case to the senior escalation queue, with a reason."""
    return _give_back(
        case=case, user=user, action=AuditAction.CASE_ESCALATED, reason=reason, escalate=True
    )


def case_heartbeat(*, case: Case, user) -> Case | None:
    """Extend a live claim while its page is open. None when the claim is
    gone (expired, released).
    """
    until = lease_heartbeat(case_lease(), pk=case.id, user=user)
    if until is None:
        return None
    case.lease_expires_at = until
    return case


def cases_release_all_for_user(*, user) -> int:
    held = Case.objects.filter(**case_lease().held_by(user))
    return sum(case_release(case=case, user=user, reason="logout") for case in held)


def case_decide(*, case: Case, user, spec: DecisionSpec) -> Decision:
    """A moderator's decision: ends the caller's live claim and records the decision."""
    now = timezone.now()
    with transaction.atomic():
        if not lease_finish(
            case_lease(),
            pk=case.id,
            user=user,
            state=Case.State.DECIDED,
            now=now,
            decided_at=now,
            claimed_by=None,
        ):
            raise LeaseNotHeld("you do not hold a live claim on this case")
        # A case the ladder acted on (an escalation for suspension) has a standing decision;
        # the person's decision supersedes it, so nothing is enforced twice.
        return decision_record(
            case=case,
            source=Decision.Source.HUMAN,
            spec=spec,
            ladder=ladder_active(),
            user=user,
            supersedes=decision_latest(case),
            now=now,
        )


def cases_bulk_decide(
    *, user, case_ids: list[int], seller_id: int, spec: DecisionSpec
) -> list[int]:
    """Decide several of a seller's pending cases at once (after the moderator confirmed the list).

    Each case is taken by the same conditional claim as claim-next, so a case a colleague holds
    or decided meanwhile is left alone. Returns the ids decided.
    """
    lease = case_lease()
    decided = []
    for case in Case.objects.filter(
        id__in=case_ids, listing__seller_id=seller_id, queue_kind=Queue.Kind.REVIEW
    ):
        with transaction.atomic():
            mine = (
                lease_take(lease, pk=case.id, user=user)
                or Case.objects.filter(id=case.id, **lease.held_by(user)).exists()
            )
            if not mine:
                continue
            case_decide(case=case, user=user, spec=spec)
            decided.append(case.id)
    if decided:
        audit_record(
            action=AuditAction.BULK_DECISION,
            object_type="seller",
            object_id=seller_id,
            actor=user,
            data={"cases": decided, "verdict": spec.verdict, "action": spec.action},
        )
    return decided
