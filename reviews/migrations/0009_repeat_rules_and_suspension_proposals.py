import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

# The repeat-offence rules every existing ladder version gets, frozen as they were when this
# migration was written (reviews/policies/repeat.py's DEFAULT_RULES then; a test compares).
RULES_V1 = {
    "strike_weight": 1,
    "strike_window_days": 90,
    "warn_at": 1,
    "suspend_at": 3,
    "suspend_share": 0.0,
    "known_bad": "review_top",
}
POLICIES_V1 = ("firearms", "drugs", "counterfeit", "stolen_goods", "human_trafficking", "scam")


def fill_rules(apps, schema_editor):
    LadderVersion = apps.get_model("reviews", "LadderVersion")
    for ladder in LadderVersion.objects.all():
        ladder.repeat_rules = {code: dict(RULES_V1) for code in POLICIES_V1}
        ladder.save(update_fields=["repeat_rules"])


class Migration(migrations.Migration):
    dependencies = [
        ("detection", "0001_initial"),
        ("reviews", "0008_outbox_claim_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="ladderversion",
            name="repeat_rules",
            field=models.JSONField(default=dict),
        ),
        migrations.RunPython(fill_rules, migrations.RunPython.noop),
        migrations.CreateModel(
            name="SuspensionProposal",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("reason", models.CharField(max_length=300)),
                ("active_weight", models.PositiveIntegerField()),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("open", "waiting for a person"),
                            ("suspended", "a person suspended the seller"),
                            ("declined", "a person decided against suspension"),
                        ],
                        default="open",
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                (
                    "case",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="reviews.case",
                    ),
                ),
                (
                    "decision",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="reviews.decision",
                    ),
                ),
                (
                    "resolved_by_decision",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="reviews.decision",
                    ),
                ),
                (
                    "seller",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="detection.seller",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("state", "open")),
                        fields=("seller",),
                        name="one_open_suspension_proposal",
                    )
                ],
            },
        ),
    ]
