"""Append-only facts: the one list names every append-only model, and PostgreSQL itself refuses
to change or delete their rows (the ORM refuses too)."""

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.db.utils import DatabaseError

from moderation_portal.core.append_only import APPEND_ONLY_MODELS
from moderation_portal.core.models import AppendOnlyError, AppendOnlyModel, AuditEvent


def test_the_list_names_every_append_only_model():
    concrete = {
        f"{m._meta.app_label}.{m.__name__}"
        for m in apps.get_models()
        if issubclass(m, AppendOnlyModel) and not m._meta.abstract
    }
    assert concrete == set(APPEND_ONLY_MODELS)


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_updates_and_deletes_of_every_listed_table():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cur:
        cur.execute(
            "SELECT event_object_table, event_manipulation FROM information_schema.triggers "
            "WHERE trigger_name LIKE %s",
            ["%_append_only"],
        )
        triggers = set(cur.fetchall())
    for name in APPEND_ONLY_MODELS:
        table = apps.get_model(name)._meta.db_table
        assert {(table, "UPDATE"), (table, "DELETE")} <= triggers, table
    row = AuditEvent.objects.create(
        actor_label="test", action="case_opened", object_type="case", object_id="1"
    )
    for sql in (
        f"UPDATE {AuditEvent._meta.db_table} SET actor_label = 'changed' WHERE id = %s",
        f"DELETE FROM {AuditEvent._meta.db_table} WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cur,
        ):
            cur.execute(sql, [row.id])
    assert AuditEvent.objects.get(id=row.id).actor_label == "test"
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=row.id).update(actor_label="changed")


@pytest.mark.django_db
def test_the_frozen_seed_matches_the_live_defaults():
    """A new database starts with reviews/policies/defaults.py's values; a change there needs a
    migration."""
    import importlib

    from moderation_portal.core.access import ALL_ROLES
    from reviews.policies.defaults import POLICIES, QUEUES, SENIOR_GROUP, default_ladder

    seed = importlib.import_module("reviews.migrations.0002_seed_defaults")
    added = importlib.import_module("reviews.migrations.0006_appeals").ROLES_ADDED
    assert tuple(ALL_ROLES) == (*seed.ROLES, *added)
    assert seed.SENIOR_GROUP == SENIOR_GROUP
    assert seed.POLICIES == POLICIES
    assert seed.QUEUES == QUEUES
    assert default_ladder() == seed.LADDER_V1
    from reviews.policies.statements import DEFAULT_MAPPING, mapping_validate

    mapping = importlib.import_module("reviews.migrations.0005_statements_of_reasons")
    assert mapping.MAPPING_V1 == DEFAULT_MAPPING == mapping_validate(DEFAULT_MAPPING)
    from detection.policies import POLICY_CODES
    from reviews.policies.models import LadderVersion
    from reviews.policies.repeat import DEFAULT_RULES, default_rules, rules_validate

    repeat = importlib.import_module(
        "reviews.migrations.0009_repeat_rules_and_suspension_proposals"
    )
    assert repeat.RULES_V1 == DEFAULT_RULES
    assert repeat.POLICIES_V1 == POLICY_CODES
    assert rules_validate(default_rules()) == default_rules()
    assert LadderVersion.objects.get(version=1).repeat_rules == default_rules()
