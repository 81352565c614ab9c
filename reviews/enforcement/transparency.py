"""Filing statements of reasons with the EU DSA Transparency Database (`DSA_TDB_URL`,
`DSA_TDB_TOKEN`), durably: the submission state lives on each `StatementOfReasons`.

A run claims due statements (SKIP LOCKED, with a lease, so several workers can run and a killed
worker's batch is taken again), submits them in batches of at most 100 and moves each on:
submitted (filed now, or filed already: a 422 naming our `puid` as existing), rejected (a 422
with its field errors, kept for operators; it never blocks the enforcement, which is delivered
on its own), or retrying on the enforcement retry schedule (5xx, timeouts, a refused token),
failed after the last attempt. When the database refuses part of a batch it stores none of it,
so the statements it did not object to go back to be sent at once in the next batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from reviews.enforcement import tdb
from reviews.enforcement.delivery import retry_delay
from reviews.enforcement.models import StatementOfReasons
from reviews.enforcement.statements import statements_rewrite
from reviews.policies.models import LadderVersion

logger = logging.getLogger(__name__)

State = StatementOfReasons.State
OPEN_STATES = (State.PENDING, State.RETRYING)
MAX_BATCHES_PER_RUN = 20


def submission_configured() -> bool:
    return bool(settings.DSA_TDB_URL and settings.DSA_TDB_TOKEN)


def _batch_size() -> int:
    return max(1, min(settings.DSA_TDB_BATCH_SIZE, tdb.MAX_BATCH))


def _lease_seconds() -> float:
    return settings.DSA_TDB_TIMEOUT_SECONDS * 2 + 10


def _due(now: datetime) -> Q:
    return Q(state__in=OPEN_STATES, next_attempt_at__lte=now) | Q(
        state=State.SUBMITTING, lease_until__lt=now
    )


def statements_claim(*, limit: int, now: datetime) -> list[StatementOfReasons]:
    lease_until = now + timedelta(seconds=_lease_seconds())
    with transaction.atomic():
        candidates = StatementOfReasons.objects.filter(_due(now)).order_by("id")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:limit])
        StatementOfReasons.objects.filter(_due(now), id__in=ids).update(
            state=State.SUBMITTING, lease_until=lease_until, updated_at=now
        )
    return list(
        StatementOfReasons.objects.filter(
            id__in=ids, state=State.SUBMITTING, lease_until=lease_until
        ).order_by("id")
    )


def _mine(row: StatementOfReasons):
    return StatementOfReasons.objects.filter(
        pk=row.pk, state=State.SUBMITTING, lease_until=row.lease_until
    )


def batch_submit(rows: list[StatementOfReasons]) -> Counter[str]:
    """Submit one claimed batch and record what became of each statement."""
    answer = tdb.post_statements(
        base_url=settings.DSA_TDB_URL,
        token=settings.DSA_TDB_TOKEN,
        statements=[row.statement for row in rows],
        timeout=settings.DSA_TDB_TIMEOUT_SECONDS,
    )
    now = timezone.now()
    counts: Counter[str] = Counter()
    for row in rows:
        common = {
            "attempts": row.attempts + 1,
            "lease_until": None,
            "last_status": answer.status_code,
            "updated_at": now,
        }
        if row.puid in answer.filed or row.puid in answer.existing:
            outcome = "submitted"
            changes = {
                "state": State.SUBMITTED,
                "submitted_at": now,
                "tdb_uuid": answer.filed.get(row.puid, ""),
                "already_filed": row.puid in answer.existing,
                "last_error": "",
                "errors": {},
            }
        elif row.puid in answer.invalid:
            outcome = "rejected"
            changes = {
                "state": State.REJECTED,
                "errors": answer.invalid[row.puid],
                "last_error": "rejected by the Transparency Database's validation",
            }
        elif answer.refused is not None:
            outcome = "rejected"
            changes = {
                "state": State.REJECTED,
                "errors": {"batch": [answer.refused]},
                "last_error": answer.error or "",
            }
        elif answer.retry:
            delay = retry_delay(row.attempts + 1, answer.retry_after_seconds)
            if delay is None:
                outcome, changes = "failed", {"state": State.FAILED, "last_error": answer.error}
            else:
                outcome = "retrying"
                changes = {
                    "state": State.RETRYING,
                    "next_attempt_at": now + timedelta(seconds=delay),
                    "last_error": answer.error or "",
                }
        else:
            # The database refused others in this batch and so stored none of it: this one was
            # not objected to and goes in the next batch, without counting as an attempt.
            outcome = "requeued"
            common["attempts"] = row.attempts
            changes = {"state": State.PENDING, "next_attempt_at": now}
        if _mine(row).update(**common, **changes) == 1:
            counts[outcome] += 1
        else:
            counts["lost"] += 1
    if counts["rejected"] or counts["failed"]:
        logger.warning(
            "Transparency Database: %s statements rejected, %s failed (%s)",
            counts["rejected"],
            counts["failed"],
            answer.error,
        )
    return counts


def submissions_run(*, max_batches: int = MAX_BATCHES_PER_RUN) -> dict:
    if not submission_configured():
        return {"configured": False}
    counts: Counter[str] = Counter()
    for _ in range(max_batches):
        rows = statements_claim(limit=_batch_size(), now=timezone.now())
        if not rows:
            break
        batch = batch_submit(rows)
        counts.update(batch)
        if batch["retrying"] or batch["failed"]:
            break  # the database is not taking statements now; the schedule decides when
    return {"configured": True, **counts}


def statements_resubmit(
    *, ids: list[int] | None = None, rejected: bool = False, ladder: LadderVersion | None = None
) -> int:
    """Queue statements to be submitted again from the start of the schedule: the given ids and/or
    every rejected or failed one. With `ladder`, the rejected ones among them are first written
    again under its mapping (the one that was corrected and published). Filed ones stay filed."""
    ids = list(ids or [])
    if not ids and not rejected:
        raise ValueError("name the statements to submit again (ids) or ask for the rejected ones")
    now = timezone.now()
    wanted = Q(id__in=ids) | (
        Q(state__in=[State.REJECTED, State.FAILED]) if rejected else Q(pk__in=[])
    )
    with transaction.atomic():
        rows = list(
            StatementOfReasons.objects.select_for_update()
            .filter(wanted)
            .exclude(state=State.SUBMITTED)
            .exclude(state=State.SUBMITTING, lease_until__gte=now)
        )
        if ladder is not None:
            statements_rewrite([r for r in rows if r.state == State.REJECTED], ladder=ladder)
        return StatementOfReasons.objects.filter(id__in=[r.id for r in rows]).update(
            state=State.PENDING, attempts=0, next_attempt_at=now, lease_until=None, errors={}
        )


@shared_task(name="reviews.submit_statements_task", soft_time_limit=240, time_limit=300)
def submit_statements_task() -> dict:
    """Periodic (beat): file due statements of reasons with the Transparency Database."""
    return submissions_run()
