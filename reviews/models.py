"""Every model of the reviews app, gathered from its sub-packages (Django loads an app's models
from this module). New code imports from the sub-package that owns a model."""

from reviews.appeals.models import Appeal, RefusedAppeal, SuspensionProposal
from reviews.cases.models import Case, CaseSkip, Queue, UserPreference
from reviews.decisions.models import Decision
from reviews.enforcement.models import (
    DeliveryAttempt,
    Enforcement,
    OutboxMessage,
    StatementOfReasons,
    WebhookEndpoint,
)
from reviews.monitoring.models import DriftAlarm, DriftCheckRun
from reviews.policies.models import LadderVersion, Policy
from reviews.qa.models import QaReview, QaSample

__all__ = [
    "Appeal",
    "Case",
    "CaseSkip",
    "Decision",
    "DeliveryAttempt",
    "DriftAlarm",
    "DriftCheckRun",
    "Enforcement",
    "LadderVersion",
    "OutboxMessage",
    "Policy",
    "QaReview",
    "QaSample",
    "Queue",
    "RefusedAppeal",
    "StatementOfReasons",
    "SuspensionProposal",
    "UserPreference",
    "WebhookEndpoint",
]
