import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0009_repeat_rules_and_suspension_proposals"),
    ]

    operations = [
        migrations.CreateModel(
            name="DriftAlarm",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("policy", models.CharField(max_length=32)),
                ("model_version", models.CharField(max_length=64)),
                (
                    "test",
                    models.CharField(
                        choices=[("psi", "score distribution (PSI)"), ("flag_rate", "flag rate")],
                        max_length=16,
                    ),
                ),
                ("direction", models.CharField(max_length=8)),
                (
                    "severity",
                    models.CharField(
                        choices=[("warning", "warning"), ("alarm", "alarm")], max_length=8
                    ),
                ),
                ("statistic", models.FloatField()),
                ("p_value", models.FloatField(null=True)),
                ("threshold", models.FloatField()),
                ("recent_start", models.DateTimeField()),
                ("recent_end", models.DateTimeField()),
                ("reference_start", models.DateTimeField()),
                ("reference_end", models.DateTimeField()),
                ("recent_count", models.PositiveIntegerField()),
                ("reference_count", models.PositiveIntegerField()),
                ("detail", models.JSONField(default=dict)),
                (
                    "raised_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
                ("last_checked_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                (
                    "alert_state",
                    models.CharField(
                        choices=[
                            ("not_configured", "no alert webhook configured"),
                            ("pending", "waiting to be sent"),
                            ("delivered", "delivered"),
                            ("failed", "failed after the last attempt"),
                        ],
                        default="not_configured",
                        max_length=16,
                    ),
                ),
                ("alert_event", models.CharField(blank=True, max_length=32)),
                ("alert_attempts", models.PositiveIntegerField(default=0)),
                ("alert_last_error", models.CharField(blank=True, max_length=500)),
                ("alert_delivered_at", models.DateTimeField(blank=True, null=True)),
                ("alert_next_attempt_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-raised_at"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("resolved_at__isnull", True)),
                        fields=("policy", "model_version", "test"),
                        name="one_open_drift_alarm_per_check",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="DriftCheckRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "ran_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("checks", models.PositiveIntegerField(default=0)),
                ("raised", models.PositiveIntegerField(default=0)),
                ("updated", models.PositiveIntegerField(default=0)),
                ("resolved", models.PositiveIntegerField(default=0)),
                ("not_enough_data", models.PositiveIntegerField(default=0)),
                ("windows", models.JSONField(blank=True, default=dict)),
                ("error", models.TextField(blank=True)),
            ],
            options={
                "ordering": ["-ran_at"],
            },
        ),
    ]
