"""Make sure the defaults exist (roles, policies, ladder v1, queues). Idempotent.

The migration seeds a new database; this is for databases that were emptied (tests, resets).
"""

from django.contrib.auth.models import Group

from moderation_portal.core.access import ALL_ROLES
from reviews.cases.models import Queue
from reviews.policies.defaults import POLICIES, QUEUES, SENIOR_GROUP, default_ladder
from reviews.policies.models import LadderVersion, Policy
from reviews.policies.repeat import default_rules
from reviews.policies.statements import DEFAULT_MAPPING


def defaults_ensure() -> None:
    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)
    for code, name, severity, sla_hours, guideline in POLICIES:
        Policy.objects.get_or_create(
            code=code,
            defaults={
                "name": name,
                "severity": severity,
                "sla_hours": sla_hours,
                "guideline": guideline,
            },
        )
    if not LadderVersion.objects.exists():
        LadderVersion.objects.create(
            version=1,
            state="published",
            thresholds=default_ladder(),
            statement_mapping=DEFAULT_MAPPING,
            repeat_rules=default_rules(),
            notes="defaults from the seeds",
            is_active=True,
        )
    Group.objects.get_or_create(name=SENIOR_GROUP)
    for position, (slug, name, kind, policies, roles, groups) in enumerate(QUEUES):
        Queue.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "kind": kind,
                "policies": policies,
                "roles": roles,
                "groups": groups,
                "position": position,
            },
        )
