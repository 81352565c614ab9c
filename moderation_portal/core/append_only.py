"""Which models are append-only facts, and the PostgreSQL triggers that make the database
refuse to change or delete their rows. The one list: migrations install triggers from it, and
tests/test_append_only.py checks that it names every concrete AppendOnlyModel."""

APPEND_ONLY_MODELS: tuple[str, ...] = (
    "core.AuditEvent",
    "reviews.Decision",
    "reviews.QaReview",
    "reviews.DeliveryAttempt",
    "reviews.Strike",
    "reviews.StrikeWithdrawal",
)

_FUNCTION = """
CREATE OR REPLACE FUNCTION portal_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""


def _tables(apps, app_label: str) -> list[str]:
    """The tables of `app_label`'s append-only models that exist in this migration's state (a
    model added later gets its trigger from the migration that creates it)."""
    tables = []
    for name in APPEND_ONLY_MODELS:
        if name.split(".")[0] != app_label:
            continue
        try:
            tables.append(apps.get_model(name)._meta.db_table)
        except LookupError:
            continue
    return tables


def install_triggers(app_label: str):
    """A RunPython forward function installing the triggers of `app_label`'s append-only models."""

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(_FUNCTION, params=None)
        for table in _tables(apps, app_label):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION portal_refuse_change();"
            )

    return forward


def drop_triggers(app_label: str):
    def backward(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in _tables(apps, app_label):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")

    return backward
