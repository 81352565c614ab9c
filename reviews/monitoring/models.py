"""Drift alarms: one row per failed drift check of a policy and model version; and one row per
run of the drift check, so the portal can say when the checks last ran and what they found.

An alarm opens when a check fails, is updated on every later check that still fails, and is
resolved when the check passes again. At most one alarm per (policy, model version, test) is
open at a time. The alert to the on-call webhook is durable: its state lives on the row.
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone


class DriftAlarm(models.Model):
    class Test(models.TextChoices):
        PSI = "psi", "score distribution (PSI)"
        FLAG_RATE = "flag_rate", "flag rate"

    class Severity(models.TextChoices):
        WARNING = "warning", "warning"
        ALARM = "alarm", "alarm"

    class AlertState(models.TextChoices):
        NOT_CONFIGURED = "not_configured", "no alert webhook configured"
        PENDING = "pending", "waiting to be sent"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed after the last attempt"

    policy = models.CharField(max_length=32)
    model_version = models.CharField(max_length=64)
    test = models.CharField(max_length=16, choices=Test.choices)
    # "shift" for the score distribution, "rise" or "fall" for the flag rate.
    direction = models.CharField(max_length=8)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    statistic = models.FloatField()
    p_value = models.FloatField(null=True)
    threshold = models.FloatField()
    recent_start = models.DateTimeField()
    recent_end = models.DateTimeField()
    reference_start = models.DateTimeField()
    reference_end = models.DateTimeField()
    recent_count = models.PositiveIntegerField()
    reference_count = models.PositiveIntegerField()
    # Whatever explains the result: bins, expected and observed shares, rates.
    detail = models.JSONField(default=dict)
    raised_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_checked_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    alert_state = models.CharField(
        max_length=16, choices=AlertState.choices, default=AlertState.NOT_CONFIGURED
    )
    # The alert the state is about (drift_alarm.raised, .escalated or .resolved): a newer one
    # replaces one not yet delivered, and its body is built from the row when it is sent.
    alert_event = models.CharField(max_length=32, blank=True)
    alert_attempts = models.PositiveIntegerField(default=0)
    alert_last_error = models.CharField(max_length=500, blank=True)
    alert_delivered_at = models.DateTimeField(null=True, blank=True)
    alert_next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "model_version", "test"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_drift_alarm_per_check",
            )
        ]

    def __str__(self) -> str:
        return f"{self.test} {self.severity} on {self.policy} ({self.model_version})"


class DriftCheckRun(models.Model):
    """One run of the drift check: when it started and finished, how many checks it made and what
    they did to the alarms, or the error it failed with. A run that started and never finished
    (the worker stopped) keeps `finished_at` empty. Runs older than `RETENTION_DAYS` are deleted
    by the check itself."""

    RETENTION_DAYS = 30

    ran_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    checks = models.PositiveIntegerField(default=0)
    raised = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)  # escalations included
    resolved = models.PositiveIntegerField(default=0)
    not_enough_data = models.PositiveIntegerField(default=0)
    # {"recent": {"start", "end"}, "reference": {"start", "end"}}, ISO 8601; empty when the run
    # failed before its windows were set.
    windows = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-ran_at"]

    def __str__(self) -> str:
        state = "failed" if self.error else "finished" if self.finished_at else "unfinished"
        return f"drift check at {self.ran_at:%Y-%m-%d %H:%M} ({state})"
