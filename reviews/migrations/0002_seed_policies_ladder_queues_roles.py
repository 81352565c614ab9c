from django.db import migrations

APPEND_ONLY_TABLES = ("reviews_decision", "reviews_auditevent")


def seed(apps, schema_editor):
    from moderation_portal.roles import ALL_ROLES
    from reviews.defaults import POLICIES, QUEUES, SENIOR_GROUP, default_ladder

    Group = apps.get_model("auth", "Group")
    Policy = apps.get_model("reviews", "Policy")
    LadderVersion = apps.get_model("reviews", "LadderVersion")
    Queue = apps.get_model("reviews", "Queue")
    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)
    for code, name, severity, sla_hours, guideline in POLICIES:
        Policy.objects.update_or_create(
            code=code, defaults={"name": name, "severity": severity, "sla_hours": sla_hours, "guideline": guideline}
        )
    if not LadderVersion.objects.exists():
        LadderVersion.objects.create(
            version=1, state="published", thresholds=default_ladder(), notes="defaults from the seeds", is_active=True
        )
    Group.objects.get_or_create(name=SENIOR_GROUP)
    for position, (slug, name, kind, policies, roles, groups) in enumerate(QUEUES):
        Queue.objects.update_or_create(
            slug=slug, defaults={"name": name, "kind": kind, "policies": policies, "roles": roles, "groups": groups, "position": position}
        )


def append_only_triggers(apps, schema_editor):
    # The database itself refuses to change or delete decisions and audit events.
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        """
        CREATE OR REPLACE FUNCTION portal_refuse_change() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME;
        END;
        $$ LANGUAGE plpgsql;
        """,
        params=None,
    )
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION portal_refuse_change();"
        )


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
    schema_editor.execute("DROP FUNCTION IF EXISTS portal_refuse_change();")


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(seed, migrations.RunPython.noop),
        migrations.RunPython(append_only_triggers, drop_triggers),
    ]
