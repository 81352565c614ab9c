"""Writes of the policy ladder: the one shared draft, publishing immutable versions, rollback."""

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from moderation_portal.core.audit import AuditAction, audit_record
from reviews.policies import ladder as ladder_rules
from reviews.policies import repeat as offence_rules
from reviews.policies import statements as mapping_rules
from reviews.policies.models import LadderVersion, Policy


def ladder_active() -> LadderVersion:
    ladder = LadderVersion.objects.filter(
        is_active=True, state=LadderVersion.State.PUBLISHED
    ).first()
    if ladder is None:
        raise LadderVersion.DoesNotExist("no active ladder version; run the migrations")
    return ladder


def ladder_draft(*, for_update: bool = False) -> LadderVersion | None:
    qs = LadderVersion.objects.filter(state=LadderVersion.State.DRAFT)
    return (qs.select_for_update() if for_update else qs).first()


def ladder_draft_save(
    *,
    user,
    thresholds: dict | None = None,
    notes: str | None = None,
    statement_mapping: dict | None = None,
    repeat_rules: dict | None = None,
) -> LadderVersion:
    """Create or update the one shared draft: its thresholds and notes, its statement mapping
    and/or its repeat-offence rules (each validated already). What is not given is kept (a new
    draft copies the active version's)."""
    with transaction.atomic():
        draft = ladder_draft(for_update=True)
        active = ladder_active()
        if draft is None:
            draft = LadderVersion.objects.create(
                state=LadderVersion.State.DRAFT,
                thresholds=thresholds if thresholds is not None else active.thresholds,
                notes=notes or "",
                statement_mapping=statement_mapping
                if statement_mapping is not None
                else active.statement_mapping,
                repeat_rules=repeat_rules if repeat_rules is not None else active.repeat_rules,
                based_on=active,
                created_by=user,
            )
            action = AuditAction.LADDER_DRAFT_CREATED
        else:
            if thresholds is not None:
                draft.thresholds = thresholds
            if notes is not None:
                draft.notes = notes
            if statement_mapping is not None:
                draft.statement_mapping = statement_mapping
            if repeat_rules is not None:
                draft.repeat_rules = repeat_rules
            draft.updated_at = timezone.now()
            draft.save(
                update_fields=[
                    "thresholds",
                    "notes",
                    "statement_mapping",
                    "repeat_rules",
                    "updated_at",
                ]
            )
            action = AuditAction.LADDER_DRAFT_SAVED
        audit_record(
            action=action,
            obj=draft,
            actor=user,
            data={
                "based_on": active.version,
                "changes": _changes(active, draft),
            },
        )
    return draft


def _changes(old: LadderVersion, new: LadderVersion) -> list:
    return (
        ladder_rules.diff(old.thresholds, new.thresholds)
        + mapping_rules.mapping_diff(old.statement_mapping, new.statement_mapping)
        + [
            f"repeat rules {field}"
            for field in offence_rules.rules_diff(old.repeat_rules, new.repeat_rules)
        ]
    )


def ladder_draft_discard(*, user) -> bool:
    with transaction.atomic():
        draft = ladder_draft(for_update=True)
        if draft is None:
            return False
        audit_record(action=AuditAction.LADDER_DRAFT_DISCARDED, obj=draft, actor=user)
        draft.delete()
    return True


def _make_active(version: LadderVersion) -> None:
    LadderVersion.objects.filter(is_active=True).update(is_active=False)
    LadderVersion.objects.filter(id=version.id).update(is_active=True)
    # The policies' displayed severity and SLA follow the active version.
    for code, row in version.thresholds.items():
        Policy.objects.filter(code=code).update(
            severity=row["severity"], sla_hours=row["sla_hours"]
        )


def ladder_publish(*, user) -> LadderVersion:
    """Turn the draft into the next immutable version and make it active."""
    with transaction.atomic():
        draft = ladder_draft(for_update=True)
        if draft is None:
            raise LadderVersion.DoesNotExist("there is no draft to publish")
        ladder_rules.validate(draft.thresholds)  # never publish what does not validate
        try:
            mapping_rules.mapping_validate(draft.statement_mapping)
        except mapping_rules.MappingError as exc:
            raise ladder_rules.LadderError(
                [f"statement mapping: {p}" for p in exc.problems]
            ) from exc
        try:
            offence_rules.rules_validate(draft.repeat_rules)
        except offence_rules.RepeatRulesError as exc:
            raise ladder_rules.LadderError([f"repeat rules: {p}" for p in exc.problems]) from exc
        previous = ladder_active()
        number = (LadderVersion.objects.aggregate(n=Max("version"))["n"] or 0) + 1
        LadderVersion.objects.filter(id=draft.id).update(
            state=LadderVersion.State.PUBLISHED,
            version=number,
            published_by=user,
            published_at=timezone.now(),
        )
        draft.refresh_from_db()
        _make_active(draft)
        audit_record(
            action=AuditAction.LADDER_PUBLISHED,
            obj=draft,
            actor=user,
            data={
                "version": number,
                "previous": previous.version,
                "changes": _changes(previous, draft),
            },
        )
        draft.refresh_from_db()
    return draft


def ladder_activate(*, user, version: LadderVersion) -> LadderVersion:
    """Make an earlier published version active again (a rollback), audited."""
    if version.state != LadderVersion.State.PUBLISHED:
        raise ValueError("only published versions can be activated")
    with transaction.atomic():
        previous = ladder_active()
        _make_active(version)
        audit_record(
            action=AuditAction.LADDER_ACTIVATED,
            obj=version,
            actor=user,
            data={"version": version.version, "previous": previous.version},
        )
    version.refresh_from_db()
    return version
