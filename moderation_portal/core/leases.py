"""One lease implementation for every queue people work: cases, QA samples, appeals, labeling.

A leased row has a state (waiting or claimed), a holder and an expiry. Every transition is a
conditional UPDATE on the row's current state, so two workers never both win, and every
function here is safe to call twice. The case queue, the hottest, takes its next row with one
statement built from the same spec (reviews.cases.claims); every other queue uses
`lease_claim_next` below.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, models, transaction
from django.utils import timezone

ModelT = TypeVar("ModelT", bound=models.Model)


@dataclass(frozen=True)
class LeaseSpec(Generic[ModelT]):
    model: type[ModelT]
    waiting: str
    claimed: str
    seconds: int
    state_field: str = "state"
    holder_field: str = "claimed_by"
    claimed_at_field: str | None = "claimed_at"
    expires_field: str = "lease_expires_at"

    def returned(self) -> dict[str, Any]:
        """The column values of a row given back to its queue."""
        values = {self.state_field: self.waiting, self.holder_field: None, self.expires_field: None}
        if self.claimed_at_field:
            values[self.claimed_at_field] = None
        return values

    def taken(self, user: AbstractBaseUser, now: datetime) -> dict[str, Any]:
        values = {
            self.state_field: self.claimed,
            self.holder_field: user,
            self.expires_field: now + timedelta(seconds=self.seconds),
        }
        if self.claimed_at_field:
            values[self.claimed_at_field] = now
        return values

    def held_by(self, user: AbstractBaseUser, now: datetime | None = None) -> dict[str, Any]:
        """Filter: claimed by `user` with a live lease (any lease when `now` is None)."""
        held: dict[str, Any] = {self.state_field: self.claimed, self.holder_field: user}
        if now is not None:
            held[f"{self.expires_field}__gt"] = now
        return held


def lease_take(
    spec: LeaseSpec[Any], *, pk: object, user: AbstractBaseUser, now: datetime | None = None
) -> bool:
    now = now or timezone.now()
    waiting = spec.model._default_manager.filter(pk=pk, **{spec.state_field: spec.waiting})
    return bool(waiting.update(**spec.taken(user, now)))


def lease_claim_next(
    spec: LeaseSpec[ModelT],
    *,
    user: AbstractBaseUser,
    candidates: models.QuerySet[ModelT],
    now: datetime | None = None,
) -> ModelT | None:
    """The first of `candidates` (an ordered queryset of waiting rows) that nobody else holds,
    under a lease for `user`; None when there is none. A user already holding a live lease in
    `candidates`' model gets that row again."""
    now = now or timezone.now()
    held = spec.model._default_manager.filter(**spec.held_by(user, now)).first()
    if held is not None:
        return held
    lease_expire(spec, now=now)
    with transaction.atomic():
        waiting = candidates.filter(**{spec.state_field: spec.waiting})
        if connection.features.has_select_for_update_skip_locked:
            waiting = waiting.select_for_update(skip_locked=True, of=("self",))
        pk = waiting.values_list("pk", flat=True).first()
        if pk is None or not lease_take(spec, pk=pk, user=user, now=now):
            return None
    return spec.model._default_manager.get(pk=pk)


def lease_return(spec: LeaseSpec[Any], *, pk: object, user: AbstractBaseUser, **also: Any) -> bool:
    """Give a row the user holds back to its queue (release, skip, escalate); `also` sets more
    columns."""
    held = spec.model._default_manager.filter(pk=pk, **spec.held_by(user))
    return bool(held.update(**spec.returned(), **also))


def lease_heartbeat(
    spec: LeaseSpec[Any], *, pk: object, user: AbstractBaseUser, now: datetime | None = None
) -> datetime | None:
    """Extend a live lease; None when it is gone (expired, released, finished)."""
    now = now or timezone.now()
    until = now + timedelta(seconds=spec.seconds)
    held = spec.model._default_manager.filter(pk=pk, **spec.held_by(user, now))
    if held.update(**{spec.expires_field: until}):
        return until
    return None


def lease_finish(
    spec: LeaseSpec[Any],
    *,
    pk: object,
    user: AbstractBaseUser,
    state: str,
    now: datetime | None = None,
    **also: Any,
) -> bool:
    """End a live lease by moving the row to a final `state` (decided, reviewed)."""
    now = now or timezone.now()
    values = {spec.state_field: state, spec.expires_field: None, **also}
    return bool(
        spec.model._default_manager.filter(pk=pk, **spec.held_by(user, now)).update(**values)
    )


def lease_expire(spec: LeaseSpec[Any], *, now: datetime | None = None) -> list[tuple[Any, Any]]:
    """Give expired leases back; returns (pk, previous holder id) of each row given back."""
    now = now or timezone.now()
    expired = {spec.state_field: spec.claimed, f"{spec.expires_field}__lt": now}
    rows = list(
        spec.model._default_manager.filter(**expired).values_list("pk", f"{spec.holder_field}_id")
    )
    given_back: list[tuple[Any, Any]] = []
    for pk, holder in rows:
        if spec.model._default_manager.filter(pk=pk, **expired).update(**spec.returned()):
            given_back.append((pk, holder))
    return given_back
